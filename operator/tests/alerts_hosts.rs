//! AlertRules on a Host, with `nova apply` and no cluster: Prometheus, Alertmanager and
//! node_exporter installed by the bootstrap (Debian's, from the hosts' local repository); rules
//! checked by the host's promtool and read back from its Prometheus through the SSH session; an
//! alert delivered by the host's Alertmanager to a webhook; a file promtool refuses leaves the
//! old one in place; `nova delete` takes everything away.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use test_cluster::testhost::TestHost;

mod common;

const RULES: &str = "etc/prometheus/nova/rules/default--app.yml";

fn host_doc(th: &TestHost) -> Value {
    json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "Host", "metadata": {"name": th.name},
           "spec": {"address": th.ssh_addr.ip().to_string(), "hostKey": th.host_key,
                    "sshKeySecretRef": {"name": "unused-without-a-cluster", "key": "k"},
                    "bootstrap": {"monitoring": true}}})
}

/// Two good rules and one broken expression; routed to a webhook on the host.
fn rule_doc(th: &TestHost, description: &str) -> Value {
    json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "AlertRule",
           "metadata": {"name": "app", "namespace": "default"},
           "spec": {
               "target": {"hosts": {"names": [th.name]}},
               "groups": [{"name": "app", "rules": [
                   {"alert": "NovaTestAlways", "expr": "vector(1)", "for": "0s",
                    "labels": {"severity": "warning"},
                    "annotations": {"summary": "always firing", "description": description}},
                   {"alert": "NovaTestBroken", "expr": "sum(rate(x[5m]", "for": "1m",
                    "labels": {"severity": "warning"}, "annotations": {"summary": "never loads"}},
                   {"alert": "NovaTestNodeDown", "expr": "up{job=\"node\"} == 0", "for": "1m",
                    "labels": {"severity": "critical"}, "annotations": {"summary": "node_exporter down"}},
               ]}],
               "routing": {"groupWait": "1s", "groupInterval": "1s", "repeatInterval": "1h",
                           "receivers": [{"name": "hook", "webhook": {"urlSecretRef": {"name": "hook", "key": "url"}}}]}}})
}

/// A second AlertRule on the same host: applied in the same round as `app`.
fn other_doc(th: &TestHost) -> Value {
    json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "AlertRule",
           "metadata": {"name": "other", "namespace": "default"},
           "spec": {"target": {"hosts": {"names": [th.name]}},
                    "groups": [{"name": "other", "rules": [
                        {"alert": "NovaTestOther", "expr": "vector(0) > 1", "labels": {"severity": "info"},
                         "annotations": {"summary": "never fires"}}]}]}})
}

fn secret_doc() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook", "namespace": "default"},
           "stringData": {"url": "http://127.0.0.1:9999/hook-token-s3cr3t"}})
}

fn write(dir: &Path, docs: &[Value]) -> Result<String> {
    write_as(dir, "alerts.yaml", docs)
}

fn write_as(dir: &Path, name: &str, docs: &[Value]) -> Result<String> {
    let text: Vec<String> = docs.iter().map(serde_yaml::to_string).collect::<Result<_, _>>()?;
    let path = dir.join(name);
    std::fs::write(&path, text.join("---\n"))?;
    Ok(path.to_str().context("path")?.to_owned())
}

async fn nova(args: &[&str], dir: &Path) -> Result<(bool, String)> {
    common::nova_local(args, dir).await
}

/// What the host's Prometheus says of its rules (asked on the host, not through Nova).
fn loaded_rules(th: &TestHost) -> Result<Vec<String>> {
    let out = th.ssh("python3 -c \"import json,urllib.request as u; d=json.load(u.urlopen('http://127.0.0.1:9090/api/v1/rules')); print('\\n'.join(r['name'] for g in d['data']['groups'] for r in g['rules']))\"")?;
    Ok(out.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect())
}

/// Puts a wrapper before the host's promtool that logs each call's arguments to
/// /root/promtool.calls and runs `then` (shell, printf-escaped) before the real one.
fn wrap_promtool(th: &TestHost, then: &str) -> Result<()> {
    th.ssh(&format!(
        "mv /usr/bin/promtool /usr/bin/promtool.real && printf '#!/bin/sh\\necho \"$*\" >> /root/promtool.calls\\n\
         {then}exec /usr/bin/promtool.real \"$@\"\\n' > /usr/bin/promtool && chmod 755 /usr/bin/promtool"
    ))?;
    Ok(())
}

/// How many times the host's Prometheus has loaded its configuration (its journal says so).
fn reloads(th: &TestHost) -> Result<usize> {
    let n = th.ssh(
        "journalctl -u prometheus --no-pager | grep -c 'Completed loading of configuration file' || true",
    )?;
    Ok(n.trim().parse()?)
}

/// Sets a default ACL on the rules directory: user prometheus may not read what is created
/// there (the xattr's binary form, so the host needs no `acl` package).
const DENY_PROMETHEUS: &str = "import os,pwd,struct\n\
u=pwd.getpwnam('prometheus').pw_uid\n\
e=lambda t,p,i=0xffffffff: struct.pack('<HHI',t,p,i)\n\
v=struct.pack('<I',2)+e(1,7)+e(2,0,u)+e(4,5)+e(16,5)+e(32,5)\n\
os.setxattr('/etc/prometheus/nova/rules','system.posix_acl_default',v)\n";

/// A webhook on the host that appends each request body to /root/hook.log.
const SINK: &str = "import http.server\nclass H(http.server.BaseHTTPRequestHandler):\n  def do_POST(self):\n    b=self.rfile.read(int(self.headers['Content-Length']))\n    open('/root/hook.log','ab').write(self.path.encode()+b' '+b+b'\\n')\n    self.send_response(200); self.end_headers()\nhttp.server.HTTPServer(('127.0.0.1',9999),H).serve_forever()\n";

#[tokio::test]
async fn alert_rules_load_route_and_roll_back_on_a_host() -> Result<()> {
    let th = tokio::task::spawn_blocking(|| TestHost::start("alerts")).await??;
    let dir = tempfile::tempdir()?;
    let key_path = dir.path().join("id");
    std::fs::write(&key_path, &th.client_key)?;
    let key = key_path.to_str().context("path")?;
    std::fs::write(th.root().join("root/sink.py"), SINK)?;
    th.ssh("systemd-run -q --unit hook-sink python3 /root/sink.py")?;

    // Two AlertRules in one apply: one round on the host (one promtool check, one reload).
    let other = write_as(dir.path(), "other.yaml", &[other_doc(&th)])?;
    let file = write(
        dir.path(),
        &[host_doc(&th), secret_doc(), rule_doc(&th, "{{ $labels.job }} fires"), other_doc(&th)],
    )?;
    let (ok, out) = nova(&["apply", "-f", &file, "-i", key], dir.path()).await?;
    let journal = || {
        th.ssh("journalctl -u prometheus -u prometheus-alertmanager --no-pager | tail -n 30")
            .unwrap_or_default()
    };
    assert!(ok, "{out}\n{}", journal());
    // The broken rule is named and left out; the other two load.
    assert!(out.contains("spec.groups[0].rules[1].expr"), "{out}");
    let mut names = loaded_rules(&th)?;
    names.sort();
    assert_eq!(names, ["NovaTestAlways", "NovaTestNodeDown", "NovaTestOther"], "{out}");
    assert!(out.contains("alertrule/other: Loaded: 1 rules loaded"), "{out}");

    // Both objects changed again: counted on the host, one `promtool check rules` of both files
    // and one Prometheus reload for the round (a wrapper logs promtool's calls; Prometheus logs
    // each configuration load).
    wrap_promtool(&th, "")?;
    let loads = || reloads(&th);
    let before = loads()?;
    let mut other2 = other_doc(&th);
    other2["spec"]["groups"][0]["rules"][0]["annotations"]["summary"] = json!("never fires, changed");
    let both = write_as(
        dir.path(),
        "both.yaml",
        &[host_doc(&th), secret_doc(), rule_doc(&th, "{{ $labels.job }} fires, changed"), other2],
    )?;
    let (ok, out) = nova(&["apply", "-f", &both, "-i", key], dir.path()).await?;
    assert!(ok, "{out}");
    let calls = std::fs::read_to_string(th.root().join("root/promtool.calls")).unwrap_or_default();
    let checks: Vec<&str> = calls.lines().filter(|l| l.starts_with("check rules")).collect();
    assert_eq!(checks.len(), 1, "promtool calls: {calls}");
    assert!(checks[0].contains("app") && checks[0].contains("other"), "one check of both files: {calls}");
    // journald may write the line a moment after the reload answered.
    test_cluster::eventually("the reload in Prometheus's log", Duration::from_secs(10), || async {
        anyhow::Ok(loads()? > before)
    })
    .await?;
    assert_eq!(loads()? - before, 1, "Prometheus reloads in the round");
    let (ok, out) = nova(&["delete", "-f", &other, "-i", key], dir.path()).await?;
    assert!(ok, "{out}");
    let (_, status) = nova(&["status", "app"], dir.path()).await?;
    assert!(status.contains("rulesLoaded: 2"), "{status}");
    assert!(!status.contains("s3cr3t") && !out.contains("s3cr3t"), "a secret in output: {out}{status}");
    let am = std::fs::read_to_string(th.root().join("etc/prometheus/alertmanager.yml"))?;
    assert!(am.contains("hook-token-s3cr3t"), "{am}");
    assert_eq!(th.ssh("stat -c %a /etc/prometheus/alertmanager.yml")?.trim(), "640");

    // The alert goes from the host's Prometheus through its Alertmanager to the webhook.
    let log = th.root().join("root/hook.log");
    test_cluster::eventually("the alert at the webhook", Duration::from_secs(90), || async {
        anyhow::Ok(std::fs::read_to_string(&log).is_ok_and(|l| l.contains("NovaTestAlways")))
    })
    .await?;

    // A template only promtool checks: refused on the host, the old file stays and loads.
    let before = std::fs::read_to_string(th.root().join(RULES))?;
    // In one apply with a good object, the round is refused as a whole, and then, object by
    // object, the refusal is told to `app` alone while `other` loads.
    let file =
        write(dir.path(), &[host_doc(&th), secret_doc(), rule_doc(&th, "{{ $labels.job "), other_doc(&th)])?;
    let (ok, out) = nova(&["apply", "-f", &file, "-i", key], dir.path()).await?;
    assert!(!ok, "{out}");
    assert!(out.contains("alertrule/app: ApplyFailed: host/") && out.contains("promtool refused"), "{out}");
    assert!(out.contains("alertrule/other: Loaded: 1 rules loaded"), "{out}");
    assert_eq!(std::fs::read_to_string(th.root().join(RULES))?, before);
    assert_eq!(loaded_rules(&th)?.len(), 3);
    let (ok, out) = nova(&["delete", "-f", &other, "-i", key], dir.path()).await?;
    assert!(ok, "{out}");
    assert_eq!(loaded_rules(&th)?.len(), 2);

    // A file promtool accepts and Prometheus refuses: new files in the rules directory get a
    // default ACL that denies the prometheus user (root's promtool still reads them), so the
    // reload fails for real; the previous file goes back and loads again.
    th.ssh(&format!("python3 -c {}", nova::ssh::quote(DENY_PROMETHEUS)))?;
    let file =
        write(dir.path(), &[host_doc(&th), secret_doc(), rule_doc(&th, "{{ $labels.job }} fires again")])?;
    let (ok, out) = nova(&["apply", "-f", &file, "-i", key], dir.path()).await?;
    assert!(!ok, "{out}");
    assert!(out.contains("refused to reload") && out.contains("the previous file is back"), "{out}");
    assert_eq!(std::fs::read_to_string(th.root().join(RULES))?, before);
    test_cluster::eventually("the previous rules loaded again", Duration::from_secs(30), || async {
        anyhow::Ok(loaded_rules(&th)?.len() == 2)
    })
    .await?;
    th.ssh(
        "python3 -c \"import os; os.removexattr('/etc/prometheus/nova/rules', 'system.posix_acl_default')\"",
    )?;

    // Deleted: no rules, no route to the webhook.
    let (ok, out) = nova(&["delete", "-f", &file, "-i", key], dir.path()).await?;
    assert!(ok, "{out}");
    assert!(!th.root().join(RULES).exists());
    let left = loaded_rules(&th)?;
    assert!(left.is_empty(), "{left:?} after {out}\n{}", th.ssh("ls -la /etc/prometheus/nova/rules")?);
    let am = std::fs::read_to_string(th.root().join("etc/prometheus/alertmanager.yml"))?;
    assert!(!am.contains("s3cr3t"), "{am}");
    Ok(())
}

/// The operator's way: a Host bootstrapped with `monitoring` by the Host controller, an
/// AlertRule whose status is read back from the host's Prometheus, its rules taken away by the
/// finalizer when it is deleted.
#[tokio::test]
async fn the_operator_loads_rules_on_a_host_and_removes_them_on_delete() -> Result<()> {
    use kube::Api;
    use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
    use nova::api::{AlertRule, Host};

    let cp = test_cluster::shared(test_cluster::Mode::Simulated).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, "alerts-hosts").await?;
    let op = common::Operator::start(client.clone(), &ns).await?;
    let (th, host) = common::app_host(&client, &ns, "alrt").await?;
    let hosts: Api<Host> = Api::all(client.clone());
    let patch = json!({"spec": {"bootstrap": {"monitoring": true}}});
    hosts.patch(&host, &PatchParams::default(), &Patch::Merge(patch)).await?;

    let rules: Api<AlertRule> = Api::namespaced(client.clone(), &ns);
    let mut doc = rule_doc(&th, "{{ $labels.job }} fires");
    doc["metadata"] = json!({"name": "app"});
    doc["spec"]["target"] = json!({"hosts": {"names": [host]}});
    doc["spec"].as_object_mut().context("spec")?.remove("routing");
    rules.create(&PostParams::default(), &serde_json::from_value(doc.clone())?).await?;
    let file = th.root().join(format!("etc/prometheus/nova/rules/{ns}--app.yml"));
    test_cluster::eventually("rules loaded on the host, read back", Duration::from_secs(240), || async {
        let st = rules.get("app").await?.status.unwrap_or_default();
        anyhow::Ok(st.rules_loaded == Some(2) && st.applied_to.as_deref() == Some(&format!("Hosts {host}")))
    })
    .await?;
    assert!(file.exists());
    let st = rules.get("app").await?.status.unwrap_or_default();
    let degraded = st.conditions.iter().find(|c| c.type_ == "Degraded").context("Degraded")?;
    assert!(degraded.message.contains("spec.groups[0].rules[1].expr"), "{degraded:?}");
    assert_eq!(loaded_rules(&th)?.len(), 2);

    // Objects that arrive together share one round on the host. promtool's checks wait for
    // /root/go, so the round of g0 holds; g1 and g2 arrive meanwhile and wait for the next
    // round (the operator's metric says so); then one check and one reload take both.
    wrap_promtool(
        &th,
        "if [ \"$1\" = check ] && [ \"$2\" = rules ]; then while [ ! -f /root/go ]; do sleep 0.05; done; fi\\n",
    )?;
    let checks = || -> Vec<String> {
        let calls = std::fs::read_to_string(th.root().join("root/promtool.calls")).unwrap_or_default();
        calls.lines().filter(|l| l.starts_with("check rules")).map(str::to_owned).collect()
    };
    let loads = || reloads(&th);
    let before = loads()?;
    let group = ["g0", "g1", "g2"];
    let create = |name: &'static str| {
        let mut d = doc.clone();
        d["metadata"] = json!({"name": name});
        let rules = rules.clone();
        async move {
            rules
                .create(&PostParams::default(), &serde_json::from_value(d)?)
                .await
                .map(|_| ())
                .map_err(anyhow::Error::from)
        }
    };
    create(group[0]).await?;
    test_cluster::eventually("g0's check started and held", Duration::from_secs(60), || async {
        anyhow::Ok(checks().len() == 1)
    })
    .await?;
    create(group[1]).await?;
    create(group[2]).await?;
    let waiting = format!("nova_alert_host_round_waiting{{host=\"{host}\"}} ");
    test_cluster::eventually("g1 and g2 waiting for the next round", Duration::from_secs(60), || async {
        let m = op.metrics().await?;
        let n = m.lines().find_map(|l| l.strip_prefix(&waiting)).and_then(|v| v.trim().parse::<u32>().ok());
        anyhow::Ok(n.unwrap_or(0) >= 2)
    })
    .await?;
    th.ssh("touch /root/go")?;
    test_cluster::eventually("g0, g1 and g2 loaded", Duration::from_secs(120), || async {
        let mut all = true;
        for g in group {
            all &= rules.get(g).await?.status.unwrap_or_default().rules_loaded == Some(2);
        }
        anyhow::Ok(all)
    })
    .await?;
    let checks = checks();
    assert_eq!(checks.len(), 2, "promtool checks: {checks:?}");
    assert!(checks[0].contains("--g0.yml") && !checks[0].contains("--g1"), "{checks:?}");
    assert!(
        checks[1].contains("--g1.yml") && checks[1].contains("--g2.yml"),
        "one check of both: {checks:?}"
    );
    test_cluster::eventually("two reloads in Prometheus's log", Duration::from_secs(10), || async {
        anyhow::Ok(loads()? >= before + 2)
    })
    .await?;
    assert_eq!(loads()? - before, 2, "Prometheus reloads for two rounds");
    assert_eq!(loaded_rules(&th)?.len(), 8);

    for name in ["app"].into_iter().chain(group) {
        rules.delete(name, &DeleteParams::default()).await?;
    }
    test_cluster::eventually("the AlertRules gone", Duration::from_secs(60), || async {
        anyhow::Ok(rules.list(&Default::default()).await?.items.is_empty())
    })
    .await?;
    assert!(!file.exists(), "the finalizer left {}", file.display());
    assert!(loaded_rules(&th)?.is_empty());
    op.stop().await
}

/// What the host's Prometheus answers to an instant query (asked on the host).
fn query(th: &TestHost, q: &str) -> Result<Value> {
    let script = format!(
        "import json,urllib.request as u,urllib.parse as p; print(u.urlopen('http://127.0.0.1:9090/api/v1/query?'+p.urlencode({{'query': {q:?}}})).read().decode())"
    );
    Ok(serde_json::from_str(&th.ssh(&format!("python3 -c {}", nova::ssh::quote(&script)))?)?)
}

/// The alerts the webhook received: (alertname, severity, mountpoint) of each.
fn delivered(log: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((_, body)) = line.split_once(' ') else { continue };
        let Ok(v) = serde_json::from_str::<Value>(body) else { continue };
        for a in v["alerts"].as_array().into_iter().flatten() {
            let l = |k: &str| a["labels"][k].as_str().unwrap_or_default().to_owned();
            out.push((l("alertname"), l("severity"), l("mountpoint")));
        }
    }
    out
}

/// The seed's pack (`webapp`: host, platform, database, Redis) on a host with its monitoring
/// stack: a Platform with `spec.metrics` is scraped by the host's Prometheus as job `platform`
/// (and its target goes when it does); a small ext4 file system the test fills makes the
/// critical disk alert fire and reach the webhook through the host's Alertmanager.
#[tokio::test]
async fn the_seed_pack_fires_under_disk_pressure_and_platforms_are_scraped() -> Result<()> {
    let th = tokio::task::spawn_blocking(|| TestHost::start("pack")).await??;
    let dir = tempfile::tempdir()?;
    let key_path = dir.path().join("id");
    std::fs::write(&key_path, &th.client_key)?;
    let key = key_path.to_str().context("path")?;
    std::fs::create_dir_all(th.root().join("opt"))?;
    std::fs::write(th.root().join("opt/app.py"), common::TEST_APP)?;
    std::fs::write(th.root().join("root/sink.py"), SINK)?;
    th.ssh("systemd-run -q --unit hook-sink python3 /root/sink.py")?;

    let platform = json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "Platform",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"image": "web:1", "command": ["/usr/bin/python3", "/opt/app.py"],
                 "env": [{"name": "VERSION", "value": "1"}], "domains": ["web.test"],
                 "metrics": {}, "target": {"hosts": {"names": [th.name]}}}});
    let mut rule = rule_doc(&th, "unused");
    rule["metadata"]["name"] = json!("seed");
    rule["spec"].as_object_mut().context("spec")?.remove("groups");
    rule["spec"]["packs"] = json!(["webapp"]);
    let file = write(dir.path(), &[host_doc(&th), secret_doc(), platform.clone(), rule])?;
    let (ok, out) = nova(&["apply", "-f", &file, "-i", key], dir.path()).await?;
    assert!(ok, "{out}");

    let target = th.root().join("etc/prometheus/nova/targets/platform-default-web.json");
    test_cluster::eventually("the Platform scraped as job platform", Duration::from_secs(60), || async {
        let r = query(
            &th,
            "up{job=\"platform\",namespace=\"default\",platform=\"web\",instance=\"default/web\"}",
        )?;
        anyhow::Ok(r["data"]["result"][0]["value"][1] == "1")
    })
    .await?;
    let info = query(&th, "nova_test_app_info{job=\"platform\"}")?;
    assert_eq!(info["data"]["result"][0]["metric"]["version"], "1", "{info}");

    // Real pressure: a 32 MiB ext4 file system, filled until it refuses.
    th.ssh(
        "set -e; truncate -s 32M /var/tmp/disk.img; mkfs.ext4 -q -F /var/tmp/disk.img; mkdir -p /srv/data; \
         mount -o loop /var/tmp/disk.img /srv/data; dd if=/dev/zero of=/srv/data/fill bs=1M status=none || true; sync",
    )?;
    let log = th.root().join("root/hook.log");
    let fired = || {
        delivered(&log)
            .into_iter()
            .any(|(a, s, m)| a == "NovaHostDiskHigh" && s == "critical" && m == "/srv/data")
    };
    // The critical's `for` is five minutes.
    let waited =
        test_cluster::eventually("NovaHostDiskHigh at the webhook", Duration::from_secs(480), || async {
            anyhow::Ok(fired())
        })
        .await;
    let _ = th.ssh("umount /srv/data");
    waited.with_context(|| format!("{:?}\n{}", delivered(&log), query(&th, "ALERTS").unwrap_or_default()))?;

    // The Platform deleted: its target goes, the host's Prometheus stops scraping it.
    let file = write(dir.path(), &[host_doc(&th), platform])?;
    let (ok, out) = nova(&["delete", "-f", &file, "-i", key], dir.path()).await?;
    assert!(ok, "{out}");
    assert!(!target.exists(), "{}", target.display());
    Ok(())
}
