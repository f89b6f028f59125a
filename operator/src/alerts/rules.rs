//! The rule file every target gets (Prometheus's format; a PrometheusRule's spec has the same
//! shape). Each rule carries [`OWNER_LABEL`], by which its status and its routing find it.

use serde_json::{Map, Value, json};

use super::OWNER_LABEL;
use crate::api::alert::{AlertingRule, RuleGroup};

/// `{"groups": [...]}` for the AlertRule `owner` (`<namespace>/<name>`).
pub fn file(owner: &str, groups: &[RuleGroup]) -> Value {
    json!({ "groups": groups.iter().map(|g| group(owner, g)).collect::<Vec<_>>() })
}

/// The rule file as YAML text.
pub fn yaml(owner: &str, groups: &[RuleGroup]) -> String {
    serde_yaml::to_string(&file(owner, groups)).unwrap_or_default()
}

fn group(owner: &str, g: &RuleGroup) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), g.name.clone().into());
    if let Some(i) = &g.interval {
        out.insert("interval".into(), i.clone().into());
    }
    out.insert("rules".into(), g.rules.iter().map(|r| rule(owner, r)).collect());
    Value::Object(out)
}

fn rule(owner: &str, r: &AlertingRule) -> Value {
    let mut out = Map::new();
    out.insert("alert".into(), r.alert.clone().into());
    out.insert("expr".into(), r.expr.clone().into());
    if let Some(f) = &r.for_ {
        out.insert("for".into(), f.clone().into());
    }
    // Prometheus's own spelling; emitted only when set (2.42 is the first to know it).
    if let Some(k) = &r.keep_firing_for {
        out.insert("keep_firing_for".into(), k.clone().into());
    }
    let mut labels: Map<String, Value> =
        r.labels.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
    labels.insert(OWNER_LABEL.into(), owner.into());
    out.insert("labels".into(), Value::Object(labels));
    if !r.annotations.is_empty() {
        out.insert("annotations".into(), json!(r.annotations));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::packs;
    use crate::api::alert::Pack;

    #[test]
    fn every_rule_carries_its_owner_and_nothing_unset_is_emitted() {
        let groups = packs::groups(Pack::Backups);
        let f = file("shop/alerts", &groups);
        let rules = f["groups"][0]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 3);
        for r in rules {
            assert_eq!(r["labels"][OWNER_LABEL], "shop/alerts");
            assert!(r.get("keep_firing_for").is_none(), "{r}");
        }
        assert!(f["groups"][0].get("interval").is_none());
        let back: serde_yaml::Value = serde_yaml::from_str(&yaml("shop/alerts", &groups)).unwrap();
        assert_eq!(serde_json::to_value(back).unwrap(), f);
    }
}
