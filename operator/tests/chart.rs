//! The Helm chart: it lints, renders objects the real apiserver accepts, refuses bad values, and
//! its RBAC is enough for the operator to reconcile a Platform as the chart's ServiceAccount.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use kube::api::PostParams;
use kube::runtime::wait::await_condition;
use kube::{Api, Client};
use nova::api::Platform;
use serde::Deserialize as _;
use serde_json::json;
use test_cluster::{ControlPlane, Mode, shared};
use tokio::sync::oneshot;

mod common;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/nova");

fn helm() -> Result<Command> {
    Ok(Command::new(test_cluster::bin_dir()?.join("helm")))
}

fn render(namespace: &str, extra: &[&str]) -> Result<std::process::Output> {
    Ok(helm()?
        .args(["template", "nova", CHART, "--namespace", namespace, "--include-crds"])
        .args(extra)
        .output()?)
}

fn kubectl_stdin(cp: &ControlPlane, args: &[&str], input: &[u8]) -> Result<std::process::Output> {
    let mut child = cp
        .kubectl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(input)?;
    Ok(child.wait_with_output()?)
}

#[test]
fn chart_lints() -> Result<()> {
    let out = helm()?.args(["lint", "--strict", CHART]).output()?;
    ensure!(
        out.status.success(),
        "helm lint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn bad_values_are_refused_with_a_reason() -> Result<()> {
    let out = render("nova-system", &["--set", "metrics.port=80"])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/metrics/port") && err.contains("1,024"), "{err}");

    let out = render("nova-system", &["--set", "replicaCount=2"])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a shared state database"));

    let out = render(
        "nova-system",
        &["--set", "replicaCount=2", "--set", "state.postgres.existingSecret=nova-db"],
    )?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// The root file system is read-only, and the operator writes an ACME issuer's CA bundle as a
/// file under the temporary directory (`/tmp` in the image, no TMPDIR set): a writable volume
/// must be mounted there, or every private ACME server fails in a chart install.
#[test]
fn the_operator_can_write_its_files_under_a_read_only_root() -> Result<()> {
    let out = render("nova-system", &[])?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout)?;
    let deployment = serde_yaml::Deserializer::from_str(&text)
        .map(serde_yaml::Value::deserialize)
        .filter_map(Result::ok)
        .find(|d| d["kind"] == "Deployment")
        .context("a Deployment")?;
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], serde_yaml::Value::Bool(true));
    let written = nova::acme::shared::roots_dir_in(std::path::Path::new("/tmp"));
    let mounts = container["volumeMounts"].as_sequence().context("volumeMounts")?;
    let mount = mounts
        .iter()
        .find(|m| m["mountPath"].as_str().is_some_and(|p| written.starts_with(p)))
        .with_context(|| format!("no volume mounted over {}", written.display()))?;
    let volumes = pod["volumes"].as_sequence().context("volumes")?;
    let volume = volumes.iter().find(|v| v["name"] == mount["name"]).context("the mounted volume")?;
    assert!(volume.get("emptyDir").is_some(), "{volume:?}");
    assert_ne!(mount["readOnly"], serde_yaml::Value::Bool(true));
    Ok(())
}

#[tokio::test]
async fn rendered_chart_passes_server_side_dry_run() -> Result<()> {
    let cp = shared(Mode::Simulated).await?;
    let client = cp.client().await?;
    let ns = cp.namespace(&client, "chart").await?;
    for extra in
        [&[][..], &["--set", "watchNamespace=apps", "--set", "state.sqlite.existingClaim=nova-state"][..]]
    {
        let out = render(&ns, extra)?;
        ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let applied = kubectl_stdin(cp, &["apply", "--dry-run=server", "-f", "-"], &out.stdout)?;
        ensure!(applied.status.success(), "dry-run refused: {}", String::from_utf8_lossy(&applied.stderr));
        let text = String::from_utf8(applied.stdout)?;
        assert!(text.contains("deployment.apps/nova created (server dry run)"), "{text}");
    }
    Ok(())
}

/// Installs what the chart installs, except the operator Deployment: the operator runs in the
/// test, with the chart's ServiceAccount token.
fn install_without_operator(cp: &ControlPlane, release_ns: &str) -> Result<()> {
    let out = render(release_ns, &[])?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifests = String::from_utf8(out.stdout)?;
    let without_deployment: Vec<&str> =
        manifests.split("\n---").filter(|doc| !doc.contains("\nkind: Deployment")).collect();
    let applied = kubectl_stdin(
        cp,
        &["apply", "--server-side", "-f", "-"],
        without_deployment.join("\n---").as_bytes(),
    )?;
    ensure!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    Ok(())
}

/// The operator's configuration in the RBAC tests: all namespaces, lease in the release's.
fn rbac_config(
    state: &tempfile::TempDir,
    port: u16,
    release_ns: &str,
    identity: &str,
) -> nova::operator::Config {
    nova::operator::Config {
        state_url: state.path().join("state.db").display().to_string(),
        http_addr: ([127, 0, 0, 1], port).into(),
        lease: nova::operator::default_lease(release_ns.to_owned(), identity.into()),
        concurrency: 2,
        watch_namespace: None,
        trusted_namespaces: Vec::new(),
        alerts: Default::default(),
        training: Default::default(),
        host_binary: None,
        acme: Default::default(),
    }
}

/// The RBAC tests install the chart's cluster-scoped ClusterRole and binding (one name for
/// every release) and run an operator watching all namespaces: one at a time.
static CLUSTER_WIDE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The chart installed without its Deployment, in a release namespace of its own, and the
/// operator run in this process with the chart's ServiceAccount token, watching all namespaces.
struct Rbac {
    admin: Client,
    /// A client with the chart's ServiceAccount, for reads the test makes in its name.
    sa: Client,
    release_ns: String,
    apps_ns: String,
    port: u16,
    /// The operator's configuration until [`Rbac::start`]; tests adjust it first.
    cfg: Option<nova::operator::Config>,
    _state: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    operator: Option<tokio::task::JoinHandle<Result<(), nova::operator::Error>>>,
}

impl Rbac {
    async fn install(cp: &ControlPlane, release: &str, apps: &str, identity: &str) -> Result<Self> {
        let admin = cp.client().await?;
        let release_ns = cp.namespace(&admin, release).await?;
        let apps_ns = cp.namespace(&admin, apps).await?;
        install_without_operator(cp, &release_ns)?;
        common::record_logs();
        let sa = cp.client_for_service_account(&release_ns, "nova").await?;
        let state = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let cfg = Some(rbac_config(&state, port, &release_ns, identity));
        Ok(Self { admin, sa, release_ns, apps_ns, port, cfg, _state: state, stop: None, operator: None })
    }

    fn start(&mut self) {
        let (stop, stopped) = oneshot::channel::<()>();
        let cfg = self.cfg.take().expect("started once");
        self.operator = Some(tokio::spawn(nova::operator::run(cfg, self.sa.clone(), async move {
            let _ = stopped.await;
        })));
        self.stop = Some(stop);
    }

    /// Stops the operator; an error if it failed.
    async fn stop(&mut self) -> Result<()> {
        let _ = self.stop.take().map(|s| s.send(()));
        if let Some(op) = self.operator.take() {
            tokio::time::timeout(Duration::from_secs(30), op).await???;
        }
        Ok(())
    }

    /// For a test that gave up waiting: stops the operator and says what it waited for and how
    /// the operator ended.
    async fn gave_up(&mut self, what: String) -> anyhow::Error {
        let _ = self.stop.take().map(|s| s.send(()));
        let ended = match self.operator.take() {
            Some(op) => format!("{:?}", op.await),
            None => "not started".into(),
        };
        anyhow::anyhow!("{what} under the chart's RBAC; operator ended with {ended}")
    }
}

#[tokio::test]
async fn chart_rbac_is_enough_for_a_platform_and_its_blue_green_rollout() -> Result<()> {
    let _turn = CLUSTER_WIDE.lock().await;
    let cp = shared(Mode::Simulated).await?;
    let mut rbac = Rbac::install(cp, "nova-system", "apps", "rbac-test").await?;
    let (admin, apps_ns) = (rbac.admin.clone(), rbac.apps_ns.clone());
    rbac.start();

    let platforms: Api<Platform> = Api::namespaced(admin.clone(), &apps_ns);
    let p: Platform = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Platform", "metadata": {"name": "web"},
        "spec": {"image": "nginx:1.27", "replicas": 1, "domains": ["web.example.com"]},
    }))?;
    platforms.create(&PostParams::default(), &p).await?;
    let ready = |p: Option<&Platform>| {
        p.and_then(|p| p.status.as_ref())
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let waited =
        tokio::time::timeout(Duration::from_secs(60), await_condition(platforms.clone(), "web", ready)).await;
    if waited.is_err() {
        return Err(rbac.gave_up("the Platform not Ready".into()).await);
    }

    // What a Host's spec.allowedNamespaces selector needs: the namespace's labels.
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(rbac.sa.clone());
    namespaces.get(&apps_ns).await.context("reading a Namespace under the chart's RBAC")?;

    // Removing the domain makes the operator delete the Ingress: the delete verb is granted too.
    platforms
        .patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"domains": null}})),
        )
        .await?;
    let ingresses: Api<k8s_openapi::api::networking::v1::Ingress> = Api::namespaced(admin.clone(), &apps_ns);
    test_cluster::eventually(
        "the Ingress to be deleted under the chart's RBAC",
        Duration::from_secs(30),
        || {
            let ingresses = ingresses.clone();
            async move { Ok::<_, kube::Error>(ingresses.get_opt("web").await?.is_none()) }
        },
    )
    .await?;

    // Blue-green under the same role: the Rolling children are deleted, a BlueGreenDeployment
    // is created, its revision stored, and its health gate reads EndpointSlices (kwok's pod
    // addresses answer nothing, so the gate fails: proof that it ran, not that it was refused).
    let bg = json!({"spec": {"strategy": {"type": "BlueGreen", "blueGreen": {
        "healthCheck": {"intervalSeconds": 1, "timeoutSeconds": 1, "failures": 1}}}}});
    platforms.patch("web", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(bg)).await?;
    let rollouts: Api<nova::api::BlueGreenDeployment> = Api::namespaced(admin.clone(), &apps_ns);
    let phase = |want: &'static str| {
        move |b: Option<&nova::api::BlueGreenDeployment>| {
            b.and_then(|b| b.status.as_ref()).and_then(|s| s.phase).is_some_and(|p| p.as_str() == want)
        }
    };
    tokio::time::timeout(Duration::from_secs(60), await_condition(rollouts.clone(), "web", phase("Healthy")))
        .await
        .context("BlueGreenDeployment not Healthy under the chart's RBAC")??;
    let image = json!({"spec": {"image": "nginx:1.28"}});
    platforms.patch("web", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(image)).await?;
    let failed = tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(rollouts.clone(), "web", phase("Degraded")),
    )
    .await
    .context("the health gate never ran under the chart's RBAC")??
    .context("deleted")?;
    let gate = failed.status.and_then(|s| s.gate).context("gate status")?;
    ensure!(gate.failed && !gate.message.contains("forbidden"), "{}", gate.message);
    rbac.stop().await
}

#[tokio::test]
async fn chart_rbac_is_enough_for_certificates() -> Result<()> {
    let _turn = CLUSTER_WIDE.lock().await;
    use nova::api::{AcmeIssuer, TlsCertificate};
    let cp = shared(Mode::Simulated).await?;
    let mut rbac = Rbac::install(cp, "nova-certs", "certapps", "rbac-certs").await?;
    let (admin, release_ns, apps_ns, port) =
        (rbac.admin.clone(), rbac.release_ns.clone(), rbac.apps_ns.clone(), rbac.port);
    let pebble = tokio::task::spawn_blocking(move || test_cluster::pebble::Pebble::start(port)).await??;
    // A pod IP stands in: the apiserver refuses loopback endpoints.
    if let Some(cfg) = rbac.cfg.as_mut() {
        cfg.acme =
            nova::certs::Settings { solver_endpoint: ([192, 0, 2, 11], port).into(), ..Default::default() };
    }
    rbac.start();

    // The issuer's CA bundle and account key live in the release namespace.
    let bundle = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pebble-ca"},
                        "stringData": {"ca.crt": std::fs::read_to_string(&pebble.api_ca_path)?}});
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(admin.clone(), &release_ns)
        .patch("pebble-ca", &kube::api::PatchParams::apply("test").force(), &kube::api::Patch::Apply(bundle))
        .await?;
    let issuer_name = format!("rbac-{}", release_ns.rsplit('-').next().unwrap_or("x"));
    let issuer: AcmeIssuer = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "AcmeIssuer", "metadata": {"name": issuer_name},
        "spec": {"server": pebble.directory_url, "accountKeySecretRef": {"name": "acme-account"},
                 "caBundleSecretRef": {"name": "pebble-ca", "key": "ca.crt"},
                 "solvers": [{"http01": {"ingress": {}}}]},
    }))?;
    Api::<AcmeIssuer>::all(admin.clone()).create(&PostParams::default(), &issuer).await?;
    let cert: TlsCertificate = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "TlsCertificate", "metadata": {"name": "web"},
        "spec": {"dnsNames": ["web.example.test"], "issuerRef": {"name": issuer_name}, "secretName": "web-tls"},
    }))?;
    let certs: Api<TlsCertificate> = Api::namespaced(admin.clone(), &apps_ns);
    certs.create(&PostParams::default(), &cert).await?;
    let ready = |c: Option<&TlsCertificate>| {
        c.and_then(|c| c.status.as_ref())
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let waited =
        tokio::time::timeout(Duration::from_secs(90), await_condition(certs.clone(), "web", ready)).await;
    if waited.is_err() {
        let status = certs.get("web").await?.status;
        return Err(rbac.gave_up(format!("certificate not Ready: {status:?}")).await);
    }
    let secret =
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(admin.clone(), &apps_ns).get("web-tls").await?;
    ensure!(secret.type_.as_deref() == Some("kubernetes.io/tls"));
    Api::<AcmeIssuer>::all(admin.clone()).delete(&issuer_name, &Default::default()).await?;
    rbac.stop().await
}

#[tokio::test]
async fn chart_rbac_is_enough_for_alert_rules() -> Result<()> {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use nova::alerts::targets::{ALERTMANAGER_KEY, ALERTMANAGER_SECRET};
    use nova::api::AlertRule;
    let _turn = CLUSTER_WIDE.lock().await;
    let cp = shared(Mode::Simulated).await?;
    let mut rbac = Rbac::install(cp, "nova-alerts", "alertapps", "rbac-alerts").await?;
    let (admin, release_ns, apps_ns) = (rbac.admin.clone(), rbac.release_ns.clone(), rbac.apps_ns.clone());
    rbac.start();
    let hook: Secret = serde_json::from_value(
        json!({"metadata": {"name": "hook"}, "stringData": {"url": "http://hook.example/x"}}),
    )?;
    Api::<Secret>::namespaced(admin.clone(), &apps_ns).create(&PostParams::default(), &hook).await?;
    let ar: AlertRule = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "AlertRule", "metadata": {"name": "team"},
        "spec": {"packs": ["operator"], "routing": {"receivers": [{"name": "hook", "webhook": {"urlSecretRef": {"name": "hook", "key": "url"}}}]}},
    }))?;
    let rules: Api<AlertRule> = Api::namespaced(admin.clone(), &apps_ns);
    rules.create(&PostParams::default(), &ar).await?;
    let ready = |a: Option<&AlertRule>| {
        a.and_then(|a| a.status.as_ref())
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    if tokio::time::timeout(Duration::from_secs(60), await_condition(rules.clone(), "team", ready))
        .await
        .is_err()
    {
        let status = rules.get("team").await?.status;
        return Err(rbac.gave_up(format!("AlertRule not Ready: {status:?}")).await);
    }
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), &apps_ns);
    ensure!(cms.get_opt("nova-team").await?.is_some(), "no rule ConfigMap");
    let merged = Api::<Secret>::namespaced(admin.clone(), &release_ns).get(ALERTMANAGER_SECRET).await?;
    let text = merged
        .data
        .and_then(|mut d| d.remove(ALERTMANAGER_KEY))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned());
    ensure!(text.is_some_and(|t| t.contains(&format!("{apps_ns}/team/hook"))), "route missing");
    // Deleting runs the cleanup (finalizer) with the same rights.
    rules.delete("team", &Default::default()).await?;
    let gone =
        test_cluster::eventually("the AlertRule and its ConfigMap gone", Duration::from_secs(60), || async {
            Ok::<_, kube::Error>(
                rules.get_opt("team").await?.is_none() && cms.get_opt("nova-team").await?.is_none(),
            )
        })
        .await;
    rbac.stop().await?;
    gone?;
    Ok(())
}

/// A TrainingJob under the chart's role: its PriorityClass, pods and headless Service are
/// created, listed, rank 0's log read, and the pods stopped together (deletecollection) for a gang restart.
#[tokio::test]
async fn chart_rbac_is_enough_for_training_jobs() -> Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    use nova::api::TrainingJob;
    let _turn = CLUSTER_WIDE.lock().await;
    let cp = shared(Mode::Simulated).await?;
    let mut rbac = Rbac::install(cp, "nova-train", "trainapps", "rbac-train").await?;
    let (admin, apps_ns) = (rbac.admin.clone(), rbac.apps_ns.clone());
    rbac.start();
    let job: TrainingJob = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "t"},
        "spec": {"image": "trainer:1", "command": ["python", "t.py"], "workers": 2, "gpusPerWorker": 0,
                 "priority": 10},
    }))?;
    let jobs: Api<TrainingJob> = Api::namespaced(admin.clone(), &apps_ns);
    jobs.create(&PostParams::default(), &job).await?;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &apps_ns);
    let attempt = |n: &'static str| {
        let pods = pods.clone();
        async move {
            let l = pods.list(&Default::default()).await?;
            let names: Vec<String> = l.items.iter().filter_map(|p| p.metadata.name.clone()).collect();
            Ok::<_, kube::Error>(names.len() == 2 && names.iter().all(|p| p.starts_with(n)))
        }
    };
    let wait = Duration::from_secs(60);
    let running = || async {
        let phase = jobs.get("t").await?.status.and_then(|s| s.phase);
        Ok::<_, kube::Error>(phase == Some(nova::api::training::TrainingPhase::Running))
    };
    // Running, the next look reads rank 0's log (pods/log) before it judges the failed worker.
    let first = match test_cluster::eventually("attempt 1's pods", wait, || attempt("t-a1-")).await {
        Ok(()) => test_cluster::eventually("attempt 1 running", wait, running).await,
        e => e,
    };
    if first.is_ok() {
        let failed = json!({"status": {"phase": "Failed", "reason": "Evicted"}});
        pods.patch_status("t-a1-0", &Default::default(), &kube::api::Patch::Merge(failed)).await?;
    }
    let second = test_cluster::eventually("attempt 2's pods", wait, || attempt("t-a2-")).await;
    let status = jobs.get("t").await?.status;
    rbac.stop().await?;
    first.and(second).with_context(|| format!("under the chart's RBAC: {status:?}"))?;
    Ok(())
}

/// A Backup of a PersistentVolumeClaim under the chart's role: its config Secret and Job are
/// created, the Job read, its pod listed for the termination message, status written.
#[tokio::test]
async fn chart_rbac_is_enough_for_a_claims_backup() -> Result<()> {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Secret};
    use nova::api::Backup;
    let _turn = CLUSTER_WIDE.lock().await;
    let cp = shared(Mode::Simulated).await?;
    let mut rbac = Rbac::install(cp, "nova-bkp", "bkapps", "rbac-bk").await?;
    let (admin, apps_ns) = (rbac.admin.clone(), rbac.apps_ns.clone());
    let pv: PersistentVolume = serde_json::from_value(
        json!({"metadata": {"name": format!("{apps_ns}-data")},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                 "hostPath": {"path": "/srv/data"}}}),
    )?;
    Api::<PersistentVolume>::all(admin.clone()).create(&PostParams::default(), &pv).await?;
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "manual", "volumeName": format!("{apps_ns}-data"),
                 "resources": {"requests": {"storage": "1Gi"}}}}))?;
    Api::<PersistentVolumeClaim>::namespaced(admin.clone(), &apps_ns)
        .create(&PostParams::default(), &pvc)
        .await?;
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "s3"},
        "stringData": {"accessKeyId": "a", "secretAccessKey": "b"}}))?;
    Api::<Secret>::namespaced(admin.clone(), &apps_ns).create(&PostParams::default(), &s).await?;
    rbac.start();
    let b: Backup = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Backup",
        "metadata": {"name": "data", "annotations": {"nova.infra.dev/run-requested": "now"}},
        "spec": {"schedule": "0 3 * * *", "source": {"volume": {"pvc": "data"}},
                 "destination": {"s3": {"endpoint": "http://192.0.2.1:9000", "bucket": "backups",
                                        "credentialsSecretRef": {"name": "s3"}}}},
    }))?;
    let backups: Api<Backup> = Api::namespaced(admin.clone(), &apps_ns);
    backups.create(&PostParams::default(), &b).await?;
    let judged = test_cluster::eventually("the Job's outcome in status", Duration::from_secs(60), || async {
        let st = backups.get("data").await?.status.unwrap_or_default();
        Ok::<_, kube::Error>(st.job.is_none() && st.conditions.iter().any(|c| c.reason == "NoReport"))
    })
    .await;
    let status = backups.get("data").await?.status;
    rbac.stop().await?;
    judged.with_context(|| format!("under the chart's RBAC: {status:?}"))?;
    Ok(())
}

#[test]
fn dashboards_are_rendered_for_the_grafana_sidecar_and_can_be_turned_off() -> Result<()> {
    let out = render("monitoring", &["--set", "dashboards.annotations.grafana_folder=Nova"])?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut seen = 0;
    for doc in serde_yaml::Deserializer::from_slice(&out.stdout) {
        let v = serde_yaml::Value::deserialize(doc)?;
        let name = v["metadata"]["name"].as_str().unwrap_or_default();
        let Some(board) = name.strip_prefix("nova-dashboard-") else { continue };
        assert_eq!(v["metadata"]["labels"]["grafana_dashboard"].as_str(), Some("1"));
        assert_eq!(v["metadata"]["annotations"]["grafana_folder"].as_str(), Some("Nova"));
        let shipped = std::fs::read_to_string(format!("{CHART}/dashboards/{board}.json"))?;
        assert_eq!(v["data"][format!("nova-{board}.json").as_str()].as_str(), Some(shipped.as_str()));
        seen += 1;
    }
    assert_eq!(seen, std::fs::read_dir(format!("{CHART}/dashboards"))?.count());
    let off = render("monitoring", &["--set", "dashboards.enabled=false"])?;
    assert!(!String::from_utf8_lossy(&off.stdout).contains("nova-dashboard-"));
    Ok(())
}
