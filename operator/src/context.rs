//! What every controller shares, and the error type reconciles return.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};

use crate::state::State;
use crate::telemetry::{ErrorCategory, Metrics};

/// The one field manager Nova applies with.
pub const FIELD_MANAGER: &str = "nova";

pub struct Context {
    pub client: Client,
    pub metrics: Metrics,
    pub recorder: Recorder,
    pub state: State,
}

impl Context {
    pub fn new(client: Client, metrics: Metrics, state: State) -> Arc<Self> {
        let reporter = Reporter { controller: "nova".into(), instance: std::env::var("POD_NAME").ok() };
        let recorder = Recorder::new(client.clone(), reporter);
        Arc::new(Self { client, metrics, recorder, state })
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
