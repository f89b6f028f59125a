//! The examples: every Nova document is admitted as written (Nova's own check, what `nova
//! apply` runs, and the real apiserver's strict server-side dry run), every kind has one, and
//! the Flux and Argo CD examples point at the chart in this repository.

use std::collections::BTreeSet;

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;
use serde_json::{Value, json};
use test_cluster::{Mode, shared};

mod common;

use common::{EXAMPLES, cluster_scoped, example_objects};

/// Every example file is admitted as written: Nova's own check (what `nova apply` runs) and
/// the real apiserver's strict server-side dry run; and every kind has an example.
#[tokio::test]
async fn every_example_is_admitted() -> Result<()> {
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, "examples").await?;
    let mut items = Vec::new();
    let mut kinds = BTreeSet::new();
    for (file, mut v) in example_objects()? {
        let kind = v["kind"].as_str().unwrap_or_default().to_owned();
        if v["apiVersion"] == "nova.infra.dev/v1alpha1" {
            if let Err(e) = nova::admission::check(&v) {
                bail!("{file}: {kind} refused by Nova's check: {e:?}");
            }
            kinds.insert(kind.clone());
        }
        if kind == "Namespace" {
            continue;
        }
        if !cluster_scoped(&kind) {
            v["metadata"]["namespace"] = json!(ns);
        }
        items.push(v);
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    let out = common::dry_run(cp, &serde_json::to_vec(&list)?)?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        list["items"].as_array().map_or(0, Vec::len)
    );
    let crds: BTreeSet<String> = nova::api::crds().into_iter().map(|c| c.spec.names.kind).collect();
    assert_eq!(kinds, crds, "every kind has an example in examples/");
    Ok(())
}

/// The Flux and Argo CD examples parse, name the chart that is in this repository, and ask
/// Flux to wait for health. (Neither Flux nor Argo CD runs here: their CRDs are not packaged.)
#[test]
fn the_flux_and_argo_cd_examples_point_at_the_chart() -> Result<()> {
    let mut docs = Vec::new();
    for f in ["flux.yaml", "argocd.yaml"] {
        let text = std::fs::read_to_string(format!("{EXAMPLES}/gitops/{f}"))?;
        for d in serde_yaml::Deserializer::from_str(&text) {
            docs.push(Value::deserialize(d).with_context(|| f.to_owned())?);
        }
    }
    let find = |kind: &str| docs.iter().find(|d| d["kind"] == kind).with_context(|| format!("no {kind}"));
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let chart = find("HelmRelease")?["spec"]["chart"]["spec"]["chart"].as_str().context("chart")?;
    assert!(std::path::Path::new(repo).join(chart).join("Chart.yaml").exists(), "{chart}");
    assert_eq!(find("Kustomization")?["spec"]["wait"], json!(true));
    let path = find("Application")?["spec"]["source"]["path"].as_str().context("path")?;
    assert!(std::path::Path::new(repo).join(path).join("Chart.yaml").exists(), "{path}");
    Ok(())
}
