//! A private Alertmanager on a free loopback port, from Debian's `prometheus-alertmanager`
//! package; its configuration is checked with the real `amtool check-config` first.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use crate::process::Process;
use crate::{Error, Result};

pub struct Alertmanager {
    port: u16,
    process: Option<Process>,
    _dir: tempfile::TempDir,
}

/// `amtool check-config` on `config` (YAML): Ok, or amtool's words.
pub fn check_config(config: &str) -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("temporary directory", e))?;
    let path = dir.path().join("alertmanager.yml");
    std::fs::write(&path, config).map_err(|e| Error::io("writing alertmanager.yml", e))?;
    let out = std::process::Command::new("amtool")
        .arg("check-config")
        .arg(&path)
        .output()
        .map_err(|e| Error::io("running amtool (apt-get install prometheus-alertmanager)", e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "amtool check-config refused it: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

impl Alertmanager {
    pub fn start(config: &str) -> Result<Self> {
        check_config(config)?;
        let bin = std::env::var_os("NOVA_ALERTMANAGER")
            .unwrap_or_else(|| "/usr/bin/prometheus-alertmanager".into());
        let dir = tempfile::Builder::new()
            .prefix("nova-am-")
            .tempdir()
            .map_err(|e| Error::io("temporary directory", e))?;
        let path = dir.path().join("alertmanager.yml");
        std::fs::write(&path, config).map_err(|e| Error::io("writing alertmanager.yml", e))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::io("free port", e))?
            .port();
        let args: Vec<OsString> = vec![
            format!("--config.file={}", path.display()).into(),
            format!("--storage.path={}", dir.path().join("data").display()).into(),
            format!("--web.listen-address=127.0.0.1:{port}").into(),
            // A single instance: no gossip port.
            "--cluster.listen-address=".into(),
        ];
        let mut process = Process::start("alertmanager", Path::new(&bin), args, dir.path())?;
        crate::prometheus::await_ok(port, "/-/ready", "Alertmanager", &mut process)?;
        Ok(Self { port, process: Some(process), _dir: dir })
    }

    /// `127.0.0.1:<port>`, what Prometheus sends alerts to.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Alerts Alertmanager holds (`/api/v2/alerts`), as JSON text.
    pub fn alerts(&self) -> Result<String> {
        let out = crate::prometheus::http("GET", self.port, "/api/v2/alerts")?;
        Ok(out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        if let Some(p) = self.process.take() {
            p.stop(Duration::from_secs(10));
        }
    }
}
