//! Hosts are shared machines: a namespace the Host does not allow is refused, with a condition
//! naming the Host and the rule, and nothing of it reaches the host; once the Host allows the
//! namespace (here by a label selector, read from the real apiserver) the same Platform runs.
//! A `distributeTo` path outside Nova's directory is refused at admission.

use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Api, Client};
use nova::api::{BlueGreenDeployment, Host, Platform, TlsCertificate};
use serde_json::json;
use test_cluster::{Mode, shared};
use tokio::sync::oneshot;

mod common;

fn platform(host: &str) -> Result<Platform> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Platform", "metadata": {"name": "shop"},
        "spec": {"image": "shop:v1", "command": ["/usr/bin/python3", "/opt/app.py"],
                 "env": [{"name": "VERSION", "value": "v1"}], "domains": ["shop.test"],
                 "health": {"path": "/healthz"}, "target": {"hosts": {"names": [host]}}},
    }))?)
}

fn condition(b: Option<&BlueGreenDeployment>, type_: &str, status: &str, reason: &str) -> bool {
    b.and_then(|b| b.status.as_ref()).is_some_and(|s| {
        s.conditions.iter().any(|c| c.type_ == type_ && c.status == status && c.reason == reason)
    })
}

type Running = (oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), nova::operator::Error>>);

/// The operator watching every namespace, trusting only its own (`ns`).
fn start_operator(client: Client, ns: &str, state: &tempfile::TempDir) -> Result<Running> {
    common::record_logs();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let cfg = nova::operator::Config {
        state_url: state.path().join("state.db").display().to_string(),
        http_addr: ([127, 0, 0, 1], port).into(),
        lease: nova::operator::default_lease(ns.to_owned(), "tenancy".into()),
        concurrency: 4,
        watch_namespace: None,
        trusted_namespaces: Vec::new(),
        alerts: Default::default(),
        training: Default::default(),
        host_binary: None,
        acme: Default::default(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(nova::operator::run(cfg, client, async move {
        let _ = stopped.await;
    }));
    Ok((stop, task))
}

#[tokio::test]
async fn a_namespace_the_host_does_not_allow_is_refused_until_it_is_allowed() -> Result<()> {
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let own = cp.namespace(&client, "tenancy-op").await?;
    let team = cp.namespace(&client, "tenancy-team").await?;
    let (th, host) = common::app_host(&client, &own, "ten").await?;
    let state = tempfile::tempdir()?;
    let (stop, operator) = start_operator(client.clone(), &own, &state)?;

    let platforms: Api<Platform> = Api::namespaced(client.clone(), &team);
    platforms.create(&PostParams::default(), &platform(&host)?).await?;
    let rollouts: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), &team);
    let refused = |b: Option<&BlueGreenDeployment>| condition(b, "Stalled", "True", "HostNotAllowed");
    let bg =
        tokio::time::timeout(Duration::from_secs(60), await_condition(rollouts.clone(), "shop", refused))
            .await
            .context("the rollout refused for Host")??
            .context("deleted")?;
    let stalled =
        bg.status.iter().flat_map(|s| &s.conditions).find(|c| c.type_ == "Stalled").context("Stalled")?;
    assert!(
        stalled.message.contains(&format!("Host {host} does not allow namespace {team}"))
            && stalled.message.contains(&own)
            && stalled.message.contains("spec.allowedNamespaces"),
        "{}",
        stalled.message
    );
    let id = format!("{team}-shop");
    let placed = |th: &test_cluster::testhost::TestHost| {
        th.ssh(&format!("ls -d /etc/systemd/system/nova-{id}-* /etc/nova/apps/{id} 2>/dev/null || true"))
    };
    assert_eq!(placed(&th)?.trim(), "", "nothing of the refused namespace on the host");

    // The Host's owner allows namespaces labelled team=b; the namespace gets the label.
    let hosts: Api<Host> = Api::all(client.clone());
    let allow = json!({"spec": {"allowedNamespaces": {"selector": {"matchLabels": {"team": "b"}}}}});
    hosts.patch(&host, &PatchParams::default(), &Patch::Merge(allow)).await?;
    let label = json!({"metadata": {"labels": {"team": "b"}}});
    Api::<Namespace>::all(client.clone()).patch(&team, &PatchParams::default(), &Patch::Merge(label)).await?;
    let healthy = |b: Option<&BlueGreenDeployment>| condition(b, "Ready", "True", "Healthy");
    tokio::time::timeout(Duration::from_secs(120), await_condition(rollouts.clone(), "shop", healthy))
        .await
        .context("the rollout Healthy once the Host allows the namespace")??;
    assert!(placed(&th)?.contains(&format!("nova-{id}-blue.service")), "{}", placed(&th)?);

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), operator).await???;
    Ok(())
}

#[tokio::test]
async fn distribute_to_paths_outside_nova_s_directory_are_refused_at_admission() -> Result<()> {
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, "tenancy-paths").await?;
    let certs: Api<TlsCertificate> = Api::namespaced(client.clone(), &ns);
    let cert = |field: &str, value: serde_json::Value| -> Result<TlsCertificate> {
        let mut d = json!({"hosts": {"names": ["web-1"]}});
        d[field] = value;
        Ok(serde_json::from_value(json!({
            "apiVersion": "nova.infra.dev/v1alpha1", "kind": "TlsCertificate", "metadata": {"name": "shop"},
            "spec": {"dnsNames": ["shop.test"], "issuerRef": {"name": "x"}, "secretName": "shop-tls",
                     "distributeTo": d}}))?)
    };
    for (field, value) in [
        ("certificatePath", json!("/etc/passwd")),
        ("keyPath", json!("/root/.ssh/authorized_keys")),
        ("certificatePath", json!("/etc/nova/tls/../../passwd")),
        ("extraPaths", json!(["/etc/nova/tls/ok.pem", "/etc/cron.d/x"])),
    ] {
        let err =
            certs.create(&PostParams::default(), &cert(field, value.clone())?).await.expect_err("refused");
        let msg = err.to_string();
        assert!(msg.contains(field) && msg.contains("/etc/nova/tls"), "{field} {value}: {msg}");
    }
    let ok = cert("certificatePath", json!("/etc/nova/tls/shop/fullchain.pem"))?;
    certs.create(&PostParams::default(), &ok).await?;
    Ok(())
}
