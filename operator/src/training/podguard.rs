//! The thermal guard on Kubernetes: readings of the DCGM exporter through Prometheus
//! ([`super::dcgm`]), the pure guard ([`super::thermal`]), and — pods cannot be frozen — a
//! pause that stops the gang with its grace period to checkpoint and a resume that starts a
//! new attempt from the newest checkpoint once every GPU it ran on is cool ([`plan::pause`],
//! [`plan::resume`]). Neither counts as a restart.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::controller::Ctx;
use super::dcgm;
use super::plan::{self, Plan, Policy};
use super::thermal::{self, Guard};
use crate::api::TrainingJob;
use crate::api::training::TrainingPhase;

/// Whether the guard reads the GPUs of `job` in `phase` (the controller looks again sooner).
pub fn watches(ctx: &Ctx, job: &TrainingJob, phase: Option<TrainingPhase>) -> bool {
    ctx.families.settings.prometheus_url.is_some()
        && job.spec.gpus_per_worker > 0
        && matches!(phase, Some(TrainingPhase::Running | TrainingPhase::Paused))
}

/// The guard's turn, between the plan and acting on it. Without `--prometheus-url` or GPUs it
/// does nothing; a Prometheus that cannot be read holds (no readings decide nothing), and a
/// stopped gang's condition says why it is not resumed.
pub async fn guard(ctx: &Ctx, job: &TrainingJob, plan: &mut Plan, now: Timestamp) {
    let Some(url) = ctx.families.settings.prometheus_url.as_deref() else { return };
    let phase = plan.status.phase;
    let stopped = phase == Some(TrainingPhase::Paused) && plan.status.attempt_start_time.is_none();
    let running = phase == Some(TrainingPhase::Running) && !plan.stop_all;
    if !watches(ctx, job, phase) || !plan.create.is_empty() || !(stopped || running) {
        return;
    }
    let (ns, name) = (job.namespace().unwrap_or_default(), job.name_any());
    let Some(query) = dcgm::query(&ns, &plan.status.workers, stopped) else { return };
    let samples = match dcgm::read(&ctx.http, url, &query).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(job = %name, namespace = %ns, "GPU readings: {e}");
            if stopped {
                plan.message = format!("{}; GPU readings: {e}", plan.message);
            }
            return;
        }
    };
    let attempt = plan.status.attempt.unwrap_or(1);
    let n = job.spec.workers.max(1) as u32;
    let readings = dcgm::readings(&name, &ns, attempt, n, &mut plan.status.workers, &samples, stopped);
    match thermal::decide(&job.spec.thermal, stopped, &readings) {
        Guard::Pause(msg) => plan::pause(plan, msg),
        Guard::Resume(msg) => *plan = plan::resume(&Policy::of(&job.spec), plan.clone(), msg, now),
        Guard::Hold if stopped => {
            if let Some(h) = readings.iter().max_by_key(|r| r.celsius) {
                plan.message = format!(
                    "stopped by the thermal guard: worker {} GPU {} is at {} °C; the gang starts again from \
                     the newest checkpoint once every GPU is below {} °C (spec.thermal.resumeBelowCelsius)",
                    h.worker, h.gpu, h.celsius, job.spec.thermal.resume_below_celsius
                );
            }
        }
        Guard::Hold => {}
    }
}
