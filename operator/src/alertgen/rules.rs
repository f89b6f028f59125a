//! The alerts other kinds get (pure): a Backup with `objectives` its freshness and objective
//! alerts, a TlsCertificate its expiry alerts, a BlueGreenDeployment its degraded-rollout alert,
//! a TrainingJob its stalled-training and GPU-temperature alerts. The same conventions as the
//! packs (`Nova…` names, severity, summary, templated description, runbook, a `for` on every
//! alert), each scoped by label matchers to the one object.

use std::collections::BTreeMap;

use kube::ResourceExt;
use serde_json::Value;

use crate::api::alert::{AlertRuleSpec, AlertingRule, RuleGroup};
use crate::api::{Backup, BlueGreenDeployment, TlsCertificate, TrainingJob};

const RUNBOOKS: &str = "https://nova.infra.dev/docs/runbooks/";

/// `{k="v",...}`: values are Kubernetes names, quoted as PromQL strings (JSON's escaping).
fn selector(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", Value::from(*v))).collect();
    format!("{{{}}}", inner.join(","))
}

fn rule(
    alert: &str,
    expr: String,
    for_: &str,
    severity: &str,
    summary: &str,
    description: String,
) -> AlertingRule {
    AlertingRule {
        alert: alert.into(),
        expr,
        for_: Some(for_.into()),
        keep_firing_for: None,
        labels: BTreeMap::from([("severity".to_owned(), severity.to_owned())]),
        annotations: BTreeMap::from([
            ("summary".to_owned(), summary.to_owned()),
            ("description".to_owned(), description),
            ("runbook_url".to_owned(), format!("{RUNBOOKS}{alert}")),
        ]),
    }
}

fn spec(kind: &str, ns: &str, name: &str, rules: Vec<AlertingRule>) -> AlertRuleSpec {
    AlertRuleSpec {
        groups: vec![RuleGroup {
            name: format!("nova-{}-{ns}-{name}", kind.to_lowercase()),
            interval: None,
            rules,
        }],
        packs: Vec::new(),
        routing: None,
        target: None,
    }
}

/// The alerts of a Backup with objectives (none without).
pub fn backup(b: &Backup) -> Option<AlertRuleSpec> {
    let o = b.spec.objectives.as_ref()?;
    let (ns, name) = (b.namespace().unwrap_or_default(), b.name_any());
    let sel = selector(&[("namespace", &ns), ("backup", &name)]);
    let mut rules = vec![rule(
        "NovaBackupObjectiveViolated",
        format!("nova_backup_objective_violated{sel} == 1"),
        "5m",
        "critical",
        "A Backup misses its recovery objective",
        format!("Backup {ns}/{name} misses its {{{{ $labels.objective }}}} objective."),
    )];
    if let Some(rpo) = o.rpo_seconds {
        rules.push(rule(
            "NovaBackupStale",
            format!("time() - nova_backup_last_success_timestamp_seconds{sel} > {rpo}"),
            "5m",
            "critical",
            "The newest backup is older than the recovery point objective",
            format!("The newest artifact of Backup {ns}/{name} is {{{{ $value | humanizeDuration }}}} old; its rpoSeconds is {rpo}."),
        ));
    }
    Some(spec("Backup", &ns, &name, rules))
}

/// The expiry alerts of a certificate: a warning two weeks out, critical three days out.
pub fn certificate(c: &TlsCertificate) -> Option<AlertRuleSpec> {
    let (ns, name) = (c.namespace().unwrap_or_default(), c.name_any());
    let sel = selector(&[("namespace", &ns), ("name", &name)]);
    let expiring = |days: u32, severity: &str| {
        rule(
            "NovaCertificateExpiringSoon",
            format!("nova_certificate_expiration_timestamp_seconds{sel} - time() < {days} * 86400"),
            "15m",
            severity,
            "A certificate expires soon",
            format!("TlsCertificate {ns}/{name} expires in {{{{ $value | humanizeDuration }}}}."),
        )
    };
    Some(spec("TlsCertificate", &ns, &name, vec![expiring(14, "warning"), expiring(3, "critical")]))
}

/// A rollout that stays Degraded.
pub fn bluegreen(b: &BlueGreenDeployment) -> Option<AlertRuleSpec> {
    let (ns, name) = (b.namespace().unwrap_or_default(), b.name_any());
    let sel = selector(&[("namespace", &ns), ("name", &name)]);
    let r = rule(
        "NovaRolloutDegraded",
        format!("nova_bluegreen_degraded{sel} == 1"),
        "5m",
        "critical",
        "A blue-green rollout is degraded",
        format!("BlueGreenDeployment {ns}/{name} has been Degraded for 5 minutes; its conditions say why."),
    );
    Some(spec("BlueGreenDeployment", &ns, &name, vec![r]))
}

/// A running job that makes no progress, and its GPUs running hot.
pub fn training(t: &TrainingJob) -> Option<AlertRuleSpec> {
    let (ns, name) = (t.namespace().unwrap_or_default(), t.name_any());
    let sel = selector(&[("namespace", &ns), ("name", &name)]);
    let running = selector(&[("namespace", &ns), ("name", &name), ("phase", "Running")]);
    let rules = vec![
        rule(
            "NovaTrainingStalled",
            format!(
                "increase(nova_training_steps_total{sel}[15m]) == 0 and on (namespace, name) nova_training_phase{running} == 1"
            ),
            "15m",
            "warning",
            "A TrainingJob makes no progress",
            format!("TrainingJob {ns}/{name} is Running but completed no step in 30 minutes."),
        ),
        rule(
            "NovaGpuTemperatureHigh",
            format!("nova_training_gpu_temperature_celsius{sel} > 85"),
            "5m",
            "warning",
            "A GPU of a TrainingJob runs hotter than 85 °C",
            format!(
                "GPU {{{{ $labels.gpu }}}} of worker {{{{ $labels.worker }}}} of TrainingJob {ns}/{name} is at {{{{ $value | printf \"%.0f\" }}}} °C."
            ),
        ),
    ];
    Some(spec("TrainingJob", &ns, &name, rules))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::{owner_key, rules as files, validate};

    /// The first `kind` of the repository's examples, as `shop/web`.
    fn example<K: serde::de::DeserializeOwned>(kind: &str) -> K {
        use serde::Deserialize;
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
        let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "yaml")) {
            let text = std::fs::read_to_string(f).unwrap();
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let mut v = serde_json::Value::deserialize(doc).unwrap();
                if v["kind"] == kind {
                    v["metadata"] = serde_json::json!({"name": "web", "namespace": "shop"});
                    return serde_json::from_value(v).unwrap();
                }
            }
        }
        panic!("no {kind} in the examples")
    }

    fn all() -> Vec<AlertRuleSpec> {
        let mut backup: Backup = example("Backup");
        backup.spec.objectives =
            Some(crate::api::backup::Objectives { rpo_seconds: Some(3600), ..Default::default() });
        vec![
            backup_spec(&backup),
            certificate(&example("TlsCertificate")).unwrap(),
            bluegreen(&example("BlueGreenDeployment")).unwrap(),
            training(&example("TrainingJob")).unwrap(),
        ]
    }

    fn backup_spec(b: &Backup) -> AlertRuleSpec {
        backup(b).expect("objectives give alerts")
    }

    #[test]
    fn every_generated_rule_passes_nova_and_promtool() {
        let dir = tempfile::tempdir().unwrap();
        for (i, spec) in all().into_iter().enumerate() {
            let checked = validate::check(&spec);
            assert!(checked.problems.is_empty(), "{:?}", checked.problems);
            for r in spec.groups.iter().flat_map(|g| &g.rules) {
                assert!(
                    r.for_.is_some()
                        && r.labels.contains_key("severity")
                        && r.annotations.contains_key("runbook_url")
                );
            }
            let path = dir.path().join(format!("{i}.yml"));
            std::fs::write(&path, files::yaml(&owner_key("shop", "web"), &checked.groups)).unwrap();
            let out = std::process::Command::new("promtool")
                .arg("check")
                .arg("rules")
                .arg(&path)
                .output()
                .expect("promtool");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        }
    }

    /// The freshness alert fires for this Backup once its newest artifact is older than the
    /// RPO, and not for another Backup's series (promtool's rule tests).
    #[test]
    fn the_freshness_alert_fires_for_its_backup_only() {
        let dir = tempfile::tempdir().unwrap();
        let spec = all().remove(0);
        std::fs::write(dir.path().join("rules.yml"), files::yaml("shop/web", &spec.groups)).unwrap();
        let test = r#"rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'nova_backup_last_success_timestamp_seconds{namespace="shop",backup="web"}'
        values: '0x200'
      - series: 'nova_backup_last_success_timestamp_seconds{namespace="shop",backup="other"}'
        values: '0x200'
    alert_rule_test:
      - eval_time: 30m
        alertname: NovaBackupStale
        exp_alerts: []
      - eval_time: 70m
        alertname: NovaBackupStale
        exp_alerts:
          - exp_labels: {severity: critical, namespace: shop, backup: web, nova_alertrule: shop/web}
            exp_annotations:
              summary: The newest backup is older than the recovery point objective
              description: The newest artifact of Backup shop/web is 1h 10m 0s old; its rpoSeconds is 3600.
              runbook_url: https://nova.infra.dev/docs/runbooks/NovaBackupStale
"#;
        std::fs::write(dir.path().join("test.yml"), test).unwrap();
        let out = std::process::Command::new("promtool")
            .args(["test", "rules", "test.yml"])
            .current_dir(dir.path())
            .output()
            .expect("promtool");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
