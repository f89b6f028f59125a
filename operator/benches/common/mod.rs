//! What the benchmarks share: reading `--name value` arguments and medians.

/// The value after `name` on the command line.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Waits until this machine's CPUs are at least 90 % idle over half a second (at most 60 s),
/// so that one timed run does not pay for the teardown of the hosts before it (killed test
/// hosts leave the kernel removing their namespaces and the overlays for a while).
#[allow(dead_code)]
pub fn quiesce() {
    fn sample() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> =
            stat.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
        let idle = cpu.get(3)? + cpu.get(4).unwrap_or(&0);
        Some((idle, cpu.iter().sum()))
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let Some((i0, t0)) = sample() else { return };
        std::thread::sleep(std::time::Duration::from_millis(500));
        let Some((i1, t1)) = sample() else { return };
        if t1 > t0 && (i1 - i0) * 10 >= (t1 - t0) * 9 {
            return;
        }
    }
    eprintln!("the machine did not settle within 60 s; measuring anyway");
}
