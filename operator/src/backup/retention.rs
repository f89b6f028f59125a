//! GFS retention as a pure function: which artifacts a Backup keeps, and why.
//!
//! Buckets count the periods that *have* an artifact (as restic's `forget --keep-daily` does),
//! not calendar periods: ten days of failed runs do not expire ten days of good backups
//! (velero #9061's TTL did). On top of the rules, two floors no rule can lower: the newest
//! artifact is always kept, and so are the newest `minVerified` verified ones.

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;

use crate::api::backup::Retention;

/// What retention sees of an artifact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub id: String,
    pub time: DateTime<Utc>,
    pub verified: bool,
}

/// Why an artifact is kept (the first rule that keeps it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Newest,
    Last,
    Daily,
    Weekly,
    Monthly,
    Yearly,
    MinVerified,
}

/// The decision: kept with a reason, or deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub keep: Vec<(String, Reason)>,
    pub delete: Vec<String>,
}

/// Decides retention over `items` in any order; buckets are days, ISO weeks, months and years
/// in `tz` (the schedule's time zone).
pub fn plan(items: &[Item], r: &Retention, tz: Tz) -> Plan {
    let mut sorted: Vec<&Item> = items.iter().collect();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    let mut reason: Vec<Option<Reason>> = vec![None; sorted.len()];
    if !sorted.is_empty() {
        reason[0] = Some(Reason::Newest);
    }
    let n = |v: i32| usize::try_from(v).unwrap_or(0);
    for slot in reason.iter_mut().take(n(r.keep_last)) {
        slot.get_or_insert(Reason::Last);
    }
    type Bucket = fn(&DateTime<Tz>) -> (i32, u32);
    let rules: [(usize, Bucket, Reason); 4] = [
        (n(r.keep_daily), |t| (t.year(), t.ordinal()), Reason::Daily),
        (n(r.keep_weekly), |t| (t.iso_week().year(), t.iso_week().week()), Reason::Weekly),
        (n(r.keep_monthly), |t| (t.year(), t.month()), Reason::Monthly),
        (n(r.keep_yearly), |t| (t.year(), 0), Reason::Yearly),
    ];
    for (count, bucket, why) in rules {
        let mut last = None;
        let mut taken = 0;
        for (i, it) in sorted.iter().enumerate() {
            if taken == count {
                break;
            }
            let b = bucket(&it.time.with_timezone(&tz));
            if last != Some(b) {
                last = Some(b);
                taken += 1;
                reason[i].get_or_insert(why);
            }
        }
    }
    let verified = sorted.iter().enumerate().filter(|(_, it)| it.verified);
    for (i, _) in verified.take(n(r.min_verified)) {
        reason[i].get_or_insert(Reason::MinVerified);
    }
    let mut out = Plan::default();
    for (it, why) in sorted.iter().zip(reason) {
        match why {
            Some(w) => out.keep.push((it.id.clone(), w)),
            None => out.delete.push(it.id.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn at(day: i64, hour: i64, verified: bool) -> Item {
        let t =
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::days(day) + Duration::hours(hour);
        Item { id: t.format("%Y%m%dT%H%M%SZ").to_string(), time: t, verified }
    }

    fn ret(last: i32, d: i32, w: i32, m: i32, y: i32, mv: i32) -> Retention {
        Retention {
            keep_last: last,
            keep_daily: d,
            keep_weekly: w,
            keep_monthly: m,
            keep_yearly: y,
            min_verified: mv,
        }
    }

    fn kept(p: &Plan) -> Vec<&str> {
        p.keep.iter().map(|(id, _)| id.as_str()).collect()
    }

    #[test]
    fn table() {
        let hourly: Vec<Item> = (0..72).map(|h| at(0, h, false)).collect();
        // (items, rule, kept count)
        let cases: Vec<(&str, Vec<Item>, Retention, usize)> = vec![
            ("empty", vec![], ret(7, 0, 0, 0, 0, 1), 0),
            ("keepLast 7 of 72", hourly.clone(), ret(7, 0, 0, 0, 0, 0), 7),
            ("keepLast 0 still keeps the newest", hourly.clone(), ret(0, 0, 0, 0, 0, 0), 1),
            ("3 daily over 3 days of hourlies", hourly.clone(), ret(0, 3, 0, 0, 0, 0), 3),
            ("last 2 and 3 daily overlap on the newest", hourly.clone(), ret(2, 3, 0, 0, 0, 0), 4),
            ("weekly 1", hourly.clone(), ret(0, 0, 1, 0, 0, 0), 1),
        ];
        for (name, items, r, want) in cases {
            let p = plan(&items, &r, Tz::UTC);
            assert_eq!(p.keep.len(), want, "{name}: {:?}", p.keep);
            assert_eq!(p.keep.len() + p.delete.len(), items.len(), "{name}");
        }
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day_and_counts_days_that_have_backups() {
        // Days 0..10 have backups at 01:00 and 13:00, days 10..20 failed, day 20 has one.
        let mut items: Vec<Item> = (0..10).flat_map(|d| [at(d, 1, false), at(d, 13, false)]).collect();
        items.push(at(20, 1, false));
        let p = plan(&items, &ret(0, 3, 0, 0, 0, 0), Tz::UTC);
        assert_eq!(kept(&p), vec![at(20, 1, false).id, at(9, 13, false).id, at(8, 13, false).id]);
    }

    #[test]
    fn min_verified_protects_old_verified_artifacts() {
        let mut items: Vec<Item> = (0..30).map(|d| at(d, 0, false)).collect();
        items[2].verified = true;
        items[5].verified = true;
        let p = plan(&items, &ret(3, 0, 0, 0, 0, 2), Tz::UTC);
        let k = kept(&p);
        assert!(k.contains(&items[2].id.as_str()) && k.contains(&items[5].id.as_str()), "{k:?}");
        assert_eq!(p.keep.len(), 5);
    }

    #[test]
    fn buckets_follow_the_time_zone() {
        // 14:00, 16:00 and 20:00 UTC on Jan 1 are one UTC day, but 23:00 on Jan 1 and 01:00
        // and 05:00 on Jan 2 in Tokyo (UTC+9): two days there.
        let item = |id: &str, h| Item {
            id: id.into(),
            time: Utc.with_ymd_and_hms(2026, 1, 1, h, 0, 0).unwrap(),
            verified: false,
        };
        let items = [item("a", 14), item("b", 16), item("c", 20)];
        assert_eq!(kept(&plan(&items, &ret(0, 5, 0, 0, 0, 0), Tz::UTC)), vec!["c"]);
        assert_eq!(kept(&plan(&items, &ret(0, 5, 0, 0, 0, 0), Tz::Asia__Tokyo)), vec!["c", "a"]);
    }

    /// A simulated year of daily runs where runs fail at random and verification succeeds only
    /// sometimes: retention applied after every run never leaves fewer than `minVerified`
    /// verified artifacts (when that many were ever made) and never deletes the newest one.
    #[test]
    fn a_year_with_failures_never_drops_below_min_verified() {
        let r = ret(3, 7, 4, 6, 1, 2);
        let mut seed: u64 = 0x9e3779b97f4a7c15;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % 100
        };
        let mut stored: Vec<Item> = Vec::new();
        let mut verified_ever = 0;
        for day in 0..365 {
            // Long outages: runs fail on 40 % of days, and for the whole of days 100..160.
            if (100..160).contains(&day) || rand() < 40 {
                continue;
            }
            let verified = rand() < 30;
            verified_ever += usize::from(verified);
            let newest = at(day, 2, verified);
            stored.push(newest.clone());
            let p = plan(&stored, &r, Tz::UTC);
            stored.retain(|it| !p.delete.contains(&it.id));
            let now_verified = stored.iter().filter(|it| it.verified).count();
            assert!(now_verified >= verified_ever.min(2), "day {day}: {now_verified} verified left");
            assert!(stored.contains(&newest), "day {day}: the newest artifact was deleted");
            assert!(stored.len() <= 3 + 7 + 4 + 6 + 1 + 2 + 1, "day {day}: {} kept", stored.len());
        }
    }
}
