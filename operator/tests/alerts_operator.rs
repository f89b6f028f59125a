//! AlertRule where prometheus-operator's CRDs are installed (the real ones, from the module
//! pinned in tests/control-plane/prometheus-operator): Nova writes a PrometheusRule and an
//! AlertmanagerConfig the real schemas accept, and tells when no Prometheus object selects the
//! rule — the silent failure of a missing selector label — until the label is configured.
//! prometheus-operator itself needs a kubelet to run its Prometheus; the test stands in for its
//! rule sync (copying PrometheusRules that match the Prometheus object's ruleSelector into a
//! real Prometheus, see `common::rule_sync`), so what Nova reads back is a real load.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::{conditions, wait::await_condition};
use kube::{Api, Client};
use nova::alerts::controller::Settings;
use nova::alerts::targets;
use nova::api::AlertRule;
use serde_json::json;
use test_cluster::prometheus::{Extra, Prometheus};
use test_cluster::{Mode, eventually, shared};

mod common;
use common::rule_sync::{RuleSync, Source};

const WAIT: Duration = Duration::from_secs(90);

async fn install_prometheus_operator_crds(client: &Client) -> Result<()> {
    let dir = test_cluster::prometheus_operator_crds_dir()?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for kind in ["prometheusrules", "alertmanagerconfigs", "prometheuses"] {
        let text = std::fs::read_to_string(dir.join(format!("monitoring.coreos.com_{kind}.yaml")))?;
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text)?;
        let name = format!("{kind}.monitoring.coreos.com");
        crds.patch(&name, &PatchParams::apply("nova-test").force(), &Patch::Apply(&crd)).await?;
        tokio::time::timeout(WAIT, await_condition(crds.clone(), &name, conditions::is_crd_established()))
            .await??;
    }
    Ok(())
}

fn cond(a: &AlertRule, t: &str) -> Option<(String, String, String)> {
    let c = a.status.as_ref()?.conditions.iter().find(|c| c.type_ == t)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn a_prometheus_rule_not_selected_is_reported_until_labelled_then_loads() -> Result<()> {
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    install_prometheus_operator_crds(&client).await?;
    let ns = cp.namespace(&client, "promop").await?;
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "notify"},
        "stringData": {"url": "https://hooks.example/T0KEN-in-url", "username": "nova", "password": "smtp-pa55word"}}))?;
    Api::<Secret>::namespaced(client.clone(), &ns).create(&PostParams::default(), &secret).await?;
    for s in ["https://hooks.example/T0KEN-in-url", "smtp-pa55word"] {
        test_cluster::record::secret(s);
    }
    // The cluster's Prometheus selects rules labelled release=kps (kube-prometheus-stack's way).
    let proms: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &targets::prometheus());
    let p: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "monitoring.coreos.com/v1", "kind": "Prometheus", "metadata": {"name": "k8s"},
        "spec": {"ruleSelector": {"matchLabels": {"release": "kps"}}}}))?;
    proms.create(&PostParams::default(), &p).await?;

    let rules_dir = tempfile::tempdir()?;
    let prom = Arc::new(Prometheus::start_with(
        &[],
        &Extra { rules_dir: Some(rules_dir.path().into()), ..Default::default() },
    )?);
    let selected = Source::PrometheusRules { selector: Some(("release".into(), "kps".into())) };
    let _sync = RuleSync::start(client.clone(), &ns, selected, rules_dir.path().into(), prom.clone());
    let port = || -> Result<u16> { Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()) };
    let unlabelled = Settings { prometheus_url: Some(prom.url().into()), ..Default::default() };
    let op = common::Operator::start_alerts(client.clone(), &ns, port()?, unlabelled.clone()).await?;

    let rules: Api<AlertRule> = Api::namespaced(client.clone(), &ns);
    let ar: AlertRule = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "AlertRule", "metadata": {"name": "shop"},
        "spec": {"packs": ["watchdog"], "routing": {
            "receivers": [{"name": "team", "webhook": {"urlSecretRef": {"name": "notify", "key": "url"}}},
                          {"name": "oncall", "email": {"to": "oncall@shop.example", "from": "nova@shop.example",
                           "smarthost": "smtp.shop.example:587", "authSecretRef": {"name": "notify"}}}],
            "routes": [{"match": {"severity": "critical"}, "receiver": "oncall"}],
            "inhibitRules": [{"sourceMatch": {"severity": "critical"}, "targetMatch": {"severity": "warning"}, "equal": ["alertname"]}]}}}))?;
    rules.create(&PostParams::default(), &ar).await?;
    eventually("NotSelected, naming the selector", WAIT, || async {
        let a = rules.get("shop").await?;
        let sel = cond(&a, "Selected").is_some_and(|(s, r, m)| {
            s == "False"
                && r == "NotSelected"
                && m.contains(&format!("Prometheus {ns}/k8s selects rules labelled {{\"release\": \"kps\"}}"))
        });
        let loading = cond(&a, "Ready").is_some_and(|(s, r, _)| s == "False" && r == "Loading");
        Ok::<_, kube::Error>(sel && loading)
    })
    .await?;
    // Both objects were accepted by prometheus-operator's own schemas; Secrets stay references.
    let prs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &targets::prometheus_rule());
    let pr = prs.get("nova-shop").await?;
    assert_eq!(pr.data["spec"]["groups"][0]["rules"][0]["alert"], "NovaWatchdog");
    let amcs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &targets::alertmanager_config());
    let amc = amcs.get("nova-shop").await?;
    let text = serde_json::to_string(&amc.data)?;
    assert!(!text.contains("T0KEN") && !text.contains("pa55word"), "{text}");
    assert_eq!(
        amc.data["spec"]["receivers"][0]["webhookConfigs"][0]["urlSecret"],
        json!({"name": "notify", "key": "url"})
    );
    assert_eq!(amc.data["spec"]["receivers"][1]["emailConfigs"][0]["authUsername"], "nova");
    assert_eq!(
        amc.data["spec"]["route"]["matchers"][0],
        json!({"name": "nova_alertrule", "value": format!("{ns}/shop"), "matchType": "="})
    );

    // Configured with the label the Prometheus selects, the rule is picked up and loads.
    op.stop().await?;
    let labelled = Settings { rule_labels: BTreeMap::from([("release".into(), "kps".into())]), ..unlabelled };
    let op = common::Operator::start_alerts(client.clone(), &ns, port()?, labelled).await?;
    eventually("Selected and Loaded", WAIT, || async {
        let a = rules.get("shop").await?;
        let sel =
            cond(&a, "Selected").is_some_and(|(s, _, m)| s == "True" && m.contains(&format!("{ns}/k8s")));
        let ready = cond(&a, "Ready").is_some_and(|(s, r, _)| s == "True" && r == "Loaded");
        Ok::<_, kube::Error>(sel && ready && a.status.as_ref().and_then(|s| s.rules_loaded) == Some(1))
    })
    .await?;
    rules.delete("shop", &DeleteParams::default()).await?;
    eventually("its PrometheusRule and AlertmanagerConfig are gone", WAIT, || async {
        Ok::<_, kube::Error>(
            prs.get_opt("nova-shop").await?.is_none() && amcs.get_opt("nova-shop").await?.is_none(),
        )
    })
    .await?;
    op.stop().await
}
