//! TrainingJob: the built-in trainer's settings from a spec, and `nova train`.

pub mod builtin;
pub mod cli;
pub mod controller;
pub mod dcgm;
pub mod hostctl;
pub mod hostguard;
pub mod hostrun;
pub mod metrics;
pub mod observe;
pub mod plan;
pub mod podguard;
pub mod pods;
pub mod runs;
pub mod thermal;
pub mod units;
