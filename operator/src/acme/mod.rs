//! ACME (RFC 8555) issuance through `instant-acme`: an account, an order for the names, HTTP-01
//! challenges answered by [`solver::Http01`], and the certificate chain with its new key.
//!
//! `instant-acme` rather than `acme2`: it is maintained, async on tokio, uses rustls (ring here,
//! the process's one crypto provider), and supports ACME Renewal Information and profiles,
//! which the certificates issue asks for; `acme2` needs OpenSSL and has neither.

pub mod solver;

use std::path::PathBuf;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder,
    OrderStatus, RetryPolicy,
};

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

/// A certificate chain (PEM, leaf first) and its private key (PEM, ECDSA P-256).
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

/// Orders a certificate for `names`, answers each HTTP-01 challenge through `solver`, and
/// waits (at most `timeout` per stage) for the chain. The solver's tokens are removed however
/// it ends. A failed challenge is named with what the server said.
pub async fn issue(
    dir: &Directory,
    account: &Account,
    names: &[String],
    solver: &solver::Http01,
    timeout: Duration,
) -> Result<Issued, Error> {
    let mut tokens = Vec::new();
    let result = issue_inner(dir, account, names, solver, timeout, &mut tokens).await;
    for t in tokens {
        solver.remove(&t);
    }
    result
}

async fn issue_inner(
    dir: &Directory,
    account: &Account,
    names: &[String],
    solver: &solver::Http01,
    timeout: Duration,
    tokens: &mut Vec<String>,
) -> Result<Issued, Error> {
    let ids: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let mut order = account.new_order(&NewOrder::new(&ids)).await.map_err(|e| dir.server(e))?;
    let mut authzs = order.authorizations();
    while let Some(authz) = authzs.next().await {
        let mut authz = authz.map_err(|e| dir.server(e))?;
        if authz.status != AuthorizationStatus::Pending {
            continue;
        }
        let name = authz.identifier().to_string();
        let mut challenge = authz
            .challenge(ChallengeType::Http01)
            .ok_or_else(|| Error::Challenge(format!("the server offers no http-01 challenge for {name}")))?;
        let ka = challenge.key_authorization();
        solver.put(&challenge.token, ka.as_str());
        tokens.push(challenge.token.clone());
        challenge.set_ready().await.map_err(|e| dir.server(e))?;
    }
    let retry = RetryPolicy::new().initial_delay(Duration::from_millis(100)).backoff(1.5).timeout(timeout);
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
        let fallback = Error::Order { names: names.join(", "), status: format!("{status:?} at {}", dir.url) };
        return Err(failed_challenges(&mut order).await.unwrap_or(fallback));
    }
    let key_pem = order.finalize().await.map_err(|e| dir.server(e))?;
    let chain_pem = order.poll_certificate(&retry).await.map_err(|e| dir.server(e))?;
    Ok(Issued { chain_pem, key_pem })
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
