//! An S3-compatible server on free loopback ports: SeaweedFS (Apache-2.0; MinIO and Garage are
//! AGPL and not used), master + volume + filer + S3 gateway in one `weed server` process, with
//! one identity whose access key and secret are made per server. Buckets are created on first
//! upload (the identity is an admin).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::process::Process;
use crate::{Error, Result};

pub struct S3 {
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    /// The master's HTTP and gRPC ports.
    master: (u16, u16),
    process: Option<Process>,
    _dir: tempfile::TempDir,
}

/// An HTTP/1.0 GET on loopback: the response head and body, or None when nothing answers.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

impl S3 {
    pub fn start() -> Result<Self> {
        let bin = crate::binaries::seaweedfs_dir()?.join("weed");
        let dir = tempfile::Builder::new()
            .prefix("nova-s3-")
            .tempdir()
            .map_err(|e| Error::io("temporary directory", e))?;
        let access_key = format!("AK{}", std::process::id());
        let random =
            |n: u64| std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), n);
        let secret_key = format!("sk-{:016x}{:016x}", random(1), random(2));
        crate::record::secret(&secret_key);
        let config = serde_json::json!({"identities": [{"name": "nova",
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]});
        let config_path = dir.path().join("s3.json");
        std::fs::write(&config_path, config.to_string()).map_err(|e| Error::io("writing s3.json", e))?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).map_err(|e| Error::io("data directory", e))?;
        let [master, volume, filer, s3, mg, vg, fg, sg] = crate::cluster::free_ports()?;
        let args: Vec<OsString> = [
            "server".to_owned(),
            format!("-dir={}", data.display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-master.port={master}"),
            format!("-master.port.grpc={mg}"),
            "-master.volumeSizeLimitMB=64".into(),
            format!("-volume.port={volume}"),
            format!("-volume.port.grpc={vg}"),
            "-volume.max=32".into(),
            "-filer".into(),
            format!("-filer.port={filer}"),
            format!("-filer.port.grpc={fg}"),
            "-s3".into(),
            format!("-s3.port={s3}"),
            format!("-s3.port.grpc={sg}"),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            format!("-s3.config={}", config_path.display()),
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        let mut process = Process::start("seaweedfs", &bin, args, dir.path())?;
        // Ready when the master hands out file ids (volumes are writable) and the S3 gateway
        // answers (403 without credentials).
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = process.exited() {
                return Err(process.died(status));
            }
            let writable = get(master, "/dir/assign").is_some_and(|r| r.contains("\"fid\""));
            if writable && get(s3, "/").is_some_and(|r| r.starts_with("HTTP/1.")) {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout { what: "SeaweedFS to accept uploads".into(), seconds: 90 });
            }
            // Poll interval while the condition is awaited.
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(Self {
            endpoint: format!("http://127.0.0.1:{s3}"),
            access_key,
            secret_key,
            master: (master, mg),
            process: Some(process),
            _dir: dir,
        })
    }

    /// Creates bucket `name` (with SeaweedFS's own shell: the harness signs no S3 requests).
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        let bin = crate::binaries::seaweedfs_dir()?.join("weed");
        let mut child = std::process::Command::new(bin)
            // host:port.grpcPort: SeaweedFS's notation for a gRPC port off the default offset.
            .args(["shell", &format!("-master=127.0.0.1:{}.{}", self.master.0, self.master.1)])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| Error::io("weed shell", e))?;
        if let Some(mut stdin) = child.stdin.take() {
            writeln!(stdin, "s3.bucket.create -name {name}").map_err(|e| Error::io("weed shell", e))?;
        }
        let out = child.wait_with_output().map_err(|e| Error::io("weed shell", e))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || text.to_lowercase().contains("error") {
            return Err(Error::Other(format!("creating bucket {name}: {text}")));
        }
        Ok(())
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        if let Some(p) = self.process.take() {
            p.stop(Duration::from_secs(10));
        }
    }
}
