//! `nova apply -f` / `nova delete -f` for AlertRules with `spec.target.hosts`, without a
//! cluster: the same per-host round as the operator's ([`crate::alerts::hosts`]). The Secrets
//! that routing names are read from `kind: Secret` documents in the applied files; they are
//! used, never stored.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::alerts::batch;
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

/// One AlertRule, checked and with what it needs, before any host is touched.
struct Planned<'a> {
    ns: String,
    name: String,
    owner: String,
    checked: crate::alerts::validate::Checked,
    problems: Vec<String>,
    routing: Option<(&'a crate::api::alert::Routing, Secrets)>,
    hosts: Vec<&'a Host>,
}

fn plan<'a>(o: &'a AlertRule, docs: &SecretDocs, hosts: &'a [Host]) -> Result<Planned<'a>, String> {
    let (ns, name) = (o.namespace().unwrap_or_else(|| "default".into()), o.name_any());
    let checked = validate::check(&o.spec);
    let mut problems = checked.problems.clone();
    let routing = o.spec.routing.as_ref().filter(|r| {
        let p = routing::problems(r);
        problems.extend(p.iter().cloned());
        p.is_empty()
    });
    let routing = routing.map(|r| resolve(r, &ns, docs).map(|s| (r, s))).transpose()?;
    let hosts = selected(o, hosts)?;
    Ok(Planned { owner: owner_key(&ns, &name), ns, name, checked, problems, routing, hosts })
}

impl Planned<'_> {
    fn object(&self) -> Object<'_> {
        Object {
            namespace: &self.ns,
            name: &self.name,
            owner: &self.owner,
            checked: &self.checked,
            routing: self.routing.as_ref().map(|(r, s)| (*r, s)),
        }
    }
}

/// Applies each AlertRule on the Hosts it selects, all of a host's objects in one round
/// ([`crate::alerts::batch`]), object by object when that round is refused; returns how many
/// failed.
pub async fn apply(
    state: &State,
    rules: &[AlertRule],
    docs: &SecretDocs,
    hosts: &[Host],
    identity: &Path,
    say: Progress<'_>,
) -> Result<usize, Error> {
    let mut statuses = Vec::new();
    for o in rules {
        let old = state
            .local("AlertRule", &o.namespace().unwrap_or_else(|| "default".into()), &o.name_any())
            .await?;
        statuses.push(
            old.and_then(|o| serde_json::from_str::<AlertRuleStatus>(&o.status).ok()).unwrap_or_default(),
        );
    }
    let plans: Vec<Result<Planned, String>> = rules.iter().map(|o| plan(o, docs, hosts)).collect();
    // Per object: the last host's conditions, or the first host's error.
    let mut results: Vec<Result<Vec<Cond>, String>> =
        plans.iter().map(|p| p.as_ref().map(|_| Vec::new()).map_err(Clone::clone)).collect();
    let mut by_host: BTreeMap<String, (&Host, Vec<usize>)> = BTreeMap::new();
    for (i, p) in plans.iter().enumerate() {
        for h in p.as_ref().map(|p| p.hosts.clone()).unwrap_or_default() {
            by_host.entry(h.name_any()).or_insert((h, Vec::new())).1.push(i);
        }
    }
    for (host, (h, idx)) in by_host {
        let planned: Vec<&Planned> = idx.iter().filter_map(|i| plans[*i].as_ref().ok()).collect();
        let mut sts: Vec<AlertRuleStatus> = idx.iter().map(|i| statuses[*i].clone()).collect();
        let round = on_host(h, &planned, &mut sts, identity, state).await;
        for (k, (i, r)) in idx.iter().zip(round).enumerate() {
            statuses[*i] = sts[k].clone();
            let r = r.map_err(|e| format!("host/{host}: {e}"));
            if let Ok(c) = &r
                && let Some(c) = c.iter().find(|c| c.type_ == CondType::Ready && !c.status)
            {
                say(&format!("alertrule/{}: host/{host}: {}", planned[k].name, c.message));
            }
            if results[*i].is_ok() {
                results[*i] = r;
            }
        }
    }
    let mut failed = 0;
    for (i, (r, mut status)) in results.into_iter().zip(statuses).enumerate() {
        let o = &rules[i];
        let (ns, name) = (o.namespace().unwrap_or_else(|| "default".into()), o.name_any());
        let conds = match (plans[i].as_ref().ok(), r) {
            (Some(p), Ok(conds)) => finish(p, conds, &mut status),
            (_, r) => {
                failed += 1;
                vec![Cond::new(CondType::Ready, false, "ApplyFailed", r.err().unwrap_or_default())]
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
/// All of one host's objects: one connection, one round, object by object when the round is
/// refused. One result per object, in order.
async fn on_host(
    h: &Host,
    planned: &[&Planned<'_>],
    statuses: &mut [AlertRuleStatus],
    identity: &Path,
    state: &State,
) -> Vec<Result<Vec<Cond>, String>> {
    let conn = match cli::connect(h, identity, state).await {
        Ok(c) => c,
        Err(e) => return planned.iter().map(|_| Err(e.to_string())).collect(),
    };
    let objects: Vec<Object> = planned.iter().map(|p| p.object()).collect();
    let round = batch::apply_or_each(&conn, &objects, statuses).await;
    let out = round.into_iter().map(|r| r.map(|(_, c)| c).map_err(|e| e.to_string())).collect();
    conn.close().await;
    out
}

/// The object's conditions once every host answered: its invalid rules and routes named.
fn finish(p: &Planned, mut conds: Vec<Cond>, status: &mut AlertRuleStatus) -> Vec<Cond> {
    status.rules_applied = Some(p.checked.rules() as i32);
    status.applied_to =
        Some(format!("Hosts {}", p.hosts.iter().map(|h| h.name_any()).collect::<Vec<_>>().join(", ")));
    if !p.problems.is_empty() {
        let msg = format!("{}; the other {} rules are applied", p.problems.join("; "), p.checked.rules());
        conds.retain(|c| c.type_ != CondType::Ready);
        conds.push(Cond::new(CondType::Ready, false, "InvalidRules", msg.clone()));
        conds.push(Cond::new(CondType::Degraded, true, "InvalidRules", msg));
    } else {
        conds.push(Cond::new(CondType::Degraded, false, "Valid", "every rule and route is valid"));
    }
    conds
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
