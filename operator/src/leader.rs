//! Leader election on a coordination.k8s.io Lease: only the holder runs controllers (and so
//! only it writes). Optimistic concurrency on the Lease's resourceVersion decides races.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tracing::info;

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
}

impl Elector {
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        Self { api: Api::namespaced(client, &cfg.namespace), cfg }
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
            if self.try_acquire().await? {
                info!(identity = %self.cfg.identity, lease = %self.cfg.name, "became leader");
                return Ok(());
            }
        }
    }

    /// Renews until a renewal fails or the lease is lost; returns then. The caller must stop
    /// writing at once: another replica may take over after `lease_duration`.
    pub async fn hold(&self) -> String {
        let mut tick = tokio::time::interval(self.cfg.renew_every);
        tick.tick().await;
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            match self.try_acquire().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => return "another replica holds the lease".into(),
                // A transient API error is survivable while the lease is still ours.
                Err(e) if last_ok.elapsed() < self.cfg.lease_duration / 2 => {
                    tracing::warn!(error = %e, "lease renewal failed; retrying");
                }
                Err(e) => return format!("lease renewal kept failing: {e}"),
            }
        }
    }
}
