//! Per-object exponential backoff for failed reconciles. kube-runtime requeues exactly when
//! `error_policy` says; without this, a 403 or 422 would be retried every few seconds forever.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The wait after the `failures`-th failure in a row: `base` doubled each time, at most `cap`.
pub fn delay(failures: u32, base: Duration, cap: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    base.saturating_mul(1u32 << doublings).min(cap)
}

/// Failures in a row per object (kind/namespace/name); reset by a success.
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap, failures: Mutex::new(HashMap::new()) }
    }

    /// Counts one more failure of `key`; returns how long to wait before the next try.
    pub fn failed(&self, key: &str) -> Duration {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        delay(*n, self.base, self.cap)
    }

    /// A success: the next failure starts from `base` again.
    pub fn succeeded(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    pub fn failures(&self, key: &str) -> u32 {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).get(key).copied().unwrap_or(0)
    }
}

impl Default for Backoff {
    /// 5 s doubling to 5 min: a transient API error is retried soon, a lasting one rarely.
    fn default() -> Self {
        Self::new(Duration::from_secs(5), Duration::from_secs(300))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_per_failure_caps_and_resets_on_success() {
        let b = Backoff::new(Duration::from_secs(5), Duration::from_secs(60));
        let waits: Vec<u64> = (0..6).map(|_| b.failed("Platform/a/x").as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
        assert_eq!(b.failed("Platform/a/y").as_secs(), 5, "per object");
        b.succeeded("Platform/a/x");
        assert_eq!(b.failed("Platform/a/x").as_secs(), 5, "reset by a success");
        assert_eq!(delay(u32::MAX, Duration::from_secs(1), Duration::from_secs(9)).as_secs(), 9);
    }
}
