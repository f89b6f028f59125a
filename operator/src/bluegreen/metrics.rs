//! The blue-green controller's own metrics.

use std::time::Duration;

use prometheus::{GaugeVec, HistogramVec, Registry, histogram_opts, opts};

use crate::api::bluegreen::Phase;

#[derive(Clone)]
pub struct Switches {
    switches: HistogramVec,
    degraded: GaugeVec,
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
        // What a BlueGreenDeployment's generated alert reads (see `alertgen`).
        let degraded = GaugeVec::new(
            opts!("nova_bluegreen_degraded", "1 while the BlueGreenDeployment's phase is Degraded, else 0."),
            &["namespace", "name"],
        )?;
        registry.register(Box::new(degraded.clone()))?;
        Ok(Self { switches, degraded })
    }

    /// Records the phase just written to the status.
    pub fn phase(&self, namespace: &str, name: &str, phase: Phase) {
        let v = if phase == Phase::Degraded { 1.0 } else { 0.0 };
        self.degraded.with_label_values(&[namespace, name]).set(v);
    }

    pub fn switched(&self, rollback: bool, took: Duration) {
        let kind = if rollback { "rollback" } else { "promote" };
        self.switches.with_label_values(&[kind]).observe(took.as_secs_f64());
    }
}
