//! ACME (RFC 8555) issuance through `instant-acme`: an account, an order for the names, HTTP-01
//! challenges answered by [`solver::Http01`], and the certificate chain with its new key.
//!
//! `instant-acme` rather than `acme2`: it is maintained, async on tokio, uses rustls (ring here,
//! the process's one crypto provider), and supports ACME Renewal Information and profiles,
//! which the certificates issue asks for; `acme2` needs OpenSSL and has neither.

pub mod keys;
pub mod shared;
pub mod solver;

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    ExternalAccountKey, Identifier, Key, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ACME server {url}: {source}")]
    Server { url: String, source: instant_acme::Error },
    #[error("{0}")]
    Challenge(String),
    #[error("the order for {names} ended {status}")]
    Order { names: String, status: String },
    #[error("stored ACME account credentials do not parse: {0}")]
    Credentials(serde_json::Error),
    #[error("the account key is not a PKCS#8 PEM ECDSA P-256 key: {0}")]
    AccountKey(String),
    #[error("{0}")]
    Key(#[from] keys::Error),
}

/// Let's Encrypt's production directory.
pub const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory.
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// The directory URL for an AcmeIssuer's `server` (a preset name or a URL).
pub fn directory_url(server: &str) -> &str {
    match server {
        "letsencrypt" => LETSENCRYPT,
        "letsencrypt-staging" => LETSENCRYPT_STAGING,
        url => url,
    }
}

/// Where the ACME server is, and the CA its HTTPS certificate chains to when that is not a
/// public one (a test server's).
#[derive(Clone, Debug)]
pub struct Directory {
    pub url: String,
    pub root_pem: Option<PathBuf>,
}

impl Directory {
    fn server(&self, source: instant_acme::Error) -> Error {
        Error::Server { url: self.url.clone(), source }
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, Error> {
        match &self.root_pem {
            Some(p) => Account::builder_with_root(p),
            None => Account::builder(),
        }
        .map_err(|e| self.server(e))
    }
}

/// Registers a new account, or restores the one whose credentials (JSON, as returned here
/// before) are given. Returns the account and its credentials to store (a Secret).
pub async fn account(
    dir: &Directory,
    credentials: Option<&str>,
    contact: &[String],
) -> Result<(Account, String), Error> {
    if let Some(json) = credentials {
        let creds: AccountCredentials = serde_json::from_str(json).map_err(Error::Credentials)?;
        let account = dir.builder()?.from_credentials(creds).await.map_err(|e| dir.server(e))?;
        return Ok((account, json.to_owned()));
    }
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
    let (account, creds) =
        dir.builder()?.create(&new, dir.url.clone(), None).await.map_err(|e| dir.server(e))?;
    let json = serde_json::to_string(&creds).map_err(Error::Credentials)?;
    Ok((account, json))
}

/// Finds or registers the account of `key_pem` (PKCS#8 PEM); without a key, registers a new
/// account with a new key (External Account Binding when given). Returns the account and its
/// key PEM, to store.
pub async fn account_for_key(
    dir: &Directory,
    key_pem: Option<&str>,
    contact: &[String],
    eab: Option<&ExternalAccountKey>,
) -> Result<(Account, String), Error> {
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let Some(pem) = key_pem else {
        let new =
            NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
        let (account, creds) =
            dir.builder()?.create(&new, dir.url.clone(), eab).await.map_err(|e| dir.server(e))?;
        return Ok((account, credentials_key_pem(&creds)?));
    };
    let der =
        PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| Error::AccountKey(e.to_string()))?;
    let key = Key::from_pkcs8_der(der.clone_key()).map_err(|e| Error::AccountKey(e.to_string()))?;
    // The account of a known key is looked up (onlyReturnExisting: servers that require
    // External Account Binding want none for that); a key brought by the user but never
    // registered is registered.
    let found = dir.builder()?.from_key((key, PrivateKeyDer::Pkcs8(der.clone_key())), dir.url.clone()).await;
    let account = match found {
        Ok((account, _)) => account,
        Err(_) => {
            let key = Key::from_pkcs8_der(der.clone_key()).map_err(|e| Error::AccountKey(e.to_string()))?;
            dir.builder()?
                .create_from_key((key, PrivateKeyDer::Pkcs8(der)), dir.url.clone())
                .await
                .map_err(|e| dir.server(e))?
                .0
        }
    };
    if !contact.is_empty() {
        account.update_contacts(&contact).await.map_err(|e| dir.server(e))?;
    }
    Ok((account, pem.to_owned()))
}

/// The PKCS#8 key inside instant-acme's credentials, as PEM.
fn credentials_key_pem(creds: &AccountCredentials) -> Result<String, Error> {
    use base64::Engine;
    let json = serde_json::to_value(creds).map_err(Error::Credentials)?;
    let b64 = json.get("key_pkcs8").and_then(|v| v.as_str()).unwrap_or_default();
    let der = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64.trim_end_matches('='))
        .map_err(|e| Error::AccountKey(format!("credentials hold no key: {e}")))?;
    Ok(pem_block("PRIVATE KEY", &der))
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out + &format!("-----END {label}-----\n")
}

/// A certificate chain (PEM, leaf first) and its private key (PKCS#8 PEM).
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    // The key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("chain_pem", &self.chain_pem.len()).finish_non_exhaustive()
    }
}

/// One challenge to put in place: for HTTP-01 `value` is the key authorization served at the
/// token's path; for DNS-01 it is the TXT value for `_acme-challenge.<name>`.
#[derive(Clone, Debug)]
pub struct Presentation {
    /// The name being proven, without any `*.`.
    pub name: String,
    pub wildcard: bool,
    pub token: String,
    pub value: String,
}

/// A way to answer challenges. `cleanup` removes everything this solver presented during one
/// issuance and is called however the issuance ends.
pub trait Challenger: Send + Sync {
    fn kind(&self) -> ChallengeType;
    /// Whether it can prove `name` (HTTP-01 cannot prove wildcards).
    fn covers(&self, name: &str, wildcard: bool) -> bool;
    fn present<'a>(&'a self, p: &'a Presentation) -> BoxFuture<'a, Result<(), String>>;
    fn cleanup(&self) -> BoxFuture<'_, ()>;
}

/// What to order.
pub struct Request<'a> {
    pub names: &'a [String],
    /// The certificate's private key, PKCS#8 PEM (see [`keys`]).
    pub key_pem: &'a str,
    /// ACME profile, when the server offers profiles.
    pub profile: Option<&'a str>,
    /// The certificate this one replaces (ARI, RFC 9773), when the server supports ARI.
    pub replaces: Option<CertificateIdentifier<'a>>,
    /// How long to wait for the order at each stage.
    pub timeout: Duration,
}

/// Orders a certificate, answers each challenge with the first challenger that covers the
/// name, and waits for the chain. The challengers clean up however it ends. A failed
/// challenge is named with what the server said.
pub async fn issue_with(
    dir: &Directory,
    account: &Account,
    req: &Request<'_>,
    challengers: &[&dyn Challenger],
) -> Result<Issued, Error> {
    let result = issue_inner(dir, account, req, challengers).await;
    for c in challengers {
        c.cleanup().await;
    }
    result
}

/// HTTP-01 only, answered by `solver` (an in-process map served by the operator's HTTP port).
pub async fn issue(
    dir: &Directory,
    account: &Account,
    names: &[String],
    solver: &solver::Http01,
    timeout: Duration,
) -> Result<Issued, Error> {
    let key_pem = keys::generate(&crate::api::tls::PrivateKey::default())?;
    let session = solver.session();
    let req = Request { names, key_pem: &key_pem, profile: None, replaces: None, timeout };
    issue_with(dir, account, &req, &[&session]).await
}

async fn issue_inner(
    dir: &Directory,
    account: &Account,
    req: &Request<'_>,
    challengers: &[&dyn Challenger],
) -> Result<Issued, Error> {
    let ids: Vec<Identifier> = req.names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let plain = || match req.profile {
        Some(p) => NewOrder::new(&ids).profile(p),
        None => NewOrder::new(&ids),
    };
    let mut order = match &req.replaces {
        None => account.new_order(&plain()).await.map_err(|e| dir.server(e))?,
        Some(r) => match account.new_order(&plain().replaces(r.clone())).await {
            Ok(o) => o,
            // A server without ARI, or one that will not take this replacement (another
            // account's certificate, already replaced): a plain order still renews.
            Err(_) => account.new_order(&plain()).await.map_err(|e| dir.server(e))?,
        },
    };
    let mut authzs = order.authorizations();
    while let Some(authz) = authzs.next().await {
        let mut authz = authz.map_err(|e| dir.server(e))?;
        if authz.status != AuthorizationStatus::Pending {
            continue;
        }
        let id = authz.identifier();
        let name = match id.identifier {
            Identifier::Dns(n) => n.clone(),
            other => format!("{other:?}"),
        };
        let wildcard = id.wildcard;
        let shown = if wildcard { format!("*.{name}") } else { name.clone() };
        let offered: Vec<ChallengeType> = authz.challenges.iter().map(|c| c.r#type.clone()).collect();
        let Some(solver) =
            challengers.iter().find(|c| c.covers(&name, wildcard) && offered.contains(&c.kind()))
        else {
            let kinds: Vec<String> = offered.iter().map(|k| format!("{k:?}")).collect();
            return Err(Error::Challenge(format!(
                "no solver of this issuer can prove {shown}: the server offers {} (HTTP-01 cannot prove wildcards)",
                kinds.join(", ")
            )));
        };
        let Some(mut challenge) = authz.challenge(solver.kind()) else {
            return Err(Error::Challenge(format!(
                "the server withdrew the {:?} challenge for {shown}",
                solver.kind()
            )));
        };
        let ka = challenge.key_authorization();
        let value = match solver.kind() {
            ChallengeType::Dns01 => ka.dns_value(),
            _ => ka.as_str().to_owned(),
        };
        let p = Presentation { name, wildcard, token: challenge.token.clone(), value };
        solver
            .present(&p)
            .await
            .map_err(|e| Error::Challenge(format!("presenting the challenge for {shown}: {e}")))?;
        challenge.set_ready().await.map_err(|e| dir.server(e))?;
    }
    let retry =
        RetryPolicy::new().initial_delay(Duration::from_millis(100)).backoff(1.5).timeout(req.timeout);
    // An invalid order comes back as its status or as the server's problem document: either
    // way the challenges say best what went wrong.
    let status = match order.poll_ready(&retry).await {
        Ok(s) => s,
        Err(instant_acme::Error::Api(problem)) => {
            let fallback = dir.server(instant_acme::Error::Api(problem));
            return Err(failed_challenges(&mut order).await.unwrap_or(fallback));
        }
        Err(e) => return Err(dir.server(e)),
    };
    if status != OrderStatus::Ready {
        let fallback =
            Error::Order { names: req.names.join(", "), status: format!("{status:?} at {}", dir.url) };
        return Err(failed_challenges(&mut order).await.unwrap_or(fallback));
    }
    let csr = keys::csr(req.key_pem, req.names)?;
    order.finalize_csr(&csr).await.map_err(|e| dir.server(e))?;
    let chain_pem = order.poll_certificate(&retry).await.map_err(|e| dir.server(e))?;
    Ok(Issued { chain_pem, key_pem: req.key_pem.to_owned() })
}

/// Which challenges failed and what the server said about each; `None` when none says.
async fn failed_challenges(order: &mut instant_acme::Order) -> Option<Error> {
    let mut problems = Vec::new();
    let mut authzs = order.authorizations();
    while let Some(authz) = authzs.next().await {
        let Ok(authz) = authz else { continue };
        for c in authz.challenges.iter().filter(|c| c.error.is_some()) {
            let detail = c.error.as_ref().and_then(|p| p.detail.clone()).unwrap_or_default();
            problems.push(format!("{:?} challenge for {}: {detail}", c.r#type, authz.identifier()));
        }
    }
    (!problems.is_empty()).then(|| Error::Challenge(problems.join("; ")))
}
