//! AlertRules whose rules Prometheus has not loaded (or not yet evaluated) wait here instead of
//! each looking again twice a second: a hundred loading objects were two hundred reconciles a
//! second, and on a small machine they starved the first reconciles of the objects that came
//! next. One loop reads Prometheus's answer (the one the reconciles share) while any object
//! waits, and wakes only the objects whose rules Prometheus now answers differently. A long
//! requeue stays as the fallback.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::reflector::ObjectRef;
use tokio::sync::Notify;

use super::OWNER_LABEL;
use super::controller::Ctx;
use super::loaded::{RulesAnswer, evaluated};
use crate::api::AlertRule;

/// How often the loop reads Prometheus while objects wait (its answer is shared for as long).
pub const EVERY: Duration = super::memo::ANSWER_FOR;
/// A waiting object is looked at again after this long even when nothing woke it.
pub const FALLBACK: Duration = Duration::from_secs(30);

/// What Prometheus answers of one object's rules, in short.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// Its rules Prometheus has loaded.
    pub loaded: usize,
    /// Of those, the ones evaluated at least once.
    pub evaluated: usize,
}

/// Per owner key ([`OWNER_LABEL`]), the [`Seen`] of one answer, in one pass over it.
pub fn seen_by_owner(a: &RulesAnswer) -> HashMap<&str, Seen> {
    let mut out: HashMap<&str, Seen> = HashMap::new();
    for r in a.data.groups.iter().flat_map(|g| &g.rules).filter(|r| r.kind != "recording") {
        if let Some(owner) = r.labels.get(OWNER_LABEL) {
            let s = out.entry(owner.as_str()).or_default();
            s.loaded += 1;
            s.evaluated += usize::from(evaluated(&r.last_evaluation));
        }
    }
    out
}

/// The [`Seen`] of `owner` in `a`.
pub fn seen(owner: &str, a: &RulesAnswer) -> Seen {
    seen_by_owner(a).get(owner).copied().unwrap_or_default()
}

/// The objects waiting for Prometheus, each with what Prometheus answered when it last looked.
#[derive(Default)]
pub struct Waiting {
    objects: Mutex<HashMap<ObjectRef<AlertRule>, (String, Seen)>>,
    wake: Notify,
}

impl Waiting {
    /// `r` (owner key `owner`) waits until Prometheus answers of its rules other than `seen`.
    pub fn wait(&self, r: ObjectRef<AlertRule>, owner: String, seen: Seen) {
        self.objects.lock().unwrap_or_else(|p| p.into_inner()).insert(r, (owner, seen));
        // A permit is kept when the loop is not waiting yet, so no wake-up is lost.
        self.wake.notify_one();
    }

    /// `r` waits no more (loaded, deleted, or Prometheus unreachable).
    pub fn done(&self, r: &ObjectRef<AlertRule>) {
        self.objects.lock().unwrap_or_else(|p| p.into_inner()).remove(r);
    }

    pub fn len(&self) -> usize {
        self.objects.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The waiting objects whose rules `a` answers differently; they wait no more.
    pub fn changed(&self, a: &RulesAnswer) -> Vec<ObjectRef<AlertRule>> {
        let by_owner = seen_by_owner(a);
        let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        let woken: Vec<ObjectRef<AlertRule>> = objects
            .iter()
            .filter(|(_, (owner, seen))| by_owner.get(owner.as_str()).copied().unwrap_or_default() != *seen)
            .map(|(r, _)| r.clone())
            .collect();
        for r in &woken {
            objects.remove(r);
        }
        woken
    }
}

/// The objects to reconcile again, for the controller's `reconcile_on`: while any object waits,
/// Prometheus at `url` is read every [`EVERY`] and the objects it changed are yielded.
pub fn wakeups(ctx: Arc<Ctx>, url: String) -> impl Stream<Item = ObjectRef<AlertRule>> + Send {
    futures::stream::unfold((ctx, url), |(ctx, url)| async move {
        loop {
            let waiting = &ctx.families.waiting;
            if waiting.is_empty() {
                waiting.wake.notified().await;
                continue;
            }
            tokio::time::sleep(EVERY).await;
            // Unreachable: the reconciles say so and stop waiting; nothing to wake here.
            let Ok(a) = ctx.families.answer(&url).await else { continue };
            let woken = waiting.changed(&a.rules);
            if !woken.is_empty() {
                return Some((futures::stream::iter(woken), (ctx, url)));
            }
        }
    })
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(rules: &[(&str, bool)]) -> RulesAnswer {
        let rules: Vec<_> = rules
            .iter()
            .map(|(owner, done)| {
                let at = if *done { "2026-11-30T10:00:00Z" } else { "0001-01-01T00:00:00Z" };
                json!({"name": "A", "type": "alerting", "lastEvaluation": at, "labels": {OWNER_LABEL: owner}})
            })
            .collect();
        serde_json::from_value(json!({"data": {"groups": [{"name": "g", "rules": rules}]}})).unwrap()
    }

    fn r(name: &str) -> ObjectRef<AlertRule> {
        ObjectRef::new(name).within("ns")
    }

    #[test]
    fn only_the_objects_prometheus_answers_differently_are_woken() {
        let w = Waiting::default();
        let empty = answer(&[]);
        w.wait(r("a"), "ns/a".into(), seen("ns/a", &empty));
        w.wait(r("b"), "ns/b".into(), seen("ns/b", &empty));
        assert!(w.changed(&empty).is_empty(), "nothing new: nobody woken");
        let a_loaded = answer(&[("ns/a", false), ("ns/a", false)]);
        assert_eq!(w.changed(&a_loaded), vec![r("a")]);
        assert_eq!(w.len(), 1, "a waits no more; b still waits");
        // a looks again, sees its rules loaded but not evaluated, and waits for that.
        w.wait(r("a"), "ns/a".into(), seen("ns/a", &a_loaded));
        assert_eq!(seen("ns/a", &a_loaded), Seen { loaded: 2, evaluated: 0 });
        assert!(w.changed(&a_loaded).is_empty());
        let a_evaluated = answer(&[("ns/a", true), ("ns/a", true)]);
        assert_eq!(w.changed(&a_evaluated), vec![r("a")]);
        w.done(&r("b"));
        assert!(w.is_empty());
    }

    /// The loop against Debian's Prometheus: nothing is woken while Prometheus answers the
    /// same; the waiting object is woken once its rules are loaded; the apiserver is not asked.
    #[tokio::test]
    async fn the_loop_wakes_a_waiting_object_once_prometheus_loads_its_rules() {
        use test_cluster::prometheus::{Extra, Prometheus};
        let dir = tempfile::tempdir().expect("a directory");
        let extra = Extra { rules_dir: Some(dir.path().into()), ..Default::default() };
        let prom = Prometheus::start_with(&[], &extra).expect("Debian's prometheus");
        let (client, verifier) = crate::kit::verifier::client();
        let (store, _writer) = kube::runtime::reflector::store();
        let rounds =
            crate::kit::rounds::RoundMetrics::register(&prometheus::Registry::new(), "t", "host", "t")
                .expect("metrics");
        let families = super::super::memo::Alerts::new(Default::default(), store, rounds);
        let ctx = crate::context::Own::new(crate::context::Context::for_test(client).await, families);
        ctx.families.waiting.wait(r("shop"), "ns/shop".into(), Seen::default());
        let mut woken = Box::pin(wakeups(ctx.clone(), prom.url().into()));
        let early = tokio::time::timeout(EVERY * 4, woken.next()).await;
        assert!(early.is_err(), "woken while Prometheus had nothing new: {early:?}");
        let file = json!({"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "vector(1)",
            "labels": {OWNER_LABEL: "ns/shop"}}]}]});
        std::fs::write(dir.path().join("shop.yaml"), file.to_string()).expect("rule file");
        prom.reload().expect("reloaded");
        let got = tokio::time::timeout(Duration::from_secs(60), woken.next()).await;
        assert_eq!(got.ok().flatten(), Some(r("shop")));
        assert!(ctx.families.waiting.is_empty());
        verifier.no_more_calls(Duration::from_millis(100)).await;
    }
}
