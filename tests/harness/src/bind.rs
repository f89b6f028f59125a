//! BIND 9 (Debian's `bind9`) on a free loopback port, primary for one zone that accepts
//! RFC 2136 updates of TXT records signed with a TSIG key; for DNS-01 tests.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::process::Process;
use crate::{Error, Result};

pub struct Bind {
    pub addr: SocketAddr,
    pub zone: String,
    pub key_name: String,
    /// The TSIG secret, base64 (as a Secret would hold it).
    pub key_secret: String,
    process: Option<Process>,
    _dir: tempfile::TempDir,
}

impl Bind {
    /// Starts named, primary for `zone`, with key `nova-key.` (hmac-sha256).
    pub fn start(zone: &str) -> Result<Self> {
        let named = Path::new("/usr/sbin/named");
        if !named.exists() {
            return Err(Error::Other("named not found (apt-get install bind9)".into()));
        }
        let dir = tempfile::Builder::new()
            .prefix("nova-bind-")
            .tempdir()
            .map_err(|e| Error::io("temporary directory", e))?;
        let d = dir.path();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::io("free port", e))?
            .port();
        let mut secret = [0u8; 32];
        getrandom(&mut secret)?;
        let key_secret = base64::engine::general_purpose::STANDARD.encode(secret);
        crate::record::secret(&key_secret);
        let key_name = "nova-key".to_owned();
        let conf = format!(
            r#"options {{
  directory "{dir}";
  pid-file "{dir}/named.pid";
  session-keyfile "{dir}/session.key";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion no;
  dnssec-validation no;
  notify no;
}};
controls {{ }};
key "{key_name}" {{ algorithm hmac-sha256; secret "{key_secret}"; }};
zone "{zone}" {{
  type primary;
  file "{dir}/zone.db";
  update-policy {{ grant {key_name} zonesub TXT; }};
}};
"#,
            dir = d.display()
        );
        let zonefile = format!(
            "$TTL 60\n@ IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 60\n@ IN NS ns.{zone}.\nns IN A 127.0.0.1\n"
        );
        let write = |p: &Path, t: &str| {
            std::fs::write(p, t).map_err(|e| Error::io(format!("writing {}", p.display()), e))
        };
        write(&d.join("named.conf"), &conf)?;
        write(&d.join("zone.db"), &zonefile)?;
        let check = Command::new("/usr/bin/named-checkconf").arg(d.join("named.conf")).output();
        if let Ok(out) = check
            && !out.status.success()
        {
            return Err(Error::Other(format!("named.conf: {}", String::from_utf8_lossy(&out.stdout))));
        }
        // -g: foreground, logs to stderr; -4: IPv4 only; runs as the current user.
        let args: Vec<OsString> = ["-g", "-4", "-c"]
            .iter()
            .map(OsString::from)
            .chain([d.join("named.conf").into_os_string()])
            .collect();
        let mut process = Process::start("named", named, args, d)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = process.exited() {
                return Err(process.died(status));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout { what: "named to listen".into(), seconds: 20 });
            }
            // Poll interval while the port is awaited (a refused connection returns at once).
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self { addr, zone: zone.to_owned(), key_name, key_secret, process: Some(process), _dir: dir })
    }

    /// The TXT values of `name` as named answers them now (via `dig`).
    pub fn txt(&self, name: &str) -> Result<Vec<String>> {
        let out = Command::new("dig")
            .args(["+short", "+norecurse", "-p", &self.addr.port().to_string(), "@127.0.0.1", name, "TXT"])
            .output()
            .map_err(|e| Error::io("dig (apt-get install bind9-dnsutils)", e))?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim_matches('"').to_owned()).collect())
    }
}

fn getrandom(buf: &mut [u8]) -> Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| Error::io("/dev/urandom", e))
}

impl Drop for Bind {
    fn drop(&mut self) {
        if let Some(p) = self.process.take() {
            p.stop(Duration::from_secs(5));
        }
    }
}
