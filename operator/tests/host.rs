//! The Host controller against real machines: test hosts (systemd + sshd in namespaces) and the
//! real API server.

use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Api, Client};
use nova::api::Host;
use serde_json::json;
use test_cluster::testhost::TestHost;
use test_cluster::{Mode, shared};

mod common;
use common::{Operator, TIMEOUT, install_crds};

/// Hosts are cluster-scoped and every operator watches all of them, looking for their key
/// Secrets in its own namespace: the tests that run an operator with Hosts take turns.
static HOSTS_IN_USE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn key_secret(client: &Client, ns: &str, name: &str, host: &TestHost) -> Result<()> {
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": name}, "stringData": {"id_ed25519": host.client_key},
    }))?;
    Api::<Secret>::namespaced(client.clone(), ns).create(&PostParams::default(), &s).await?;
    Ok(())
}

fn host(name: &str, th: &TestHost, secret: &str, extra: serde_json::Value) -> Result<Host> {
    let mut spec = json!({
        "address": th.ssh_addr.ip().to_string(),
        "sshKeySecretRef": {"name": secret, "key": "id_ed25519"},
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Host", "metadata": {"name": name}, "spec": spec,
    }))?)
}

fn condition(h: &Host, type_: &str) -> Option<(String, String, String)> {
    h.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn wait(api: &Api<Host>, name: &str, what: &str, cond: impl Fn(&Host) -> bool) -> Result<Host> {
    let found = tokio::time::timeout(
        TIMEOUT,
        await_condition(api.clone(), name, |h: Option<&Host>| h.is_some_and(&cond)),
    )
    .await;
    match found {
        Ok(Ok(Some(h))) => Ok(h),
        _ => {
            let now = api.get(name).await?;
            anyhow::bail!("{name} never became {what}: {}", serde_json::to_string_pretty(&now.status)?)
        }
    }
}

#[tokio::test]
async fn facts_pinned_keys_mismatch_and_accept_new() -> Result<()> {
    let _turn = HOSTS_IN_USE.lock().await;
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    install_crds(&client).await?;
    let ns = cp.namespace(&client, "hosts").await?;
    let (a, b) = tokio::task::spawn_blocking(|| {
        std::thread::scope(|s| {
            let a = s.spawn(|| TestHost::start("vps-a"));
            let b = s.spawn(|| TestHost::start("vps-b"));
            (a.join().expect("thread"), b.join().expect("thread"))
        })
    })
    .await?;
    let (a, b) = (a?, b?);
    key_secret(&client, &ns, "key-a", &a).await?;
    key_secret(&client, &ns, "key-b", &b).await?;
    let op = Operator::start(client.clone(), &ns).await?;
    let hosts: Api<Host> = Api::all(client.clone());
    let suffix = ns.rsplit('-').next().unwrap_or("x").to_owned();
    let (good, wrong, new) = (format!("good-{suffix}"), format!("wrong-{suffix}"), format!("new-{suffix}"));

    // Pinned to the right key: reachable, facts in status and in the state database.
    hosts.create(&PostParams::default(), &host(&good, &a, "key-a", json!({"hostKey": a.host_key}))?).await?;
    let h = wait(&hosts, &good, "Ready", |h| condition(h, "Ready").is_some_and(|c| c.0 == "True")).await?;
    let st = h.status.clone().unwrap();
    let facts = st.facts.context("facts")?;
    assert_eq!(facts.os.as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
    assert!(
        facts.cpus.unwrap_or(0) >= 1
            && facts.memory_bytes.unwrap_or(0) > 0
            && facts.disk_bytes.unwrap_or(0) > 0
    );
    assert!(facts.kernel.is_some() && !facts.docker);
    assert!(facts.gpus.is_empty(), "no nvidia-smi on the host: no GPUs, and no error");
    assert_eq!(st.host_key_fingerprint, Some(nova::ssh::fingerprint(&a.host_key)?));

    // Pinned to another machine's key: refused, said in status and in an event.
    hosts.create(&PostParams::default(), &host(&wrong, &a, "key-a", json!({"hostKey": b.host_key}))?).await?;
    let h = wait(&hosts, &wrong, "refused", |h| condition(h, "Reachable").is_some_and(|c| c.0 == "False"))
        .await?;
    let (_, reason, message) = condition(&h, "Reachable").unwrap();
    assert_eq!(reason, "HostKeyMismatch");
    assert!(message.contains(&nova::ssh::fingerprint(&b.host_key)?), "{message}");
    assert!(h.status.unwrap().facts.is_none(), "nothing gathered from a host that failed its key check");
    let events = Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default().fields(&format!("regarding.name={wrong}")))
        .await?;
    assert!(events.items.iter().any(|e| e.reason.as_deref() == Some("HostKeyMismatch")), "{events:?}");

    // AcceptNew: the first key seen is recorded and then enforced.
    let spec = json!({"hostKeyPolicy": "AcceptNew"});
    hosts.create(&PostParams::default(), &host(&new, &b, "key-b", spec)?).await?;
    let h = wait(&hosts, &new, "Ready", |h| condition(h, "Ready").is_some_and(|c| c.0 == "True")).await?;
    let recorded = h.status.unwrap().recorded_host_key.context("recorded key")?;
    assert_eq!(nova::ssh::fingerprint(&recorded)?, nova::ssh::fingerprint(&b.host_key)?);

    // Bootstrap through the controller: converged once, then drift found, reported, corrected.
    let boot = format!("boot-{suffix}");
    let spec = json!({"hostKey": a.host_key, "bootstrap": {"packages": ["tree"]}});
    hosts.create(&PostParams::default(), &host(&boot, &a, "key-a", spec)?).await?;
    let h =
        wait(&hosts, &boot, "Bootstrapped", |h| condition(h, "Ready").is_some_and(|c| c.0 == "True")).await?;
    assert_eq!(condition(&h, "Bootstrapped").map(|c| c.1), Some("Converged".into()));
    assert!(
        h.status.as_ref().unwrap().last_bootstrap_time.is_some()
            && h.status.as_ref().unwrap().drift.is_empty()
    );
    assert!(a.ssh("tree --version")?.contains("tree"));
    a.ssh("apt-get -qq remove -y tree")?;
    // Any change to the object makes the controller look again (it also does every 5 minutes).
    let poke = json!({"metadata": {"annotations": {"test/poke": "1"}}});
    hosts.patch(&boot, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(poke)).await?;
    let h =
        wait(&hosts, &boot, "drift reported", |h| h.status.as_ref().is_some_and(|s| s.drift == ["packages"]))
            .await?;
    assert_eq!(condition(&h, "Ready").map(|c| c.0), Some("True".into()));
    assert!(a.ssh("tree --version")?.contains("tree"), "drift corrected");
    let events = Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default().fields(&format!("regarding.name={boot}")))
        .await?;
    let reasons: Vec<_> = events.items.iter().filter_map(|e| e.reason.clone()).collect();
    assert!(
        reasons.contains(&"Bootstrapped".into()) && reasons.contains(&"DriftCorrected".into()),
        "{reasons:?}"
    );

    // No secret material in status or events.
    let key_line = a.client_key.lines().nth(1).unwrap_or("x").to_owned();
    for name in [&good, &wrong, &new] {
        let text = serde_json::to_string(&hosts.get(name).await?)?;
        assert!(!text.contains(&key_line), "the private key leaked into {name}");
    }
    for name in [&good, &wrong, &new, &boot] {
        hosts.delete(name, &DeleteParams::default()).await?;
    }
    op.stop().await
}

/// A Platform with target.hosts through the operator: it owns a BlueGreenDeployment that runs
/// the application on the Host over SSH; a new version switches colours; the Platform mirrors it.
#[tokio::test]
async fn platform_on_a_host_through_the_operator() -> Result<()> {
    let _turn = HOSTS_IN_USE.lock().await;
    use nova::api::Platform;
    use nova::api::bluegreen::{BlueGreenDeployment, Color, Phase};

    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    install_crds(&client).await?;
    let ns = cp.namespace(&client, "hostapp").await?;
    let th = tokio::task::spawn_blocking(|| TestHost::start("web")).await??;
    std::fs::create_dir_all(th.root().join("opt"))?;
    std::fs::write(th.root().join("opt/app.py"), common::TEST_APP)?;
    key_secret(&client, &ns, "key", &th).await?;
    let op = Operator::start(client.clone(), &ns).await?;
    let suffix = ns.rsplit('-').next().unwrap_or("x").to_owned();
    let web = format!("web-{suffix}");
    let hosts: Api<Host> = Api::all(client.clone());
    hosts.create(&PostParams::default(), &host(&web, &th, "key", json!({"hostKey": th.host_key}))?).await?;

    let platforms: Api<Platform> = Api::namespaced(client.clone(), &ns);
    let platform = |v: &str| -> Result<Platform> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Platform", "metadata": {"name": "shop"},
            "spec": {"image": format!("shop:{v}"), "command": ["/usr/bin/python3", "/opt/app.py"],
                     "env": [{"name": "VERSION", "value": v}], "domains": ["shop.test"],
                     "health": {"path": "/healthz"}, "target": {"hosts": {"names": [web]}}},
        }))?)
    };
    platforms.create(&PostParams::default(), &platform("v1")?).await?;
    let ready = |p: Option<&Platform>| {
        p.and_then(|p| p.status.as_ref())
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    tokio::time::timeout(Duration::from_secs(180), await_condition(platforms.clone(), "shop", ready))
        .await
        .context("Platform Ready on the host")??;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let get = || async {
        let r = http.get(format!("http://{}/", th.ssh_addr.ip())).header("Host", "shop.test").send().await?;
        anyhow::Ok(r.text().await?)
    };
    assert_eq!(get().await?, "v1 blue\n");

    // A new version: green starts, is checked, takes the traffic; blue stops (Rolling on hosts).
    let bgs: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), &ns);
    let first = bgs.get("shop").await?.status.and_then(|s| s.active_revision).context("active revision")?;
    platforms
        .replace("shop", &PostParams::default(), &{
            let mut p = platform("v2")?;
            p.metadata.resource_version = platforms.get("shop").await?.metadata.resource_version;
            p
        })
        .await?;
    let switched = |b: Option<&BlueGreenDeployment>| {
        b.and_then(|b| b.status.as_ref()).is_some_and(|s| {
            s.active_color == Some(Color::Green)
                && s.phase == Some(Phase::Healthy)
                && s.active_revision.as_ref() != Some(&first)
                && s.scale_down_at.is_none()
        })
    };
    tokio::time::timeout(Duration::from_secs(120), await_condition(bgs.clone(), "shop", switched))
        .await
        .context("switch to green")??;
    assert_eq!(get().await?, "v2 green\n");
    assert_eq!(
        th.ssh("systemctl is-active nova-{ns}-shop-blue || true".replace("{ns}", &ns).as_str())?.trim(),
        "inactive"
    );
    let events = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().fields("regarding.name=shop"))
        .await?;
    let reasons: Vec<_> = events.items.iter().filter_map(|e| e.reason.clone()).collect();
    assert!(reasons.contains(&"Promoted".into()), "{reasons:?}");
    op.stop().await
}
