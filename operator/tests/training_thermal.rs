//! The thermal guard of pods on the simulated cluster. A real Prometheus (Debian's) scrapes a
//! stand-in for NVIDIA's DCGM exporter — there is no GPU here, so the reading is injected at
//! that seam, in the exporter's own metric and label names — and the operator reads the GPUs
//! through Prometheus. A hot GPU stops the gang (its pods deleted with their grace period to
//! checkpoint; phase Paused, ThermalPause); the same GPUs still warm keep it stopped; every one
//! cool starts a new attempt from the checkpoint, with no restart counted.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use nova::api::TrainingJob;
use nova::api::training::{TrainingJobStatus, TrainingPhase};
use serde_json::json;
use test_cluster::prometheus::Prometheus;
use test_cluster::{Mode, eventually, shared};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(90);

/// What the stand-in exporter serves on /metrics now.
#[derive(Clone, Default)]
struct Exporter(Arc<Mutex<String>>);

impl Exporter {
    /// Serves on a free loopback port until the test ends; returns `host:port`.
    async fn start(&self) -> Result<String> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?.to_string();
        let text = self.0.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = text.lock().unwrap().clone();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(format!("{head}{body}").as_bytes()).await;
            }
        });
        Ok(addr)
    }

    /// GPUs 0 and 1 of node `gpu-node-a` at these temperatures, labelled with the pods of
    /// `pods` (the exporter's Kubernetes mapping) or with none (GPUs no pod holds).
    fn set(&self, ns: &str, pods: Option<[&str; 2]>, temps: [i32; 2]) {
        let mut out = String::from("# TYPE DCGM_FI_DEV_GPU_TEMP gauge\n# TYPE DCGM_FI_DEV_FB_USED gauge\n");
        for (gpu, celsius) in temps.iter().enumerate() {
            let pod = pods.map_or(String::new(), |p| {
                format!(r#",container="trainer",namespace="{ns}",pod="{}""#, p[gpu])
            });
            let labels =
                format!(r#"gpu="{gpu}",UUID="GPU-{gpu}",modelName="NVIDIA H200",Hostname="gpu-node-a"{pod}"#);
            out += &format!(
                "DCGM_FI_DEV_GPU_TEMP{{{labels}}} {celsius}\nDCGM_FI_DEV_FB_USED{{{labels}}} 4096\n"
            );
        }
        *self.0.lock().unwrap() = out;
    }
}

async fn status_until(
    jobs: &Api<TrainingJob>,
    what: &str,
    f: impl Fn(&TrainingJobStatus) -> bool,
) -> Result<TrainingJobStatus> {
    eventually(what, WAIT, || async {
        let j = jobs.get("hot").await?;
        Ok::<_, kube::Error>(j.status.as_ref().is_some_and(&f))
    })
    .await?;
    Ok(jobs.get("hot").await?.status.unwrap_or_default())
}

async fn live_pods(pods: &Api<Pod>) -> Result<Vec<String>> {
    let list = pods.list(&ListParams::default().labels("nova.infra.dev/trainingjob=hot")).await?;
    Ok(list.items.into_iter().filter_map(|p| p.metadata.name).collect())
}

/// The job's events as (reason, note).
async fn events(client: &kube::Client, ns: &str) -> Result<Vec<(String, String)>> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = api.list(&ListParams::default().fields("involvedObject.name=hot")).await?;
    Ok(list
        .items
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect())
}

#[tokio::test]
async fn a_hot_gpu_stops_the_gang_and_every_gpu_cool_starts_it_again_without_a_restart() -> Result<()> {
    let exporter = Exporter::default();
    let target = exporter.start().await?;
    let prom = tokio::task::spawn_blocking(move || Prometheus::start(&[target])).await??;
    let cp = shared(Mode::Simulated).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, "train-heat").await?;
    let settings = nova::training::controller::Settings {
        prometheus_url: Some(prom.url().to_owned()),
        ..Default::default()
    };
    let op = common::Operator::start_training(client.clone(), &ns, settings).await?;
    let jobs: Api<TrainingJob> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    exporter.set(&ns, Some(["hot-a1-0", "hot-a1-1"]), [60, 62]);
    let job: TrainingJob = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "hot"},
        "spec": {"image": "trainer:1", "command": ["torchrun", "t.py"], "workers": 2, "gpusPerWorker": 1,
                 "thermal": {"pauseAboveCelsius": 85, "resumeBelowCelsius": 70}}}))?;
    jobs.create(&PostParams::default(), &job).await?;
    let st = status_until(&jobs, "running with GPU readings", |s| {
        s.phase == Some(TrainingPhase::Running)
            && s.workers.iter().any(|w| w.index == 1 && w.gpu_temperature_celsius == Some(62))
    })
    .await?;
    let w1 = &st.workers[1];
    assert_eq!(
        (w1.host.as_deref(), w1.gpus.as_deref(), w1.gpu_memory_used_mib),
        (Some("gpu-node-a"), Some("1"), Some(4096))
    );

    exporter.set(&ns, Some(["hot-a1-0", "hot-a1-1"]), [60, 90]);
    status_until(&jobs, "paused", |s| s.phase == Some(TrainingPhase::Paused)).await?;
    let pause = events(&client, &ns).await?.into_iter().find(|(r, _)| r == "ThermalPause");
    let note = pause.map(|(_, n)| n).unwrap_or_default();
    assert!(note.contains("worker 1 GPU 1 is at 90 °C, above 85 °C"), "{note}");
    eventually("the gang's pods deleted", WAIT, || async {
        Ok::<_, anyhow::Error>(live_pods(&pods).await?.is_empty())
    })
    .await?;

    // The pods are gone; their GPUs, held by no pod, are still warm: stopped.
    exporter.set(&ns, None, [60, 75]);
    let st = status_until(&jobs, "the node's GPUs read while stopped", |s| {
        s.workers.iter().any(|w| w.index == 1 && w.gpu_temperature_celsius == Some(75))
    })
    .await?;
    assert_eq!((st.phase, st.attempt), (Some(TrainingPhase::Paused), Some(1)));
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").context("a Ready condition")?;
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "ThermalPause"), "{ready:?}");
    assert!(ready.message.contains("worker 1 GPU 1 is at 75 °C"), "{}", ready.message);
    assert!(live_pods(&pods).await?.is_empty(), "a new gang started while a GPU was at 75 °C");

    exporter.set(&ns, None, [60, 65]);
    let st = status_until(&jobs, "a new attempt", |s| s.attempt == Some(2)).await?;
    assert_eq!(st.restarts, Some(0), "a thermal pause is not a restart");
    eventually("attempt 2's pods", WAIT, || async {
        let names = live_pods(&pods).await?;
        Ok::<_, anyhow::Error>(names.len() == 2 && names.iter().all(|n| n.starts_with("hot-a2-")))
    })
    .await?;
    let reasons: Vec<String> = events(&client, &ns).await?.into_iter().map(|(r, _)| r).collect();
    assert!(
        reasons.iter().any(|r| r == "ThermalPause") && reasons.iter().any(|r| r == "ThermalResume"),
        "{reasons:?}"
    );
    let metrics = op.metrics().await?;
    assert!(
        metrics.lines().any(|l| l.starts_with("nova_training_gpu_temperature_celsius{")
            && l.contains(r#"name="hot""#)
            && l.contains(r#"host="gpu-node-a""#)),
        "no GPU temperature metric for the job"
    );
    op.stop().await
}
