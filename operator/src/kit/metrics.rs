//! The metrics every controller has, labelled by kind. Metrics of one kind only (blue-green
//! switches, certificate expiry) are defined and registered by the controller that owns them.

use std::time::Duration;

use prometheus::{HistogramVec, IntCounterVec, Registry, histogram_opts, opts};

use super::error::Category;

#[derive(Clone)]
pub struct ReconcileMetrics {
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    blocked: IntCounterVec,
    duration: HistogramVec,
}

impl ReconcileMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            reconciles: IntCounterVec::new(
                opts!("nova_reconcile_total", "Reconciles run, by kind."),
                &["kind"],
            )?,
            errors: IntCounterVec::new(
                opts!("nova_reconcile_errors_total", "Failed reconciles, by kind and error category."),
                &["kind", "category"],
            )?,
            blocked: IntCounterVec::new(
                opts!(
                    "nova_reconcile_blocked_total",
                    "Reconciles that could not progress until the user changes something (a missing \
                     Secret, a refused spec), by kind and condition reason."
                ),
                &["kind", "reason"],
            )?,
            duration: HistogramVec::new(
                histogram_opts!(
                    "nova_reconcile_duration_seconds",
                    "Time one reconcile took, by kind.",
                    vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
                ),
                &["kind"],
            )?,
        };
        registry.register(Box::new(m.reconciles.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.blocked.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        Ok(m)
    }

    pub fn reconciled(&self, kind: &str, took: Duration) {
        self.reconciles.with_label_values(&[kind]).inc();
        self.duration.with_label_values(&[kind]).observe(took.as_secs_f64());
    }

    pub fn failed(&self, kind: &str, category: Category) {
        self.errors.with_label_values(&[kind, category.as_str()]).inc();
    }

    pub fn blocked(&self, kind: &str, reason: &str) {
        self.blocked.with_label_values(&[kind, reason]).inc();
    }
}
