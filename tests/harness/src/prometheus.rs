//! A private Prometheus server on a free loopback port, from Debian's `prometheus` package,
//! scraping the given targets every second.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::process::Process;
use crate::{Error, Result};

pub struct Prometheus {
    url: String,
    process: Option<Process>,
    _dir: tempfile::TempDir,
}

/// More than scraping: rule files and where alerts go.
#[derive(Default, Clone, Debug)]
pub struct Extra {
    /// Rule files Prometheus loads: every `*.yaml` in this directory (see [`Prometheus::reload`]).
    pub rules_dir: Option<std::path::PathBuf>,
    /// Alertmanager `host:port` alerts are sent to.
    pub alertmanager: Option<String>,
    /// Further scrape jobs: (job name, targets).
    pub jobs: Vec<(String, Vec<String>)>,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`, path `/metrics`) under job `app`.
    pub fn start(targets: &[String]) -> Result<Self> {
        Self::start_with(targets, &Extra::default())
    }

    /// [`start`](Self::start), with rule files, an Alertmanager and more jobs.
    pub fn start_with(targets: &[String], extra: &Extra) -> Result<Self> {
        let bin = std::env::var_os("NOVA_PROMETHEUS").unwrap_or_else(|| "/usr/bin/prometheus".into());
        if !Path::new(&bin).exists() {
            return Err(Error::Other(format!("{} not found (apt-get install prometheus)", bin.display())));
        }
        let dir = tempfile::Builder::new()
            .prefix("nova-prom-")
            .tempdir()
            .map_err(|e| Error::io("temporary directory", e))?;
        let mut jobs = vec![serde_json::json!({"job_name": "app", "static_configs": [{"targets": targets}]})];
        for (name, t) in &extra.jobs {
            jobs.push(serde_json::json!({"job_name": name, "static_configs": [{"targets": t}]}));
        }
        let mut config = serde_json::json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": jobs,
        });
        if let Some(d) = &extra.rules_dir {
            config["rule_files"] = serde_json::json!([d.join("*.yaml")]);
        }
        if let Some(am) = &extra.alertmanager {
            config["alerting"] =
                serde_json::json!({"alertmanagers": [{"static_configs": [{"targets": [am]}]}]});
        }
        let config_path = dir.path().join("prometheus.yml");
        // JSON is YAML: no second serializer needed.
        std::fs::write(&config_path, config.to_string())
            .map_err(|e| Error::io("writing prometheus.yml", e))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::io("free port", e))?
            .port();
        let args: Vec<OsString> = vec![
            format!("--config.file={}", config_path.display()).into(),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()).into(),
            format!("--web.listen-address=127.0.0.1:{port}").into(),
            // POST /-/reload, after rule files changed.
            "--web.enable-lifecycle".into(),
        ];
        let mut process = Process::start("prometheus", Path::new(&bin), args, dir.path())?;
        let url = format!("http://127.0.0.1:{port}");
        wait_ready(port, &mut process)?;
        Ok(Self { url, process: Some(process), _dir: dir })
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Reloads the configuration and rule files (`POST /-/reload`); fails with Prometheus's
    /// words when it refuses them.
    pub fn reload(&self) -> Result<()> {
        let port = self.url.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).unwrap_or_default();
        let out = http("POST", port, "/-/reload")?;
        if out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(Error::Other(format!("Prometheus refused the reload: {out}")))
        }
    }
}

/// One plain HTTP/1.0 request on loopback; the whole answer.
pub(crate) fn http(method: &str, port: u16, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| Error::io("connecting", e))?;
    s.write_all(format!("{method} {path} HTTP/1.0\r\nContent-Length: 0\r\n\r\n").as_bytes())
        .map_err(|e| Error::io("writing a request", e))?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| Error::io("reading an answer", e))?;
    Ok(out)
}

fn wait_ready(port: u16, process: &mut Process) -> Result<()> {
    await_ok(port, "/-/ready", "Prometheus", process)
}

/// Waits until `GET path` on `port` answers 200, failing at once when `process` ended, or
/// after 60 s naming `who`.
pub(crate) fn await_ok(port: u16, path: &str, who: &str, process: &mut Process) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = process.exited() {
            return Err(process.died(status));
        }
        let answer = http("GET", port, path).unwrap_or_default();
        if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout { what: format!("{who} {path}"), seconds: 60 });
        }
        // Poll interval while the condition is awaited.
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(p) = self.process.take() {
            p.stop(Duration::from_secs(10));
        }
    }
}

/// Debian's node_exporter on a free loopback port.
pub struct NodeExporter {
    port: u16,
    process: Option<Process>,
    _dir: tempfile::TempDir,
}

impl NodeExporter {
    pub fn start() -> Result<Self> {
        let bin = std::env::var_os("NOVA_NODE_EXPORTER")
            .unwrap_or_else(|| "/usr/bin/prometheus-node-exporter".into());
        let dir = tempfile::tempdir().map_err(|e| Error::io("temporary directory", e))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::io("free port", e))?
            .port();
        let args: Vec<OsString> = vec![format!("--web.listen-address=127.0.0.1:{port}").into()];
        let mut process = Process::start("node_exporter", Path::new(&bin), args, dir.path())?;
        await_ok(port, "/metrics", "node_exporter", &mut process)?;
        Ok(Self { port, process: Some(process), _dir: dir })
    }

    /// `127.0.0.1:<port>`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        if let Some(p) = self.process.take() {
            p.stop(Duration::from_secs(10));
        }
    }
}
