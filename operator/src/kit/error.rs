//! The one error type reconciles return, split in two: *blocked* (the user must change
//! something; a condition names the field, no error metric, a slow requeue) and *failed*
//! (transient or a bug; counted; retried with per-object backoff).

use std::time::Duration;

/// Why a reconcile failed. A small fixed set, so the metric label stays cheap and alertable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    /// The Kubernetes API refused or failed a request (often transient).
    KubeApi,
    /// Nova's own state database failed.
    State,
    /// A Host could not be reached, or a step on it failed.
    Host,
    /// An ACME server failed or refused.
    Acme,
    /// Nova broke one of its own invariants: a bug, never the user's input.
    Bug,
    /// The leader lease was lost; the process stops.
    Fenced,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KubeApi => "kube_api",
            Self::State => "state",
            Self::Host => "host",
            Self::Acme => "acme",
            Self::Bug => "bug",
            Self::Fenced => "fenced",
        }
    }
}

/// What the user must change, as a condition says it: a reason (CamelCase) and a message that
/// names the field and what would be accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub reason: &'static str,
    pub message: String,
    /// When to look again without a change (a missing Secret may appear; a bad spec will not,
    /// but a change to it triggers a reconcile anyway).
    pub retry: Duration,
}

/// How long a blocked object waits before it is looked at again without a change.
pub const BLOCKED_RETRY: Duration = Duration::from_secs(60);

impl Blocked {
    /// Something the spec names does not exist (yet).
    pub fn missing(message: impl Into<String>) -> Self {
        Self { reason: "MissingDependency", message: message.into(), retry: Duration::from_secs(15) }
    }

    /// The spec cannot be acted on as written.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self { reason: "InvalidSpec", message: message.into(), retry: Duration::from_secs(300) }
    }

    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self { reason, message: message.into(), retry: BLOCKED_RETRY }
    }

    pub fn retry(mut self, after: Duration) -> Self {
        self.retry = after;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed; `what` names the call ("applying Deployment
    /// shop/web").
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("state database: {0}")]
    State(#[from] crate::state::Error),
    /// A Host could not be reached or a step on it failed (the message never holds secrets).
    #[error("{0}")]
    Host(String),
    #[error("{0}")]
    Acme(String),
    /// An invariant of Nova's own code does not hold.
    #[error("internal error (a bug in Nova): {0}")]
    Bug(String),
    /// This process may no longer hold the leader lease; it writes nothing more.
    #[error("not writing: the leader lease is not held (any more)")]
    Fenced,
    /// Not a failure: the user must act. Controllers turn it into a condition.
    #[error("{}", .0.message)]
    Blocked(Blocked),
}

impl From<Blocked> for Error {
    fn from(b: Blocked) -> Self {
        Error::Blocked(b)
    }
}

/// Without a name for the call; prefer [`Call::call`], which says which call failed.
impl From<kube::Error> for Error {
    fn from(source: kube::Error) -> Self {
        Error::Kube { what: "Kubernetes API".into(), source }
    }
}

impl Error {
    /// The metric label; None for blocked, which is not a failure.
    pub fn category(&self) -> Option<Category> {
        Some(match self {
            Error::Kube { .. } => Category::KubeApi,
            Error::State(_) => Category::State,
            Error::Host(_) => Category::Host,
            Error::Acme(_) => Category::Acme,
            Error::Bug(_) => Category::Bug,
            Error::Fenced => Category::Fenced,
            Error::Blocked(_) => return None,
        })
    }
}

/// Names the Kubernetes call a result came from.
pub trait Call<T> {
    fn call(self, what: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> Call<T> for Result<T, kube::Error> {
    fn call(self, what: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|source| Error::Kube { what: what(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_which_call_failed_and_blocked_is_no_failure() {
        let e: Result<(), kube::Error> = Err(kube::Error::LinesCodecMaxLineLengthExceeded);
        let e = e.call(|| "reading Secret prod/db".into()).unwrap_err();
        assert!(e.to_string().starts_with("reading Secret prod/db: "), "{e}");
        assert_eq!(e.category(), Some(Category::KubeApi));
        let b: Error = Blocked::missing("Secret \"db\" named in spec.envFrom[0] does not exist").into();
        assert_eq!(b.category(), None);
        assert!(b.to_string().contains("spec.envFrom[0]"));
    }
}
