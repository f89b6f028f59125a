//! A BlueGreenDeployment whose Platform targets SSH hosts: the colours are systemd units on each
//! selected Host and the switch is nginx's upstream (see `hostapp`). Same state machine, status,
//! events, metrics, history and `nova rollout` requests as on Kubernetes; one instance per host.

use std::time::{Duration, Instant};

use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::info;

use super::{ABORT_ANNOTATION, KIND, PROMOTE_ANNOTATION, publish, write_status};
use crate::api::Platform;
use crate::api::bluegreen::{BlueGreenDeployment, Phase};
use crate::api::host::Host;
use crate::conditions::Cond;
use crate::context::{Context, Error};
use crate::hostapp::{self, HostConn, Requests, desired};
use crate::telemetry::ErrorCategory;

/// How often a rollout that is moving is looked at (processes starting, checks pending).
const MOVING: Duration = Duration::from_secs(1);

fn failed(reason: &'static str, msg: &str) -> [Cond; 3] {
    [
        Cond::new("Ready", false, reason, msg),
        Cond::new("Progressing", false, reason, msg),
        Cond::new("Degraded", true, reason, msg),
    ]
}

pub async fn reconcile(
    bg: &BlueGreenDeployment,
    p: &Platform,
    ctx: &Context,
    started: Instant,
) -> Result<Action, Error> {
    let ns = bg.namespace().unwrap_or_default();
    let name = bg.name_any();
    let uid = bg.uid().unwrap_or_default();
    let written = ctx.written.lock().expect("written map").get(&uid).cloned();
    let status = written.unwrap_or_else(|| bg.status.clone().unwrap_or_default());

    let app = match desired::app(p) {
        Ok(a) => a,
        Err(msg) => {
            write_status(bg, ctx, &status, None, &failed("InvalidSpec", &msg)).await?;
            return Ok(Action::await_change());
        }
    };
    let sel = &p.spec.target.as_ref().and_then(|t| t.hosts.as_ref()).expect("a host target").hosts;
    let all = Api::<Host>::all(ctx.client.clone()).list(&ListParams::default()).await?.items;
    let chosen = hostapp::select(&all, sel);
    if chosen.is_empty() {
        let msg = format!("spec.target.hosts of Platform {} selects no Host", p.name_any());
        write_status(bg, ctx, &status, None, &failed("MissingDependency", &msg)).await?;
        ctx.metrics.failed(KIND, ErrorCategory::MissingDependency);
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    let mut hosts = Vec::new();
    let mut unreachable = None;
    for h in chosen {
        match crate::host::connect(h, ctx).await? {
            Ok(conn) => hosts.push(HostConn { name: h.name_any(), conn }),
            Err(msg) => {
                unreachable = Some(msg);
                break;
            }
        }
    }
    if let Some(msg) = unreachable {
        for h in hosts {
            h.conn.close().await;
        }
        write_status(bg, ctx, &status, None, &failed("HostUnreachable", &msg)).await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    }

    let mut spec = bg.spec.clone();
    spec.replicas = i32::try_from(hosts.len()).unwrap_or(i32::MAX);
    let asked = |key: &str| bg.annotations().get(key).is_some_and(|v| *v == app.revision);
    let req = Requests { promote: asked(PROMOTE_ANNOTATION), abort: asked(ABORT_ANNOTATION) };
    let round = hostapp::engine::round(&hosts, &app, &spec, &status, req).await;
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
            write_status(bg, ctx, &status, None, &failed("HostRolloutFailed", &msg)).await?;
            return Ok(Action::requeue(Duration::from_secs(15)));
        }
    };
    if let Some(sw) = &plan.switch {
        let took = started.elapsed();
        ctx.metrics.switched(sw.rollback, took);
        info!(from = %sw.from, to = %sw.to, revision = %sw.revision, rollback = sw.rollback, "traffic switched on hosts");
        if !sw.rollback {
            ctx.state.record_release(KIND, &ns, &name, &sw.revision, &p.spec.image).await?;
        }
        let action = if sw.rollback { "rollback" } else { "switch" };
        let detail =
            format!("{} -> {} on {} host(s): revision {}", sw.from, sw.to, spec.replicas, sw.revision);
        ctx.state.audit(KIND, &ns, &name, action, &detail).await?;
    }
    for (warning, reason, msg) in &plan.events {
        let t = if *warning { EventType::Warning } else { EventType::Normal };
        publish(ctx, bg, t, reason, msg).await;
    }
    write_status(bg, ctx, &status, Some((plan.status.clone(), plan.phase)), &plan.conditions).await?;
    let next = plan.requeue.unwrap_or(Duration::from_secs(300));
    Ok(Action::requeue(if plan.phase == Phase::Progressing { next.min(MOVING) } else { next }))
}
