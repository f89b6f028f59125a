//! `nova-bench alerts`: N rules in M AlertRules, from `kubectl apply` to every rule reported
//! loaded in status, against the floor of doing it by hand: writing the same rule files,
//! `promtool check rules` on them, one reload, waiting until Prometheus has them loaded. The
//! bench copies ConfigMaps into Prometheus's rule directory as a rule sidecar would (polling
//! every 200 ms), so Nova's side includes that hop. Also timed: one full status read-back of
//! all rules (the rules API read, parsed and matched to every object).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::bench::{Operator, install_crds, namespace, tempfile_dir};
use nova::alerts::{loaded, prom, rules, targets, validate};
use nova::api::AlertRule;

pub struct Report {
    pub rules: usize,
    pub objects: usize,
    pub nova_seconds: f64,
    pub floor_seconds: f64,
    pub readback_ms: f64,
}

impl Report {
    pub fn markdown(&self) -> String {
        format!(
            "| what | Nova | by hand (floor) | ratio |\n|---|---|---|---|\n\
             | {} rules in {} AlertRules → all reported loaded / promtool check + reload → all loaded | {:.2} s | {:.2} s | {:.2}× |\n\
             | full status read-back of {} rules (rules API read, parsed, matched to {} objects) | {:.0} ms | – | – |\n",
            self.rules,
            self.objects,
            self.nova_seconds,
            self.floor_seconds,
            self.nova_seconds / self.floor_seconds,
            self.rules,
            self.objects,
            self.readback_ms
        )
    }
}

fn alert_rule(i: usize, per: usize) -> AlertRule {
    let rules: Vec<_> = (0..per)
        .map(|j| json!({"alert": format!("Bench{i}x{j}"), "expr": format!("up{{job=\"bench\",instance=\"i-{i}-{j}\"}} == 0"),
                        "for": "1m", "labels": {"severity": "warning"}}))
        .collect();
    serde_json::from_value(json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "AlertRule",
        "metadata": {"name": format!("team-{i:03}")}, "spec": {"groups": [{"name": "bench", "rules": rules}]}}))
    .expect("an AlertRule")
}

/// Debian's Prometheus loading `dir/*.yaml`; killed on drop.
struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    async fn start(dir: &Path) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            json!({"global": {"evaluation_interval": "1s"}, "rule_files": [dir.join("rules/*.yaml")]})
                .to_string(),
        )?;
        std::fs::create_dir_all(dir.join("rules"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-lifecycle")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let p = Self { child, url: format!("http://127.0.0.1:{port}") };
        let http = reqwest::Client::new();
        while !http.get(format!("{}/-/ready", p.url)).send().await.is_ok_and(|r| r.status().is_success()) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(p)
    }

    async fn reload(&self) -> anyhow::Result<()> {
        let r = reqwest::Client::new().post(format!("{}/-/reload", self.url)).send().await?;
        anyhow::ensure!(r.status().is_success(), "reload refused: {}", r.text().await?);
        Ok(())
    }

    async fn loaded(&self) -> anyhow::Result<usize> {
        let a = prom::rules(nova::rollouts::gate::client(), &self.url).await?;
        Ok(a.data.groups.iter().map(|g| g.rules.len()).sum())
    }
}

/// By hand: the rule files written, promtool-checked, one reload, until all are loaded.
async fn floor(p: &Prometheus, dir: &Path, objects: usize, per: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut files = Vec::new();
    for i in 0..objects {
        let a = alert_rule(i, per);
        let path = dir.join(format!("rules/bench-{i:03}.yaml"));
        std::fs::write(&path, rules::yaml(&format!("bench/team-{i:03}"), &validate::check(&a.spec).groups))?;
        files.push(path);
    }
    let checked =
        Command::new("promtool").args(["check", "rules"]).args(&files).stdout(Stdio::null()).status()?;
    anyhow::ensure!(checked.success(), "promtool refused the files");
    p.reload().await?;
    while p.loaded().await? < objects * per {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed().as_secs_f64();
    for f in files {
        std::fs::remove_file(f)?;
    }
    p.reload().await?;
    Ok(took)
}

/// Copies the rule ConfigMaps of `ns` into the rule directory and reloads when they changed.
async fn sidecar(client: Client, ns: String, dir: PathBuf, url: String) {
    let cms: Api<ConfigMap> = Api::namespaced(client, &ns);
    let lp = ListParams::default().labels(&format!("{}=true", targets::RULES_LABEL));
    let mut seen = std::collections::BTreeMap::new();
    loop {
        if let Ok(list) = cms.list(&lp).await {
            let now: std::collections::BTreeMap<String, String> =
                list.items.into_iter().flat_map(|c| c.data.unwrap_or_default()).collect();
            if now != seen {
                for (k, v) in &now {
                    let _ = std::fs::write(dir.join("rules").join(k.replace(".rules.yaml", ".yaml")), v);
                }
                let _ = reqwest::Client::new().post(format!("{url}/-/reload")).send().await;
                seen = now;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn run(client: Client, objects: usize, per: usize) -> anyhow::Result<Report> {
    install_crds(&client).await?;
    let dir = tempfile_dir()?;
    let p = Prometheus::start(&dir).await?;
    eprintln!("by hand: {} rules ...", objects * per);
    let floor_seconds = floor(&p, &dir, objects, per).await?;

    eprintln!("nova: {objects} AlertRules ...");
    let ns = namespace(&client, "bench-alerts").await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let flags = [format!("--prometheus-url={}", p.url)];
    let operator = Operator::start_with(&ns, 16, &dir, port, &flags)?;
    let sync = tokio::spawn(sidecar(client.clone(), ns.clone(), dir.clone(), p.url.clone()));
    let api: Api<AlertRule> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    stream::iter(0..objects)
        .map(|i| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &alert_rule(i, per)).await.map(drop) }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    let created = started.elapsed().as_secs_f64();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let (mut written, mut in_prometheus) = (None, None);
    loop {
        if written.is_none() && cms.list(&ListParams::default()).await?.items.len() >= objects {
            written = Some(started.elapsed().as_secs_f64());
        }
        if in_prometheus.is_none() && p.loaded().await? >= objects * per {
            in_prometheus = Some(started.elapsed().as_secs_f64());
        }
        let list = api.list(&ListParams::default()).await?;
        let loaded: i32 = list.items.iter().filter_map(|a| a.status.as_ref()?.rules_loaded).sum();
        if loaded as usize >= objects * per {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let nova_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "  created {created:.2} s, all ConfigMaps written {:.2} s, all loaded in Prometheus {:.2} s, all reported {nova_seconds:.2} s",
        written.unwrap_or(nova_seconds),
        in_prometheus.unwrap_or(nova_seconds)
    );

    // One full read-back, as the controller does it, for every object.
    let list = api.list(&ListParams::default()).await?.items;
    let started = Instant::now();
    let answer = prom::rules(nova::rollouts::gate::client(), &p.url).await?;
    let names = prom::metric_names(nova::rollouts::gate::client(), &p.url).await?;
    let mut total = 0;
    for a in &list {
        let owner = nova::alerts::owner_key(&ns, &kube::ResourceExt::name_any(a));
        let groups = validate::check(&a.spec).groups;
        total += loaded::loaded(&loaded::status(&owner, &groups, &answer, Some(&names), &[]));
    }
    let readback_ms = started.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(total == objects * per, "read back {total} loaded rules");
    sync.abort();
    drop(operator);
    Api::<Namespace>::all(client.clone()).delete(&ns, &DeleteParams::background()).await?;
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Report { rules: objects * per, objects, nova_seconds, floor_seconds, readback_ms })
}
