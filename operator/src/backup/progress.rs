//! Progress of long `nova backup` work on stderr: bytes read so far and the rate, redrawn in
//! place twice a second, and a last line when done. Shown on a terminal or with `--progress`;
//! stdout keeps only the result, for scripts.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// `1.5 MiB`: binary units, one decimal from KiB on.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// One progress line: what, how much, how fast.
pub fn line(what: &str, bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = (bytes as f64 / secs) as u64;
    format!("{what}: {} read in {:.1} s, {}/s", human(bytes), elapsed.as_secs_f64(), human(rate))
}

/// Redraws the line until [`Ticker::finish`].
pub struct Ticker {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

pub fn start(what: String, counter: Arc<AtomicU64>) -> Ticker {
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let l = line(&what, counter.load(Ordering::Relaxed), started.elapsed());
                    let _ = write!(std::io::stderr(), "\r{l}\x1b[K");
                }
                _ = &mut stopped => break,
            }
        }
        let _ = writeln!(
            std::io::stderr(),
            "\r{}\x1b[K",
            line(&what, counter.load(Ordering::Relaxed), started.elapsed())
        );
    });
    Ticker { stop, task }
}

impl Ticker {
    /// Stops redrawing and writes the last line.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_rates_read_like_people_write_them() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(
            line("backup shop/db", 100 * 1024 * 1024, Duration::from_secs(2)),
            "backup shop/db: 100.0 MiB read in 2.0 s, 50.0 MiB/s"
        );
    }
}
