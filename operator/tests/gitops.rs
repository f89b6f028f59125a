//! GitOps tools judge Nova objects as Nova means them. Flux and `kubectl wait`-style tools use
//! kstatus, Argo CD a Lua health script; both are run here with their own code (the Go helper
//! `nova-gitops-check`: sigs.k8s.io/cli-utils' `kstatus.Compute`, and
//! `charts/nova/argocd/health.lua` in gopher-lua set up as Argo CD sets it up) over objects of
//! every kind, in every state, as the real apiserver returns them: written by Nova's own status
//! writer, or by the running operator. And every example is admitted.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::Stdio;

use anyhow::{Context as _, Result, bail};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Api, Client};
use nova::api::{
    AcmeIssuer, AlertRule, Backup, BlueGreenDeployment, Host, Platform, Restore, TlsCertificate, TrainingJob,
};
use nova::conditions::{Cond, CondType};
use nova::kit::{Blocked, ReconcileMetrics, Reconciled, Shared, StatusWriter};
use serde::Deserialize;
use serde_json::{Value, json};
use test_cluster::{Mode, shared};

mod common;

const HEALTH_LUA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/nova/argocd/health.lua");

/// What kstatus and Argo CD said of one object.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Verdict {
    kind: String,
    name: String,
    kstatus: String,
    kstatus_message: String,
    argo: String,
    argo_message: String,
}

/// Runs kstatus and the Argo CD health script over `objects`.
fn judge(objects: &[Value]) -> Result<Vec<Verdict>> {
    let bin = test_cluster::gitops_check_dir()?.join("nova-gitops-check");
    let mut child = std::process::Command::new(&bin)
        .arg(HEALTH_LUA)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", bin.display()))?;
    child.stdin.take().context("stdin")?.write_all(&serde_json::to_vec(objects)?)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nova-gitops-check: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The first example object of `kind`.
fn example(kind: &str) -> Result<Value> {
    common::example_objects()?
        .into_iter()
        .map(|(_, v)| v)
        .find(|v| v["kind"] == kind)
        .with_context(|| format!("no example of {kind} in examples/"))
}

/// How the status of a case is written.
enum Write {
    /// Not at all: no controller saw the object yet.
    Nothing,
    /// By the status writer, these conditions over `status`.
    Conds(Vec<Cond>),
    /// As a blocked reconcile writes it, with the kind's extra conditions.
    Blocked(Vec<CondType>),
}

struct Case {
    kind: &'static str,
    state: &'static str,
    spec: Value,
    status: Value,
    write: Write,
    kstatus: &'static str,
    argo: &'static str,
}

fn case(
    kind: &'static str,
    state: &'static str,
    write: Write,
    kstatus: &'static str,
    argo: &'static str,
) -> Case {
    Case { kind, state, spec: json!({}), status: json!({}), write, kstatus, argo }
}

fn c(t: CondType, status: bool, reason: &'static str, msg: &str) -> Cond {
    Cond::new(t, status, reason, msg)
}

/// The states each kind's controller writes, and what the tools must make of them.
fn cases() -> Vec<Case> {
    use CondType::*;
    use Write::{Blocked as B, Conds, Nothing};
    let rolling = || {
        Conds(vec![
            c(Ready, false, "RollingOut", "1 of 3 replicas ready"),
            c(Degraded, false, "RollingOut", ""),
        ])
    };
    let failed = |r| {
        Conds(vec![
            c(Ready, false, r, "the health gate failed"),
            c(Degraded, true, r, "the health gate failed"),
        ])
    };
    let ready = |r| Conds(vec![c(Ready, true, r, "all good")]);
    let mut v = Vec::new();
    for kind in nova::api::KINDS {
        v.push(case(kind, "unseen", Nothing, "InProgress", "Progressing"));
    }
    for kind in ["Platform", "BlueGreenDeployment"] {
        v.push(case(kind, "progressing", rolling(), "InProgress", "Progressing"));
        v.push(case(kind, "ready", ready("Available"), "Current", "Healthy"));
        v.push(case(kind, "blocked", B(vec![Degraded]), "Failed", "Degraded"));
        v.push(case(kind, "failing", failed("ProgressDeadlineExceeded"), "Failed", "Degraded"));
    }
    v.push(case("Platform", "stale", ready("Available"), "InProgress", "Progressing"));
    let mut paused = case(
        "BlueGreenDeployment",
        "paused",
        Conds(vec![
            c(Ready, false, "Paused", "waiting for `nova rollout promote`"),
            c(Progressing, true, "Paused", "waiting"),
        ]),
        "InProgress",
        "Suspended",
    );
    paused.status = json!({"phase": "Paused"});
    v.push(paused);
    v.push(case(
        "Host",
        "unreachable",
        Conds(vec![
            c(Reachable, false, "Unreachable", "connection refused"),
            c(Ready, false, "Unreachable", "connection refused"),
        ]),
        "InProgress",
        "Progressing",
    ));
    v.push(case(
        "Host",
        "ready",
        Conds(vec![c(Reachable, true, "Connected", "answers"), c(Ready, true, "Bootstrapped", "converged")]),
        "Current",
        "Healthy",
    ));
    v.push(case("Host", "blocked", B(vec![Reachable]), "Failed", "Degraded"));
    v.push(case(
        "AcmeIssuer",
        "registering",
        Conds(vec![c(Ready, false, "RegistrationFailed", "the ACME server did not answer")]),
        "InProgress",
        "Progressing",
    ));
    v.push(case("AcmeIssuer", "ready", ready("Registered"), "Current", "Healthy"));
    v.push(case("AcmeIssuer", "blocked", B(vec![]), "Failed", "Degraded"));
    let issuing = || {
        Conds(vec![
            c(Ready, false, "NotIssued", "no valid certificate in the Secret yet"),
            c(Issuing, true, "Ordering", "order placed"),
        ])
    };
    v.push(case("TlsCertificate", "issuing", issuing(), "InProgress", "Progressing"));
    v.push(case(
        "TlsCertificate",
        "ready",
        Conds(vec![
            c(Ready, true, "Valid", "valid until 2027-01-01"),
            c(Issuing, false, "UpToDate", "current"),
        ]),
        "Current",
        "Healthy",
    ));
    v.push(case("TlsCertificate", "blocked", B(vec![]), "Failed", "Degraded"));
    let mut expired = case("TlsCertificate", "expired", issuing(), "InProgress", "Degraded");
    expired.status = json!({"notAfter": "2025-01-01T00:00:00Z"});
    v.push(expired);
    v.push(case("Backup", "scheduled", ready("Scheduled"), "Current", "Healthy"));
    v.push(case(
        "Backup",
        "running",
        Conds(vec![c(Reconciling, true, "BackingUp", "the run of 03:00")]),
        "InProgress",
        "Progressing",
    ));
    v.push(case(
        "Backup",
        "failing",
        Conds(vec![
            c(Reconciling, false, "Idle", "no run in progress"),
            c(Ready, false, "BackupFailed", "pg_dump failed"),
        ]),
        "Failed",
        "Degraded",
    ));
    v.push(case("Backup", "blocked", B(vec![]), "Failed", "Degraded"));
    v.push(case(
        "Backup",
        "objectives-missed",
        Conds(vec![
            c(Ready, true, "Verified", "written"),
            c(ObjectivesMet, false, "RpoMissed", "the newest artifact is 30 h old"),
        ]),
        "Current",
        "Degraded",
    ));
    let mut suspended = case(
        "Backup",
        "suspended",
        Conds(vec![c(Ready, true, "Suspended", "spec.suspend is true")]),
        "Current",
        "Suspended",
    );
    suspended.spec = json!({"suspend": true});
    v.push(suspended);
    v.push(case(
        "Restore",
        "running",
        Conds(vec![c(Reconciling, true, "Restoring", "restoring")]),
        "InProgress",
        "Progressing",
    ));
    v.push(case(
        "Restore",
        "succeeded",
        Conds(vec![c(Reconciling, false, "Finished", "ran once"), c(Ready, true, "Restored", "restored")]),
        "Current",
        "Healthy",
    ));
    v.push(case(
        "Restore",
        "failed",
        Conds(vec![
            c(Reconciling, false, "Finished", "ran once"),
            c(Ready, false, "RestoreFailed", "checksum mismatch"),
        ]),
        "Failed",
        "Degraded",
    ));
    v.push(case("Restore", "blocked", B(vec![]), "Failed", "Degraded"));
    v.push(case("AlertRule", "no-monitoring", B(vec![]), "Failed", "Degraded"));
    let loading = Conds(vec![c(Ready, false, "Loading", "3 of 12 rules loaded in Prometheus 2.42.0")]);
    v.push(case("AlertRule", "loading", loading, "InProgress", "Progressing"));
    v.push(case("AlertRule", "ready", ready("Loaded"), "Current", "Healthy"));
    let invalid = Conds(vec![
        c(Ready, false, "InvalidRules", "spec.groups[0].rules[1].expr: not valid PromQL"),
        c(Degraded, true, "InvalidRules", "spec.groups[0].rules[1].expr: not valid PromQL"),
    ]);
    v.push(case("AlertRule", "invalid", invalid, "Failed", "Degraded"));
    let mut training_paused = case(
        "TrainingJob",
        "paused",
        Conds(vec![c(Ready, false, "Paused", "GPU 0 at 87 °C")]),
        "InProgress",
        "Suspended",
    );
    training_paused.status = json!({"phase": "Paused"});
    v.push(training_paused);
    v
}

/// Creates the case's object from the kind's example, writes its status as the case says (with
/// Nova's status writer), and reads it back from the apiserver.
async fn make<K>(kit: &Shared, ns: &str, case: &Case) -> Result<Value>
where
    K: Reconciled,
    K::Status: serde::de::DeserializeOwned,
{
    let client = kit.client.clone();
    let name = format!("{}-{}", case.kind.to_lowercase(), case.state);
    let mut v = example(case.kind)?;
    v["metadata"] = if common::cluster_scoped(case.kind) {
        json!({"name": format!("{ns}-{name}")})
    } else {
        json!({"name": name, "namespace": ns})
    };
    json_patch::merge(&mut v["spec"], &case.spec);
    let obj: K = serde_json::from_value(v)?;
    let api = obj.api_for(client.clone());
    let created =
        api.create(&PostParams::default(), &obj).await.with_context(|| format!("creating {name}"))?;
    let writer = StatusWriter::<K>::default();
    match &case.write {
        Write::Nothing => {}
        Write::Conds(conds) => {
            let status: K::Status = serde_json::from_value(case.status.clone())?;
            writer.write(kit, &created, status, conds).await?;
        }
        Write::Blocked(extra) => {
            let b = if case.state == "no-monitoring" {
                Blocked::new(
                    "NoMonitoring",
                    "Host web-1: no promtool on the host: set spec.bootstrap.monitoring: true on the Host",
                )
            } else {
                Blocked::missing(format!(
                    "Secret {ns}/credentials does not exist (spec.credentialsSecretRef)"
                ))
            };
            writer.blocked(kit, &created, &b, extra).await?;
        }
    }
    let name = kube::ResourceExt::name_any(&created);
    if case.state == "stale" {
        // The user changed the spec after Nova's last write: generation 2, observed 1.
        let patch = json!({"spec": {"replicas": 5}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await?;
    }
    let ar = ApiResource::erase::<K>(&());
    let dynamic: Api<DynamicObject> = match common::cluster_scoped(case.kind) {
        true => Api::all_with(client, &ar),
        false => Api::namespaced_with(client, ns, &ar),
    };
    Ok(serde_json::to_value(dynamic.get(&name).await?)?)
}

async fn make_any(kit: &Shared, ns: &str, case: &Case) -> Result<Value> {
    match case.kind {
        "Platform" => make::<Platform>(kit, ns, case).await,
        "BlueGreenDeployment" => make::<BlueGreenDeployment>(kit, ns, case).await,
        "Host" => make::<Host>(kit, ns, case).await,
        "AcmeIssuer" => make::<AcmeIssuer>(kit, ns, case).await,
        "TlsCertificate" => make::<TlsCertificate>(kit, ns, case).await,
        "Backup" => make::<Backup>(kit, ns, case).await,
        "Restore" => make::<Restore>(kit, ns, case).await,
        "AlertRule" => make::<AlertRule>(kit, ns, case).await,
        "TrainingJob" => make::<TrainingJob>(kit, ns, case).await,
        other => bail!("no case maker for {other}"),
    }
}

fn kit(client: Client) -> Result<Shared> {
    let metrics = ReconcileMetrics::register(&prometheus::Registry::new())?;
    Ok(Shared::new(client, metrics))
}

#[tokio::test]
async fn kstatus_and_argo_cd_read_every_kind_in_every_state() -> Result<()> {
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, "gitops").await?;
    let kit = kit(client)?;
    let cases = cases();
    let mut objects = Vec::new();
    for case in &cases {
        objects
            .push(make_any(&kit, &ns, case).await.with_context(|| format!("{} {}", case.kind, case.state))?);
    }
    let verdicts = judge(&objects)?;
    let mut wrong = Vec::new();
    for (case, v) in cases.iter().zip(&verdicts) {
        assert_eq!(v.kind, case.kind);
        if (v.kstatus.as_str(), v.argo.as_str()) != (case.kstatus, case.argo) {
            wrong.push(format!(
                "{} {} ({}): kstatus {} ({}), Argo CD {} ({}); expected {} and {}",
                case.kind,
                case.state,
                v.name,
                v.kstatus,
                v.kstatus_message,
                v.argo,
                v.argo_message,
                case.kstatus,
                case.argo
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Every kind is covered in its unseen, failing and healthy-or-working states.
    let kinds: BTreeSet<&str> = cases.iter().map(|c| c.kind).collect();
    let crds: BTreeSet<String> = nova::api::crds().into_iter().map(|c| c.spec.names.kind).collect();
    assert_eq!(kinds.iter().map(|k| k.to_string()).collect::<BTreeSet<_>>(), crds);
    // The words reach the user: the stall's message is what Flux and Argo CD show.
    let blocked =
        verdicts.iter().find(|v| v.name.ends_with("platform-blocked") || v.name == "platform-blocked");
    let blocked = blocked.context("the blocked Platform")?;
    assert!(blocked.kstatus_message.contains("spec.credentialsSecretRef"), "{blocked:?}");
    assert!(blocked.argo_message.contains("spec.credentialsSecretRef"), "{blocked:?}");
    Ok(())
}

/// The running operator, not the writer alone: a Platform blocked on a missing Secret fails at
/// once for kstatus and Argo CD with Nova's message, and is Current / Healthy once the Secret
/// exists; a TrainingJob is InProgress while its worker is created and Current / Healthy once it
/// runs.
#[tokio::test]
async fn a_live_operator_is_read_the_same_way() -> Result<()> {
    let cp = shared(Mode::Simulated).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, "gitops-live").await?;
    let platforms: Api<Platform> = Api::namespaced(client.clone(), &ns);
    let trainings: Api<TrainingJob> = Api::namespaced(client.clone(), &ns);
    let p: Platform =
        serde_json::from_value(json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "Platform",
        "metadata": {"name": "api"},
        "spec": {"image": "app:1", "envFrom": [{"secretRef": {"name": "db-credentials"}}]}}))?;
    platforms.create(&PostParams::default(), &p).await?;
    let mut t: TrainingJob = serde_json::from_value(example("TrainingJob")?)?;
    t.metadata = kube::api::ObjectMeta { name: Some("train".into()), ..Default::default() };
    trainings.create(&PostParams::default(), &t).await?;
    // Before any controller saw them.
    let before = judge(&[
        raw::<Platform>(&client, &ns, "api").await?,
        raw::<TrainingJob>(&client, &ns, "train").await?,
    ])?;
    assert!(before.iter().all(|v| v.kstatus == "InProgress" && v.argo == "Progressing"), "{before:?}");

    let op = common::Operator::start(client.clone(), &ns).await?;
    let stalled = |s: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>>| {
        s.is_some_and(|c| c.iter().any(|c| c.type_ == "Stalled" && c.status == "True"))
    };
    let wait = common::TIMEOUT;
    tokio::time::timeout(
        wait,
        await_condition(platforms.clone(), "api", |p: Option<&Platform>| {
            stalled(p.and_then(|p| p.status.as_ref()).map(|s| &s.conditions))
        }),
    )
    .await??;
    tokio::time::timeout(
        wait,
        await_condition(trainings.clone(), "train", |t: Option<&TrainingJob>| {
            t.and_then(|t| t.status.as_ref()).is_some_and(|s| !s.conditions.is_empty())
        }),
    )
    .await??;
    let v = judge(&[
        raw::<Platform>(&client, &ns, "api").await?,
        raw::<TrainingJob>(&client, &ns, "train").await?,
    ])?;
    assert_eq!((v[0].kstatus.as_str(), v[0].argo.as_str()), ("Failed", "Degraded"), "{v:?}");
    assert!(
        v[0].kstatus_message.contains("db-credentials") && v[0].argo_message.contains("db-credentials"),
        "{v:?}"
    );
    assert!(v[1].kstatus == "InProgress" || v[1].kstatus == "Current", "{v:?}");
    let running = |t: Option<&TrainingJob>| {
        t.and_then(|t| t.status.as_ref())
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    tokio::time::timeout(wait, await_condition(trainings.clone(), "train", running)).await??;
    let v = judge(&[raw::<TrainingJob>(&client, &ns, "train").await?])?;
    assert_eq!((v[0].kstatus.as_str(), v[0].argo.as_str()), ("Current", "Healthy"), "{v:?}");

    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(
        json!({"metadata": {"name": "db-credentials"}, "stringData": {"USER": "app"}}),
    )?;
    Api::namespaced(client.clone(), &ns).create(&PostParams::default(), &secret).await?;
    let ready = |p: Option<&Platform>| {
        p.and_then(|p| p.status.as_ref())
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    tokio::time::timeout(wait, await_condition(platforms.clone(), "api", ready)).await??;
    let v = judge(&[raw::<Platform>(&client, &ns, "api").await?])?;
    assert_eq!((v[0].kstatus.as_str(), v[0].argo.as_str()), ("Current", "Healthy"), "{v:?}");
    op.stop().await
}

/// The object as the apiserver returns it (all fields, not only those Nova's types know).
async fn raw<K: kube::Resource<DynamicType = ()>>(client: &Client, ns: &str, name: &str) -> Result<Value> {
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ApiResource::erase::<K>(&()));
    Ok(serde_json::to_value(api.get(name).await?)?)
}

/// The chart's `argocd.healthChecks` renders the argocd-cm entries: the one script, under the
/// key Argo CD looks up, for every kind.
#[test]
fn the_chart_renders_the_health_check_of_every_kind() -> Result<()> {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/nova");
    let out = std::process::Command::new(test_cluster::bin_dir()?.join("helm"))
        .args(["template", "nova", chart, "--set", "argocd.healthChecks.enabled=true"])
        .args(["--show-only", "templates/argocd-health.yaml"])
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cm: Value = serde_yaml::from_slice(&out.stdout)?;
    assert_eq!(
        (cm["kind"].as_str(), cm["metadata"]["name"].as_str()),
        (Some("ConfigMap"), Some("argocd-cm"))
    );
    let script = std::fs::read_to_string(HEALTH_LUA)?;
    for crd in nova::api::crds() {
        let key = format!("resource.customizations.health.{}_{}", crd.spec.group, crd.spec.names.kind);
        let got = cm["data"][&key].as_str().with_context(|| format!("no {key} in {cm}"))?;
        assert_eq!(got.trim_end(), script.trim_end(), "{key}");
    }
    // The blue-green actions, in the format argocd-cm takes them.
    let key = "resource.customizations.actions.nova.infra.dev_BlueGreenDeployment";
    let actions: Value = serde_yaml::from_str(cm["data"][key].as_str().context("no actions")?)?;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/nova/argocd/actions");
    let discovery = std::fs::read_to_string(format!("{dir}/discovery.lua"))?;
    assert_eq!(actions["discovery.lua"].as_str().map(str::trim_end), Some(discovery.trim_end()));
    for (i, name) in ["promote", "abort"].into_iter().enumerate() {
        let script = std::fs::read_to_string(format!("{dir}/{name}.lua"))?;
        assert_eq!(actions["definitions"][i]["name"], json!(name));
        assert_eq!(
            actions["definitions"][i]["action.lua"].as_str().map(str::trim_end),
            Some(script.trim_end())
        );
    }
    // Off by default: nothing touches Argo CD's configuration unless asked.
    let off = std::process::Command::new(test_cluster::bin_dir()?.join("helm"))
        .args(["template", "nova", chart, "--show-only", "templates/argocd-health.yaml"])
        .output()?;
    assert!(!off.status.success(), "rendered while disabled: {}", String::from_utf8_lossy(&off.stdout));
    Ok(())
}
