//! The TrainingJob controller on Kubernetes: observe (the workers' pods, rank 0's progress
//! lines) → decide (the gang's plan, pure) → act (pods created or stopped, the headless
//! Service) → status. Owner references remove everything with the job: no finalizer.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::Event;
use kube::{Api, Resource, ResourceExt};

use super::plan::{self, Plan, Policy};
use super::pods::{self, JOB};
use crate::api::TrainingJob;
use crate::api::training::TrainingPhase;
use crate::context::{Error, Own};
use crate::kit::error::Call;
use crate::kit::kinds::Reconciled;
use crate::kit::{self, FIELD_MANAGER};

/// What the operator is told about training.
#[derive(Clone)]
pub struct Settings {
    /// The image whose `nova train` runs jobs of the built-in trainer (`--trainer-image`).
    pub trainer_image: String,
    /// Prometheus holding the DCGM exporter's GPU metrics (`--prometheus-url`), for the
    /// thermal guard and GPU readings of pods; without it neither runs.
    pub prometheus_url: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            trainer_image: format!("ghcr.io/nova-infra/nova:{}", env!("CARGO_PKG_VERSION")),
            prometheus_url: None,
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A Prometheus URL may carry basic-auth credentials.
        f.debug_struct("Settings")
            .field("trainer_image", &self.trainer_image)
            .field("prometheus_url", &self.prometheus_url.as_deref().map(crate::state::redact))
            .finish()
    }
}

/// The settings and the metric families of the controller.
pub struct Families {
    pub settings: Settings,
    pub metrics: super::metrics::Training,
}

pub type Ctx = Own<TrainingJob, Families>;

/// Progress is read again this often while workers run.
const WATCH: Duration = Duration::from_secs(30);
/// GPUs are read this often while the thermal guard watches a job (running or paused).
const GUARD_EVERY: Duration = Duration::from_secs(10);

pub async fn reconcile(obj: Arc<TrainingJob>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let c = ctx.clone();
    kit::run(obj, &ctx.kit, &ctx.status, &[], |job| async move {
        // Only a job on Hosts (or one that was) needs the finalizer: pods go with their owner.
        if job.spec.target.hosts.is_none() && !job.finalizers().iter().any(|f| f == kit::finalizer::FINALIZER)
        {
            return apply(&job, &c).await;
        }
        let api = job.api_for(c.client.clone());
        kit::finalized(&api, job, |event| async {
            match event {
                Event::Apply(j) if j.spec.target.hosts.is_some() => super::hostctl::apply(&j, &c).await,
                Event::Apply(j) => apply(&j, &c).await,
                Event::Cleanup(j) => super::hostctl::cleanup(&j, &c).await,
            }
        })
        .await
    })
    .await
}

async fn apply(job: &TrainingJob, ctx: &Ctx) -> Result<Action, Error> {
    let (ns, name) = (job.namespace().unwrap_or_default(), job.name_any());
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let old = ctx.status.current(job);
    let mut seen = super::observe::pods(&api, &name, old.attempt).await?;
    let mut status = old.clone();
    if let (Some(attempt), true) =
        (old.attempt, plan::reads_progress(old.phase) && seen.workers.contains_key(&0))
    {
        let rank0 = pods::pod_name(&name, attempt, 0);
        seen.progressed = super::observe::progress(&api, &rank0, &mut status).await?;
    }
    let now = Timestamp::now();
    let mut plan = plan::decide(&Policy::of(&job.spec), &status, &seen, now);
    super::podguard::guard(ctx, job, &mut plan, now).await;
    act(job, ctx, &api, &mut plan, &seen).await?;
    let (ns, name) = (job.namespace().unwrap_or_default(), job.name_any());
    super::runs::record(&ctx.state, &ns, &name, &old, &plan).await?;
    write_status(job, ctx, &plan).await?;
    let live = matches!(plan.status.phase, Some(TrainingPhase::Running | TrainingPhase::Pending));
    let guarded = super::podguard::watches(ctx, job, plan.status.phase);
    let watch = if guarded { GUARD_EVERY } else { WATCH };
    Ok(match plan.recheck {
        Some(d) if guarded => Action::requeue(d.unsigned_abs().clamp(Duration::from_millis(200), watch)),
        Some(d) => Action::requeue(d.unsigned_abs().max(Duration::from_millis(200))),
        None if live || guarded => Action::requeue(watch),
        None => Action::await_change(),
    })
}

async fn act(
    job: &TrainingJob,
    ctx: &Ctx,
    api: &Api<Pod>,
    plan: &mut Plan,
    seen: &plan::Observed,
) -> Result<(), Error> {
    let name = job.name_any();
    if let Some((warning, reason, note)) = &plan.event {
        if *reason == plan::reason::RESTARTING {
            ctx.families.metrics.restarted(&job.namespace().unwrap_or_default(), &name);
        }
        let t = if *warning { EventType::Warning } else { EventType::Normal };
        ctx.publish(&job.object_ref(&()), "Train", t, reason, note).await;
    }
    if plan.stop_all || plan.stop_leftovers {
        ctx.kit.fenced()?;
        let keep = (!plan.stop_all).then_some(plan.status.attempt).flatten();
        stop(api, &name, keep, seen).await?;
    }
    if plan.create.is_empty() {
        return Ok(());
    }
    ctx.kit.fenced()?;
    put_priority_class(ctx, job).await?;
    put_service(ctx, job).await?;
    let attempt = plan.status.attempt.unwrap_or(1);
    for index in plan.create.clone() {
        let w = pods::Worker {
            attempt,
            index,
            restarts: plan.status.restarts.unwrap_or(0),
            resume_from: plan.status.last_checkpoint.as_ref().map(|c| c.path.as_str()),
            trainer_image: &ctx.families.settings.trainer_image,
        };
        let pod = pods::pod(job, &w).map_err(|m| crate::context::Blocked::new("InvalidSpec", m))?;
        match api
            .create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &pod)
            .await
        {
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            r => {
                r.call(|| format!("creating worker {index} of TrainingJob {name}"))?;
            }
        }
    }
    Ok(())
}

/// Deletes the job's pods: all of them, or (`keep`) all but those of the current attempt.
async fn stop(api: &Api<Pod>, job: &str, keep: Option<i32>, seen: &plan::Observed) -> Result<(), Error> {
    let mut selector = format!("{JOB}={job}");
    if let Some(a) = keep {
        selector += &format!(",{}!={a}", pods::ATTEMPT);
    }
    if seen.workers.is_empty() && seen.leftovers == 0 {
        return Ok(());
    }
    // The pods' own grace period (30 s) lets a trainer write a checkpoint on SIGTERM.
    api.delete_collection(&DeleteParams::default(), &ListParams::default().labels(&selector))
        .await
        .call(|| format!("stopping the workers of TrainingJob {job}"))?;
    Ok(())
}

/// The job's PriorityClass, before its pods name it (cluster-scoped and shared: never deleted).
async fn put_priority_class(ctx: &Ctx, job: &TrainingJob) -> Result<(), Error> {
    let Some(pc) = pods::priority_class(job.spec.priority) else { return Ok(()) };
    let name = pc.name_any();
    Api::<PriorityClass>::all(ctx.client.clone())
        .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&pc))
        .await
        .call(|| format!("applying PriorityClass {name} (spec.priority)"))?;
    Ok(())
}

async fn put_service(ctx: &Ctx, job: &TrainingJob) -> Result<(), Error> {
    let (ns, name) = (job.namespace().unwrap_or_default(), job.name_any());
    Api::<Service>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&pods::service(job)))
        .await
        .call(|| format!("applying Service {ns}/{name}"))?;
    Ok(())
}

async fn write_status(job: &TrainingJob, ctx: &Ctx, plan: &Plan) -> Result<(), Error> {
    ctx.families.metrics.observe(&job.namespace().unwrap_or_default(), &job.name_any(), &plan.status);
    ctx.status.write(&ctx.kit, job, plan.status.clone(), &plan::conditions(plan)).await?;
    Ok(())
}
