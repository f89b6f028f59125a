//! Status conditions with kstatus semantics: one entry per type, `lastTransitionTime` moves
//! only when the status really changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// The condition types Nova writes: kstatus's Ready / Reconciling / Stalled, and the
/// kind-specific ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CondType {
    Ready,
    Reconciling,
    Stalled,
    Progressing,
    Degraded,
    Reachable,
    Bootstrapped,
    Issuing,
    Distributed,
    ObjectivesMet,
    Selected,
    MetricsPresent,
}

impl CondType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Reconciling => "Reconciling",
            Self::Stalled => "Stalled",
            Self::Progressing => "Progressing",
            Self::Degraded => "Degraded",
            Self::Reachable => "Reachable",
            Self::Bootstrapped => "Bootstrapped",
            Self::Issuing => "Issuing",
            Self::Distributed => "Distributed",
            Self::ObjectivesMet => "ObjectivesMet",
            Self::Selected => "Selected",
            Self::MetricsPresent => "MetricsPresent",
        }
    }
}

impl std::fmt::Display for CondType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one condition as a controller computes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    pub type_: CondType,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Cond {
    pub fn new(type_: CondType, status: bool, reason: &'static str, message: impl Into<String>) -> Self {
        Self { type_, status, reason, message: message.into() }
    }
}

fn status_str(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// Merges `wanted` into `existing`, keeping the transition time of conditions whose status did
/// not change. Conditions of other types are kept as they are.
pub fn merge(
    existing: &[Condition],
    wanted: &[Cond],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let mut out: Vec<Condition> =
        existing.iter().filter(|c| !wanted.iter().any(|w| w.type_.as_str() == c.type_)).cloned().collect();
    for w in wanted {
        let prev = existing.iter().find(|c| c.type_ == w.type_.as_str());
        let status = status_str(w.status).to_owned();
        let last_transition_time = match prev {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => Time(now),
        };
        out.push(Condition {
            type_: w.type_.as_str().to_owned(),
            status,
            reason: w.reason.to_owned(),
            message: w.message.clone(),
            observed_generation: generation,
            last_transition_time,
        });
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// Completes what a controller wants with kstatus's two conditions, so Flux, `kubectl wait` and
/// Argo CD read every kind the same way (docs/gitops.md):
/// - `Stalled` True when the kind says `Degraded` True and does not say `Stalled` itself: a
///   failed rollout or a refused step waits for a change from the user, so kstatus reports
///   Failed at once instead of InProgress until a timeout;
/// - `Stalled` True as well when the kind says `Reconciling` False itself (nothing under way)
///   while `Ready` is False: a backup run or a restore that failed stays failed until the next
///   slot or a change;
/// - `Reconciling` True while `Ready` is False and nothing is stalled (work under way), False
///   once Ready or stalled. A controller that says `Reconciling` itself (a backup running) is
///   left as it is, and so is one that says nothing about `Ready`.
pub fn with_kstatus(mut wanted: Vec<Cond>) -> Vec<Cond> {
    let has = |w: &[Cond], t: CondType| w.iter().any(|c| c.type_ == t);
    let find = |w: &[Cond], t: CondType, s: bool| w.iter().find(|c| c.type_ == t && c.status == s).cloned();
    let failed = find(&wanted, CondType::Degraded, true)
        .or_else(|| find(&wanted, CondType::Reconciling, false).and(find(&wanted, CondType::Ready, false)));
    if !has(&wanted, CondType::Stalled)
        && let Some(f) = failed
    {
        wanted.push(Cond::new(CondType::Stalled, true, f.reason, f.message));
    }
    let stalled = wanted.iter().any(|c| c.type_ == CondType::Stalled && c.status);
    if !has(&wanted, CondType::Reconciling)
        && let Some(r) = wanted.iter().find(|c| c.type_ == CondType::Ready)
    {
        let r = r.clone();
        wanted.push(match (r.status, stalled) {
            (false, false) => Cond::new(CondType::Reconciling, true, r.reason, r.message),
            (true, _) => Cond::new(CondType::Reconciling, false, r.reason, "nothing to do"),
            (false, true) => Cond::new(CondType::Reconciling, false, "Stalled", "waiting for a change"),
        });
    }
    wanted
}

/// The condition of `type_` in `conds`, if present, as a bool.
pub fn is_true(conds: &[Condition], type_: &str) -> Option<bool> {
    conds.iter().find(|c| c.type_ == type_).map(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::CondType::{Degraded, Ready};
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let first = merge(&[], &[Cond::new(Ready, false, "Progressing", "starting")], Some(1), at(100));
        assert_eq!(first[0].last_transition_time, Time(at(100)));

        // Same status, new message and generation: time kept, the rest updated.
        let second =
            merge(&first, &[Cond::new(Ready, false, "Progressing", "1 of 2 ready")], Some(2), at(200));
        assert_eq!(second[0].last_transition_time, Time(at(100)));
        assert_eq!(second[0].message, "1 of 2 ready");
        assert_eq!(second[0].observed_generation, Some(2));

        let third = merge(&second, &[Cond::new(Ready, true, "Available", "2 of 2 ready")], Some(2), at(300));
        assert_eq!(third[0].last_transition_time, Time(at(300)));
        assert_eq!(third[0].status, "True");
    }

    fn status_of(conds: &[Cond], t: CondType) -> Option<bool> {
        conds.iter().find(|c| c.type_ == t).map(|c| c.status)
    }

    #[test]
    fn kstatus_conditions_follow_ready_and_degraded() {
        use super::CondType::{Reconciling, Stalled};
        // Work under way: Reconciling True with Ready's words, not stalled.
        let w = with_kstatus(vec![Cond::new(Ready, false, "RollingOut", "1 of 3 ready")]);
        let r = w.iter().find(|c| c.type_ == Reconciling).unwrap();
        assert!(r.status && r.reason == "RollingOut" && r.message == "1 of 3 ready");
        assert_eq!(status_of(&w, Stalled), None);
        // Ready: nothing under way.
        let w = with_kstatus(vec![Cond::new(Ready, true, "Available", "3 of 3")]);
        assert_eq!(status_of(&w, Reconciling), Some(false));
        // Degraded: stalled with the same cause, not reconciling.
        let w = with_kstatus(vec![
            Cond::new(Ready, false, "HealthGateFailed", "GET /healthz answered 500"),
            Cond::new(Degraded, true, "HealthGateFailed", "GET /healthz answered 500"),
        ]);
        let s = w.iter().find(|c| c.type_ == Stalled).unwrap();
        assert!(s.status && s.reason == "HealthGateFailed");
        assert_eq!(status_of(&w, Reconciling), Some(false));
        // Degraded False raises nothing.
        let w = with_kstatus(vec![
            Cond::new(Ready, false, "RollingOut", ""),
            Cond::new(Degraded, false, "R", ""),
        ]);
        assert_eq!(status_of(&w, Stalled), None);
        assert_eq!(status_of(&w, Reconciling), Some(true));
        // Nothing under way and not ready: a failed run, stalled until something changes.
        let w = with_kstatus(vec![
            Cond::new(Ready, false, "BackupFailed", "the run failed"),
            Cond::new(Reconciling, false, "Idle", "no run in progress"),
        ]);
        let s = w.iter().find(|c| c.type_ == Stalled).unwrap();
        assert!(s.status && s.reason == "BackupFailed");
        // What a controller says itself wins; no Ready, no Reconciling.
        let own = vec![Cond::new(Ready, true, "Ok", ""), Cond::new(Reconciling, true, "BackingUp", "")];
        assert_eq!(with_kstatus(own.clone()), own);
        let none = vec![Cond::new(Degraded, false, "Ok", "")];
        assert_eq!(with_kstatus(none.clone()), none);
    }

    #[test]
    fn other_condition_types_are_kept_and_order_is_stable() {
        let a =
            merge(&[], &[Cond::new(Ready, true, "A", ""), Cond::new(Degraded, false, "B", "")], None, at(1));
        let b = merge(&a, &[Cond::new(Ready, true, "A", "")], None, at(2));
        let types: Vec<&str> = b.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Degraded", "Ready"]);
        assert_eq!(a, b, "nothing changed, so the merged list is identical");
    }
}
