//! The AlertRule controller: observe (the spec, which of prometheus-operator's kinds are
//! served, the Prometheus objects, the routing Secrets) → decide (validate and render, pure) →
//! act (rules and routing written) → status (read back from Prometheus: loaded, health, errors,
//! absent metrics). Nothing is written in steady state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::Event;

use super::validate::{self, Checked};
use super::{owner_key, routing, rules, targets};
use crate::api::AlertRule;
use crate::api::alert::AlertRuleStatus;
use crate::conditions::{Cond, CondType};
use crate::context::{Error, Own};
use crate::kit::{self, Reconciled};

/// What the operator is told about the monitoring it works with.
#[derive(Clone, Default)]
pub struct Settings {
    /// Prometheus to read rules back from (`--prometheus-url`); without it, rules are applied
    /// but their loading is not checked.
    pub prometheus_url: Option<String>,
    /// Labels every PrometheusRule and rule ConfigMap gets (what the Prometheus selects by).
    pub rule_labels: BTreeMap<String, String>,
    /// Only AlertRules of this namespace are merged into the Alertmanager configuration.
    pub watch_namespace: Option<String>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A Prometheus URL may carry basic-auth credentials.
        f.debug_struct("Settings")
            .field("prometheus_url", &self.prometheus_url.as_deref().map(crate::state::redact))
            .field("rule_labels", &self.rule_labels)
            .field("watch_namespace", &self.watch_namespace)
            .finish()
    }
}

pub type Ctx = Own<AlertRule, super::memo::Alerts>;

/// Looked at again while rules are still loading (on Kubernetes, woken instead: [`super::loading`]).
pub const LOADING: Duration = Duration::from_millis(500);
/// Health read back again after this long when all is well.
const REFRESH: Duration = Duration::from_secs(300);

pub async fn reconcile(obj: Arc<AlertRule>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let c = ctx.clone();
    kit::run(obj, &ctx.kit, &ctx.status, &[], |obj| async move {
        let api = obj.api_for(c.client.clone());
        kit::finalized(&api, obj, |event| async {
            match event {
                Event::Apply(o) => apply(&o, &c).await,
                Event::Cleanup(o) => cleanup(&o, &c).await,
            }
        })
        .await
    })
    .await
}

async fn apply(o: &AlertRule, ctx: &Ctx) -> Result<Action, Error> {
    let owner = owner_key(&o.namespace().unwrap_or_default(), &o.name_any());
    let checked = validate::check(&o.spec);
    let mut problems = checked.problems.clone();
    if let Some(r) = &o.spec.routing {
        problems.extend(routing::problems(r));
    }
    if on_hosts(o) {
        return super::hostctl::apply(o, ctx, &owner, &checked, &problems).await;
    }
    let served = ctx.families.served(&ctx.client).await?;
    let (applied_to, selected) = write_rules(o, ctx, &owner, &checked, served).await?;
    let routing_ok = o.spec.routing.as_ref().is_some_and(|r| routing::problems(r).is_empty());
    write_routing(o, ctx, &owner, served, routing_ok).await?;
    status(o, ctx, &owner, &checked, &problems, applied_to, selected).await
}

async fn cleanup(o: &AlertRule, ctx: &Ctx) -> Result<Action, Error> {
    // Owner references would remove the children too, but only where garbage collection runs
    // and only later; the rules should stop with their object. The merged configuration is
    // written again without this object.
    if on_hosts(o) {
        super::hostctl::cleanup(o, ctx).await?;
        return Ok(Action::await_change());
    }
    let served = ctx.families.served(&ctx.client).await?;
    targets::drop_children(&ctx.client, o, served).await?;
    ctx.families.forget_rules(&o.uid().unwrap_or_default());
    ctx.families.waiting.done(&kube::runtime::reflector::ObjectRef::from_obj(o));
    if !served.alertmanager_configs {
        merge_all(ctx, o, true).await?;
    }
    Ok(Action::await_change())
}

fn on_hosts(o: &AlertRule) -> bool {
    o.spec.target.as_ref().is_some_and(|t| t.hosts.is_some())
}

/// Writes the rules (unless this generation's were written there lately: a reconcile that
/// only looks again while they load writes nothing); returns where to, and the Selected
/// condition when Prometheus objects could be checked.
async fn write_rules(
    o: &AlertRule,
    ctx: &Ctx,
    owner: &str,
    checked: &Checked,
    served: targets::Served,
) -> Result<(String, Option<Cond>), Error> {
    let labels = &ctx.families.settings.rule_labels;
    let (uid, generation) = (o.uid().unwrap_or_default(), o.metadata.generation.unwrap_or_default());
    let to = targets::rules_target(o, served);
    if !ctx.families.rules_written(&uid, generation, &to) {
        match served.prometheus_rules {
            false => {
                targets::put_config_map(&ctx.client, o, labels, rules::yaml(owner, &checked.groups)).await?
            }
            true => {
                targets::put_prometheus_rule(&ctx.client, o, labels, rules::file(owner, &checked.groups))
                    .await?
            }
        }
        ctx.families.mark_rules_written(uid, generation, to.clone());
    }
    if !served.prometheus_rules {
        return Ok((to, None));
    }
    let selected =
        if served.prometheuses { Some(super::observe::selected(ctx, o, labels).await?) } else { None };
    Ok((to, selected))
}

async fn write_routing(
    o: &AlertRule,
    ctx: &Ctx,
    owner: &str,
    served: targets::Served,
    routing_ok: bool,
) -> Result<(), Error> {
    if !served.alertmanager_configs {
        return merge_all(ctx, o, false).await;
    }
    match o.spec.routing.as_ref().filter(|_| routing_ok) {
        Some(r) => {
            let username = super::observe::smtp_username(ctx, o, r).await?;
            let spec = routing::alertmanager_config(owner, r, username.as_deref());
            targets::put_alertmanager_config(&ctx.client, o, spec).await
        }
        None => targets::drop_alertmanager_config(&ctx.client, o).await,
    }
}

/// Writes the one Alertmanager configuration from every AlertRule's routing (`leaving`: `o` is
/// being deleted and is left out). Objects whose Secrets are missing are left out (their own
/// status says so) — but `o`'s own missing Secret blocks `o`.
async fn merge_all(ctx: &Ctx, o: &AlertRule, leaving: bool) -> Result<(), Error> {
    let all = super::observe::routed(ctx, o, leaving).await?;
    let config = routing::merged(&all).map_err(|e| Error::Bug(format!("merging routing: {e}")))?;
    let text = serde_yaml::to_string(&config)
        .map_err(|e| Error::Bug(format!("Alertmanager config as YAML: {e}")))?;
    let put = |text: String| async move {
        targets::put_alertmanager_secret(&ctx.client, &ctx.namespace, &text).await
    };
    ctx.families.write_merged(text, put).await
}

async fn status(
    o: &AlertRule,
    ctx: &Ctx,
    owner: &str,
    checked: &Checked,
    problems: &[String],
    applied_to: String,
    selected: Option<Cond>,
) -> Result<Action, Error> {
    let old = ctx.status.current(o);
    let applied = checked.rules();
    let mut new =
        AlertRuleStatus { rules_applied: Some(applied as i32), applied_to: Some(applied_to.clone()), ..old };
    let mut conds: Vec<Cond> = selected.into_iter().collect();
    conds.push(match problems.is_empty() {
        true => Cond::new(CondType::Degraded, false, "Valid", "every rule and route is valid"),
        false => Cond::new(CondType::Degraded, true, "InvalidRules", invalid(problems, applied)),
    });
    let Some(url) = &ctx.families.settings.prometheus_url else {
        new.groups.clear();
        new.rules_loaded = None;
        new.prometheus_version = None;
        conds.push(match problems.is_empty() {
            true => Cond::new(CondType::Ready, true, "Applied", format!(
                "{applied} rules applied to {applied_to}; their loading is not checked: the operator has no --prometheus-url"
            )),
            false => Cond::new(CondType::Ready, false, "InvalidRules", invalid(problems, applied)),
        });
        ctx.status.write(&ctx.kit, o, new, &conds).await?;
        return Ok(Action::await_change());
    };
    let (after, read) = super::observe::read_back(ctx, url, (o, owner), checked, &mut new).await;
    conds.extend(read);
    if !problems.is_empty() && conds.iter().any(|c| c.type_ == CondType::Ready && c.status) {
        conds.retain(|c| c.type_ != CondType::Ready);
        conds.push(Cond::new(CondType::Ready, false, "InvalidRules", invalid(problems, applied)));
    }
    ctx.status.write(&ctx.kit, o, new, &conds).await?;
    Ok(Action::requeue(after))
}

pub fn invalid(problems: &[String], applied: usize) -> String {
    let shown: Vec<&str> = problems.iter().take(5).map(String::as_str).collect();
    let more = problems.len().saturating_sub(shown.len());
    format!(
        "{}{}; the other {applied} rules are applied",
        shown.join("; "),
        if more > 0 { format!(" (and {more} more)") } else { String::new() }
    )
}

/// The Ready and MetricsPresent conditions from what Prometheus answered, and when to look again.
pub fn judge(new: &AlertRuleStatus, applied: usize, version: &str) -> (Duration, Vec<Cond>) {
    let loaded = new.rules_loaded.unwrap_or_default() as usize;
    let all = new.groups.iter().flat_map(|g| g.rules.iter().map(move |r| (g, r)));
    let missing = all.clone().find(|(_, r)| !r.loaded);
    let failing = all.clone().find(|(_, r)| r.health.as_deref() == Some("err"));
    let absent: Vec<String> = all
        .clone()
        .filter(|(_, r)| !r.absent_metrics.is_empty())
        .map(|(_, r)| format!("{} reads {}", r.alert, r.absent_metrics.join(", ")))
        .collect();
    let mut conds = vec![match absent.is_empty() {
        true => {
            Cond::new(CondType::MetricsPresent, true, "Present", "every metric the rules read has series")
        }
        false => Cond::new(
            CondType::MetricsPresent,
            false,
            "AbsentMetrics",
            format!(
                "no series in Prometheus: {}; such a rule stays silent however bad things get — check the metric names and the scrape targets",
                absent.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
            ),
        ),
    }];
    let (after, ready) = if let Some((g, r)) = missing {
        let msg = format!(
            "{loaded} of {applied} rules loaded in Prometheus {version}; not yet {}/{}",
            g.name, r.alert
        );
        (LOADING, Cond::new(CondType::Ready, false, "Loading", msg))
    } else if let Some((g, r)) = failing {
        let msg = format!(
            "rule {}/{} fails to evaluate: {}",
            g.name,
            r.alert,
            r.last_error.as_deref().unwrap_or("(no error given)")
        );
        (REFRESH, Cond::new(CondType::Ready, false, "RuleErrors", msg))
    } else {
        (
            REFRESH,
            Cond::new(
                CondType::Ready,
                true,
                "Loaded",
                format!("{applied} rules loaded in Prometheus {version}"),
            ),
        )
    };
    conds.push(ready);
    // Loaded but not evaluated yet: look again soon, so the first health is not five minutes late.
    let unevaluated = all.clone().any(|(_, r)| r.loaded && r.last_evaluation.is_none());
    (if unevaluated { after.min(LOADING) } else { after }, conds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::alert::{GroupStatus, RuleStatus};

    fn status(rules: Vec<RuleStatus>) -> AlertRuleStatus {
        let loaded = rules.iter().filter(|r| r.loaded).count() as i32;
        AlertRuleStatus {
            rules_loaded: Some(loaded),
            groups: vec![GroupStatus { name: "g".into(), rules }],
            ..Default::default()
        }
    }

    fn rule(loaded: bool, health: &str, evaluated: bool) -> RuleStatus {
        RuleStatus {
            alert: "A".into(),
            loaded,
            health: Some(health.into()),
            last_error: (health == "err").then(|| "boom".into()),
            last_evaluation: evaluated.then(|| "2026-11-29T10:00:00Z".into()),
            absent_metrics: vec![],
        }
    }

    fn ready(conds: &[Cond]) -> (&'static str, bool) {
        let c = conds.iter().find(|c| c.type_ == CondType::Ready).unwrap();
        (c.reason, c.status)
    }

    #[test]
    fn loading_evaluating_failing_and_loaded() {
        let (after, c) = judge(&status(vec![rule(false, "", false)]), 1, "2.42.0");
        assert_eq!((after, ready(&c)), (LOADING, ("Loading", false)));
        let (after, c) = judge(&status(vec![rule(true, "unknown", false)]), 1, "2.42.0");
        assert_eq!((after, ready(&c)), (LOADING, ("Loaded", true)), "not evaluated yet: soon again");
        let (after, c) = judge(&status(vec![rule(true, "err", true)]), 1, "2.42.0");
        assert_eq!((after, ready(&c)), (REFRESH, ("RuleErrors", false)));
        let (after, c) = judge(&status(vec![rule(true, "ok", true)]), 1, "2.42.0");
        assert_eq!((after, ready(&c)), (REFRESH, ("Loaded", true)));
    }
}
