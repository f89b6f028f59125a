//! Container logs on the simulated cluster. kwok serves `pods/log` as a kubelet does: its server
//! listens on the nodes' kubelet port, the apiserver's kubelet proxy reaches it, and it reads each
//! container's log from the file a `Logs` object (kwok's CRD, installed here) names for the pod.
//! A test gives a pod a log with [`ControlPlane::pod_log`] and appends the lines its container
//! would print, so code that reads `pods/log` is tested through the real API path.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client};
use serde_json::json;

use crate::{ControlPlane, Error, Result};

const LOGS_CRD: &str = include_str!("kwok-logs-crd.yaml");

/// Installs kwok's `Logs` CRD and waits until it is served, before kwok starts watching it.
pub(crate) async fn install_crd(client: &Client, timeout: Duration) -> Result<()> {
    let crd: CustomResourceDefinition = serde_yaml::from_str(LOGS_CRD)
        .map_err(|e| Error::Other(format!("kwok's Logs CRD does not parse: {e}")))?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await?;
    let established = await_condition(crds, "logs.kwok.x-k8s.io", conditions::is_crd_established());
    match tokio::time::timeout(timeout, established).await {
        Ok(done) => done.map(drop).map_err(|e| Error::Other(format!("watching kwok's Logs CRD: {e}"))),
        Err(_) => Err(Error::Timeout {
            what: "kwok's Logs CRD to be established".into(),
            seconds: timeout.as_secs(),
        }),
    }
}

/// The log of one pod's containers: lines appended here are what `pods/log` returns.
pub struct PodLog {
    path: PathBuf,
}

impl PodLog {
    /// Appends `line` as the container printed it on stdout, in the CRI log format a kubelet
    /// reads (`<RFC 3339 time> stdout F <line>`).
    pub fn append(&self, line: &str) -> Result<()> {
        let now = k8s_openapi::jiff::Timestamp::now();
        let record = format!("{now} stdout F {line}\n");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::io(format!("opening {}", self.path.display()), e))?;
        // One write per line: kwok never reads half a record.
        f.write_all(record.as_bytes())
            .map_err(|e| Error::io(format!("appending to {}", self.path.display()), e))
    }
}

impl ControlPlane {
    /// Gives the pod `namespace/pod` (which need not exist yet) a log that tests append to.
    /// Until the first line is appended, reading it fails as a kubelet's would for a container
    /// that has not started.
    pub async fn pod_log(&self, client: &Client, namespace: &str, pod: &str) -> Result<PodLog> {
        let dir = self.state_dir().join("pod-logs");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating the pod log directory", e))?;
        let path = dir.join(format!("{namespace}_{pod}.log"));
        let gvk = GroupVersionKind::gvk("kwok.x-k8s.io", "v1alpha1", "Logs");
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &ApiResource::from_gvk_with_plural(&gvk, "logs"));
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Logs",
            "metadata": {"name": pod, "namespace": namespace},
            "spec": {"logs": [{"logsFile": path.display().to_string(), "follow": false}]},
        }))
        .map_err(|e| Error::Other(format!("a Logs object: {e}")))?;
        api.create(&PostParams::default(), &obj).await?;
        Ok(PodLog { path })
    }
}
