//! `nova apply -f` and `nova get` with no cluster: Hosts and host-targeted Platforms read from
//! YAML, reconciled over SSH by the same code the operator uses, with their status kept in the
//! state database (SQLite by default).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::bluegreen::{BlueGreenDeploymentStatus, Phase};
use crate::api::host::Host;
use crate::api::platform::Platform;
use crate::conditions::{self, Cond, CondType};
use crate::host::{bootstrap, cli};
use crate::hostapp::{self, HostConn, Requests, desired};
use crate::ssh;
use crate::state::{self, State};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    State(#[from] state::Error),
}

/// What a file or directory holds.
#[derive(Default)]
pub struct Objects {
    pub hosts: Vec<Host>,
    pub platforms: Vec<Platform>,
    pub alert_rules: Vec<crate::api::AlertRule>,
    /// Backups with `spec.runOn` (their schedule on a Host's own timer).
    pub backups: Vec<crate::api::Backup>,
    /// TrainingJobs with `spec.target.hosts` (workers as systemd units on those Hosts).
    pub training_jobs: Vec<crate::api::TrainingJob>,
    /// Values of the `kind: Secret` documents (used by AlertRule routing, never stored).
    pub secrets: crate::local_alerts::SecretDocs,
}

/// Reads every document of a file, or of each `*.yaml`/`*.yml` in a directory. Kinds other
/// than Host, Platform, AlertRule (those with target.hosts) and Secret are refused: without a
/// cluster nothing would act on them.
pub fn load(path: &Path) -> Result<Objects, Error> {
    let mut out = Objects::default();
    for (at, value) in crate::documents::read(path).map_err(Error::Input)? {
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_owned();
        if ["Host", "Platform", "AlertRule", "Backup", "TrainingJob"].contains(&kind.as_str()) {
            crate::admission::check_yaml(&value).map_err(|e| Error::Input(format!("{at}: {e}")))?;
        }
        match kind.as_str() {
            "Host" => out
                .hosts
                .push(serde_yaml::from_value(value).map_err(|e| Error::Input(format!("{at}: a Host: {e}")))?),
            "Platform" => {
                let p: Platform = serde_yaml::from_value(value)
                    .map_err(|e| Error::Input(format!("{at}: a Platform: {e}")))?;
                if p.spec.target.as_ref().and_then(|t| t.hosts.as_ref()).is_none() {
                    return Err(Error::Input(format!(
                        "{at}: Platform {} has no spec.target.hosts; without a cluster only host targets can run",
                        p.name_any()
                    )));
                }
                out.platforms.push(p);
            }
            "AlertRule" => {
                let a: crate::api::AlertRule = serde_yaml::from_value(value)
                    .map_err(|e| Error::Input(format!("{at}: an AlertRule: {e}")))?;
                if a.spec.target.as_ref().and_then(|t| t.hosts.as_ref()).is_none() {
                    return Err(Error::Input(format!(
                        "{at}: AlertRule {} has no spec.target.hosts; without a cluster only host targets can run",
                        a.name_any()
                    )));
                }
                out.alert_rules.push(a);
            }
            "Backup" => {
                let b: crate::api::Backup = serde_yaml::from_value(value)
                    .map_err(|e| Error::Input(format!("{at}: a Backup: {e}")))?;
                crate::local_backups::admit(&b, &at)?;
                out.backups.push(b);
            }
            "TrainingJob" => {
                let j: crate::api::TrainingJob = serde_yaml::from_value(value)
                    .map_err(|e| Error::Input(format!("{at}: a TrainingJob: {e}")))?;
                crate::local_training::admit(&j, &at)?;
                out.training_jobs.push(j);
            }
            "Secret" => crate::local_alerts::add_secret(&mut out.secrets, value, &at)?,
            other => {
                return Err(Error::Input(format!(
                    "{at}: kind {other:?} is not handled by `nova apply` without a cluster (Host, Secret, Platform, AlertRule and TrainingJob with target.hosts, Backup with runOn are)"
                )));
            }
        }
    }
    if out.hosts.is_empty()
        && out.platforms.is_empty()
        && out.alert_rules.is_empty()
        && out.backups.is_empty()
        && out.training_jobs.is_empty()
    {
        return Err(Error::Input(format!(
            "{}: no Host, Platform, AlertRule, Backup or TrainingJob in it",
            path.display()
        )));
    }
    Ok(out)
}

/// Hosts applied earlier: they stay selectable by objects applied later.
async fn stored_hosts(state: &State) -> Result<BTreeMap<String, Host>, Error> {
    let mut known = BTreeMap::new();
    for o in state.locals().await?.into_iter().filter(|o| o.kind == "Host") {
        if let Ok(h) = serde_json::from_str::<Host>(&o.spec) {
            known.insert(h.name_any(), h);
        }
    }
    Ok(known)
}

/// The Hosts applied earlier, with those of a file (the stored ones win: they were applied).
pub async fn known_hosts(state: &State, extra: &[Host]) -> Result<Vec<Host>, Error> {
    let mut known = stored_hosts(state).await?;
    for h in extra {
        known.entry(h.name_any()).or_insert_with(|| h.clone());
    }
    Ok(known.into_values().collect())
}

/// Settings of one `nova apply`.
pub struct Apply {
    pub identity: PathBuf,
    pub requests: Requests,
    /// Wait for the old colour's scale-down after a switch before returning.
    pub wait_scale_down: bool,
}

/// One line per step, for people watching.
pub type Progress<'a> = &'a mut dyn FnMut(&str);

/// Applies everything in `objs`: Hosts first (facts, bootstrap), then each Platform on the
/// Hosts it selects. Returns how many objects failed; each failure was reported and stored.
pub async fn apply(state: &State, objs: &Objects, cfg: &Apply, say: Progress<'_>) -> Result<usize, Error> {
    let mut failed = 0;
    let mut known = stored_hosts(state).await?;
    for h in &objs.hosts {
        let name = h.name_any();
        let spec = serde_json::to_string(h).unwrap_or_default();
        let status = match apply_host(h, cfg, state, say).await {
            Ok(s) => s,
            Err(msg) => {
                failed += 1;
                say(&format!("host/{name}: {msg}"));
                serde_json::json!({"ready": false, "message": msg})
            }
        };
        state.save_local("Host", "", &name, &spec, &status.to_string()).await?;
        known.insert(name, h.clone());
    }
    let hosts: Vec<Host> = known.into_values().collect();
    for p in &objs.platforms {
        let ns = p.namespace().unwrap_or_else(|| "default".into());
        let name = p.name_any();
        let old = state.local("Platform", &ns, &name).await?;
        let mut status: BlueGreenDeploymentStatus =
            old.and_then(|o| serde_json::from_str(&o.status).ok()).unwrap_or_default();
        let result = apply_platform(p, &hosts, cfg, state, &mut status, say).await;
        if let Err(msg) = &result {
            failed += 1;
            say(&format!("platform/{name}: {msg}"));
            status.phase = Some(Phase::Degraded);
            let conds = [
                Cond::new(CondType::Ready, false, "ApplyFailed", msg),
                Cond::new(CondType::Degraded, true, "ApplyFailed", msg),
            ];
            status.conditions = conditions::merge(&status.conditions, &conds, None, Timestamp::now());
        }
        let spec = serde_json::to_string(p).unwrap_or_default();
        let st = serde_json::to_string(&status).unwrap_or_default();
        state.save_local("Platform", &ns, &name, &spec, &st).await?;
    }
    let alerts = &objs.alert_rules;
    failed += crate::local_alerts::apply(state, alerts, &objs.secrets, &hosts, &cfg.identity, say).await?;
    failed +=
        crate::local_backups::apply(state, &objs.backups, &objs.secrets, &hosts, &cfg.identity, say).await?;
    failed += crate::local_training::apply(state, &objs.training_jobs, &hosts, &cfg.identity, say).await?;
    Ok(failed)
}

/// `nova delete -f`: each Platform in `objs` is removed from the Hosts it selects (units,
/// compose projects, files, nginx site; as the operator's finalizer does) and forgotten; each
/// Host is forgotten (nothing is done on the machine). A Platform whose host cannot be reached
/// is kept, reported, and counted as failed. Returns how many failed.
pub async fn delete(
    state: &State,
    objs: &Objects,
    identity: &Path,
    say: Progress<'_>,
) -> Result<usize, Error> {
    let hosts = known_hosts(state, &objs.hosts).await?;
    let mut failed = 0;
    for p in &objs.platforms {
        let ns = p.namespace().unwrap_or_else(|| "default".into());
        let name = p.name_any();
        match remove_platform(p, &hosts, identity, state).await {
            Ok(done) => {
                state.delete_local("Platform", &ns, &name).await?;
                say(&format!(
                    "platform/{name}: removed from {}",
                    if done.is_empty() { "no host".into() } else { done.join(", ") }
                ));
            }
            Err(msg) => {
                failed += 1;
                say(&format!("platform/{name}: not deleted: {msg}"));
            }
        }
    }
    failed += crate::local_alerts::delete(state, &objs.alert_rules, &hosts, identity, say).await?;
    failed += crate::local_backups::delete(state, &objs.backups, &hosts, identity, say).await?;
    failed += crate::local_training::delete(state, &objs.training_jobs, &hosts, identity, say).await?;
    for h in &objs.hosts {
        if state.delete_local("Host", "", &h.name_any()).await? {
            say(&format!("host/{}: forgotten (nothing was changed on the machine)", h.name_any()));
        }
    }
    Ok(failed)
}

async fn remove_platform(
    p: &Platform,
    hosts: &[Host],
    identity: &Path,
    state: &State,
) -> Result<Vec<String>, String> {
    let id = desired::app_id(p)?;
    let Some(sel) = p.spec.target.as_ref().and_then(|t| t.hosts.as_ref()).map(|h| &h.hosts) else {
        return Ok(Vec::new());
    };
    let mut done = Vec::new();
    for h in hostapp::select(hosts, sel) {
        let conn =
            cli::connect(h, identity, state).await.map_err(|e| format!("host/{}: {e}", h.name_any()))?;
        let hc = HostConn { name: h.name_any(), conn };
        let removed = hostapp::engine::remove(&hc, &id).await;
        hc.conn.close().await;
        removed.map_err(|e| e.to_string())?;
        done.push(h.name_any());
    }
    Ok(done)
}

async fn apply_host(
    h: &Host,
    cfg: &Apply,
    state: &State,
    say: Progress<'_>,
) -> Result<serde_json::Value, String> {
    // One connection for facts and bootstrap.
    let conn = cli::connect(h, &cfg.identity, state).await.map_err(|e| e.to_string())?;
    let result = host_steps(h, &conn, say).await;
    conn.close().await;
    result
}

async fn host_steps(
    h: &Host,
    conn: &ssh::Connection,
    say: Progress<'_>,
) -> Result<serde_json::Value, String> {
    let name = h.name_any();
    let facts = cli::facts_on(conn).await.map_err(|e| e.to_string())?;
    say(&format!(
        "host/{name}: reachable; {} {}, {} CPUs",
        facts.os.clone().unwrap_or_default(),
        facts.kernel.clone().unwrap_or_default(),
        facts.cpus.unwrap_or_default()
    ));
    let mut status = serde_json::json!({"ready": true, "facts": facts});
    if h.spec.bootstrap.is_some() {
        let steps = bootstrap::steps(&h.spec).map_err(|e| e.to_string())?;
        let report = bootstrap::run(conn, &steps, false).await.map_err(|e| e.to_string())?;
        let summary = bootstrap::describe(&report, false);
        say(&format!("host/{name}: bootstrap: {summary}"));
        status["bootstrap"] = serde_json::Value::String(summary);
    }
    Ok(status)
}

async fn apply_platform(
    p: &Platform,
    hosts: &[Host],
    cfg: &Apply,
    state: &State,
    status: &mut BlueGreenDeploymentStatus,
    say: Progress<'_>,
) -> Result<(), String> {
    let name = p.name_any();
    let app = desired::app(p)?;
    if app.tls_when_installed {
        return Err("spec.tls.mode: Auto needs the operator's TlsCertificate controller; without a cluster \
                    use mode Secret with the files in /etc/nova/tls/<secretName>/tls.{crt,key}"
            .into());
    }
    let Some(sel) = p.spec.target.as_ref().and_then(|t| t.hosts.as_ref()).map(|h| &h.hosts) else {
        return Err("spec.target.hosts is required without a cluster".into());
    };
    let chosen = hostapp::select(hosts, sel);
    if chosen.is_empty() {
        return Err(
            "spec.target.hosts selects no Host (apply the Hosts in the same or an earlier run)".into()
        );
    }
    // As the operator refuses it, but with the files' author trusted: there is no other party
    // here, so a Host without spec.allowedNamespaces takes any namespace, and one with the
    // field takes what it lists (a selector only as `{}`: namespaces have no labels here).
    let ns = p.namespace().unwrap_or_else(|| "default".into());
    for h in &chosen {
        crate::tenancy::admits(h, &ns, &Default::default(), std::slice::from_ref(&ns))?;
    }
    let mut conns = Vec::new();
    for h in &chosen {
        let conn =
            cli::connect(h, &cfg.identity, state).await.map_err(|e| format!("host/{}: {e}", h.name_any()))?;
        conns.push(HostConn { name: h.name_any(), conn });
    }
    let spec = desired::rollout_spec(p, conns.len());
    say(&format!("platform/{name}: revision {} on {} host(s)", app.revision, conns.len()));
    let mut last = String::new();
    // A first release has no progress deadline in the state machine (nothing to fall back to);
    // a command must still end.
    let limit = Duration::from_secs(u64::try_from(spec.strategy.progress_deadline_seconds).unwrap_or(600))
        + spec_wait(&spec, cfg.wait_scale_down)
        + Duration::from_secs(60);
    let settle = hostapp::settle(&conns, &app, &spec, status, cfg.requests, cfg.wait_scale_down, |st, _| {
        let line = describe(st);
        if line != last {
            say(&format!("platform/{name}: {line}"));
            last = line;
        }
    });
    let result = tokio::time::timeout(limit, settle).await;
    for h in conns {
        h.conn.close().await;
    }
    match result {
        Err(_) => return Err(format!("did not settle within {}s: {}", limit.as_secs(), describe(status))),
        Ok(r) => r.map_err(|e| e.to_string())?,
    }
    if matches!(status.phase, Some(Phase::Degraded | Phase::Aborted)) {
        return Err(describe(status));
    }
    Ok(())
}

fn spec_wait(spec: &crate::api::bluegreen::BlueGreenDeploymentSpec, wait_scale_down: bool) -> Duration {
    let delay = u64::try_from(spec.strategy.scale_down_delay_seconds).unwrap_or(0);
    if wait_scale_down { Duration::from_secs(delay) } else { Duration::ZERO }
}

/// One line: phase, colours, revisions and the Ready condition's message.
pub fn describe(st: &BlueGreenDeploymentStatus) -> String {
    let phase = st.phase.map_or("Unknown", |p| p.as_str());
    let active = match (st.active_color, &st.active_revision) {
        (Some(c), Some(r)) => format!("active {c} {r}"),
        _ => "no active colour".into(),
    };
    let preview = match (st.preview_color, &st.preview_revision) {
        (Some(c), Some(r)) => format!(", preview {c} {r}"),
        _ => String::new(),
    };
    let msg =
        st.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.message.clone()).unwrap_or_default();
    format!("{phase}: {active}{preview}; {msg}")
}

/// `nova status NAME`: the stored status of each object called NAME (a Platform in
/// `namespace`, or a Host), as YAML.
pub async fn status(state: &State, name: &str, namespace: &str) -> Result<String, Error> {
    let mut out = String::new();
    for o in state.locals().await? {
        if o.name != name || (o.kind == "Platform" && o.namespace != namespace) {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&o.status).unwrap_or_default();
        let yaml = serde_yaml::to_string(&v).unwrap_or_default();
        out.push_str(&format!("{}/{} (updated {}):\n{yaml}", o.kind.to_lowercase(), o.name, o.updated_at));
    }
    if out.is_empty() {
        return Err(Error::Input(format!(
            "nothing called {name:?} was applied with `nova apply` (namespace {namespace} for Platforms); `nova get` lists what was"
        )));
    }
    Ok(out)
}

/// `nova get`: a table of everything applied without a cluster.
pub async fn table(state: &State) -> Result<String, Error> {
    let mut rows = vec![["KIND", "NAMESPACE", "NAME", "STATUS", "ACTIVE", "UPDATED"].map(String::from)];
    for o in state.locals().await? {
        let (status, active) = if o.kind == "Platform" {
            let st: BlueGreenDeploymentStatus = serde_json::from_str(&o.status).unwrap_or_default();
            let active = match (st.active_color, st.active_revision) {
                (Some(c), Some(r)) => format!("{c}/{r}"),
                _ => "-".into(),
            };
            (st.phase.map_or("Unknown", |p| p.as_str()).to_owned(), active)
        } else {
            let v: serde_json::Value = serde_json::from_str(&o.status).unwrap_or_default();
            // A Host stores `ready`; an AlertRule its conditions.
            let cond_ready = v["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
            let ready =
                if v["ready"] == serde_json::Value::Bool(true) || cond_ready { "Ready" } else { "NotReady" };
            // A TrainingJob's phase says more than Ready (Running, Succeeded, Failed...).
            (v["phase"].as_str().unwrap_or(ready).to_owned(), "-".into())
        };
        let ns = if o.namespace.is_empty() { "-".to_owned() } else { o.namespace };
        rows.push([o.kind, ns, o.name, status, active, o.updated_at.chars().take(19).collect()]);
    }
    let widths: Vec<usize> = (0..6).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_with_other_kinds_or_cluster_targets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.yaml");
        std::fs::write(
            &f,
            "apiVersion: nova.infra.dev/v1alpha1\nkind: Restore\nmetadata: {name: r}\nspec: {}\n",
        )
        .unwrap();
        let err = load(&f).err().expect("refused").to_string();
        assert!(err.contains("kind \"Restore\""), "{err}");
        let backup = "apiVersion: nova.infra.dev/v1alpha1\nkind: Backup\nmetadata: {name: b}\nspec:\n  schedule: '@daily'\n  \
                      source: {files: {hostRef: {name: h}, paths: [/srv]}}\n  destination: {hostPath: {hostRef: {name: h}, path: /b}}\n";
        std::fs::write(&f, backup).unwrap();
        let err = load(&f).err().expect("refused").to_string();
        assert!(err.contains("no spec.runOn"), "{err}");
        std::fs::write(&f, format!("{backup}  runOn: {{hostRef: {{name: other}}}}\n")).unwrap();
        let err = load(&f).err().expect("refused").to_string();
        assert!(err.contains("spec.source.files.hostRef"), "{err}");
        std::fs::write(&f, format!("{backup}  runOn: {{hostRef: {{name: h}}}}\n")).unwrap();
        assert_eq!(load(&f).unwrap().backups.len(), 1);
        std::fs::write(
            &f,
            "apiVersion: nova.infra.dev/v1alpha1\nkind: Platform\nmetadata: {name: p}\nspec: {image: a}\n",
        )
        .unwrap();
        let err = load(&f).err().expect("refused").to_string();
        assert!(err.contains("spec.target.hosts"), "{err}");
    }
}
