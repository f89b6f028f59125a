//! `nova apply -f` / `nova delete -f` for AlertRules with `spec.target.hosts`, without a
//! cluster: the same per-host round as the operator's ([`crate::alerts::hosts`]). The Secrets
//! that routing names are read from `kind: Secret` documents in the applied files; they are
//! used, never stored.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::alerts::hosts::{self, Object};
use crate::alerts::routing::{self, Secrets};
use crate::alerts::{owner_key, validate};
use crate::api::AlertRule;
use crate::api::alert::AlertRuleStatus;
use crate::api::host::Host;
use crate::conditions::{self, Cond, CondType};
use crate::host::cli;
use crate::hostapp;
use crate::local::{Error, Progress};
use crate::state::State;

/// Secret values from the applied files, by (namespace, name) then key.
pub type SecretDocs = BTreeMap<(String, String), BTreeMap<String, String>>;

/// Adds a `kind: Secret` document's values (`data`, base64, and `stringData`).
pub fn add_secret(docs: &mut SecretDocs, value: serde_yaml::Value, at: &str) -> Result<(), Error> {
    let s: Secret =
        serde_yaml::from_value(value).map_err(|e| Error::Input(format!("{at}: a Secret: {e}")))?;
    let key = (s.namespace().unwrap_or_else(|| "default".into()), s.name_any());
    let entry = docs.entry(key).or_default();
    for (k, v) in s.data.unwrap_or_default() {
        entry.insert(k, String::from_utf8_lossy(&v.0).into_owned());
    }
    entry.extend(s.string_data.unwrap_or_default());
    Ok(())
}

/// The values `routing` names, from the files; the error names the field and the fix.
fn resolve(r: &crate::api::alert::Routing, ns: &str, docs: &SecretDocs) -> Result<Secrets, String> {
    let mut out = Secrets::new();
    for (name, key) in routing::secret_refs(r) {
        let v = docs.get(&(ns.to_owned(), name.clone())).and_then(|d| d.get(&key)).ok_or_else(|| {
            format!(
                "spec.routing names Secret {ns}/{name} key {key:?}: without a cluster, put that Secret (kind: Secret) in the applied files"
            )
        })?;
        out.insert((name, key), v.clone());
    }
    Ok(out)
}

/// Applies each AlertRule on the Hosts it selects; returns how many failed.
pub async fn apply(
    state: &State,
    rules: &[AlertRule],
    docs: &SecretDocs,
    hosts: &[Host],
    identity: &Path,
    say: Progress<'_>,
) -> Result<usize, Error> {
    let mut failed = 0;
    for o in rules {
        let ns = o.namespace().unwrap_or_else(|| "default".into());
        let name = o.name_any();
        let old = state.local("AlertRule", &ns, &name).await?;
        let mut status: AlertRuleStatus =
            old.and_then(|o| serde_json::from_str(&o.status).ok()).unwrap_or_default();
        let conds = match apply_one(o, &ns, docs, hosts, identity, state, &mut status, say).await {
            Ok(conds) => conds,
            Err(msg) => {
                failed += 1;
                vec![Cond::new(CondType::Ready, false, "ApplyFailed", msg)]
            }
        };
        if let Some(c) = conds.iter().find(|c| c.type_ == CondType::Ready) {
            say(&format!("alertrule/{name}: {}: {}", c.reason, c.message));
        }
        status.conditions = conditions::merge(&status.conditions, &conds, None, Timestamp::now());
        let spec = serde_json::to_string(o).unwrap_or_default();
        let st = serde_json::to_string(&status).unwrap_or_default();
        state.save_local("AlertRule", &ns, &name, &spec, &st).await?;
    }
    Ok(failed)
}

#[allow(clippy::too_many_arguments)]
async fn apply_one(
    o: &AlertRule,
    ns: &str,
    docs: &SecretDocs,
    hosts: &[Host],
    identity: &Path,
    state: &State,
    status: &mut AlertRuleStatus,
    say: Progress<'_>,
) -> Result<Vec<Cond>, String> {
    let name = o.name_any();
    let owner = owner_key(ns, &name);
    let checked = validate::check(&o.spec);
    let mut problems = checked.problems.clone();
    let routing = o.spec.routing.as_ref().filter(|r| {
        let p = routing::problems(r);
        problems.extend(p.iter().cloned());
        p.is_empty()
    });
    let secrets = routing.map(|r| resolve(r, ns, docs)).transpose()?;
    let selected = selected(o, hosts)?;
    let mut conds = Vec::new();
    for h in &selected {
        let conn =
            cli::connect(h, identity, state).await.map_err(|e| format!("host/{}: {e}", h.name_any()))?;
        let obj = Object {
            namespace: ns,
            name: &name,
            owner: &owner,
            checked: &checked,
            routing: routing.zip(secrets.as_ref()),
        };
        let round = hosts::apply(&conn, &obj, status).await;
        conn.close().await;
        let (_, c) = round.map_err(|e| format!("host/{}: {e}", h.name_any()))?;
        if let Some(r) = c.iter().find(|c| c.type_ == CondType::Ready && !c.status) {
            say(&format!("alertrule/{name}: host/{}: {}", h.name_any(), r.message));
        }
        conds = c;
    }
    status.rules_applied = Some(checked.rules() as i32);
    status.applied_to =
        Some(format!("Hosts {}", selected.iter().map(|h| h.name_any()).collect::<Vec<_>>().join(", ")));
    if !problems.is_empty() {
        let msg = format!("{}; the other {} rules are applied", problems.join("; "), checked.rules());
        conds.retain(|c| c.type_ != CondType::Ready);
        conds.push(Cond::new(CondType::Ready, false, "InvalidRules", msg.clone()));
        conds.push(Cond::new(CondType::Degraded, true, "InvalidRules", msg));
    } else {
        conds.push(Cond::new(CondType::Degraded, false, "Valid", "every rule and route is valid"));
    }
    Ok(conds)
}

fn selected<'a>(o: &AlertRule, hosts: &'a [Host]) -> Result<Vec<&'a Host>, String> {
    let sel = o
        .spec
        .target
        .as_ref()
        .and_then(|t| t.hosts.as_ref())
        .ok_or("spec.target.hosts is required without a cluster")?;
    let picked = hostapp::select(hosts, sel);
    if picked.is_empty() {
        return Err("spec.target.hosts selects no Host known to `nova apply` (apply the Host first, or in the same files)".into());
    }
    Ok(picked)
}

/// Removes each AlertRule from the Hosts it selects and forgets it; returns how many failed.
pub async fn delete(
    state: &State,
    rules: &[AlertRule],
    hosts: &[Host],
    identity: &Path,
    say: Progress<'_>,
) -> Result<usize, Error> {
    let mut failed = 0;
    for o in rules {
        let ns = o.namespace().unwrap_or_else(|| "default".into());
        let name = o.name_any();
        let mut result = Ok(());
        for h in selected(o, hosts).unwrap_or_default() {
            let removed = match cli::connect(h, identity, state).await {
                Ok(conn) => {
                    let r = hosts::remove(&conn, &ns, &name).await.map_err(|e| e.to_string());
                    conn.close().await;
                    r
                }
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = removed {
                result = Err(format!("host/{}: {e}", h.name_any()));
                break;
            }
        }
        match result {
            Ok(()) => {
                state.delete_local("AlertRule", &ns, &name).await?;
                say(&format!("alertrule/{name}: removed"));
            }
            Err(msg) => {
                failed += 1;
                say(&format!("alertrule/{name}: not deleted: {msg}"));
            }
        }
    }
    Ok(failed)
}
