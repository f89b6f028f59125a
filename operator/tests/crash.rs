//! kill -9 anywhere: the operator is SIGKILLed at random points while Platforms on Kubernetes,
//! blue-green Platforms and a Platform on a test host roll through new versions, and started
//! again each time. In the end every object converges on the last version, no switch is
//! recorded twice, and nothing is left behind (no stray Deployment, no stray unit on the host).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use nova::api::Platform;
use nova::api::bluegreen::{BlueGreenDeployment, Phase};
use serde_json::json;
use test_cluster::{ControlPlane, Mode, eventually, shared};

mod common;

const ROLLING: usize = 10;
const BLUE_GREEN: usize = 5;
const ROUNDS: u32 = 8;

/// The operator as a process: SIGKILL is what this test is about. Same identity and state
/// database every time, as a restarted pod would have.
fn start(cp: &ControlPlane, ns: &str, state: &std::path::Path) -> Result<Child> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    Ok(Command::new(env!("CARGO_BIN_EXE_nova"))
        .args(["operator", "--lease-namespace", ns, "--watch-namespace", ns, "--identity", "crash"])
        .arg("--state")
        .arg(state.join("state.db"))
        .args(["--http-addr", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", cp.kubeconfig())
        .stdout(Stdio::null())
        .stderr(common::operator_log())
        .spawn()?)
}

/// A small deterministic generator (xorshift), seeded from the clock and printed, so a failing
/// run can be replayed with NOVA_CRASH_SEED.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::env::var("NOVA_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
        });
        eprintln!("kill -9 test: NOVA_CRASH_SEED={seed}");
        Self(seed | 1)
    }

    fn millis(&mut self, max: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(self.0 % max)
    }
}

fn platform(name: &str, version: u32, spec: serde_json::Value) -> serde_json::Value {
    let mut s = json!({"image": format!("shop:v{version}"), "env": [{"name": "VERSION", "value": format!("v{version}")}]});
    for (k, v) in spec.as_object().cloned().unwrap_or_default() {
        s[k] = v;
    }
    json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "Platform", "metadata": {"name": name}, "spec": s})
}

async fn apply_all(platforms: &Api<Platform>, host: &str, version: u32) -> Result<()> {
    let pp = PatchParams::apply("crash-test").force();
    for i in 0..ROLLING {
        let name = format!("r{i}");
        platforms.patch(&name, &pp, &Patch::Apply(platform(&name, version, json!({})))).await?;
    }
    for i in 0..BLUE_GREEN {
        let name = format!("b{i}");
        let bg = json!({"strategy": {"type": "BlueGreen", "blueGreen": {"scaleDownDelaySeconds": 0}}});
        platforms.patch(&name, &pp, &Patch::Apply(platform(&name, version, bg))).await?;
    }
    let on_host = json!({"command": ["/usr/bin/python3", "/opt/app.py"], "domains": ["web.test"],
                         "health": {"path": "/healthz"}, "target": {"hosts": {"names": [host]}}});
    platforms.patch("web", &pp, &Patch::Apply(platform("web", version, on_host))).await?;
    Ok(())
}

// A failure prints NOVA_CRASH_SEED: set it to replay the same kill timings.
#[tokio::test]
async fn killed_at_random_points_everything_converges_once() -> Result<()> {
    let cp = shared(Mode::Simulated).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, "crash").await?;
    let (th, host) = common::app_host(&client, &ns, "crash").await?;
    let state = tempfile::tempdir()?;
    let platforms: Api<Platform> = Api::namespaced(client.clone(), &ns);
    let mut rng = Rng::new();
    let mut op = start(cp, &ns, state.path())?;
    for version in 1..=ROUNDS {
        apply_all(&platforms, &host, version).await?;
        tokio::time::sleep(rng.millis(4000)).await;
        op.kill()?; // SIGKILL
        op.wait()?;
        op = start(cp, &ns, state.path())?;
    }

    // Converged: every Platform Ready on the last version.
    let last = format!("shop:v{ROUNDS}");
    let bgs: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    eventually("every Platform on the last version", Duration::from_secs(240), || async {
        let all = platforms.list(&ListParams::default()).await?.items;
        let ready = all.iter().all(|p| {
            p.spec.image == last
                && p.status.as_ref().is_some_and(|s| {
                    s.observed_generation == p.metadata.generation
                        && s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                })
        });
        // On hosts the rollout's own spec does not change with the Platform's (it follows
        // platformRef): "done" is the host application's revision being the active one.
        let web = all.iter().find(|p| p.metadata.name.as_deref() == Some("web"));
        let want = web.and_then(|p| nova::hostapp::desired::app(p).ok()).map(|a| a.revision);
        let healthy = bgs.list(&ListParams::default()).await?.items.iter().all(|b| {
            let on_web = b.metadata.name.as_deref() == Some("web");
            b.status.as_ref().is_some_and(|s| {
                s.phase == Some(Phase::Healthy)
                    && s.previous_revision.is_none()
                    && (!on_web || s.active_revision == want)
            })
        });
        anyhow::Ok(all.len() == ROLLING + BLUE_GREEN + 1 && ready && healthy)
    })
    .await?;
    // Converged on the host too. Awaited, not read once: right after a kill the active colour
    // can be restarted once more while nginx already points at it (a short 502 window, seen in
    // about one run of ten; see docs/hosts.md "Known issues").
    let http = reqwest::Client::builder().no_proxy().build()?;
    let serves_last = || async {
        let r = http.get(format!("http://{}/", th.ssh_addr.ip())).header("Host", "web.test").send().await?;
        anyhow::Ok(r.text().await?.starts_with(&format!("v{ROUNDS} ")))
    };
    if eventually("the host serves the last version", Duration::from_secs(30), serves_last).await.is_err() {
        let st = bgs.get("web").await?.status;
        let on_host = th.ssh(&format!(
            "for c in blue green; do echo \"$c: $(systemctl is-active nova-{ns}-web-$c) marker=$(cat /var/lib/nova/state/{ns}-web/$c.running 2>/dev/null)\"; done; \
             grep -rh '127.0.0.1:500' /etc/nginx/ 2>/dev/null; true"
        ))?;
        panic!("the host does not serve v{ROUNDS}; rollout {st:#?}; on the host:\n{on_host}");
    }

    // Nothing left behind: one Deployment per Rolling Platform at the last image, two colours
    // per blue-green one (the idle colour kept at zero for rollback), and on the host only the
    // application's units.
    let mut by_image: BTreeMap<String, usize> = BTreeMap::new();
    let listed =
        deployments.list(&ListParams::default().labels("app.kubernetes.io/managed-by=nova")).await?.items;
    for d in &listed {
        let spec = d.spec.clone().unwrap_or_default();
        let image = spec.template.spec.and_then(|s| s.containers.first().and_then(|c| c.image.clone()));
        let running = spec.replicas.unwrap_or(1) > 0;
        *by_image.entry(format!("{} running={running}", image.unwrap_or_default())).or_default() += 1;
    }
    assert_eq!(listed.len(), ROLLING + 2 * BLUE_GREEN, "{by_image:?}");
    assert_eq!(by_image.get(&format!("{last} running=true")), Some(&(ROLLING + BLUE_GREEN)), "{by_image:?}");
    // One colour only when every release before the last was cut before it switched (a first
    // release always starts on blue).
    let units = th.ssh(&format!("ls /etc/systemd/system | grep '^nova-{ns}-' || true"))?;
    let colours = [format!("nova-{ns}-web-blue.service"), format!("nova-{ns}-web-green.service")];
    assert!(
        units.lines().count() >= 1 && units.lines().all(|u| colours.iter().any(|c| c == u)),
        "only web's colours: {units}"
    );

    // No switch recorded twice for the same revision.
    let db = nova::state::State::connect(&state.path().join("state.db").display().to_string()).await?;
    let mut recorded = 0;
    for name in (0..BLUE_GREEN).map(|i| format!("b{i}")).chain(["web".to_owned()]) {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for e in db
            .audit_log("BlueGreenDeployment", &ns, &name)
            .await?
            .into_iter()
            .filter(|e| e.action == "switch")
        {
            let revision = e.detail.rsplit("revision ").next().unwrap_or_default().to_owned();
            *seen.entry(revision).or_default() += 1;
        }
        recorded += seen.len();
        assert!(seen.values().all(|n| *n == 1), "{name}: a switch recorded twice: {seen:?}");
    }
    assert!(recorded > 0, "switches were recorded at all");
    op.kill()?;
    op.wait()?;
    Ok(())
}
