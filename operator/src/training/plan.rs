//! The gang, decided: from the job's policy, its status and the workers seen, what to create,
//! what to stop, and the new status. Pure, with the time injected, like the rollout's plan.
//!
//! All workers of an attempt run together or not at all: one failing (a retriable exit), missing
//! or hung stops them all, and the next attempt starts every worker from the newest checkpoint.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::training::{TrainingJobSpec, TrainingJobStatus, TrainingPhase};
use crate::conditions::{Cond, CondType};

/// What the spec asks of the gang.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub workers: u32,
    pub backoff_limit: u32,
    pub active_deadline: Option<SignedDuration>,
    pub ttl_after_finished: Option<SignedDuration>,
    pub progress_deadline: Option<SignedDuration>,
    pub scheduling_timeout: SignedDuration,
    pub suspend: bool,
    /// spec.resume is latest: a new gang starts at the newest checkpoint's step.
    pub resume: bool,
}

impl Policy {
    pub fn of(spec: &TrainingJobSpec) -> Self {
        let secs = |s: i64| SignedDuration::from_secs(s.max(0));
        let p = &spec.run_policy;
        Self {
            workers: spec.workers.max(1) as u32,
            backoff_limit: p.backoff_limit.max(0) as u32,
            active_deadline: p.active_deadline_seconds.map(secs),
            ttl_after_finished: p.ttl_seconds_after_finished.map(secs),
            progress_deadline: p.progress_deadline_seconds.map(secs),
            scheduling_timeout: secs(p.scheduling_timeout_seconds),
            suspend: spec.suspend,
            resume: spec.resume == crate::api::training::Resume::Latest,
        }
    }
}

/// A worker of the current attempt, as its pod (or unit) shows it.
#[derive(Clone, Debug, PartialEq)]
pub enum Worker {
    /// Not placed on a node yet.
    Unplaced,
    /// Placed; its process is starting or running.
    Running,
    Succeeded,
    /// Exited non-zero (`code`), or was evicted or lost (`None`); `why` says which.
    Failed {
        code: Option<i32>,
        why: String,
    },
}

/// What was seen this time.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The current attempt's workers by index; an index absent here has no pod.
    pub workers: BTreeMap<u32, Worker>,
    /// Pods of earlier attempts still there.
    pub leftovers: usize,
    /// Whether the step read from the progress lines advanced since the last look; None when
    /// they could not be read (then the progress deadline is not judged: a log Nova cannot
    /// read is no evidence of a hang).
    pub progressed: Option<bool>,
}

/// Why the gang changed, as event reasons.
pub mod reason {
    pub const CREATED: &str = "WorkersCreated";
    pub const RESTARTING: &str = "GangRestart";
    pub const UNPLACED: &str = "GangUnschedulable";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "WorkerFailed";
    pub const BACKOFF: &str = "BackoffLimitExceeded";
    pub const DEADLINE: &str = "DeadlineExceeded";
    pub const SUSPENDED: &str = "Suspended";
    pub const EXPIRED: &str = "Expired";
    pub const THERMAL_PAUSE: &str = "ThermalPause";
    pub const THERMAL_RESUME: &str = "ThermalResume";
}

/// What to do now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The status to write (conditions aside).
    pub status: TrainingJobStatus,
    /// Workers of `status.attempt` to create.
    pub create: Vec<u32>,
    /// Stop every worker of every attempt.
    pub stop_all: bool,
    /// Stop the workers of earlier attempts.
    pub stop_leftovers: bool,
    /// Look again after this long (a deadline or backoff ahead).
    pub recheck: Option<SignedDuration>,
    /// An event: (warning?, reason, note).
    pub event: Option<(bool, &'static str, String)>,
    /// The condition's reason and message.
    pub reason: &'static str,
    pub message: String,
}

/// Exit codes 1–127 are the trainer's own verdict (a bug, bad input): retrying cannot help.
/// 128 and above are signals (137: killed, OOM) and are retried — Kubeflow's ExitCode policy.
pub fn permanent(code: i32) -> bool {
    (1..=127).contains(&code)
}

fn until(t: &Option<Time>, d: SignedDuration, now: Timestamp) -> Option<SignedDuration> {
    let at = t.as_ref()?.0.checked_add(d).ok()?;
    Some(at.duration_since(now))
}

/// Wait after the n-th failed placement: 10 s doubling, at most 5 minutes.
fn placement_backoff(n: i32) -> SignedDuration {
    SignedDuration::from_secs((10i64 << n.clamp(0, 5).saturating_sub(1)).min(300))
}

pub fn decide(p: &Policy, old: &TrainingJobStatus, seen: &Observed, now: Timestamp) -> Plan {
    let mut plan = Plan { status: old.clone(), ..Plan::default() };
    if matches!(old.phase, Some(TrainingPhase::Succeeded | TrainingPhase::Failed)) {
        return finished(p, plan, seen, now);
    }
    if p.suspend {
        plan.status.phase = Some(TrainingPhase::Suspended);
        plan.status.attempt_start_time = None;
        plan.stop_all = !seen.workers.is_empty() || seen.leftovers > 0;
        plan.reason = reason::SUSPENDED;
        plan.message =
            "spec.suspend is true: no workers run; set it to false to resume from the newest checkpoint"
                .into();
        if old.phase != Some(TrainingPhase::Suspended) {
            plan.event = Some((false, reason::SUSPENDED, "all workers stopped".into()));
        }
        return plan;
    }
    if let Some(left) = p.active_deadline.and_then(|d| until(&old.start_time, d, now)) {
        if left <= SignedDuration::ZERO {
            let secs = p.active_deadline.map_or(0, |d| d.as_secs());
            return fail(
                plan,
                reason::DEADLINE,
                format!("spec.runPolicy.activeDeadlineSeconds ({secs}) passed"),
                now,
            );
        }
        plan.recheck_within(left);
    }
    if old.phase == Some(TrainingPhase::Paused) && old.attempt_start_time.is_none() {
        return stopped_for_heat(plan, seen);
    }
    if seen.leftovers > 0 {
        // A gang restarts only once every worker of the last attempt is gone.
        plan.stop_leftovers = true;
        plan.reason = reason::RESTARTING;
        plan.message = format!("waiting for {} worker(s) of the previous attempt to stop", seen.leftovers);
        return plan;
    }
    if old.attempt_start_time.is_none() {
        // No gang is live: none yet, or the last one was stopped on purpose.
        return start(p, plan, now);
    }
    judge(p, plan, seen, now)
}

/// Whether worker 0's progress is read in a round of a job in `phase`: while the gang runs,
/// and while it starts too — a short job can finish between two rounds, its last lines still
/// to read.
pub fn reads_progress(phase: Option<TrainingPhase>) -> bool {
    matches!(phase, Some(TrainingPhase::Running | TrainingPhase::Pending))
}

/// Creates a new gang, unless a placement backoff is still running.
fn start(p: &Policy, mut plan: Plan, now: Timestamp) -> Plan {
    let retry = plan.status.retry_after.as_ref().map(|t| t.0.duration_since(now));
    if let Some(wait) = retry.filter(|w| w.is_positive()) {
        plan.recheck_within(wait);
        plan.reason = reason::UNPLACED;
        plan.message = format!("placing the workers again in {}s", wait.as_secs().max(1));
        return plan;
    }
    let st = &mut plan.status;
    st.attempt = Some(st.attempt.unwrap_or(0) + 1);
    st.start_time.get_or_insert(Time(now));
    st.attempt_start_time = Some(Time(now));
    st.last_progress_time = Some(Time(now));
    st.retry_after = None;
    st.phase = Some(TrainingPhase::Pending);
    st.restarts.get_or_insert(0);
    if st.attempt > Some(1) {
        // The new gang goes back to the checkpoint: what it reports from there on is progress.
        st.step = st.last_checkpoint.as_ref().filter(|_| p.resume).map(|c| c.step);
    }
    let attempt = st.attempt.unwrap_or(1);
    plan.create = (0..p.workers).collect();
    plan.recheck_within(p.scheduling_timeout);
    plan.reason = reason::CREATED;
    plan.message = format!("attempt {attempt}: {} worker(s) created", p.workers);
    plan.event = Some((false, reason::CREATED, plan.message.clone()));
    plan
}

/// A gang the thermal guard stopped (pods cannot be frozen): it stays stopped until the guard
/// resumes it ([`resume`]); workers still terminating are stopped again, nothing is created.
fn stopped_for_heat(mut plan: Plan, seen: &Observed) -> Plan {
    plan.stop_all = !seen.workers.is_empty() || seen.leftovers > 0;
    plan.reason = reason::THERMAL_PAUSE;
    plan.message = "stopped by the thermal guard until every GPU it ran on is below \
        spec.thermal.resumeBelowCelsius; it resumes from the newest checkpoint"
        .into();
    plan
}

/// The thermal guard's pause where workers cannot be frozen (pods): the gang stops with its
/// grace period to checkpoint, the phase is Paused, and no restart is counted.
pub fn pause(plan: &mut Plan, msg: String) {
    let st = &mut plan.status;
    st.phase = Some(TrainingPhase::Paused);
    st.attempt_start_time = None;
    plan.stop_all = true;
    plan.create.clear();
    (plan.reason, plan.message) = (reason::THERMAL_PAUSE, msg.clone());
    plan.event = Some((true, reason::THERMAL_PAUSE, msg));
}

/// The guard's resume of a stopped gang: a new attempt from the newest checkpoint, as after a
/// suspension (not a restart: `backoffLimit` is not touched).
pub fn resume(p: &Policy, plan: Plan, msg: String, now: Timestamp) -> Plan {
    let mut plan = start(p, plan, now);
    if !plan.create.is_empty() {
        plan.message = format!("{msg}; {}", plan.message);
        plan.reason = reason::THERMAL_RESUME;
        plan.event = Some((false, reason::THERMAL_RESUME, plan.message.clone()));
    }
    plan
}

/// Judges a gang that exists: failed, incomplete, unplaced, hung, done or running.
fn judge(p: &Policy, mut plan: Plan, seen: &Observed, now: Timestamp) -> Plan {
    let failed = seen.workers.iter().find_map(|(i, w)| match w {
        Worker::Failed { code, why } => Some((*i, *code, why.clone())),
        _ => None,
    });
    if let Some((i, code, why)) = failed {
        if let Some(c) = code.filter(|c| permanent(*c)) {
            let msg = format!("worker {i} exited with {c} ({why}); exit codes 1-127 are not retried");
            return fail(plan, reason::FAILED, msg, now);
        }
        return restart(p, plan, format!("worker {i} failed ({why})"), now);
    }
    let missing: Vec<u32> = (0..p.workers).filter(|i| !seen.workers.contains_key(i)).collect();
    if !missing.is_empty() {
        return restart(p, plan, format!("worker(s) {missing:?} disappeared"), now);
    }
    if seen.workers.values().all(|w| *w == Worker::Succeeded) {
        let st = &mut plan.status;
        st.phase = Some(TrainingPhase::Succeeded);
        st.completion_time = Some(Time(now));
        st.attempt_start_time = None;
        plan.reason = reason::SUCCEEDED;
        plan.message = format!("all {} worker(s) finished", p.workers);
        plan.event = Some((false, reason::SUCCEEDED, plan.message.clone()));
        plan.recheck = p.ttl_after_finished;
        return plan;
    }
    let unplaced = seen.workers.values().filter(|w| **w == Worker::Unplaced).count();
    if unplaced > 0 {
        return unplaced_gang(p, plan, unplaced, now);
    }
    running(p, plan, seen, now)
}

fn unplaced_gang(p: &Policy, mut plan: Plan, unplaced: usize, now: Timestamp) -> Plan {
    let st = &mut plan.status;
    let left = until(&st.attempt_start_time, p.scheduling_timeout, now).unwrap_or_default();
    if left.is_positive() {
        st.phase = Some(TrainingPhase::Pending);
        plan.recheck_within(left);
        plan.reason = reason::CREATED;
        plan.message = format!("{unplaced} of {} worker(s) not placed yet", p.workers);
        return plan;
    }
    let n = st.placement_failures.unwrap_or(0) + 1;
    st.placement_failures = Some(n);
    let wait = placement_backoff(n);
    st.retry_after = now.checked_add(wait).ok().map(Time);
    st.phase = Some(TrainingPhase::Pending);
    st.attempt_start_time = None;
    plan.stop_all = true;
    plan.recheck_within(wait);
    plan.reason = reason::UNPLACED;
    plan.message = format!(
        "{unplaced} of {} worker(s) not placed within spec.runPolicy.schedulingTimeoutSeconds ({}); all removed, placed again in {}s",
        p.workers,
        p.scheduling_timeout.as_secs(),
        wait.as_secs()
    );
    plan.event = Some((true, reason::UNPLACED, plan.message.clone()));
    plan
}

fn running(p: &Policy, mut plan: Plan, seen: &Observed, now: Timestamp) -> Plan {
    let st = &mut plan.status;
    if st.phase != Some(TrainingPhase::Paused) {
        st.phase = Some(TrainingPhase::Running);
    }
    st.placement_failures = None;
    if seen.progressed == Some(true) {
        st.last_progress_time = Some(Time(now));
    }
    if let Some(d) = p.progress_deadline.filter(|_| seen.progressed.is_some()) {
        let left = until(&st.last_progress_time, d, now).unwrap_or_default();
        if !left.is_positive() && st.phase != Some(TrainingPhase::Paused) {
            return restart(
                p,
                plan,
                format!("no progress for spec.runPolicy.progressDeadlineSeconds ({})", d.as_secs()),
                now,
            );
        }
        plan.recheck_within(left);
    }
    plan.reason = "Running";
    plan.message = format!("all {} worker(s) running", p.workers);
    plan
}

/// Stops the gang for a new attempt, or fails the job when the restarts are used up.
fn restart(p: &Policy, mut plan: Plan, why: String, now: Timestamp) -> Plan {
    let restarts = plan.status.restarts.unwrap_or(0);
    if restarts as u32 >= p.backoff_limit {
        let msg = format!("{why}; spec.runPolicy.backoffLimit ({}) restarts used up", p.backoff_limit);
        return fail(plan, reason::BACKOFF, msg, now);
    }
    let st = &mut plan.status;
    st.restarts = Some(restarts + 1);
    st.phase = Some(TrainingPhase::Pending);
    st.attempt_start_time = None;
    plan.stop_all = true;
    plan.recheck_within(SignedDuration::from_secs(1));
    plan.reason = reason::RESTARTING;
    plan.message =
        format!("{why}: all workers restart from the newest checkpoint (restart {})", restarts + 1);
    plan.event = Some((true, reason::RESTARTING, plan.message.clone()));
    plan
}

fn fail(mut plan: Plan, why: &'static str, msg: String, now: Timestamp) -> Plan {
    plan.status.phase = Some(TrainingPhase::Failed);
    plan.status.completion_time = Some(Time(now));
    plan.status.attempt_start_time = None;
    plan.stop_all = true;
    plan.reason = why;
    plan.message = msg.clone();
    plan.event = Some((true, why, msg));
    plan
}

/// A finished job: only the TTL is left to watch; its conditions stay as they were written
/// (an empty reason).
fn finished(p: &Policy, mut plan: Plan, seen: &Observed, now: Timestamp) -> Plan {
    let phase = plan.status.phase;
    let present = !seen.workers.is_empty() || seen.leftovers > 0;
    // A failed job's workers are stopped (a gang without a member cannot go on).
    plan.stop_all =
        phase == Some(TrainingPhase::Failed) && seen.workers.values().any(|w| *w == Worker::Running);
    if let Some(left) = p.ttl_after_finished.and_then(|d| until(&plan.status.completion_time, d, now)) {
        if !left.is_positive() {
            plan.stop_all = present;
            if present {
                plan.event =
                    Some((false, reason::EXPIRED, "ttlSecondsAfterFinished passed: workers removed".into()));
            }
        } else {
            plan.recheck_within(left);
        }
    }
    plan
}

/// Ready while the gang runs, after it succeeded, or suspended; Stalled once it failed;
/// Reconciling while workers are created, placed or restarted. A finished job's conditions stay as written.
pub fn conditions(plan: &Plan) -> Vec<Cond> {
    if plan.reason.is_empty() {
        return Vec::new();
    }
    let (r, m) = (plan.reason, plan.message.clone());
    match plan.status.phase {
        Some(TrainingPhase::Running | TrainingPhase::Succeeded) => {
            vec![Cond::new(CondType::Ready, true, r, m)]
        }
        Some(TrainingPhase::Failed) => {
            vec![Cond::new(CondType::Ready, false, r, m.clone()), Cond::new(CondType::Stalled, true, r, m)]
        }
        // As a suspended Backup: the state the user asked for (kstatus Current, not Failed).
        Some(TrainingPhase::Suspended) => vec![Cond::new(CondType::Ready, true, r, m)],
        _ => vec![Cond::new(CondType::Ready, false, r, m)],
    }
}

impl Plan {
    /// Looks again no later than `d` from now.
    fn recheck_within(&mut self, d: SignedDuration) {
        self.recheck = Some(self.recheck.map_or(d, |r| r.min(d)));
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
