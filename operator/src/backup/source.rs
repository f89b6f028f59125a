//! What a backup reads: a PostgreSQL database through `pg_dump -Fc` run where Nova runs, or
//! files on a Host as a tar stream over SSH. Sources push raw bytes into a writer; the engine
//! compresses and hashes them on the way to the store.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::Command;

use super::manifest::Payload;
use super::paths;
use crate::ssh::{Connection, quote};

const DUMP: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the connection URL in {field} is not a postgres:// URL ({why})")]
    BadUrl { field: String, why: String },
    #[error("{tool} could not be started: {reason} (is the PostgreSQL client installed?)")]
    Spawn { tool: &'static str, reason: String },
    #[error("{tool} failed ({status}): {stderr}")]
    Failed { tool: &'static str, status: String, stderr: String },
    #[error("{0}")]
    Path(String),
    #[error(transparent)]
    Ssh(#[from] crate::ssh::Error),
}

/// Where a PostgreSQL server is, as libpq environment variables (so that the password never
/// appears on a command line, where `ps` would show it).
#[derive(Clone)]
pub struct PgTarget {
    env: Vec<(&'static str, String)>,
    password: Option<String>,
    pub database: String,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgTarget(database {})", self.database)
    }
}

impl PgTarget {
    /// From a `postgres://user:password@host:port/db?sslmode=...` URL (the database in it is
    /// replaced by `database`). `field` names where the URL came from, for errors.
    pub fn from_url(url: &str, database: &str, field: &str) -> Result<Self, SourceError> {
        let bad = |why: &str| SourceError::BadUrl { field: field.into(), why: why.into() };
        let u = url::Url::parse(url.trim()).map_err(|e| bad(&e.to_string()))?;
        if !matches!(u.scheme(), "postgres" | "postgresql") {
            return Err(bad("the scheme must be postgres or postgresql"));
        }
        let mut env = Vec::new();
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned())
        };
        if let Some(h) = u.host_str().filter(|h| !h.is_empty()) {
            env.push(("PGHOST", h.trim_matches(['[', ']']).to_owned()));
        }
        if let Some(p) = u.port() {
            env.push(("PGPORT", p.to_string()));
        }
        if !u.username().is_empty() {
            env.push(("PGUSER", decode(u.username()).unwrap_or_default()));
        }
        let password = u.password().and_then(decode);
        for (k, v) in u.query_pairs() {
            match k.as_ref() {
                "host" => env.push(("PGHOST", v.into_owned())),
                "sslmode" => env.push(("PGSSLMODE", v.into_owned())),
                _ => {}
            }
        }
        Ok(Self { env, password, database: database.into() })
    }

    /// The same server, another database (a scratch database of a restore drill).
    pub fn with_database(&self, database: &str) -> Self {
        Self { database: database.into(), ..self.clone() }
    }

    /// A command for a PostgreSQL client tool with this target in its environment.
    pub fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.env_remove("PGPASSWORD").env_remove("PGSERVICE").env("PGDATABASE", &self.database);
        c.env("PGCONNECT_TIMEOUT", "15").envs(self.env.iter().map(|(k, v)| (*k, v)));
        if let Some(p) = &self.password {
            c.env("PGPASSWORD", p);
        }
        c.kill_on_drop(true);
        c
    }

    /// Removes the password from text a tool printed (it never should print it; be sure).
    pub fn scrub(&self, text: &str) -> String {
        match &self.password {
            Some(p) if !p.is_empty() => text.replace(p.as_str(), "[redacted]"),
            _ => text.to_owned(),
        }
    }
}

/// The thing backed up.
#[derive(Clone)]
pub enum Source {
    Postgres(PgTarget),
    HostFiles { conn: Connection, host: String, paths: Vec<String> },
}

impl Source {
    pub fn payload(&self) -> Payload {
        match self {
            Source::Postgres(_) => Payload::PgDump,
            Source::HostFiles { .. } => Payload::Tar,
        }
    }

    /// How the manifest describes the source (never a secret).
    pub fn describe(&self) -> String {
        match self {
            Source::Postgres(t) => format!("postgres database {}", t.database),
            Source::HostFiles { host, paths, .. } => format!("files {} on host {host}", paths.join(" ")),
        }
    }

    /// Streams the raw dump into `out` and shuts it down; returns the tools' versions.
    pub async fn dump<W: AsyncWrite + Unpin + Send>(
        &self,
        mut out: W,
    ) -> Result<Vec<(String, String)>, SourceError> {
        match self {
            Source::Postgres(t) => {
                let version = tool_version("pg_dump").await?;
                let mut cmd = t.command("pg_dump");
                cmd.args(["--format=custom", "--compress=0", "--no-password"]);
                run_tool("pg_dump", cmd, None::<&[u8]>, Some(&mut out), t).await?;
                Ok(vec![("pg_dump".into(), version)])
            }
            Source::HostFiles { conn, paths, .. } => {
                let mut rel = Vec::new();
                for p in paths {
                    paths::check_abs(p, "spec.source.files.paths").map_err(SourceError::Path)?;
                    rel.push(quote(p.trim_start_matches('/')));
                }
                // GNU tar stores symlinks as links (no -h) and keeps modes; --numeric-owner
                // because names differ between hosts.
                let cmd = format!(
                    "tar --create --file=- --numeric-owner --preserve-permissions --directory=/ -- {}",
                    rel.join(" ")
                );
                conn.run_with_output(&cmd, &mut out, DUMP).await?;
                let version = conn.run("tar --version | head -n1", Duration::from_secs(30)).await?;
                Ok(vec![("tar".into(), version.trim().to_owned())])
            }
        }
    }
}

/// `tool --version`, first line.
async fn tool_version(tool: &'static str) -> Result<String, SourceError> {
    let out = Command::new(tool)
        .arg("--version")
        .output()
        .await
        .map_err(|e| SourceError::Spawn { tool, reason: e.to_string() })?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().trim().to_owned())
}

/// Runs a PostgreSQL tool with `stdin` streamed in and/or its stdout streamed out; a non-zero
/// exit is an error carrying the end of its stderr (scrubbed).
pub async fn run_tool<R, W>(
    tool: &'static str,
    mut cmd: Command,
    stdin: Option<R>,
    stdout: Option<&mut W>,
    t: &PgTarget,
) -> Result<(), SourceError>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(if stdout.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| SourceError::Spawn { tool, reason: e.to_string() })?;
    let (cin, cout, mut cerr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let feed = async move {
        if let (Some(mut r), Some(mut w)) = (stdin, cin) {
            // A tool that stops reading early (it failed) shows in its exit status.
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        }
    };
    let drain = async move {
        if let (Some(mut r), Some(w)) = (cout, stdout) {
            tokio::io::copy(&mut r, w).await?;
            w.shutdown().await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let errs = async move {
        let mut e = Vec::new();
        if let Some(r) = cerr.as_mut() {
            let _ = r.take(64 * 1024).read_to_end(&mut e).await;
        }
        e
    };
    let ((), drained, err, status) = tokio::join!(feed, drain, errs, child.wait());
    let status = status.map_err(|e| SourceError::Spawn { tool, reason: e.to_string() })?;
    let stderr = t.scrub(String::from_utf8_lossy(&err).trim());
    if !status.success() {
        return Err(SourceError::Failed { tool, status: status.to_string(), stderr });
    }
    drained.map_err(|e| SourceError::Failed {
        tool,
        status: "output not taken".into(),
        stderr: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_libpq_variables_and_the_password_is_never_shown() {
        let t = PgTarget::from_url("postgres://app:s%40cret@db.example:5433/x?sslmode=require", "shop", "f")
            .unwrap();
        assert_eq!(t.password.as_deref(), Some("s@cret"));
        assert!(t.env.contains(&("PGHOST", "db.example".into())));
        assert!(t.env.contains(&("PGPORT", "5433".into())));
        assert!(t.env.contains(&("PGUSER", "app".into())));
        assert!(t.env.contains(&("PGSSLMODE", "require".into())));
        assert!(!format!("{t:?}").contains("s@cret"));
        assert_eq!(t.scrub("auth failed for s@cret"), "auth failed for [redacted]");
        let e = PgTarget::from_url("mysql://a:secretpw@h/db", "d", "spec.source.postgres").unwrap_err();
        assert!(e.to_string().contains("spec.source.postgres") && !e.to_string().contains("secretpw"));
        let e = PgTarget::from_url("not a url secretpw", "d", "f").unwrap_err();
        assert!(!e.to_string().contains("secretpw"), "{e}");
    }
}
