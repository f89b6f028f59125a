//! A BlueGreenDeployment whose Platform targets SSH hosts: the colours are systemd units on each
//! selected Host and the switch is nginx's upstream (see `hostapp`). Same state machine, status,
//! events, metrics, history and `nova rollout` requests as on Kubernetes; one instance per host.

use std::time::{Duration, Instant};

use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::info;

use super::Ctx;
use super::{ABORT_ANNOTATION, KIND, PROMOTE_ANNOTATION, publish, write_failed, write_status};
use crate::api::Platform;
use crate::api::bluegreen::{BlueGreenDeployment, Phase};
use crate::api::host::Host;
use crate::conditions::{Cond, CondType};
use crate::context::{Blocked, Call, Error};
use crate::hostapp::{self, HostConn, Requests, desired};

/// How often a rollout that is moving is looked at (processes starting, checks pending).
const MOVING: Duration = Duration::from_secs(1);

fn failed(reason: &'static str, msg: &str) -> [Cond; 3] {
    [
        Cond::new(CondType::Ready, false, reason, msg),
        Cond::new(CondType::Progressing, false, reason, msg),
        Cond::new(CondType::Degraded, true, reason, msg),
    ]
}

pub async fn reconcile(
    bg: &BlueGreenDeployment,
    p: &Platform,
    ctx: &Ctx,
    started: Instant,
) -> Result<Action, Error> {
    // The Platform is being deleted: its cleanup removes the application from the hosts, and a
    // round now would only put it back.
    if p.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = bg.namespace().unwrap_or_default();
    let name = bg.name_any();
    let status = ctx.status.current(bg);
    let app = desired::app(p).map_err(Blocked::invalid)?;
    let Some(sel) = p.spec.target.as_ref().and_then(|t| t.hosts.as_ref()).map(|h| &h.hosts) else {
        return Err(Error::Bug("a host rollout for a Platform without spec.target.hosts".into()));
    };
    let all = Api::<Host>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .call(|| "listing Hosts".into())?
        .items;
    let chosen = hostapp::select(&all, sel);
    if chosen.is_empty() {
        let msg = format!("spec.target.hosts of Platform {} selects no Host", p.name_any());
        return Err(Blocked::missing(msg).retry(Duration::from_secs(30)).into());
    }
    // Every Host must allow the namespace (checked as each is connected) before the round runs
    // on any: nothing is half-applied.
    let hosts = match connect_all(&chosen, ctx, &ns).await {
        Ok(h) => h,
        Err(Error::Host(msg)) => {
            write_failed(bg, ctx, &failed("HostUnreachable", &msg)).await?;
            return Err(Error::Host(msg));
        }
        Err(e) => return Err(e),
    };

    // Not beside the Platform's cleanup: a round waits for it, and after it does nothing.
    let lock = ctx.host_apps.get(&p.uid().unwrap_or_default());
    let removing = lock.lock().await;
    if *removing {
        for h in hosts {
            h.conn.close().await;
        }
        return Ok(Action::await_change());
    }
    let mut spec = bg.spec.clone();
    spec.replicas = i32::try_from(hosts.len()).unwrap_or(i32::MAX);
    let asked = |key: &str| bg.annotations().get(key).is_some_and(|v| *v == app.revision);
    let req = Requests { promote: asked(PROMOTE_ANNOTATION), abort: asked(ABORT_ANNOTATION) };
    let backup = super::backup_gate::view(ctx, &ns, &spec.strategy).await?;
    let round = hostapp::engine::round(&hosts, &app, &spec, &status, req, backup).await;
    drop(removing);
    for h in hosts {
        h.conn.close().await;
    }
    let plan = match round {
        Ok(plan) => plan,
        Err(e) => {
            // Nothing of the round is taken as done: the next one observes and acts again.
            let msg = e.to_string();
            if status.conditions.iter().all(|c| c.type_ != "Degraded" || c.message != msg) {
                publish(ctx, bg, EventType::Warning, "HostRolloutFailed", &msg).await;
            }
            write_failed(bg, ctx, &failed("HostRolloutFailed", &msg)).await?;
            return Err(Error::Host(msg));
        }
    };
    // Events, then the status, then the records, as on Kubernetes: a switch is recorded at
    // most once.
    for (warning, reason, msg) in &plan.events {
        let t = if *warning { EventType::Warning } else { EventType::Normal };
        publish(ctx, bg, t, reason, msg).await;
    }
    if let Some(r) = &plan.backup_request {
        super::backup_gate::request(ctx, &ns, &spec.strategy, r).await?;
    }
    write_status(bg, ctx, plan.status.clone(), plan.phase, &plan.conditions).await?;
    if let Some(sw) = &plan.switch {
        let took = started.elapsed();
        ctx.families.switched(sw.rollback, took);
        info!(from = %sw.from, to = %sw.to, revision = %sw.revision, rollback = sw.rollback, "traffic switched on hosts");
        if !sw.rollback {
            ctx.state.record_release(KIND, &ns, &name, &sw.revision, &p.spec.image).await?;
        }
        let action = if sw.rollback { "rollback" } else { "switch" };
        let detail =
            format!("{} -> {} on {} host(s): revision {}", sw.from, sw.to, spec.replicas, sw.revision);
        ctx.state.audit(KIND, &ns, &name, action, &detail).await?;
    }
    let next = plan.requeue.unwrap_or(Duration::from_secs(300));
    Ok(Action::requeue(if plan.phase == Phase::Progressing { next.min(MOVING) } else { next }))
}

/// Connects to every chosen Host; on the first that fails, closes the others.
async fn connect_all(chosen: &[&Host], ctx: &Ctx, ns: &str) -> Result<Vec<HostConn>, Error> {
    let mut hosts = Vec::new();
    for h in chosen {
        match crate::hostaccess::connect(h, ctx, ns).await {
            Ok(conn) => hosts.push(HostConn { name: h.name_any(), conn }),
            Err(e) => {
                for h in hosts {
                    h.conn.close().await;
                }
                return Err(e);
            }
        }
    }
    Ok(hosts)
}
