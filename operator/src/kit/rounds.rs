//! Group commit by key: reconciles that each want one costly step on the same target (a
//! `promtool check` and a Prometheus reload on a Host) join one round instead of taking turns.
//! The first to arrive runs a round for itself; whoever arrives while a round runs waits for the
//! next one, which takes every job queued by then. No timer: a lone job runs at once, and under
//! load the rounds grow by themselves to what arrived during the previous one.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use tokio::sync::oneshot;

type Pending<J, R> = Vec<(J, oneshot::Sender<R>)>;

struct Queue<J, R> {
    pending: Mutex<Pending<J, R>>,
    /// Held by the reconcile running a round for this key.
    turn: tokio::sync::Mutex<()>,
}

/// How the rounds of one component go, by key: rounds run, jobs they took (their ratio is the
/// mean round size) and jobs waiting for a round now.
#[derive(Clone)]
pub struct RoundMetrics {
    rounds: IntCounterVec,
    jobs: IntCounterVec,
    waiting: IntGaugeVec,
}

impl RoundMetrics {
    /// `prefix` names the component (`nova_alert_host`), `key` the label (`host`).
    pub fn register(registry: &Registry, prefix: &str, key: &str, what: &str) -> prometheus::Result<Self> {
        let m = Self {
            rounds: IntCounterVec::new(
                Opts::new(format!("{prefix}_rounds_total"), format!("Rounds of {what} run, by {key}.")),
                &[key],
            )?,
            jobs: IntCounterVec::new(
                Opts::new(
                    format!("{prefix}_round_jobs_total"),
                    format!(
                        "Objects the rounds of {what} took, by {key} (divided by the rounds: the mean round size)."
                    ),
                ),
                &[key],
            )?,
            waiting: IntGaugeVec::new(
                Opts::new(
                    format!("{prefix}_round_waiting"),
                    format!("Objects waiting for a round of {what}, by {key}."),
                ),
                &[key],
            )?,
        };
        registry.register(Box::new(m.rounds.clone()))?;
        registry.register(Box::new(m.jobs.clone()))?;
        registry.register(Box::new(m.waiting.clone()))?;
        Ok(m)
    }
}

/// One queue per key (a Host's name).
pub struct Rounds<J, R> {
    queues: Mutex<HashMap<String, Arc<Queue<J, R>>>>,
    metrics: Option<RoundMetrics>,
}

impl<J, R> Default for Rounds<J, R> {
    fn default() -> Self {
        Self { queues: Mutex::default(), metrics: None }
    }
}

impl<J, R> Rounds<J, R> {
    pub fn with_metrics(metrics: RoundMetrics) -> Self {
        Self { queues: Mutex::default(), metrics: Some(metrics) }
    }

    fn queue(&self, key: &str) -> Arc<Queue<J, R>> {
        let mut q = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        q.entry(key.to_owned())
            .or_insert_with(|| Arc::new(Queue { pending: Mutex::default(), turn: Default::default() }))
            .clone()
    }

    /// Jobs queued for `key` and not yet taken by a round.
    pub fn waiting(&self, key: &str) -> usize {
        self.queue(key).pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Queues `job` for `key` and returns its result, from the round that took it. `round` is
    /// used only when this caller's turn comes with jobs still queued (its own or later
    /// arrivals'): it gets them in arrival order and answers one result per job, in order.
    /// None: the round that took the job ended without answering it (it was cancelled).
    pub async fn submit<F, Fut>(&self, key: &str, job: J, round: F) -> Option<R>
    where
        F: FnOnce(Vec<J>) -> Fut,
        Fut: Future<Output = Vec<R>>,
    {
        let q = self.queue(key);
        let (tx, rx) = oneshot::channel();
        q.pending.lock().unwrap_or_else(|p| p.into_inner()).push((job, tx));
        if let Some(m) = &self.metrics {
            m.waiting.with_label_values(&[key]).inc();
        }
        {
            let _turn = q.turn.lock().await;
            let taken = std::mem::take(&mut *q.pending.lock().unwrap_or_else(|p| p.into_inner()));
            if let Some(m) = self.metrics.as_ref().filter(|_| !taken.is_empty()) {
                m.waiting.with_label_values(&[key]).sub(taken.len() as i64);
                m.rounds.with_label_values(&[key]).inc();
                m.jobs.with_label_values(&[key]).inc_by(taken.len() as u64);
            }
            if !taken.is_empty() {
                let (jobs, replies): (Vec<J>, Vec<_>) = taken.into_iter().unzip();
                for (reply, r) in replies.into_iter().zip(round(jobs).await) {
                    // A caller that stopped waiting has nothing to be told.
                    let _ = reply.send(r);
                }
            }
        }
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While one round runs, five callers queue; the next round takes all five at once, and
    /// each caller gets its own answer.
    #[tokio::test]
    async fn callers_that_arrive_during_a_round_share_the_next_one() {
        let registry = Registry::new();
        let metrics = RoundMetrics::register(&registry, "test", "host", "tests").unwrap();
        let rounds: Arc<Rounds<u32, u32>> = Arc::new(Rounds::with_metrics(metrics.clone()));
        let seen: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        let (release, hold) = oneshot::channel::<()>();
        let first = {
            let (rounds, seen) = (rounds.clone(), seen.clone());
            tokio::spawn(async move {
                rounds
                    .submit("host", 0, |jobs| async move {
                        seen.lock().unwrap().push(jobs.clone());
                        let _ = hold.await;
                        jobs.iter().map(|j| j * 10).collect()
                    })
                    .await
            })
        };
        while seen.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let mut later = Vec::new();
        for j in 1..=5 {
            let (rounds, seen) = (rounds.clone(), seen.clone());
            later.push(tokio::spawn(async move {
                rounds
                    .submit("host", j, |jobs| async move {
                        seen.lock().unwrap().push(jobs.clone());
                        jobs.iter().map(|j| j * 10).collect()
                    })
                    .await
            }));
        }
        while rounds.waiting("host") < 5 {
            tokio::task::yield_now().await;
        }
        assert_eq!(metrics.waiting.with_label_values(&["host"]).get(), 5);
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Some(0));
        for (j, h) in later.into_iter().enumerate() {
            assert_eq!(h.await.unwrap(), Some((j as u32 + 1) * 10));
        }
        assert_eq!(*seen.lock().unwrap(), vec![vec![0], vec![1, 2, 3, 4, 5]]);
        assert_eq!(metrics.rounds.with_label_values(&["host"]).get(), 2);
        assert_eq!(metrics.jobs.with_label_values(&["host"]).get(), 6);
        assert_eq!(metrics.waiting.with_label_values(&["host"]).get(), 0);
    }

    /// Keys do not wait for each other, and a lone caller runs its round at once.
    #[tokio::test]
    async fn another_key_runs_its_own_round_meanwhile() {
        let rounds: Arc<Rounds<u32, u32>> = Arc::default();
        let (release, hold) = oneshot::channel::<()>();
        let (started_tx, started) = oneshot::channel::<()>();
        let a = {
            let rounds = rounds.clone();
            tokio::spawn(async move {
                rounds
                    .submit("a", 1, |jobs| async move {
                        let _ = started_tx.send(());
                        let _ = hold.await;
                        jobs
                    })
                    .await
            })
        };
        started.await.unwrap();
        assert_eq!(rounds.submit("b", 2, |jobs| async move { jobs }).await, Some(2));
        release.send(()).unwrap();
        assert_eq!(a.await.unwrap(), Some(1));
    }

    /// A round that answers fewer jobs than it took leaves the rest with None, not hanging.
    #[tokio::test]
    async fn a_job_left_unanswered_gets_none() {
        let rounds: Rounds<u32, u32> = Rounds::default();
        assert_eq!(rounds.submit("h", 7, |_| async { Vec::new() }).await, None);
    }
}
