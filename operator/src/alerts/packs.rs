//! The built-in rule packs. Each is a Prometheus rule file in `packs/` (checked and unit-tested
//! by the real `promtool`, see `packs/tests/`), compiled into the binary.

use std::collections::BTreeSet;

use crate::api::alert::{Pack, RuleGroup};

/// Every pack, for docs and tests.
pub const ALL: [Pack; 8] = [
    Pack::Host,
    Pack::Platform,
    Pack::Webapp,
    Pack::Certificates,
    Pack::Backups,
    Pack::Training,
    Pack::Operator,
    Pack::Watchdog,
];

/// The pack's name as users write it.
pub fn name(p: Pack) -> &'static str {
    match p {
        Pack::Host => "host",
        Pack::Platform => "platform",
        Pack::Webapp => "webapp",
        Pack::Certificates => "certificates",
        Pack::Backups => "backups",
        Pack::Training => "training",
        Pack::Operator => "operator",
        Pack::Watchdog => "watchdog",
    }
}

/// The pack's rule file.
pub fn source(p: Pack) -> &'static str {
    match p {
        Pack::Host => include_str!("packs/host.yaml"),
        Pack::Platform => include_str!("packs/platform.yaml"),
        Pack::Webapp => include_str!("packs/webapp.yaml"),
        Pack::Certificates => include_str!("packs/certificates.yaml"),
        Pack::Backups => include_str!("packs/backups.yaml"),
        Pack::Training => include_str!("packs/training.yaml"),
        Pack::Operator => include_str!("packs/operator.yaml"),
        Pack::Watchdog => include_str!("packs/watchdog.yaml"),
    }
}

/// Packs a pack brings in with it.
fn includes(p: Pack) -> &'static [Pack] {
    match p {
        Pack::Webapp => &[Pack::Host, Pack::Platform],
        _ => &[],
    }
}

/// The packs asked for and those they bring in, each once, in a fixed order.
pub fn expand(asked: &[Pack]) -> Vec<Pack> {
    let mut all = BTreeSet::new();
    for &p in asked {
        all.insert(p);
        all.extend(includes(p).iter().copied());
    }
    all.into_iter().collect()
}

#[derive(serde::Deserialize)]
struct File {
    groups: Vec<RuleGroup>,
}

/// The rule groups of `p`.
pub fn groups(p: Pack) -> Vec<RuleGroup> {
    // The files are part of the binary and parsed in this module's tests: a failure here is a
    // build that should not have passed them.
    serde_yaml::from_str::<File>(source(p)).map(|f| f.groups).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pack_parses_and_follows_the_conventions() {
        for p in ALL {
            let groups: File = serde_yaml::from_str(source(p)).unwrap_or_else(|e| panic!("{}: {e}", name(p)));
            assert!(!groups.groups.is_empty(), "{}", name(p));
            for g in &groups.groups {
                assert_eq!(g.name, format!("nova-{}", name(p)), "group names are nova-<pack>");
                for r in &g.rules {
                    let at = format!("{}: {}", name(p), r.alert);
                    assert!(r.alert.starts_with("Nova"), "{at}: names are CamelCase Nova…");
                    assert!(r.for_.is_some(), "{at}: every alert has a `for`");
                    let sev = r.labels.get("severity").map(String::as_str);
                    assert!(matches!(sev, Some("critical" | "warning" | "info")), "{at}: severity {sev:?}");
                    for a in ["summary", "description", "runbook_url"] {
                        assert!(r.annotations.contains_key(a), "{at}: no {a}");
                    }
                    let url = &r.annotations["runbook_url"];
                    let page = url.strip_prefix("https://nova.infra.dev/docs/runbooks/").expect(&at);
                    let file = format!("{}/../docs/runbooks/{page}.md", env!("CARGO_MANIFEST_DIR"));
                    assert!(std::path::Path::new(&file).exists(), "{at}: no runbook {file}");
                    promql_parser::parser::parse(&r.expr).unwrap_or_else(|e| panic!("{at}: {e}"));
                }
            }
        }
    }

    #[test]
    fn webapp_brings_in_host_and_platform_once() {
        assert_eq!(expand(&[Pack::Webapp, Pack::Host]), vec![Pack::Host, Pack::Platform, Pack::Webapp]);
        let alerts: usize = expand(&[Pack::Webapp]).into_iter().flat_map(groups).map(|g| g.rules.len()).sum();
        // The seed's eleven, and node_exporter down.
        assert_eq!(alerts, 12);
    }
}
