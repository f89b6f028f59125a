//! `nova apply -f` / `nova delete -f` for Backups without a cluster: a Backup with
//! `spec.runOn` gets its schedule on that Host (Nova's binary, the Backup with the Secret keys
//! it reads from the applied `kind: Secret` documents, the systemd timer — see
//! [`crate::backup::timer`]); deleting it takes the timer away. Without `runOn` nothing would
//! fire the schedule, so such a Backup is refused at load.

use std::path::Path;

use kube::ResourceExt;

use crate::api::backup::Backup;
use crate::api::host::Host;
use crate::backup::{hostcli, timer};
use crate::host::cli;
use crate::local::{Error, Progress};
use crate::local_alerts::SecretDocs;
use crate::state::State;

/// Checks a Backup read by `nova apply`: it needs `spec.runOn`.
pub fn admit(b: &Backup, at: &str) -> Result<(), Error> {
    let Some(r) = &b.spec.run_on else {
        return Err(Error::Input(format!(
            "{at}: Backup {} has no spec.runOn; without a cluster only a Host's own timer runs a schedule \
             (or run `nova backup run` from cron)",
            b.name_any()
        )));
    };
    timer::check(&b.spec, &r.host_ref.name).map_err(|e| Error::Input(format!("{at}: {e}")))
}

fn host<'a>(b: &Backup, hosts: &'a [Host]) -> Result<&'a Host, String> {
    let name = b.spec.run_on.as_ref().map(|r| r.host_ref.name.as_str()).unwrap_or_default();
    hosts
        .iter()
        .find(|h| h.name_any() == name)
        .ok_or_else(|| format!("spec.runOn.hostRef: no Host {name:?} applied"))
}

async fn install(
    b: &Backup,
    docs: &SecretDocs,
    hosts: &[Host],
    identity: &Path,
    state: &State,
) -> Result<String, String> {
    let h = host(b, hosts)?;
    let ns = b.namespace().unwrap_or_else(|| "default".into());
    let config = hostcli::config(b, Some(h), |name, key, field| {
        docs.get(&(ns.clone(), name.to_owned()))
            .and_then(|d| d.get(key))
            .map(|v| v.clone().into_bytes())
            .ok_or_else(|| hostcli_missing(field, &ns, name, key))
    })
    .map_err(|e| e.to_string())?;
    let id = timer::id(&ns, &b.name_any()).map_err(|e| e.to_string())?;
    let bin = std::env::current_exe().map_err(|e| format!("Nova's own binary: {e}"))?;
    let conn = cli::connect(h, identity, state).await.map_err(|e| format!("host/{}: {e}", h.name_any()))?;
    let r = timer::install(&conn, &id, &b.name_any(), &h.name_any(), &config, &bin)
        .await
        .map_err(|e| e.to_string());
    conn.close().await;
    r.map(|()| format!("{}.timer on host {}", timer::unit(&id), h.name_any()))
}

fn hostcli_missing(field: &str, ns: &str, name: &str, key: &str) -> crate::backup::cli::Error {
    crate::backup::cli::Error::Input(format!(
        "{field}: no Secret {ns}/{name} with key {key:?} in the files given with -f"
    ))
}

/// Installs the timer of each Backup; returns how many failed.
pub async fn apply(
    state: &State,
    backups: &[Backup],
    docs: &SecretDocs,
    hosts: &[Host],
    identity: &Path,
    say: Progress<'_>,
) -> Result<usize, Error> {
    let mut failed = 0;
    for b in backups {
        let (ns, name) = (b.namespace().unwrap_or_else(|| "default".into()), b.name_any());
        let status = match install(b, docs, hosts, identity, state).await {
            Ok(what) => {
                say(&format!("backup/{name}: scheduled by {what}"));
                serde_json::json!({"ready": true, "message": format!("scheduled by {what}")})
            }
            Err(msg) => {
                failed += 1;
                say(&format!("backup/{name}: {msg}"));
                serde_json::json!({"ready": false, "message": msg})
            }
        };
        // The spec without Secrets (the documents are used, never stored).
        let spec = serde_json::to_string(b).unwrap_or_default();
        state.save_local("Backup", &ns, &name, &spec, &status.to_string()).await?;
    }
    Ok(failed)
}

/// Removes the timer of each Backup from its Host (the artifacts stay); returns how many failed.
pub async fn delete(
    state: &State,
    backups: &[Backup],
    hosts: &[Host],
    identity: &Path,
    say: Progress<'_>,
) -> Result<usize, Error> {
    let mut failed = 0;
    for b in backups {
        let (ns, name) = (b.namespace().unwrap_or_else(|| "default".into()), b.name_any());
        let removed = async {
            let h = host(b, hosts)?;
            let id = timer::id(&ns, &name).map_err(|e| e.to_string())?;
            let conn =
                cli::connect(h, identity, state).await.map_err(|e| format!("host/{}: {e}", h.name_any()))?;
            let r = timer::remove(&conn, &id).await.map_err(|e| e.to_string());
            conn.close().await;
            r
        }
        .await;
        match removed {
            Ok(()) => {
                state.delete_local("Backup", &ns, &name).await?;
                say(&format!("backup/{name}: timer removed (artifacts stay)"));
            }
            Err(msg) => {
                failed += 1;
                say(&format!("backup/{name}: {msg}"));
            }
        }
    }
    Ok(failed)
}
