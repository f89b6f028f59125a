//! Bootstrap on a real machine-in-a-box: apt from the local repository, users, sshd. Dry run,
//! apply, idempotence, drift, and a connection cut half-way.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use nova::api::host::Host;
use nova::host::bootstrap::Outcome;
use nova::host::cli;
use nova::state::State;
use serde_json::json;
use test_cluster::eventually;
use test_cluster::testhost::TestHost;

const DEPLOY_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFx4mJ0z3OLr4D0T2l3oCqL6tWcG5dU0m3X3Yk3Yk3Yk deploy@ci";

struct Files {
    dir: tempfile::TempDir,
    host: PathBuf,
    key: PathBuf,
}

impl Files {
    /// The state database the CLI keeps (host keys recorded under AcceptNew).
    async fn state(&self) -> Result<State> {
        Ok(State::connect(&self.dir.path().join("state.db").display().to_string()).await?)
    }
}

fn files(th: &TestHost, bootstrap: serde_json::Value) -> Result<Files> {
    let dir = tempfile::tempdir()?;
    let host = json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Host", "metadata": {"name": th.name},
        "spec": {"address": th.ssh_addr.ip().to_string(), "hostKey": th.host_key,
                 "sshKeySecretRef": {"name": "unused-without-a-cluster", "key": "k"},
                 "bootstrap": bootstrap},
    });
    let host_path = dir.path().join("host.yaml");
    std::fs::write(&host_path, serde_yaml::to_string(&host)?)?;
    let key = dir.path().join("id");
    std::fs::write(&key, &th.client_key)?;
    Ok(Files { host: host_path, key, dir })
}

fn spec() -> serde_json::Value {
    json!({"packages": ["jq", "tree"],
           "users": [{"name": "deploy", "sudo": true, "authorizedKeys": [DEPLOY_KEY]}],
           "sshHardening": {"permitRootLogin": true}})
}

fn one(path: &std::path::Path) -> Result<Host> {
    cli::load_hosts(path)?.into_iter().next().context("a host")
}

#[tokio::test]
async fn dry_run_apply_idempotence_and_drift() -> Result<()> {
    let th = tokio::task::spawn_blocking(|| TestHost::start("boot")).await??;
    let f = files(&th, spec())?;

    // Dry run through the command: says what would change, changes nothing.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_nova"))
        .args(["host", "bootstrap", "--dry-run", "-f"])
        .env("NOVA_STATE", f.dir.path().join("state.db"))
        .arg(&f.host)
        .arg("-i")
        .arg(&f.key)
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    for line in [
        "packages: would change (to install: jq tree sudo)",
        "user deploy: would change",
        "sshd hardening: would change",
    ] {
        assert!(text.contains(line), "{line:?} missing in:\n{text}");
    }
    assert_eq!(th.ssh("command -v jq || echo none")?.trim(), "none");
    assert_eq!(th.ssh("id deploy >/dev/null 2>&1 && echo yes || echo no")?.trim(), "no");

    // The real run changes all three, and the host is as described.
    let h = one(&f.host)?;
    let report = cli::bootstrap(&h, &f.key, &f.state().await?, false).await?;
    assert!(report.iter().all(|r| matches!(r.outcome, Outcome::Changed(_))), "{report:?}");
    assert_eq!(th.ssh("jq -n 1+1")?.trim(), "2", "installed from the local repository by apt");
    assert_eq!(th.ssh("cat ~deploy/.ssh/authorized_keys")?.trim(), DEPLOY_KEY);
    assert_eq!(th.ssh("stat -c '%a %U' ~deploy/.ssh/authorized_keys")?.trim(), "600 deploy");
    assert_eq!(th.ssh("sudo -l -U deploy | grep -c NOPASSWD")?.trim(), "1");
    assert!(th.ssh("sshd -T")?.lines().any(|l| l == "passwordauthentication no"));
    assert!(th.ssh("sshd -T")?.lines().any(|l| l == "permitrootlogin without-password"));

    // Second run: nothing to do.
    let again = cli::bootstrap(&h, &f.key, &f.state().await?, false).await?;
    assert!(again.iter().all(|r| r.outcome == Outcome::Unchanged), "{again:?}");

    // Drift: someone removes the key and the sudo rule; the next run reports and corrects it.
    th.ssh("rm ~deploy/.ssh/authorized_keys /etc/sudoers.d/nova-deploy")?;
    let drift = cli::bootstrap(&h, &f.key, &f.state().await?, false).await?;
    let user = drift.iter().find(|r| r.name == "user deploy").context("user step")?;
    match &user.outcome {
        Outcome::Changed(what) => {
            assert!(what.contains("authorized_keys") && what.contains("sudo"), "{what}")
        }
        o => panic!("drift not seen: {o:?}"),
    }
    assert_eq!(drift.iter().filter(|r| r.outcome != Outcome::Unchanged).count(), 1, "{drift:?}");
    assert_eq!(th.ssh("cat ~deploy/.ssh/authorized_keys")?.trim(), DEPLOY_KEY);
    Ok(())
}

/// While it exists, apt's pre-dpkg hook waits (written by the test into the test host only).
const HOLD: &str = "/run/nova-test-hold";
/// The hook creates it when it starts waiting.
const HELD: &str = "/run/nova-test-held";
const HOOK: &str = "/etc/apt/apt.conf.d/00nova-test-hold";

// Multi-threaded: the probes below block on the system's ssh client while the bootstrap runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_half_way_completes_on_the_next_run() -> Result<()> {
    let th = tokio::task::spawn_blocking(|| TestHost::start("cut")).await??;
    let f = files(&th, spec())?;
    let h = one(&f.host)?;
    let key = f.key.clone();
    // The package step is held at a known point, apt's hook before dpkg runs, until the cut has
    // landed: the first run cannot finish before the kill however fast or slow the machine is.
    th.ssh(&format!(
        "touch {HOLD} && printf '%s\\n' 'DPkg::Pre-Invoke {{ \"touch {HELD}; while [ -e {HOLD} ]; do sleep 0.1; done\"; }};' > {HOOK}"
    ))?;
    let h2 = h.clone();
    let state = f.state().await?;
    let first = tokio::spawn(async move { cli::bootstrap(&h2, &key, &state, false).await });
    // A probe that cannot connect is "not yet", not a failure: the run reloads sshd (its
    // hardening step; on SIGHUP sshd re-executes and its listener is gone for a moment) while
    // the probe polls, and a connection refused in that window failed a CI run.
    eventually("apt to reach the held point", Duration::from_secs(120), || async {
        let probe = th.ssh(&format!("test -e {HELD} && echo held || true"));
        Ok::<_, anyhow::Error>(probe.is_ok_and(|o| o.trim() == "held"))
    })
    .await?;
    // Cut while apt holds: every session of root goes, Nova's and this probe's own.
    let _ = th.ssh("pkill -KILL -f 'sshd: root@notty'");
    let cut = first.await?;
    assert!(cut.is_err(), "the first run was cut: {cut:?}");
    th.ssh(&format!("rm -f {HOOK} {HOLD}"))?;

    let done = cli::bootstrap(&h, &f.key, &f.state().await?, false).await?;
    assert!(done.iter().any(|r| r.name == "packages"), "{done:?}");
    assert_eq!(th.ssh("jq -n 2+2")?.trim(), "4");
    assert_eq!(th.ssh("dpkg --audit")?.trim(), "", "no half-configured packages left");
    let clean = cli::bootstrap(&h, &f.key, &f.state().await?, false).await?;
    assert!(clean.iter().all(|r| r.outcome == Outcome::Unchanged), "{clean:?}");
    Ok(())
}

fn reachable(th: &TestHost, port: u16) -> bool {
    let addr = std::net::SocketAddr::from((th.ssh_addr.ip(), port));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(700)).is_ok()
}

/// The services beside the application: an nftables allow-list (SSH always open), fail2ban,
/// unattended upgrades and node_exporter, each from the local repository; idempotent; drift in
/// the loaded rules found and corrected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firewall_fail2ban_upgrades_and_node_exporter() -> Result<()> {
    let th = tokio::task::spawn_blocking(|| TestHost::start("svc")).await??;
    for port in [80, 8080] {
        th.ssh(&format!("systemd-run -q --unit=listen{port} /usr/bin/python3 -m http.server {port}"))?;
    }
    eventually("listeners on 80 and 8080", Duration::from_secs(30), || async {
        Ok::<_, anyhow::Error>(reachable(&th, 80) && reachable(&th, 8080))
    })
    .await?;
    let f = files(
        &th,
        json!({"firewall": {"allow": [{"port": 80}]}, "fail2ban": true,
               "unattendedUpgrades": true, "nodeExporter": true}),
    )?;
    let h = one(&f.host)?;
    let report = cli::bootstrap(&h, &f.key, &f.state().await?, false).await?;
    let names: Vec<&str> = report.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["packages", "firewall", "fail2ban", "unattended upgrades", "node_exporter"]);
    // node_exporter may already be in shape: Debian's package enables and starts it.
    assert!(report[..4].iter().all(|r| matches!(r.outcome, Outcome::Changed(_))), "{report:?}");

    // Inbound: 80 allowed, 8080 and node_exporter's 9100 dropped, SSH still open.
    assert!(reachable(&th, 80), "80 is allowed");
    assert!(!reachable(&th, 8080), "8080 is dropped");
    assert!(!reachable(&th, 9100), "node_exporter answers only inside");
    assert!(th.ssh("true").is_ok(), "SSH stays open");
    assert!(th.ssh("fail2ban-client status sshd")?.contains("Currently banned"));
    assert!(th.ssh("apt-config dump APT::Periodic::Unattended-Upgrade")?.contains("\"1\""));
    let metrics = "timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/9100; printf \"GET /metrics HTTP/1.0\\r\\n\\r\\n\" >&3; cat <&3' | grep -c '^node_'";
    assert!(th.ssh(metrics)?.trim().parse::<u32>()? > 10, "node_exporter serves node metrics");

    let again = cli::bootstrap(&h, &f.key, &f.state().await?, false).await?;
    assert!(again.iter().all(|r| r.outcome == Outcome::Unchanged), "{again:?}");

    // Drift: someone flushes the rules; the next run reloads them.
    th.ssh("nft flush ruleset")?;
    assert!(reachable(&th, 8080), "flushed: open");
    let drift = cli::bootstrap(&h, &f.key, &f.state().await?, false).await?;
    let changed: Vec<&str> =
        drift.iter().filter(|r| r.outcome != Outcome::Unchanged).map(|r| r.name.as_str()).collect();
    assert_eq!(changed, ["firewall"], "{drift:?}");
    assert!(!reachable(&th, 8080), "dropped again");
    Ok(())
}

#[tokio::test]
async fn docker_engine_and_compose() -> Result<()> {
    let th = tokio::task::spawn_blocking(|| TestHost::start("dock")).await??;
    let f = files(&th, json!({"docker": true}))?;
    let h = one(&f.host)?;
    let report = cli::bootstrap(&h, &f.key, &f.state().await?, false).await?;
    let names: Vec<&str> = report.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["packages", "docker"]);
    assert!(matches!(report[0].outcome, Outcome::Changed(_)), "{report:?}");
    // The engine answers (vfs storage on the test host's overlay root) and compose is there.
    let version = th.ssh("docker info --format '{{.ServerVersion}}'")?;
    assert!(version.trim().chars().next().is_some_and(|c| c.is_ascii_digit()), "engine version: {version}");
    assert!(th.ssh("docker-compose version --short || docker compose version --short")?.trim().len() > 2);

    let again = cli::bootstrap(&h, &f.key, &f.state().await?, false).await?;
    assert!(again.iter().all(|r| r.outcome == Outcome::Unchanged), "{again:?}");

    // Drift: the engine stopped and disabled; the next run brings it back.
    th.ssh("systemctl disable -q --now docker.socket docker")?;
    let drift = cli::bootstrap(&h, &f.key, &f.state().await?, false).await?;
    let changed: Vec<&str> =
        drift.iter().filter(|r| r.outcome != Outcome::Unchanged).map(|r| r.name.as_str()).collect();
    assert_eq!(changed, ["docker"], "{drift:?}");
    assert!(!th.ssh("docker info --format '{{.ServerVersion}}'")?.trim().is_empty());
    Ok(())
}

/// Without a cluster, AcceptNew works as ssh's known_hosts: the first key is recorded in the
/// state database, and a host presenting another one later is refused with HostKeyMismatch.
#[tokio::test]
async fn the_cli_records_a_new_host_key_and_refuses_a_changed_one() -> Result<()> {
    let th = tokio::task::spawn_blocking(|| TestHost::start("tofu")).await??;
    let f = files(&th, json!(null))?;
    let mut doc: serde_json::Value = serde_yaml::from_str(&std::fs::read_to_string(&f.host)?)?;
    doc["spec"].as_object_mut().context("spec")?.remove("hostKey");
    doc["spec"].as_object_mut().context("spec")?.remove("bootstrap");
    doc["spec"]["hostKeyPolicy"] = json!("AcceptNew");
    std::fs::write(&f.host, serde_yaml::to_string(&doc)?)?;
    let facts = || async {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_nova"))
            .args(["host", "facts", "-f"])
            .arg(&f.host)
            .arg("-i")
            .arg(&f.key)
            .env("NOVA_STATE", f.dir.path().join("state.db"))
            .output()
            .await?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        anyhow::Ok((out.status.success(), text))
    };
    let (ok, text) = facts().await?;
    assert!(ok && text.contains("bookworm"), "{text}");
    let addr = th.ssh_addr.ip().to_string();
    let recorded = f.state().await?.known_host(&addr, 22).await?.context("a recorded key")?;
    assert_eq!(nova::ssh::fingerprint(&recorded)?, nova::ssh::fingerprint(&th.host_key)?);
    let (ok, text) = facts().await?;
    assert!(ok, "the recorded key is accepted: {text}");

    // The machine's key changes (a rebuilt host, or someone in the middle): refused.
    th.ssh(
        "rm -f /etc/ssh/ssh_host_ed25519_key* && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key \
         && systemctl restart ssh",
    )?;
    let (ok, text) = facts().await?;
    assert!(!ok && text.contains("host key mismatch"), "{text}");
    let still = f.state().await?.known_host(&addr, 22).await?;
    assert_eq!(still.as_deref(), Some(recorded.as_str()), "the record is kept, not replaced");
    Ok(())
}
