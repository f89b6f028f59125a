//! Pebble (Let's Encrypt's ACME test server) and pebble-challtestsrv as its DNS, from Debian's
//! `pebble` package, on free loopback ports. Every name resolves to 127.0.0.1, so Pebble
//! validates HTTP-01 challenges against the port given to [`Pebble::start`].

use std::ffi::OsString;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::pki::Pki;
use crate::process::Process;
use crate::{Error, Result};

pub struct Pebble {
    /// `https://127.0.0.1:<port>/dir`
    pub directory_url: String,
    /// The CA that signed Pebble's own HTTPS certificate (trust it to talk to the API).
    pub api_ca_path: PathBuf,
    management: u16,
    processes: Vec<Process>,
    dir: tempfile::TempDir,
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// How to run Pebble.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Where Pebble validates HTTP-01 challenges (on 127.0.0.1).
    pub http01_port: u16,
    /// Lifetime of issued certificates (Pebble's default is five years).
    pub validity: Option<Duration>,
    /// A DNS server to validate DNS-01 against instead of pebble-challtestsrv (which still
    /// runs, answering every other name with 127.0.0.1, unless this is set).
    pub dns_server: Option<SocketAddr>,
    /// The address pebble-challtestsrv gives every name (default 127.0.0.1).
    pub default_ipv4: Option<std::net::Ipv4Addr>,
    /// Run the Pebble built from the pinned Go module (ACME Renewal Information, profiles)
    /// instead of Debian's 2.4, with these profiles (name → validity).
    pub modern_profiles: Option<Vec<(String, Duration)>>,
    /// Require External Account Binding with this key ID and base64url HMAC key.
    pub eab: Option<(String, String)>,
}

impl Pebble {
    /// Starts the DNS mock and Pebble; HTTP-01 challenges are validated on `http01_port`.
    pub fn start(http01_port: u16) -> Result<Self> {
        Self::start_with(Options { http01_port, ..Options::default() })
    }

    /// Starts with `options`.
    pub fn start_with(options: Options) -> Result<Self> {
        let http01_port = options.http01_port;
        let dir = tempfile::Builder::new()
            .prefix("nova-pebble-")
            .tempdir()
            .map_err(|e| Error::io("temporary directory", e))?;
        let pki = Pki::new()?;
        let serving = pki.serving()?;
        let (cert, key, ca) =
            (dir.path().join("cert.pem"), dir.path().join("key.pem"), dir.path().join("ca.pem"));
        write(&cert, &serving.cert_pem)?;
        write(&key, &serving.key_pem)?;
        write(&ca, &pki.ca_pem)?;
        let [api, management, dns, dns_mgmt, tls] = crate::cluster::free_ports()?;
        let mut config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{api}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert, "privateKey": key,
            "httpPort": http01_port, "tlsPort": tls,
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
        }});
        if let Some(v) = options.validity {
            config["pebble"]["certificateValidityPeriod"] = serde_json::json!(v.as_secs());
        }
        if let Some((kid, key)) = &options.eab {
            config["pebble"]["externalAccountBindingRequired"] = serde_json::json!(true);
            config["pebble"]["externalAccountMACKeys"] = serde_json::json!({kid: key});
        }
        if let Some(profiles) = &options.modern_profiles {
            let map: serde_json::Map<String, serde_json::Value> = profiles
                .iter()
                .map(|(name, validity)| {
                    (
                        name.clone(),
                        serde_json::json!({"description": name, "validityPeriod": validity.as_secs()}),
                    )
                })
                .collect();
            config["pebble"]["profiles"] = serde_json::Value::Object(map);
        }
        let config_path = dir.path().join("pebble.json");
        write(&config_path, &config.to_string())?;

        let modern = match options.modern_profiles {
            Some(_) => Some(crate::binaries::pebble_dir()?),
            None => None,
        };
        let find = |name: &str| -> Result<PathBuf> {
            if let Some(dir) = &modern {
                return Ok(dir.join(name));
            }
            ["/usr/bin", "/usr/local/bin"]
                .iter()
                .map(|d| Path::new(d).join(name))
                .find(|p| p.exists())
                .ok_or_else(|| Error::Other(format!("{name} not found (apt-get install pebble)")))
        };
        let default_ipv4 = options.default_ipv4.map(|a| a.to_string()).unwrap_or_else(|| "127.0.0.1".into());
        let dns_args: Vec<OsString> = [
            "-defaultIPv4",
            &default_ipv4,
            "-defaultIPv6",
            "",
            // The DNS listener's flag was renamed after Debian's 2.4.
            if modern.is_some() { "-dnsserver" } else { "-dns01" },
            &format!("127.0.0.1:{dns}"),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &format!("127.0.0.1:{dns_mgmt}"),
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let mut dns_args = dns_args;
        if modern.is_some() {
            // Newer versions also serve DNS over HTTPS by default; not wanted here.
            dns_args.extend(["-doh".into(), "".into()]);
        }
        let mut dns_process =
            Process::start("pebble-challtestsrv", &find("pebble-challtestsrv")?, dns_args, dir.path())?;
        wait_port(dns_mgmt, &mut dns_process, "pebble-challtestsrv")?;
        // No random sleeps before validation, no random nonce rejections: tests stay quick and
        // deterministic (the client's nonce retry is not what they are about). `env` execs
        // pebble, so the process is pebble itself.
        let args: Vec<OsString> = vec![
            "PEBBLE_VA_NOSLEEP=1".into(),
            "PEBBLE_WFE_NONCEREJECT=0".into(),
            find("pebble")?.into(),
            "-config".into(),
            config_path.into(),
            "-dnsserver".into(),
            options.dns_server.map(|a| a.to_string()).unwrap_or_else(|| format!("127.0.0.1:{dns}")).into(),
        ];
        let pebble = Process::start("pebble", Path::new("/usr/bin/env"), args, dir.path())?;
        let mut processes = vec![dns_process, pebble];
        wait_port(api, &mut processes[1], "pebble")?;
        Ok(Self {
            directory_url: format!("https://127.0.0.1:{api}/dir"),
            api_ca_path: ca,
            management,
            processes,
            dir,
        })
    }

    /// The root that signs issued certificates (Pebble makes a new one each start), PEM.
    pub fn issuing_root(&self) -> Result<String> {
        let out = Command::new("curl")
            .args(["-sfS", "--cacert"])
            .arg(&self.api_ca_path)
            .arg(format!("https://127.0.0.1:{}/roots/0", self.management))
            .output()
            .map_err(|e| Error::io("curl (apt-get install curl)", e))?;
        if !out.status.success() {
            return Err(Error::Other(format!(
                "fetching Pebble's root: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Overrides the renewal information Pebble gives for `cert_pem` (newer Pebble only): a
    /// test hook of its management interface.
    pub fn set_renewal_info(&self, cert_pem: &str, ari_response: &serde_json::Value) -> Result<()> {
        let body = serde_json::json!({"Certificate": cert_pem, "ARIResponse": ari_response.to_string()});
        let out = Command::new("curl")
            .args(["-sfS", "-X", "POST", "--data-binary", &body.to_string(), "--cacert"])
            .arg(&self.api_ca_path)
            .arg(format!("https://127.0.0.1:{}/set-renewal-info/", self.management))
            .output()
            .map_err(|e| Error::io("curl (apt-get install curl)", e))?;
        if !out.status.success() {
            return Err(Error::Other(format!("set-renewal-info: {}", String::from_utf8_lossy(&out.stderr))));
        }
        Ok(())
    }

    /// Where the fixture keeps its files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn wait_port(port: u16, process: &mut Process, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if let Some(status) = process.exited() {
            return Err(process.died(status));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout { what: format!("{what} to listen"), seconds: 20 });
        }
        // Poll interval while the condition is awaited (a refused connection returns at once).
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for p in self.processes.drain(..) {
            p.stop(Duration::from_secs(5));
        }
    }
}
