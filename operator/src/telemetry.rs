//! Metrics and logs. Each controller defines and registers its own metric families; this is
//! the registry they share and what `/metrics` serves.

use prometheus::{Registry, TextEncoder};

use crate::kit::ReconcileMetrics;

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Every controller's reconciles, failures, blocks and durations (the kit's).
    pub reconcile: ReconcileMetrics,
    pub bluegreen: crate::bluegreen::metrics::Switches,
    pub certs: crate::certs::metrics::Certificates,
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
        let bluegreen = crate::bluegreen::metrics::Switches::register(&registry)
            .expect("blue-green metrics register once");
        let certs = crate::certs::metrics::Certificates::register(&registry)
            .expect("certificate metrics register once");
        Self { registry, reconcile, bluegreen, certs }
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
