//! The BlueGreenDeployment controller: two colour Deployments, an active and a preview Service,
//! a health gate, promotion by one selector patch, and instant rollback.
//!
//! `plan` decides (pure); this module reads the cluster, runs the gate's checks when the plan
//! asks for them, applies what the plan wants, and writes status, events, metrics and history.

pub mod backup_gate;
pub mod desired;
pub mod hosts;
pub mod metrics;
pub mod revisions;

pub use crate::rollouts::{gate, plan};

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use tracing::info;

use crate::api::Platform;
use crate::api::bluegreen::{BlueGreenDeployment, BlueGreenDeploymentStatus, Color, Phase};
use crate::apply::ensure;
use crate::conditions::{Cond, CondType};
use crate::context::{Blocked, Call, Error};
use crate::kit;
use crate::workload::{REVISION_ANNOTATION, revision_of};
use plan::{ColorLive, GateRound, Input, Template};

const KIND: &str = "BlueGreenDeployment";
/// `nova rollout promote` sets this to the preview revision it promotes.
pub const PROMOTE_ANNOTATION: &str = "nova.infra.dev/promote";
/// `nova rollout abort` sets this to the revision it aborts.
pub const ABORT_ANNOTATION: &str = "nova.infra.dev/abort";

/// The blue-green controller's context: the shared one, its status writer and its switch metrics.
pub type Ctx = crate::context::Own<BlueGreenDeployment, metrics::Switches>;

pub async fn reconcile(bg: Arc<BlueGreenDeployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let c = ctx.clone();
    kit::run(bg, &ctx.kit, &ctx.status, &[CondType::Degraded], |bg| async move {
        reconcile_inner(&bg, &c, Instant::now()).await
    })
    .await
}

/// The pod template to release: the spec's own, or the one of the referenced Platform;
/// blocked when neither is there.
async fn template_of(bg: &BlueGreenDeployment, ctx: &Ctx, ns: &str) -> Result<PodTemplateSpec, Error> {
    if let Some(t) = &bg.spec.template {
        return Ok(t.clone());
    }
    let Some(r) = &bg.spec.platform_ref else {
        return Err(Blocked::missing("give spec.template or spec.platformRef")
            .retry(Duration::from_secs(30))
            .into());
    };
    let api: Api<Platform> = Api::namespaced(ctx.client.clone(), ns);
    match api
        .get_opt(&r.name)
        .await
        .call(|| format!("reading Platform {ns}/{} (spec.platformRef)", r.name))?
    {
        Some(p) => Ok(crate::workload::pod_template(&p)),
        None => Err(Blocked::missing(format!(
            "Platform {:?} named in spec.platformRef does not exist in namespace {ns}",
            r.name
        ))
        .retry(Duration::from_secs(30))
        .into()),
    }
}

fn live(ctx: &Ctx, ns: &str, name: &str) -> Option<Arc<Deployment>> {
    ctx.children.deployments.get(&ObjectRef::new(name).within(ns))
}

fn live_state(d: &Deployment) -> ColorLive {
    let spec_replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    // Availability counts only once the Deployment controller has seen the current spec and
    // every pod runs the current template.
    let current = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
        && status.updated_replicas.unwrap_or(0) >= status.replicas.unwrap_or(0);
    ColorLive {
        revision: d.annotations().get(REVISION_ANNOTATION).cloned(),
        replicas: spec_replicas,
        available: if current { status.available_replicas.unwrap_or(0) } else { 0 },
    }
}

async fn reconcile_inner(bg: &BlueGreenDeployment, ctx: &Ctx, started: Instant) -> Result<Action, Error> {
    let ns = bg.namespace().ok_or_else(|| Error::Bug("a BlueGreenDeployment without a namespace".into()))?;
    if bg.spec.template.is_none()
        && let Some(r) = &bg.spec.platform_ref
        && let Some(p) = Api::<Platform>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&r.name)
            .await
            .call(|| format!("reading Platform {ns}/{} (spec.platformRef)", r.name))?
        && p.spec.target.as_ref().is_some_and(|t| t.hosts.is_some())
    {
        return hosts::reconcile(bg, &p, ctx, started).await;
    }

    // Observe.
    let template = template_of(bg, ctx, &ns).await?;
    let port =
        desired::check_names(bg).and_then(|_| desired::app_port(&template)).map_err(Blocked::invalid)?;
    let revision = revision_of(&template);
    let blue = live(ctx, &ns, &desired::deployment_name(bg, Color::Blue));
    let green = live(ctx, &ns, &desired::deployment_name(bg, Color::Green));
    let asked = |key: &str| bg.annotations().get(key).is_some_and(|v| *v == revision);
    let status = ctx.status.current(bg);
    // Decide (pure), with a gate round first when the plan asks for one.
    let mut input = Input {
        spec: &bg.spec,
        desired: &revision,
        status: &status,
        blue: blue.as_deref().map(live_state),
        green: green.as_deref().map(live_state),
        promote: asked(PROMOTE_ANNOTATION),
        abort_requested: asked(ABORT_ANNOTATION),
        round: None,
        backup: backup_gate::view(ctx, &ns, &bg.spec.strategy).await?,
        now: Timestamp::now(),
    };
    let mut p = plan::plan(&input);
    if p.gate_due.any() {
        input.round = Some(run_gate(bg, ctx, &ns, p.gate_due).await?);
        p = plan::plan(&input);
    }
    // Act, record, status.
    let release = Release { template: &template, revision: &revision, port, blue: &blue, green: &green };
    act(bg, ctx, &ns, &p, &release, started).await?;
    if let Some(r) = &p.backup_request {
        backup_gate::request(ctx, &ns, &bg.spec.strategy, r).await?;
    }
    // Revision history and events before the status, as `nova rollout` and watchers expect to
    // find them once the status shows the step. The status before the release and audit
    // records: it is what the next reconcile decides from, so a process killed after it never
    // repeats the step; one killed before it repeats only idempotent work, and records the
    // step then, once.
    announce(bg, ctx, &p, &status, &release).await?;
    write_status(bg, ctx, p.status.clone(), p.phase, &p.conditions).await?;
    record(bg, ctx, &ns, &p, &release).await?;
    Ok(Action::requeue(p.requeue.unwrap_or(Duration::from_secs(300))))
}

/// What is being released and what runs now.
struct Release<'a> {
    template: &'a PodTemplateSpec,
    revision: &'a str,
    port: i32,
    blue: &'a Option<Arc<Deployment>>,
    green: &'a Option<Arc<Deployment>>,
}

/// Applies the plan: the active Service first (the switch is one selector change), then the
/// colours, then the preview Service.
async fn act(
    bg: &BlueGreenDeployment,
    ctx: &Ctx,
    ns: &str,
    p: &plan::Plan,
    r: &Release<'_>,
    started: Instant,
) -> Result<(), Error> {
    let st = &p.status;
    let (Some(active), Some(active_rev)) = (st.active_color, st.active_revision.as_deref()) else {
        return Err(Error::Bug("the plan named no active colour".into()));
    };
    let (preview, preview_rev) = match (st.preview_color, st.preview_revision.as_deref()) {
        (Some(c), Some(r)) => (c, r),
        _ => (active, active_rev),
    };
    let active_svc = desired::service(bg, desired::active_service(bg), active, active_rev, r.port);
    ensure(&ctx.client, &ctx.children.services, ns, &desired::active_service(bg), &active_svc, true).await?;
    if let Some(sw) = &p.switch {
        let took = started.elapsed();
        ctx.families.switched(sw.rollback, took);
        info!(from = %sw.from, to = %sw.to, revision = %sw.revision, rollback = sw.rollback, ms = took.as_millis() as u64, "traffic switched");
    }
    // Traffic first, then the colours: a switch only ever goes to a colour that is available
    // already, so the only Deployment change that follows it is the other colour's scale-down.
    for (c, want, live) in [(Color::Blue, p.blue, r.blue), (Color::Green, p.green, r.green)] {
        let Some(want) = want else { continue };
        let (tpl, rev) = match (want.template, live) {
            (Template::Spec, _) => (r.template.clone(), r.revision.to_owned()),
            (Template::Live, Some(d)) => {
                let t = d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
                (t, d.annotations().get(REVISION_ANNOTATION).cloned().unwrap_or_default())
            }
            // Nothing runs there, so there is nothing to keep or scale down.
            (Template::Live, None) => continue,
        };
        let d = desired::deployment(bg, c, &tpl, &rev, want.replicas);
        ensure(&ctx.client, &ctx.children.deployments, ns, &desired::deployment_name(bg, c), &d, true)
            .await?;
    }
    let preview_svc = desired::service(bg, desired::preview_service(bg), preview, preview_rev, r.port);
    ensure(&ctx.client, &ctx.children.services, ns, &desired::preview_service(bg), &preview_svc, true)
        .await?;
    Ok(())
}

/// Revision history and the plan's events.
async fn announce(
    bg: &BlueGreenDeployment,
    ctx: &Ctx,
    p: &plan::Plan,
    before: &BlueGreenDeploymentStatus,
    r: &Release<'_>,
) -> Result<(), Error> {
    if before.preview_revision != p.status.preview_revision || before.active_revision.is_none() {
        revisions::save(&ctx.client, bg, r.revision, r.template).await?;
    }
    for (warning, reason, msg) in &p.events {
        let t = if *warning { EventType::Warning } else { EventType::Normal };
        publish(ctx, bg, t, reason, msg).await;
    }
    Ok(())
}

/// Release and audit records of a switch (at most once: see the caller).
async fn record(
    bg: &BlueGreenDeployment,
    ctx: &Ctx,
    ns: &str,
    p: &plan::Plan,
    r: &Release<'_>,
) -> Result<(), Error> {
    let Some(sw) = &p.switch else { return Ok(()) };
    let name = bg.name_any();
    let spec = r.template.spec.as_ref();
    let image = spec.and_then(|s| s.containers.first()).and_then(|c| c.image.clone()).unwrap_or_default();
    if !sw.rollback {
        ctx.state.record_release(KIND, ns, &name, &sw.revision, &image).await?;
    }
    let action = if sw.rollback { "rollback" } else { "switch" };
    let detail = format!("{} -> {}: revision {}", sw.from, sw.to, sw.revision);
    ctx.state.audit(KIND, ns, &name, action, &detail).await?;
    Ok(())
}

async fn run_gate(
    bg: &BlueGreenDeployment,
    ctx: &Ctx,
    ns: &str,
    due: plan::GateDue,
) -> Result<GateRound, Error> {
    let s = &bg.spec.strategy;
    let health = match (&s.health_check, due.health) {
        (Some(check), true) => {
            let eps =
                gate::ready_endpoints(&ctx.client, ns, &desired::preview_service(bg), check.port).await?;
            Some(gate::http_round(&ctx.http, &eps, check).await)
        }
        _ => None,
    };
    let analysis = match (&s.analysis, due.analysis) {
        (Some(a), true) => Some(gate::analysis_round(&ctx.http, a).await),
        _ => None,
    };
    Ok(GateRound { health, analysis })
}

/// Writes the planned status through the kit (only when it changed).
async fn write_status(
    bg: &BlueGreenDeployment,
    ctx: &Ctx,
    mut planned: BlueGreenDeploymentStatus,
    phase: Phase,
    conds: &[Cond],
) -> Result<(), Error> {
    planned.phase = Some(phase);
    ctx.status.write(&ctx.kit, bg, planned, conds).await?;
    ctx.families.phase(&bg.namespace().unwrap_or_default(), &bg.name_any(), phase);
    Ok(())
}

/// Conditions for a rollout that could not be planned (a Host unreachable, a round failed):
/// the status as it was, phase Degraded.
async fn write_failed(bg: &BlueGreenDeployment, ctx: &Ctx, conds: &[Cond]) -> Result<(), Error> {
    let old = ctx.status.current(bg);
    write_status(bg, ctx, old, Phase::Degraded, conds).await
}

async fn publish(ctx: &Ctx, bg: &BlueGreenDeployment, type_: EventType, reason: &str, note: &str) {
    ctx.publish(&bg.object_ref(&()), "Rollout", type_, reason, note).await;
}
