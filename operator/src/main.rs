//! The `nova` command.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "nova", version = VERSION, about = "Nova: platforms on Kubernetes and on SSH hosts")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The version and the commit it was built from (build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("NOVA_COMMIT"), ")");

#[derive(Subcommand)]
enum Command {
    /// Print the version and the commit this binary was built from.
    Version,
    /// Print a shell completion script: `source <(nova completions bash)`, or into the shell's
    /// completion directory (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the CustomResourceDefinitions as YAML, one file per kind.
    Crds {
        /// Directories to write into (the repository's crds/ and the Helm chart's crds/).
        #[arg(long, default_values = ["crds", "charts/nova/crds"])]
        out: Vec<PathBuf>,
    },
    /// Run the controllers against the cluster of the current kubeconfig (or in-cluster).
    Operator {
        /// State database: a file path or sqlite:// URL (SQLite), or a postgres:// URL.
        #[arg(long, env = "NOVA_STATE", hide_env_values = true, default_value = "nova-state.db")]
        state: String,
        /// Address of the HTTP port (/metrics, /healthz, /readyz).
        #[arg(long, env = "NOVA_HTTP_ADDR", default_value = "0.0.0.0:8080")]
        http_addr: SocketAddr,
        /// Namespace of the leader-election Lease.
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        lease_namespace: String,
        /// This replica's identity in the Lease; default: POD_NAME, else host name and PID.
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Objects reconciled at the same time.
        #[arg(long, default_value_t = 16)]
        concurrency: u16,
        /// Watch only this namespace; all namespaces when absent.
        #[arg(long, env = "NOVA_WATCH_NAMESPACE")]
        watch_namespace: Option<String>,
        /// Address the HTTP-01 challenge Ingress routes to (this pod's IP); default: the
        /// listen address of --http-addr, or 127.0.0.1 when that is unspecified.
        #[arg(long, env = "POD_IP")]
        solver_address: Option<std::net::IpAddr>,
        /// Seconds to wait after the first failed certificate issuance; doubles per failure.
        #[arg(long, default_value_t = 300)]
        acme_backoff_seconds: u64,
        /// The longest wait between failed issuances, seconds.
        #[arg(long, default_value_t = 86400)]
        acme_backoff_cap_seconds: u64,
        /// Namespaces that may place work on Hosts without spec.allowedNamespaces (comma-separated);
        /// default: the operator's own namespace (--lease-namespace).
        #[arg(long, env = "NOVA_TRUSTED_NAMESPACES", value_delimiter = ',')]
        trusted_namespaces: Vec<String>,
        /// Prometheus to read AlertRules' rules back from (its rules API) and TrainingJobs' GPU
        /// readings (the DCGM exporter's metrics) for the thermal guard, e.g.
        /// http://prometheus-operated.monitoring:9090; without it, rules are applied unchecked
        /// and pods' GPUs are not read.
        #[arg(long, env = "NOVA_PROMETHEUS_URL", hide_env_values = true)]
        prometheus_url: Option<String>,
        /// A label every PrometheusRule Nova writes gets, as `key=value` (repeatable): what the
        /// cluster's Prometheus selects rules by (its spec.ruleSelector).
        #[arg(long = "prometheus-rule-label", value_parser = parse_label)]
        prometheus_rule_labels: Vec<(String, String)>,
        /// Image whose `nova train` runs TrainingJobs of the built-in trainer (the chart passes
        /// the operator's own); default ghcr.io/nova-infra/nova:<this version>.
        #[arg(long, env = "NOVA_TRAINER_IMAGE")]
        trainer_image: Option<String>,
        /// Nova's binary to put on Hosts that run a Backup's schedule (spec.runOn); default
        /// this one. It must run on those hosts (same architecture, glibc as old as theirs).
        #[arg(long, env = "NOVA_HOST_BINARY")]
        host_binary: Option<std::path::PathBuf>,
    },
    /// Blue-green rollouts: status, promote, abort, history, undo. Also `kubectl nova rollout ...`
    /// when this binary is on PATH as `kubectl-nova`.
    #[command(subcommand)]
    Rollout(Rollout),
    /// Hosts over SSH, with no cluster: the Host is read from a file.
    #[command(subcommand)]
    Host(HostCmd),
    /// AlertRules without a cluster: check them as Nova does, print the rule files.
    #[command(subcommand)]
    Alerts(nova::alerts::cli::Command),
    /// Backups with no cluster: run, list, verify (restore drills), restore, prune. The Backup,
    /// its Hosts and Secrets are read from YAML.
    #[command(subcommand)]
    Backup(nova::backup::cli::Command),
    /// The built-in trainer (candle) on its own: Fashion-MNIST or synthetic data, checkpoints with
    /// exact resume, the progress protocol on stdout or in --progress-file.
    Train(Box<nova::training::cli::Args>),
    /// Apply Hosts and host-targeted Platforms from YAML with no cluster: over SSH, with status
    /// kept in the state database. Waits until each rollout settles, printing its progress.
    Apply {
        #[command(flatten)]
        from: Files,
        /// Promote a preview that waits for manual promotion.
        #[arg(long)]
        promote: bool,
        /// Send traffic back to the last stable colour (inside the scale-down window) or stop
        /// the preview.
        #[arg(long, conflicts_with = "promote")]
        abort: bool,
        /// Return once traffic has switched, without waiting for the old colour's scale-down.
        #[arg(long)]
        no_wait: bool,
        /// Keep the TrainingJobs in the file going: a round every --every until each one
        /// succeeded or failed (gang restarts included), as the operator would.
        #[arg(long)]
        supervise: bool,
        /// Time between supervised rounds, in seconds.
        #[arg(long, default_value_t = 10, requires = "supervise")]
        every: u64,
    },
    /// Delete what a YAML file describes, with no cluster: each Platform is removed from its
    /// hosts (units, files, nginx site) and forgotten; Hosts are only forgotten.
    Delete {
        #[command(flatten)]
        from: Files,
    },
    /// List what `nova apply` manages, like `kubectl get`.
    Get {
        /// State database: a file path or sqlite:// URL, or a postgres:// URL.
        #[arg(long, env = "NOVA_STATE", hide_env_values = true, default_value = "nova-state.db")]
        state: String,
    },
    /// Show the status `nova apply` stored for a Platform or Host.
    Status {
        /// Name of the Platform or Host.
        name: String,
        /// Namespace of a Platform.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// State database: a file path or sqlite:// URL, or a postgres:// URL.
        #[arg(long, env = "NOVA_STATE", hide_env_values = true, default_value = "nova-state.db")]
        state: String,
    },
}

#[derive(Subcommand)]
enum Rollout {
    /// Phase, colours, revisions and the health gate; --watch follows it until it settles.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print each change until the rollout is Healthy, Paused, Degraded or Aborted.
        #[arg(short, long)]
        watch: bool,
    },
    /// Promote the preview now (after its health gate passed).
    Promote {
        #[command(flatten)]
        target: Target,
    },
    /// Send traffic back to the stable colour and scale the preview down.
    Abort {
        #[command(flatten)]
        target: Target,
    },
    /// Revisions kept for undo.
    History {
        #[command(flatten)]
        target: Target,
    },
    /// Go back to the previous revision, or to --to-revision.
    Undo {
        #[command(flatten)]
        target: Target,
        /// Revision number (from `history`) or hash.
        #[arg(long)]
        to_revision: Option<String>,
    },
}

#[derive(Subcommand)]
enum HostCmd {
    /// Print the facts of this machine, as the Host controller gathers them over SSH.
    LocalFacts,
    /// Print the facts of each Host in the file.
    Facts {
        #[command(flatten)]
        host: HostArgs,
    },
    /// Bring each Host in the file into the shape its spec.bootstrap describes.
    Bootstrap {
        #[command(flatten)]
        host: HostArgs,
        /// Only check: print what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(clap::Args)]
struct HostArgs {
    /// YAML file with one or more Host objects.
    #[arg(short, long)]
    file: PathBuf,
    /// Private SSH key (OpenSSH format) to log in with.
    #[arg(short, long)]
    identity: PathBuf,
    /// State database (host keys recorded under AcceptNew): a file path or sqlite:// URL, or a
    /// postgres:// URL.
    #[arg(long, env = "NOVA_STATE", hide_env_values = true, default_value = "nova-state.db")]
    state: String,
}

/// What `nova apply` and `nova delete` read, how they log in, where they keep state.
#[derive(clap::Args)]
struct Files {
    /// A YAML file, or a directory of them.
    #[arg(short, long)]
    file: PathBuf,
    /// Private SSH key (OpenSSH format) to log in to the hosts with.
    #[arg(short, long)]
    identity: PathBuf,
    /// State database: a file path or sqlite:// URL, or a postgres:// URL.
    #[arg(long, env = "NOVA_STATE", hide_env_values = true, default_value = "nova-state.db")]
    state: String,
}

#[derive(clap::Args)]
struct Target {
    /// BlueGreenDeployment (a Platform with strategy BlueGreen has one of the same name).
    name: String,
    /// Namespace; default: the kubeconfig's.
    #[arg(short, long)]
    namespace: Option<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Version => println!("nova {VERSION}"),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "nova", &mut std::io::stdout());
        }
        Command::Crds { out } => {
            for dir in out {
                for name in nova::crdgen::write(&dir).with_context(|| format!("writing {}", dir.display()))? {
                    println!("{}", dir.join(name).display());
                }
            }
        }
        Command::Operator {
            state,
            http_addr,
            lease_namespace,
            identity,
            concurrency,
            watch_namespace,
            solver_address,
            acme_backoff_seconds,
            acme_backoff_cap_seconds,
            trusted_namespaces,
            prometheus_url,
            prometheus_rule_labels,
            trainer_image,
            host_binary,
        } => {
            nova::telemetry::init_logging();
            let identity = identity.unwrap_or_else(|| {
                let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "nova".into());
                format!("{}-{}", host.trim(), std::process::id())
            });
            let config = kube::Config::infer().await.context("no usable kubeconfig or in-cluster config")?;
            let agent = nova::kubeclient::operator_agent(&identity);
            let client = nova::kubeclient::for_config(nova::kubeclient::with_user_agent(config, &agent))?;
            let cfg = nova::operator::Config {
                state_url: state,
                http_addr,
                lease: nova::operator::default_lease(lease_namespace, identity),
                concurrency,
                watch_namespace,
                trusted_namespaces,
                alerts: nova::alerts::controller::Settings {
                    prometheus_url: prometheus_url.clone(),
                    rule_labels: prometheus_rule_labels.into_iter().collect(),
                    watch_namespace: None,
                },
                training: {
                    let mut t = nova::training::controller::Settings { prometheus_url, ..Default::default() };
                    if let Some(image) = trainer_image {
                        t.trainer_image = image;
                    }
                    t
                },
                host_binary,
                acme: nova::certs::Settings {
                    backoff_base: std::time::Duration::from_secs(acme_backoff_seconds),
                    backoff_cap: std::time::Duration::from_secs(acme_backoff_cap_seconds),
                    solver_endpoint: nova::certs::solver_endpoint(solver_address, http_addr),
                    ..Default::default()
                },
            };
            nova::operator::run(cfg, client, shutdown_signal()).await?;
        }
        Command::Rollout(cmd) => rollout(cmd).await?,
        Command::Host(cmd) => host(cmd).await?,
        Command::Alerts(cmd) => match nova::alerts::cli::main(cmd) {
            Ok(out) => println!("{out}"),
            Err(problems) => {
                eprintln!("{problems}");
                std::process::exit(1);
            }
        },
        Command::Backup(cmd) => println!("{}", nova::backup::cli::main(cmd).await?),
        Command::Train(args) => match nova::training::cli::main(*args) {
            Ok(summary) => eprintln!("{summary}"),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        },
        Command::Apply { from, promote, abort, no_wait, supervise, every } => {
            let objs = nova::local::load(&from.file)?;
            let state = nova::state::State::connect(&from.state).await?;
            let cfg = nova::local::Apply {
                identity: from.identity,
                requests: nova::hostapp::Requests { promote, abort },
                wait_scale_down: !no_wait,
            };
            let mut failed = nova::local::apply(&state, &objs, &cfg, &mut |line| println!("{line}")).await?;
            let jobs = &objs.training_jobs;
            while supervise && !nova::local_training::finished(&state, jobs).await {
                tokio::time::sleep(std::time::Duration::from_secs(every.max(1))).await;
                let say = &mut |line: &str| println!("{line}");
                let hosts = nova::local::known_hosts(&state, &objs.hosts).await?;
                failed = nova::local_training::apply(&state, jobs, &hosts, &cfg.identity, say).await?;
            }
            anyhow::ensure!(failed == 0, "{failed} object(s) failed; `nova get` shows their state");
        }
        Command::Delete { from } => {
            let objs = nova::local::load(&from.file)?;
            let state = nova::state::State::connect(&from.state).await?;
            let failed =
                nova::local::delete(&state, &objs, &from.identity, &mut |line| println!("{line}")).await?;
            anyhow::ensure!(failed == 0, "{failed} object(s) could not be deleted");
        }
        Command::Status { name, namespace, state } => {
            let state = nova::state::State::connect(&state).await?;
            print!("{}", nova::local::status(&state, &name, &namespace).await?);
        }
        Command::Get { state } => {
            let state = nova::state::State::connect(&state).await?;
            print!("{}", nova::local::table(&state).await?);
        }
    }
    Ok(())
}

async fn rollout(cmd: Rollout) -> Result<()> {
    use nova::rollout as r;
    let client = nova::kubeclient::infer().await.context("no usable kubeconfig")?;
    let ns = |t: &Target| t.namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
    let out = match &cmd {
        Rollout::Status { target, watch: false } => r::status(&client, &ns(target), &target.name).await?,
        Rollout::Status { target, watch: true } => {
            let bg = r::watch(&client, &ns(target), &target.name, |s| println!("{s}")).await?;
            let phase = bg.status.and_then(|s| s.phase);
            if matches!(
                phase,
                Some(nova::api::bluegreen::Phase::Degraded | nova::api::bluegreen::Phase::Aborted)
            ) {
                anyhow::bail!("rollout of {} ended {}", target.name, phase.map_or("", |p| p.as_str()));
            }
            String::new()
        }
        Rollout::Promote { target } => r::promote(&client, &ns(target), &target.name).await?,
        Rollout::Abort { target } => r::abort(&client, &ns(target), &target.name).await?,
        Rollout::History { target } => r::history(&client, &ns(target), &target.name).await?,
        Rollout::Undo { target, to_revision } => {
            r::undo(&client, &ns(target), &target.name, to_revision.as_deref()).await?
        }
    };
    print!("{out}");
    if !out.is_empty() && !out.ends_with('\n') {
        println!();
    }
    Ok(())
}

async fn host(cmd: HostCmd) -> Result<()> {
    use nova::host::cli;
    let (args, dry_run) = match &cmd {
        HostCmd::LocalFacts => {
            print!("{}", serde_yaml::to_string(&cli::local_facts()?)?);
            return Ok(());
        }
        HostCmd::Facts { host } => (host, None),
        HostCmd::Bootstrap { host, dry_run } => (host, Some(*dry_run)),
    };
    let hosts = cli::load_hosts(&args.file)?;
    let state = nova::state::State::connect(&args.state).await?;
    let mut failed = 0;
    for h in &hosts {
        let name = kube::ResourceExt::name_any(h);
        match dry_run {
            None => match cli::facts(h, &args.identity, &state).await {
                Ok(f) => println!("{name}:\n{}", serde_yaml::to_string(&f)?),
                Err(e) => {
                    failed += 1;
                    eprintln!("{name}: {e}");
                }
            },
            Some(dry) => match cli::bootstrap(h, &args.identity, &state, dry).await {
                Ok(r) => println!("{name}:\n{}", nova::host::bootstrap::describe(&r, dry)),
                Err(e) => {
                    failed += 1;
                    eprintln!("{name}: {e}");
                }
            },
        }
    }
    anyhow::ensure!(failed == 0, "{failed} of {} hosts failed", hosts.len());
    Ok(())
}

async fn shutdown_signal() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}

/// `key=value`, with a key Kubernetes accepts as a label name.
fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected key=value"))?;
    let ok =
        !k.is_empty() && k.len() <= 253 && k.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if !ok {
        return Err(format!("{k:?} is not a label key (letters, digits, '-', '_', '.', '/')"));
    }
    Ok((k.to_owned(), v.to_owned()))
}
