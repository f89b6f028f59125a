//! The blue-green state machine as a pure function: from the spec, the status and what the
//! cluster shows, the next status, what each colour should run and whether traffic switches.
//!
//! Everything it decides from is in status or in the cluster, so a restarted operator takes the
//! same decision again; every action it asks for is idempotent (an apply of the same object).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::bluegreen::{
    BlueGreenDeploymentSpec, BlueGreenDeploymentStatus, Color, GateStatus, HistoryEntry, Phase,
};
use crate::conditions::{Cond, CondType};

/// One colour's Deployment as the cluster shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ColorLive {
    /// Revision its pod template carries.
    pub revision: Option<String>,
    /// Replicas it is asked for.
    pub replicas: i32,
    /// Replicas available, counted only once the Deployment controller saw the latest spec.
    pub available: i32,
}

/// The result of one check of the gate.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Pass(String),
    Fail(String),
    /// Nothing to judge yet (no ready endpoints, say): counts neither way.
    Inconclusive(String),
}

/// Checks run in this round: the reconcile runs the ones `Plan::gate_due` asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GateRound {
    pub health: Option<Outcome>,
    pub analysis: Option<Outcome>,
}

/// Which checks are due now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateDue {
    pub health: bool,
    pub analysis: bool,
}

impl GateDue {
    pub fn any(self) -> bool {
        self.health || self.analysis
    }
}

/// What a rollout sees of its backup gate's Backup (`spec.strategy.backupGate`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackupView {
    pub exists: bool,
    /// It verifies its artifacts (`spec.verify.restoreTest`).
    pub verifies: bool,
    /// When its newest verified artifact was taken.
    pub newest_verified: Option<Timestamp>,
    /// The run request on it now, and the last one a run answered.
    pub requested: Option<String>,
    pub answered: Option<String>,
    /// Why its last run or drill failed, while its Ready condition says so.
    pub failure: Option<String>,
}

pub struct Input<'a> {
    pub spec: &'a BlueGreenDeploymentSpec,
    /// Revision of the spec's template.
    pub desired: &'a str,
    pub status: &'a BlueGreenDeploymentStatus,
    pub blue: Option<ColorLive>,
    pub green: Option<ColorLive>,
    /// Promotion of the desired revision was requested (`nova rollout promote`).
    pub promote: bool,
    /// An abort of the desired revision was requested (`nova rollout abort`).
    pub abort_requested: bool,
    /// Results of the checks `gate_due` asked for, when they were run.
    pub round: Option<GateRound>,
    /// The backup gate's Backup, when the spec has a gate.
    pub backup: Option<BackupView>,
    pub now: Timestamp,
}

impl Input<'_> {
    fn live(&self, c: Color) -> Option<&ColorLive> {
        match c {
            Color::Blue => self.blue.as_ref(),
            Color::Green => self.green.as_ref(),
        }
    }

    /// `c` runs `revision` with at least `n` replicas available.
    fn available(&self, c: Color, revision: &str, n: i32) -> bool {
        self.live(c).is_some_and(|l| l.revision.as_deref() == Some(revision) && l.available >= n)
    }

    fn abort(&self) -> bool {
        self.spec.abort || self.abort_requested
    }
}

/// Which pod template a colour should run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Template {
    /// The spec's template (the desired revision).
    Spec,
    /// Whatever the colour runs now: an older revision whose template is no longer in the spec.
    Live,
}

/// What one colour's Deployment should be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    pub template: Template,
    pub replicas: i32,
}

/// A change of the colour the active Service selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switch {
    pub from: Color,
    pub to: Color,
    pub revision: String,
    /// True when traffic goes back to the previous colour (abort inside the delay, or undo).
    pub rollback: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub status: BlueGreenDeploymentStatus,
    pub phase: Phase,
    pub conditions: Vec<Cond>,
    pub blue: Option<Want>,
    pub green: Option<Want>,
    pub switch: Option<Switch>,
    /// Checks to run before planning again; nothing else in this plan is to be acted on then.
    pub gate_due: GateDue,
    /// Events worth a user's attention: (warning?, reason, message).
    pub events: Vec<(bool, &'static str, String)>,
    /// Time-based steps ahead (gate interval, promotion delay, scale-down, deadline).
    pub requeue: Option<Duration>,
    /// A run to ask of the backup gate's Backup (the value of its run-requested annotation).
    pub backup_request: Option<String>,
}

impl Plan {
    fn want(&mut self, c: Color, w: Option<Want>) {
        match c {
            Color::Blue => self.blue = w,
            Color::Green => self.green = w,
        }
    }

    fn requeue_at(&mut self, at: Timestamp, now: Timestamp) {
        let wait = at.duration_since(now).max(SignedDuration::from_millis(100));
        let wait = Duration::try_from(wait).unwrap_or(Duration::from_secs(1));
        self.requeue = Some(self.requeue.map_or(wait, |r| r.min(wait)));
    }

    fn set(&mut self, phase: Phase, conditions: Vec<Cond>) {
        self.phase = phase;
        self.conditions = conditions;
    }
}

fn secs(n: i32) -> SignedDuration {
    SignedDuration::from_secs(i64::from(n))
}

fn after(t: &Option<Time>, s: SignedDuration) -> Option<Timestamp> {
    t.as_ref().and_then(|t| t.0.checked_add(s).ok())
}

fn healthy(msg: &str) -> Vec<Cond> {
    vec![
        Cond::new(CondType::Ready, true, "Healthy", msg),
        Cond::new(CondType::Progressing, false, "Complete", msg),
        Cond::new(CondType::Degraded, false, "Healthy", ""),
    ]
}

fn progressing(reason: &'static str, msg: &str) -> Vec<Cond> {
    vec![
        Cond::new(CondType::Ready, false, reason, msg),
        Cond::new(CondType::Progressing, true, reason, msg),
        Cond::new(CondType::Degraded, false, reason, ""),
    ]
}

fn degraded(reason: &'static str, msg: &str) -> Vec<Cond> {
    vec![
        Cond::new(CondType::Ready, false, reason, msg),
        Cond::new(CondType::Progressing, false, reason, msg),
        Cond::new(CondType::Degraded, true, reason, msg),
    ]
}

pub fn plan(input: &Input) -> Plan {
    let mut p = decide(input);
    let keep = usize::try_from(input.spec.revision_history_limit.max(1)).unwrap_or(1);
    p.status.history.truncate(keep);
    p
}

fn decide(input: &Input) -> Plan {
    let spec = input.spec;
    let d = input.desired;
    let now = input.now;
    let mut st = input.status.clone();
    let mut p = Plan {
        status: BlueGreenDeploymentStatus::default(),
        phase: Phase::Progressing,
        conditions: Vec::new(),
        blue: None,
        green: None,
        switch: None,
        gate_due: GateDue::default(),
        events: Vec::new(),
        requeue: None,
        backup_request: None,
    };
    // An aborted revision stays aborted only while the spec still asks for it.
    if st.aborted_revision.as_deref().is_some_and(|a| a != d) {
        st.aborted_revision = None;
    }

    // First deploy: nothing serves traffic yet, so there is nothing to protect with a gate.
    let (active, active_rev) = match (st.active_color, st.active_revision.clone()) {
        (Some(c), Some(r)) => (c, r),
        _ => {
            st.active_color = Some(Color::Blue);
            st.active_revision = Some(d.to_owned());
            st.history =
                vec![HistoryEntry { revision: d.to_owned(), color: Color::Blue, activated_at: Time(now) }];
            p.switch =
                Some(Switch { from: Color::Green, to: Color::Blue, revision: d.to_owned(), rollback: false });
            (Color::Blue, d.to_owned())
        }
    };
    let other = active.other();
    let full = spec.replicas;
    let in_window = after(&st.scale_down_at, SignedDuration::ZERO).is_some_and(|t| t > now);

    // Abort inside the scale-down window: the previous colour still runs, so flip back to it.
    if input.abort()
        && d == active_rev
        && in_window
        && let Some(prev) = st.previous_revision.clone()
        && input.available(other, &prev, full.min(1))
    {
        st.aborted_revision = Some(active_rev.clone());
        switch_to(&mut st, &mut p, other, &prev, true, now);
        st.previous_revision = None;
        st.scale_down_at = None;
        p.want(other, Some(Want { template: Template::Live, replicas: full }));
        p.want(active, Some(Want { template: Template::Live, replicas: 0 }));
        let msg =
            format!("release of revision {active_rev} aborted: traffic is back on revision {prev} ({other})");
        p.events.push((true, "Aborted", msg.clone()));
        p.set(Phase::Aborted, degraded("Aborted", &msg));
        p.status = st;
        return p;
    }

    if d == active_rev {
        steady(input, &mut st, &mut p, active, in_window);
        p.status = st;
        return p;
    }

    // The spec asks for a new revision: it goes to the other colour as a preview.
    if input.abort() || st.aborted_revision.as_deref() == Some(d) {
        let why = if spec.abort && st.aborted_revision.as_deref() != Some(d) {
            "spec.abort is true; set it to false to release again".to_owned()
        } else {
            "change the template to release again".to_owned()
        };
        abort_preview(input, &mut st, &mut p, active, &active_rev, &why);
        p.status = st;
        return p;
    }

    if st.preview_revision.as_deref() != Some(d) || st.preview_color != Some(other) {
        st.preview_revision = Some(d.to_owned());
        st.preview_color = Some(other);
        st.preview_started_at = Some(Time(now));
        st.gate = None;
        p.events.push((false, "PreviewStarted", format!("revision {d} starts as preview on {other}")));
    }
    p.want(active, Some(Want { template: Template::Live, replicas: full }));

    // Undo inside the window: the previous colour still runs the wanted revision at full size.
    if in_window && st.previous_revision.as_deref() == Some(d) && input.available(other, d, full) {
        p.want(other, Some(Want { template: Template::Spec, replicas: full }));
        st.previous_revision = None;
        st.scale_down_at = None;
        switch_to(&mut st, &mut p, other, d, true, now);
        let msg = format!("rolled back to revision {d} on {other}, which was still running");
        p.events.push((false, "RolledBack", msg.clone()));
        p.set(Phase::Healthy, healthy(&msg));
        p.status = st;
        return p;
    }
    // A preview replaces whatever the other colour kept.
    st.previous_revision = None;
    st.scale_down_at = None;

    let preview_size = spec.strategy.preview_replica_count.map_or(full, |n| n.min(full));
    let gate = st.gate.clone().unwrap_or_default();
    let preview_size = if gate.passed_at.is_some() && !gate.failed { full } else { preview_size };
    p.want(other, Some(Want { template: Template::Spec, replicas: preview_size }));

    if gate.failed {
        let msg = format!("revision {d} failed the health gate: {}; traffic stays on {active}", gate.message);
        p.set(Phase::Degraded, degraded("HealthGateFailed", &msg));
        p.status = st;
        return p;
    }

    let deadline = after(&st.preview_started_at, secs(spec.strategy.progress_deadline_seconds));
    let past_deadline = deadline.is_some_and(|t| now >= t);
    if gate.passed_at.is_none() && past_deadline {
        let msg = format!(
            "preview revision {d} did not become healthy within progressDeadlineSeconds ({}s): {}",
            spec.strategy.progress_deadline_seconds,
            if gate.message.is_empty() { "not available" } else { &gate.message }
        );
        if spec.strategy.abort_on_progress_deadline {
            abort_preview(input, &mut st, &mut p, active, &active_rev, &msg);
            p.conditions = degraded("ProgressDeadlineExceeded", &msg);
        } else {
            p.events.push((true, "ProgressDeadlineExceeded", msg.clone()));
            p.set(Phase::Degraded, degraded("ProgressDeadlineExceeded", &msg));
        }
        p.status = st;
        return p;
    }
    if let Some(t) = deadline
        && gate.passed_at.is_none()
    {
        p.requeue_at(t, now);
    }

    if !input.available(other, d, preview_size) {
        let have = input.live(other).filter(|l| l.revision.as_deref() == Some(d)).map_or(0, |l| l.available);
        let msg = format!("preview revision {d} on {other}: {have} of {preview_size} replicas available");
        p.set(Phase::Progressing, progressing("PreviewStarting", &msg));
        p.status = st;
        return p;
    }

    let gate = match run_gate(input, gate, &mut p) {
        Some(g) => g,
        None => {
            // Checks are due: the caller runs them and plans again.
            p.status = st;
            return p;
        }
    };
    st.gate = Some(gate.clone());
    if gate.failed {
        let msg = format!("revision {d} failed the health gate: {}; traffic stays on {active}", gate.message);
        p.events.push((true, "HealthGateFailed", msg.clone()));
        p.set(Phase::Degraded, degraded("HealthGateFailed", &msg));
        p.status = st;
        return p;
    }
    let Some(passed_at) = gate.passed_at else {
        let msg = format!("preview revision {d} is being checked: {}", gate.message);
        p.set(Phase::Progressing, progressing("HealthGate", &msg));
        p.status = st;
        return p;
    };

    // Past the gate the preview grows to full size, ready to carry all traffic when promoted.
    p.want(other, Some(Want { template: Template::Spec, replicas: full }));
    if let Some(g) = &spec.strategy.backup_gate
        && backup::backup_holds(input, g, &st, &mut p)
    {
        p.status = st;
        return p;
    }
    let auto_at = spec
        .strategy
        .auto_promotion_enabled
        .then(|| passed_at.0.checked_add(secs(spec.strategy.auto_promotion_seconds.unwrap_or(0))).ok())
        .flatten();
    let promote_now = input.promote || auto_at.is_some_and(|t| now >= t);
    if !promote_now {
        if let Some(t) = auto_at {
            p.requeue_at(t, now);
            let msg = format!("preview revision {d} passed the health gate; promotion at {t}");
            p.set(Phase::Progressing, progressing("AwaitingPromotion", &msg));
        } else {
            let msg =
                format!("preview revision {d} passed the health gate; waiting for `nova rollout promote`");
            p.set(Phase::Paused, progressing("Paused", &msg));
        }
        p.status = st;
        return p;
    }
    // Traffic moves only to a colour that can carry all of it.
    p.want(other, Some(Want { template: Template::Spec, replicas: full }));
    if !input.available(other, d, full) {
        let msg = format!("scaling preview revision {d} to {full} replicas before the switch");
        p.set(Phase::Progressing, progressing("ScalingPreview", &msg));
        p.status = st;
        return p;
    }
    st.previous_revision = Some(active_rev.clone());
    st.scale_down_at = now.checked_add(secs(spec.strategy.scale_down_delay_seconds)).ok().map(Time);
    switch_to(&mut st, &mut p, other, d, false, now);
    if let Some(t) = after(&st.scale_down_at, SignedDuration::ZERO) {
        p.requeue_at(t, now);
    }
    let msg = format!("revision {d} promoted: {other} takes the traffic, {active} kept until scale-down");
    p.events.push((false, "Promoted", msg.clone()));
    p.set(Phase::Healthy, healthy(&msg));
    p.status = st;
    p
}

/// The active colour runs the desired revision: keep it at full size, hold or retire the other.
fn steady(input: &Input, st: &mut BlueGreenDeploymentStatus, p: &mut Plan, active: Color, in_window: bool) {
    let full = input.spec.replicas;
    let other = active.other();
    st.preview_color = None;
    st.preview_revision = None;
    st.preview_started_at = None;
    st.gate = None;
    p.want(active, Some(Want { template: Template::Spec, replicas: full }));
    if in_window {
        p.want(
            other,
            Some(Want { template: Template::Live, replicas: input.live(other).map_or(0, |l| l.replicas) }),
        );
        if let Some(t) = after(&st.scale_down_at, SignedDuration::ZERO) {
            p.requeue_at(t, input.now);
        }
    } else {
        if input.live(other).is_some_and(|l| l.replicas > 0) {
            p.events.push((false, "ScaledDown", format!("{other} scaled to zero")));
        }
        if input.live(other).is_some() {
            p.want(other, Some(Want { template: Template::Live, replicas: 0 }));
        }
        st.previous_revision = None;
        st.scale_down_at = None;
    }
    let d = input.desired;
    let have = input.live(active).filter(|l| l.revision.as_deref() == Some(d)).map_or(0, |l| l.available);
    let msg = format!("revision {d} on {active}: {have} of {full} replicas available");
    if st.aborted_revision.is_some() && input.abort() {
        // Still aborted: the spec went back, but abort is still set; nothing to do but say so.
        p.set(Phase::Aborted, degraded("Aborted", &format!("{msg}; the last release was aborted")));
    } else if have >= full {
        p.set(Phase::Healthy, healthy(&msg));
    } else {
        p.set(Phase::Progressing, progressing("Scaling", &msg));
    }
}

/// Traffic stays on the active colour; the preview goes to zero and the revision is remembered.
fn abort_preview(
    input: &Input,
    st: &mut BlueGreenDeploymentStatus,
    p: &mut Plan,
    active: Color,
    active_rev: &str,
    why: &str,
) {
    let d = input.desired;
    let other = active.other();
    let first_time = st.aborted_revision.as_deref() != Some(d);
    st.aborted_revision = Some(d.to_owned());
    st.preview_color = None;
    st.preview_revision = None;
    st.preview_started_at = None;
    st.gate = None;
    p.want(active, Some(Want { template: Template::Live, replicas: input.spec.replicas }));
    if input.live(other).is_some() {
        p.want(other, Some(Want { template: Template::Live, replicas: 0 }));
    }
    let msg =
        format!("release of revision {d} aborted; traffic stays on revision {active_rev} ({active}): {why}");
    if first_time {
        p.events.push((true, "Aborted", msg.clone()));
    }
    p.set(Phase::Aborted, degraded("Aborted", &msg));
}

fn switch_to(
    st: &mut BlueGreenDeploymentStatus,
    p: &mut Plan,
    to: Color,
    revision: &str,
    rollback: bool,
    now: Timestamp,
) {
    let from = to.other();
    st.active_color = Some(to);
    st.active_revision = Some(revision.to_owned());
    st.preview_color = None;
    st.preview_revision = None;
    st.preview_started_at = None;
    st.gate = None;
    st.last_switch_time = Some(Time(now));
    st.history.insert(0, HistoryEntry { revision: revision.to_owned(), color: to, activated_at: Time(now) });
    p.switch = Some(Switch { from, to, revision: revision.to_owned(), rollback });
}

/// Counts this round's results into the gate. `None` means checks are due and were not run.
fn run_gate(input: &Input, mut gate: GateStatus, p: &mut Plan) -> Option<GateStatus> {
    if gate.passed_at.is_some() {
        return Some(gate);
    }
    let s = &input.spec.strategy;
    let now = input.now;
    let health_due = s.health_check.as_ref().map(|h| {
        let next = after(&gate.last_check_time, secs(h.interval_seconds));
        (next.is_none_or(|t| now >= t), next)
    });
    let analysis_due = s.analysis.as_ref().map(|a| {
        let next = after(&gate.last_analysis_time, secs(a.interval_seconds));
        (next.is_none_or(|t| now >= t), next)
    });
    let due = GateDue {
        health: health_due.is_some_and(|(due, _)| due),
        analysis: analysis_due.is_some_and(|(due, _)| due) && !analysis_done(input, &gate),
    };
    match &input.round {
        None if due.any() => {
            p.gate_due = due;
            return None;
        }
        None => {}
        Some(round) => {
            if let Some(outcome) = &round.health {
                gate.last_check_time = Some(Time(now));
                match outcome {
                    Outcome::Pass(m) => {
                        gate.successes += 1;
                        gate.failures = 0;
                        gate.message = m.clone();
                    }
                    Outcome::Fail(m) => {
                        gate.failures += 1;
                        gate.successes = 0;
                        gate.message = m.clone();
                    }
                    Outcome::Inconclusive(m) => gate.message = m.clone(),
                }
            }
            if let Some(outcome) = &round.analysis {
                gate.last_analysis_time = Some(Time(now));
                match outcome {
                    Outcome::Pass(m) => {
                        gate.analysis_passes += 1;
                        gate.message = m.clone();
                    }
                    Outcome::Fail(m) | Outcome::Inconclusive(m) => {
                        // Argo Rollouts' default failureLimit of 0: one bad measurement fails.
                        gate.failed = true;
                        gate.message = m.clone();
                    }
                }
            }
        }
    }
    if let Some(h) = &s.health_check
        && gate.failures >= h.failures
    {
        gate.failed = true;
    }
    let health_ok = s.health_check.as_ref().is_none_or(|h| gate.successes >= h.successes);
    if !gate.failed && health_ok && analysis_done(input, &gate) {
        gate.passed_at = Some(Time(now));
        let msg = if gate.message.is_empty() { "available".to_owned() } else { gate.message.clone() };
        p.events.push((false, "HealthGatePassed", format!("revision {} passed: {msg}", input.desired)));
    } else if !gate.failed {
        for next in [health_due, analysis_due].into_iter().flatten().filter_map(|(_, n)| n) {
            p.requeue_at(next, now);
        }
        if input.round.is_some() {
            // The next check follows a full interval after the one just run.
            for interval in [
                s.health_check.as_ref().map(|h| h.interval_seconds),
                s.analysis.as_ref().map(|a| a.interval_seconds),
            ]
            .into_iter()
            .flatten()
            {
                if let Ok(t) = now.checked_add(secs(interval)) {
                    p.requeue_at(t, now);
                }
            }
        }
    }
    Some(gate)
}

fn analysis_done(input: &Input, gate: &GateStatus) -> bool {
    input.spec.strategy.analysis.as_ref().is_none_or(|a| gate.analysis_passes >= a.count)
}

mod backup;
#[cfg(test)]
mod tests;
