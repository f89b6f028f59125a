//! `nova-bench alerts`: N rules in M AlertRules, from `kubectl apply` to every rule reported
//! loaded in status, against the floor of doing it by hand: writing the same rule files,
//! `promtool check rules` on them, one reload, waiting until Prometheus has them loaded. The
//! bench copies ConfigMaps into Prometheus's rule directory as a rule sidecar would (polling
//! every 200 ms), so Nova's side includes that hop. Next to both, the least a controller with no
//! logic pays through Kubernetes ([`plain_client`]). Also timed: one full status read-back of
//! all rules (the rules API read, parsed and matched to every object).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::bench::{Operator, install_crds, namespace, tempfile_dir};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use nova::alerts::{loaded, prom, rules, targets, validate};
use nova::api::AlertRule;

pub struct Report {
    pub rules: usize,
    pub objects: usize,
    pub nova_seconds: f64,
    pub floor_seconds: f64,
    /// The same objects through the apiserver by a plain client (see [`plain_client`]).
    pub plain_seconds: f64,
    pub readback_ms: f64,
}

impl Report {
    pub fn markdown(&self) -> String {
        format!(
            "| {} rules in {} AlertRules → all loaded | Nova (reported in status) | plain client through Kubernetes | by hand (promtool + reload) | Nova / by hand | Nova / plain client |\n\
             |---|---|---|---|---|---|\n\
             | seconds | {:.2} | {:.2} | {:.2} | {:.2}× | {:.2}× |\n\n\
             Full status read-back of {} rules (rules API read, parsed, matched to {} objects): {:.0} ms\n",
            self.rules,
            self.objects,
            self.nova_seconds,
            self.plain_seconds,
            self.floor_seconds,
            self.nova_seconds / self.floor_seconds,
            self.nova_seconds / self.plain_seconds,
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
    until_rules(p, |n| n >= objects * per).await?;
    let took = started.elapsed().as_secs_f64();
    for f in files {
        std::fs::remove_file(f)?;
    }
    p.reload().await?;
    until_rules(p, |n| n == 0).await?;
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

/// Polls until the number of rules Prometheus holds satisfies `done`.
async fn until_rules(p: &Prometheus, done: impl Fn(usize) -> bool) -> anyhow::Result<()> {
    while !done(p.loaded().await?) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The least any controller that writes through Kubernetes pays, with no logic of its own:
/// the same AlertRules created, each one's rule ConfigMap written (Nova's rendering and
/// labels) as soon as it exists, the same sidecar, and once Prometheus holds every rule one
/// status patch per object. No validation, no finalizer, no read-back.
async fn plain_client(
    client: &Client,
    p: &Prometheus,
    dir: &Path,
    objects: usize,
    per: usize,
) -> anyhow::Result<f64> {
    let ns = namespace(client, "bench-alerts-plain").await?;
    let sync = tokio::spawn(sidecar(client.clone(), ns.clone(), dir.to_path_buf(), p.url.clone()));
    let api: Api<AlertRule> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    stream::iter(0..objects)
        .map(|i| {
            let (api, client, ns) = (api.clone(), client.clone(), ns.clone());
            async move {
                let a = api.create(&PostParams::default(), &alert_rule(i, per)).await?;
                let owner = nova::alerts::owner_key(&ns, &kube::ResourceExt::name_any(&a));
                let yaml = rules::yaml(&owner, &validate::check(&a.spec).groups);
                targets::put_config_map(&client, &a, &Default::default(), yaml).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    until_rules(p, |n| n >= objects * per).await?;
    let status = json!({"status": {"rulesLoaded": per}});
    stream::iter(0..objects)
        .map(|i| {
            let (api, status) = (api.clone(), &status);
            async move {
                let name = format!("team-{i:03}");
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await.map(drop)
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    let took = started.elapsed().as_secs_f64();
    sync.abort();
    Api::<Namespace>::all(client.clone()).delete(&ns, &DeleteParams::background()).await?;
    for f in std::fs::read_dir(dir.join("rules"))? {
        std::fs::remove_file(f?.path())?;
    }
    p.reload().await?;
    until_rules(p, |n| n == 0).await?;
    Ok(took)
}

/// When all rule ConfigMaps existed and when Prometheus held all rules (seconds after start).
struct Seen {
    written: Option<f64>,
    in_prometheus: Option<f64>,
}

/// Watches (not lists: a list of every object each 50 ms would load the apiserver Nova
/// shares) until the `count` AlertRules' `status.rulesLoaded` add up to `rules`.
async fn until_reported(
    api: &Api<AlertRule>,
    cms: &Api<ConfigMap>,
    p: &Prometheus,
    started: Instant,
    (count, rules): (usize, usize),
    operator: &Operator,
    port: u16,
) -> anyhow::Result<Seen> {
    let (objects, w1) = reflector::store();
    let (maps, w2) = reflector::store();
    let mut object_events =
        reflector(w1, watcher(api.clone(), watcher::Config::default()).default_backoff()).boxed();
    let labels = format!("{}=true", targets::RULES_LABEL);
    let mut map_events =
        reflector(w2, watcher(cms.clone(), watcher::Config::default().labels(&labels)).default_backoff())
            .boxed();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut seen = Seen { written: None, in_prometheus: None };
    loop {
        tokio::select! {
            // A watch error (the apiserver's cache still starting) is retried after a backoff.
            _ = object_events.next() => {}
            _ = map_events.next() => {}
            _ = tick.tick() => {
                if seen.in_prometheus.is_none() && p.loaded().await? >= rules {
                    seen.in_prometheus = Some(started.elapsed().as_secs_f64());
                }
                if std::env::var_os("NOVA_BENCH_TRACE").is_some() {
                    trace(started, maps.len(), operator, port).await;
                }
            }
        }
        if seen.written.is_none() && maps.len() >= count {
            seen.written = Some(started.elapsed().as_secs_f64());
        }
        let loaded: i32 = objects.state().iter().filter_map(|a| a.status.as_ref()?.rules_loaded).sum();
        if loaded as usize >= rules {
            return Ok(seen);
        }
    }
}

/// The apiserver's own count of requests, by verb and resource.
async fn apiserver_requests(client: &Client) -> std::collections::BTreeMap<String, f64> {
    let req = http::Request::get("/metrics").body(Vec::new()).expect("a request");
    let text = client.request_text(req).await.unwrap_or_default();
    let mut out = std::collections::BTreeMap::new();
    for l in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let label =
            |k: &str| l.split(&format!("{k}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
        let key = format!("{} {} {}", label("verb"), label("resource"), label("subresource"));
        let n: f64 = l.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *out.entry(key).or_insert(0.0) += n;
    }
    out
}

/// NOVA_BENCH_TRACE: the operator's CPU time and reconciles as the run goes.
async fn trace(started: Instant, maps: usize, operator: &Operator, port: u16) {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", operator.0.id())).unwrap_or_default();
    let f: Vec<f64> =
        stat.rsplit(')').next().unwrap_or("").split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
    let cpu = (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0;
    let reconciles = crate::bench::metric(port, "nova_reconcile_total").await.unwrap_or(0);
    eprintln!(
        "  {:.2} s: operator cpu {cpu:.2} s, {maps} ConfigMaps, {reconciles} reconciles",
        started.elapsed().as_secs_f64()
    );
}

pub async fn run(client: Client, objects: usize, per: usize) -> anyhow::Result<Report> {
    install_crds(&client).await?;
    let dir = tempfile_dir()?;
    let p = Prometheus::start(&dir).await?;
    eprintln!("by hand: {} rules ...", objects * per);
    let floor_seconds = floor(&p, &dir, objects, per).await?;
    eprintln!("plain client through Kubernetes: {objects} AlertRules ...");
    let plain_seconds = plain_client(&client, &p, &dir, objects, per).await?;

    eprintln!("nova: {objects} AlertRules ...");
    let ns = namespace(&client, "bench-alerts").await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let flags = [format!("--prometheus-url={}", p.url)];
    let operator = Operator::start_with(&ns, 16, &dir, port, &flags)?;
    let sync = tokio::spawn(sidecar(client.clone(), ns.clone(), dir.clone(), p.url.clone()));
    let api: Api<AlertRule> = Api::namespaced(client.clone(), &ns);
    let requests_before = apiserver_requests(&client).await;
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
    let seen = until_reported(&api, &cms, &p, started, (objects, objects * per), &operator, port).await?;
    let (written, in_prometheus) = (seen.written, seen.in_prometheus);
    if std::env::var_os("NOVA_BENCH_TRACE").is_some() {
        let after = apiserver_requests(&client).await;
        for (k, n) in &after {
            let d = n - requests_before.get(k).copied().unwrap_or(0.0);
            if d >= 10.0 {
                eprintln!("  apiserver: {k}: {d}");
            }
        }
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
    Ok(Report { rules: objects * per, objects, nova_seconds, floor_seconds, plain_seconds, readback_ms })
}
