//! The simulated cluster for people: `scripts/dev-cluster start` runs this in the background.
//! Usage: nova-dev-cluster <state-dir> [nodes]
//! Writes `<state-dir>/cp/admin.kubeconfig`, creates `<state-dir>/ready` once the cluster
//! serves, and on SIGTERM or SIGINT stops every component and removes `<state-dir>/cp`.

use std::path::PathBuf;

use test_cluster::{ControlPlane, Mode, Options};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(root) = args.next().map(PathBuf::from) else {
        eprintln!("usage: nova-dev-cluster <state-dir> [nodes]");
        std::process::exit(2);
    };
    let mut opts = Options::new(Mode::Simulated);
    opts.state_dir = Some(root.join("cp"));
    if let Some(n) = args.next() {
        opts.nodes = n.parse().unwrap_or_else(|_| {
            eprintln!("nodes must be a number, got {n:?}");
            std::process::exit(2);
        });
    }
    let ready = root.join("ready");
    let _ = std::fs::remove_file(&ready);
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let started = std::time::Instant::now();
    let cp = tokio::select! {
        cp = ControlPlane::start(opts) => match cp {
            Ok(cp) => cp,
            Err(e) => {
                eprintln!("the dev cluster did not start: {e}");
                std::process::exit(1);
            }
        },
        _ = term.recv() => std::process::exit(143),
    };
    println!("started in {:.1}s; KUBECONFIG={}", started.elapsed().as_secs_f64(), cp.kubeconfig().display());
    std::fs::write(&ready, cp.kubeconfig().display().to_string()).expect("writing the ready file");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let _ = std::fs::remove_file(&ready);
    drop(cp);
    println!("stopped");
}
