//! Leader fencing: a controller writes only while this process certainly holds the lease. The
//! elector moves the fence forward on each renewal; the fence runs on the monotonic clock, so
//! a process frozen (SIGSTOP, a long GC-like pause, a suspended VM) past it finds it closed
//! when it wakes, before it has learnt from the apiserver that another replica took over.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Fence {
    /// None: no leader election (the CLI, tests): always open.
    until: Option<Arc<Mutex<Instant>>>,
}

impl Fence {
    /// A fence that is always open.
    pub fn open() -> Self {
        Self { until: None }
    }

    /// A fence closed until the first [`renewed`](Self::renewed).
    pub fn closed() -> Self {
        Self { until: Some(Arc::new(Mutex::new(Instant::now()))) }
    }

    /// The lease was taken or renewed by a request sent at `sent`: writes are safe for `safe`
    /// after that (less than the lease duration, so that others wait longer than we write).
    pub fn renewed(&self, sent: Instant, safe: Duration) {
        if let Some(u) = &self.until {
            let mut until = u.lock().unwrap_or_else(|p| p.into_inner());
            *until = (*until).max(sent + safe);
        }
    }

    /// Whether a write now is safe.
    pub fn is_open(&self) -> bool {
        match &self.until {
            None => true,
            Some(u) => Instant::now() < *u.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Closes the fence at once (the lease was lost or given up).
    pub fn close(&self) {
        if let Some(u) = &self.until {
            *u.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        }
    }
}

/// Refused by a fenced client: the leader lease is not held (any more).
#[derive(Debug, thiserror::Error)]
#[error("not writing: the leader lease is not held (any more)")]
pub struct Fenced;

/// `inner`, refusing every request but a read while `fence` is closed: whatever a controller
/// writes (objects, status, events) goes through it, so a leader frozen mid-reconcile cannot
/// finish its writes after waking. The elector keeps the unfenced client for the lease.
pub fn fenced_client(inner: kube::Client, fence: Fence) -> kube::Client {
    let ns = inner.default_namespace().to_owned();
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let (inner, fence) = (inner.clone(), fence.clone());
        async move {
            let read =
                matches!(*req.method(), http::Method::GET | http::Method::HEAD | http::Method::OPTIONS);
            if !read && !fence.is_open() {
                return Err(tower::BoxError::from(Fenced));
            }
            inner.send(req).await.map_err(tower::BoxError::from)
        }
    });
    kube::Client::new(service, ns)
}

impl Default for Fence {
    fn default() -> Self {
        Self::open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A closed fence refuses writes before they leave the process; reads go through.
    #[tokio::test]
    async fn a_fenced_client_refuses_writes_when_closed() {
        use crate::kit::verifier::{self, Expect};
        let (client, fake) = verifier::client();
        let fence = Fence::closed();
        let fenced = fenced_client(client, fence.clone());
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(fenced, "default");
        let answer = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}});
        let script = vec![
            Expect::get("/api/v1/namespaces/default/configmaps/a", http::StatusCode::OK, answer.clone()),
            Expect::patch("/api/v1/namespaces/default/configmaps/a", answer),
        ];
        let run = fake.run(script);
        api.get("a").await.expect("a read goes through a closed fence");
        let pp = kube::api::PatchParams::apply("nova");
        let patch = kube::api::Patch::Apply(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap"}));
        let refused = api.patch("a", &pp, &patch).await.expect_err("a write is refused");
        assert!(format!("{refused:?}").contains("Fenced"), "{refused:?}");
        fence.renewed(Instant::now(), Duration::from_secs(60));
        api.patch("a", &pp, &patch).await.expect("open again: the write goes through");
        run.await.expect("the fake apiserver saw the read and the one allowed write");
    }

    #[test]
    fn open_only_within_the_safe_time_after_a_renewal() {
        let f = Fence::closed();
        assert!(!f.is_open(), "closed until the lease is held");
        f.renewed(Instant::now(), Duration::from_secs(60));
        assert!(f.is_open());
        let earlier = Instant::now() - Duration::from_secs(120);
        f.renewed(earlier, Duration::from_secs(60));
        assert!(f.is_open(), "an older renewal never moves the fence back");
        f.close();
        assert!(!f.is_open());
        f.renewed(earlier, Duration::from_secs(60));
        assert!(!f.is_open(), "expired by the time it was recorded");
        assert!(Fence::open().is_open());
    }
}
