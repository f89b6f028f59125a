//! A private PostgreSQL server on a free loopback port, from the machine's Debian packages
//! (`postgresql`). As root it runs as the `postgres` user, since the server refuses root.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::Process;
use crate::{Error, Result};

pub struct Postgres {
    url: String,
    process: Option<Process>,
    _dir: tempfile::TempDir,
}

/// The newest `/usr/lib/postgresql/<major>/bin`, or `NOVA_POSTGRES_BIN`.
fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("NOVA_POSTGRES_BIN") {
        return Ok(dir.into());
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| {
            Error::io("looking for PostgreSQL in /usr/lib/postgresql (apt-get install postgresql)", e)
        })?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .ok_or_else(|| Error::Other("no PostgreSQL under /usr/lib/postgresql".into()))
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

impl Postgres {
    /// Starts a server with trust authentication on 127.0.0.1 and a database user `nova`.
    pub fn start() -> Result<Self> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("nova-pg-")
            .tempdir()
            .map_err(|e| Error::io("temporary directory", e))?;
        let user = is_root().then_some("postgres");
        if let Some(user) = user {
            let ok = Command::new("chown")
                .args(["-R", &format!("{user}:{user}")])
                .arg(dir.path())
                .status()
                .map_err(|e| Error::io("chown", e))?
                .success();
            if !ok {
                return Err(Error::Other(format!("could not hand {} to {user}", dir.path().display())));
            }
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new("setpriv");
        if let Some(user) = user {
            initdb.args(["--reuid", user, "--regid", user, "--init-groups"]);
        }
        let out = initdb
            .arg("--")
            .arg(bin.join("initdb"))
            .args(["-U", "nova", "--auth=trust", "-E", "UTF8", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .map_err(|e| Error::io("running initdb", e))?;
        if !out.status.success() {
            return Err(Error::Other(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr))));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::io("free port", e))?
            .port();
        let args: Vec<OsString> = vec![
            "-D".into(),
            data.into(),
            "-p".into(),
            port.to_string().into(),
            "-k".into(),
            dir.path().into(),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            // Throwaway data: durability buys nothing here.
            "-c".into(),
            "fsync=off".into(),
        ];
        let mut process = Process::start_as("postgres", user, &bin.join("postgres"), args, dir.path())?;
        let url = format!("postgres://nova@127.0.0.1:{port}/postgres");
        wait_ready(&bin, port, &mut process)?;
        Ok(Self { url, process: Some(process), _dir: dir })
    }

    /// `postgres://nova@127.0.0.1:<port>/postgres`
    pub fn url(&self) -> &str {
        &self.url
    }
}

fn wait_ready(bin: &Path, port: u16, process: &mut Process) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = process.exited() {
            return Err(process.died(status));
        }
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout { what: "PostgreSQL to accept connections".into(), seconds: 30 });
        }
        // Poll interval while the condition is awaited (a refused connection returns at once).
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(p) = self.process.take() {
            p.stop(Duration::from_secs(10));
        }
    }
}
