//! When a Backup runs, as a pure function of the time: cron with a time zone (croner), and the
//! CronJob rules users know — a slot missed while Nova was down runs once on start (only the
//! newest missed slot, never a burst), unless it is older than `startingDeadlineSeconds`.

use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use croner::Cron;

/// A parsed schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
}

/// What the controller does now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Run for `slot` (the scheduled time; recorded as status.lastScheduleTime).
    Run {
        slot: DateTime<Utc>,
    },
    /// A slot was missed by more than the starting deadline: recorded as skipped, not run.
    Skip {
        slot: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    },
    /// Nothing due before `next`.
    Wait {
        next: Option<DateTime<Utc>>,
    },
    Suspended,
}

impl Schedule {
    /// Parses `spec.schedule` in `spec.timeZone` (UTC when absent); errors name the field.
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Self, String> {
        let tz_name = tz.unwrap_or("UTC");
        let tz = Tz::from_str(tz_name).map_err(|_| {
            format!("spec.timeZone: {tz_name:?} is not an IANA time zone such as Europe/Berlin")
        })?;
        let cron = Cron::from_str(expr.trim()).map_err(|e| {
            format!("spec.schedule: {expr:?} is not a cron schedule ({e}); expected five fields such as \"0 3 * * *\" or @daily")
        })?;
        Ok(Self { cron, tz })
    }

    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let t = whole(t).with_timezone(&self.tz);
        self.cron.find_next_occurrence(&t, false).ok().map(|d| whole(d.to_utc()))
    }

    /// The newest slot at or before `t`.
    pub fn latest_until(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let t = whole(t).with_timezone(&self.tz);
        self.cron.find_previous_occurrence(&t, true).ok().map(|d| whole(d.to_utc()))
    }
}

/// Whole seconds: croner carries the sub-second part of the time it is given into the slot it
/// returns, and status keeps whole seconds, so a slot of 03:00:00.8 would be newer than the
/// claimed 03:00:00 and run again (it did, every second, before this).
fn whole(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// Decides at `now`, given the slot last run (or skipped), when the Backup was created, whether
/// it is suspended and its starting deadline.
pub fn decide(
    s: &Schedule,
    now: DateTime<Utc>,
    last_slot: Option<DateTime<Utc>>,
    created: DateTime<Utc>,
    suspend: bool,
    deadline: Option<Duration>,
) -> Decision {
    if suspend {
        return Decision::Suspended;
    }
    let since = last_slot.unwrap_or(created);
    match s.latest_until(now) {
        Some(slot) if slot > since => {
            if deadline.is_some_and(|d| now - slot > d) {
                Decision::Skip { slot, next: s.next_after(now) }
            } else {
                Decision::Run { slot }
            }
        }
        _ => Decision::Wait { next: s.next_after(now) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap()
    }

    #[test]
    fn table() {
        let daily3 = Schedule::parse("0 3 * * *", None).unwrap();
        let created = t(1, 0, 0);
        let cases = [
            // (now, last slot, suspend, deadline, decision)
            (
                "before the first slot",
                t(1, 2, 0),
                None,
                false,
                None,
                Decision::Wait { next: Some(t(1, 3, 0)) },
            ),
            ("at the first slot", t(1, 3, 0), None, false, None, Decision::Run { slot: t(1, 3, 0) }),
            (
                "after it ran",
                t(1, 3, 5),
                Some(t(1, 3, 0)),
                false,
                None,
                Decision::Wait { next: Some(t(2, 3, 0)) },
            ),
            // Down for three days: one run, for the newest missed slot.
            ("missed three", t(4, 9, 0), Some(t(1, 3, 0)), false, None, Decision::Run { slot: t(4, 3, 0) }),
            (
                "missed past the deadline",
                t(4, 9, 0),
                Some(t(1, 3, 0)),
                false,
                Some(Duration::hours(1)),
                Decision::Skip { slot: t(4, 3, 0), next: Some(t(5, 3, 0)) },
            ),
            (
                "within the deadline",
                t(4, 3, 30),
                Some(t(3, 3, 0)),
                false,
                Some(Duration::hours(1)),
                Decision::Run { slot: t(4, 3, 0) },
            ),
            ("suspended", t(4, 9, 0), Some(t(1, 3, 0)), true, None, Decision::Suspended),
        ];
        for (name, now, last, suspend, deadline, want) in cases {
            assert_eq!(decide(&daily3, now, last, created, suspend, deadline), want, "{name}");
        }
    }

    /// Long after the day's slot, the newest slot is still that one (a slot must not move
    /// with the clock, or it would run again and again).
    #[test]
    fn the_newest_slot_stays_put_through_the_day() {
        let daily3 = Schedule::parse("0 3 * * *", None).unwrap();
        for (h, m) in [(3, 0), (3, 1), (13, 22), (23, 59)] {
            let now = t(29, h, m) + Duration::milliseconds(17_845);
            assert_eq!(daily3.latest_until(now), Some(t(29, 3, 0)), "{h}:{m}");
            assert_eq!(daily3.next_after(now), Some(t(30, 3, 0)), "{h}:{m}");
            let claimed = Some(t(29, 3, 0));
            assert_eq!(
                decide(&daily3, now, claimed, t(1, 0, 0), false, None),
                Decision::Wait { next: Some(t(30, 3, 0)) }
            );
        }
    }

    #[test]
    fn time_zones_and_errors() {
        // 03:00 in Tokyo is 18:00 UTC the day before.
        let tokyo = Schedule::parse("0 3 * * *", Some("Asia/Tokyo")).unwrap();
        assert_eq!(tokyo.next_after(t(1, 12, 0)), Some(t(1, 18, 0)));
        assert!(Schedule::parse("@hourly", None).is_ok());
        let e = Schedule::parse("0 3 * *", None).unwrap_err();
        assert!(e.starts_with("spec.schedule: "), "{e}");
        let e = Schedule::parse("0 3 * * *", Some("Mars/Olympus")).unwrap_err();
        assert!(e.starts_with("spec.timeZone: "), "{e}");
    }
}
