//! Smoke tests of the simulated cluster: controllers, scheduler and kwok make workloads behave
//! as in a real cluster, with fake nodes and pods that never run a container.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Api, ResourceExt};
use serde_json::json;
use test_cluster::{Mode, eventually, shared};

const TIMEOUT: Duration = Duration::from_secs(90);

fn deployment_available() -> impl Condition<Deployment> {
    |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref()).is_some_and(|s| {
            s.available_replicas == Some(2)
                && s.conditions.iter().flatten().any(|c| c.type_ == "Available" && c.status == "True")
        })
    }
}

#[tokio::test]
async fn deployment_becomes_available_and_its_pods_are_garbage_collected() -> Result<()> {
    let cp = shared(Mode::Simulated).await?;
    let client = cp.client().await?;
    let ns = cp.namespace(&client, "deploy").await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);

    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]},
            },
        },
    }))?;
    deployments.create(&PostParams::default(), &deployment).await?;
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    }))?;
    Api::namespaced(client.clone(), &ns).create(&PostParams::default(), &svc).await?;

    tokio::time::timeout(TIMEOUT, await_condition(deployments.clone(), "web", deployment_available()))
        .await
        .context("Deployment never became Available")??;

    let running = pods.list(&ListParams::default().labels("app=web")).await?;
    assert_eq!(running.items.len(), 2);
    for pod in &running.items {
        let spec = pod.spec.as_ref().unwrap();
        assert!(
            spec.node_name.as_deref().is_some_and(|n| n.starts_with("kwok-node-")),
            "scheduled onto a fake node"
        );
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"), "{}", pod.name_any());
        assert!(status.pod_ip.is_some(), "kwok gives pods an address");
    }

    // The endpoint-slice controller publishes both ready pods behind the Service.
    eventually("2 ready endpoints", TIMEOUT, || {
        let slices = slices.clone();
        async move {
            let list = slices.list(&ListParams::default().labels("kubernetes.io/service-name=web")).await?;
            let ready = list
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter().flatten())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .count();
            Ok::<_, kube::Error>(ready == 2)
        }
    })
    .await?;

    // Background deletion: the garbage collector removes the ReplicaSet, then its pods.
    deployments.delete("web", &DeleteParams::background()).await?;
    eventually("pods to be garbage-collected", TIMEOUT, || {
        let pods = pods.clone();
        async move {
            Ok::<_, kube::Error>(pods.list(&ListParams::default().labels("app=web")).await?.items.is_empty())
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn kubectl_shows_the_fake_nodes_ready() -> Result<()> {
    let cp = shared(Mode::Simulated).await?;
    let out = cp.kubectl().args(["get", "nodes", "-o", "json"]).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let items = list["items"].as_array().context("items")?;
    assert_eq!(items.len(), 3);
    for node in items {
        let ready = node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        assert!(ready, "{} is not Ready", node["metadata"]["name"]);
    }
    Ok(())
}
