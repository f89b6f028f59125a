//! The Grafana dashboards the chart ships: each decodes strictly with Grafana's own schema types
//! (nova-dashboard-check, on grafana-foundation-sdk; Grafana itself is AGPL and not run), uses a
//! `datasource` variable rather than `__inputs`, and — the real proof — every panel query of the
//! operator and hosts dashboards returns data from a real Prometheus scraping a real Nova
//! operator and a real node_exporter. The platforms, certificates and backups dashboards get the
//! same proof in the tests that make their data (argocd_actions, certs, backup_operator); the
//! training dashboard's series do not exist until the TrainingJob controller does.

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use kube::Api;
use kube::api::PostParams;
use nova::api::{AlertRule, Host};
use serde_json::json;
use test_cluster::prometheus::{Extra, NodeExporter, Prometheus};
use test_cluster::{Mode, shared};

mod common;
use common::dashboards;

fn check(files: &[std::path::PathBuf]) -> Result<std::process::Output> {
    let bin = test_cluster::dashboard_check_dir()?.join("nova-dashboard-check");
    Ok(Command::new(bin).args(files).output()?)
}

#[test]
fn every_dashboard_passes_grafanas_schema_and_uses_a_datasource_variable() -> Result<()> {
    let files = dashboards::files()?;
    assert!(files.len() >= 6, "{files:?}");
    let out = check(&files)?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut uids = std::collections::BTreeSet::new();
    for f in &files {
        let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(f)?)?;
        let at = f.display();
        assert!(d.get("__inputs").is_none(), "{at}: __inputs breaks sidecar provisioning");
        assert!(uids.insert(d["uid"].as_str().unwrap_or_default().to_owned()), "{at}: uid used twice");
        let vars = d["templating"]["list"].as_array().cloned().unwrap_or_default();
        assert!(
            vars.iter().any(|v| v["name"] == "datasource"
                && v["type"] == "datasource"
                && v["query"] == "prometheus"),
            "{at}: no datasource variable"
        );
        for p in d["panels"].as_array().into_iter().flatten() {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{at}: {}", p["title"]);
            for t in p["targets"].as_array().into_iter().flatten() {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{at}: {}", p["title"]);
                nova::alerts::validate::expression(t["expr"].as_str().unwrap_or_default())
                    .map_err(|e| anyhow::anyhow!("{at}: {}: {e}", p["title"]))?;
            }
        }
    }
    // The check can fail: an unknown panel field is refused, naming it.
    let mut bad: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&files[0])?)?;
    bad["panels"][0]["bogus"] = json!(1);
    let tmp = tempfile::Builder::new().suffix(".json").tempfile()?;
    std::fs::write(tmp.path(), bad.to_string())?;
    let out = check(&[tmp.path().to_owned()])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("panels[0].Panel: unexpected field 'bogus'"));
    Ok(())
}

#[tokio::test]
async fn operator_and_hosts_dashboards_show_data_from_a_real_nova_and_node_exporter() -> Result<()> {
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, "dash").await?;
    let node = NodeExporter::start()?;
    let op_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let extra = Extra {
        jobs: vec![("nova".into(), vec![format!("127.0.0.1:{op_port}")]), ("node".into(), vec![node.addr()])],
        ..Default::default()
    };
    let prom = Prometheus::start_with(&[], &extra)?;
    let _op = common::Operator::start_alerts(client.clone(), &ns, op_port, Default::default()).await?;
    // Work for every panel: reconciles that succeed (an AlertRule), one blocked (rules for hosts
    // are not built yet), and failures (a Host nothing answers for, retried with backoff).
    let ar = |name: &str, spec: serde_json::Value| -> Result<AlertRule> {
        Ok(serde_json::from_value(json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "AlertRule",
            "metadata": {"name": name}, "spec": spec}))?)
    };
    let rules: Api<AlertRule> = Api::namespaced(client.clone(), &ns);
    rules.create(&PostParams::default(), &ar("fine", json!({"packs": ["operator"]}))?).await?;
    let hosts = json!({"packs": ["host"], "target": {"hosts": {"names": ["nowhere"]}}});
    rules.create(&PostParams::default(), &ar("on-hosts", hosts)?).await?;
    let key = tempfile::tempdir()?;
    let path = key.path().join("id");
    let made =
        Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&path).status()?;
    ensure!(made.success(), "ssh-keygen");
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(json!({"metadata": {"name": "dash-key"},
        "stringData": {"id_ed25519": std::fs::read_to_string(&path)?}}))?;
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await?;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let host: Host = serde_json::from_value(json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "Host",
        "metadata": {"name": format!("{ns}-nowhere")},
        "spec": {"address": "127.0.0.1", "port": closed, "hostKeyPolicy": "AcceptNew", "sshKeySecretRef": {"name": "dash-key", "key": "id_ed25519"}}}))?;
    Api::<Host>::all(client.clone()).create(&PostParams::default(), &host).await?;

    let wait = Duration::from_secs(120);
    dashboards::assert_every_panel_has_data("hosts", prom.url(), wait).await?;
    dashboards::assert_every_panel_has_data("operator", prom.url(), wait).await?;
    Api::<Host>::all(client.clone()).delete(&format!("{ns}-nowhere"), &Default::default()).await?;
    Ok(())
}
