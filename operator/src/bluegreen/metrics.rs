//! The blue-green controller's own metrics.

use std::time::Duration;

use prometheus::{HistogramVec, Registry, histogram_opts};

#[derive(Clone)]
pub struct Switches {
    switches: HistogramVec,
}

impl Switches {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let switches = HistogramVec::new(
            histogram_opts!(
                "nova_bluegreen_switch_seconds",
                "Time from the start of the reconcile that decided a blue-green switch to the active \
                 Service's selector being patched, by kind (promote or rollback).",
                vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
            ),
            &["kind"],
        )?;
        registry.register(Box::new(switches.clone()))?;
        Ok(Self { switches })
    }

    pub fn switched(&self, rollback: bool, took: Duration) {
        let kind = if rollback { "rollback" } else { "promote" };
        self.switches.with_label_values(&[kind]).observe(took.as_secs_f64());
    }
}
