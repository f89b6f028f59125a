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
