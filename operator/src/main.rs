//! The `nova` command.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "nova",
    version,
    about = "Nova: platforms on Kubernetes and on SSH hosts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the CustomResourceDefinitions as YAML, one file per kind.
    Crds {
        /// Directory to write into.
        #[arg(long, default_value = "crds")]
        out: PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Crds { out } => {
            for name in nova::crdgen::write(&out)? {
                println!("{}", out.join(name).display());
            }
        }
    }
    Ok(())
}
