//! Used by the harness's own lifecycle tests: starts the shared control plane, prints the PID
//! of each component and a `ready` line, then ends the way the first argument says:
//! `panic` (a failing test), `wait` (until killed from outside).

use test_cluster::{Mode, shared};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let ending = std::env::args().nth(1).unwrap_or_default();
    let started = std::time::Instant::now();
    let cp = shared(Mode::ApiServer).await.expect("control plane starts");
    println!("started in {:.2}s", started.elapsed().as_secs_f64());
    for (name, pid) in cp.pids() {
        println!("pid {pid} {name}");
    }
    println!("dir {}", cp.state_dir().display());
    println!("ready");
    match ending.as_str() {
        "panic" => panic!("the probe fails like a test would"),
        _ => std::future::pending::<()>().await,
    }
}
