//! The thermal guard on Hosts: each round reads every GPU the gang was given (`nvidia-smi` on
//! the host: the query's readings and each GPU's slowdown threshold), puts them in the workers' status, and
//! asks the pure guard ([`super::thermal`]) whether to freeze the workers (SIGSTOP to every
//! process of their units) or thaw them (SIGCONT).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::hostrun::{Error, Site, on};
use super::plan::{Plan, reason};
use super::thermal::{self, Guard, Reading};
use super::units;
use crate::api::TrainingJob;
use crate::api::training::{TrainingPhase, WorkerStatus};

const T: Duration = Duration::from_secs(60);

/// Reads the GPUs of the workers on `s` into their status; returns the readings.
async fn read(s: &Site, workers: &mut [WorkerStatus]) -> Result<Vec<Reading>, Error> {
    let Some(c) = &s.conn else { return Ok(Vec::new()) };
    let mine = |w: &WorkerStatus| w.host.as_deref() == Some(s.name.as_str()) && w.gpus.is_some();
    if !workers.iter().any(mine) {
        return Ok(Vec::new());
    }
    let gpus = units::parse_gpus(&c.run(units::GPU_QUERY, T).await.map_err(on(&s.name))?);
    let mut out = Vec::new();
    for w in workers.iter_mut().filter(|w| mine(w)) {
        let ids: Vec<u32> =
            w.gpus.as_deref().unwrap_or_default().split(',').filter_map(|g| g.parse().ok()).collect();
        let given: Vec<&units::Gpu> = gpus.iter().filter(|g| ids.contains(&g.index)).collect();
        if given.is_empty() {
            continue;
        }
        w.gpu_temperature_celsius = given.iter().map(|g| g.celsius).max();
        w.gpu_utilization_percent = given.iter().filter_map(|g| g.utilization).max();
        w.gpu_memory_used_mib = Some(given.iter().filter_map(|g| g.memory_mib).sum());
        out.extend(given.iter().map(|g| Reading {
            worker: w.index as u32,
            gpu: g.index,
            celsius: g.celsius,
            slowdown_celsius: g.slowdown_celsius,
        }));
    }
    Ok(out)
}

/// Sends `signal` to every process of the attempt's units on every Host that answers.
async fn signal(sites: &[Site], id: &str, attempt: i32, signal: &str) -> Result<(), Error> {
    let cmd = format!(
        "cd /etc/systemd/system && for u in {p}*.service; do [ -e \"$u\" ] && systemctl kill -s {signal} \"$u\"; done; true",
        p = units::attempt_prefix(id, attempt),
    );
    for s in sites {
        if let Some(c) = &s.conn {
            c.run(&cmd, T).await.map_err(on(&s.name))?;
        }
    }
    Ok(())
}

/// The guard's turn in a round of a GPU job whose gang runs (or is paused) and stays.
pub async fn guard(sites: &[Site], job: &TrainingJob, id: &str, p: &mut Plan) -> Result<(), Error> {
    let phase = p.status.phase;
    let live = matches!(phase, Some(TrainingPhase::Running | TrainingPhase::Paused));
    if job.spec.gpus_per_worker <= 0 || !live || p.stop_all || !p.create.is_empty() {
        return Ok(());
    }
    let mut readings = Vec::new();
    for s in sites {
        readings.extend(read(s, &mut p.status.workers).await?);
    }
    let attempt = p.status.attempt.unwrap_or(1);
    let paused = phase == Some(TrainingPhase::Paused);
    match thermal::decide(&job.spec.thermal, paused, &readings) {
        Guard::Pause(msg) => {
            signal(sites, id, attempt, "SIGSTOP").await?;
            p.status.phase = Some(TrainingPhase::Paused);
            (p.reason, p.message) = (reason::THERMAL_PAUSE, msg.clone());
            p.event = Some((true, reason::THERMAL_PAUSE, msg));
        }
        Guard::Resume(msg) => {
            signal(sites, id, attempt, "SIGCONT").await?;
            p.status.phase = Some(TrainingPhase::Running);
            // The pause was no hang: the progress deadline counts from the thaw.
            p.status.last_progress_time = Some(Time(Timestamp::now()));
            (p.reason, p.message) = (reason::THERMAL_RESUME, msg.clone());
            p.event = Some((false, reason::THERMAL_RESUME, msg));
        }
        Guard::Hold if paused => {
            p.reason = reason::THERMAL_PAUSE;
            p.message = format!(
                "paused by the thermal guard until every GPU is below {} °C (spec.thermal.resumeBelowCelsius)",
                job.spec.thermal.resume_below_celsius
            );
        }
        Guard::Hold => {}
    }
    Ok(())
}
