//! Leader election on a coordination.k8s.io Lease: only the holder runs controllers (and so
//! only it writes). Optimistic concurrency on the Lease's resourceVersion decides races.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tracing::info;

use crate::kit::Fence;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    fence: Fence,
}

impl Elector {
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        Self { api: Api::namespaced(client, &cfg.namespace), cfg, fence: Fence::closed() }
    }

    /// Open while the lease is certainly ours: for half the lease duration after each request
    /// that took or renewed it was sent. Others wait the whole duration after the renewal, so
    /// this process stops writing well before anyone else may start.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// How long one attempt to take or renew the lease may take: a request stuck on a half-open
    /// connection must not outlive the lease.
    fn deadline(&self) -> Duration {
        (self.cfg.lease_duration / 4).max(Duration::from_millis(500))
    }

    /// One attempt with a deadline; the fence moves forward when it succeeds.
    async fn attempt(&self) -> Result<bool, kube::Error> {
        let sent = Instant::now();
        let got = match tokio::time::timeout(self.deadline(), self.try_acquire()).await {
            Ok(r) => r?,
            Err(_) => {
                let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "the lease request timed out");
                return Err(kube::Error::Service(Box::new(e)));
            }
        };
        if got {
            self.fence.renewed(sent, self.cfg.lease_duration / 2);
        }
        Ok(got)
    }

    /// Tries once to take or renew the lease; true when we hold it afterwards.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let seconds = self.cfg.lease_duration.as_secs() as i32;
        let fresh = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: acquired.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        };
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.cfg.name.clone()), ..Default::default() },
                spec: Some(fresh(0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(&self.cfg.identity);
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(MicroTime(renewed)), Some(d)) => *renewed + SignedDuration::from_secs(d.into()) < now,
            _ => true,
        };
        if !ours && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        lease.spec = Some(fresh(transitions, if ours { spec.acquire_time } else { None }));
        // replace() carries the resourceVersion we read: a concurrent writer makes it 409.
        match self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (on a graceful stop), so a standby takes over at once.
    pub async fn release(&self) {
        self.fence.close();
        let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(&self.cfg.identity) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        if let Err(e) = self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await {
            tracing::warn!(error = %e, "could not release the lease");
        }
    }

    /// Waits until we hold the lease.
    pub async fn acquire(&self) -> Result<(), kube::Error> {
        let mut tick = tokio::time::interval(self.cfg.renew_every);
        loop {
            tick.tick().await;
            if self.attempt().await? {
                info!(identity = %self.cfg.identity, lease = %self.cfg.name, "became leader");
                return Ok(());
            }
        }
    }

    /// Renews until the lease is lost or renewals keep failing for half the lease duration;
    /// returns then, with the fence closed. The caller must stop its controllers: another
    /// replica may take over once the lease duration has passed since the last renewal.
    pub async fn hold(&self) -> String {
        let why = self.renew_until_lost().await;
        self.fence.close();
        why
    }

    async fn renew_until_lost(&self) -> String {
        let mut tick = tokio::time::interval(self.cfg.renew_every);
        tick.tick().await;
        let mut last_ok = Instant::now();
        loop {
            tick.tick().await;
            match self.attempt().await {
                Ok(true) => last_ok = Instant::now(),
                Ok(false) => return "another replica holds the lease".into(),
                // A transient API error is survivable while the lease is still ours.
                Err(e) if last_ok.elapsed() < self.cfg.lease_duration / 2 => {
                    tracing::warn!(error = %e, "lease renewal failed; retrying");
                }
                Err(e) => return format!("lease renewal kept failing: {e}"),
            }
            if last_ok.elapsed() >= self.cfg.lease_duration / 2 {
                return "the lease could not be renewed in time".into();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An apiserver that accepts connections and never answers, as a half-open connection
    /// looks: a leader there gives up (fence closed) within half the lease duration plus one
    /// attempt's deadline, instead of hanging on the request.
    #[tokio::test]
    async fn a_leader_that_cannot_renew_closes_its_fence_in_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let client = crate::kubeclient::for_config(config).unwrap();
        let cfg = LeaseConfig {
            namespace: "default".into(),
            name: "nova-operator".into(),
            identity: "a".into(),
            lease_duration: Duration::from_secs(4),
            renew_every: Duration::from_millis(200),
        };
        let e = Elector::new(client, cfg);
        let fence = e.fence();
        // As if the lease had just been taken.
        fence.renewed(Instant::now(), Duration::from_secs(2));
        assert!(fence.is_open());
        let started = Instant::now();
        let why = tokio::time::timeout(Duration::from_secs(10), e.hold()).await.expect("hold returns");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(4), "gave up after {took:?}, the lease lasts 4 s: {why}");
        assert!(!fence.is_open(), "{why}");
    }
}
