//! Two `nova operator` processes: one leads and reconciles, the other waits; when the leader is
//! killed, the other takes the Lease and carries on.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::PostParams;
use kube::runtime::wait::await_condition;
use kube::{Api, Client};
use nova::api::Platform;
use serde_json::json;
use test_cluster::{ControlPlane, Mode, shared};

mod common;

struct OperatorProcess {
    identity: String,
    port: u16,
    child: Child,
    _state: tempfile::TempDir,
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(cp: &ControlPlane, ns: &str, identity: &str) -> Result<OperatorProcess> {
    let state = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new(env!("CARGO_BIN_EXE_nova"))
        .args(["operator", "--lease-namespace", ns, "--watch-namespace", ns, "--identity", identity])
        .arg("--state")
        .arg(state.path().join("state.db"))
        .args(["--http-addr", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", cp.kubeconfig())
        .stdout(Stdio::null())
        .stderr(common::operator_log())
        .spawn()?;
    Ok(OperatorProcess { identity: identity.into(), port, child, _state: state })
}

/// GET a path on the operator's HTTP port; None while it is not listening.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

async fn holder(client: &Client, ns: &str) -> Result<Option<String>> {
    let lease = Api::<Lease>::namespaced(client.clone(), ns).get_opt("nova-operator").await?;
    Ok(lease.and_then(|l| l.spec).and_then(|s| s.holder_identity))
}

async fn wait_for_holder(client: &Client, ns: &str, among: &[&str], within: Duration) -> Result<String> {
    let deadline = Instant::now() + within;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        if let Some(h) = holder(client, ns).await?
            && among.contains(&h.as_str())
        {
            return Ok(h);
        }
        ensure!(Instant::now() < deadline, "no leader among {among:?} after {within:?}");
    }
}

fn ready(p: Option<&Platform>) -> bool {
    p.and_then(|p| p.status.as_ref())
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn create_and_await_ready(platforms: &Api<Platform>, name: &str) -> Result<()> {
    let p: Platform = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Platform", "metadata": {"name": name},
        "spec": {"image": "nginx:1.27"},
    }))?;
    platforms.create(&PostParams::default(), &p).await?;
    tokio::time::timeout(Duration::from_secs(60), await_condition(platforms.clone(), name, ready)).await??;
    Ok(())
}

#[tokio::test]
async fn standby_takes_over_when_the_leader_dies() -> Result<()> {
    let cp = shared(Mode::Simulated).await?;
    let client = cp.client().await?;
    let crds = nova::api::crds();
    let crd_api: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(client.clone());
    for crd in &crds {
        let name = crd.metadata.name.clone().unwrap();
        crd_api
            .patch(&name, &kube::api::PatchParams::apply("nova-test").force(), &kube::api::Patch::Apply(crd))
            .await?;
    }
    let ns = cp.namespace(&client, "leader").await?;
    let platforms: Api<Platform> = Api::namespaced(client.clone(), &ns);

    let mut a = Some(spawn(cp, &ns, "replica-a")?);
    let mut b = Some(spawn(cp, &ns, "replica-b")?);
    let first = wait_for_holder(&client, &ns, &["replica-a", "replica-b"], Duration::from_secs(60)).await?;
    create_and_await_ready(&platforms, "before").await?;

    let (leader, standby) = if first == "replica-a" { (a.take(), b.take()) } else { (b.take(), a.take()) };
    let (mut leader, standby) = (leader.unwrap(), standby.unwrap());
    // Only the leader reconciles: the standby has recorded no reconcile at all.
    let standby_metrics = get(standby.port, "/metrics").unwrap_or_default();
    assert!(standby_metrics.contains("200 OK"), "the standby serves metrics: {standby_metrics}");
    assert!(!standby_metrics.contains("nova_reconcile_total{"), "the standby must not reconcile");
    let leader_metrics = get(leader.port, "/metrics").unwrap_or_default();
    assert!(leader_metrics.contains("nova_reconcile_total{kind=\"Platform\"}"), "{leader_metrics}");

    leader.child.kill()?;
    leader.child.wait()?;
    // The dead leader's lease expires after its 15 s duration; the standby renews every 2 s.
    let next = wait_for_holder(&client, &ns, &[&standby.identity], Duration::from_secs(40)).await?;
    assert_eq!(next, standby.identity);
    create_and_await_ready(&platforms, "after").await?;
    Ok(())
}

/// SIGTERM: the operator stops its controllers, gives the Lease up (holder cleared) and exits
/// 0, well within the chart's 45 s termination grace period; a standby would take over at once
/// instead of waiting out the 15 s lease.
#[tokio::test]
async fn sigterm_releases_the_lease() -> Result<()> {
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, "sigterm").await?;
    let mut op = spawn(cp, &ns, "replica-t")?;
    wait_for_holder(&client, &ns, &["replica-t"], Duration::from_secs(60)).await?;

    let pid = nix::unistd::Pid::from_raw(i32::try_from(op.child.id())?);
    let sent = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
    let status = tokio::task::spawn_blocking(move || {
        let s = op.child.wait();
        (s, op)
    })
    .await?;
    let (status, _op) = (status.0?, status.1);
    let took = sent.elapsed();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(took < Duration::from_secs(30), "took {took:?} to stop");
    assert_eq!(holder(&client, &ns).await?, None, "the lease is released");
    Ok(())
}

/// A frozen leader (SIGSTOP) loses the lease to the standby; woken (SIGCONT) with work queued
/// for it, it writes nothing at all after the standby took over: its fence closed on its own
/// clock while it slept, and it exits. Counted in the apiserver's audit log by User-Agent.
#[tokio::test]
async fn a_frozen_leader_writes_nothing_after_it_lost_the_lease() -> Result<()> {
    use nix::sys::signal::{Signal, kill};
    let cp = shared(Mode::Simulated).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, "frozen").await?;
    let platforms: Api<Platform> = Api::namespaced(client.clone(), &ns);
    let (a, b) = (format!("{ns}-a"), format!("{ns}-b"));
    let mut ops = [spawn(cp, &ns, &a)?, spawn(cp, &ns, &b)?];
    let first = wait_for_holder(&client, &ns, &[&a, &b], Duration::from_secs(60)).await?;
    create_and_await_ready(&platforms, "before").await?;
    let (old, new) = if first == a { (a.clone(), b.clone()) } else { (b.clone(), a.clone()) };
    let old_pid = nix::unistd::Pid::from_raw(i32::try_from(
        ops.iter().find(|o| o.identity == old).unwrap().child.id(),
    )?);

    kill(old_pid, Signal::SIGSTOP)?;
    wait_for_holder(&client, &ns, &[&new], Duration::from_secs(40)).await?;
    let leases = |agent: &str| -> Result<Vec<test_cluster::AuditedWrite>> {
        Ok(cp
            .audited_writes(&nova::kubeclient::operator_agent(agent), std::time::UNIX_EPOCH)?
            .into_iter()
            // The lease's namespace, not its name: a leader that never renewed before it froze
            // wrote only the create, whose URI is the collection's.
            .filter(|w| w.uri.contains(&format!("/namespaces/{ns}/leases")) && w.code < 300)
            .collect())
    };
    let took_over = leases(&new)?.first().map(|w| w.at).context("the standby's first lease write")?;
    // Work queued for the frozen one: a spec change its watch delivers when it wakes.
    let scale = json!({"spec": {"replicas": 2}});
    platforms.patch("before", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(scale)).await?;
    kill(old_pid, Signal::SIGCONT)?;
    let old_op = ops.iter_mut().find(|o| o.identity == old).unwrap();
    let exited = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(status) = old_op.child.try_wait()? {
                return anyhow::Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .context("the old leader exits once it learns it lost the lease")??;
    assert!(!exited.success(), "it exits with an error: {exited}");
    // The new leader carries the change out.
    let two =
        |p: Option<&Platform>| p.and_then(|p| p.status.as_ref()).and_then(|s| s.ready_replicas) == Some(2);
    tokio::time::timeout(Duration::from_secs(60), await_condition(platforms.clone(), "before", two))
        .await??;

    let after: Vec<_> = cp
        .audited_writes(&nova::kubeclient::operator_agent(&old), took_over)?
        .into_iter()
        .map(|w| format!("{} {} -> {}", w.verb, w.uri, w.code))
        .collect();
    assert!(after.is_empty(), "the old leader wrote after it lost the lease: {after:#?}");
    assert!(!leases(&old)?.is_empty(), "the audit log does see the old leader's writes (from before)");
    Ok(())
}
