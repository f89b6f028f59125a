//! What every controller shares, and the error type reconciles return.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::runtime::reflector::Store;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::api::BlueGreenDeployment;
use crate::state::State;
use crate::telemetry::{ErrorCategory, Metrics};

/// The one field manager Nova applies with.
pub const FIELD_MANAGER: &str = "nova";

/// Caches of the objects Nova owns, fed by the same watches that trigger reconciles. Reading
/// them costs no API request, so a reconcile with nothing to change writes nothing.
#[derive(Clone)]
pub struct ChildStores {
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub ingresses: Store<Ingress>,
    pub bluegreens: Store<BlueGreenDeployment>,
}

pub struct Context {
    pub client: Client,
    /// The operator's own namespace: where cluster-scoped objects' Secrets live (Host keys).
    pub namespace: String,
    pub metrics: Metrics,
    pub recorder: Recorder,
    pub state: State,
    pub children: ChildStores,
    /// For the blue-green health gate and Prometheus analysis.
    pub http: reqwest::Client,
    /// Per owner UID, the generation whose children were last applied in full. Only in memory:
    /// after a restart everything is applied once again.
    pub applied: Mutex<HashMap<String, i64>>,
    /// Per BlueGreenDeployment UID, the status this process last wrote. A reconcile triggered by
    /// a child's event can see its owner from the watch cache before the cache holds that
    /// write; deciding from the stale status would repeat a switch. Only the leader writes
    /// status, so what it wrote last is the newest there is.
    pub written: Mutex<HashMap<String, crate::api::bluegreen::BlueGreenDeploymentStatus>>,
    /// Certificates: settings, HTTP-01 answers, ACME accounts.
    pub certs: crate::certs::Shared,
    /// SSH sessions to Hosts, kept between reconciles.
    pub ssh: crate::ssh::Pool,
}

/// How long an unused SSH session to a Host stays open (Hosts are re-checked every few minutes).
pub const SSH_IDLE: Duration = Duration::from_secs(600);

impl Context {
    pub fn new(
        client: Client,
        namespace: String,
        metrics: Metrics,
        state: State,
        children: ChildStores,
        certs: crate::certs::Shared,
    ) -> Arc<Self> {
        let reporter = Reporter { controller: "nova".into(), instance: std::env::var("POD_NAME").ok() };
        let recorder = Recorder::new(client.clone(), reporter);
        // Health checks go to pod addresses: never through a proxy from the environment.
        let http = reqwest::Client::builder().no_proxy().build().expect("an HTTP client without custom TLS");
        Arc::new(Self {
            client,
            namespace,
            metrics,
            recorder,
            state,
            children,
            http,
            applied: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
            certs,
            ssh: crate::ssh::Pool::new(SSH_IDLE),
        })
    }
}

impl Context {
    /// Records an event on `obj`. Best effort: failing to record one is logged and never fails
    /// the reconcile. Notes are cut to 1000 characters.
    pub async fn publish(
        &self,
        obj: &ObjectReference,
        action: &str,
        type_: EventType,
        reason: &str,
        note: &str,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: (!note.is_empty()).then(|| note.chars().take(1000).collect()),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, obj).await {
            tracing::warn!(error = %e, "could not publish an event");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("state database: {0}")]
    State(#[from] crate::state::Error),
    #[error("{0}")]
    InvalidSpec(String),
}

impl Error {
    pub fn category(&self) -> ErrorCategory {
        match self {
            Error::Kube(_) => ErrorCategory::KubeApi,
            Error::State(_) => ErrorCategory::State,
            Error::InvalidSpec(_) => ErrorCategory::InvalidSpec,
        }
    }
}

/// Retry failed reconciles; the controller's per-object backoff spaces repeated failures.
pub fn requeue_after_error(err: &Error) -> Action {
    match err.category() {
        ErrorCategory::InvalidSpec => Action::requeue(Duration::from_secs(300)),
        _ => Action::requeue(Duration::from_secs(5)),
    }
}
