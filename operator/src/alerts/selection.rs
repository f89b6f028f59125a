//! Would a Prometheus run by prometheus-operator pick the PrometheusRule up? Its `ruleSelector`
//! must match the rule's labels (null: no rules at all) and its `ruleNamespaceSelector` the
//! rule's namespace (null: only the Prometheus's own namespace; empty: every namespace).
//! Rules outside both are silently ignored by prometheus-operator; Nova says so instead.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// What Nova reads of one Prometheus object.
#[derive(Debug, Clone, Default)]
pub struct PromObject {
    pub namespace: String,
    pub name: String,
    pub rule_selector: Option<LabelSelector>,
    pub rule_namespace_selector: Option<LabelSelector>,
}

/// Whether `sel` matches `labels`, as Kubernetes matches label selectors.
pub use crate::tenancy::matches;

/// Whether `p` selects a rule with `labels` in namespace `ns` (labelled `ns_labels`).
pub fn selects(
    p: &PromObject,
    labels: &BTreeMap<String, String>,
    ns: &str,
    ns_labels: &BTreeMap<String, String>,
) -> bool {
    let rule = p.rule_selector.as_ref().is_some_and(|s| matches(s, labels));
    let namespace = match &p.rule_namespace_selector {
        None => p.namespace == ns,
        Some(s) => matches(s, ns_labels),
    };
    rule && namespace
}

/// A sentence on why `p` does not select the rule, naming the fields to change.
pub fn why_not(
    p: &PromObject,
    labels: &BTreeMap<String, String>,
    ns: &str,
    ns_labels: &BTreeMap<String, String>,
) -> String {
    let who = format!("Prometheus {}/{}", p.namespace, p.name);
    match &p.rule_selector {
        None => return format!("{who} has no spec.ruleSelector, so it selects no PrometheusRule"),
        Some(s) if !matches(s, labels) => {
            let want = s.match_labels.clone().unwrap_or_default();
            return format!(
                "{who} selects rules labelled {want:?}{}; set them with the operator's \
                 --prometheus-rule-label (the chart's alerts.ruleLabels)",
                if s.match_expressions.as_ref().is_some_and(|e| !e.is_empty()) {
                    " and by expressions"
                } else {
                    ""
                }
            );
        }
        Some(_) => {}
    }
    match &p.rule_namespace_selector {
        None => format!(
            "{who} only reads rules of its own namespace (spec.ruleNamespaceSelector is unset), not of {ns}"
        ),
        Some(_) if !selects(p, labels, ns, ns_labels) => {
            format!("{who}'s spec.ruleNamespaceSelector does not match namespace {ns}")
        }
        Some(_) => format!("{who} selects it"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn prom(rule: Option<LabelSelector>, ns: Option<LabelSelector>) -> PromObject {
        PromObject {
            namespace: "monitoring".into(),
            name: "k8s".into(),
            rule_selector: rule,
            rule_namespace_selector: ns,
        }
    }

    #[test]
    fn selectors_as_prometheus_operator_reads_them() {
        let release =
            LabelSelector { match_labels: Some(labels(&[("release", "kps")])), ..Default::default() };
        let all = LabelSelector::default();
        let (with, without) = (labels(&[("release", "kps")]), labels(&[]));
        assert!(selects(&prom(Some(release.clone()), Some(all.clone())), &with, "shop", &without));
        assert!(!selects(&prom(Some(release.clone()), Some(all.clone())), &without, "shop", &without));
        assert!(!selects(&prom(None, Some(all.clone())), &with, "shop", &without), "null selects nothing");
        assert!(
            !selects(&prom(Some(all.clone()), None), &with, "shop", &without),
            "null: own namespace only"
        );
        assert!(selects(&prom(Some(all.clone()), None), &with, "monitoring", &without));
        let why = why_not(&prom(Some(release), Some(all)), &without, "shop", &without);
        assert!(why.contains("selects rules labelled {\"release\": \"kps\"}"), "{why}");
        assert!(why_not(&prom(None, None), &with, "shop", &without).contains("no spec.ruleSelector"));
    }

    #[test]
    fn expressions() {
        let req = |op: &str, v: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "team".into(),
                operator: op.into(),
                values: Some(v.iter().map(|s| (*s).to_owned()).collect()),
            }]),
            ..Default::default()
        };
        let shop = labels(&[("team", "shop")]);
        assert!(matches(&req("In", &["shop", "ops"]), &shop));
        assert!(!matches(&req("NotIn", &["shop"]), &shop));
        assert!(matches(&req("NotIn", &["shop"]), &labels(&[])));
        assert!(matches(&req("Exists", &[]), &shop));
        assert!(!matches(&req("DoesNotExist", &[]), &shop));
        assert!(!matches(&req("Bogus", &[]), &shop));
    }
}
