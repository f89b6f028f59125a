//! Metrics and logs: the registry every component registers its own families in (the kit's
//! reconcile metrics here; a controller's own in its small context, see `context::Own`), and
//! what `/metrics` serves.

use prometheus::{Registry, TextEncoder};

use crate::kit::ReconcileMetrics;

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Every controller's reconciles, failures, blocks and durations (the kit's).
    pub reconcile: ReconcileMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        // Registering fresh families in a fresh registry fails only on a duplicate name: a bug
        // caught by every test that starts an operator.
        let reconcile = ReconcileMetrics::register(&registry).expect("reconcile metrics register once");
        // process_cpu_seconds_total, process_resident_memory_bytes, open file descriptors: the
        // operator dashboard's resource panels. Only Linux has them; elsewhere there are none.
        let _ = registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        Self { registry, reconcile }
    }

    pub fn render(&self) -> String {
        TextEncoder::new().encode_to_string(&self.registry.gather()).unwrap_or_default()
    }
}

/// JSON logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init();
}
