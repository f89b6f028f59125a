//! HTTP-01 on hosts, as certbot's webroot mode: the key authorization is written over SSH to
//! `<webroot>/.well-known/acme-challenge/<token>` on every host that serves the names (the
//! certificate's `distributeTo` hosts), where the nginx site Nova renders serves that path;
//! the files are removed when the issuance ends.

use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use instant_acme::ChallengeType;

use crate::acme::{Challenger, Presentation};
use crate::ssh::{self, quote};

const TIMEOUT: Duration = Duration::from_secs(30);

pub struct Webroot {
    root: String,
    conns: tokio::sync::Mutex<Vec<(String, ssh::Connection)>>,
    written: Mutex<Vec<String>>,
}

impl Webroot {
    /// Over open connections to the hosts (name, connection).
    pub fn new(root: &str, conns: Vec<(String, ssh::Connection)>) -> Self {
        Self {
            root: root.trim_end_matches('/').to_owned(),
            conns: tokio::sync::Mutex::new(conns),
            written: Mutex::new(Vec::new()),
        }
    }
}

impl Challenger for Webroot {
    fn kind(&self) -> ChallengeType {
        ChallengeType::Http01
    }

    fn covers(&self, _name: &str, wildcard: bool) -> bool {
        !wildcard
    }

    fn present<'a>(&'a self, p: &'a Presentation) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if !p.token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(format!("the server's token {:?} is not base64url", p.token));
            }
            let path = format!("{}/.well-known/acme-challenge/{}", self.root, p.token);
            self.written.lock().expect("written").push(path.clone());
            for (host, conn) in self.conns.lock().await.iter() {
                conn.upload(&path, p.value.as_bytes(), 0o644, None, TIMEOUT)
                    .await
                    .map_err(|e| format!("writing the token on Host {host}: {e}"))?;
            }
            Ok(())
        })
    }

    fn cleanup(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let paths: Vec<String> = self.written.lock().expect("written").drain(..).collect();
            let conns: Vec<(String, ssh::Connection)> = self.conns.lock().await.drain(..).collect();
            for (host, conn) in conns {
                if !paths.is_empty() {
                    let rm =
                        format!("rm -f {}", paths.iter().map(|p| quote(p)).collect::<Vec<_>>().join(" "));
                    if let Err(e) = conn.run(&rm, TIMEOUT).await {
                        tracing::warn!(error = %e, host = %host, "could not remove HTTP-01 token files");
                    }
                }
                conn.close().await;
            }
        })
    }
}
