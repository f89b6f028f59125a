//! Recovery objectives as a pure function: the RPO is violated when the newest artifact is
//! older than `rpoSeconds` (data that would be lost), the RTO when the last measured restore
//! (drill) took longer than `rtoSeconds`.

use chrono::{DateTime, Duration, Utc};

use crate::api::backup::Objectives;
use crate::conditions::{Cond, CondType};

/// The verdict: the ObjectivesMet condition, which objectives are violated, and when the RPO
/// will be violated if nothing new arrives (to look again then).
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub cond: Cond,
    pub rpo_violated: bool,
    pub rto_violated: bool,
    pub rpo_deadline: Option<DateTime<Utc>>,
}

pub fn judge(
    o: &Objectives,
    now: DateTime<Utc>,
    newest: Option<DateTime<Utc>>,
    restore_seconds: Option<f64>,
    created: DateTime<Utc>,
) -> Verdict {
    let mut why = Vec::new();
    let mut rpo_deadline = None;
    let mut rpo_violated = false;
    if let Some(rpo) = o.rpo_seconds {
        // Before the first artifact, the clock starts at creation.
        let since = newest.unwrap_or(created);
        let deadline = since + Duration::seconds(rpo);
        rpo_violated = now > deadline;
        if rpo_violated {
            let age = (now - since).num_seconds();
            let what = if newest.is_some() { "the newest artifact is" } else { "no artifact yet, created" };
            why.push(format!("RPO: {what} {age} s old, over spec.objectives.rpoSeconds {rpo}"));
        } else {
            rpo_deadline = Some(deadline);
        }
    }
    let rto_violated =
        matches!((o.rto_seconds, restore_seconds), (Some(rto), Some(took)) if took > rto as f64);
    if rto_violated {
        let (rto, took) = (o.rto_seconds.unwrap_or_default(), restore_seconds.unwrap_or_default());
        why.push(format!(
            "RTO: the last restore drill took {took:.0} s, over spec.objectives.rtoSeconds {rto}"
        ));
    }
    let cond = if why.is_empty() {
        Cond::new(
            CondType::ObjectivesMet,
            true,
            "WithinObjectives",
            "the newest artifact and the last drill are within the objectives",
        )
    } else {
        let reason = if rpo_violated { "RpoViolated" } else { "RtoViolated" };
        Cond::new(CondType::ObjectivesMet, false, reason, why.join("; "))
    };
    Verdict { cond, rpo_violated, rto_violated, rpo_deadline }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn table() {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 0).unwrap();
        let h = |n: i64| t0 + Duration::hours(n);
        let o = Objectives { rpo_seconds: Some(3600), rto_seconds: Some(4 * 3600) };
        let v = judge(&o, h(2), Some(h(1) + Duration::minutes(30)), Some(60.0), t0);
        assert!(v.cond.status && !v.rpo_violated, "{v:?}");
        assert_eq!(v.rpo_deadline, Some(h(2) + Duration::minutes(30)));
        let v = judge(&o, h(3), Some(h(1)), Some(60.0), t0);
        assert!(v.rpo_violated && !v.cond.status && v.cond.message.contains("rpoSeconds 3600"), "{v:?}");
        let v = judge(&o, h(1), Some(h(1)), Some(5.0 * 3600.0), t0);
        assert!(
            v.rto_violated && v.cond.reason == "RtoViolated" && v.cond.message.contains("rtoSeconds"),
            "{v:?}"
        );
        // No artifact yet: the RPO clock runs from creation.
        assert!(judge(&o, h(2), None, None, t0).rpo_violated);
        assert!(!judge(&Objectives::default(), h(100), None, None, t0).rpo_violated);
    }
}
