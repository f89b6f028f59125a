//! `nova-bench`: measurements against the cluster of the current kubeconfig (the dev cluster),
//! kept out of the product binary. See docs/benchmarks.md.

mod alerts;
mod bench;
mod bluegreen;
mod platforms;
mod train;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "nova-bench", about = "Nova's benchmarks (see docs/benchmarks.md)")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// N Platforms through the operator vs. the same Deployments and Services by a plain client.
    Platforms {
        /// How many.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// The operator's --concurrency.
        #[arg(long, default_value_t = 16)]
        concurrency: u16,
    },
    /// AlertRules from apply to every rule reported loaded, next to promtool + reload by hand.
    Alerts {
        /// How many AlertRules.
        #[arg(long, default_value_t = 100)]
        objects: usize,
        /// Rules in each.
        #[arg(long, default_value_t = 10)]
        rules: usize,
    },
    /// Promote/abort cycles of one BlueGreenDeployment: switch and rollback latency, next to a
    /// plain selector patch.
    Bluegreen {
        /// How many promote + abort cycles.
        #[arg(long, default_value_t = 100)]
        cycles: usize,
    },
    /// `nova train` (candle) against PyTorch on the CPU, 1 and 2 threads, and the checkpoint
    /// overhead. No cluster needed; PyTorch from $NOVA_TORCH_PYTHON (default python3).
    Train {
        /// Timed runs per configuration (after one warm-up run).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Steps per run.
        #[arg(long, default_value_t = 600)]
        steps: u64,
        #[arg(long, default_value_t = 64)]
        batch_size: u32,
    },
}

/// The cluster of the current kubeconfig; only the cluster benchmarks ask for it.
async fn cluster() -> Result<kube::Client> {
    nova::kubeclient::infer().await.context("no usable kubeconfig")
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Bench::Platforms { count, concurrency } => {
            let report = platforms::platforms(cluster().await?, count, concurrency).await?;
            println!("{}", report.markdown());
        }
        Bench::Alerts { objects, rules } => {
            let report = alerts::run(cluster().await?, objects, rules).await?;
            println!("{}", report.markdown());
        }
        Bench::Bluegreen { cycles } => {
            let mut report = bluegreen::run(cluster().await?, cycles).await?;
            println!("{}", report.markdown());
        }
        Bench::Train { runs, steps, batch_size } => {
            let python = std::env::var("NOVA_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
            println!("{}", train::run(&train::Settings { runs, steps, batch_size, python })?);
        }
    }
    Ok(())
}
