//! `nova apply -f` / `nova delete -f` for TrainingJobs on Hosts without a cluster. Each apply
//! is one round of the gang (observe the Hosts → the pure plan → act → status in the state
//! database): the first starts the workers as systemd units; later ones judge them and restart
//! the gang from the newest checkpoint when one failed, vanished or hung. `nova apply
//! --supervise` repeats the round until every job finished, as the operator would.

use std::path::Path;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::TrainingJob;
use crate::api::host::Host;
use crate::api::training::{TrainingJobStatus, TrainingPhase};
use crate::host::cli;
use crate::local::{Error, Progress};
use crate::state::State;
use crate::training::hostrun::{self, Site};
use crate::training::plan::{self, Plan};
use crate::training::units;

/// Checks a TrainingJob read by `nova apply`: host target, and what a host can run.
pub fn admit(j: &TrainingJob, at: &str) -> Result<(), Error> {
    if j.spec.target.hosts.is_none() {
        return Err(Error::Input(format!(
            "{at}: TrainingJob {} has no spec.target.hosts; without a cluster only host targets can run",
            j.name_any()
        )));
    }
    units::check(j).map_err(|e| Error::Input(format!("{at}: {e}")))
}

fn key(j: &TrainingJob) -> (String, String) {
    (j.namespace().unwrap_or_else(|| "default".into()), j.name_any())
}

/// The selected Hosts, each with a session when it answered.
async fn sites(
    j: &TrainingJob,
    hosts: &[Host],
    identity: &Path,
    state: &State,
    say: Progress<'_>,
) -> Result<Vec<Site>, String> {
    let sel = j.spec.target.hosts.as_ref().ok_or("spec.target.hosts is not set")?;
    let picked = crate::hostapp::select(hosts, sel);
    if picked.is_empty() {
        return Err("spec.target.hosts selects no Host applied with `nova apply`".into());
    }
    let mut out = Vec::new();
    for h in picked {
        let conn = match cli::connect(h, identity, state).await {
            Ok(c) => Some(c),
            Err(e) => {
                say(&format!("trainingjob/{}: host/{} does not answer: {e}", j.name_any(), h.name_any()));
                None
            }
        };
        out.push(Site { name: h.name_any(), address: h.spec.address.clone(), conn });
    }
    Ok(out)
}

/// Rounds until the gang needs nothing more at once (a restart stops the old gang in one
/// round and starts the new one in the next). Returns the last plan.
async fn settle(j: &TrainingJob, sites: &[Site], state: &State, say: Progress<'_>) -> Result<Plan, String> {
    let (ns, name) = key(j);
    let mut old = load(state, &ns, &name).await;
    let bin = std::env::current_exe().map_err(|e| format!("Nova's own binary: {e}"))?;
    for _ in 0..3 {
        let mut p = hostrun::round(sites, j, &old, &bin).await.map_err(|e| e.to_string())?;
        if let Some((warning, reason, note)) = &p.event {
            say(&format!("trainingjob/{name}: {}{reason}: {note}", if *warning { "warning: " } else { "" }));
        }
        crate::training::runs::record(state, &ns, &name, &old, &p).await.map_err(|e| e.to_string())?;
        let conds = plan::conditions(&p);
        p.status.observed_generation = j.metadata.generation;
        p.status.conditions =
            crate::conditions::merge(&old.conditions, &conds, j.metadata.generation, Timestamp::now());
        save(state, j, &p.status).await.map_err(|e| e.to_string())?;
        let again = p.stop_all
            && p.status.attempt_start_time.is_none()
            && p.recheck.is_some_and(|r| r.as_secs() <= 1);
        old = p.status.clone();
        if !again || p.status.phase == Some(TrainingPhase::Failed) {
            return Ok(p);
        }
    }
    Ok(Plan { status: old, ..Plan::default() })
}

async fn load(state: &State, ns: &str, name: &str) -> TrainingJobStatus {
    let o = state.local("TrainingJob", ns, name).await.ok().flatten();
    o.and_then(|o| serde_json::from_str(&o.status).ok()).unwrap_or_default()
}

async fn save(state: &State, j: &TrainingJob, st: &TrainingJobStatus) -> Result<(), crate::state::Error> {
    let (ns, name) = key(j);
    let spec = serde_json::to_string(j).unwrap_or_default();
    state.save_local("TrainingJob", &ns, &name, &spec, &serde_json::to_string(st).unwrap_or_default()).await
}

/// One settled round per job; returns how many failed (could not be acted on, or Failed).
pub async fn apply(
    state: &State,
    jobs: &[TrainingJob],
    hosts: &[Host],
    identity: &Path,
    say: Progress<'_>,
) -> Result<usize, Error> {
    let mut failed = 0;
    for j in jobs {
        let name = j.name_any();
        let result = match sites(j, hosts, identity, state, say).await {
            Ok(s) => {
                let r = settle(j, &s, state, say).await;
                hostrun::close(s).await;
                r
            }
            Err(msg) => Err(msg),
        };
        match result {
            Ok(p) => {
                let st = &p.status;
                let phase = st.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "Pending".into());
                let step = st.step.map(|s| format!(", step {s}")).unwrap_or_default();
                say(&format!("trainingjob/{name}: {phase}, attempt {}{step}", st.attempt.unwrap_or(0)));
                failed += usize::from(st.phase == Some(TrainingPhase::Failed));
            }
            Err(msg) => {
                failed += 1;
                say(&format!("trainingjob/{name}: {msg}"));
            }
        }
    }
    Ok(failed)
}

/// Whether every job has finished (Succeeded or Failed) by its stored status.
pub async fn finished(state: &State, jobs: &[TrainingJob]) -> bool {
    for j in jobs {
        let (ns, name) = key(j);
        let phase = load(state, &ns, &name).await.phase;
        if !matches!(phase, Some(TrainingPhase::Succeeded | TrainingPhase::Failed)) {
            return false;
        }
    }
    true
}

/// Stops each job's workers on its Hosts and removes their units and files (checkpoints stay
/// on the hosts); returns how many failed. A Host that does not answer keeps the job stored.
pub async fn delete(
    state: &State,
    jobs: &[TrainingJob],
    hosts: &[Host],
    identity: &Path,
    say: Progress<'_>,
) -> Result<usize, Error> {
    let mut failed = 0;
    for j in jobs {
        let ((ns, name), id) = (key(j), units::id(j).map_err(Error::Input)?);
        let removed = async {
            let s = sites(j, hosts, identity, state, say).await?;
            let down: Vec<String> = s.iter().filter(|s| s.conn.is_none()).map(|s| s.name.clone()).collect();
            let r = hostrun::stop(&s, &id, None).await.map_err(|e| e.to_string());
            hostrun::close(s).await;
            r?;
            if down.is_empty() {
                Ok(())
            } else {
                Err(format!("host(s) {down:?} did not answer; run it again"))
            }
        }
        .await;
        match removed {
            Ok(()) => {
                state.delete_local("TrainingJob", &ns, &name).await?;
                say(&format!("trainingjob/{name}: workers stopped and removed (checkpoints stay)"));
            }
            Err(msg) => {
                failed += 1;
                say(&format!("trainingjob/{name}: {msg}"));
            }
        }
    }
    Ok(failed)
}
