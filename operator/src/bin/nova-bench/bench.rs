//! What the benchmarks share: namespaces, CRDs, the operator as a separate process, medians.

use std::process::{Child, Command, Stdio};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{conditions, wait::await_condition};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

pub async fn namespace(client: &Client, prefix: &str) -> anyhow::Result<String> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"generateName": format!("{prefix}-")}}))?;
    let created = Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
    Ok(created.name_any())
}

pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in nova::api::crds() {
        let name = crd.name_any();
        api.patch(&name, &PatchParams::apply("nova-bench").force(), &Patch::Apply(&crd)).await?;
        await_condition(api.clone(), &name, conditions::is_crd_established()).await?;
    }
    Ok(())
}

/// The `nova` binary built beside this one (`target/release/nova`), or `$NOVA_BIN`.
pub fn nova_binary() -> anyhow::Result<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("NOVA_BIN") {
        return Ok(p.into());
    }
    let me = std::env::current_exe()?;
    Ok(me.with_file_name("nova"))
}

/// `nova operator` as a separate process, scoped to one namespace; killed on drop.
pub struct Operator(pub Child);

impl Operator {
    pub fn start(ns: &str, concurrency: u16, state: &std::path::Path, port: u16) -> anyhow::Result<Self> {
        Self::start_with(ns, concurrency, state, port, &[])
    }

    /// [`start`](Self::start) with more flags.
    pub fn start_with(
        ns: &str,
        concurrency: u16,
        state: &std::path::Path,
        port: u16,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        let child = Command::new(nova_binary()?)
            .args(["operator", "--watch-namespace", ns, "--lease-namespace", ns])
            .args(extra)
            .args(["--concurrency", &concurrency.to_string()])
            .arg("--state")
            .arg(state.join("state.db"))
            .args(["--http-addr", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            // NOVA_BENCH_OPERATOR_LOG=<file> keeps the operator's log for a closer look.
            .stderr(match std::env::var_os("NOVA_BENCH_OPERATOR_LOG") {
                Some(path) => Stdio::from(std::fs::File::create(path)?),
                None => Stdio::null(),
            })
            .spawn()?;
        Ok(Self(child))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

pub async fn metric(port: u16, name: &str) -> anyhow::Result<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

pub fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("nova-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Median and 99th percentile (nearest rank) of `v`, in milliseconds.
pub fn p50_p99(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (rank(0.5), rank(0.99))
}
