//! The backup controllers' own metrics, named for alert rules: freshness, verification, size,
//! duration, failures, and restore (drill) duration — the measured recovery time.

use prometheus::{GaugeVec, IntCounterVec, Registry, opts};

#[derive(Clone)]
pub struct Backups {
    /// Nova's binary for Backups scheduled on their Host (`spec.runOn`); this process's own
    /// when None.
    pub host_binary: Option<std::path::PathBuf>,
    /// Nova's image, for the Jobs of Backups of a PersistentVolumeClaim.
    pub image: String,
    last_success: GaugeVec,
    last_verified: GaugeVec,
    size: GaugeVec,
    duration: GaugeVec,
    failures: IntCounterVec,
    restore: GaugeVec,
    objective: GaugeVec,
}

fn gauge(name: &str, help: &str) -> prometheus::Result<GaugeVec> {
    GaugeVec::new(opts!(name, help), &["namespace", "backup"])
}

impl Backups {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            host_binary: None,
            image: crate::training::controller::Settings::default().trainer_image,
            last_success: gauge(
                "nova_backup_last_success_timestamp_seconds",
                "When the newest artifact of the Backup was written, Unix time.",
            )?,
            last_verified: gauge(
                "nova_backup_last_verified_timestamp_seconds",
                "When an artifact of the Backup last passed a restore drill, Unix time.",
            )?,
            size: gauge("nova_backup_size_bytes", "Stored (compressed) size of the newest artifact.")?,
            duration: gauge("nova_backup_duration_seconds", "How long the last backup run took.")?,
            failures: IntCounterVec::new(
                opts!("nova_backup_failures_total", "Backup runs and restore drills that failed, by stage."),
                &["namespace", "backup", "stage"],
            )?,
            restore: gauge(
                "nova_restore_duration_seconds",
                "How long the last restore (or restore drill) of the Backup took: the measured RTO.",
            )?,
            objective: GaugeVec::new(
                opts!(
                    "nova_backup_objective_violated",
                    "1 while the Backup misses its objective (rpo or rto), else 0."
                ),
                &["namespace", "backup", "objective"],
            )?,
        };
        for c in [&m.last_success, &m.last_verified, &m.size, &m.duration, &m.restore, &m.objective] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(m.failures.clone()))?;
        Ok(m)
    }

    pub fn succeeded(&self, ns: &str, b: &str, at: f64, size: u64, seconds: f64) {
        self.last_success.with_label_values(&[ns, b]).set(at);
        self.size.with_label_values(&[ns, b]).set(size as f64);
        self.duration.with_label_values(&[ns, b]).set(seconds);
    }

    pub fn verified(&self, ns: &str, b: &str, at: f64, restore_seconds: f64) {
        self.last_verified.with_label_values(&[ns, b]).set(at);
        self.restore.with_label_values(&[ns, b]).set(restore_seconds);
    }

    pub fn restored(&self, ns: &str, b: &str, seconds: f64) {
        self.restore.with_label_values(&[ns, b]).set(seconds);
    }

    pub fn objectives(&self, ns: &str, b: &str, rpo: bool, rto: bool) {
        self.objective.with_label_values(&[ns, b, "rpo"]).set(f64::from(u8::from(rpo)));
        self.objective.with_label_values(&[ns, b, "rto"]).set(f64::from(u8::from(rto)));
    }

    pub fn failed(&self, ns: &str, b: &str, stage: &'static str) {
        self.failures.with_label_values(&[ns, b, stage]).inc();
    }
}
