//! README's main command on a machine with no cluster: `scripts/quickstart` starts the dev
//! cluster, installs the CRDs, runs the operator and ends with the example Platform Ready.

use std::process::Command;

use anyhow::{Result, ensure};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/quickstart");

#[test]
fn quickstart_ends_with_the_platform_ready_and_stops_cleanly() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let run = |args: &[&str]| {
        Command::new(SCRIPT)
            .args(args)
            .env_remove("KUBECONFIG")
            .env("NOVA_DEV_CLUSTER_DIR", tmp.path().join("cluster"))
            .env("NOVA_QUICKSTART_DIR", tmp.path().join("quickstart"))
            .output()
    };
    // Whatever happens below, the background processes the script started are stopped.
    struct Stop<F: Fn()>(F);
    impl<F: Fn()> Drop for Stop<F> {
        fn drop(&mut self) {
            (self.0)();
        }
    }
    let _stop = Stop(|| {
        let _ = run(&["stop"]);
    });
    let out = run(&[])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "quickstart failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let row = stdout.lines().find(|l| l.starts_with("quickstart ")).unwrap_or_default();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols.get(2), Some(&"True"), "READY column of `kubectl get nova -A`:\n{stdout}");
    assert!(stdout.lines().last().unwrap_or_default().starts_with("KUBECONFIG="));
    let pid: u32 = std::fs::read_to_string(tmp.path().join("quickstart/operator.pid"))?.trim().parse()?;

    let stop = run(&["stop"])?;
    assert!(stop.status.success(), "{}", String::from_utf8_lossy(&stop.stderr));
    assert!(!tmp.path().join("cluster").exists() && !tmp.path().join("quickstart").exists());
    // The operator exits on SIGTERM; its cluster is gone either way, so give it a moment by
    // polling rather than sleeping a fixed time.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
    {
        ensure!(std::time::Instant::now() < deadline, "the operator did not stop");
        std::thread::yield_now();
    }
    Ok(())
}
