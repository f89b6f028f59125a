//! No process of a control plane outlives the test binary that started it, however that binary
//! ends. Checked with `ps`, as an operator would.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

struct Probe {
    child: std::process::Child,
    pids: Vec<u32>,
}

fn start_probe(ending: &str) -> Result<Probe> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_test-cluster-probe"))
        .arg(ending)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut pids = Vec::new();
    for line in BufReader::new(child.stdout.take().context("stdout")?).lines() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("pid ") {
            pids.push(rest.split_whitespace().next().context("pid")?.parse()?);
        }
        if line == "ready" {
            break;
        }
    }
    ensure!(pids.len() == 2, "etcd and kube-apiserver expected, got {pids:?}");
    Ok(Probe { child, pids })
}

/// PIDs among `pids` that `ps` still lists.
fn alive(pids: &[u32]) -> Result<Vec<u32>> {
    let list = pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let out = Command::new("ps").args(["-o", "pid=", "-p", &list]).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect())
}

fn await_gone(pids: &[u32]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = alive(pids)?;
        if left.is_empty() {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "orphaned control-plane processes: {left:?}");
        std::thread::yield_now();
    }
}

#[test]
fn components_die_when_the_test_binary_panics() -> Result<()> {
    let mut probe = start_probe("panic")?;
    let status = probe.child.wait()?;
    assert_eq!(status.code(), Some(101), "a panicking main exits with 101");
    await_gone(&probe.pids)
}

#[test]
fn components_die_when_the_test_binary_is_killed() -> Result<()> {
    let mut probe = start_probe("wait")?;
    assert_eq!(alive(&probe.pids)?.len(), 2, "components run while their parent lives");
    probe.child.kill()?;
    probe.child.wait()?;
    await_gone(&probe.pids)
}
