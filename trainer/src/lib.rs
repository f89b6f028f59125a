//! Nova's built-in trainer, Kubernetes-free: candle models on Fashion-MNIST or synthetic data, an
//! AdamW whose moments are checkpointed, safetensors checkpoints with exact resume, early stopping,
//! and the progress protocol every trainer under Nova speaks (`progress`).

pub mod checkpoint;
pub mod data;
pub mod model;
pub mod optim;
pub mod progress;
pub mod rng;
pub mod run;

pub use model::Preset;
pub use run::{Config, Resume, Summary, train};

/// What went wrong, by where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("data: {0}")]
    Data(String),
    #[error("checkpoint {0}")]
    Checkpoint(String),
    #[error("progress file: {0}")]
    Progress(String),
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// The device to train on: `cpu`, or `cuda` (GPU 0) when built with the `cuda` feature.
pub fn device(name: &str) -> Result<candle_core::Device, Error> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(candle_core::Device::new_cuda(0)?),
        other => Err(Error::Config(format!(
            "device {other:?}: use cpu{}",
            if cfg!(feature = "cuda") {
                " or cuda"
            } else {
                " (this build has no CUDA; build with --features cuda)"
            }
        ))),
    }
}
