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
    /// Per worker (hottest, busiest of its GPUs; memory of all): named after their DCGM twins.
    gpu_temperature: GaugeVec,
    gpu_utilization: GaugeVec,
    gpu_memory: GaugeVec,
    /// The highest step counted per job: a resumed gang redoes steps it already counted.
    counted: Arc<Mutex<HashMap<(String, String), i64>>>,
}

const GPU_LABELS: [&str; 5] = ["namespace", "name", "worker", "gpu", "host"];

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
            gpu_temperature: GaugeVec::new(
                opts!(
                    "nova_training_gpu_temperature_celsius",
                    "Temperature of the hottest GPU of a worker (DCGM_FI_DEV_GPU_TEMP)."
                ),
                &GPU_LABELS,
            )?,
            gpu_utilization: GaugeVec::new(
                opts!(
                    "nova_training_gpu_utilization_ratio",
                    "Utilisation (0-1) of the busiest GPU of a worker (DCGM_FI_DEV_GPU_UTIL / 100)."
                ),
                &GPU_LABELS,
            )?,
            gpu_memory: GaugeVec::new(
                opts!(
                    "nova_training_gpu_memory_used_bytes",
                    "GPU memory a worker's GPUs use (DCGM_FI_DEV_FB_USED in bytes)."
                ),
                &GPU_LABELS,
            )?,
            counted: Arc::default(),
        };
        for c in [&m.steps, &m.restarts] {
            registry.register(Box::new(c.clone()))?;
        }
        for g in [&m.loss, &m.throughput, &m.phase, &m.gpu_temperature, &m.gpu_utilization, &m.gpu_memory] {
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
        for w in &st.workers {
            let worker = w.index.to_string();
            let labels =
                [ns, name, worker.as_str(), w.gpus.as_deref().unwrap_or(""), w.host.as_deref().unwrap_or("")];
            if let Some(t) = w.gpu_temperature_celsius {
                self.gpu_temperature.with_label_values(&labels).set(f64::from(t));
            }
            if let Some(u) = w.gpu_utilization_percent {
                self.gpu_utilization.with_label_values(&labels).set(f64::from(u) / 100.0);
            }
            if let Some(m) = w.gpu_memory_used_mib {
                self.gpu_memory.with_label_values(&labels).set(m as f64 * 1_048_576.0);
            }
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

    #[test]
    fn gpu_readings_become_their_dcgm_twins() {
        let r = Registry::new();
        let m = Training::register(&r).unwrap();
        let w = crate::api::training::WorkerStatus {
            index: 1,
            host: Some("gpu-1".into()),
            gpus: Some("2,3".into()),
            gpu_temperature_celsius: Some(83),
            gpu_utilization_percent: Some(97),
            gpu_memory_used_mib: Some(1024),
        };
        m.observe("ml", "j", &TrainingJobStatus { workers: vec![w], ..Default::default() });
        let l = ["ml", "j", "1", "2,3", "gpu-1"];
        assert_eq!(m.gpu_temperature.with_label_values(&l).get(), 83.0);
        assert_eq!(m.gpu_utilization.with_label_values(&l).get(), 0.97);
        assert_eq!(m.gpu_memory.with_label_values(&l).get(), 1_073_741_824.0);
    }
}
