//! The Host controller: reach the machine over SSH with its pinned key, gather facts, bring it
//! into the shape `spec.bootstrap` describes, and say so in status.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::{bootstrap, facts};
use crate::api::host::{Host, HostKeyPolicy, HostStatus};
use crate::conditions::{self, Cond, CondType};
use crate::context::{Blocked, Error};
use crate::hostaccess;
use crate::kit;
use crate::ssh;

const KIND: &str = "Host";
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Facts are refreshed this often (GPU temperature, Docker appearing, ...).
const REFRESH: Duration = Duration::from_secs(300);

/// The Host controller's context: the shared one and its status writer.
pub type Ctx = crate::context::Own<Host>;

pub async fn reconcile(h: Arc<Host>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let c = ctx.clone();
    kit::run(
        h,
        &ctx.kit,
        &ctx.status,
        &[CondType::Reachable],
        |h| async move { reconcile_inner(&h, &c).await },
    )
    .await
}

async fn reconcile_inner(h: &Host, ctx: &Ctx) -> Result<Action, Error> {
    let old = ctx.status.current(h);
    let key = hostaccess::private_key(h, ctx).await?;
    let target = super::target(h, key, old.recorded_host_key.clone()).map_err(Blocked::invalid)?;
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
            // A refusal will not fix itself: the user must act (blocked). An unreachable host
            // may come back: a failure, counted and retried with backoff.
            if !e.transient() {
                // The writer announces the stall; a different refusal while stalled gets its own.
                let stalled = conditions::is_true(&old.conditions, "Stalled") == Some(true);
                if stalled && !old.conditions.iter().any(|c| c.type_ == "Reachable" && c.reason == reason) {
                    publish(ctx, h, EventType::Warning, reason, &msg).await;
                }
                return Err(Blocked::new(reason, msg).retry(REFRESH).into());
            }
            if conditions::is_true(&old.conditions, "Reachable") != Some(false)
                || old.conditions.iter().any(|c| c.type_ == "Reachable" && c.reason != reason)
            {
                publish(ctx, h, EventType::Warning, reason, &msg).await;
            }
            let conds = [
                Cond::new(CondType::Reachable, false, reason, &msg),
                Cond::new(CondType::Ready, false, reason, &msg),
            ];
            write_status(h, ctx, old.clone(), &conds).await?;
            return Err(Error::Host(msg));
        }
    };
    let result = gather(h, ctx, &conn, old).await;
    conn.close().await;
    result?;
    Ok(Action::requeue(REFRESH))
}

async fn gather(h: &Host, ctx: &Ctx, conn: &ssh::Connection, old: HostStatus) -> Result<(), Error> {
    let facts = match conn.run(facts::SCRIPT, COMMAND_TIMEOUT).await {
        Ok(out) => facts::steady(old.facts.as_ref(), facts::parse(&out)),
        Err(e) => {
            let msg = format!("connected, but gathering facts failed: {e}");
            let conds = [
                Cond::new(CondType::Reachable, true, "Connected", &msg),
                Cond::new(CondType::Ready, false, "FactsFailed", &msg),
            ];
            write_status(h, ctx, old, &conds).await?;
            // Said in status, and counted and retried like any failure.
            return Err(Error::Host(format!("Host {}: {msg}", h.name_any())));
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
    let mut conds = vec![Cond::new(CondType::Reachable, true, "Connected", &reach)];
    let mut failed = None;
    match &h.spec.bootstrap {
        None => conds.push(Cond::new(CondType::Ready, true, "FactsGathered", "reachable, facts gathered")),
        Some(_) => {
            let (bootstrapped, ready) = run_bootstrap(h, ctx, conn, &mut new).await?;
            if bootstrapped.reason == "Failed" {
                failed = Some(bootstrapped.message.clone());
            }
            conds.push(bootstrapped);
            conds.push(ready);
        }
    }
    write_status(h, ctx, new, &conds).await?;
    // A failed bootstrap is said in status, and counted and retried like any failure.
    match failed {
        Some(msg) => Err(Error::Host(format!("Host {}: {msg}", h.name_any()))),
        None => Ok(()),
    }
}

/// Runs the bootstrap; returns the Bootstrapped and Ready conditions. Steps changed on a run
/// after a complete one are drift: reported in status and an event, and corrected.
async fn run_bootstrap(
    h: &Host,
    ctx: &Ctx,
    conn: &ssh::Connection,
    st: &mut HostStatus,
) -> Result<(Cond, Cond), Error> {
    let steps = match bootstrap::steps(&h.spec) {
        Ok(s) => s,
        Err(e) => {
            let msg = e.to_string();
            return Ok((
                Cond::new(CondType::Bootstrapped, false, "InvalidSpec", &msg),
                Cond::new(CondType::Ready, false, "InvalidSpec", &msg),
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
                Cond::new(CondType::Bootstrapped, false, "Failed", &msg),
                Cond::new(CondType::Ready, false, "BootstrapFailed", &msg),
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
    let ready = Cond::new(CondType::Ready, true, "Bootstrapped", &counts);
    Ok((Cond::new(CondType::Bootstrapped, true, "Converged", &counts), ready))
}

/// Writes status through the kit; a transition of Reachable to true is an event.
async fn write_status(h: &Host, ctx: &Ctx, new: HostStatus, conds: &[Cond]) -> Result<(), Error> {
    ctx.status.write(&ctx.kit, h, new, conds).await?;
    Ok(())
}

async fn publish(ctx: &Ctx, h: &Host, type_: EventType, reason: &str, note: &str) {
    ctx.publish(&h.object_ref(&()), "Connect", type_, reason, note).await;
}
