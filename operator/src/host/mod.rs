//! The Host controller: reach the machine over SSH with its pinned key, gather facts, bring it
//! into the shape `spec.bootstrap` describes (packages, users, sshd, firewall, fail2ban,
//! unattended upgrades, node_exporter), and say so in status.

pub mod bootstrap;
pub mod cli;
pub mod facts;
pub mod services;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{instrument, warn};

use crate::api::host::{Host, HostKeyPolicy, HostStatus};
use crate::conditions::{self, Cond};
use crate::context::{Context, Error, FIELD_MANAGER, requeue_after_error};
use crate::ssh;
use crate::telemetry::ErrorCategory;

const KIND: &str = "Host";
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Facts are refreshed this often (GPU temperature, Docker appearing, ...).
const REFRESH: Duration = Duration::from_secs(300);

#[instrument(skip_all, fields(host = %h.name_any()))]
pub async fn reconcile(h: Arc<Host>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&h, &ctx).await;
    ctx.metrics.reconciled(KIND, started.elapsed());
    if let Err(e) = &result {
        ctx.metrics.failed(KIND, e.category());
    }
    result
}

pub fn error_policy(h: Arc<Host>, err: &Error, _ctx: Arc<Context>) -> Action {
    warn!(host = %h.name_any(), error = %err, category = err.category().as_str(), "reconcile failed");
    requeue_after_error(err)
}

/// The private key from the Host's Secret, or why there is none (never the key itself).
async fn private_key(h: &Host, ctx: &Context) -> Result<Result<russh::keys::PrivateKey, String>, Error> {
    let r = &h.spec.ssh_key_secret_ref;
    let ns = &ctx.namespace;
    let Some(secret) = Api::<Secret>::namespaced(ctx.client.clone(), ns).get_opt(&r.name).await? else {
        return Ok(Err(format!(
            "Secret {:?} named in spec.sshKeySecretRef does not exist in namespace {ns} (the operator's)",
            r.name
        )));
    };
    let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(&r.key)) else {
        return Ok(Err(format!("Secret {ns}/{} has no key {:?} (spec.sshKeySecretRef.key)", r.name, r.key)));
    };
    let source = format!("Secret {ns}/{} key {:?}", r.name, r.key);
    let pem = String::from_utf8_lossy(&bytes.0);
    Ok(ssh::private_key(&pem, &source).map_err(|e| e.to_string()))
}

/// Where and how to reach `h`: its address, the key to log in with, and the server key to
/// accept (pinned, or under AcceptNew the one `recorded` earlier).
pub fn target(
    h: &Host,
    key: russh::keys::PrivateKey,
    recorded: Option<String>,
) -> Result<ssh::Target, String> {
    let policy = match h.spec.host_key_policy {
        HostKeyPolicy::Pinned => match &h.spec.host_key {
            Some(k) => ssh::HostKeyPolicy::Pinned(k.clone()),
            None => return Err("spec.hostKey is required with hostKeyPolicy Pinned (the default)".into()),
        },
        HostKeyPolicy::AcceptNew => {
            ssh::HostKeyPolicy::AcceptNew(recorded.or_else(|| h.spec.host_key.clone()))
        }
    };
    Ok(ssh::Target {
        address: h.spec.address.clone(),
        port: u16::try_from(h.spec.port).unwrap_or(22),
        user: h.spec.user.clone(),
        key: Arc::new(key),
        host_key: policy,
        connect_timeout: Duration::from_secs(15),
    })
}

/// Connects to `h` as the Host controller does, for other controllers that deploy to it. The
/// inner error is a message for status (it never holds key material).
pub async fn connect(h: &Host, ctx: &Context) -> Result<Result<ssh::Connection, String>, Error> {
    let key = match private_key(h, ctx).await? {
        Ok(k) => k,
        Err(msg) => return Ok(Err(format!("Host {}: {msg}", h.name_any()))),
    };
    let recorded = h.status.as_ref().and_then(|s| s.recorded_host_key.clone());
    let target = match target(h, key, recorded) {
        Ok(t) => t,
        Err(msg) => return Ok(Err(format!("Host {}: {msg}", h.name_any()))),
    };
    Ok(ctx.ssh.get(&target, 3).await.map_err(|e| format!("Host {}: {e}", h.name_any())))
}

async fn reconcile_inner(h: &Host, ctx: &Context) -> Result<Action, Error> {
    let old = h.status.clone().unwrap_or_default();
    let key = match private_key(h, ctx).await? {
        Ok(k) => k,
        Err(msg) => {
            let conds = [
                Cond::new("Reachable", false, "MissingKey", &msg),
                Cond::new("Ready", false, "MissingKey", &msg),
            ];
            write_status(h, ctx, old.clone(), &conds).await?;
            ctx.metrics.failed(KIND, ErrorCategory::MissingDependency);
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    };
    let target = target(h, key, old.recorded_host_key.clone()).map_err(Error::InvalidSpec)?;
    let conn = match ctx.ssh.get(&target, 3).await {
        Ok(c) => c,
        Err(e) => {
            let reason = match &e {
                ssh::Error::HostKeyMismatch { .. } => "HostKeyMismatch",
                ssh::Error::AuthRefused { .. } => "AuthRefused",
                ssh::Error::BadPinnedKey => "InvalidHostKey",
                _ => "Unreachable",
            };
            let msg = e.to_string();
            if conditions::is_true(&old.conditions, "Reachable") != Some(false)
                || old.conditions.iter().any(|c| c.type_ == "Reachable" && c.reason != reason)
            {
                publish(ctx, h, EventType::Warning, reason, &msg).await;
            }
            let conds =
                [Cond::new("Reachable", false, reason, &msg), Cond::new("Ready", false, reason, &msg)];
            write_status(h, ctx, old.clone(), &conds).await?;
            // A refusal will not fix itself soon; an unreachable host may.
            let again = if e.transient() { Duration::from_secs(30) } else { REFRESH };
            return Ok(Action::requeue(again));
        }
    };
    let result = gather(h, ctx, &conn, old).await;
    conn.close().await;
    result?;
    Ok(Action::requeue(REFRESH))
}

async fn gather(h: &Host, ctx: &Context, conn: &ssh::Connection, old: HostStatus) -> Result<(), Error> {
    let facts = match conn.run(facts::SCRIPT, COMMAND_TIMEOUT).await {
        Ok(out) => facts::parse(&out),
        Err(e) => {
            let msg = format!("connected, but gathering facts failed: {e}");
            let conds = [
                Cond::new("Reachable", true, "Connected", &msg),
                Cond::new("Ready", false, "FactsFailed", &msg),
            ];
            write_status(h, ctx, old, &conds).await?;
            return Ok(());
        }
    };
    let fingerprint = ssh::fingerprint(conn.host_key()).ok();
    let mut new = old.clone();
    if h.spec.host_key_policy == HostKeyPolicy::AcceptNew && new.recorded_host_key.is_none() {
        new.recorded_host_key = Some(conn.host_key().to_owned());
        let detail = format!("recorded host key {}", fingerprint.clone().unwrap_or_default());
        publish(ctx, h, EventType::Normal, "HostKeyRecorded", &detail).await;
        ctx.state.audit(KIND, "", &h.name_any(), "record-host-key", &detail).await?;
    }
    new.host_key_fingerprint = fingerprint.clone();
    if new.facts.as_ref() != Some(&facts) {
        ctx.state
            .record_host_facts(&h.name_any(), &serde_json::to_string(&facts).unwrap_or_default())
            .await?;
    }
    new.facts = Some(facts);
    let reach = format!(
        "{}@{}:{} answers with host key {}",
        h.spec.user,
        h.spec.address,
        h.spec.port,
        fingerprint.unwrap_or_default()
    );
    let mut conds = vec![Cond::new("Reachable", true, "Connected", &reach)];
    match &h.spec.bootstrap {
        None => conds.push(Cond::new("Ready", true, "FactsGathered", "reachable, facts gathered")),
        Some(_) => {
            let (bootstrapped, ready) = run_bootstrap(h, ctx, conn, &mut new).await?;
            conds.push(bootstrapped);
            conds.push(ready);
        }
    }
    write_status(h, ctx, new, &conds).await
}

/// Runs the bootstrap; returns the Bootstrapped and Ready conditions. Steps changed on a run
/// after a complete one are drift: reported in status and an event, and corrected.
async fn run_bootstrap(
    h: &Host,
    ctx: &Context,
    conn: &ssh::Connection,
    st: &mut HostStatus,
) -> Result<(Cond, Cond), Error> {
    let steps = match bootstrap::steps(&h.spec) {
        Ok(s) => s,
        Err(e) => {
            let msg = e.to_string();
            return Ok((
                Cond::new("Bootstrapped", false, "InvalidSpec", &msg),
                Cond::new("Ready", false, "InvalidSpec", &msg),
            ));
        }
    };
    let report = match bootstrap::run(conn, &steps, false).await {
        Ok(r) => r,
        Err(e) => {
            // The next reconcile picks up where this one stopped: every step is idempotent.
            let msg = format!("bootstrap did not complete: {e}");
            publish(ctx, h, EventType::Warning, "BootstrapFailed", &msg).await;
            return Ok((
                Cond::new("Bootstrapped", false, "Failed", &msg),
                Cond::new("Ready", false, "BootstrapFailed", &msg),
            ));
        }
    };
    let changed: Vec<String> = report
        .iter()
        .filter(|r| r.outcome != bootstrap::Outcome::Unchanged)
        .map(|r| r.name.clone())
        .collect();
    let summary = bootstrap::describe(&report, false);
    // Drift is what a later run found out of shape; a clean run clears it.
    st.drift = if st.last_bootstrap_time.is_some() { changed.clone() } else { Vec::new() };
    if st.last_bootstrap_time.is_some() && !changed.is_empty() {
        let msg = format!("drift corrected: {summary}");
        publish(ctx, h, EventType::Warning, "DriftCorrected", &msg).await;
        ctx.state.audit(KIND, "", &h.name_any(), "drift", &msg).await?;
    } else if st.last_bootstrap_time.is_none() {
        publish(ctx, h, EventType::Normal, "Bootstrapped", &summary).await;
        ctx.state.audit(KIND, "", &h.name_any(), "bootstrap", &summary).await?;
    }
    if st.last_bootstrap_time.is_none() || !changed.is_empty() {
        st.last_bootstrap_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()));
    }
    let counts = format!("{} steps, {} changed", report.len(), changed.len());
    let ready = Cond::new("Ready", true, "Bootstrapped", &counts);
    Ok((Cond::new("Bootstrapped", true, "Converged", &counts), ready))
}

/// Writes status when it changed; a transition of Reachable to true is an event.
async fn write_status(h: &Host, ctx: &Context, mut new: HostStatus, conds: &[Cond]) -> Result<(), Error> {
    let old = h.status.clone().unwrap_or_default();
    let generation = h.metadata.generation;
    new.observed_generation = generation;
    new.conditions = conditions::merge(&old.conditions, conds, generation, Timestamp::now());
    if new == old {
        return Ok(());
    }
    if conds.iter().any(|c| c.type_ == "Reachable" && c.status)
        && conditions::is_true(&old.conditions, "Reachable") != Some(true)
    {
        publish(ctx, h, EventType::Normal, "Reachable", &conds[0].message).await;
    }
    let api: Api<Host> = Api::all(ctx.client.clone());
    let patch = json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": KIND, "status": new});
    api.patch_status(&h.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(patch)).await?;
    Ok(())
}

async fn publish(ctx: &Context, h: &Host, type_: EventType, reason: &str, note: &str) {
    ctx.publish(&h.object_ref(&()), "Connect", type_, reason, note).await;
}
