//! Prometheus's own word on the rules, read back into status: its rules API
//! (`/api/v1/rules`) says per rule whether it is loaded, its health, its last error and
//! evaluation; its metric names (`/api/v1/label/__name__/values`) say which metrics a rule
//! reads that have no series (the check pint calls promql/series). Pure: the answers in,
//! status out.

use std::collections::{BTreeSet, HashMap, HashSet};

use promql_parser::parser::Expr;
use promql_parser::util::{ExprVisitor, walk_expr};
use serde::Deserialize;

use super::OWNER_LABEL;
use crate::api::alert::{GroupStatus, RuleGroup, RuleStatus};

/// What `/api/v1/rules` answers (only the fields read; Prometheus 2.42 and later).
#[derive(Deserialize, Debug, Default)]
pub struct RulesAnswer {
    pub data: RulesData,
}

#[derive(Deserialize, Debug, Default)]
pub struct RulesData {
    #[serde(default)]
    pub groups: Vec<PromGroup>,
}

#[derive(Deserialize, Debug, Default)]
pub struct PromGroup {
    pub name: String,
    #[serde(default)]
    pub file: String,
    #[serde(default)]
    pub rules: Vec<PromRule>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct PromRule {
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub health: String,
    #[serde(default)]
    pub last_error: String,
    #[serde(default)]
    pub last_evaluation: String,
    #[serde(default)]
    pub labels: HashMap<String, String>,
}

/// The metric names an expression reads.
pub fn metrics(expr: &str) -> BTreeSet<String> {
    struct Names(BTreeSet<String>);
    impl ExprVisitor for Names {
        type Error = std::convert::Infallible;
        fn pre_visit(&mut self, e: &Expr) -> Result<bool, Self::Error> {
            let vs = match e {
                Expr::VectorSelector(vs) => vs,
                Expr::MatrixSelector(ms) => &ms.vs,
                _ => return Ok(true),
            };
            let named = vs.matchers.matchers.iter().find(|m| m.name == "__name__").map(|m| &m.value);
            if let Some(n) = vs.name.as_ref().or(named) {
                self.0.insert(n.clone());
            }
            Ok(true)
        }
    }
    let mut names = Names(BTreeSet::new());
    if let Ok(e) = promql_parser::parser::parse(expr) {
        let _ = walk_expr(&mut names, &e);
    }
    names.0
}

/// Status per group and rule of `owner`'s `groups`, from Prometheus's `answer`. `present` are
/// the metric names Prometheus has series of (None: not asked). `old` is the status before:
/// a rule's `lastEvaluation` is kept while nothing else of it changes, so a steady rule writes
/// nothing.
pub fn status(
    owner: &str,
    groups: &[RuleGroup],
    answer: &RulesAnswer,
    present: Option<&HashSet<String>>,
    old: &[GroupStatus],
) -> Vec<GroupStatus> {
    // Rules are told apart by group, name and which of that name (a warning and a critical
    // may share it); Prometheus answers a group's rules in file order.
    let mut seen: HashMap<(&str, &str, usize), &PromRule> = HashMap::new();
    for g in &answer.data.groups {
        let mut nth: HashMap<&str, usize> = HashMap::new();
        for r in g.rules.iter().filter(|r| r.kind != "recording") {
            if r.labels.get(OWNER_LABEL).map(String::as_str) == Some(owner) {
                let n = nth.entry(r.name.as_str()).or_default();
                seen.insert((g.name.as_str(), r.name.as_str(), *n), r);
                *n += 1;
            }
        }
    }
    let before = |g: &str, i: usize| old.iter().find(|x| x.name == g).and_then(|x| x.rules.get(i));
    groups
        .iter()
        .map(|g| GroupStatus {
            name: g.name.clone(),
            rules: g
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let n = g.rules[..i].iter().filter(|x| x.alert == r.alert).count();
                    let got = seen.get(&(g.name.as_str(), r.alert.as_str(), n)).copied();
                    let absent = present.map_or_else(Vec::new, |p| {
                        metrics(&r.expr).into_iter().filter(|m| !p.contains(m)).collect()
                    });
                    let mut new = rule_status(&r.alert, got, absent);
                    if let Some(b) = before(&g.name, i).filter(|b| b.alert == r.alert) {
                        let same = RuleStatus { last_evaluation: b.last_evaluation.clone(), ..new.clone() };
                        if &same == b {
                            new = same;
                        }
                    }
                    new
                })
                .collect(),
        })
        .collect()
}

fn rule_status(alert: &str, got: Option<&PromRule>, absent_metrics: Vec<String>) -> RuleStatus {
    let Some(r) = got else {
        return RuleStatus { alert: alert.into(), loaded: false, absent_metrics, ..Default::default() };
    };
    let evaluated = evaluated(&r.last_evaluation);
    RuleStatus {
        alert: alert.into(),
        loaded: true,
        health: (!r.health.is_empty()).then(|| r.health.clone()),
        last_error: (!r.last_error.is_empty()).then(|| r.last_error.chars().take(1024).collect()),
        last_evaluation: evaluated.then(|| r.last_evaluation.clone()),
        absent_metrics,
    }
}

/// Whether Prometheus's `lastEvaluation` says the rule was evaluated: it reports the zero time
/// before a rule's first evaluation.
pub fn evaluated(last_evaluation: &str) -> bool {
    !last_evaluation.is_empty() && !last_evaluation.starts_with("0001-")
}

/// Loaded rules in `groups`.
pub fn loaded(groups: &[GroupStatus]) -> usize {
    groups.iter().flat_map(|g| &g.rules).filter(|r| r.loaded).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::alert::AlertingRule;

    fn answer(json: serde_json::Value) -> RulesAnswer {
        serde_json::from_value(json).unwrap()
    }

    fn groups() -> Vec<RuleGroup> {
        let r = |a: &str, e: &str| AlertingRule {
            alert: a.into(),
            expr: e.into(),
            for_: None,
            keep_firing_for: None,
            labels: Default::default(),
            annotations: Default::default(),
        };
        vec![RuleGroup {
            name: "g".into(),
            interval: None,
            rules: vec![
                r("A", "rate(http_requests_total[5m]) > 1"),
                r("B", "{__name__=\"gone\"} > 0 or up == 0"),
            ],
        }]
    }

    #[test]
    fn metric_names_come_from_every_selector() {
        let m = metrics("sum(rate(a_total[5m])) / on() b + {__name__=\"c\"} and absent(d)");
        assert_eq!(m.into_iter().collect::<Vec<_>>(), ["a_total", "b", "c", "d"]);
    }

    #[test]
    fn only_the_owners_rules_count_and_absent_metrics_are_named() {
        let a = answer(serde_json::json!({"status": "success", "data": {"groups": [
            {"name": "g", "file": "/x.yml", "rules": [
                {"name": "A", "type": "alerting", "health": "ok", "lastError": "",
                 "lastEvaluation": "2026-11-29T10:00:00Z", "labels": {"nova_alertrule": "ns/a"}},
                {"name": "B", "type": "alerting", "health": "ok", "labels": {"nova_alertrule": "ns/other"}}
            ]}
        ]}}));
        let present: HashSet<String> = ["up".to_owned()].into();
        let s = status("ns/a", &groups(), &a, Some(&present), &[]);
        assert_eq!(loaded(&s), 1);
        assert_eq!(s[0].rules[0].health.as_deref(), Some("ok"));
        assert_eq!(s[0].rules[0].absent_metrics, ["http_requests_total"]);
        assert!(!s[0].rules[1].loaded, "another object's rule B is not ours");
        assert_eq!(s[0].rules[1].absent_metrics, ["gone"]);
    }

    #[test]
    fn a_steady_rule_keeps_its_first_evaluation_time() {
        let at = |t: &str, health: &str| {
            answer(serde_json::json!({"data": {"groups": [{"name": "g", "rules": [
                {"name": "A", "type": "alerting", "health": health, "lastEvaluation": t,
                 "lastError": if health == "err" { "boom" } else { "" },
                 "labels": {"nova_alertrule": "ns/a"}}]}]}}))
        };
        let first = status("ns/a", &groups(), &at("2026-11-29T10:00:00Z", "ok"), None, &[]);
        let later = status("ns/a", &groups(), &at("2026-11-29T10:05:00Z", "ok"), None, &first);
        assert_eq!(first, later);
        let broken = status("ns/a", &groups(), &at("2026-11-29T10:06:00Z", "err"), None, &later);
        assert_eq!(broken[0].rules[0].last_evaluation.as_deref(), Some("2026-11-29T10:06:00Z"));
        assert_eq!(broken[0].rules[0].last_error.as_deref(), Some("boom"));
    }
}
