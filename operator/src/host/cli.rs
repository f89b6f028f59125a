//! `nova host facts|bootstrap -f host.yaml -i key`: the same steps as the controller, against
//! a Host described in a file, with no cluster.

use std::path::Path;
use std::time::Duration;

use crate::api::host::{Host, HostKeyPolicy};
use crate::host::{bootstrap, facts};
use crate::ssh;
use crate::state::State;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Ssh(#[from] ssh::Error),
    #[error("{0}")]
    Bootstrap(#[from] bootstrap::Error),
    #[error("{0}")]
    State(#[from] crate::state::Error),
}

/// Every Host in a YAML file (several documents allowed; other kinds are skipped).
pub fn load_hosts(path: &Path) -> Result<Vec<Host>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    let mut hosts = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
        if value.get("kind").and_then(|k| k.as_str()) != Some("Host") {
            continue;
        }
        crate::admission::check_yaml(&value).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
        let h: Host = serde_yaml::from_value(value)
            .map_err(|e| Error::Input(format!("{}: a Host: {e}", path.display())))?;
        hosts.push(h);
    }
    if hosts.is_empty() {
        return Err(Error::Input(format!("{}: no Host in it", path.display())));
    }
    Ok(hosts)
}

use serde::Deserialize as _;

/// Connects to `h` with the private key in `identity`. Under AcceptNew the first key the host
/// presents is recorded in the state database (as ssh's known_hosts) and enforced from then on:
/// a changed key is refused with the same HostKeyMismatch as in the operator.
pub async fn connect(h: &Host, identity: &Path, state: &State) -> Result<ssh::Connection, Error> {
    let pem = std::fs::read_to_string(identity)
        .map_err(|e| Error::Input(format!("{}: {e}", identity.display())))?;
    let key = ssh::private_key(&pem, &identity.display().to_string())?;
    let port = u16::try_from(h.spec.port)
        .map_err(|_| Error::Input(format!("spec.port {} is not a port", h.spec.port)))?;
    let accept_new = h.spec.host_key_policy == HostKeyPolicy::AcceptNew;
    let recorded = if accept_new { state.known_host(&h.spec.address, port).await? } else { None };
    let target = super::target(h, key, recorded.clone()).map_err(Error::Input)?;
    let conn = ssh::open_with_retry(&target, 3).await?;
    if accept_new && recorded.is_none() && h.spec.host_key.is_none() {
        state.record_host_key(&h.spec.address, port, conn.host_key()).await?;
    }
    Ok(conn)
}

/// The facts of the machine this runs on (gathered by the same script the controller runs over
/// SSH): to look at a box before it becomes a Host, or where no SSH server runs.
pub fn local_facts() -> Result<crate::api::host::HostFacts, Error> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(facts::SCRIPT)
        .output()
        .map_err(|e| Error::Input(format!("running the facts script: {e}")))?;
    Ok(facts::parse(&String::from_utf8_lossy(&out.stdout)))
}

pub async fn facts(h: &Host, identity: &Path, state: &State) -> Result<crate::api::host::HostFacts, Error> {
    let c = connect(h, identity, state).await?;
    let out = facts_on(&c).await;
    c.close().await;
    out
}

/// The facts, over a connection already open.
pub async fn facts_on(c: &ssh::Connection) -> Result<crate::api::host::HostFacts, Error> {
    Ok(facts::parse(&c.run(facts::SCRIPT, Duration::from_secs(60)).await?))
}

/// Runs (or with `dry_run`, only checks) the bootstrap; returns the report.
pub async fn bootstrap(
    h: &Host,
    identity: &Path,
    state: &State,
    dry_run: bool,
) -> Result<Vec<bootstrap::StepReport>, Error> {
    let steps = bootstrap::steps(&h.spec)?;
    let c = connect(h, identity, state).await?;
    let report = bootstrap::run(&c, &steps, dry_run).await;
    c.close().await;
    Ok(report?)
}
