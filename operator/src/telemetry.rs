//! Metrics and logs.

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use prometheus::core::Collector;
use prometheus::{GaugeVec, HistogramVec, IntCounterVec, Registry, TextEncoder, histogram_opts, opts};

/// Why a reconcile failed. A small fixed set, so the label stays cheap and alertable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCategory {
    /// The Kubernetes API refused or failed a request (often transient).
    KubeApi,
    /// The spec cannot be acted on as written.
    InvalidSpec,
    /// Something the spec names does not exist yet (a Secret, say).
    MissingDependency,
    /// Nova's own state database failed.
    State,
}

impl ErrorCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KubeApi => "kube_api",
            Self::InvalidSpec => "invalid_spec",
            Self::MissingDependency => "missing_dependency",
            Self::State => "state",
        }
    }
}

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    switches: HistogramVec,
    cert_expiry: GaugeVec,
    cert_renewal: GaugeVec,
    issuances: IntCounterVec,
    issuance_seconds: HistogramVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles =
            IntCounterVec::new(opts!("nova_reconcile_total", "Reconciles run, by kind."), &["kind"]).unwrap();
        let errors = IntCounterVec::new(
            opts!("nova_reconcile_errors_total", "Failed reconciles, by kind and error category."),
            &["kind", "category"],
        )
        .unwrap();
        let duration = HistogramVec::new(
            histogram_opts!(
                "nova_reconcile_duration_seconds",
                "Time one reconcile took, by kind.",
                vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
            ),
            &["kind"],
        )
        .unwrap();
        let switches = HistogramVec::new(
            histogram_opts!(
                "nova_bluegreen_switch_seconds",
                "Time from the start of the reconcile that decided a blue-green switch to the active \
                 Service's selector being patched, by kind (promote or rollback).",
                vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
            ),
            &["kind"],
        )
        .unwrap();
        let cert_expiry = GaugeVec::new(
            opts!(
                "nova_certificate_expiration_timestamp_seconds",
                "When the certificate expires (notAfter), Unix time."
            ),
            &["namespace", "name"],
        )
        .unwrap();
        let cert_renewal = GaugeVec::new(
            opts!(
                "nova_certificate_renewal_timestamp_seconds",
                "When Nova will renew the certificate, Unix time."
            ),
            &["namespace", "name"],
        )
        .unwrap();
        let issuances = IntCounterVec::new(
            opts!("nova_acme_issuances_total", "ACME orders run, by outcome (issued or failed)."),
            &["outcome"],
        )
        .unwrap();
        let issuance_seconds = HistogramVec::new(
            histogram_opts!(
                "nova_acme_issuance_duration_seconds",
                "Time one ACME order took, from new order to chain, by outcome.",
                vec![0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]
            ),
            &["outcome"],
        )
        .unwrap();
        for c in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(switches.clone()),
            Box::new(cert_expiry.clone()),
            Box::new(cert_renewal.clone()),
            Box::new(issuances.clone()),
            Box::new(issuance_seconds.clone()),
        ] {
            registry.register(c).expect("metrics register once");
        }
        Self {
            registry,
            reconciles,
            errors,
            duration,
            switches,
            cert_expiry,
            cert_renewal,
            issuances,
            issuance_seconds,
        }
    }

    pub fn reconciled(&self, kind: &str, took: Duration) {
        self.reconciles.with_label_values(&[kind]).inc();
        self.duration.with_label_values(&[kind]).observe(took.as_secs_f64());
    }

    pub fn failed(&self, kind: &str, category: ErrorCategory) {
        self.errors.with_label_values(&[kind, category.as_str()]).inc();
    }

    pub fn switched(&self, rollback: bool, took: Duration) {
        let kind = if rollback { "rollback" } else { "promote" };
        self.switches.with_label_values(&[kind]).observe(took.as_secs_f64());
    }

    pub fn certificate(&self, namespace: &str, name: &str, not_after: Timestamp, renewal: Option<Timestamp>) {
        self.cert_expiry.with_label_values(&[namespace, name]).set(not_after.as_second() as f64);
        if let Some(r) = renewal {
            self.cert_renewal.with_label_values(&[namespace, name]).set(r.as_second() as f64);
        }
    }

    /// Forgets the series of certificates not in `live` (namespace, name): a deleted
    /// certificate must not keep an expiry alert going.
    pub fn keep_certificates(&self, live: &HashSet<(String, String)>) {
        for gauge in [&self.cert_expiry, &self.cert_renewal] {
            for family in gauge.collect() {
                for m in family.get_metric() {
                    let label =
                        |n: &str| m.get_label().iter().find(|l| l.name() == n).map(|l| l.value().to_owned());
                    let key = (label("namespace").unwrap_or_default(), label("name").unwrap_or_default());
                    if !live.contains(&key) {
                        let _ = gauge.remove_label_values(&[&key.0, &key.1]);
                    }
                }
            }
        }
    }

    pub fn issued(&self, ok: bool, took: Duration) {
        let outcome = if ok { "issued" } else { "failed" };
        self.issuances.with_label_values(&[outcome]).inc();
        self.issuance_seconds.with_label_values(&[outcome]).observe(took.as_secs_f64());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_live_certificates_keep_their_gauges() {
        let m = Metrics::new();
        let t = Timestamp::from_second(2_000_000_000).unwrap();
        m.certificate("a", "kept", t, Some(t));
        m.certificate("a", "gone", t, Some(t));
        m.certificate("b", "kept", t, None);
        m.keep_certificates(&HashSet::from([("a".to_owned(), "kept".to_owned())]));
        let text = m.render();
        assert!(text.contains(r#"nova_certificate_expiration_timestamp_seconds{name="kept",namespace="a"}"#));
        assert!(text.contains(r#"nova_certificate_renewal_timestamp_seconds{name="kept",namespace="a"}"#));
        assert!(!text.contains(r#"name="gone""#), "{text}");
        assert!(!text.contains(r#"namespace="b""#), "{text}");
    }
}
