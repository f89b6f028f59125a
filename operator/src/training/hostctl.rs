//! The TrainingJob controller for jobs on Hosts (`spec.target.hosts`): each reconcile is one
//! round of [`super::hostrun`] over the selected Hosts (the gang plan is the pods' one), the
//! status written through the kit. Units on hosts are what owner references cannot remove:
//! the finalizer stops them and removes their files when the job goes.

use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use super::controller::Ctx;
use super::hostrun::{self, Site};
use super::plan;
use super::units;
use crate::api::TrainingJob;
use crate::api::host::Host;
use crate::api::training::TrainingPhase;
use crate::context::{Blocked, Error};
use crate::kit::error::Call;
use crate::kit::finalizer::{SKIP_CLEANUP_ANNOTATION, skip_cleanup};

/// Nothing wakes the controller when a unit on a host ends: it looks this often while a gang
/// is placed or running.
const HOST_WATCH: Duration = Duration::from_secs(10);

fn host_err(e: hostrun::Error) -> Error {
    match e {
        hostrun::Error::Invalid(m) => Blocked::invalid(m).into(),
        other => Error::Host(other.to_string()),
    }
}

/// The selected Hosts, each with a session when it answered. A Host that cannot be reached is
/// down for the plan; one that refuses the namespace or lacks its key blocks the job.
async fn sites(job: &TrainingJob, ctx: &Ctx) -> Result<Vec<Site>, Error> {
    let ns = job.namespace().unwrap_or_default();
    let Some(sel) = job.spec.target.hosts.as_ref() else { return Ok(Vec::new()) };
    let all = Api::<Host>::all(ctx.client.clone())
        .list(&Default::default())
        .await
        .call(|| "listing Hosts (spec.target.hosts)".to_owned())?;
    let picked = crate::hostapp::select(&all.items, sel);
    let mut out = Vec::new();
    for h in picked {
        let conn = match crate::hostaccess::connect(h, ctx, &ns).await {
            Ok(c) => Some(c),
            Err(Error::Host(_)) => None,
            Err(e) => return Err(e),
        };
        out.push(Site { name: h.name_any(), address: h.spec.address.clone(), conn });
    }
    Ok(out)
}

fn binary() -> Result<std::path::PathBuf, Error> {
    std::env::current_exe().map_err(|e| Error::Bug(format!("Nova's own binary: {e}")))
}

/// Apply: one round on the Hosts, then the status.
pub async fn apply(job: &TrainingJob, ctx: &Ctx) -> Result<Action, Error> {
    units::check(job).map_err(Blocked::invalid)?;
    let old = ctx.status.current(job);
    let s = sites(job, ctx).await?;
    if s.is_empty() {
        let msg = "spec.target.hosts selects no Host: name existing Hosts or match their labels";
        return Err(Blocked::new("NoHosts", msg).into());
    }
    ctx.kit.fenced()?;
    let r = hostrun::round(&s, job, &old, &binary()?).await.map_err(host_err);
    hostrun::close(s).await;
    let p = r?;
    if let Some((warning, reason, note)) = &p.event {
        let (ns, name) = (job.namespace().unwrap_or_default(), job.name_any());
        if *reason == plan::reason::RESTARTING {
            ctx.families.metrics.restarted(&ns, &name);
        }
        let t = if *warning { EventType::Warning } else { EventType::Normal };
        ctx.publish(&job.object_ref(&()), "Train", t, reason, note).await;
    }
    let (ns, name) = (job.namespace().unwrap_or_default(), job.name_any());
    super::runs::record(&ctx.state, &ns, &name, &old, &p).await?;
    ctx.families.metrics.observe(&job.namespace().unwrap_or_default(), &job.name_any(), &p.status);
    ctx.status.write(&ctx.kit, job, p.status.clone(), &plan::conditions(&p)).await?;
    let live = matches!(
        p.status.phase,
        Some(TrainingPhase::Running | TrainingPhase::Pending | TrainingPhase::Paused)
    );
    let soon = p.recheck.map(|d| d.unsigned_abs().max(Duration::from_millis(200)));
    Ok(match (soon, live) {
        (Some(d), true) => Action::requeue(d.min(HOST_WATCH)),
        (Some(d), false) => Action::requeue(d),
        (None, true) => Action::requeue(HOST_WATCH),
        (None, false) => Action::await_change(),
    })
}

/// Deleted: every worker stopped and its unit and files removed on every selected Host
/// (checkpoints stay). A Host that does not answer keeps the job until it does, or until a
/// person lets it go with the skip-cleanup annotation.
pub async fn cleanup(job: &TrainingJob, ctx: &Ctx) -> Result<Action, Error> {
    if skip_cleanup(job) {
        let note = format!(
            "{SKIP_CLEANUP_ANNOTATION} is \"true\": deleted without cleanup; the units stay on their hosts"
        );
        ctx.publish(&job.object_ref(&()), "Delete", EventType::Warning, "CleanupSkipped", &note).await;
        return Ok(Action::await_change());
    }
    let id = units::id(job).map_err(Blocked::invalid)?;
    let s = sites(job, ctx).await?;
    let down: Vec<String> = s.iter().filter(|s| s.conn.is_none()).map(|s| s.name.clone()).collect();
    let r = hostrun::stop(&s, &id, None).await.map_err(host_err);
    hostrun::close(s).await;
    r?;
    if !down.is_empty() {
        return Err(Error::Host(format!(
            "Host(s) {down:?} did not answer: their workers are not stopped yet"
        )));
    }
    Ok(Action::await_change())
}
