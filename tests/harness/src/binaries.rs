//! Where the control-plane binaries are, building them on first use.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::Error;

const GO_MOD: &str = include_str!("../../control-plane/go.mod");
const BUILD_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../control-plane/build");

/// The Kubernetes version pinned in `tests/control-plane/go.mod`, e.g. `v1.36.3`.
pub fn pinned_version() -> &'static str {
    GO_MOD
        .lines()
        .find_map(|l| l.strip_prefix("require k8s.io/kubernetes "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("tests/control-plane/go.mod requires k8s.io/kubernetes")
}

/// The directory holding etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
/// kubectl, kwok and kwok-stages.yaml.
///
/// `NOVA_CONTROL_PLANE_BIN` names a prepared directory; otherwise `tests/control-plane/build`
/// runs (a no-op when the binaries are already built) and its last output line is the answer.
pub fn bin_dir() -> Result<PathBuf, Error> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| built("NOVA_CONTROL_PLANE_BIN", BUILD_SCRIPT)).clone().map_err(Error::Build)
}

/// The directory `env` names, or the last line `script` prints (it builds what is missing).
fn built(env: &str, script: &str) -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(env) {
        return Ok(dir.into());
    }
    let out = Command::new(script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running {script}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{script} failed with {}", out.status));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .ok_or_else(|| format!("{script} printed no directory"))
}

const PEBBLE_BUILD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../control-plane/pebble/build");

/// The directory holding a Pebble newer than Debian's (ARI, profiles), built from the Go
/// module pinned in `tests/control-plane/pebble/go.mod` on first use; `NOVA_PEBBLE_BIN` names
/// a prepared directory instead.
pub fn pebble_dir() -> Result<PathBuf, Error> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| built("NOVA_PEBBLE_BIN", PEBBLE_BUILD)).clone().map_err(Error::Build)
}

const SEAWEEDFS_BUILD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../control-plane/seaweedfs/build");

/// The directory holding SeaweedFS's `weed` (the S3-compatible server of the backup tests),
/// built from the Go module pinned in `tests/control-plane/seaweedfs/go.mod` on first use;
/// `NOVA_SEAWEEDFS_BIN` names a prepared directory instead.
pub fn seaweedfs_dir() -> Result<PathBuf, Error> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| built("NOVA_SEAWEEDFS_BIN", SEAWEEDFS_BUILD)).clone().map_err(Error::Build)
}

const GITOPS_CHECK_BUILD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../control-plane/gitops/build");

/// The directory holding `nova-gitops-check` (kstatus and Argo CD's Lua health runner), built
/// from the Go module in `tests/control-plane/gitops` on first use; `NOVA_GITOPS_CHECK_BIN`
/// names a prepared directory instead.
pub fn gitops_check_dir() -> Result<PathBuf, Error> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| built("NOVA_GITOPS_CHECK_BIN", GITOPS_CHECK_BUILD)).clone().map_err(Error::Build)
}

const DASHBOARD_CHECK_BUILD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../control-plane/dashboards/build");

/// The directory holding `nova-dashboard-check` (Grafana dashboards decoded strictly with
/// grafana-foundation-sdk), built from the Go module in `tests/control-plane/dashboards` on
/// first use; `NOVA_DASHBOARD_CHECK_BIN` names a prepared directory instead.
pub fn dashboard_check_dir() -> Result<PathBuf, Error> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| built("NOVA_DASHBOARD_CHECK_BIN", DASHBOARD_CHECK_BUILD)).clone().map_err(Error::Build)
}

const PROMETHEUS_OPERATOR_BUILD: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../control-plane/prometheus-operator/build");

/// The directory holding prometheus-operator's CRDs (PrometheusRule, AlertmanagerConfig,
/// Prometheus, ...), from the module pinned in `tests/control-plane/prometheus-operator/go.mod`,
/// fetched on first use; `NOVA_PROMETHEUS_OPERATOR_CRDS` names a prepared directory instead.
pub fn prometheus_operator_crds_dir() -> Result<PathBuf, Error> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| built("NOVA_PROMETHEUS_OPERATOR_CRDS", PROMETHEUS_OPERATOR_BUILD))
        .clone()
        .map_err(Error::Build)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pinned_version_is_a_release_tag() {
        let v = super::pinned_version();
        let parts: Vec<&str> = v.trim_start_matches('v').split('.').collect();
        assert!(v.starts_with("v1."), "{v}");
        assert_eq!(parts.len(), 3, "{v}");
        assert!(parts.iter().all(|p| p.parse::<u32>().is_ok()), "{v}");
    }
}
