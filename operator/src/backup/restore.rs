//! Reading artifacts back: restore drills and restores. Every restore first reads the whole
//! artifact and checks it — HMAC of the manifest, SHA-256 and size of the data, and for file
//! archives every entry — without touching the target (fail-closed); only then does a second
//! pass write. The second pass is hashed too, so data changed in between is caught.

use std::path::PathBuf;
use std::time::Instant;

use async_compression::tokio::bufread::ZstdDecoder;
use chrono::{DateTime, SecondsFormat, Utc};
use tokio::io::{AsyncWriteExt, BufReader, DuplexStream};
use tokio_util::io::SyncIoBridge;

use super::archive::{self, Limits, Summary};
use super::engine::{EngineError, Job, PIPE, data_name, verified_name};
use super::manifest::{Manifest, Payload, Verification};
use super::source::PgTarget;
use crate::ssh::{Connection, quote};

/// Where a restore writes.
#[derive(Clone, Debug)]
pub enum Target {
    /// A PostgreSQL database; an existing one is written over only with `overwrite`.
    Postgres { target: PgTarget, overwrite: bool },
    /// A local directory.
    Dir(PathBuf),
    /// A directory on a Host.
    HostDir { conn: Connection, dir: String },
}

/// What a restore did and checked.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub id: String,
    pub bytes: u64,
    pub millis: u64,
    pub checked: Vec<String>,
}

/// What one pass over the data does with the decompressed stream.
enum Use<'a> {
    Check,
    TarCheck,
    /// Extracted below the directory; with `true`, files get their owners back (a restore).
    TarExtract(PathBuf, &'a Summary, bool),
    TarToHost(&'a Connection, &'a str),
    PgRestore(&'a PgTarget, bool),
}

type Decoder = ZstdDecoder<BufReader<DuplexStream>>;

fn refused(e: impl std::fmt::Display) -> EngineError {
    EngineError::Refused(e.to_string())
}

/// Runs a sync tar walk over the stream on a blocking thread; gives the stream back.
async fn tar_walk(
    d: Decoder,
    f: impl FnOnce(&mut SyncIoBridge<Decoder>) -> Result<Summary, archive::Refused> + Send + 'static,
) -> (Result<Summary, EngineError>, Decoder) {
    let joined = tokio::task::spawn_blocking(move || {
        let mut bridge = SyncIoBridge::new(d);
        let r = f(&mut bridge);
        (r, bridge.into_inner())
    })
    .await;
    match joined {
        Ok((r, d)) => (r.map_err(refused), d),
        Err(e) => panic!("the tar reader panicked: {e}"),
    }
}

impl Job {
    /// One pass over artifact `m`: the data streamed from the store, hashed, decompressed and
    /// used; then the hash and size are compared with the manifest.
    async fn pass(&self, m: &Manifest, how: Use<'_>) -> Result<Option<Summary>, EngineError> {
        let keys = self.keys_for(m)?;
        let (mut w, r) = tokio::io::duplex(PIPE);
        // The stored bytes are hashed as they arrive, then decrypted (when encrypted) on the
        // way to the decoder; whatever happens downstream, every stored byte is hashed.
        let (mut pw, pr) = tokio::io::duplex(PIPE);
        let progress = self.progress.clone();
        let pump = async move {
            let mut tap = super::tap::Tap::hashing(r).reporting(progress);
            let passed = match keys {
                None => match tokio::io::copy(&mut tap, &mut pw).await {
                    Ok(_) => pw.shutdown().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
                Some(k) => k.decrypt(&mut tap, &mut pw).await,
            };
            drop(pw);
            let _ = tokio::io::copy(&mut tap, &mut tokio::io::sink()).await;
            (passed, tap.finish())
        };
        let decoder = ZstdDecoder::new(BufReader::new(pr));
        let consume = async {
            let (result, d) = match how {
                Use::Check => (Ok(None), decoder),
                Use::TarCheck => {
                    let (r, d) = tar_walk(decoder, |b| archive::check(b, Limits::default())).await;
                    (r.map(Some), d)
                }
                Use::TarExtract(dir, checked, owners) => {
                    let checked = Summary { files: checked.files.clone(), ..Summary::default() };
                    let f = move |b: &mut SyncIoBridge<Decoder>| {
                        archive::extract(b, &dir, Limits::default(), &checked, owners)
                    };
                    let (r, d) = tar_walk(decoder, f).await;
                    (r.map(Some), d)
                }
                Use::TarToHost(conn, dir) => {
                    let mut d = decoder;
                    let cmd = format!(
                        "set -e; mkdir -p {q}; tar --extract --file=- --numeric-owner --preserve-permissions \
                         --no-overwrite-dir --directory={q}",
                        q = quote(dir)
                    );
                    let r =
                        conn.run_with_input(&cmd, &mut d, std::time::Duration::from_secs(24 * 3600)).await;
                    (r.map(|()| None).map_err(refused), d)
                }
                Use::PgRestore(t, clean) => {
                    let mut d = decoder;
                    let mut args =
                        vec!["--no-owner", "--exit-on-error", "--no-password", "--dbname", &t.database];
                    if clean {
                        args.extend(["--clean", "--if-exists"]);
                    }
                    let r = t.run("pg_restore", &args, Some(&mut d), None::<&mut tokio::io::Sink>).await;
                    (r.map(|()| None).map_err(EngineError::from), d)
                }
            };
            // Read what the use did not (trailing bytes), so the pump hashes all of it.
            let mut rest = d.into_inner().into_inner();
            let _ = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await;
            result
        };
        let name = data_name(&m.id);
        let (read, (passed, (size, sha, _)), result) =
            tokio::join!(self.store.read(&name, &mut w), pump, consume);
        read?;
        // A data mismatch explains any other failure: report it first, then decryption's.
        m.check_data(size, &sha)?;
        passed.map_err(|e| EngineError::Refused(format!("artifact {}: {e}", m.id)))?;
        result
    }

    /// The keys that read artifact `m`: none when it is not encrypted; refused when it is and
    /// this Backup has no identity to read it with.
    fn keys_for(&self, m: &Manifest) -> Result<Option<super::crypt::Keys>, EngineError> {
        match (&m.encryption, &self.encryption) {
            (None, _) => Ok(None),
            (Some(_), Some(k)) if !k.identities.is_empty() => Ok(Some(k.clone())),
            (Some(how), _) => Err(EngineError::Refused(format!(
                "artifact {} is encrypted ({how}): give spec.encryption.identitySecretRef to read it",
                m.id
            ))),
        }
    }

    /// The manifest of `id`, its signature checked.
    async fn manifest(&self, id: &str) -> Result<Manifest, EngineError> {
        let cat = self.catalog().await?;
        if let Some((_, why)) = cat.corrupt.iter().find(|(c, _)| c == id) {
            return Err(EngineError::Refused(why.clone()));
        }
        cat.get(id).map(|e| e.manifest.clone()).ok_or_else(|| EngineError::NoSuchArtifact(id.into()))
    }

    /// Reads artifact `id` whole and checks everything, writing nothing.
    pub async fn check(&self, id: &str) -> Result<(Manifest, Option<Summary>), EngineError> {
        let m = self.manifest(id).await?;
        let how = if m.payload == Payload::Tar { Use::TarCheck } else { Use::Check };
        let summary = self.pass(&m, how).await?;
        Ok((m, summary))
    }

    /// Restores artifact `id` into `target`, after a full check.
    pub async fn restore(&self, id: &str, target: &Target) -> Result<Report, EngineError> {
        let started = Instant::now();
        let (m, summary) = self.check(id).await?;
        let mut checked = vec![
            if m.hmac.is_some() { "manifest HMAC-SHA256" } else { "manifest (unsigned)" }.to_owned(),
            format!("SHA-256 and size of {} bytes", m.size),
        ];
        if let Some(s) = &summary {
            checked.push(format!("{} archive entries judged safe", s.entries));
        }
        match (m.payload, target, &summary) {
            (Payload::PgDump, Target::Postgres { target, overwrite }, _) => {
                prepare_database(target, *overwrite).await?;
                self.pass(&m, Use::PgRestore(target, *overwrite)).await?;
            }
            (Payload::Tar, Target::Dir(dir), Some(s)) => {
                // Checked whole already: the directory may be made now (as `mkdir -p` on a host).
                std::fs::create_dir_all(dir).map_err(|e| refused(format!("{}: {e}", dir.display())))?;
                self.pass(&m, Use::TarExtract(dir.clone(), s, true)).await?;
                checked.push(format!("{} files' checksums compared after extraction", s.files.len()));
            }
            (Payload::Tar, Target::HostDir { conn, dir }, _) => {
                if dir != "/" {
                    super::paths::check_abs(dir, "target directory").map_err(EngineError::Refused)?;
                }
                self.pass(&m, Use::TarToHost(conn, dir)).await?;
            }
            (p, t, _) => {
                return Err(EngineError::Refused(format!("a {p:?} artifact cannot be restored into {t:?}")));
            }
        }
        let millis = started.elapsed().as_millis() as u64;
        Ok(Report { id: m.id, bytes: m.size, millis, checked })
    }

    /// A restore drill of `id`: a PostgreSQL dump restored into a scratch database on the
    /// source's server (then `check_query` run in it, then dropped); a file archive extracted into a
    /// scratch directory with every file's checksum compared. The record is stored signed.
    pub async fn drill(
        &self,
        id: &str,
        check_query: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Verification, EngineError> {
        let started = Instant::now();
        let (m, summary) = self.check(id).await?;
        let server = match &self.source {
            super::source::Source::Postgres(t) => Some(t.with_database("postgres")),
            super::source::Source::HostFiles { .. } | super::source::Source::LocalFiles { .. } => None,
        };
        let method = match (m.payload, server, summary) {
            (Payload::PgDump, Some(server), _) => {
                let (server, query) = (&server, check_query);
                let db = format!("nova_drill_{}", &m.id[17..]);
                let scratch = server.with_database(&db);
                let restored = async {
                    create_database(server, &db).await?;
                    self.pass(&m, Use::PgRestore(&scratch, false)).await?;
                    match query {
                        Some(q) => Ok::<_, EngineError>(format!(
                            "pg_restore into a scratch database; check query returned {}",
                            psql(&scratch, q).await?
                        )),
                        None => Ok("pg_restore into a scratch database".into()),
                    }
                }
                .await;
                drop_database(server, &db).await?;
                restored?
            }
            (Payload::Tar, _, Some(s)) => {
                let dir = tempfile::tempdir().map_err(refused)?;
                self.pass(&m, Use::TarExtract(dir.path().to_path_buf(), &s, false)).await?;
                format!("extracted {} files into a scratch directory; checksums compared", s.files.len())
            }
            (p, _, _) => return Err(EngineError::Refused(format!("no drill for a {p:?} artifact here"))),
        };
        let mut v = Verification {
            id: m.id.clone(),
            sha256: m.sha256.clone(),
            verified_at: now.to_rfc3339_opts(SecondsFormat::Secs, true),
            method,
            restore_millis: started.elapsed().as_millis() as u64,
            hmac: None,
        };
        v.sign(self.key.as_deref());
        self.store.write(&verified_name(&m.id), &v.to_bytes()[..]).await?;
        Ok(v)
    }
}

/// Runs one SQL statement with psql in `t`'s database; returns its output, trimmed.
async fn psql(t: &PgTarget, sql: &str) -> Result<String, EngineError> {
    let args = [
        "--no-password",
        "--no-psqlrc",
        "--tuples-only",
        "--no-align",
        "--set=ON_ERROR_STOP=1",
        "--command",
        sql,
    ];
    let mut out = Vec::new();
    t.run("psql", &args, None::<&[u8]>, Some(&mut out)).await?;
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

async fn exists(server: &PgTarget, db: &str) -> Result<bool, EngineError> {
    let admin = server.with_database("postgres");
    Ok(psql(&admin, &format!("SELECT count(*) FROM pg_database WHERE datname = {}", literal(db))).await?
        == "1")
}

async fn create_database(server: &PgTarget, db: &str) -> Result<(), EngineError> {
    psql(&server.with_database("postgres"), &format!("CREATE DATABASE {}", ident(db))).await.map(drop)
}

async fn drop_database(server: &PgTarget, db: &str) -> Result<(), EngineError> {
    let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(db));
    psql(&server.with_database("postgres"), &sql).await.map(drop)
}

/// A new database is created; an existing one is written over only with `overwrite`.
async fn prepare_database(t: &PgTarget, overwrite: bool) -> Result<(), EngineError> {
    match (exists(t, &t.database).await?, overwrite) {
        (false, _) => create_database(t, &t.database).await,
        (true, true) => Ok(()),
        (true, false) => Err(EngineError::Refused(format!(
            "database {} exists: restore into a new database, or set overwrite: true to write over it",
            t.database
        ))),
    }
}
