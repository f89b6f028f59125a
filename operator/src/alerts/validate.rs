//! Everything about an AlertRule that the schema cannot say, checked before anything is applied:
//! each expression parsed with Prometheus's grammar (`promql-parser`) and of vector or scalar
//! type, label and annotation names, and names used twice. A bad rule is left out and named;
//! the object's other rules are applied all the same (a typo in one alert must not take the
//! whole object's alerting down, as one bad rule takes a whole rule file down in Prometheus).

use std::collections::{BTreeMap, BTreeSet};

use promql_parser::parser::{self, value::ValueType};

use super::{OWNER_LABEL, packs};
use crate::api::alert::{AlertRuleSpec, AlertingRule, RuleGroup};

/// The spec as it will be applied, and what was left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checked {
    /// Own groups (valid rules only; a group left with none is dropped), then the packs' groups.
    pub groups: Vec<RuleGroup>,
    /// One line per problem, naming the field: `spec.groups[0].rules[1].expr: …`.
    pub problems: Vec<String>,
}

impl Checked {
    pub fn rules(&self) -> usize {
        self.groups.iter().map(|g| g.rules.len()).sum()
    }
}

/// Checks `spec` and returns what can be applied.
pub fn check(spec: &AlertRuleSpec) -> Checked {
    let mut out = Checked::default();
    let pack_groups: Vec<RuleGroup> =
        packs::expand(&spec.packs).into_iter().flat_map(packs::groups).collect();
    let mut names: BTreeSet<&str> = pack_groups.iter().map(|g| g.name.as_str()).collect();
    for (i, g) in spec.groups.iter().enumerate() {
        if !names.insert(&g.name) {
            out.problems.push(format!(
                "spec.groups[{i}].name: group {:?} is used twice (or by a pack); the group is left out",
                g.name
            ));
            continue;
        }
        // The same name with other labels is the mixins' way (a warning and a critical of one
        // alert); the same name with the same labels is two rules fighting over one alert.
        let mut alerts = BTreeSet::new();
        let mut kept = Vec::new();
        for (j, r) in g.rules.iter().enumerate() {
            let at = format!("spec.groups[{i}].rules[{j}]");
            let mut problems = rule_problems(&at, r);
            if !alerts.insert((r.alert.as_str(), &r.labels)) {
                problems.push(format!(
                    "{at}.alert: {:?} is used twice in this group with the same labels",
                    r.alert
                ));
            }
            if problems.is_empty() {
                kept.push(r.clone());
            } else {
                out.problems.extend(problems.into_iter().map(|p| p + "; the rule is left out"));
            }
        }
        if !kept.is_empty() {
            out.groups.push(RuleGroup { rules: kept, ..g.clone() });
        }
    }
    out.groups.extend(pack_groups);
    out
}

/// The problems of one rule (`at`: its field path).
pub fn rule_problems(at: &str, r: &AlertingRule) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = expression(&r.expr) {
        problems.push(format!("{at}.expr: {e}"));
    }
    problems.extend(names(&format!("{at}.labels"), &r.labels, true));
    problems.extend(names(&format!("{at}.annotations"), &r.annotations, false));
    problems
}

/// Parses an alerting expression: it must be PromQL whose value is a vector or a scalar.
pub fn expression(expr: &str) -> Result<promql_parser::parser::Expr, String> {
    let parsed = parser::parse(expr).map_err(|e| format!("not valid PromQL: {}", e.trim()))?;
    match parsed.value_type() {
        ValueType::Vector | ValueType::Scalar => Ok(parsed),
        t => Err(format!("PromQL of type {t}; an alert needs an instant vector or a scalar")),
    }
}

fn names(at: &str, map: &BTreeMap<String, String>, labels: bool) -> Vec<String> {
    let mut problems = Vec::new();
    for k in map.keys() {
        let valid = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            problems.push(format!("{at}.{k}: not a label name (letters, digits and _, not first a digit)"));
        } else if k.starts_with("__") {
            problems.push(format!("{at}.{k}: names starting with __ are Prometheus's own"));
        } else if labels && (k == OWNER_LABEL || k == "alertname") {
            problems.push(format!("{at}.{k}: set by Nova and Prometheus themselves"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::alert::Pack;

    fn rule(alert: &str, expr: &str) -> AlertingRule {
        AlertingRule {
            alert: alert.into(),
            expr: expr.into(),
            for_: None,
            keep_firing_for: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }

    fn spec(groups: Vec<RuleGroup>, packs: Vec<Pack>) -> AlertRuleSpec {
        AlertRuleSpec { groups, packs, routing: None, target: None }
    }

    fn group(name: &str, rules: Vec<AlertingRule>) -> RuleGroup {
        RuleGroup { name: name.into(), interval: None, rules }
    }

    #[test]
    fn a_bad_expression_is_named_and_the_other_rules_are_kept() {
        let s = spec(vec![group("g", vec![rule("Good", "up == 0"), rule("Bad", "sum(rate(x[5m])")])], vec![]);
        let c = check(&s);
        assert_eq!(c.rules(), 1);
        assert_eq!(c.groups[0].rules[0].alert, "Good");
        assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
        assert!(
            c.problems[0].starts_with("spec.groups[0].rules[1].expr: not valid PromQL: "),
            "{}",
            c.problems[0]
        );
        assert!(c.problems[0].ends_with("; the rule is left out"));
    }

    #[test]
    fn a_range_vector_or_string_is_no_alert() {
        assert!(expression("rate(x[5m])").is_ok());
        assert!(expression("1 > bool 0").is_ok());
        assert!(expression("x[5m]").unwrap_err().contains("type matrix"));
        assert!(expression("\"text\"").unwrap_err().contains("type string"));
    }

    #[test]
    fn names_used_twice_and_bad_label_names_are_refused() {
        let mut bad = rule("B", "up");
        bad.labels.insert("9x".into(), "v".into());
        bad.annotations.insert("__x".into(), "v".into());
        let mut own = rule("C", "up");
        own.labels.insert(OWNER_LABEL.into(), "v".into());
        let mut critical = rule("A", "up");
        critical.labels.insert("severity".into(), "critical".into());
        let s = spec(
            vec![
                group("g", vec![rule("A", "up"), rule("A", "up"), bad, own, critical]),
                group("g", vec![rule("D", "up")]),
                group("nova-host", vec![rule("E", "up")]),
            ],
            vec![Pack::Host],
        );
        let c = check(&s);
        let p = c.problems.join("\n");
        assert!(p.contains("spec.groups[0].rules[1].alert: \"A\" is used twice"), "{p}");
        assert!(p.contains("spec.groups[0].rules[2].labels.9x: not a label name"), "{p}");
        assert!(p.contains("spec.groups[0].rules[2].annotations.__x: names starting with __"), "{p}");
        assert!(p.contains("spec.groups[0].rules[3].labels.nova_alertrule: set by Nova"), "{p}");
        assert!(p.contains("spec.groups[1].name: group \"g\" is used twice"), "{p}");
        assert!(p.contains("spec.groups[2].name: group \"nova-host\" is used twice (or by a pack)"), "{p}");
        assert_eq!(c.groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["g", "nova-host"]);
        assert_eq!(c.groups[0].rules.len(), 2, "A, and A with other labels");
    }

    #[test]
    fn packs_follow_own_groups() {
        let c = check(&spec(vec![group("mine", vec![rule("A", "up")])], vec![Pack::Backups]));
        assert!(c.problems.is_empty());
        assert_eq!(c.groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["mine", "nova-backups"]);
    }
}
