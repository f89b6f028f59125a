//! AlertRule on the real apiserver without prometheus-operator, with Debian's Prometheus and
//! Alertmanager on loopback. Nova writes a ConfigMap of rules and one Secret with the whole
//! Alertmanager configuration; the test copies them where a kubelet and a reloading sidecar
//! would (see `common::rule_sync`). Everything else is real: Prometheus loads and evaluates the
//! rules and Nova reads that back; alerts fire and travel through Alertmanager to a webhook and
//! an SMTP server; a critical inhibits its warning.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use nova::alerts::controller::Settings;
use nova::api::AlertRule;
use serde_json::{Value, json};
use test_cluster::prometheus::{Extra, Prometheus};
use test_cluster::{Mode, eventually, shared};

mod common;
use common::rule_sync::{RuleSync, Source};

const WAIT: Duration = Duration::from_secs(90);

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn cond<'a>(
    a: &'a AlertRule,
    t: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    a.status.as_ref()?.conditions.iter().find(|c| c.type_ == t)
}

async fn prom_get(url: &str) -> Result<Value> {
    Ok(reqwest::get(url).await?.json().await?)
}

#[tokio::test]
async fn rules_load_bad_ones_are_named_absent_metrics_flagged_and_deletion_unloads_them() -> Result<()> {
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, "alerts").await?;
    let rules_dir = tempfile::tempdir()?;
    let op_port = free_port()?;
    let extra = Extra {
        rules_dir: Some(rules_dir.path().to_owned()),
        jobs: vec![("nova".into(), vec![format!("127.0.0.1:{op_port}")])],
        ..Default::default()
    };
    let prom = Arc::new(Prometheus::start_with(&[], &extra)?);
    let settings = Settings { prometheus_url: Some(prom.url().to_owned()), ..Default::default() };
    let _op = common::Operator::start_alerts(client.clone(), &ns, op_port, settings).await?;
    let _sync =
        RuleSync::start(client.clone(), &ns, Source::ConfigMaps, rules_dir.path().to_owned(), prom.clone());
    // The operator's own series are in Prometheus before the rules that read them arrive.
    let names = format!("{}/api/v1/label/__name__/values", prom.url());
    eventually("Prometheus scraped Nova", WAIT, || async {
        Ok::<_, anyhow::Error>(
            prom_get(&names).await?["data"].as_array().is_some_and(|a| a.iter().any(|n| n == "up")),
        )
    })
    .await?;

    let rules: Api<AlertRule> = Api::namespaced(client.clone(), &ns);
    let ar: AlertRule = serde_json::from_value(json!({
    "apiVersion": "nova.infra.dev/v1alpha1", "kind": "AlertRule", "metadata": {"name": "shop"},
    "spec": {"packs": ["watchdog"], "groups": [{"name": "shop", "rules": [
        {"alert": "NovaTestOperatorUp", "expr": "up{job=\"nova\"} == 1", "labels": {"severity": "info"}},
        {"alert": "NovaTestAbsent", "expr": "nova_test_metric_that_does_not_exist > 0"},
        {"alert": "NovaTestBroken", "expr": "sum(rate(http_requests_total[5m])"}
    ]}]}}))?;
    rules.create(&PostParams::default(), &ar).await?;

    let last = std::sync::Mutex::new(None);
    let settled = eventually("the AlertRule reports 3 rules loaded", WAIT, || async {
        let a = rules.get("shop").await?;
        let s = a.status.clone().unwrap_or_default();
        let evaluated = s.groups.iter().flat_map(|g| &g.rules).all(|r| r.health.as_deref() == Some("ok"));
        *last.lock().unwrap() = Some(a);
        Ok::<_, kube::Error>(s.rules_loaded == Some(3) && evaluated)
    })
    .await;
    let a = last.into_inner().unwrap().context("no AlertRule read")?;
    settled.with_context(|| format!("status: {:#?}", a.status))?;
    let s = a.status.as_ref().unwrap();
    assert_eq!(s.rules_applied, Some(3), "two good own rules and the watchdog; the broken one left out");
    assert_eq!(s.applied_to.as_deref(), Some(format!("ConfigMap {ns}/nova-shop").as_str()));
    assert!(s.prometheus_version.as_deref().is_some_and(|v| v.starts_with('2') || v.starts_with('3')));
    let ready = cond(&a, "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "InvalidRules"));
    assert!(ready.message.contains("spec.groups[0].rules[2].expr: not valid PromQL"), "{}", ready.message);
    assert_eq!(
        cond(&a, "Stalled").map(|c| c.status.as_str()),
        Some("True"),
        "a refused rule needs its owner"
    );
    let metrics = cond(&a, "MetricsPresent").unwrap();
    assert_eq!(metrics.status, "False");
    assert!(
        metrics.message.contains("NovaTestAbsent reads nova_test_metric_that_does_not_exist"),
        "{}",
        metrics.message
    );
    assert!(!metrics.message.contains("NovaTestOperatorUp"), "{}", metrics.message);
    let names: Vec<(&str, bool)> =
        s.groups.iter().flat_map(|g| g.rules.iter().map(|r| (r.alert.as_str(), r.loaded))).collect();
    assert_eq!(names, [("NovaTestOperatorUp", true), ("NovaTestAbsent", true), ("NovaWatchdog", true)]);

    // Fixed, it is Ready; deleted, its rules leave Prometheus.
    let fixed = json!({"spec": {"groups": [{"name": "shop", "rules": [
        {"alert": "NovaTestOperatorUp", "expr": "up{job=\"nova\"} == 1", "labels": {"severity": "info"}}]}]}});
    rules.patch("shop", &Default::default(), &kube::api::Patch::Merge(&fixed)).await?;
    eventually("Ready after the fix", WAIT, || async {
        let a = rules.get("shop").await?;
        let ok = cond(&a, "Ready").is_some_and(|c| c.status == "True" && c.reason == "Loaded")
            && cond(&a, "MetricsPresent").is_some_and(|c| c.status == "True")
            && cond(&a, "Stalled").is_some_and(|c| c.status == "False");
        Ok::<_, kube::Error>(ok && a.status.as_ref().and_then(|s| s.rules_loaded) == Some(2))
    })
    .await?;
    rules.delete("shop", &DeleteParams::default()).await?;
    let api_rules = format!("{}/api/v1/rules", prom.url());
    let owner = format!("{ns}/shop");
    eventually("its rules are gone from Prometheus", WAIT, || async {
        let v = prom_get(&api_rules).await?;
        let left = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten());
        let mine = left.filter(|r| r["labels"]["nova_alertrule"] == owner.as_str()).count();
        let gone = rules.get_opt("shop").await?.is_none();
        Ok::<_, anyhow::Error>(mine == 0 && gone)
    })
    .await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    assert!(cms.get_opt("nova-shop").await?.is_none());
    Ok(())
}

fn alerts_in(bodies: &[String]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = bodies
        .iter()
        .filter_map(|b| serde_json::from_str::<Value>(b).ok())
        .flat_map(|v| v["alerts"].as_array().cloned().unwrap_or_default())
        .map(|a| {
            let l = &a["labels"];
            (
                l["alertname"].as_str().unwrap_or_default().to_owned(),
                l["severity"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[tokio::test]
async fn alerts_reach_a_webhook_and_mail_through_alertmanager_and_a_critical_mutes_its_warning() -> Result<()>
{
    use test_cluster::alertmanager::Alertmanager;
    use test_cluster::sinks::{HttpSink, SmtpSink};
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, "routing").await?;
    let (hook, mail, other_hook) = (HttpSink::start()?, SmtpSink::start()?, HttpSink::start()?);
    for (name, h) in [("hooks", &hook), ("other-hooks", &other_hook)] {
        // The suite's scan fails if this URL shows up in any log line, event or status it records.
        test_cluster::record::secret(&h.url());
        let s: Secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {"url": h.url()}}))?;
        Api::<Secret>::namespaced(client.clone(), &ns).create(&PostParams::default(), &s).await?;
    }
    let _op = common::Operator::start_alerts(client.clone(), &ns, free_port()?, Settings::default()).await?;
    let rules: Api<AlertRule> = Api::namespaced(client.clone(), &ns);
    let always = |alert: &str, severity: &str| json!({"alert": alert, "expr": "vector(1)", "labels": {"severity": severity}});
    let ar: AlertRule = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "AlertRule", "metadata": {"name": "routed"},
        "spec": {"groups": [{"name": "fire", "rules": [
                    always("DiskFull", "critical"), always("DiskFull", "warning"), always("Lonely", "warning")]}],
                 "routing": {
                    "groupBy": ["alertname"], "groupWait": "1s", "groupInterval": "1s", "repeatInterval": "1h",
                    "receivers": [
                        {"name": "team", "webhook": {"urlSecretRef": {"name": "hooks", "key": "url"}}},
                        {"name": "oncall", "email": {"to": "oncall@shop.example", "from": "nova@shop.example",
                                                     "smarthost": mail.addr()}}],
                    "routes": [{"match": {"severity": "critical"}, "receiver": "oncall", "continue": true}],
                    "inhibitRules": [{"sourceMatch": {"severity": "critical"}, "targetMatch": {"severity": "warning"},
                                      "equal": ["alertname"]}]}}}))?;
    rules.create(&PostParams::default(), &ar).await?;
    // A second team's object: its own receiver, and an inhibition that would mute every warning
    // (the first team's Lonely too) if routing were not scoped to each object's own alerts.
    let other: AlertRule = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "AlertRule", "metadata": {"name": "other"},
        "spec": {"groups": [{"name": "other", "rules": [always("OtherTeam", "critical")]}],
                 "routing": {"groupWait": "1s", "groupInterval": "1s",
                    "receivers": [{"name": "pager", "webhook": {"urlSecretRef": {"name": "other-hooks", "key": "url"}}}],
                    "inhibitRules": [{"sourceMatch": {"severity": "critical"}, "targetMatch": {"severity": "warning"}}]}}}))?;
    rules.create(&PostParams::default(), &other).await?;

    // The configuration Nova merged from both, checked by amtool and run by a real Alertmanager.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let config = std::sync::Mutex::new(String::new());
    eventually("the merged Alertmanager configuration", WAIT, || async {
        let s = secrets.get_opt(nova::alerts::targets::ALERTMANAGER_SECRET).await?;
        let text = s.and_then(|s| s.data).and_then(|mut d| d.remove(nova::alerts::targets::ALERTMANAGER_KEY));
        let text = text.map(|b| String::from_utf8_lossy(&b.0).into_owned()).unwrap_or_default();
        let found =
            text.contains(&format!("{ns}/routed/oncall")) && text.contains(&format!("{ns}/other/pager"));
        *config.lock().unwrap() = text;
        Ok::<_, kube::Error>(found)
    })
    .await?;
    let am = Alertmanager::start(&config.into_inner().unwrap())?;
    let rules_dir = tempfile::tempdir()?;
    let extra = Extra {
        rules_dir: Some(rules_dir.path().to_owned()),
        alertmanager: Some(am.addr()),
        ..Default::default()
    };
    let prom = Arc::new(Prometheus::start_with(&[], &extra)?);
    let _sync =
        RuleSync::start(client.clone(), &ns, Source::ConfigMaps, rules_dir.path().to_owned(), prom.clone());

    let want_hook =
        [("DiskFull".to_owned(), "critical".to_owned()), ("Lonely".to_owned(), "warning".to_owned())];
    eventually("the webhook got the critical and the lone warning", WAIT, || async {
        Ok::<_, anyhow::Error>(alerts_in(&hook.received()) == want_hook && !mail.received().is_empty())
    })
    .await
    .with_context(|| {
        format!(
            "webhook: {:?}\nmail: {:?}\nalertmanager: {}",
            hook.received(),
            mail.received(),
            am.alerts().unwrap_or_default()
        )
    })?;
    let theirs = [("OtherTeam".to_owned(), "critical".to_owned())];
    eventually("the other team's webhook got its own alert only", WAIT, || async {
        Ok::<_, anyhow::Error>(alerts_in(&other_hook.received()) == theirs)
    })
    .await?;
    assert_eq!(alerts_in(&hook.received()), want_hook, "nothing of the other team's reached the first");
    // The warning of DiskFull is in Alertmanager, muted by its critical.
    let held: Value = serde_json::from_str(&am.alerts()?)?;
    let warning = held
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["labels"]["alertname"] == "DiskFull" && a["labels"]["severity"] == "warning");
    let warning = warning.context("the DiskFull warning reached Alertmanager")?;
    assert_eq!(warning["status"]["state"], "suppressed", "{warning}");
    assert!(warning["status"]["inhibitedBy"].as_array().is_some_and(|a| !a.is_empty()), "{warning}");
    // Mail: only the critical (the route), with its name.
    let mails = mail.received().join("\n");
    assert!(mails.contains("DiskFull") && !mails.contains("Lonely"), "{mails}");
    assert!(mails.contains("To: oncall@shop.example"), "{mails}");
    // The webhook's URL is a secret: in the merged Secret only, never in the AlertRule's status.
    let status = serde_json::to_string(&rules.get("routed").await?.status)?;
    assert!(!status.contains(&hook.url()), "{status}");
    Ok(())
}
