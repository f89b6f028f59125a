//! What the operator's integration tests share: CRDs installed in the shared control plane, and
//! the operator run in-process for one namespace.
#![allow(dead_code)]

pub mod dashboards;
pub mod rule_sync;

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::runtime::{conditions, wait::await_condition};
use kube::{Api, Client, ResourceExt};
use tokio::sync::oneshot;

pub const TIMEOUT: Duration = Duration::from_secs(60);

pub async fn install_crds(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in nova::api::crds() {
        let name = crd.name_any();
        crds.patch(&name, &PatchParams::apply("nova-test").force(), &Patch::Apply(&crd)).await?;
        tokio::time::timeout(TIMEOUT, await_condition(crds.clone(), &name, conditions::is_crd_established()))
            .await??;
    }
    Ok(())
}

/// An operator for one namespace, in this process, stopped when the guard drops.
pub struct Operator {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), nova::operator::Error>>,
    state: tempfile::TempDir,
}

/// Where an operator run as a process writes its log: recorded for the secret scan when the
/// suite records (see `test_cluster::record`), else nowhere.
pub fn operator_log() -> std::process::Stdio {
    test_cluster::record::file("operator")
        .and_then(|p| std::fs::File::create(p).ok())
        .map_or_else(std::process::Stdio::null, std::process::Stdio::from)
}

/// Operators run in this process log, at debug level, into a recorded file for the secret
/// scan (when the suite records).
pub fn record_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Some(file) = test_cluster::record::file("operator").and_then(|p| std::fs::File::create(p).ok())
        {
            let _ = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(tracing::Level::DEBUG)
                .with_writer(std::sync::Mutex::new(file))
                .try_init();
        }
    });
}

impl Operator {
    pub async fn start(client: Client, ns: &str) -> Result<Self> {
        Self::start_with_state(client, ns, tempfile::tempdir()?).await
    }

    /// Starts with the state database in `state`: a restarted operator keeps its history.
    pub async fn start_with_state(client: Client, ns: &str, state: tempfile::TempDir) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Self::launch(client, ns, state, port, Default::default(), Default::default()).await
    }

    /// Starts with the TrainingJob settings `training` (a Prometheus for GPU readings).
    pub async fn start_training(
        client: Client,
        ns: &str,
        training: nova::training::controller::Settings,
    ) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Self::launch(client, ns, tempfile::tempdir()?, port, Default::default(), training).await
    }

    /// Starts on HTTP port `port` (so a Prometheus can be told to scrape it first) with the
    /// AlertRule settings `alerts`.
    pub async fn start_alerts(
        client: Client,
        ns: &str,
        port: u16,
        alerts: nova::alerts::controller::Settings,
    ) -> Result<Self> {
        Self::launch(client, ns, tempfile::tempdir()?, port, alerts, Default::default()).await
    }

    async fn launch(
        client: Client,
        ns: &str,
        state: tempfile::TempDir,
        port: u16,
        alerts: nova::alerts::controller::Settings,
        training: nova::training::controller::Settings,
    ) -> Result<Self> {
        record_logs();
        let cfg = nova::operator::Config {
            state_url: state.path().join("state.db").display().to_string(),
            http_addr: ([127, 0, 0, 1], port).into(),
            lease: nova::operator::default_lease(ns.to_owned(), format!("test-{ns}")),
            concurrency: 4,
            watch_namespace: Some(ns.to_owned()),
            trusted_namespaces: Vec::new(),
            alerts,
            training,
            // The operator runs inside the test binary; hosts get the real `nova`.
            host_binary: Some(env!("CARGO_BIN_EXE_nova").into()),
            acme: nova::certs::Settings {
                backoff_base: Duration::from_secs(2),
                order_timeout: Duration::from_secs(30),
                // What a pod IP would be: the apiserver refuses loopback endpoints. Nothing
                // routes through it here; Pebble reaches the operator on 127.0.0.1 directly.
                solver_endpoint: ([192, 0, 2, 10], port).into(),
                ..Default::default()
            },
        };
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(nova::operator::run(cfg, client, async move {
            let _ = rx.await;
        }));
        Ok(Self { port, stop: Some(tx), task, state })
    }

    /// The operator's HTTP port (metrics, health, HTTP-01 answers).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The operator's /metrics text.
    pub async fn metrics(&self) -> Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
        let mut body = String::new();
        s.read_to_string(&mut body).await?;
        Ok(body)
    }

    pub async fn stop(self) -> Result<()> {
        self.stop_keeping_state().await.map(drop)
    }

    /// Stops gracefully and hands back the state directory for a restart.
    pub async fn stop_keeping_state(mut self) -> Result<tempfile::TempDir> {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(TIMEOUT, &mut self.task).await???;
        Ok(self.state)
    }

    pub fn state_url(&self) -> String {
        self.state.path().join("state.db").display().to_string()
    }
}

/// The application: answers with its VERSION and colour, HTTP/1.1 with keep-alive as a real
/// backend would; its deep check (`/deep...`) answers 500 when HEALTH=fail; `/metrics` serves
/// one series in Prometheus' text format.
pub const TEST_APP: &str = r#"import os, http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        code = 500 if self.path.startswith("/deep") and os.environ.get("HEALTH") == "fail" else 200
        body = (os.environ.get("VERSION", "") + " " + os.environ.get("NOVA_COLOR", "") + "\n").encode()
        if self.path == "/metrics":
            body = ('nova_test_app_info{version="%s"} 1\n' % os.environ.get("VERSION", "")).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// A test host running the test application (`/opt/app.py`), its key in Secret `key` of `ns`,
/// and a Host named `<prefix>-<namespace suffix>` for it with its key pinned. Returns the host
/// and the Host's name.
pub async fn app_host(
    client: &Client,
    ns: &str,
    prefix: &'static str,
) -> Result<(test_cluster::testhost::TestHost, String)> {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::PostParams;
    let th = tokio::task::spawn_blocking(move || test_cluster::testhost::TestHost::start(prefix)).await??;
    std::fs::create_dir_all(th.root().join("opt"))?;
    std::fs::write(th.root().join("opt/app.py"), TEST_APP)?;
    let s: Secret = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "key"}, "stringData": {"id_ed25519": th.client_key}}),
    )?;
    Api::<Secret>::namespaced(client.clone(), ns).create(&PostParams::default(), &s).await?;
    let name = format!("{prefix}-{}", ns.rsplit('-').next().unwrap_or("x"));
    let h: nova::api::Host = serde_json::from_value(serde_json::json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Host", "metadata": {"name": name},
        "spec": {"address": th.ssh_addr.ip().to_string(), "hostKey": th.host_key,
                 "sshKeySecretRef": {"name": "key", "key": "id_ed25519"}},
    }))?;
    Api::<nova::api::Host>::all(client.clone()).create(&PostParams::default(), &h).await?;
    Ok((th, name))
}

/// JSON merge patch (RFC 7386) applied to `target`: a null in `patch` removes the key.
pub fn merge(target: &mut serde_json::Value, patch: serde_json::Value) {
    use serde_json::Value;
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(&k);
                } else {
                    merge(t.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p,
    }
}

/// The repository's examples directory.
pub const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");

/// Every Nova object of the examples (`examples/*.yaml`), in file order.
pub fn example_objects() -> Result<Vec<(String, serde_json::Value)>> {
    use anyhow::Context as _;
    use serde::Deserialize as _;
    let mut files: Vec<_> =
        std::fs::read_dir(EXAMPLES)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = serde_json::Value::deserialize(doc).with_context(|| format!("{}", f.display()))?;
            out.push((f.file_name().unwrap_or_default().to_string_lossy().into_owned(), v));
        }
    }
    Ok(out)
}

pub fn cluster_scoped(kind: &str) -> bool {
    matches!(kind, "Host" | "AcmeIssuer" | "Namespace")
}

/// `kubectl create --dry-run=server --validate=strict -o name -f -` of `input`: what the real
/// apiserver admits, nothing stored.
pub fn dry_run(cp: &test_cluster::ControlPlane, input: &[u8]) -> Result<std::process::Output> {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = cp
        .kubectl()
        .args(["create", "--dry-run=server", "--validate=strict", "-o", "name", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().ok_or_else(|| anyhow::anyhow!("kubectl stdin"))?.write_all(input)?;
    Ok(child.wait_with_output()?)
}

/// Runs the `nova` binary with the state database in `dir` (the CLI without a cluster);
/// returns whether it succeeded and what it printed.
pub async fn nova_local(args: &[&str], dir: &std::path::Path) -> Result<(bool, String)> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_nova"))
        .args(args)
        .env("NOVA_STATE", dir.join("state.db"))
        .output()
        .await?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}
