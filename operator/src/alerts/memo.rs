//! What the AlertRule controller keeps between reconciles, so that a hundred objects cost a
//! hundred small reconciles and not a hundred times everything: which of prometheus-operator's
//! kinds are served (asked again after a while), every AlertRule (the controller's own watch
//! cache, for the merged routing), the merged configuration last written, each object's rules
//! last written (so the reconciles that only look again while rules load write nothing),
//! Prometheus's last answer (shared by the reconciles of the same moment), and the rounds on
//! each Host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Client;
use kube::runtime::reflector::Store;

use super::controller::Settings;
use super::{hostctl, prom, targets};
use crate::api::AlertRule;
use crate::context::Error;
use crate::kit::rounds::{RoundMetrics, Rounds};

/// How long what the apiserver serves is believed (CRDs installed later are seen after this).
const SERVED_FOR: Duration = Duration::from_secs(30);
/// How long Prometheus's answer is shared.
pub const ANSWER_FOR: Duration = Duration::from_millis(250);
/// The merged configuration is written again after this long even when unchanged (someone
/// may have edited the Secret).
const MERGED_FOR: Duration = Duration::from_secs(300);
/// An object's rules are written again after this long even when its spec is unchanged (their
/// PrometheusRule or ConfigMap may have been edited or deleted): shorter than the controller's
/// refresh, so every refresh writes them.
const RULES_FOR: Duration = Duration::from_secs(240);

pub use super::prom::Answer;

pub struct Alerts {
    pub settings: Settings,
    /// Every AlertRule the controller watches.
    pub store: Store<AlertRule>,
    served: Mutex<Option<(Instant, targets::Served)>>,
    merged: tokio::sync::Mutex<Option<(Instant, String)>>,
    /// Per AlertRule UID: the generation whose rules were last written, where to, and when.
    rules: Mutex<HashMap<String, (i64, String, Instant)>>,
    answer: tokio::sync::Mutex<Option<(Instant, Arc<Answer>)>>,
    /// The objects whose rules Prometheus has not loaded yet.
    pub waiting: super::loading::Waiting,
    /// The objects of each Host that arrive together share one check and one reload.
    pub rounds: Rounds<hostctl::Job, hostctl::Outcome>,
}

impl Alerts {
    pub fn new(settings: Settings, store: Store<AlertRule>, rounds: RoundMetrics) -> Self {
        Self {
            settings,
            store,
            served: Mutex::default(),
            merged: Default::default(),
            rules: Mutex::default(),
            waiting: Default::default(),
            answer: Default::default(),
            rounds: Rounds::with_metrics(rounds),
        }
    }

    pub async fn served(&self, client: &Client) -> Result<targets::Served, Error> {
        if let Some((at, s)) = *self.served.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < SERVED_FOR
        {
            return Ok(s);
        }
        let s = targets::served(client).await?;
        *self.served.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), s));
        Ok(s)
    }

    /// Writes the merged configuration `text` with `put`, unless it is what was last written
    /// (lately). One write at a time: the reconciles of objects created together all merge the
    /// same text, and without this each of them wrote it.
    pub async fn write_merged<F, Fut>(&self, text: String, put: F) -> Result<(), Error>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<(), Error>>,
    {
        let mut last = self.merged.lock().await;
        if matches!(&*last, Some((at, t)) if *t == text && at.elapsed() < MERGED_FOR) {
            return Ok(());
        }
        put(text.clone()).await?;
        *last = Some((Instant::now(), text));
        Ok(())
    }

    /// Whether `uid`'s rules of `generation` were written to `to` less than [`RULES_FOR`] ago.
    pub fn rules_written(&self, uid: &str, generation: i64, to: &str) -> bool {
        let m = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        matches!(m.get(uid), Some((g, t, at)) if *g == generation && t == to && at.elapsed() < RULES_FOR)
    }

    pub fn mark_rules_written(&self, uid: String, generation: i64, to: String) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).insert(uid, (generation, to, Instant::now()));
    }

    /// `uid` is gone (or its rules were removed): its next rules are written whatever they are.
    pub fn forget_rules(&self, uid: &str) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).remove(uid);
    }

    /// Prometheus's answer, asked at most once per [`ANSWER_FOR`].
    pub async fn answer(&self, url: &str) -> Result<Arc<Answer>, prom::PromError> {
        let mut last = self.answer.lock().await;
        if let Some((at, a)) = &*last
            && at.elapsed() < ANSWER_FOR
        {
            return Ok(a.clone());
        }
        let a = Arc::new(prom::answer(url).await?);
        *last = Some((Instant::now(), a.clone()));
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn alerts() -> Alerts {
        let (store, _writer) = kube::runtime::reflector::store();
        let rounds = RoundMetrics::register(&prometheus::Registry::new(), "t", "host", "t").expect("metrics");
        Alerts::new(Settings::default(), store, rounds)
    }

    #[test]
    fn rules_are_written_again_for_a_new_generation_another_target_or_once_forgotten() {
        let a = alerts();
        assert!(!a.rules_written("u1", 1, "ConfigMap ns/nova-x"));
        a.mark_rules_written("u1".into(), 1, "ConfigMap ns/nova-x".into());
        assert!(a.rules_written("u1", 1, "ConfigMap ns/nova-x"), "the same generation, lately: not again");
        assert!(!a.rules_written("u1", 2, "ConfigMap ns/nova-x"), "a new generation");
        assert!(!a.rules_written("u1", 1, "PrometheusRule ns/nova-x"), "prometheus-operator installed since");
        assert!(!a.rules_written("u2", 1, "ConfigMap ns/nova-x"), "another object");
        a.forget_rules("u1");
        assert!(!a.rules_written("u1", 1, "ConfigMap ns/nova-x"));
    }

    #[tokio::test]
    async fn merges_of_the_same_text_at_once_write_it_once() {
        let alerts = alerts();
        let writes = AtomicUsize::new(0);
        let put = |_: String| async {
            writes.fetch_add(1, Ordering::SeqCst);
            // The write takes a while, as the apiserver's does: the other merge arrives meanwhile.
            tokio::task::yield_now().await;
            Ok(())
        };
        let (a, b) = tokio::join!(alerts.write_merged("x".into(), put), alerts.write_merged("x".into(), put));
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(writes.load(Ordering::SeqCst), 1);
        alerts.write_merged("y".into(), put).await.expect("written");
        assert_eq!(writes.load(Ordering::SeqCst), 2, "another text is written");
    }
}
