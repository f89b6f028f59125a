//! Leader fencing: a controller writes only while this process certainly holds the lease. The
//! elector moves the fence forward on each renewal; the fence runs on the monotonic clock, so
//! a process frozen (SIGSTOP, a long GC-like pause, a suspended VM) past it finds it closed
//! when it wakes, before it has learnt from the apiserver that another replica took over.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Fence {
    /// None: no leader election (the CLI, tests): always open.
    until: Option<Arc<Mutex<Instant>>>,
}

impl Fence {
    /// A fence that is always open.
    pub fn open() -> Self {
        Self { until: None }
    }

    /// A fence closed until the first [`renewed`](Self::renewed).
    pub fn closed() -> Self {
        Self { until: Some(Arc::new(Mutex::new(Instant::now()))) }
    }

    /// The lease was taken or renewed by a request sent at `sent`: writes are safe for `safe`
    /// after that (less than the lease duration, so that others wait longer than we write).
    pub fn renewed(&self, sent: Instant, safe: Duration) {
        if let Some(u) = &self.until {
            let mut until = u.lock().unwrap_or_else(|p| p.into_inner());
            *until = (*until).max(sent + safe);
        }
    }

    /// Whether a write now is safe.
    pub fn is_open(&self) -> bool {
        match &self.until {
            None => true,
            Some(u) => Instant::now() < *u.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Closes the fence at once (the lease was lost or given up).
    pub fn close(&self) {
        if let Some(u) = &self.until {
            *u.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        }
    }
}

impl Default for Fence {
    fn default() -> Self {
        Self::open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_only_within_the_safe_time_after_a_renewal() {
        let f = Fence::closed();
        assert!(!f.is_open(), "closed until the lease is held");
        f.renewed(Instant::now(), Duration::from_secs(60));
        assert!(f.is_open());
        let earlier = Instant::now() - Duration::from_secs(120);
        f.renewed(earlier, Duration::from_secs(60));
        assert!(f.is_open(), "an older renewal never moves the fence back");
        f.close();
        assert!(!f.is_open());
        f.renewed(earlier, Duration::from_secs(60));
        assert!(!f.is_open(), "expired by the time it was recorded");
        assert!(Fence::open().is_open());
    }
}
