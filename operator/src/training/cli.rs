//! `nova train`: the built-in trainer on its own — flags, or a TrainingJob file checked as
//! admission checks it — speaking the environment contract of a worker (`NOVA_CHECKPOINT_DIR`,
//! `NOVA_RESUME_FROM`, `NOVA_PROGRESS_FILE`, `RANK`).

use std::path::PathBuf;

use nova_train::progress::Writer;
use nova_train::{Config, Resume};

use super::builtin::{self, Settings};
use crate::api::TrainingJob;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A TrainingJob (YAML) whose spec.trainer and spec.checkpoint give the settings; the flags
    /// below override them.
    #[arg(short, long)]
    file: Option<PathBuf>,
    /// Model preset: linear, mlp or cnn.
    #[arg(long)]
    model: Option<String>,
    /// fashion-mnist, synthetic-classification, synthetic-regression, or a directory of IDX files.
    #[arg(long)]
    dataset: Option<String>,
    /// Epochs [default: 1].
    #[arg(long)]
    epochs: Option<u64>,
    /// Batch size [default: 32].
    #[arg(long)]
    batch_size: Option<usize>,
    /// AdamW learning rate [default: 0.001].
    #[arg(long)]
    learning_rate: Option<f64>,
    /// Seed of the weights and the batch order [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Stop after this many epochs without a better validation loss.
    #[arg(long)]
    patience: Option<u64>,
    /// Where checkpoints go; none are written without it.
    #[arg(long, env = "NOVA_CHECKPOINT_DIR")]
    checkpoint_dir: Option<PathBuf>,
    /// Steps between checkpoints [default: 500].
    #[arg(long)]
    every_steps: Option<u64>,
    /// Step checkpoints kept (the best one is kept besides) [default: 3].
    #[arg(long)]
    keep_last: Option<usize>,
    /// latest: continue from the newest checkpoint in --checkpoint-dir; none: start over.
    #[arg(long, default_value = "latest", value_parser = ["latest", "none"])]
    resume: String,
    /// Continue from this checkpoint file [env: NOVA_RESUME_FROM, set by Nova; empty: none].
    #[arg(long)]
    resume_from: Option<PathBuf>,
    /// Append the progress protocol here (JSON lines) instead of printing it.
    #[arg(long, env = "NOVA_PROGRESS_FILE")]
    progress_file: Option<PathBuf>,
    /// A step line every this many steps.
    #[arg(long, default_value_t = 50)]
    log_every: u64,
    /// Stop after this many steps in all.
    #[arg(long)]
    max_steps: Option<u64>,
    /// cpu, or cuda in a build with the cuda feature.
    #[arg(long, env = "NOVA_DEVICE", default_value = "cpu")]
    device: String,
    /// This worker's rank, written into every progress line.
    #[arg(long, env = "RANK", default_value_t = 0)]
    rank: u32,
}

/// The job file's settings, refused as admission would refuse the object.
fn from_file(path: &std::path::Path) -> Result<Settings, String> {
    let docs = crate::documents::read(path)?;
    let [(at, doc)] = docs.as_slice() else {
        return Err(format!(
            "{}: give exactly one TrainingJob, found {} documents",
            path.display(),
            docs.len()
        ));
    };
    if doc.get("kind").and_then(|k| k.as_str()) != Some("TrainingJob") {
        return Err(format!("{at}: kind: not a TrainingJob"));
    }
    crate::admission::check_yaml(doc).map_err(|e| format!("{at}: {e}"))?;
    let job: TrainingJob = serde_yaml::from_value(doc.clone()).map_err(|e| format!("{at}: {e}"))?;
    builtin::from_spec(&job.spec).map_err(|e| format!("{at}: {e}"))
}

fn config(a: Args) -> Result<(Config, Option<PathBuf>), String> {
    let f = match &a.file {
        Some(p) => from_file(p)?,
        None => Settings::default(),
    };
    let model = match a.model {
        Some(m) => m.parse().map_err(|e: nova_train::Error| format!("--model: {e}"))?,
        None => f.model.ok_or("--model: give linear, mlp or cnn (or -f with a TrainingJob)")?,
    };
    let dataset = a.dataset.or(f.dataset).ok_or(
        "--dataset: give fashion-mnist, synthetic-classification, synthetic-regression or a directory",
    )?;
    // Not clap's `env`: it refuses the empty value Nova gives a worker with no checkpoint.
    let from_env = std::env::var_os("NOVA_RESUME_FROM").map(PathBuf::from);
    let resume_from = a.resume_from.or(from_env).filter(|p| !p.as_os_str().is_empty());
    let resume = match (resume_from, a.resume.as_str()) {
        (Some(p), _) => Resume::From(p),
        (None, "none") => Resume::None,
        (None, _) => Resume::Latest,
    };
    let cfg = Config {
        model,
        dataset,
        epochs: a.epochs.or(f.epochs).unwrap_or(1),
        batch_size: a.batch_size.or(f.batch_size).unwrap_or(32),
        learning_rate: a.learning_rate.or(f.learning_rate).unwrap_or(1e-3),
        seed: a.seed.or(f.seed).unwrap_or(0),
        checkpoint_dir: a.checkpoint_dir.or(f.checkpoint_dir),
        every_steps: a.every_steps.or(f.every_steps).unwrap_or(500),
        keep_last: a.keep_last.or(f.keep_last).unwrap_or(3),
        patience: a.patience.or(f.patience),
        resume,
        log_every: a.log_every.max(1),
        max_steps: a.max_steps,
        worker: a.rank,
        device: nova_train::device(&a.device).map_err(|e| format!("--device: {e}"))?,
    };
    Ok((cfg, a.progress_file))
}

/// Trains; Ok is the summary line for stderr, Err what to print before exiting with status 1.
pub fn main(a: Args) -> Result<String, String> {
    let (cfg, progress) = config(a)?;
    let mut out = match &progress {
        Some(p) => Writer::to_file(p).map_err(|e| format!("--progress-file {}: {e}", p.display()))?,
        None => Writer::to_stdout(),
    };
    let s = nova_train::train(&cfg, &mut out).map_err(|e| e.to_string())?;
    let mut line = format!("trained to step {} in {} epochs ({})", s.steps, s.epochs, s.reason);
    if let Some(p) = &s.resumed_from {
        line += &format!(", resumed from {}", p.display());
    }
    if let Some(a) = s.test_accuracy {
        line += &format!("; test accuracy {:.2} %", a * 100.0);
    }
    Ok(line)
}
