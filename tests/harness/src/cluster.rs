//! Starting, using and stopping one control plane.

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;

use crate::pki::{self, Pki};
use crate::process::Process;
use crate::{Error, Result, binaries};

/// What runs besides etcd and kube-apiserver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// etcd and kube-apiserver only: fast, enough for anything that is not a workload.
    ApiServer,
    /// Adds kube-controller-manager, kube-scheduler and kwok with fake nodes.
    Simulated,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub mode: Mode,
    /// Where state, certificates, kubeconfigs and logs go. `None`: a fresh temporary directory.
    /// A given directory is emptied first and removed when the control plane stops.
    pub state_dir: Option<PathBuf>,
    /// Fake nodes in simulated mode.
    pub nodes: usize,
    /// How long to wait for the control plane to become ready.
    pub ready_timeout: Duration,
    /// kube-controller-manager controllers to leave off, e.g. `endpointslice-controller` when a
    /// test writes EndpointSlices itself (fake pods have addresses nothing answers on).
    pub disabled_controllers: Vec<String>,
}

impl Options {
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            state_dir: None,
            nodes: 3,
            ready_timeout: Duration::from_secs(120),
            disabled_controllers: Vec::new(),
        }
    }
}

enum StateDir {
    Temp(tempfile::TempDir),
    Fixed(PathBuf),
}

impl StateDir {
    fn path(&self) -> &Path {
        match self {
            StateDir::Temp(t) => t.path(),
            StateDir::Fixed(p) => p,
        }
    }
}

pub struct ControlPlane {
    mode: Mode,
    server: String,
    kubeconfig: PathBuf,
    ca_der: Vec<u8>,
    bin: PathBuf,
    // Started in order, stopped in reverse; a Mutex so a shared (static) instance can be used
    // from every test and still be stopped through `&self` by the dev-cluster binary.
    processes: Mutex<Vec<Process>>,
    /// The apiserver's audit log: in the state directory, or recorded for the secret scan.
    audit_log: PathBuf,
    // Declared last: removed after the processes that write into it have stopped.
    dir: StateDir,
}

/// Temporary control planes live under here; each records its owner's PID so a later start
/// can sweep directories left by test binaries that exited without running destructors.
fn temp_root() -> PathBuf {
    std::env::temp_dir().join("nova-test-cluster")
}

const OWNER_FILE: &str = "owner.pid";

fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(temp_root()) else {
        return;
    };
    for entry in entries.flatten() {
        let owner = std::fs::read_to_string(entry.path().join(OWNER_FILE)).unwrap_or_default();
        let alive = owner.trim().parse::<u32>().is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// N distinct free loopback ports (a port chosen by binding and closing one listener at a time
/// can come back twice: SeaweedFS once got the same gRPC port for its master and its volume server).
pub(crate) fn free_ports<const N: usize>() -> Result<[u16; N]> {
    // All listeners are held until every port is chosen, so the N ports differ.
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io("binding a free loopback port", e))?;
    let mut ports = [0u16; N];
    for (port, l) in ports.iter_mut().zip(&listeners) {
        *port = l.local_addr().map_err(|e| Error::io("reading a bound port", e))?.port();
    }
    Ok(ports)
}

/// Writes only (verb, URI, user, user agent, status), once each; events and status writes with
/// their request bodies, for the secret scan (see [`crate::record`]).
const AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Request
  verbs: ["create", "update", "patch"]
  resources:
  - group: ""
    resources: ["events", "*/status"]
  - group: "events.k8s.io"
    resources: ["events"]
  - group: "nova.infra.dev"
    resources: ["*/status"]
- level: Metadata
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: None
"#;
const AUDIT_LOG: &str = "audit.log";

/// One write the apiserver received, from its audit log.
#[derive(Clone, Debug)]
pub struct AuditedWrite {
    pub verb: String,
    pub uri: String,
    pub user_agent: String,
    pub code: i64,
    /// When the apiserver received it.
    pub at: std::time::SystemTime,
}

fn write(dir: &Path, name: &str, contents: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, contents).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(path)
}

fn args<I, S>(items: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    items.into_iter().map(Into::into).collect()
}

/// A kubeconfig authenticating with a client certificate (files referenced by path).
fn kubeconfig_yaml(server: &str, ca: &Path, cert: &Path, key: &Path, user: &str) -> String {
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "nova-test", "cluster": {
            "server": server, "certificate-authority": ca }}],
        "users": [{"name": user, "user": {
            "client-certificate": cert, "client-key": key }}],
        "contexts": [{"name": "nova-test", "context": {"cluster": "nova-test", "user": user}}],
        "current-context": "nova-test",
    });
    serde_yaml::to_string(&doc).expect("kubeconfig serializes")
}

/// Polls `check` every 100 ms until it returns true; fails with what was awaited after
/// `timeout`, or at once with the check's own error. For tests too: awaiting a condition, never a
/// fixed sleep.
pub async fn eventually<F, Fut, E>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<bool, E>>,
    E: std::fmt::Display,
{
    let deadline = Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        if check().await.map_err(|e| Error::Other(format!("while waiting for {what}: {e}")))? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout { what: what.to_owned(), seconds: timeout.as_secs() });
        }
    }
}

impl ControlPlane {
    /// Starts a control plane and waits until it serves (and, simulated, until its nodes are
    /// Ready). A start that fails because a component died (a port taken in the meantime, say)
    /// is retried twice on new ports.
    pub async fn start(opts: Options) -> Result<Self> {
        let bin = tokio::task::spawn_blocking(binaries::bin_dir)
            .await
            .map_err(|e| Error::Other(format!("binary lookup panicked: {e}")))??;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_start(&opts, &bin).await {
                Err(Error::Exited { .. }) if attempt < 3 => continue,
                result => return result,
            }
        }
    }

    async fn try_start(opts: &Options, bin: &Path) -> Result<Self> {
        let dir = match &opts.state_dir {
            Some(path) => {
                let _ = std::fs::remove_dir_all(path);
                std::fs::create_dir_all(path)
                    .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
                StateDir::Fixed(path.clone())
            }
            None => {
                sweep_stale_dirs();
                let root = temp_root();
                std::fs::create_dir_all(&root)
                    .map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
                let t = tempfile::Builder::new()
                    .prefix("cp-")
                    .tempdir_in(&root)
                    .map_err(|e| Error::io("creating a temporary directory", e))?;
                StateDir::Temp(t)
            }
        };
        let d = dir.path().to_owned();
        write(&d, OWNER_FILE, &std::process::id().to_string())?;
        let logs = d.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| Error::io("creating the log directory", e))?;

        let pki = Pki::new()?;
        let ca = write(&d, "ca.crt", &pki.ca_pem)?;
        let ca_key = write(&d, "ca.key", &pki.ca_key_pem)?;
        let (sa_private, sa_public) = pki::service_account_key()?;
        let sa_key = write(&d, "sa.key", &sa_private)?;
        let sa_pub = write(&d, "sa.pub", &sa_public)?;
        let serving = pki.serving()?;
        let serving_crt = write(&d, "apiserver.crt", &serving.cert_pem)?;
        let serving_key = write(&d, "apiserver.key", &serving.key_pem)?;

        let audit_policy = write(&d, "audit-policy.yaml", AUDIT_POLICY)?;
        let audit_log = crate::record::file("audit").unwrap_or_else(|| d.join(AUDIT_LOG));
        let [etcd_client, etcd_peer, api_port, kubelet_port] = free_ports::<4>()?;
        let server = format!("https://127.0.0.1:{api_port}");

        // Each identity gets its own certificate and kubeconfig, as kubeadm does, so RBAC sees
        // the same users as in a real cluster.
        let kubeconfig_for = |name: &str, user: &str, groups: &[&str]| -> Result<PathBuf> {
            let pair = pki.client(user, groups)?;
            let crt = write(&d, &format!("{name}.crt"), &pair.cert_pem)?;
            let key = write(&d, &format!("{name}.key"), &pair.key_pem)?;
            write(&d, &format!("{name}.kubeconfig"), &kubeconfig_yaml(&server, &ca, &crt, &key, user))
        };
        let admin_kc = kubeconfig_for("admin", "nova-admin", &["system:masters"])?;
        let cm_kc = kubeconfig_for("controller-manager", "system:kube-controller-manager", &[])?;
        let sched_kc = kubeconfig_for("scheduler", "system:kube-scheduler", &[])?;
        let kwok_kc = kubeconfig_for("kwok", "kwok", &["system:masters"])?;

        let cp = ControlPlane {
            mode: opts.mode,
            server: server.clone(),
            kubeconfig: admin_kc,
            ca_der: pki.ca_der.clone(),
            bin: bin.to_owned(),
            processes: Mutex::new(Vec::new()),
            audit_log: audit_log.clone(),
            dir,
        };

        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        cp.spawn(
            "etcd",
            args([
                "--name=default".into(),
                format!("--data-dir={}", d.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                // Throwaway state: durability buys nothing here and fsync dominates test time.
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ]),
        )?;

        cp.spawn(
            "kube-apiserver",
            args([
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                "--advertise-address=127.0.0.1".into(),
                // A loopback address may not be published in the kubernetes Endpoints object.
                "--endpoint-reconciler-type=none".into(),
                format!("--cert-dir={}", d.join("apiserver-certs").display()),
                format!("--tls-cert-file={}", serving_crt.display()),
                format!("--tls-private-key-file={}", serving_key.display()),
                format!("--client-ca-file={}", ca.display()),
                "--authorization-mode=RBAC".into(),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", sa_pub.display()),
                format!("--service-account-signing-key-file={}", sa_key.display()),
                // Never routed: Services get addresses, nothing ever sends to them.
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--allow-privileged=true".into(),
                "--profiling=false".into(),
                // The kubelet proxy (pods/log) goes to kwok's server on loopback, whose
                // certificate is the apiserver's own (signed by the cluster CA, valid for 127.0.0.1).
                "--kubelet-preferred-address-types=InternalIP".into(),
                format!("--kubelet-certificate-authority={}", ca.display()),
                // Every write, with who sent it: tests count what Nova writes (a quiet
                // operator writes nothing; a fenced one writes nothing more).
                format!("--audit-policy-file={}", audit_policy.display()),
                format!("--audit-log-path={}", audit_log.display()),
                "--audit-log-format=json".into(),
                "--audit-log-maxsize=0".into(),
            ]),
        )?;

        let client = cp.client().await?;
        cp.wait_ready("kube-apiserver /readyz", opts.ready_timeout, || {
            let client = client.clone();
            async move {
                let req = http::Request::get("/readyz").body(Vec::new()).expect("request");
                Ok(client.request_text(req).await.is_ok_and(|body| body.trim() == "ok"))
            }
        })
        .await?;

        if opts.mode == Mode::Simulated {
            crate::podlogs::install_crd(&client, opts.ready_timeout).await?;
            cp.spawn(
                "kube-controller-manager",
                args([
                    format!("--kubeconfig={}", cm_kc.display()),
                    "--secure-port=0".into(),
                    "--leader-elect=false".into(),
                    "--use-service-account-credentials=true".into(),
                    format!("--service-account-private-key-file={}", sa_key.display()),
                    format!("--root-ca-file={}", ca.display()),
                    format!("--cluster-signing-cert-file={}", ca.display()),
                    format!("--cluster-signing-key-file={}", ca_key.display()),
                    "--profiling=false".into(),
                    // The default 20 requests/s would make workload tests wait on client-side throttling.
                    "--kube-api-qps=200".into(),
                    "--kube-api-burst=400".into(),
                    format!(
                        "--controllers=*{}",
                        opts.disabled_controllers.iter().map(|c| format!(",-{c}")).collect::<String>()
                    ),
                ]),
            )?;
            cp.spawn(
                "kube-scheduler",
                args([
                    format!("--kubeconfig={}", sched_kc.display()),
                    "--secure-port=0".into(),
                    "--leader-elect=false".into(),
                    "--profiling=false".into(),
                    "--kube-api-qps=200".into(),
                    "--kube-api-burst=400".into(),
                ]),
            )?;
            cp.spawn(
                "kwok",
                args([
                    format!("--kubeconfig={}", kwok_kc.display()),
                    format!("--config={}", bin.join("kwok-stages.yaml").display()),
                    // Serves pods/log (and only what tests give a `Logs` object) as a kubelet would.
                    "--enable-crds=Logs".into(),
                    format!("--server-address=127.0.0.1:{kubelet_port}"),
                    format!("--node-port={kubelet_port}"),
                    format!("--tls-cert-file={}", serving_crt.display()),
                    format!("--tls-private-key-file={}", serving_key.display()),
                    "--manage-all-nodes=false".into(),
                    format!("--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake"),
                    "--node-lease-duration-seconds=40".into(),
                    // Nodes on loopback, where the apiserver finds their kubelet (kwok); pods get
                    // addresses of the benchmark range (RFC 2544) that route nowhere.
                    "--node-ip=127.0.0.1".into(),
                    "--cidr=198.18.0.0/15".into(),
                ]),
            )?;
            cp.add_fake_nodes(&client, opts.nodes).await?;
            let nodes: Api<Node> = Api::all(client.clone());
            let want = opts.nodes;
            cp.wait_ready("fake nodes to be Ready", opts.ready_timeout, || {
                let nodes = nodes.clone();
                async move {
                    let list = nodes.list(&ListParams::default()).await?;
                    Ok(list.items.iter().filter(|n| node_ready(n)).count() >= want)
                }
            })
            .await?;
            // The service-account controller is running once `default` has its account; pods
            // cannot be admitted in a namespace before that.
            let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
            cp.wait_ready("the default ServiceAccount", opts.ready_timeout, || {
                let sas = sas.clone();
                async move { Ok(sas.get_opt("default").await?.is_some()) }
            })
            .await?;
        }
        Ok(cp)
    }

    fn spawn(&self, name: &'static str, args: Vec<OsString>) -> Result<()> {
        let proc = Process::start(name, &self.bin.join(name), args, &self.dir.path().join("logs"))?;
        self.processes.lock().expect("process list").push(proc);
        Ok(())
    }

    /// Waits for `check`, failing at once with the dead component's log if any process exits.
    async fn wait_ready<F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        eventually(what, timeout, || {
            let died = self.first_exited();
            let fut = check();
            async move {
                match died {
                    Some(e) => Err(e),
                    None => fut.await,
                }
            }
        })
        .await
    }

    fn first_exited(&self) -> Option<Error> {
        let mut procs = self.processes.lock().expect("process list");
        procs.iter_mut().find_map(|p| p.exited().map(|status| p.died(status)))
    }

    async fn add_fake_nodes(&self, client: &Client, count: usize) -> Result<()> {
        let nodes: Api<Node> = Api::all(client.clone());
        for i in 0..count {
            let name = format!("kwok-node-{i}");
            let node: Node = serde_json::from_value(json!({
                "metadata": {
                    "name": name,
                    "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": {
                        "type": "kwok",
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                    },
                },
                // GPUs as the NVIDIA device plugin advertises them, for the training tests.
                "status": {
                    "capacity": {"cpu": "256", "memory": "1Ti", "pods": "2000", "nvidia.com/gpu": "8"},
                    "allocatable": {"cpu": "256", "memory": "1Ti", "pods": "2000", "nvidia.com/gpu": "8"},
                },
            }))
            .expect("node manifest");
            nodes.create(&PostParams::default(), &node).await?;
        }
        Ok(())
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// A kubeconfig for a cluster administrator (group `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new administrator client. Each test makes its own: a client belongs to the tokio
    /// runtime it was made in, and every `#[tokio::test]` has its own runtime.
    pub async fn client(&self) -> Result<Client> {
        let kc = Kubeconfig::read_from(&self.kubeconfig)
            .map_err(|source| Error::Kubeconfig { path: self.kubeconfig.clone(), source })?;
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|source| Error::Kubeconfig { path: self.kubeconfig.clone(), source })?;
        Ok(Client::try_from(config)?)
    }

    /// A client authenticated as a ServiceAccount through a TokenRequest, to prove that the
    /// RBAC granted to that account is enough.
    pub async fn client_for_service_account(&self, namespace: &str, name: &str) -> Result<Client> {
        let admin = self.client().await?;
        let sas: Api<ServiceAccount> = Api::namespaced(admin, namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec!["https://kubernetes.default.svc.cluster.local".into()]),
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let token = sas
            .create_token_request(name, &PostParams::default(), &request)
            .await?
            .status
            .ok_or_else(|| Error::Other(format!("TokenRequest for {namespace}/{name} returned no status")))?
            .token
            .ok_or_else(|| Error::Other(format!("TokenRequest for {namespace}/{name} returned no token")))?;
        let mut config = Config::new(self.server.parse().expect("server URL"));
        config.root_cert = Some(vec![self.ca_der.clone()]);
        config.auth_info.token = Some(token.into());
        config.default_namespace = namespace.to_owned();
        Ok(Client::try_from(config)?)
    }

    /// A fresh namespace named `<prefix>-<random>`. In simulated mode it also waits for its
    /// `default` ServiceAccount, without which no pod is admitted.
    pub async fn namespace(&self, client: &Client, prefix: &str) -> Result<String> {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta { generate_name: Some(format!("{prefix}-")), ..Default::default() },
            ..Default::default()
        };
        let name =
            namespaces.create(&PostParams::default(), &ns).await?.metadata.name.expect("generated name");
        if self.mode == Mode::Simulated {
            let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
            eventually("the namespace's default ServiceAccount", Duration::from_secs(30), || {
                let sas = sas.clone();
                async move { Ok::<_, Error>(sas.get_opt("default").await?.is_some()) }
            })
            .await?;
        }
        Ok(name)
    }

    /// The built `kubectl`, already pointed at this control plane.
    /// The writes in the audit log whose User-Agent starts with `agent`, received at or after
    /// `since`.
    pub fn audited_writes(&self, agent: &str, since: std::time::SystemTime) -> Result<Vec<AuditedWrite>> {
        let path = &self.audit_log;
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let mut out = Vec::new();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let ua = v["userAgent"].as_str().unwrap_or_default();
            let at = v["requestReceivedTimestamp"]
                .as_str()
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                .map(std::time::SystemTime::from);
            let Some(at) = at else { continue };
            if ua.starts_with(agent) && at >= since {
                out.push(AuditedWrite {
                    verb: v["verb"].as_str().unwrap_or_default().to_owned(),
                    uri: v["requestURI"].as_str().unwrap_or_default().to_owned(),
                    user_agent: ua.to_owned(),
                    code: v["responseStatus"]["code"].as_i64().unwrap_or_default(),
                    at,
                });
            }
        }
        Ok(out)
    }

    pub fn kubectl(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(self.bin.join("kubectl"));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// Name and PID of every component, in start order.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.processes.lock().expect("process list").iter().map(|p| (p.name, p.pid())).collect()
    }

    /// Stops every component, newest first, so nothing loses its backend before it stops.
    pub fn stop(&self) {
        let procs = std::mem::take(&mut *self.processes.lock().expect("process list"));
        for proc in procs.into_iter().rev() {
            proc.stop(Duration::from_secs(10));
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
        if let StateDir::Fixed(path) = &self.dir {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

/// kwok manages only nodes with this annotation, so real nodes (if any) are left alone.
const FAKE_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
