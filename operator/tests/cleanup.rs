//! Deleting a Platform that runs on a Host: the finalizer removes the application (units,
//! files, nginx site) and leaves other sites serving; with the Host unreachable the Platform
//! waits, says why, and the skip-cleanup annotation lets it go.

use std::time::Duration;

use anyhow::{Context as _, Result};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions::is_deleted};
use kube::{Api, Client, ResourceExt};
use nova::api::{Host, Platform};
use serde_json::json;
use test_cluster::testhost::TestHost;
use test_cluster::{Mode, shared};

mod common;
use common::{Operator, install_crds};

/// A site Nova did not make, served by the same nginx.
const OTHER_SITE: &str =
    "server { listen 80; server_name other.test; location / { return 200 \"other\\n\"; } }\n";

fn platform(name: &str, host: &str) -> Result<Platform> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Platform", "metadata": {"name": name},
        "spec": {"image": "shop:v1", "command": ["/usr/bin/python3", "/opt/app.py"],
                 "env": [{"name": "VERSION", "value": "v1"}], "domains": [format!("{name}.test")],
                 "health": {"path": "/healthz"}, "target": {"hosts": {"names": [host]}}},
    }))?)
}

fn ready(p: Option<&Platform>) -> bool {
    p.and_then(|p| p.status.as_ref())
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn get(th: &TestHost, host: &str) -> Result<String> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let r = http.get(format!("http://{}/", th.ssh_addr.ip())).header("Host", host).send().await?;
    Ok(r.text().await?)
}

/// What of application `id` is on the host, one path a line (empty: nothing).
fn leftovers(th: &TestHost, id: &str) -> Result<String> {
    Ok(th.ssh(&format!(
        "ls -d /etc/systemd/system/nova-{id}-* /etc/nova/apps/{id} /var/lib/nova/state/{id} /var/lib/nova/apps/{id} \
         /etc/nginx/sites-enabled/nova-{id}.conf /etc/nginx/nova/proxy_{id}.conf 2>/dev/null || true"
    ))?)
}

async fn start(client: &Client, name: &str) -> Result<(String, TestHost, Operator, String)> {
    let cp = shared(Mode::ApiServer).await?;
    install_crds(client).await?;
    let ns = cp.namespace(client, name).await?;
    let (th, hostname) = common::app_host(client, &ns, "clean").await?;
    let op = Operator::start(client.clone(), &ns).await?;
    Ok((ns, th, op, hostname))
}

#[tokio::test]
async fn deletion_removes_the_application_and_waits_for_an_unreachable_host() -> Result<()> {
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    let (ns, th, op, hostname) = start(&client, "cleanup").await?;
    let platforms: Api<Platform> = Api::namespaced(client.clone(), &ns);
    platforms.create(&PostParams::default(), &platform("shop", &hostname)?).await?;
    tokio::time::timeout(Duration::from_secs(180), await_condition(platforms.clone(), "shop", ready))
        .await
        .context("Platform Ready on the host")??;
    assert!(platforms.get("shop").await?.finalizers().contains(&"nova.infra.dev/cleanup".to_owned()));
    th.ssh(&format!(
        "printf '%s' {} > /etc/nginx/sites-enabled/other.conf && nginx -s reload",
        shell_words(OTHER_SITE)
    ))?;
    test_cluster::eventually("the other site", Duration::from_secs(20), || async {
        Ok::<_, anyhow::Error>(get(&th, "other.test").await.is_ok_and(|b| b == "other\n"))
    })
    .await?;
    assert_eq!(get(&th, "shop.test").await?, "v1 blue\n");
    let id = format!("{ns}-shop");
    assert!(!leftovers(&th, &id)?.trim().is_empty(), "the application is on the host");

    // Deleted: nothing of it is left, nginx runs and serves the other site.
    let uid = platforms.get("shop").await?.uid().context("uid")?;
    platforms.delete("shop", &DeleteParams::default()).await?;
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(platforms.clone(), "shop", is_deleted(&uid)),
    )
    .await
    .context("the Platform goes once cleaned up")??;
    assert_eq!(leftovers(&th, &id)?.trim(), "", "nothing of the application is left");
    assert_eq!(th.ssh(&format!("systemctl is-active nova-{id}-blue || true"))?.trim(), "inactive");
    assert_eq!(th.ssh("systemctl is-active nginx")?.trim(), "active");
    assert_eq!(get(&th, "other.test").await?, "other\n", "other sites are untouched");

    // The host becomes unreachable (its SSH port now refuses): deletion waits and says why.
    platforms.create(&PostParams::default(), &platform("blog", &hostname)?).await?;
    tokio::time::timeout(Duration::from_secs(180), await_condition(platforms.clone(), "blog", ready))
        .await
        .context("second Platform Ready")??;
    let hosts: Api<Host> = Api::all(client.clone());
    hosts.patch(&hostname, &PatchParams::default(), &Patch::Merge(json!({"spec": {"port": 1}}))).await?;
    let uid = platforms.get("blog").await?.uid().context("uid")?;
    platforms.delete("blog", &DeleteParams::default()).await?;
    let stalled = |p: Option<&Platform>| {
        p.and_then(|p| p.status.as_ref()).is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == "CleanupBlocked")
        })
    };
    tokio::time::timeout(Duration::from_secs(60), await_condition(platforms.clone(), "blog", stalled))
        .await
        .context("a Stalled condition saying why deletion waits")??;
    let p = platforms.get("blog").await?;
    assert!(p.metadata.deletion_timestamp.is_some(), "still there, being deleted");
    let msg =
        p.status.unwrap_or_default().conditions.into_iter().find(|c| c.type_ == "Stalled").unwrap().message;
    assert!(msg.contains(&hostname) && msg.contains("nova.infra.dev/skip-cleanup"), "{msg}");

    // A person lets it go: gone, the application stays on the host as the annotation says.
    let skip = json!({"metadata": {"annotations": {"nova.infra.dev/skip-cleanup": "true"}}});
    platforms.patch("blog", &PatchParams::default(), &Patch::Merge(skip)).await?;
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(platforms.clone(), "blog", is_deleted(&uid)),
    )
    .await
    .context("released by the annotation")??;
    assert!(!leftovers(&th, &format!("{ns}-blog"))?.trim().is_empty(), "left on the host, as asked");
    hosts.delete(&hostname, &DeleteParams::default()).await?;
    op.stop().await
}

/// `s` as one single-quoted shell word.
fn shell_words(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
