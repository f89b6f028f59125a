//! The Platform controller on Kubernetes: Platform → Deployment, Service, Ingress by
//! server-side apply, then status from what the cluster reports.

pub mod cleanup;
pub mod desired;
#[cfg(test)]
mod verify;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use crate::api::bluegreen::BlueGreenDeployment;
use crate::api::platform::{Platform, PlatformStatus, StrategyType};
use crate::apply::{delete_if_owned, ensure};
use crate::conditions::{Cond, CondType};
use crate::context::{Blocked, Error, FIELD_MANAGER};
use crate::kit::{self, Finalized};

const KIND: &str = "Platform";

/// The Platform controller's context: the shared one and its status writer.
pub type Ctx = crate::context::Own<Platform>;

pub async fn reconcile(p: Arc<Platform>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let c = ctx.clone();
    kit::run(p, &ctx.kit, &ctx.status, &[CondType::Degraded], |p| reconcile_inner(p, c)).await
}

fn targets_hosts(p: &Platform) -> bool {
    p.spec.target.as_ref().is_some_and(|t| t.hosts.is_some())
}

async fn reconcile_inner(p: Arc<Platform>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = p.namespace().ok_or_else(|| Error::Bug("a Platform without a namespace".into()))?;
    let has_finalizer = p.finalizers().iter().any(|f| f == kit::finalizer::FINALIZER);
    if !targets_hosts(&p) && !has_finalizer {
        return on_kubernetes(&p, &ctx, &ns).await;
    }
    // On hosts Nova makes what owner references cannot remove: units, files, the nginx site.
    let api: Api<Platform> = Api::namespaced(ctx.client.clone(), &ns);
    kit::finalized(&api, p, |event| async move {
        match event {
            Finalized::Apply(p) if targets_hosts(&p) => on_hosts(&p, &ctx, &ns).await,
            Finalized::Apply(p) => on_kubernetes(&p, &ctx, &ns).await,
            Finalized::Cleanup(p) => cleanup::hosts(&p, &ctx).await,
        }
    })
    .await
}

async fn on_kubernetes(p: &Platform, ctx: &Ctx, ns: &str) -> Result<Action, Error> {
    let name = p.name_any();
    let generation = p.metadata.generation.unwrap_or_default();
    let uid = p.uid().unwrap_or_default();
    let settled = ctx.settled(&uid, generation);

    let mut missing = missing_dependencies(p, ctx, ns).await?;
    if !settled && let Some(problem) = auto_certificate(p, ctx, ns).await? {
        missing.push(problem);
    }
    if !missing.is_empty() {
        // Nothing is applied until every reference resolves: pods that cannot start would only
        // replace healthy ones.
        return Err(Blocked::missing(missing.join("; ")).into());
    }

    // After a spec change (or a restart) everything is applied; otherwise only what drifted.
    if p.spec.strategy.as_ref().is_some_and(|s| s.type_ == StrategyType::BlueGreen) {
        return blue_green(p, ctx, ns, settled).await;
    }

    let children = desired::children(p);
    let deployment =
        ensure(&ctx.client, &ctx.children.deployments, ns, &name, &children.deployment, settled).await?;
    ensure(&ctx.client, &ctx.children.services, ns, &name, &children.service, settled).await?;
    match &children.ingress {
        Some(ing) => {
            ensure(&ctx.client, &ctx.children.ingresses, ns, &name, ing, settled).await?;
        }
        None if settled && ctx.children.ingresses.get(&ObjectRef::new(&name).within(ns)).is_none() => {}
        None => delete_if_owned(&Api::<Ingress>::namespaced(ctx.client.clone(), ns), &name, p).await?,
    }
    ctx.mark_applied(uid, generation);

    // The database is written on a new revision only, not on every steady-state reconcile.
    let current = ctx.status.current(p);
    if current.active_revision.as_ref() != Some(&children.revision) {
        let first_time = ctx.state.record_release(KIND, ns, &name, &children.revision, &p.spec.image).await?;
        let (action, reason) =
            if first_time { ("apply", "RevisionApplied") } else { ("reapply", "RevisionReapplied") };
        let detail = format!("revision {} (image {})", children.revision, p.spec.image);
        ctx.state.audit(KIND, ns, &name, action, &detail).await?;
        publish(ctx, p, EventType::Normal, reason, &detail).await;
    }

    let (conds, ready_replicas) = rollout_conditions(p, &deployment);
    update_status(p, ctx, &conds, ready_replicas, Some(children.revision)).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// AcmeIssuers marked as the one `tls.mode: Auto` uses when `tls.issuer` is empty.
pub const DEFAULT_ISSUER_ANNOTATION: &str = "nova.infra.dev/default-issuer";

/// `tls.mode: Auto`: applies the TlsCertificate for the domains (its Secret is the one the
/// Ingress serves); deletes it when Auto is no longer asked for. Returns why it cannot be
/// made (no issuer), naming the field.
async fn auto_certificate(p: &Platform, ctx: &Ctx, ns: &str) -> Result<Option<String>, Error> {
    let certs: Api<crate::api::TlsCertificate> = Api::namespaced(ctx.client.clone(), ns);
    let auto = p.spec.tls.as_ref().filter(|t| t.mode == crate::api::platform::TlsMode::Auto);
    let Some(tls) = auto.filter(|_| !p.spec.domains.is_empty()) else {
        crate::apply::delete_if_owned(&certs, &p.name_any(), p).await?;
        return Ok(None);
    };
    let issuers: Api<crate::api::AcmeIssuer> = Api::all(ctx.client.clone());
    let issuer = match &tls.issuer {
        Some(name) => match issuers.get_metadata_opt(name).await? {
            Some(_) => name.clone(),
            None => return Ok(Some(format!("AcmeIssuer {name:?} named in spec.tls.issuer does not exist"))),
        },
        None => {
            let all = issuers.list_metadata(&Default::default()).await?.items;
            let marked: Vec<String> = all
                .iter()
                .filter(|i| i.annotations().get(DEFAULT_ISSUER_ANNOTATION).is_some_and(|v| v == "true"))
                .map(|i| i.name_any())
                .collect();
            match marked.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Ok(Some(format!(
                        "spec.tls.mode is Auto but spec.tls.issuer is empty and no AcmeIssuer is annotated \
                         {DEFAULT_ISSUER_ANNOTATION}=\"true\": name one"
                    )));
                }
                many => {
                    return Ok(Some(format!(
                        "spec.tls.issuer is empty and several AcmeIssuers are annotated as default ({}): name one",
                        many.join(", ")
                    )));
                }
            }
        }
    };
    if let Some(cert) = desired::certificate(p, &issuer) {
        certs.patch(&p.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&cert)).await?;
    }
    Ok(None)
}

async fn missing_dependencies(p: &Platform, ctx: &Ctx, ns: &str) -> Result<Vec<String>, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let mut missing = Vec::new();
    for dep in desired::dependencies(p) {
        let exists = match dep.kind {
            "Secret" => secrets.get_metadata_opt(&dep.name).await?.is_some(),
            _ => maps.get_metadata_opt(&dep.name).await?.is_some(),
        };
        if !exists {
            missing.push(format!(
                "{} {:?} named in {} does not exist in namespace {ns}: create it, or mark the reference optional",
                dep.kind, dep.name, dep.field
            ));
        }
    }
    Ok(missing)
}

/// Strategy BlueGreen: the Platform owns a BlueGreenDeployment of the same name, whose active
/// Service carries the Platform's name, so the Ingress is the same as with Rolling.
async fn blue_green(p: &Platform, ctx: &Ctx, ns: &str, settled: bool) -> Result<Action, Error> {
    let name = p.name_any();
    if !settled {
        // Coming from Rolling: the Deployment goes, and the Service is handed to the
        // BlueGreenDeployment (deleted here, recreated there with a colour selector).
        delete_if_owned(&Api::<Deployment>::namespaced(ctx.client.clone(), ns), &name, p).await?;
        delete_if_owned(&Api::<Service>::namespaced(ctx.client.clone(), ns), &name, p).await?;
    }
    let bgd = desired::bluegreen(p);
    let live = ensure(&ctx.client, &ctx.children.bluegreens, ns, &name, &bgd, settled).await?;
    match desired::children(p).ingress {
        Some(ing) => {
            ensure(&ctx.client, &ctx.children.ingresses, ns, &name, &ing, settled).await?;
        }
        None if settled && ctx.children.ingresses.get(&ObjectRef::new(&name).within(ns)).is_none() => {}
        None => delete_if_owned(&Api::<Ingress>::namespaced(ctx.client.clone(), ns), &name, p).await?,
    }
    ctx.mark_applied(p.uid().unwrap_or_default(), p.metadata.generation.unwrap_or_default());
    mirror(p, ctx, &live).await
}

/// Target hosts: the Platform owns a BlueGreenDeployment of the same name that deploys to the
/// selected Hosts over SSH (see `bluegreen::hosts`); a spec hosts cannot run is refused here,
/// before anything is created.
async fn on_hosts(p: &Platform, ctx: &Ctx, ns: &str) -> Result<Action, Error> {
    crate::hostapp::desired::app(p).map_err(Blocked::invalid)?;
    let settled = ctx.settled(&p.uid().unwrap_or_default(), p.metadata.generation.unwrap_or_default());
    if !settled && let Some(problem) = auto_certificate(p, ctx, ns).await? {
        return Err(Blocked::missing(problem).into());
    }
    let bgd = desired::bluegreen_on_hosts(p);
    let live = ensure(&ctx.client, &ctx.children.bluegreens, ns, &p.name_any(), &bgd, settled).await?;
    ctx.mark_applied(p.uid().unwrap_or_default(), p.metadata.generation.unwrap_or_default());
    mirror(p, ctx, &live).await
}

/// The Platform's status from its BlueGreenDeployment's.
async fn mirror(p: &Platform, ctx: &Ctx, live: &BlueGreenDeployment) -> Result<Action, Error> {
    // The rollout's own conditions say it best; a BlueGreenDeployment not yet reconciled is
    // still starting.
    let st = live.status.clone().unwrap_or_default();
    let fresh = st.observed_generation == live.metadata.generation;
    let conds: Vec<Cond> = [CondType::Ready, CondType::Progressing, CondType::Degraded]
        .into_iter()
        .filter_map(|t| {
            let c = st.conditions.iter().find(|c| c.type_ == t.as_str() && fresh)?;
            let reason: &'static str = match c.reason.as_str() {
                "Healthy" => "Healthy",
                "Complete" => "Complete",
                _ => "BlueGreen",
            };
            Some(Cond::new(t, c.status == "True", reason, format!("{}: {}", c.reason, c.message)))
        })
        .collect();
    let conds = if conds.is_empty() {
        vec![Cond::new(CondType::Ready, false, "RollingOut", "waiting for the BlueGreenDeployment")]
    } else {
        conds
    };
    update_status(p, ctx, &conds, None, st.active_revision.clone()).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Ready / Progressing / Degraded from the Deployment, as `kubectl rollout status` reads it.
fn rollout_conditions(p: &Platform, d: &Deployment) -> (Vec<Cond>, Option<i32>) {
    let want = p.spec.replicas;
    let status = d.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let ready = status.ready_replicas;
    let deadline_exceeded = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
    let done = observed && updated >= want && available >= want && total <= want;
    let msg = format!("{available} of {want} replicas available, {updated} updated");
    let conds = if done {
        vec![
            Cond::new(CondType::Ready, true, "Available", &msg),
            Cond::new(CondType::Progressing, false, "Complete", &msg),
            Cond::new(CondType::Degraded, false, "Available", ""),
        ]
    } else if deadline_exceeded {
        let why = format!("the rollout exceeded its progress deadline: {msg}");
        vec![
            Cond::new(CondType::Ready, false, "ProgressDeadlineExceeded", &why),
            Cond::new(CondType::Progressing, false, "ProgressDeadlineExceeded", &why),
            Cond::new(CondType::Degraded, true, "ProgressDeadlineExceeded", &why),
        ]
    } else {
        vec![
            Cond::new(CondType::Ready, false, "RollingOut", &msg),
            Cond::new(CondType::Progressing, true, "RollingOut", &msg),
            Cond::new(CondType::Degraded, false, "RollingOut", ""),
        ]
    };
    (conds, ready)
}

/// Writes status through the kit (only when it changed; events on condition changes).
async fn update_status(
    p: &Platform,
    ctx: &Ctx,
    conds: &[Cond],
    ready_replicas: Option<i32>,
    revision: Option<String>,
) -> Result<(), Error> {
    let old = ctx.status.current(p);
    let new = PlatformStatus {
        url: Some(desired::url(p)),
        ready_replicas: ready_replicas.or(old.ready_replicas),
        active_revision: revision.or(old.active_revision.clone()),
        ..old
    };
    ctx.status.write(&ctx.kit, p, new, conds).await?;
    Ok(())
}

async fn publish(ctx: &Ctx, p: &Platform, type_: EventType, reason: &str, note: &str) {
    ctx.publish(&p.object_ref(&()), "Reconcile", type_, reason, note).await;
}
