//! `nova-bench`: measurements against the cluster of the current kubeconfig (the dev cluster),
//! kept out of the product binary. See docs/benchmarks.md.

mod alerts;
mod bench;
mod bluegreen;
mod platforms;

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
}

#[tokio::main]
async fn main() -> Result<()> {
    let client = nova::kubeclient::infer().await.context("no usable kubeconfig")?;
    match Cli::parse().command {
        Bench::Platforms { count, concurrency } => {
            let report = platforms::platforms(client, count, concurrency).await?;
            println!("{}", report.markdown());
        }
        Bench::Alerts { objects, rules } => {
            let report = alerts::run(client, objects, rules).await?;
            println!("{}", report.markdown());
        }
        Bench::Bluegreen { cycles } => {
            let mut report = bluegreen::run(client, cycles).await?;
            println!("{}", report.markdown());
        }
    }
    Ok(())
}
