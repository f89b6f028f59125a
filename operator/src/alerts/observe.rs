//! What the AlertRule controller reads: the Prometheus objects that would load its rules, the
//! Secrets its routing names, every AlertRule's routing for the merged configuration, and what
//! Prometheus says of the rules.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DynamicObject, ListParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::controller::{Ctx, LOADING, judge};
use super::routing::{self, Secrets};
use super::selection::{self, PromObject};
use super::validate::Checked;
use super::{loaded, loading, owner_key, prom, targets};
use crate::api::AlertRule;
use crate::api::alert::{AlertRuleStatus, Routing};
use crate::conditions::{Cond, CondType};
use crate::context::{Blocked, Call, Error};

/// Whether a Prometheus that Nova can see selects the PrometheusRule (labels `labels`).
pub async fn selected(ctx: &Ctx, o: &AlertRule, labels: &BTreeMap<String, String>) -> Result<Cond, Error> {
    let ns = o.namespace().unwrap_or_default();
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &targets::prometheus());
    let list = api.list(&ListParams::default()).await.call(|| "listing Prometheus objects".into())?;
    let proms: Vec<PromObject> = list.items.iter().map(prom_object).collect();
    if proms.is_empty() {
        return Ok(Cond::new(
            CondType::Selected,
            false,
            "NoPrometheus",
            "no Prometheus object is visible to Nova",
        ));
    }
    let ns_labels = Api::<Namespace>::all(ctx.client.clone())
        .get_opt(&ns)
        .await
        .call(|| format!("reading Namespace {ns}"))?
        .map(|n| n.labels().clone())
        .unwrap_or_default();
    let mut rule_labels = labels.clone();
    rule_labels.insert("app.kubernetes.io/managed-by".into(), "nova".into());
    let by: Vec<String> = proms
        .iter()
        .filter(|p| selection::selects(p, &rule_labels, &ns, &ns_labels))
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    Ok(match by.is_empty() {
        false => Cond::new(
            CondType::Selected,
            true,
            "Selected",
            format!("selected by Prometheus {}", by.join(", ")),
        ),
        true => {
            let why: Vec<String> =
                proms.iter().map(|p| selection::why_not(p, &rule_labels, &ns, &ns_labels)).collect();
            let msg = format!("no Prometheus will load these rules: {}", why.join("; "));
            Cond::new(CondType::Selected, false, "NotSelected", msg)
        }
    })
}

fn prom_object(d: &DynamicObject) -> PromObject {
    let sel = |k: &str| {
        d.data.get("spec").and_then(|s| s.get(k)).and_then(|v| serde_json::from_value(v.clone()).ok())
    };
    PromObject {
        namespace: d.namespace().unwrap_or_default(),
        name: d.name_any(),
        rule_selector: sel("ruleSelector"),
        rule_namespace_selector: sel("ruleNamespaceSelector"),
    }
}

/// The SMTP user names of `routing` (AlertmanagerConfig takes it as a plain string).
pub async fn smtp_username(ctx: &Ctx, o: &AlertRule, routing: &Routing) -> Result<Option<String>, Error> {
    let ns = o.namespace().unwrap_or_default();
    for (i, r) in routing.receivers.iter().enumerate() {
        if let Some(a) = r.email.as_ref().and_then(|e| e.auth_secret_ref.as_ref()) {
            let field = format!("spec.routing.receivers[{i}].email.authSecretRef");
            let v = ctx.secret_value(&ns, &a.name, "username", &field).await?;
            return Ok(Some(String::from_utf8_lossy(&v).into_owned()));
        }
    }
    Ok(None)
}

/// Every AlertRule's routing with its Secrets, for the merged configuration.
pub async fn routed(
    ctx: &Ctx,
    o: &AlertRule,
    leaving: bool,
) -> Result<Vec<(String, Routing, Secrets)>, Error> {
    // The watch cache, complete once its first list is in: an incomplete one would drop
    // other objects' routes from the merged configuration.
    let store = &ctx.families.store;
    store.wait_until_ready().await.map_err(|e| Error::Bug(format!("the AlertRule cache: {e}")))?;
    // Only the objects with routing are looked at further: cloning every object for every
    // reconcile made a hundred objects cost ten thousand clones.
    let others = store.state();
    let mut all: Vec<&AlertRule> = others
        .iter()
        .map(|a| &**a)
        .filter(|a| a.uid() != o.uid() && a.spec.routing.is_some())
        .chain(std::iter::once(o))
        .collect();
    all.sort_by_key(|a| (a.namespace(), a.name_any()));
    let mut out = Vec::new();
    for a in all {
        let me = a.uid() == o.uid();
        // Others being deleted, and routing for Hosts (it goes to the hosts' own Alertmanager).
        let left_out = (a.metadata.deletion_timestamp.is_some()
            || a.spec.target.as_ref().is_some_and(|t| t.hosts.is_some()))
            && !me;
        let Some(r) = a.spec.routing.as_ref().filter(|r| routing::problems(r).is_empty()) else { continue };
        if (me && leaving) || left_out {
            continue;
        }
        let r = r.clone();
        let ns = a.namespace().unwrap_or_default();
        match secrets(ctx, &ns, &r).await {
            Ok(s) => out.push((owner_key(&ns, &a.name_any()), r, s)),
            Err(e) if me => return Err(e),
            Err(_) => {}
        }
    }
    Ok(out)
}

pub async fn secrets(ctx: &Ctx, ns: &str, r: &Routing) -> Result<Secrets, Error> {
    let mut out = Secrets::new();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    for (name, key) in routing::secret_refs(r) {
        let s = api.get_opt(&name).await.call(|| format!("reading Secret {ns}/{name} (spec.routing)"))?;
        let value = s.and_then(|s| s.data).and_then(|mut d| d.remove(&key)).ok_or_else(|| {
            Blocked::new(
                "MissingSecret",
                format!("Secret {ns}/{name} named in spec.routing has no key {key:?}"),
            )
        })?;
        out.insert((name, key), String::from_utf8_lossy(&value.0).into_owned());
    }
    Ok(out)
}

/// Reads the rules of `o` back from Prometheus into `new`; returns when to look again and the
/// conditions. Prometheus unreachable is a condition, not an error: the rules are applied.
/// While its rules load, `o` waits to be woken when Prometheus answers of them differently.
pub async fn read_back(
    ctx: &Ctx,
    url: &str,
    (o, owner): (&AlertRule, &str),
    checked: &Checked,
    new: &mut AlertRuleStatus,
) -> (Duration, Vec<Cond>) {
    let me = ObjectRef::from_obj(o);
    let a = match ctx.families.answer(url).await {
        Ok(a) => a,
        Err(e) => {
            ctx.families.waiting.done(&me);
            return unreachable(&e);
        }
    };
    let (after, conds) = fill(owner, checked, &a, new);
    if after > LOADING {
        ctx.families.waiting.done(&me);
        return (after, conds);
    }
    ctx.families.waiting.wait(me, owner.to_string(), loading::seen(owner, &a.rules));
    (loading::FALLBACK, conds)
}

/// `new` filled from Prometheus's answer; when to look again and the conditions.
pub fn fill(
    owner: &str,
    checked: &Checked,
    a: &prom::Answer,
    new: &mut AlertRuleStatus,
) -> (Duration, Vec<Cond>) {
    new.groups = loaded::status(owner, &checked.groups, &a.rules, Some(&a.names), &new.groups);
    new.rules_loaded = Some(loaded::loaded(&new.groups) as i32);
    new.prometheus_version = Some(a.version.clone());
    judge(new, checked.rules(), &a.version)
}

/// Prometheus unreachable is a condition, looked at again in 30 s.
pub fn unreachable(e: &prom::PromError) -> (Duration, Vec<Cond>) {
    let c = Cond::new(CondType::Ready, false, "PrometheusUnreachable", e.to_string());
    (Duration::from_secs(30), vec![c])
}
