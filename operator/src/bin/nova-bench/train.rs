//! `nova-bench train`: the built-in trainer (`nova train`, candle) against PyTorch on the CPU —
//! the same model (784-256-10 MLP), data (Fashion-MNIST), batch size and optimizer (AdamW), the
//! same thread count — read through the same progress protocol; and the cost of checkpoints.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use nova_train::progress::{Kind, Record};

/// Steps not timed at the start of each run (allocation, caches, thread pools).
const WARMUP_STEPS: u64 = 100;

pub struct Settings {
    pub runs: usize,
    pub steps: u64,
    pub batch_size: u32,
    /// The Python with torch (`$NOVA_TORCH_PYTHON`, default `python3`).
    pub python: String,
}

struct Run {
    steps_per_second: f64,
    losses: Vec<(u64, f64)>,
}

/// Steps per second between the first record past the warm-up and the last, by the records' own
/// clocks; and the loss curve.
fn read(stdout: &[u8]) -> Result<Run> {
    let text = String::from_utf8_lossy(stdout);
    let steps: Vec<Record> =
        text.lines().filter_map(Record::parse).filter(|r| r.kind == Kind::Step).collect();
    let timed: Vec<&Record> = steps.iter().filter(|r| r.step >= WARMUP_STEPS).collect();
    let (first, last) = (timed.first().context("no step lines")?, timed.last().context("no step lines")?);
    ensure!(last.step > first.step, "too few steps to time");
    Ok(Run {
        steps_per_second: (last.step - first.step) as f64 / (last.time - first.time),
        losses: steps.iter().map(|r| (r.step, r.loss.unwrap_or(f64::NAN))).collect(),
    })
}

fn candle(s: &Settings, threads: usize, checkpoints: Option<&Path>) -> Result<Run> {
    let mut c = Command::new(crate::bench::nova_binary()?);
    c.args(["train", "--model", "mlp", "--dataset", "fashion-mnist", "--seed", "42", "--log-every", "50"]);
    c.args(["--batch-size", &s.batch_size.to_string(), "--max-steps", &s.steps.to_string()]);
    c.env("RAYON_NUM_THREADS", threads.to_string()).env_remove("NOVA_PROGRESS_FILE");
    match checkpoints {
        Some(dir) => c.arg("--checkpoint-dir").arg(dir).args(["--every-steps", "100", "--resume", "none"]),
        None => c.env_remove("NOVA_CHECKPOINT_DIR"),
    };
    let out = c.output()?;
    ensure!(out.status.success(), "nova train: {}", String::from_utf8_lossy(&out.stderr));
    read(&out.stdout)
}

fn torch(s: &Settings, threads: usize) -> Result<Run> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/bench-train.py");
    let out = Command::new(&s.python)
        .arg(script)
        .args(["--threads", &threads.to_string(), "--batch-size", &s.batch_size.to_string()])
        .args(["--max-steps", &s.steps.to_string(), "--log-every", "50"])
        .env("OMP_NUM_THREADS", threads.to_string())
        .output()?;
    ensure!(out.status.success(), "{}: {}", s.python, String::from_utf8_lossy(&out.stderr));
    read(&out.stdout)
}

/// Median steps/s of `runs` runs after one discarded warm-up run, and the last run's curve.
fn median(runs: usize, mut one: impl FnMut() -> Result<Run>) -> Result<(f64, Vec<(u64, f64)>)> {
    one()?;
    let mut rates = Vec::new();
    let mut last = Vec::new();
    for _ in 0..runs {
        let r = one()?;
        rates.push(r.steps_per_second);
        last = r.losses;
    }
    rates.sort_by(f64::total_cmp);
    Ok((rates[rates.len() / 2], last))
}

/// Median steps/s and the last run's loss curve.
type Side = (f64, Vec<(u64, f64)>);

/// candle and PyTorch taking turns, run by run (a discarded pair first), so that a machine whose
/// speed drifts during the bench slows both alike: each one's median steps/s and last curve,
/// and the median of the ratios of the runs taken side by side.
fn paired(runs: usize, threads: usize, s: &Settings) -> Result<(Side, Side, f64)> {
    candle(s, threads, None)?;
    torch(s, threads)?;
    let (mut c, mut t, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cc, mut tc) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let a = candle(s, threads, None)?;
        let b = torch(s, threads)?;
        ratios.push(a.steps_per_second / b.steps_per_second);
        c.push(a.steps_per_second);
        t.push(b.steps_per_second);
        (cc, tc) = (a.losses, b.losses);
    }
    let mid = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(((mid(c), cc), (mid(t), tc), mid(ratios)))
}

pub fn run(s: &Settings) -> Result<String> {
    let mut md = String::from(
        "| threads | candle steps/s | PyTorch steps/s | candle / PyTorch | median of the pairs' ratios |\n\
         | --- | --- | --- | --- | --- |\n",
    );
    let mut curves = (Vec::new(), Vec::new());
    let mut plain2 = 0.0;
    for threads in [1, 2] {
        let ((c, cc), (t, tc), ratio) = paired(s.runs, threads, s)?;
        md += &format!("| {threads} | {c:.1} | {t:.1} | {:.2}× | {ratio:.2}× |\n", c / t);
        (curves, plain2) = ((cc, tc), c);
    }
    let dir = tempfile::tempdir()?;
    let (with, _) = median(s.runs, || candle(s, 2, Some(dir.path())))?;
    // One checkpoint's cost from runs that write one every 100 steps, then its share of step time
    // at the default interval of 500 steps.
    let per_checkpoint = (1.0 / with - 1.0 / plain2) * 100.0;
    md += &format!(
        "\nCheckpoints (weights and AdamW moments, safetensors), 2 threads: every 100 steps \
         {with:.1} steps/s against {plain2:.1} without ({:.1} % of step time), so one checkpoint \
         costs {:.1} ms; at the default interval of 500 steps that is **{:.1} %** of step time.\n",
        (plain2 / with - 1.0) * 100.0,
        per_checkpoint * 1000.0,
        per_checkpoint / (500.0 / plain2) * 100.0
    );
    md += "\nLoss at the logged steps (2 threads, seed 42; the two draw weights and batches from \
           different generators, so the curves match in shape, not value):\n\n\
           | step | candle | PyTorch |\n| --- | --- | --- |\n";
    for ((step, a), (_, b)) in curves.0.iter().zip(&curves.1) {
        md += &format!("| {step} | {a:.4} | {b:.4} |\n");
    }
    Ok(md)
}
