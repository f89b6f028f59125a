//! Where a PostgreSQL server is and how its client tools run: as processes where Nova runs, or
//! on a Host over SSH when the database lives on that machine (`postgres.hostRef`). Either
//! way the password is never on a command line: in the tool's environment locally, on the
//! remote command's stdin (read into its environment there) on a host.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::Command;

use super::source::SourceError;
use crate::ssh::{self, Connection, quote};

/// A dump or a restore may take a day.
const LONG: Duration = Duration::from_secs(24 * 3600);

/// Where a PostgreSQL server is, as libpq environment variables (so that the password never
/// appears on a command line, where `ps` would show it).
#[derive(Clone)]
pub struct PgTarget {
    env: Vec<(&'static str, String)>,
    password: Option<String>,
    pub database: String,
    /// Run the tools on this Host over SSH (`postgres.hostRef`) instead of where Nova runs.
    on: Option<OnHost>,
}

/// A Host the PostgreSQL tools run on.
#[derive(Clone)]
pub struct OnHost {
    pub conn: Connection,
    pub host: String,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.on {
            Some(h) => write!(f, "PgTarget(database {} on host {})", self.database, h.host),
            None => write!(f, "PgTarget(database {})", self.database),
        }
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
        Ok(Self { env, password, database: database.into(), on: None })
    }

    /// The tools run on `host` over `conn` (the URL is then as seen from that host). A
    /// password goes to the host on the command's stdin, never on a command line.
    pub fn on_host(self, conn: Connection, host: String, field: &str) -> Result<Self, SourceError> {
        if self.password.as_deref().is_some_and(|p| p.contains(['\n', '\r'])) {
            let why = "a password with a line break cannot be passed to a host";
            return Err(SourceError::BadUrl { field: field.into(), why: why.into() });
        }
        Ok(Self { on: Some(OnHost { conn, host }), ..self })
    }

    /// The Host the tools run on, if not where Nova runs.
    pub fn host(&self) -> Option<&str> {
        self.on.as_ref().map(|h| h.host.as_str())
    }

    /// The same server, another database (a scratch database of a restore drill).
    pub fn with_database(&self, database: &str) -> Self {
        Self { database: database.into(), ..self.clone() }
    }

    /// A command for a PostgreSQL client tool with this target in its environment.
    fn command(&self, tool: &str) -> Command {
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

impl PgTarget {
    /// Runs `tool` with `args`, `stdin` streamed in and/or its stdout streamed out; a non-zero
    /// exit is an error carrying the end of its stderr (scrubbed).
    pub async fn run<R, W>(
        &self,
        tool: &'static str,
        args: &[&str],
        stdin: Option<R>,
        stdout: Option<&mut W>,
    ) -> Result<(), SourceError>
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send,
    {
        let Some(h) = &self.on else {
            let mut cmd = self.command(tool);
            cmd.args(args);
            return run_tool(tool, cmd, stdin, stdout, &|s| self.scrub(s)).await;
        };
        let script = self.remote_script(tool, args);
        let secret = format!("{}\n", self.password.as_deref().unwrap_or_default());
        let r = match (stdin, stdout) {
            (Some(data), _) => h.conn.run_with_input(&script, secret.as_bytes().chain(data), LONG).await,
            (None, Some(out)) => {
                h.conn.run_with_input_output(&script, secret.as_bytes(), out, LONG).await.map(drop)
            }
            (None, None) => h
                .conn
                .run_with_input_output(&script, secret.as_bytes(), &mut tokio::io::sink(), LONG)
                .await
                .map(drop),
        };
        r.map_err(|e| match e {
            ssh::Error::Failed { code, output, .. } => SourceError::Failed {
                tool,
                status: format!("exit status: {code}"),
                stderr: self.scrub(&output),
            },
            other => SourceError::Ssh(other),
        })
    }

    /// Shell for `tool` on the host: the password's line read from stdin into the tool's
    /// environment (the rest of stdin is the tool's), the other libpq variables quoted.
    fn remote_script(&self, tool: &str, args: &[&str]) -> String {
        let mut vars = vec![format!("PGDATABASE={}", quote(&self.database)), "PGCONNECT_TIMEOUT=15".into()];
        vars.extend(self.env.iter().map(|(k, v)| format!("{k}={}", quote(v))));
        let args: Vec<String> = args.iter().map(|a| quote(a)).collect();
        format!(
            "IFS= read -r PGPASSWORD || true; [ -n \"$PGPASSWORD\" ] && export PGPASSWORD || unset PGPASSWORD; \
             unset PGSERVICE PGPASSFILE; {} exec {tool} {}",
            vars.iter().map(|v| format!("export {v};")).collect::<Vec<_>>().join(" "),
            args.join(" ")
        )
    }

    /// `tool --version`, first line, where the tool runs.
    pub async fn version(&self, tool: &'static str) -> Result<String, SourceError> {
        match &self.on {
            None => tool_version(tool).await,
            Some(h) => {
                let out = h.conn.run(&format!("{tool} --version | head -n1"), Duration::from_secs(30)).await;
                Ok(out.map_err(SourceError::Ssh)?.trim().to_owned())
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

/// Runs a local tool with `stdin` streamed in and/or its stdout streamed out; a non-zero exit
/// is an error carrying the end of its stderr (through `scrub`: no password in it).
async fn run_tool<R, W>(
    tool: &'static str,
    mut cmd: Command,
    stdin: Option<R>,
    stdout: Option<&mut W>,
    scrub: &(dyn Fn(&str) -> String + Sync),
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
    let stderr = scrub(String::from_utf8_lossy(&err).trim());
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

    /// On a host, the password is read from stdin: never in the command line sshd runs.
    #[test]
    fn the_remote_command_carries_no_password_and_quotes_every_value() {
        let t = PgTarget::from_url(
            "postgres://app:s3cr3t@127.0.0.1:5432/x?sslmode=disable",
            "shop'; rm -rf /",
            "f",
        )
        .unwrap();
        let script = t.remote_script("pg_dump", &["--format=custom", "--dbname", "a b"]);
        assert!(!script.contains("s3cr3t"), "{script}");
        assert!(script.starts_with("IFS= read -r PGPASSWORD"), "{script}");
        assert!(script.contains("export PGDATABASE='shop'\\''; rm -rf /';"), "{script}");
        assert!(
            script.contains("export PGHOST=127.0.0.1;")
                && script.ends_with("exec pg_dump --format=custom --dbname 'a b'"),
            "{script}"
        );
    }
}
