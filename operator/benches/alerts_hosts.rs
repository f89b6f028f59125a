//! AlertRules on a Host without a cluster: `nova apply -f` of N AlertRules (validated, checked
//! by the host's promtool, loaded by its Prometheus, read back into status) against the same
//! rule files put on the host by hand — written there, then one `ssh host 'promtool check
//! rules … && curl -X POST …/-/reload'` and the rules API polled until all are loaded. One test
//! host, both in the same run. See docs/benchmarks.md.
//!
//!     cargo bench -p nova --bench alerts_hosts -- [--objects 100] [--rules 10] [--runs 3]
//!
//! Needs root (a test host).

use std::path::Path;
use std::time::Instant;

use nova::api::AlertRule;
use serde_json::{Value, json};
use test_cluster::testhost::TestHost;

mod common;
use common::{arg, median, quiesce};

const RULES_DIR: &str = "etc/prometheus/nova/rules";

fn rule_doc(host: &str, i: usize, rules: usize) -> Value {
    let rules: Vec<Value> = (0..rules)
        .map(|j| {
            json!({"alert": format!("NovaBench{i}x{j}"), "expr": format!("vector({j}) > {}", j + 1),
                   "for": "5m", "labels": {"severity": "warning"},
                   "annotations": {"summary": format!("bench rule {j} of object {i}")}})
        })
        .collect();
    json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "AlertRule",
           "metadata": {"name": format!("bench-{i:03}"), "namespace": "default"},
           "spec": {"target": {"hosts": {"names": [host]}}, "groups": [{"name": format!("bench-{i}"), "rules": rules}]}})
}

fn write_docs(path: &Path, docs: &[Value]) {
    let text: Vec<String> = docs.iter().map(|d| serde_yaml::to_string(d).expect("yaml")).collect();
    std::fs::write(path, text.join("---\n")).expect("write");
}

fn nova(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nova"))
        .args(args)
        .env("NOVA_STATE", dir.join("state.db"))
        .output()
        .expect("nova");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "nova {args:?} failed:\n{text}");
    text
}

/// Shell on the host (which has python3, not curl): reloads Prometheus, then polls its rules
/// API every 20 ms until exactly `want` rules are loaded.
fn reload_and_wait(want: usize) -> String {
    let py = format!(
        "import json,time,urllib.request as u\n\
         u.urlopen(u.Request('http://127.0.0.1:9090/-/reload',method='POST'))\n\
         n=lambda: sum(len(g['rules']) for g in json.load(u.urlopen('http://127.0.0.1:9090/api/v1/rules'))['data']['groups'])\n\
         while n()!={want}: time.sleep(0.02)\n"
    );
    format!("python3 -c {}", nova::ssh::quote(&py))
}

/// Removes every rule file and reloads (not timed).
fn clear(th: &TestHost) {
    th.ssh(&format!("rm -rf /{RULES_DIR}/* /{RULES_DIR}/.[!.]*; {}", reload_and_wait(0))).expect("clear");
}

/// By hand: the same files Nova renders, written on the host, one ssh for check + reload, and
/// the rules API polled until all are loaded.
fn floor(th: &TestHost, rules: &[AlertRule], want: usize) -> f64 {
    quiesce();
    let started = Instant::now();
    let mut names = Vec::new();
    for r in rules {
        let owner = format!("default/{}", r.metadata.name.as_deref().unwrap_or_default());
        let yaml = nova::alerts::rules::yaml(&owner, &nova::alerts::validate::check(&r.spec).groups);
        let name = format!("hand-{}.yml", r.metadata.name.as_deref().unwrap_or_default());
        std::fs::write(th.root().join(RULES_DIR).join(&name), yaml).expect("write");
        names.push(name);
    }
    th.ssh(&format!(
        "cd /{RULES_DIR} && promtool check rules {} >/dev/null && {}",
        names.join(" "),
        reload_and_wait(want)
    ))
    .expect("by hand");
    started.elapsed().as_secs_f64()
}

fn loaded(th: &TestHost) -> usize {
    let py = "import json,urllib.request as u\n\
              print(sum(len(g['rules']) for g in json.load(u.urlopen('http://127.0.0.1:9090/api/v1/rules'))['data']['groups']))\n";
    let out = th.ssh(&format!("python3 -c {}", nova::ssh::quote(py)));
    out.expect("rules").trim().parse().unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let objects: usize = arg("--objects").and_then(|v| v.parse().ok()).unwrap_or(100);
    let per: usize = arg("--rules").and_then(|v| v.parse().ok()).unwrap_or(10);
    let runs: usize = arg("--runs").and_then(|v| v.parse().ok()).unwrap_or(3);
    let th =
        tokio::task::spawn_blocking(|| TestHost::start("bench-alerts")).await.expect("join").expect("host");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("id");
    std::fs::write(&key, &th.client_key).expect("key");
    let key = key.to_str().expect("path").to_owned();
    let host = json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "Host", "metadata": {"name": th.name},
                      "spec": {"address": th.ssh_addr.ip().to_string(), "hostKey": th.host_key,
                               "sshKeySecretRef": {"name": "unused", "key": "k"}, "bootstrap": {"monitoring": true}}});
    let host_file = dir.path().join("host.yaml");
    write_docs(&host_file, &[host]);
    nova(dir.path(), &["apply", "-f", host_file.to_str().expect("path"), "-i", &key]);
    let docs: Vec<Value> = (0..objects).map(|i| rule_doc(&th.name, i, per)).collect();
    let rules: Vec<AlertRule> =
        docs.iter().map(|d| serde_json::from_value(d.clone()).expect("rule")).collect();
    let file = dir.path().join("rules.yaml");
    write_docs(&file, &docs);
    let want = objects * per;
    println!("{objects} AlertRules × {per} rules on one test host, {runs} runs\n");
    println!(
        "| run | nova apply -f: all reported loaded | by hand: files + ssh promtool + reload → loaded | ratio |"
    );
    println!("| --- | --- | --- | --- |");
    let (mut ns, mut hs) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        clear(&th);
        let h = floor(&th, &rules, want);
        clear(&th);
        quiesce();
        let started = Instant::now();
        let out = nova(dir.path(), &["apply", "-f", file.to_str().expect("path"), "-i", &key]);
        let n = started.elapsed().as_secs_f64();
        let reported = out.matches(&format!(": Loaded: {per} rules loaded")).count();
        assert_eq!(loaded(&th), want, "Prometheus loaded every rule");
        assert_eq!(reported, objects, "every object reported its rules loaded:\n{out}");
        println!("| {run} | {n:.2} s | {h:.2} s | {:.1}× |", n / h);
        ns.push(n);
        hs.push(h);
    }
    let (n, h) = (median(ns), median(hs));
    println!("| **median** | **{n:.2} s** | **{h:.2} s** | **{:.1}×** |", n / h);
}
