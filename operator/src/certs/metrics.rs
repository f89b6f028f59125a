//! The certificate controller's own metrics: expiry and renewal gauges, ACME orders.

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use prometheus::core::Collector;
use prometheus::{GaugeVec, HistogramVec, IntCounterVec, Registry, histogram_opts, opts};

#[derive(Clone)]
pub struct Certificates {
    expiry: GaugeVec,
    renewal: GaugeVec,
    issuances: IntCounterVec,
    issuance_seconds: HistogramVec,
}

impl Certificates {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            expiry: GaugeVec::new(
                opts!(
                    "nova_certificate_expiration_timestamp_seconds",
                    "When the certificate expires (notAfter), Unix time."
                ),
                &["namespace", "name"],
            )?,
            renewal: GaugeVec::new(
                opts!(
                    "nova_certificate_renewal_timestamp_seconds",
                    "When Nova will renew the certificate, Unix time."
                ),
                &["namespace", "name"],
            )?,
            issuances: IntCounterVec::new(
                opts!("nova_acme_issuances_total", "ACME orders run, by outcome (issued or failed)."),
                &["outcome"],
            )?,
            issuance_seconds: HistogramVec::new(
                histogram_opts!(
                    "nova_acme_issuance_duration_seconds",
                    "Time one ACME order took, from new order to chain, by outcome.",
                    vec![0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]
                ),
                &["outcome"],
            )?,
        };
        registry.register(Box::new(m.expiry.clone()))?;
        registry.register(Box::new(m.renewal.clone()))?;
        registry.register(Box::new(m.issuances.clone()))?;
        registry.register(Box::new(m.issuance_seconds.clone()))?;
        Ok(m)
    }

    pub fn certificate(&self, namespace: &str, name: &str, not_after: Timestamp, renewal: Option<Timestamp>) {
        self.expiry.with_label_values(&[namespace, name]).set(not_after.as_second() as f64);
        if let Some(r) = renewal {
            self.renewal.with_label_values(&[namespace, name]).set(r.as_second() as f64);
        }
    }

    /// Forgets the series of certificates not in `live` (namespace, name): a deleted
    /// certificate must not keep an expiry alert going.
    pub fn keep_certificates(&self, live: &HashSet<(String, String)>) {
        for gauge in [&self.expiry, &self.renewal] {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::TextEncoder;

    #[test]
    fn only_live_certificates_keep_their_gauges() {
        let registry = Registry::new();
        let m = Certificates::register(&registry).unwrap();
        let t = Timestamp::from_second(2_000_000_000).unwrap();
        m.certificate("a", "kept", t, Some(t));
        m.certificate("a", "gone", t, Some(t));
        m.certificate("b", "kept", t, None);
        m.keep_certificates(&HashSet::from([("a".to_owned(), "kept".to_owned())]));
        let text = TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
        assert!(text.contains(r#"nova_certificate_expiration_timestamp_seconds{name="kept",namespace="a"}"#));
        assert!(text.contains(r#"nova_certificate_renewal_timestamp_seconds{name="kept",namespace="a"}"#));
        assert!(!text.contains(r#"name="gone""#), "{text}");
        assert!(!text.contains(r#"namespace="b""#), "{text}");
    }
}
