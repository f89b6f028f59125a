//! A TrainingJob's `spec.trainer` and `spec.checkpoint` as the built-in trainer's settings: what
//! `nova train -f` runs, and what a worker running `nova train` gets from its job.

use std::path::PathBuf;

use crate::api::training::{ModelPreset, TrainingJobSpec};

/// The settings of the built-in trainer a spec asks for; flags may override each one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    pub model: Option<nova_train::Preset>,
    pub dataset: Option<String>,
    pub epochs: Option<u64>,
    pub batch_size: Option<usize>,
    pub learning_rate: Option<f64>,
    pub seed: Option<u64>,
    pub patience: Option<u64>,
    pub checkpoint_dir: Option<PathBuf>,
    pub every_steps: Option<u64>,
    pub keep_last: Option<usize>,
}

/// The built-in trainer's settings of `spec`; Err names the field when the job brings its own image.
pub fn from_spec(spec: &TrainingJobSpec) -> Result<Settings, String> {
    let Some(t) = &spec.trainer else {
        return Err(
            "spec.trainer: this job brings its own image; nova train runs only the built-in trainer".into()
        );
    };
    let learning_rate = t
        .learning_rate
        .parse::<f64>()
        .map_err(|e| format!("spec.trainer.learningRate {:?}: {e}", t.learning_rate))?;
    Ok(Settings {
        model: Some(match t.model {
            ModelPreset::Linear => nova_train::Preset::Linear,
            ModelPreset::Mlp => nova_train::Preset::Mlp,
            ModelPreset::Cnn => nova_train::Preset::Cnn,
        }),
        dataset: Some(t.dataset.clone()),
        epochs: Some(t.epochs.max(1) as u64),
        batch_size: Some(t.batch_size.max(1) as usize),
        learning_rate: Some(learning_rate),
        seed: Some(t.seed.max(0) as u64),
        patience: t.early_stopping_patience.map(|p| p.max(1) as u64),
        checkpoint_dir: spec.checkpoint.path.as_ref().map(PathBuf::from),
        every_steps: Some(spec.checkpoint.every_steps.max(1) as u64),
        keep_last: Some(spec.checkpoint.keep_last.max(1) as usize),
    })
}

/// The `nova train` command line of a job's built-in trainer, as its workers run it. The
/// checkpoint directory, resume point and progress file come from the worker's environment.
pub fn command(spec: &TrainingJobSpec) -> Result<Vec<String>, String> {
    let s = from_spec(spec)?;
    let mut c = vec!["nova".to_string(), "train".into()];
    let pairs = [
        ("--model", s.model.map(|m| m.as_str().to_string())),
        ("--dataset", s.dataset),
        ("--epochs", s.epochs.map(|v| v.to_string())),
        ("--batch-size", s.batch_size.map(|v| v.to_string())),
        ("--learning-rate", s.learning_rate.map(|v| v.to_string())),
        ("--seed", s.seed.map(|v| v.to_string())),
        ("--patience", s.patience.map(|v| v.to_string())),
        ("--every-steps", s.every_steps.map(|v| v.to_string())),
        ("--keep-last", s.keep_last.map(|v| v.to_string())),
    ];
    for (flag, value) in pairs {
        if let Some(v) = value {
            c.extend([flag.to_string(), v]);
        }
    }
    if spec.gpus_per_worker > 0 {
        c.extend(["--device".into(), "cuda".into()]);
    }
    Ok(c)
}
