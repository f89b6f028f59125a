//! `nova backup run|list|verify|restore|prune` with no cluster: Backups, the Hosts they name
//! and the Secrets they reference are read from YAML (validated as admission validates them),
//! and the engine runs from here. Every run, prune, verification and restore gets an audit row.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::Utc;
use chrono_tz::Tz;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::engine::{Catalog, EngineError, Job};
use super::restore::Target;
use super::source::{PgTarget, Source};
use super::store::Store;
use crate::api::backup::Backup;
use crate::api::host::Host;
use crate::state::State;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    State(#[from] crate::state::Error),
    #[error(transparent)]
    Host(#[from] crate::host::cli::Error),
    #[error(transparent)]
    Cycle(#[from] super::cycle::CycleError),
}

/// What the files hold.
#[derive(Default)]
pub struct Loaded {
    pub backups: Vec<Backup>,
    pub hosts: Vec<Host>,
    /// (namespace, name) → data.
    secrets: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>,
}

/// Reads Backups, Hosts and Secrets from a file or a directory of them; Backups and Hosts are
/// checked against the CRDs' schemas and rules, as the apiserver would.
pub fn load(path: &Path) -> Result<Loaded, Error> {
    let mut out = Loaded::default();
    for (at, v) in crate::documents::read(path).map_err(Error::Input)? {
        let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_owned();
        let bad = |e: String| Error::Input(format!("{at}: {e}"));
        match kind.as_str() {
            "Backup" | "Host" => crate::admission::check_yaml(&v).map_err(bad)?,
            "Secret" => {}
            _ => continue,
        }
        match kind.as_str() {
            "Backup" => {
                out.backups.push(serde_yaml::from_value(v).map_err(|e| bad(format!("a Backup: {e}")))?)
            }
            "Host" => out.hosts.push(serde_yaml::from_value(v).map_err(|e| bad(format!("a Host: {e}")))?),
            _ => {
                // The message never quotes the document: it holds secret values.
                let s: Secret =
                    serde_yaml::from_value(v).map_err(|_| bad("a Secret that does not parse".into()))?;
                let mut data: BTreeMap<String, Vec<u8>> =
                    s.data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
                for (k, v) in s.string_data.clone().unwrap_or_default() {
                    data.insert(k, v.into_bytes());
                }
                let ns = s.namespace().unwrap_or_else(|| "default".into());
                out.secrets.insert((ns, s.name_any()), data);
            }
        }
    }
    if out.backups.is_empty() {
        return Err(Error::Input(format!("{}: no Backup in it", path.display())));
    }
    Ok(out)
}

impl Loaded {
    pub(super) fn secret(&self, ns: &str, name: &str, key: &str, field: &str) -> Result<Vec<u8>, Error> {
        self.secrets.get(&(ns.to_owned(), name.to_owned())).and_then(|d| d.get(key)).cloned().ok_or_else(
            || {
                Error::Input(format!(
                    "{field}: no Secret {ns}/{name} with key {key:?} in the files given with -f"
                ))
            },
        )
    }

    pub(super) fn host(&self, name: &str, field: &str) -> Result<&Host, Error> {
        self.hosts
            .iter()
            .find(|h| h.name_any() == name)
            .ok_or_else(|| Error::Input(format!("{field}: no Host {name:?} in the files given with -f")))
    }

    /// The Backup called `name`, or the only one.
    pub fn backup(&self, name: Option<&str>) -> Result<&Backup, Error> {
        match name {
            Some(n) => self.backups.iter().find(|b| b.name_any() == n),
            None if self.backups.len() == 1 => self.backups.first(),
            None => {
                return Err(Error::Input("the files hold several Backups: name one with --backup".into()));
            }
        }
        .ok_or_else(|| Error::Input(format!("no Backup {:?} in the files", name.unwrap_or_default())))
    }

    /// The engine for Backup `b`: its source, store and key resolved. `on_host` is the Host
    /// this runs on as its timer (`spec.runOn`): what is on it is reached without SSH.
    pub async fn job(
        &self,
        b: &Backup,
        identity: &Path,
        state: &State,
        dir: Option<&Path>,
        on_host: Option<&str>,
        volume_at: Option<&Path>,
    ) -> Result<Job, Error> {
        let ns = b.namespace().unwrap_or_else(|| "default".into());
        let s = &b.spec;
        if let Some(h) = on_host {
            super::timer::check(s, h).map_err(Error::Input)?;
        }
        let here = |name: &str| on_host == Some(name);
        let source = if let Some(pg) = &s.source.postgres {
            let r = &pg.connection_secret_ref;
            let field = "spec.source.postgres.connectionSecretRef";
            let url = String::from_utf8(self.secret(&ns, &r.name, &r.key, field)?)
                .map_err(|_| Error::Input(format!("{field}: the URL is not UTF-8")))?;
            let mut t = PgTarget::from_url(&url, &pg.database, field).map_err(EngineError::from)?;
            if let Some(r) = pg.host_ref.as_ref().filter(|r| !here(&r.name)) {
                let h = self.host(&r.name, "spec.source.postgres.hostRef")?;
                let conn = crate::host::cli::connect(h, identity, state).await?;
                t = t.on_host(conn, h.name_any(), field).map_err(EngineError::from)?;
            }
            Source::Postgres(t)
        } else if let Some(f) = s.source.files.as_ref().filter(|f| here(&f.host_ref.name)) {
            Source::LocalFiles { on: format!("host {}", f.host_ref.name), paths: f.paths.clone() }
        } else if let Some(f) = &s.source.files {
            let h = self.host(&f.host_ref.name, "spec.source.files.hostRef")?;
            let conn = crate::host::cli::connect(h, identity, state).await?;
            Source::HostFiles { conn, host: h.name_any(), paths: f.paths.clone() }
        } else if let (Some(v), Some(at)) = (&s.source.volume, volume_at) {
            // In the Job of a volume source: the claim is mounted at `at`.
            let at = at.to_str().ok_or_else(|| Error::Input("--volume-at: not a UTF-8 path".into()))?;
            super::paths::check_abs(at, "--volume-at").map_err(Error::Input)?;
            Source::LocalFiles { on: format!("PVC {}", v.pvc), paths: vec![at.to_owned()] }
        } else {
            return Err(Error::Input(
                "spec.source.volume: PVC sources run as a Job in the cluster (or give --volume-at where the claim is mounted)".into(),
            ));
        };
        let store = if let Some(dir) = dir {
            Store::Dir(dir.join(&ns).join(b.name_any()))
        } else if let Some(d) = &s.destination.s3 {
            let (r, field) = (&d.credentials_secret_ref.name, "spec.destination.s3.credentialsSecretRef");
            let id = self.secret(&ns, r, "accessKeyId", field)?;
            let secret = self.secret(&ns, r, "secretAccessKey", field)?;
            let creds =
                (String::from_utf8_lossy(&id).into_owned(), String::from_utf8_lossy(&secret).into_owned());
            let s3 =
                super::s3::S3Store::for_backup(d, &ns, &b.name_any(), creds).map_err(EngineError::from)?;
            Store::S3(Box::new(s3))
        } else if let Some(d) = s.destination.host_path.as_ref().filter(|d| here(&d.host_ref.name)) {
            super::paths::check_abs(&d.path, "spec.destination.hostPath.path").map_err(Error::Input)?;
            Store::Dir(Path::new(&d.path).join(&ns).join(b.name_any()))
        } else if let Some(d) = &s.destination.host_path {
            super::paths::check_abs(&d.path, "spec.destination.hostPath.path").map_err(Error::Input)?;
            let h = self.host(&d.host_ref.name, "spec.destination.hostPath.hostRef")?;
            let conn = crate::host::cli::connect(h, identity, state).await?;
            Store::Host { conn, dir: format!("{}/{ns}/{}", d.path, b.name_any()) }
        } else {
            return Err(Error::Input(
                "spec.destination.pvc: not supported by the CLI; use s3 or hostPath".into(),
            ));
        };
        let key = match &s.integrity {
            Some(i) => {
                let r = &i.hmac_key_secret_ref;
                Some(self.secret(&ns, &r.name, &r.key, "spec.integrity.hmacKeySecretRef")?)
            }
            None => None,
        };
        let encryption = match &s.encryption {
            Some(e) => {
                let r = &e.recipients_secret_ref;
                let rec = self.secret(&ns, &r.name, &r.key, "spec.encryption.recipientsSecretRef")?;
                let id = match &e.identity_secret_ref {
                    Some(r) => {
                        Some(self.secret(&ns, &r.name, &r.key, "spec.encryption.identitySecretRef")?)
                    }
                    None => None,
                };
                Some(super::crypt::Keys::from_secrets(&rec, id.as_deref()).map_err(Error::Input)?)
            }
            None => None,
        };
        let backup = format!("{ns}/{}", b.name_any());
        Ok(Job { backup, source, store, key, encryption, progress: Default::default() })
    }
}

/// The schedule's time zone (retention buckets follow it).
pub fn time_zone(b: &Backup) -> Result<Tz, Error> {
    let name = b.spec.time_zone.as_deref().unwrap_or("UTC");
    name.parse().map_err(|_| Error::Input(format!("spec.timeZone: {name:?} is not an IANA time zone")))
}

/// The catalog as a table.
pub fn table(cat: &Catalog) -> String {
    let mut out = format!("{:<24} {:<21} {:>12} {:<9} {}\n", "ID", "CREATED", "SIZE", "VERIFIED", "SHA256");
    for e in &cat.entries {
        let m = &e.manifest;
        let v = if e.verified.is_some() { "yes" } else { "no" };
        out += &format!("{:<24} {:<21} {:>12} {:<9} {}\n", m.id, m.created, m.size, v, &m.sha256[..16]);
    }
    for (id, why) in &cat.corrupt {
        out += &format!("{id:<24} CORRUPT: {why}\n");
    }
    out
}

/// Where `nova backup restore` writes: a database (a new one unless `overwrite`) for a
/// PostgreSQL Backup; a directory on the source host for files (`/` only with `overwrite`).
pub fn target(
    job: &Job,
    database: Option<&str>,
    dir: Option<&Path>,
    overwrite: bool,
) -> Result<Target, Error> {
    match &job.source {
        Source::Postgres(t) => {
            Ok(Target::Postgres { target: t.with_database(database.unwrap_or(&t.database)), overwrite })
        }
        Source::HostFiles { conn, .. } => {
            let dir = dir.map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
            let d = dir.display().to_string();
            if d == "/" && !overwrite {
                return Err(Error::Input(
                    "restoring files over their originals (--dir /) needs --overwrite".into(),
                ));
            }
            Ok(Target::HostDir { conn: conn.clone(), dir: d })
        }
        // A claim mounted here (a Restore's Job): extracted below `dir`, `/` only with overwrite.
        Source::LocalFiles { .. } => {
            let dir = dir.map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
            if dir == Path::new("/") && !overwrite {
                return Err(Error::Input(
                    "restoring files over their originals (--dir /) needs --overwrite".into(),
                ));
            }
            Ok(Target::Dir(dir))
        }
    }
}

/// The command's outcome for the operator (a Job's termination message, at most 4 KiB): what
/// it printed, the catalog after a backup or a drill as status shows it, what a restore did.
async fn write_report(
    path: &Path,
    job: &Job,
    out: &Result<String, Error>,
    restored: Option<super::restore::Report>,
) -> Result<(), Error> {
    let report = match out {
        Ok(text) => {
            let status = match (&restored, job.catalog().await) {
                (None, Ok(cat)) => {
                    let mut st = super::controller::catalog_status(&cat, Default::default());
                    st.recent.truncate(5);
                    st.corrupt.truncate(2);
                    Some(st)
                }
                _ => None,
            };
            let lines = text.lines().map(|l| l.chars().take(300).collect()).collect();
            super::jobs::Report { status, lines, error: None, restored }
        }
        Err(e) => super::jobs::Report {
            error: Some(e.to_string().chars().take(1024).collect()),
            ..Default::default()
        },
    };
    let text = serde_json::to_string(&report).map_err(|e| Error::Input(format!("the report: {e}")))?;
    std::fs::write(path, text).map_err(|e| Error::Input(format!("{}: {e}", path.display())))
}

/// `nova backup ...`
#[derive(clap::Subcommand)]
pub enum Command {
    /// Take a backup now: dump, compress, checksum, sign, store; then the restore drill when
    /// spec.verify asks for one, then retention.
    Run {
        #[command(flatten)]
        from: From,
    },
    /// The catalog, read back from the destination: artifacts, sizes, verification.
    List {
        #[command(flatten)]
        from: From,
    },
    /// A restore drill of one artifact (default: the newest) into a scratch database or
    /// directory; records it as verified.
    Verify {
        #[command(flatten)]
        from: From,
        /// Artifact id (from `list`).
        #[arg(long)]
        id: Option<String>,
    },
    /// Restore an artifact after checking its HMAC, checksum and (files) every entry.
    Restore {
        #[command(flatten)]
        from: From,
        /// Artifact id; default: the newest verified one.
        #[arg(long)]
        id: Option<String>,
        /// PostgreSQL: the database to restore into (default: the Backup's own).
        #[arg(long)]
        database: Option<String>,
        /// Files: the directory on the source host to restore below (default: `/`, the originals).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Write over an existing database, or over the original files.
        #[arg(long)]
        overwrite: bool,
    },
    /// Apply spec.retention now.
    Prune {
        #[command(flatten)]
        from: From,
    },
    /// Put the Backup's schedule on its Host (spec.runOn): Nova's binary, the Backup with the
    /// Secrets it names (root only), a systemd timer. Run again after a change.
    Install {
        #[command(flatten)]
        from: From,
    },
    /// Take the Backup's timer and its files off its Host (artifacts stay).
    Uninstall {
        #[command(flatten)]
        from: From,
    },
    /// What the host timer runs: one look at the schedule, and the cycle when a slot is due.
    #[command(hide = true)]
    Tick {
        #[command(flatten)]
        from: From,
        /// Where the last slot run is recorded.
        #[arg(long, default_value = super::timer::STATE_DIR)]
        slots: PathBuf,
    },
}

/// Where the Backup comes from and how hosts are reached.
#[derive(clap::Args)]
pub struct From {
    /// A YAML file, or a directory of them, with the Backup and the Hosts and Secrets it names.
    #[arg(short, long)]
    file: PathBuf,
    /// Which Backup, when the files hold several.
    #[arg(long)]
    backup: Option<String>,
    /// Private SSH key (OpenSSH format) for the hosts.
    #[arg(short, long)]
    identity: Option<PathBuf>,
    /// Keep artifacts in this local directory instead of spec.destination (a host's own timer,
    /// a mounted volume).
    #[arg(long)]
    local_dir: Option<PathBuf>,
    /// State database (audit rows, recorded host keys): a file path or sqlite:// URL, or a
    /// postgres:// URL.
    #[arg(long, env = "NOVA_STATE", hide_env_values = true, default_value = "nova-state.db")]
    state: String,
    /// Show progress (bytes read, rate) on stderr even when it is not a terminal.
    #[arg(long)]
    progress: bool,
    /// Run as the timer on Host NAME (Backup spec.runOn): its files and directories are read
    /// and written here, without SSH.
    #[arg(long, value_name = "NAME")]
    on_host: Option<String>,
    /// Where the Backup's volume source (a PersistentVolumeClaim) is mounted: what its Job
    /// runs with.
    #[arg(long, value_name = "DIR")]
    volume_at: Option<PathBuf>,
    /// Write what the run did as JSON here (a Job's termination message, which the operator
    /// turns into the Backup's status).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

/// Runs one `nova backup` command; returns what to print.
pub async fn main(cmd: Command) -> Result<String, Error> {
    let from = match &cmd {
        Command::Run { from } | Command::List { from } | Command::Prune { from } => from,
        Command::Install { from } | Command::Uninstall { from } => from,
        Command::Verify { from, .. } | Command::Restore { from, .. } | Command::Tick { from, .. } => from,
    };
    let loaded = load(&from.file)?;
    let b = loaded.backup(from.backup.as_deref())?;
    let state = State::connect(&from.state).await?;
    let identity = from.identity.clone().unwrap_or_default();
    if let Command::Install { .. } | Command::Uninstall { .. } = cmd {
        let remove = matches!(cmd, Command::Uninstall { .. });
        return super::hostcli::install(&loaded, b, &identity, &state, remove).await;
    }
    let job = loaded
        .job(
            b,
            &identity,
            &state,
            from.local_dir.as_deref(),
            from.on_host.as_deref(),
            from.volume_at.as_deref(),
        )
        .await?;
    let (ns, name) = (b.namespace().unwrap_or_else(|| "default".into()), b.name_any());
    let show = from.progress || std::io::IsTerminal::is_terminal(&std::io::stderr());
    let verb = match &cmd {
        Command::Run { .. } => "backup",
        Command::Verify { .. } => "verify",
        Command::Restore { .. } => "restore",
        Command::Tick { .. } => "tick",
        Command::List { .. }
        | Command::Prune { .. }
        | Command::Install { .. }
        | Command::Uninstall { .. } => "",
    };
    let ticker = (show && !verb.is_empty())
        .then(|| super::progress::start(format!("{verb} {ns}/{name}"), job.progress.clone()));
    let report = from.report.clone().filter(|_| matches!(verb, "backup" | "verify" | "restore"));
    let mut restored = None;
    let out = execute(cmd, b, &job, &state, &ns, &name, &mut restored).await;
    if let Some(t) = ticker {
        t.finish().await;
    }
    if let Some(path) = report {
        write_report(&path, &job, &out, restored).await?;
    }
    out
}

async fn execute(
    cmd: Command,
    b: &Backup,
    job: &Job,
    state: &State,
    ns: &str,
    name: &str,
    restored: &mut Option<super::restore::Report>,
) -> Result<String, Error> {
    let (ns, name) = (ns.to_owned(), name.to_owned());
    Ok(match cmd {
        Command::Run { .. } => super::cycle::cycle(b, job, state, time_zone(b)?).await?.lines().join("\n"),
        Command::Tick { slots, .. } => super::hostcli::tick(b, job, state, &slots).await?,
        Command::Install { .. } | Command::Uninstall { .. } => {
            unreachable!("handled before the job is built")
        }
        Command::List { .. } => {
            let cat = job.catalog().await?;
            super::cycle::index(state, job, &cat).await?;
            table(&cat)
        }
        Command::Prune { .. } => {
            let (plan, _) = job.prune(&b.spec.retention, time_zone(b)?).await?;
            let line = format!("kept {}, deleted [{}]", plan.keep.len(), plan.delete.join(", "));
            state.audit("Backup", &ns, &name, "prune", &line).await?;
            line
        }
        Command::Verify { id, .. } => {
            let cat = job.catalog().await?;
            let id = id.or_else(|| cat.entries.first().map(|e| e.manifest.id.clone()));
            let id = id.ok_or_else(|| Error::Input("the catalog is empty: nothing to verify".into()))?;
            let query = b.spec.verify.as_ref().and_then(|v| v.check_query.as_deref());
            let v = job.drill(&id, query, Utc::now()).await?;
            let line = format!("artifact {id} verified in {} ms: {}", v.restore_millis, v.method);
            state.audit("Backup", &ns, &name, "verify", &line).await?;
            line
        }
        Command::Restore { id, database, dir, overwrite, .. } => {
            let cat = job.catalog().await?;
            let id = id.or_else(|| cat.latest_verified().map(|e| e.manifest.id.clone()));
            let id = id.ok_or_else(|| Error::Input("no verified artifact: name one with --id".into()))?;
            let t = target(job, database.as_deref(), dir.as_deref(), overwrite)?;
            let r = job.restore(&id, &t).await?;
            let line = format!(
                "restored {id} ({} bytes) in {} ms; checked: {}",
                r.bytes,
                r.millis,
                r.checked.join(", ")
            );
            state.audit("Backup", &ns, &name, "restore", &line).await?;
            *restored = Some(r);
            line
        }
    })
}
