//! Who may use a Host: pure rules, with no cluster in reach. A Host lists the namespaces that may
//! place work on it (`spec.allowedNamespaces`); without the field only the namespaces the
//! operator trusts may. Label selectors are matched as Kubernetes matches them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use crate::api::host::Host;

/// Whether `labels` satisfy `sel`: every matchLabels pair and every matchExpression (an empty
/// selector matches everything; an unknown operator matches nothing).
pub fn matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = sel.match_labels.iter().flatten().all(|(k, v)| labels.get(k).is_some_and(|x| x == v));
    let by_expr = sel.match_expressions.iter().flatten().all(|e| {
        let have = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    });
    by_labels && by_expr
}

/// Whether deciding on `h` needs the namespace's labels (it has a selector that is not `{}`).
pub fn needs_labels(h: &Host) -> bool {
    h.spec.allowed_namespaces.as_ref().and_then(|a| a.selector.as_ref()).is_some_and(|s| {
        s.match_labels.as_ref().is_some_and(|m| !m.is_empty())
            || s.match_expressions.as_ref().is_some_and(|m| !m.is_empty())
    })
}

/// Whether namespace `ns` (with `labels`) may place work on `h`; the refusal names the Host, the
/// rule and what would admit the namespace. `trusted`: the operator's trusted namespaces, the
/// rule for a Host without `spec.allowedNamespaces`.
pub fn admits(
    h: &Host,
    ns: &str,
    labels: &BTreeMap<String, String>,
    trusted: &[String],
) -> Result<(), String> {
    let host = h.name_any();
    let Some(allowed) = &h.spec.allowed_namespaces else {
        if trusted.iter().any(|t| t == ns) {
            return Ok(());
        }
        return Err(format!(
            "Host {host} does not allow namespace {ns}: it has no spec.allowedNamespaces, so only the \
             operator's trusted namespaces ({}) may use it; add {ns} to the Host's spec.allowedNamespaces.names",
            if trusted.is_empty() { "none".to_owned() } else { trusted.join(", ") }
        ));
    };
    if allowed.names.iter().any(|n| n == ns) || allowed.selector.as_ref().is_some_and(|s| matches(s, labels))
    {
        return Ok(());
    }
    let names = if allowed.names.is_empty() { "none".to_owned() } else { allowed.names.join(", ") };
    let selector = match &allowed.selector {
        Some(_) => "a selector that does not match the namespace's labels",
        None => "no selector",
    };
    Err(format!(
        "Host {host} does not allow namespace {ns}: its spec.allowedNamespaces names {names} and has {selector}; \
         add {ns} to the Host's spec.allowedNamespaces.names (or label the namespace to match its selector)"
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn host(allowed: serde_json::Value) -> Host {
        let mut spec = json!({"address": "10.0.0.1", "sshKeySecretRef": {"name": "k", "key": "k"}});
        if !allowed.is_null() {
            spec["allowedNamespaces"] = allowed;
        }
        serde_json::from_value(json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "Host",
            "metadata": {"name": "web-1"}, "spec": spec}))
        .unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn without_the_field_only_trusted_namespaces() {
        let h = host(serde_json::Value::Null);
        let trusted = ["nova-system".to_owned()];
        assert!(admits(&h, "nova-system", &labels(&[]), &trusted).is_ok());
        let err = admits(&h, "team-b", &labels(&[]), &trusted).unwrap_err();
        assert!(err.contains("Host web-1") && err.contains("team-b") && err.contains("nova-system"), "{err}");
        assert!(err.contains("spec.allowedNamespaces"), "{err}");
        assert!(admits(&h, "team-b", &labels(&[]), &[]).unwrap_err().contains("(none)"));
    }

    #[test]
    fn names_and_selectors() {
        let h = host(json!({"names": ["shop"]}));
        assert!(admits(&h, "shop", &labels(&[]), &[]).is_ok());
        let err = admits(&h, "other", &labels(&[]), &["other".into()]).unwrap_err();
        assert!(
            err.contains("names shop and has no selector"),
            "trusted does not widen a listed Host: {err}"
        );

        let h = host(json!({"selector": {"matchLabels": {"team": "a"}}}));
        assert!(needs_labels(&h));
        assert!(admits(&h, "x", &labels(&[("team", "a")]), &[]).is_ok());
        let err = admits(&h, "x", &labels(&[("team", "b")]), &[]).unwrap_err();
        assert!(err.contains("does not match"), "{err}");

        let all = host(json!({"selector": {}}));
        assert!(!needs_labels(&all));
        assert!(admits(&all, "anything", &labels(&[]), &[]).is_ok());
    }

    #[test]
    fn expressions() {
        let sel: LabelSelector = serde_json::from_value(json!({"matchExpressions": [
            {"key": "team", "operator": "In", "values": ["a", "b"]},
            {"key": "frozen", "operator": "DoesNotExist"}]}))
        .unwrap();
        assert!(matches(&sel, &labels(&[("team", "b")])));
        assert!(!matches(&sel, &labels(&[("team", "b"), ("frozen", "1")])));
        assert!(!matches(&sel, &labels(&[("team", "c")])));
        let odd: LabelSelector =
            serde_json::from_value(json!({"matchExpressions": [{"key": "k", "operator": "Gt"}]})).unwrap();
        assert!(!matches(&odd, &labels(&[("k", "1")])), "an unknown operator matches nothing");
    }
}
