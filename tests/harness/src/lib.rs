//! A real Kubernetes control plane on loopback, for Nova's tests and dev cluster.
//!
//! [`ControlPlane::start`] runs etcd and kube-apiserver (client-certificate authentication, RBAC,
//! service-account tokens) on free loopback ports in a private directory. In
//! [`Mode::Simulated`] it adds kube-controller-manager, kube-scheduler and kwok with fake nodes,
//! so Deployments, ReplicaSets, Pods, EndpointSlices, Jobs and garbage collection behave as in a
//! cluster while no container ever runs.
//!
//! Tests share one control plane per test binary through [`shared`] and take a fresh namespace
//! each with [`ControlPlane::namespace`]. Every process started here dies with the process that
//! started it (see `process.rs`), also after a panic.

pub mod alertmanager;
mod binaries;
pub mod bind;
pub mod cgroup;
mod cluster;
pub mod images;
pub mod netns;
pub mod pebble;
mod pki;
mod podlogs;
pub mod postgres;
mod process;
pub mod prometheus;
pub mod record;
pub mod s3;
pub mod sinks;
pub mod testhost;

use std::path::PathBuf;
use std::process::ExitStatus;

pub use binaries::{
    bin_dir, dashboard_check_dir, gitops_check_dir, pinned_version, prometheus_operator_crds_dir,
    seaweedfs_dir,
};
pub use cluster::{AuditedWrite, ControlPlane, Mode, Options, eventually};
pub use podlogs::PodLog;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building the control-plane binaries failed: {0}")]
    Build(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("generating certificates: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("{process} exited before the control plane was ready ({status}); end of its log:\n{log}")]
    Exited { process: &'static str, status: ExitStatus, log: String },
    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout { what: String, seconds: u64 },
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Other(String),
}

impl Error {
    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { what: what.into(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The control plane shared by all tests of one test binary, started on first use.
///
/// It is never dropped: its processes die with the test binary (parent-death signal) and its
/// directory is swept by the next start (see [`ControlPlane::start`]).
pub async fn shared(mode: Mode) -> Result<&'static ControlPlane> {
    static API_SERVER: tokio::sync::OnceCell<ControlPlane> = tokio::sync::OnceCell::const_new();
    static SIMULATED: tokio::sync::OnceCell<ControlPlane> = tokio::sync::OnceCell::const_new();
    let cell = match mode {
        Mode::ApiServer => &API_SERVER,
        Mode::Simulated => &SIMULATED,
    };
    cell.get_or_try_init(|| ControlPlane::start(Options::new(mode))).await
}
