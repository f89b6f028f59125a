//! `scripts/dev-cluster` as a person uses it: start prints a working KUBECONFIG as its last
//! line, status reports it, stop leaves no process and no state behind.

use std::process::Command;

use anyhow::{Context, Result, ensure};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/dev-cluster");

fn script(dir: &std::path::Path, args: &[&str]) -> Result<std::process::Output> {
    Ok(Command::new(SCRIPT).args(args).env("NOVA_DEV_CLUSTER_DIR", dir).output()?)
}

#[test]
fn start_status_stop() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("cluster");

    let out = script(&root, &["start", "2"])?;
    ensure!(out.status.success(), "start failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout)?;
    let kubeconfig = stdout
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("KUBECONFIG="))
        .context("the last line of start is KUBECONFIG=<path>")?
        .to_owned();
    let pid: u32 = std::fs::read_to_string(root.join("pid"))?.trim().parse()?;

    let status = script(&root, &["status"])?;
    assert!(status.status.success());
    assert!(String::from_utf8_lossy(&status.stdout).starts_with("running"));

    let kubectl = test_cluster::bin_dir()?.join("kubectl");
    let nodes =
        Command::new(&kubectl).args(["--kubeconfig", &kubeconfig, "get", "nodes", "-o", "name"]).output()?;
    assert!(nodes.status.success(), "{}", String::from_utf8_lossy(&nodes.stderr));
    assert_eq!(String::from_utf8(nodes.stdout)?.lines().count(), 2, "two fake nodes were asked for");

    let stop = script(&root, &["stop"])?;
    assert!(stop.status.success());
    assert!(!root.exists(), "stop removes the state");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the cluster process is gone");
    let status = script(&root, &["status"])?;
    assert_eq!(status.status.code(), Some(3));
    Ok(())
}
