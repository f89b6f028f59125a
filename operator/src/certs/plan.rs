//! When a certificate must be (re)issued, when it will be renewed, and how long to wait after
//! failures. Pure: the controller feeds it what it read.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::x509::Leaf;
use crate::acme::keys::Shape;
use crate::api::tls::TlsCertificateSpec;

/// The certificate found in the target Secret.
#[derive(Clone, Debug)]
pub struct Current {
    pub leaf: Leaf,
    /// Whether `tls.key` is the leaf's key.
    pub key_matches: bool,
    /// The AcmeIssuer recorded on the Secret when Nova wrote it.
    pub issuer: Option<String>,
}

/// Why a new certificate is needed. The message goes to status and events.
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    Missing,
    Unreadable(String),
    Names { want: Vec<String>, have: Vec<String> },
    Key { want: Shape, have: Option<Shape> },
    KeyMismatch,
    Issuer { want: String, have: Option<String> },
    Due(Timestamp),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Missing => write!(f, "the Secret holds no certificate yet"),
            Reason::Unreadable(e) => write!(f, "the certificate in the Secret does not parse ({e})"),
            Reason::Names { want, have } => {
                write!(
                    f,
                    "spec.dnsNames [{}] differ from the certificate's [{}]",
                    want.join(", "),
                    have.join(", ")
                )
            }
            Reason::Key { want, have } => write!(
                f,
                "spec.privateKey asks for {:?} {} but the certificate has {}",
                want.algorithm,
                want.size,
                have.map(|h| format!("{:?} {}", h.algorithm, h.size))
                    .unwrap_or_else(|| "another key type".into())
            ),
            Reason::KeyMismatch => write!(f, "tls.key is not the certificate's key"),
            Reason::Issuer { want, have } => write!(
                f,
                "spec.issuerRef is {want} but the certificate came from {}",
                have.as_deref().unwrap_or("another issuer")
            ),
            Reason::Due(at) => write!(f, "renewal time {at} reached"),
        }
    }
}

fn name_set(names: &[String]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
    v.sort();
    v.dedup();
    v
}

/// Why the certificate must be issued now, or None while the current one serves.
pub fn reason_to_issue(
    current: Option<&Result<Current, String>>,
    spec: &TlsCertificateSpec,
    renewal: Option<Timestamp>,
    now: Timestamp,
) -> Option<Reason> {
    let cur = match current {
        None => return Some(Reason::Missing),
        Some(Err(e)) => return Some(Reason::Unreadable(e.clone())),
        Some(Ok(c)) => c,
    };
    let (want, have) = (name_set(&spec.dns_names), name_set(&cur.leaf.dns_names));
    if want != have {
        return Some(Reason::Names { want, have });
    }
    let shape = Shape::of(&spec.private_key);
    if cur.leaf.key != Some(shape) {
        return Some(Reason::Key { want: shape, have: cur.leaf.key });
    }
    if !cur.key_matches {
        return Some(Reason::KeyMismatch);
    }
    if cur.issuer.as_deref() != Some(spec.issuer_ref.name.as_str()) {
        return Some(Reason::Issuer { want: spec.issuer_ref.name.clone(), have: cur.issuer.clone() });
    }
    let at = renewal.unwrap_or_else(|| renewal_time(&cur.leaf, spec));
    (now >= at).then_some(Reason::Due(at))
}

/// When to renew: `renewBefore` before expiry, or when `renewBeforePercentage` of the lifetime
/// is left; by default at 2/3 of the lifetime. A renewBefore as long as the lifetime would
/// renew at once, forever: then the default applies (as cert-manager does).
pub fn renewal_time(leaf: &Leaf, spec: &TlsCertificateSpec) -> Timestamp {
    let lifetime = leaf.not_after.duration_since(leaf.not_before);
    let default = leaf.not_before + lifetime * 2 / 3;
    if let Some(d) = spec.renew_before.as_deref().and_then(go_duration) {
        let d = SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
        return if d < lifetime { leaf.not_after - d } else { default };
    }
    if let Some(p) = spec.renew_before_percentage {
        return leaf.not_after - lifetime * p / 100;
    }
    default
}

/// The earlier of the computed renewal time and the ACME server's suggested window (RFC 9773):
/// a point in the window fixed by the serial, so many certificates do not renew at once.
pub fn with_suggested_window(
    at: Timestamp,
    window: Option<(Timestamp, Timestamp)>,
    serial: &str,
) -> Timestamp {
    let Some((start, end)) = window else { return at };
    if end <= start {
        return at.min(start);
    }
    let span = end.duration_since(start).as_secs().max(1);
    let spread = serial.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let offset = SignedDuration::from_secs((spread % span as u64) as i64);
    at.min(start + offset)
}

/// Wait after `attempts` consecutive failures: base, 2×base, 4×base, ... up to cap.
pub fn backoff(attempts: i32, base: Duration, cap: Duration) -> Duration {
    let exp = attempts.clamp(1, 31) as u32 - 1;
    base.checked_mul(2u32.saturating_pow(exp)).unwrap_or(cap).min(cap)
}

/// A Go duration (`720h`, `1h30m`, `90s`, `1.5h`), as the schema admits.
pub fn go_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::tls::{KeyAlgorithm, PrivateKey};

    fn spec(names: &[&str]) -> TlsCertificateSpec {
        serde_json::from_value(serde_json::json!({
            "dnsNames": names, "issuerRef": {"name": "pebble"}, "secretName": "web-tls",
        }))
        .unwrap()
    }

    fn leaf(days: i64) -> Leaf {
        let nb: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        Leaf {
            not_before: nb,
            not_after: nb + SignedDuration::from_hours(24 * days),
            serial: "01".into(),
            dns_names: vec!["b.test".into(), "a.test".into()],
            key: Some(Shape { algorithm: KeyAlgorithm::Ecdsa, size: 256 }),
            spki_der: vec![],
            ari_id: None,
        }
    }

    fn current(days: i64) -> Result<Current, String> {
        Ok(Current { leaf: leaf(days), key_matches: true, issuer: Some("pebble".into()) })
    }

    #[test]
    fn renewal_defaults_to_two_thirds_and_follows_the_spec() {
        let mut s = spec(&["a.test"]);
        assert_eq!(renewal_time(&leaf(90), &s).to_string(), "2026-03-02T00:00:00Z");
        s.renew_before = Some("720h".into());
        assert_eq!(renewal_time(&leaf(90), &s).to_string(), "2026-03-02T00:00:00Z");
        s.renew_before = Some("240h".into());
        assert_eq!(renewal_time(&leaf(90), &s).to_string(), "2026-03-22T00:00:00Z");
        s.renew_before = Some("2400h".into()); // longer than the lifetime: the default
        assert_eq!(renewal_time(&leaf(90), &s).to_string(), "2026-03-02T00:00:00Z");
        s.renew_before = None;
        s.renew_before_percentage = Some(10);
        assert_eq!(renewal_time(&leaf(90), &s).to_string(), "2026-03-23T00:00:00Z");
    }

    #[test]
    fn issues_when_missing_changed_or_due_and_not_otherwise() {
        let s = spec(&["a.test", "B.test"]);
        let t = |x: &str| x.parse::<Timestamp>().unwrap();
        assert_eq!(reason_to_issue(None, &s, None, t("2026-01-02T00:00:00Z")), Some(Reason::Missing));
        let ok = current(90);
        assert_eq!(reason_to_issue(Some(&ok), &s, None, t("2026-03-01T23:59:59Z")), None);
        assert!(matches!(
            reason_to_issue(Some(&ok), &s, None, t("2026-03-02T00:00:00Z")),
            Some(Reason::Due(_))
        ));
        let other = spec(&["a.test"]);
        let r = reason_to_issue(Some(&ok), &other, None, t("2026-01-02T00:00:00Z")).unwrap();
        assert_eq!(r.to_string(), "spec.dnsNames [a.test] differ from the certificate's [a.test, b.test]");
        let mut rsa = spec(&["a.test", "b.test"]);
        rsa.private_key = PrivateKey { algorithm: KeyAlgorithm::Rsa, size: 2048, ..PrivateKey::default() };
        let r = reason_to_issue(Some(&ok), &rsa, None, t("2026-01-02T00:00:00Z")).unwrap();
        assert!(r.to_string().contains("Rsa 2048 but the certificate has Ecdsa 256"), "{r}");
        let mut wrong_key = current(90);
        wrong_key.as_mut().unwrap().key_matches = false;
        assert_eq!(
            reason_to_issue(Some(&wrong_key), &s, None, t("2026-01-02T00:00:00Z")),
            Some(Reason::KeyMismatch)
        );
        let mut moved = spec(&["a.test", "b.test"]);
        moved.issuer_ref.name = "letsencrypt".into();
        assert!(matches!(
            reason_to_issue(Some(&ok), &moved, None, t("2026-01-02T00:00:00Z")),
            Some(Reason::Issuer { .. })
        ));
        let bad = Err("X.509: trailing data".to_owned());
        assert!(matches!(
            reason_to_issue(Some(&bad), &s, None, t("2026-01-02T00:00:00Z")),
            Some(Reason::Unreadable(_))
        ));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (b, c) = (Duration::from_secs(60), Duration::from_secs(3600));
        let got: Vec<u64> = (1..=8).map(|n| backoff(n, b, c).as_secs()).collect();
        assert_eq!(got, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff(1000, b, c), c);
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("720h"), Some(Duration::from_secs(720 * 3600)));
        assert_eq!(go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(go_duration("5d"), None);
        assert_eq!(go_duration(""), None);
    }

    #[test]
    fn a_suggested_window_only_brings_renewal_forward() {
        let t = |x: &str| x.parse::<Timestamp>().unwrap();
        let at = t("2026-03-02T00:00:00Z");
        let window = Some((t("2026-02-01T00:00:00Z"), t("2026-02-03T00:00:00Z")));
        let chosen = with_suggested_window(at, window, "0abc");
        assert!(chosen >= t("2026-02-01T00:00:00Z") && chosen < t("2026-02-03T00:00:00Z"), "{chosen}");
        assert_eq!(with_suggested_window(at, window, "0abc"), chosen, "the same serial, the same point");
        let later = Some((t("2026-04-01T00:00:00Z"), t("2026-04-03T00:00:00Z")));
        assert_eq!(with_suggested_window(at, later, "0abc"), at);
        assert_eq!(with_suggested_window(at, None, "0abc"), at);
    }
}
