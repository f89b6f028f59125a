//! What a backup reads: a PostgreSQL database through `pg_dump -Fc` run where Nova runs, or
//! files on a Host as a tar stream over SSH. Sources push raw bytes into a writer; the engine
//! compresses and hashes them on the way to the store.

use std::time::Duration;

use tokio::io::AsyncWrite;

use super::manifest::Payload;
use super::paths;
pub use super::pg::PgTarget;
use crate::ssh::{Connection, quote};

const DUMP: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the connection URL in {field} is not a postgres:// URL ({why})")]
    BadUrl { field: String, why: String },
    #[error(
        "{tool} could not be started: {reason} (is it installed? pg_dump, pg_restore and psql come with the PostgreSQL client)"
    )]
    Spawn { tool: &'static str, reason: String },
    #[error("{tool} failed ({status}): {stderr}")]
    Failed { tool: &'static str, status: String, stderr: String },
    #[error("{0}")]
    Path(String),
    #[error(transparent)]
    Ssh(#[from] crate::ssh::Error),
}

/// The thing backed up.
#[derive(Clone)]
pub enum Source {
    Postgres(PgTarget),
    HostFiles {
        conn: Connection,
        host: String,
        paths: Vec<String>,
    },
    /// Files where Nova runs, with the same tar, without SSH: a Host's own timer
    /// (`spec.runOn`, `on` = `host <name>`) or the Job of a volume source (`PVC <claim>`).
    LocalFiles {
        on: String,
        paths: Vec<String>,
    },
}

impl Source {
    pub fn payload(&self) -> Payload {
        match self {
            Source::Postgres(_) => Payload::PgDump,
            Source::HostFiles { .. } | Source::LocalFiles { .. } => Payload::Tar,
        }
    }

    /// How the manifest describes the source (never a secret).
    pub fn describe(&self) -> String {
        match self {
            Source::Postgres(t) => match t.host() {
                Some(h) => format!("postgres database {} on host {h}", t.database),
                None => format!("postgres database {}", t.database),
            },
            Source::HostFiles { host, paths, .. } => format!("files {} on host {host}", paths.join(" ")),
            Source::LocalFiles { on, paths } => format!("files {} on {on}", paths.join(" ")),
        }
    }

    /// Streams the raw dump into `out` and shuts it down; returns the tools' versions.
    pub async fn dump<W: AsyncWrite + Unpin + Send + 'static>(
        &self,
        mut out: W,
    ) -> Result<Vec<(String, String)>, SourceError> {
        match self {
            Source::Postgres(t) => {
                // The version alongside the dump, not before it: a process start less on
                // the run's critical path.
                let args = ["--format=custom", "--compress=0", "--no-password"];
                let (version, dumped) = tokio::join!(
                    t.version("pg_dump"),
                    t.run("pg_dump", &args, None::<&[u8]>, Some(&mut out))
                );
                dumped?;
                Ok(vec![("pg_dump".into(), version?)])
            }
            Source::HostFiles { conn, paths, .. } => {
                let cmd = format!(
                    "tar {}",
                    tar_args(paths)?.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
                );
                conn.run_with_output(&cmd, &mut out, DUMP).await?;
                let version = conn.run("tar --version | head -n1", Duration::from_secs(30)).await?;
                Ok(vec![("tar".into(), version.trim().to_owned())])
            }
            Source::LocalFiles { paths, .. } => {
                // No tar program needed (Nova's image has none): the tar crate, on a blocking
                // thread, into the same pipe.
                tar_args(paths)?;
                let (paths, bridge) = (paths.clone(), tokio_util::io::SyncIoBridge::new(out));
                let written = tokio::task::spawn_blocking(move || {
                    let mut bridge = super::pack::create(bridge, &paths)?;
                    bridge.shutdown()
                })
                .await
                .map_err(|e| SourceError::Path(format!("the archive writer stopped: {e}")))?;
                written.map_err(|e| SourceError::Failed {
                    tool: "tar",
                    status: "archive not written".into(),
                    stderr: e.to_string(),
                })?;
                Ok(vec![("tar".into(), "tar crate 0.4 (in Nova)".into())])
            }
        }
    }
}

/// GNU tar's arguments for `paths` (checked: absolute, no `.` or `..`): symlinks stored as
/// links (no -h), modes kept, numeric owners because names differ between hosts.
fn tar_args(paths: &[String]) -> Result<Vec<String>, SourceError> {
    let mut args: Vec<String> =
        ["--create", "--file=-", "--numeric-owner", "--preserve-permissions", "--directory=/", "--"]
            .map(String::from)
            .into();
    for p in paths {
        paths::check_abs(p, "spec.source.files.paths").map_err(SourceError::Path)?;
        args.push(p.trim_start_matches('/').to_owned());
    }
    Ok(args)
}
