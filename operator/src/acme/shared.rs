//! What the certificate controllers share across reconciles: issuance settings, the HTTP-01
//! answers the operator serves, and the issuers' accounts. Kept here, below the controllers,
//! so the shared context can hold it without depending on them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use super::Directory;
use super::solver::Http01;

/// An account ready to order with, and the directory it belongs to.
#[derive(Clone)]
pub struct Ready {
    pub account: instant_acme::Account,
    pub directory: Directory,
}

/// How issuance behaves; the defaults suit public CAs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Wait after the first failed issuance; doubles with each further failure.
    pub backoff_base: Duration,
    /// The longest wait between attempts.
    pub backoff_cap: Duration,
    /// How long one order may take at each stage before it counts as failed.
    pub order_timeout: Duration,
    /// Where the Ingress for HTTP-01 sends the ACME server: the operator's pod address and
    /// HTTP port.
    pub solver_endpoint: SocketAddr,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            backoff_base: Duration::from_secs(300),
            backoff_cap: Duration::from_secs(24 * 3600),
            order_timeout: Duration::from_secs(120),
            solver_endpoint: ([127, 0, 0, 1], 8080).into(),
        }
    }
}

/// Where HTTP-01 traffic for the operator goes: `ip` (the pod's), else the listen address
/// unless it is unspecified, else loopback; always the HTTP port.
pub fn solver_endpoint(ip: Option<std::net::IpAddr>, http: SocketAddr) -> SocketAddr {
    let ip = ip.unwrap_or_else(|| if http.ip().is_unspecified() { [127, 0, 0, 1].into() } else { http.ip() });
    SocketAddr::new(ip, http.port())
}

/// Where issuers' CA bundles are written under the temporary directory `tmp` (the chart mounts a
/// writable volume there: the root file system is read-only).
pub fn roots_dir_in(tmp: &std::path::Path) -> PathBuf {
    tmp.join(format!("nova-acme-roots-{}", std::process::id()))
}

/// What the certificate controllers share: settings, the HTTP-01 answers served on the
/// operator's port, and the issuers' accounts.
pub struct Shared {
    pub settings: Settings,
    pub http01: Http01,
    accounts: Mutex<HashMap<String, (String, Ready)>>,
    roots: PathBuf,
}

impl Shared {
    pub fn new(settings: Settings, http01: Http01) -> Self {
        let roots = roots_dir_in(&std::env::temp_dir());
        Self { settings, http01, accounts: Mutex::new(HashMap::new()), roots }
    }

    pub fn cached(&self, issuer: &str, fingerprint: &str) -> Option<Ready> {
        let map = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        map.get(issuer).filter(|(f, _)| f == fingerprint).map(|(_, r)| r.clone())
    }

    pub fn remember(&self, issuer: &str, fingerprint: &str, ready: Ready) {
        self.accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(issuer.to_owned(), (fingerprint.to_owned(), ready));
    }

    /// The CA bundle of an issuer as a file (the ACME client reads roots from a path).
    pub fn root_file(&self, issuer: &str, pem: &[u8]) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.roots)?;
        let path = self.roots.join(format!("{issuer}.pem"));
        if std::fs::read(&path).ok().as_deref() != Some(pem) {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, pem)?;
            std::fs::rename(tmp, &path)?;
        }
        Ok(path)
    }
}
