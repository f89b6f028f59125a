//! The Nova API against a real kube-apiserver: the committed CRDs are the generated ones, every
//! CRD is accepted, valid examples are admitted, and bad objects are refused at admission with a
//! message that names the problem.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::runtime::{conditions, wait::await_condition};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use test_cluster::{Mode, shared};

mod common;

const CRDS_DIRS: [&str; 2] = [
    concat!(env!("CARGO_MANIFEST_DIR"), "/../crds"),
    concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/nova/crds"),
];

#[test]
fn committed_crds_are_the_generated_ones() {
    for dir in CRDS_DIRS {
        check_generated(dir);
    }
}

fn check_generated(dir: &str) {
    let generated = nova::crdgen::render();
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .expect("crds/ exists")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    let mut names: Vec<String> = generated.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(
        on_disk, names,
        "crds/ has other files than `nova crds` writes; run `cargo run -p nova -- crds`"
    );
    for (name, yaml) in generated {
        let committed = std::fs::read_to_string(format!("{dir}/{name}")).unwrap();
        assert!(committed == yaml, "{dir}/{name} is out of date; run `cargo run -p nova -- crds`");
    }
}

#[test]
fn every_kind_has_the_conventions() {
    for crd in nova::api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        assert_eq!(crd.spec.group, "nova.infra.dev", "{name}");
        assert!(crd.spec.names.categories.as_ref().is_some_and(|c| c.contains(&"nova".to_owned())), "{name}");
        assert!(crd.spec.names.short_names.as_ref().is_some_and(|s| !s.is_empty()), "{name}");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
            "{name}: status subresource"
        );
        let columns = version.additional_printer_columns.as_ref().unwrap();
        assert!(columns.iter().any(|c| c.name == "Age"), "{name}");
        let schema = serde_json::to_value(version.schema.as_ref().unwrap()).unwrap();
        let status = &schema["openAPIV3Schema"]["properties"]["status"]["properties"];
        assert!(status["observedGeneration"].is_object(), "{name}: status.observedGeneration");
        let conds = &status["conditions"];
        assert_eq!(conds["x-kubernetes-list-type"], "map", "{name}: conditions keyed by type");
        assert_eq!(conds["x-kubernetes-list-map-keys"], json!(["type"]), "{name}");
        assert_undocumented_fields_absent(&name, "", &schema["openAPIV3Schema"]["properties"]["spec"]);
    }
}

/// Every spec field carries a description (it is `kubectl explain` text).
fn assert_undocumented_fields_absent(kind: &str, path: &str, schema: &Value) {
    if let Some(props) = schema["properties"].as_object() {
        for (field, sub) in props {
            let here = format!("{path}.{field}");
            assert!(
                sub["description"].as_str().is_some_and(|d| !d.is_empty()) || sub.get("$ref").is_some(),
                "{kind}: spec{here} has no description"
            );
            assert_undocumented_fields_absent(kind, &here, sub);
        }
    }
    if schema["items"].is_object() {
        assert_undocumented_fields_absent(kind, &format!("{path}[]"), &schema["items"]);
    }
}

async fn install_crds(client: &Client) -> Result<Vec<ApiResource>> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut resources = Vec::new();
    for crd in nova::api::crds() {
        let name = crd.name_any();
        crds.patch(&name, &PatchParams::apply("nova-test").force(), &Patch::Apply(&crd))
            .await
            .with_context(|| format!("the apiserver refused CRD {name}"))?;
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .with_context(|| format!("{name} never became Established"))??;
        let v = &crd.spec.versions[0];
        resources.push(ApiResource {
            group: crd.spec.group.clone(),
            version: v.name.clone(),
            api_version: format!("{}/{}", crd.spec.group, v.name),
            kind: crd.spec.names.kind.clone(),
            plural: crd.spec.names.plural.clone(),
        });
    }
    Ok(resources)
}

fn api_for(client: &Client, resources: &[ApiResource], kind: &str, ns: &str) -> Api<DynamicObject> {
    let ar = resources.iter().find(|r| r.kind == kind).expect("known kind");
    let namespaced = !matches!(kind, "Host" | "AcmeIssuer");
    if namespaced { Api::namespaced_with(client.clone(), ns, ar) } else { Api::all_with(client.clone(), ar) }
}

fn object(kind: &str, name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

/// A valid object of each kind: the baseline every invalid case departs from.
fn valid(kind: &str) -> Value {
    match kind {
        "Platform" => json!({"image": "ghcr.io/acme/shop:1.0", "domains": ["shop.example.com"]}),
        "BlueGreenDeployment" => json!({"platformRef": {"name": "shop"}}),
        "Host" => {
            json!({"address": "203.0.113.7", "sshKeySecretRef": {"name": "ssh", "key": "id_ed25519"},
                         "hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"})
        }
        "AcmeIssuer" => {
            json!({"server": "letsencrypt-staging", "accountKeySecretRef": {"name": "acme"},
                               "solvers": [{"http01": {"ingress": {}}}]})
        }
        "TlsCertificate" => {
            json!({"dnsNames": ["shop.example.com"], "issuerRef": {"name": "le"}, "secretName": "shop-tls"})
        }
        "Backup" => {
            json!({"source": {"postgres": {"connectionSecretRef": {"name": "db", "key": "url"}, "database": "shop"}},
                           "schedule": "0 3 * * *", "destination": {"pvc": {"pvc": "backups"}}})
        }
        "Restore" => json!({"backupRef": {"name": "nightly"}}),
        "AlertRule" => json!({"packs": ["host"]}),
        "TrainingJob" => json!({"trainer": {"model": "linear", "dataset": "synthetic-regression"}}),
        other => panic!("no valid example for {other}"),
    }
}

/// Applies a JSON merge patch to the valid example.
fn with(kind: &str, patch: Value) -> Value {
    let mut v = valid(kind);
    common::merge(&mut v, patch);
    v
}

/// (kind, spec, a piece of the message the apiserver must give)
fn invalid_cases() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        ("Platform", with("Platform", json!({"image": null})), "spec.image: Required value"),
        ("Platform", with("Platform", json!({"replicas": -1})), "spec.replicas"),
        ("Platform", with("Platform", json!({"domains": ["Bad_Domain"]})), "spec.domains[0]"),
        (
            "Platform",
            with("Platform", json!({"tls": {"mode": "Secret"}})),
            "tls.secretName is required with mode Secret",
        ),
        (
            "Platform",
            with("Platform", json!({"target": {"kubernetes": {}, "hosts": {"names": ["a"]}}})),
            "exactly one of target.kubernetes or target.hosts",
        ),
        ("Platform", with("Platform", json!({"env": [{"name": "1BAD", "value": "x"}]})), "spec.env[0].name"),
        (
            "Platform",
            with("Platform", json!({"strategy": {"type": "Rolling", "blueGreen": {}}})),
            "only allowed with type BlueGreen",
        ),
        ("BlueGreenDeployment", json!({}), "exactly one of template or platformRef"),
        (
            "BlueGreenDeployment",
            with("BlueGreenDeployment", json!({"scaleDownDelaySeconds": -5})),
            "spec.scaleDownDelaySeconds",
        ),
        (
            "BlueGreenDeployment",
            with("BlueGreenDeployment", json!({"autoPromotionEnabled": false, "autoPromotionSeconds": 30})),
            "autoPromotionSeconds needs autoPromotionEnabled",
        ),
        (
            "BlueGreenDeployment",
            with("BlueGreenDeployment", json!({"healthCheck": {"expectedStatus": 700}})),
            "spec.healthCheck.expectedStatus",
        ),
        ("Host", with("Host", json!({"hostKey": null})), "hostKey is required with hostKeyPolicy Pinned"),
        ("Host", with("Host", json!({"port": 70000})), "spec.port"),
        ("Host", with("Host", json!({"user": "root; rm -rf /"})), "spec.user"),
        (
            "Host",
            with(
                "Host",
                json!({"bootstrap": {"firewall": {"allow": [{"port": 80, "from": ["not-a-cidr"]}]}}}),
            ),
            "must be a CIDR",
        ),
        (
            "Host",
            with("Host", json!({"bootstrap": {"packages": ["nginx; curl evil"]}})),
            "spec.bootstrap.packages[0]",
        ),
        ("AcmeIssuer", with("AcmeIssuer", json!({"server": "http://insecure.example/dir"})), "spec.server"),
        ("AcmeIssuer", with("AcmeIssuer", json!({"solvers": []})), "give at least one solver"),
        ("AcmeIssuer", with("AcmeIssuer", json!({"solvers": [{}]})), "exactly one of http01 or dns01"),
        ("AcmeIssuer", with("AcmeIssuer", json!({"email": "not-an-email"})), "spec.email"),
        ("TlsCertificate", with("TlsCertificate", json!({"dnsNames": []})), "spec.dnsNames"),
        (
            "TlsCertificate",
            with("TlsCertificate", json!({"privateKey": {"algorithm": "RSA", "size": 1024}})),
            "size must be 256 or 384 for ECDSA",
        ),
        (
            "TlsCertificate",
            with("TlsCertificate", json!({"renewBefore": "720h", "renewBeforePercentage": 30})),
            "renewBefore or renewBeforePercentage, not both",
        ),
        ("TlsCertificate", with("TlsCertificate", json!({"dnsNames": ["exa mple.com"]})), "spec.dnsNames[0]"),
        ("Backup", with("Backup", json!({"schedule": "every day"})), "spec.schedule"),
        (
            "Backup",
            with("Backup", json!({"source": {"volume": {"pvc": "data"}}})),
            "exactly one of postgres, files or volume",
        ),
        (
            "Backup",
            with(
                "Backup",
                json!({"destination": {"pvc": {"pvc": "x"}, "s3": {"bucket": "abc", "credentialsSecretRef": {"name": "s3"}}}}),
            ),
            "exactly one of s3, pvc or hostPath",
        ),
        ("Backup", with("Backup", json!({"retention": {"keepLast": -1}})), "spec.retention.keepLast"),
        ("Restore", json!({}), "spec.backupRef: Required value"),
        (
            "Restore",
            with("Restore", json!({"artifact": {"id": "a1", "latestVerified": true}})),
            "give id, or latestVerified: true, not both",
        ),
        (
            "Restore",
            with("Restore", json!({"artifact": {"latestVerified": false}})),
            "give id, or latestVerified",
        ),
        ("AlertRule", json!({}), "give at least one rule group or pack"),
        (
            "AlertRule",
            with(
                "AlertRule",
                json!({"groups": [{"name": "g", "rules": [{"alert": "Bad Name", "expr": "up == 0"}]}]}),
            ),
            "spec.groups[0].rules[0].alert",
        ),
        (
            "AlertRule",
            with(
                "AlertRule",
                json!({"groups": [{"name": "g", "rules": [{"alert": "Down", "expr": "up == 0", "for": "five minutes"}]}]}),
            ),
            "spec.groups[0].rules[0].for",
        ),
        (
            "AlertRule",
            with("AlertRule", json!({"routing": {"receivers": [{"name": "r"}]}})),
            "exactly one of slack, email or webhook",
        ),
        (
            "TrainingJob",
            with("TrainingJob", json!({"image": "trainer:1", "command": ["python", "train.py"]})),
            "exactly one of image (with command) or trainer",
        ),
        (
            "TrainingJob",
            with("TrainingJob", json!({"trainer": null, "command": ["/usr/bin/python3", "t.py"]})),
            "on target.hosts, command alone runs on the host",
        ),
        ("TrainingJob", with("TrainingJob", json!({"workers": 0})), "spec.workers"),
        (
            "TrainingJob",
            with("TrainingJob", json!({"thermal": {"pauseAboveCelsius": 60, "resumeBelowCelsius": 80}})),
            "resumeBelowCelsius must be below pauseAboveCelsius",
        ),
        (
            "TrainingJob",
            with("TrainingJob", json!({"checkpoint": {"path": "/ckpt", "pvc": "ckpt"}})),
            "checkpoint.path or checkpoint.pvc, not both",
        ),
        ("TrainingJob", with("TrainingJob", json!({"workers": 2})), "the built-in trainer runs one worker"),
        (
            "TrainingJob",
            with("TrainingJob", json!({"trainer": {"model": "cnn"}})),
            "model cnn needs images: use dataset fashion-mnist",
        ),
        (
            "TrainingJob",
            with("TrainingJob", json!({"trainer": {"model": "mlp-small"}})),
            "spec.trainer.model",
        ),
    ]
}

#[tokio::test]
async fn crds_are_accepted_and_admission_rejects_bad_objects() -> Result<()> {
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    let resources = install_crds(&client).await?;
    let ns = cp.namespace(&client, "api").await?;

    // Every valid example is admitted, so each invalid case fails for its own reason only.
    for ar in &resources {
        let api = api_for(&client, &resources, &ar.kind, &ns);
        let name = format!("valid-{}", ar.plural);
        api.create(&PostParams::default(), &object(&ar.kind, &name, valid(&ar.kind)))
            .await
            .with_context(|| format!("valid {} refused", ar.kind))?;
    }

    let mut failures = Vec::new();
    for (i, (kind, spec, expected)) in invalid_cases().into_iter().enumerate() {
        let api = api_for(&client, &resources, kind, &ns);
        match api.create(&PostParams::default(), &object(kind, &format!("invalid-{i}"), spec.clone())).await {
            Ok(_) => failures.push(format!("{kind} #{i} was admitted: {spec}")),
            Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains(expected) => {}
            Err(e) => failures.push(format!("{kind} #{i}: expected 422 mentioning {expected:?}, got {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let per_kind = |k: &str| invalid_cases().iter().filter(|c| c.0 == k).count();
    for ar in &resources {
        assert!(per_kind(&ar.kind) >= 3, "{} has fewer than 3 invalid cases", ar.kind);
    }
    Ok(())
}

#[tokio::test]
async fn restore_is_immutable() -> Result<()> {
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    let resources = install_crds(&client).await?;
    let ns = cp.namespace(&client, "immutable").await?;
    let api = api_for(&client, &resources, "Restore", &ns);
    api.create(&PostParams::default(), &object("Restore", "r", valid("Restore"))).await?;
    let err = api
        .patch("r", &PatchParams::default(), &Patch::Merge(json!({"spec": {"backupRef": {"name": "other"}}})))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("a Restore cannot be changed"), "{err}");
    Ok(())
}
