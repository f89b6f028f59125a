//! The TrainingJob controller's own metrics, read by the `training` alert pack and dashboard:
//! steps done, loss, throughput, restarts and phase per job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus::{GaugeVec, IntCounterVec, Registry, opts};

use crate::api::training::{TrainingJobStatus, TrainingPhase};

#[derive(Clone)]
pub struct Training {
    steps: IntCounterVec,
    loss: GaugeVec,
    throughput: GaugeVec,
    restarts: IntCounterVec,
    phase: GaugeVec,
    /// The highest step counted per job: a resumed gang redoes steps it already counted.
    counted: Arc<Mutex<HashMap<(String, String), i64>>>,
}

const PHASES: [(TrainingPhase, &str); 6] = [
    (TrainingPhase::Pending, "Pending"),
    (TrainingPhase::Running, "Running"),
    (TrainingPhase::Paused, "Paused"),
    (TrainingPhase::Suspended, "Suspended"),
    (TrainingPhase::Succeeded, "Succeeded"),
    (TrainingPhase::Failed, "Failed"),
];

impl Training {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let job = ["namespace", "name"];
        let m = Self {
            steps: IntCounterVec::new(
                opts!(
                    "nova_training_steps_total",
                    "Training steps the TrainingJob has reached (redone steps count once)."
                ),
                &job,
            )?,
            loss: GaugeVec::new(
                opts!("nova_training_loss", "Last training loss the TrainingJob reported."),
                &job,
            )?,
            throughput: GaugeVec::new(
                opts!("nova_training_samples_per_second", "Samples per second rank 0 last reported."),
                &job,
            )?,
            restarts: IntCounterVec::new(
                opts!("nova_training_restarts_total", "Gang restarts of the TrainingJob."),
                &job,
            )?,
            phase: GaugeVec::new(
                opts!("nova_training_phase", "1 for the TrainingJob's current phase, 0 for the others."),
                &["namespace", "name", "phase"],
            )?,
            counted: Arc::default(),
        };
        for c in [&m.steps, &m.restarts] {
            registry.register(Box::new(c.clone()))?;
        }
        for g in [&m.loss, &m.throughput, &m.phase] {
            registry.register(Box::new(g.clone()))?;
        }
        Ok(m)
    }

    /// Sets the series of job `ns/name` from its new status.
    pub fn observe(&self, ns: &str, name: &str, st: &TrainingJobStatus) {
        if let Some(step) = st.step {
            let mut counted = self.counted.lock().unwrap_or_else(|p| p.into_inner());
            let seen = counted.entry((ns.to_owned(), name.to_owned())).or_insert(0);
            if step > *seen {
                self.steps.with_label_values(&[ns, name]).inc_by((step - *seen) as u64);
                *seen = step;
            }
        }
        if let Some(l) = st.loss {
            self.loss.with_label_values(&[ns, name]).set(l);
        }
        if let Some(t) = st.throughput {
            self.throughput.with_label_values(&[ns, name]).set(t);
        }
        for (p, label) in PHASES {
            let on = st.phase == Some(p);
            self.phase.with_label_values(&[ns, name, label]).set(f64::from(u8::from(on)));
        }
    }

    pub fn restarted(&self, ns: &str, name: &str) {
        self.restarts.with_label_values(&[ns, name]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_redone_after_a_resume_count_once() {
        let r = Registry::new();
        let m = Training::register(&r).unwrap();
        let st = |step| TrainingJobStatus {
            step: Some(step),
            phase: Some(TrainingPhase::Running),
            ..Default::default()
        };
        for step in [100, 450, 300, 500] {
            m.observe("ml", "j", &st(step));
        }
        assert_eq!(m.steps.with_label_values(&["ml", "j"]).get(), 500);
        assert_eq!(m.phase.with_label_values(&["ml", "j", "Running"]).get(), 1.0);
        assert_eq!(m.phase.with_label_values(&["ml", "j", "Failed"]).get(), 0.0);
    }
}
