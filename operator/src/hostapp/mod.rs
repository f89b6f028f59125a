//! Platforms on SSH hosts: the application as systemd units in two colours behind nginx, moved
//! by the same blue-green state machine as on Kubernetes. `desired` is pure, `engine` does the
//! SSH work; `settle` drives rounds until the rollout stands still, for callers that wait (the
//! `nova apply` command and tests). The operator runs one round per reconcile instead.

pub mod desired;
pub mod engine;

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::bluegreen::{BlueGreenDeploymentSpec, BlueGreenDeploymentStatus, Phase};
use crate::bluegreen::plan::Plan;
use crate::conditions;
pub use desired::App;
pub use engine::{Error, HostConn, Requests};

/// The status to store after a round: the plan's, with its phase and conditions merged in.
pub fn status_after(
    old: &BlueGreenDeploymentStatus,
    p: &Plan,
    generation: Option<i64>,
) -> BlueGreenDeploymentStatus {
    let mut st = p.status.clone();
    st.phase = Some(p.phase);
    st.observed_generation = generation;
    st.conditions = conditions::merge(&old.conditions, &p.conditions, generation, Timestamp::now());
    st
}

/// Whether a rollout needs no further round now (it may later: a scale-down is due, or a user
/// promotes or aborts).
pub fn settled(st: &BlueGreenDeploymentStatus, wait_scale_down: bool) -> bool {
    let still = matches!(st.phase, Some(Phase::Healthy | Phase::Paused | Phase::Degraded | Phase::Aborted));
    still && !(wait_scale_down && st.scale_down_at.is_some())
}

/// How often a waiting caller looks again while a process starts or a check is pending.
const POLL: Duration = Duration::from_millis(250);

/// Runs rounds until the rollout settles (see [`settled`]), calling `progress` after each with
/// the stored status and the round's plan. Requests apply to the first round only, as a CLI
/// invocation asks once.
pub async fn settle(
    hosts: &[HostConn],
    app: &App,
    spec: &BlueGreenDeploymentSpec,
    status: &mut BlueGreenDeploymentStatus,
    mut req: Requests,
    wait_scale_down: bool,
    mut progress: impl FnMut(&BlueGreenDeploymentStatus, &Plan),
) -> Result<(), Error> {
    loop {
        let p = engine::round(hosts, app, spec, status, req).await?;
        req = Requests::default();
        *status = status_after(status, &p, status.observed_generation);
        progress(status, &p);
        if settled(status, wait_scale_down) && p.switch.is_none() {
            return Ok(());
        }
        let wait = p.requeue.map_or(POLL, |r| r.min(POLL * 4));
        tokio::time::sleep(wait).await;
    }
}
