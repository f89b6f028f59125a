//! What the AlertRule controller keeps between reconciles, so that a hundred objects cost a
//! hundred small reconciles and not a hundred times everything: which of prometheus-operator's
//! kinds are served (asked again after a while), every AlertRule (the controller's own watch
//! cache, for the merged routing), the merged configuration last written, and Prometheus's
//! last answer (shared by the reconciles of the same moment), and the rounds on each Host.

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
const ANSWER_FOR: Duration = Duration::from_millis(250);
/// The merged configuration is written again after this long even when unchanged (someone
/// may have edited the Secret).
const MERGED_FOR: Duration = Duration::from_secs(300);

pub use super::prom::Answer;

pub struct Alerts {
    pub settings: Settings,
    /// Every AlertRule the controller watches.
    pub store: Store<AlertRule>,
    served: Mutex<Option<(Instant, targets::Served)>>,
    merged: Mutex<Option<(Instant, String)>>,
    answer: tokio::sync::Mutex<Option<(Instant, Arc<Answer>)>>,
    /// The objects of each Host that arrive together share one check and one reload.
    pub rounds: Rounds<hostctl::Job, hostctl::Outcome>,
}

impl Alerts {
    pub fn new(settings: Settings, store: Store<AlertRule>, rounds: RoundMetrics) -> Self {
        Self {
            settings,
            store,
            served: Mutex::default(),
            merged: Mutex::default(),
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

    /// Whether `text` differs from the merged configuration last written (or that is old).
    pub fn merged_changed(&self, text: &str) -> bool {
        let m = self.merged.lock().unwrap_or_else(|p| p.into_inner());
        !matches!(&*m, Some((at, t)) if t == text && at.elapsed() < MERGED_FOR)
    }

    pub fn merged_written(&self, text: String) {
        *self.merged.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), text));
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
