//! A TrainingJob on two test hosts with `nova apply` and no cluster: two workers as systemd
//! units speaking the environment contract (a small trainer in the hosts' Python: it resumes
//! from `NOVA_RESUME_FROM`, rank 0 writes checkpoints and progress lines). One worker killed →
//! both restart together from the checkpoint's step; a hung worker (SIGSTOP) → the progress
//! deadline restarts the gang; rank 0's host pulled out → both workers on the other host,
//! resuming from the checkpoint Nova had copied there; the restarts used up → Failed. Real
//! PyTorch DDP over gloo across two linked hosts.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use test_cluster::testhost::TestHost;

mod common;

const WAIT: Duration = Duration::from_secs(120);

/// The trainer: 20 steps a second; a checkpoint (a JSON file) every 20 steps; each start
/// recorded in /root/started-<restart>-<rank> with the step it resumed from.
const TRAINER: &str = r#"import json, os, time
rank = int(os.environ["RANK"]); ck = os.environ["NOVA_CHECKPOINT_DIR"]
resume = os.environ.get("NOVA_RESUME_FROM", ""); progress = os.environ["NOVA_PROGRESS_FILE"]
step = json.load(open(resume))["step"] if resume else 0
start = {"resume": resume, "step": step, "master": os.environ["MASTER_ADDR"], "world": os.environ["WORLD_SIZE"]}
open("/root/started-%s-%d" % (os.environ["NOVA_RESTART_COUNT"], rank), "w").write(json.dumps(start))
os.makedirs(ck, exist_ok=True)
def line(kind, **kw):
    if rank == 0:
        with open(progress, "a") as f:
            f.write(json.dumps(dict(kind=kind, time=time.time(), step=step, epoch=0, **kw)) + "\n")
while step < int(os.environ.get("STEPS", "100000")):
    time.sleep(0.05); step += 1
    if step % 5 == 0: line("step", loss=1.0 / step)
    if step % 20 == 0 and rank == 0:
        p = "%s/step-%010d.json" % (ck, step)
        json.dump({"step": step}, open(p + ".tmp", "w")); os.rename(p + ".tmp", p)
        line("checkpoint", checkpoint=p)
"#;

fn host_doc(th: &TestHost) -> Value {
    host_named(th, &th.name)
}

/// A Host object for the test host, named `name` (its hostname stays the test host's).
fn host_named(th: &TestHost, name: &str) -> Value {
    json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "Host", "metadata": {"name": name},
           "spec": {"address": th.ssh_addr.ip().to_string(), "hostKey": th.host_key,
                    "sshKeySecretRef": {"name": "unused-without-a-cluster", "key": "k"}}})
}

fn job_doc(a: &str, b: &str) -> Value {
    json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "TrainingJob",
           "metadata": {"name": "gang", "namespace": "default"},
           "spec": {"target": {"hosts": {"names": [a, b]}}, "workers": 2, "gpusPerWorker": 0,
                    "command": ["/usr/bin/python3", "/opt/trainer.py"],
                    "runPolicy": {"backoffLimit": 3, "progressDeadlineSeconds": 10}}})
}

async fn nova(args: &[&str], dir: &Path) -> Result<(bool, String)> {
    common::nova_local(args, dir).await
}

/// The status `nova apply` stored for the job `gang`.
async fn status(dir: &Path) -> Result<Value> {
    status_of(dir, "gang").await
}

async fn status_of(dir: &Path, job: &str) -> Result<Value> {
    let (ok, out) = nova(&["status", job], dir).await?;
    anyhow::ensure!(ok, "{out}");
    let yaml = out.split_once('\n').context("a header line")?.1;
    Ok(serde_yaml::from_str(yaml)?)
}

/// Applies the file round after round until the stored status of `gang` satisfies `done`.
async fn until(dir: &Path, args: &[&str], what: &str, done: impl Fn(&Value) -> bool) -> Result<Value> {
    until_named(dir, args, "gang", what, done).await
}

async fn until_named(
    dir: &Path,
    args: &[&str],
    job: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, out) = nova(args, dir).await?;
        let st = status_of(dir, job).await.with_context(|| format!("after: {out}"))?;
        if done(&st) {
            return Ok(st);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {WAIT:?}; status {st:#}\nlast apply: {out}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn running(st: &Value, attempt: i64, min_step: i64) -> bool {
    st["phase"] == "Running" && st["attempt"] == attempt && st["step"].as_i64().unwrap_or(0) >= min_step
}

/// What worker `rank` recorded when it started for restart `restart`.
fn started(th: &TestHost, restart: i64, rank: u32) -> Result<Value> {
    let text = std::fs::read_to_string(th.root().join(format!("root/started-{restart}-{rank}")))?;
    Ok(serde_json::from_str(&text)?)
}

fn units(th: &TestHost) -> String {
    th.ssh("ls /etc/systemd/system | grep nova-train || true").unwrap_or_default()
}

#[tokio::test]
async fn the_gang_restarts_together_from_its_checkpoint_and_moves_off_a_dead_host() -> Result<()> {
    let a = tokio::task::spawn_blocking(|| TestHost::start("tja")).await??;
    let b = tokio::task::spawn_blocking(|| TestHost::start("tjb")).await??;
    let mut a = Some(a);
    let ha = a.as_ref().context("host a")?;
    let dir = tempfile::tempdir()?;
    let key_path = dir.path().join("id");
    std::fs::write(&key_path, &ha.client_key)?;
    for th in [ha, &b] {
        std::fs::create_dir_all(th.root().join("opt"))?;
        std::fs::write(th.root().join("opt/trainer.py"), TRAINER)?;
        // One key for both hosts: Nova logs in to each with the same identity.
        th.ssh(&format!("echo {:?} >> /root/.ssh/authorized_keys", ha.client_public_key.trim()))?;
    }
    let key = key_path.to_str().context("path")?;
    let file = dir.path().join("job.yaml");
    let docs = [host_doc(ha), host_doc(&b), job_doc(&ha.name, &b.name)];
    let text: Vec<String> = docs.iter().map(serde_yaml::to_string).collect::<Result<_, _>>()?;
    std::fs::write(&file, text.join("---\n"))?;
    let file = file.to_str().context("path")?;
    let apply = ["apply", "-f", file, "-i", key];
    let id = "nova-train-default--gang";

    // Attempt 1: worker 0 on a, worker 1 on b, with rank 0's address; checkpoints spread to b.
    let st = until(dir.path(), &apply, "attempt 1 running past step 60", |s| running(s, 1, 60)).await?;
    assert_eq!(st["workers"], json!([{"index": 0, "host": ha.name}, {"index": 1, "host": b.name}]));
    let ck = st["lastCheckpoint"].clone();
    assert_eq!(ck["hosts"], json!([ha.name, b.name]), "{st:#}");
    let ck_path = ck["path"].as_str().context("a checkpoint path")?.to_owned();
    assert!(b.ssh(&format!("cat {ck_path}"))?.contains("\"step\""), "the checkpoint was not copied to b");
    let w1 = started(&b, 0, 1)?;
    assert_eq!(
        (w1["master"].as_str(), w1["world"].as_str()),
        (Some(ha.ssh_addr.ip().to_string().as_str()), Some("2"))
    );

    // One worker killed: both restart, from the checkpoint's step, not from 0.
    b.ssh(&format!("systemctl kill -s KILL {id}-a1-w1.service"))?;
    let st = until(dir.path(), &apply, "the gang restarted as attempt 2", |s| running(s, 2, 1)).await?;
    assert_eq!(st["restarts"], 1);
    let (r0, r1) = (started(ha, 1, 0)?, started(&b, 1, 1)?);
    assert!(r0["step"].as_i64() >= Some(60) && r0["step"] == r1["step"], "{r0} {r1}");
    assert!(!units(ha).contains("-a1-") && !units(&b).contains("-a1-"), "attempt 1 left units");

    // A hung worker: no progress for progressDeadlineSeconds → the gang restarts.
    ha.ssh(&format!("systemctl kill -s STOP {id}-a2-w0.service"))?;
    let st = until(dir.path(), &apply, "the hung gang restarted as attempt 3", |s| running(s, 3, 1)).await?;
    assert_eq!(st["restarts"], 2);
    let ready = st["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned());
    assert!(started(ha, 2, 0)?["step"].as_i64() >= r0["step"].as_i64(), "{ready:?}");

    // Rank 0's host pulled out: both workers go to b and resume from the copy there.
    let step_before = until(dir.path(), &apply, "a checkpoint of attempt 3", |s| {
        running(s, 3, 1)
            && s["lastCheckpoint"]["hosts"] == json!([ha.name, b.name])
            && s["lastCheckpoint"]["step"].as_i64() > r0["step"].as_i64()
    })
    .await?["lastCheckpoint"]["step"]
        .as_i64();
    let a_name = ha.name.clone();
    if let Some(mut h) = a.take() {
        tokio::task::spawn_blocking(move || h.kill()).await?;
    }
    let st = until(dir.path(), &apply, "attempt 4 on b alone", |s| running(s, 4, 1)).await?;
    assert_eq!(st["workers"], json!([{"index": 0, "host": b.name}, {"index": 1, "host": b.name}]));
    let moved = started(&b, 3, 0)?;
    assert!(moved["step"].as_i64() >= step_before, "rank 0 did not resume on b: {moved}");
    assert_eq!(moved["master"].as_str(), Some(b.ssh_addr.ip().to_string().as_str()));

    // backoffLimit 3 used up: the next failure fails the job, and its workers are stopped.
    b.ssh(&format!("systemctl kill -s KILL {id}-a4-w1.service"))?;
    let st = until(dir.path(), &apply, "Failed", |s| s["phase"] == "Failed").await?;
    let msg = st["conditions"].to_string();
    assert!(msg.contains("backoffLimit (3) restarts used up"), "{msg}");
    assert!(!units(&b).contains(id), "{}", units(&b));

    // Deleting needs every selected host: a is gone, so the job is kept and the reason said.
    let (ok, out) = nova(&["delete", "-f", file, "-i", key], dir.path()).await?;
    assert!(!ok && out.contains(&a_name) && out.contains("run it again"), "{out}");

    // --supervise: rounds until the job finished; a short one on b succeeds.
    let mut short = job_doc(&b.name, &b.name);
    short["metadata"]["name"] = json!("short");
    short["spec"]["env"] = json!({"STEPS": "30"});
    let short_file = dir.path().join("short.yaml");
    std::fs::write(
        &short_file,
        [host_doc(&b), short].map(|d| serde_yaml::to_string(&d).unwrap()).join("---\n"),
    )?;
    let args =
        ["apply", "-f", short_file.to_str().context("path")?, "-i", key, "--supervise", "--every", "1"];
    let (ok, out) = tokio::time::timeout(WAIT, nova(&args, dir.path())).await??;
    assert!(ok && out.contains("trainingjob/short: Succeeded"), "{out}");
    Ok(())
}

/// The operator runs a job on a Host: its gang as units, status as `nova apply` keeps it; a
/// killed worker restarts the gang from the checkpoint; deleting the job takes the units off
/// the host (the finalizer).
#[tokio::test]
async fn the_operator_runs_the_gang_on_a_host_and_its_finalizer_removes_the_units() -> Result<()> {
    use kube::Api;
    use kube::api::{DeleteParams, PostParams};
    use nova::api::TrainingJob;

    let cp = test_cluster::shared(test_cluster::Mode::Simulated).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, "train-hosts").await?;
    let op = common::Operator::start(client.clone(), &ns).await?;
    let (th, host) = common::app_host(&client, &ns, "tjop").await?;
    std::fs::write(th.root().join("opt/trainer.py"), TRAINER)?;
    let jobs: Api<TrainingJob> = Api::namespaced(client.clone(), &ns);
    let mut doc = job_doc(&host, &host);
    doc["metadata"] = json!({"name": "gang"});
    jobs.create(&PostParams::default(), &serde_json::from_value(doc)?).await?;
    let status = |want: i32| {
        let jobs = jobs.clone();
        async move {
            test_cluster::eventually(&format!("attempt {want} running"), WAIT, || async {
                let st = jobs.get("gang").await?.status.unwrap_or_default();
                anyhow::Ok(
                    st.attempt == Some(want)
                        && st.step.unwrap_or(0) > 40
                        && st.phase.map(|p| format!("{p:?}")) == Some("Running".into()),
                )
            })
            .await?;
            anyhow::Ok(jobs.get("gang").await?.status.unwrap_or_default())
        }
    };
    let st = status(1).await?;
    assert_eq!(st.workers.iter().filter(|w| w.host.as_deref() == Some(host.as_str())).count(), 2);
    let unit = format!("nova-train-{ns}--gang-a1-w1.service");
    th.ssh(&format!("systemctl kill -s KILL {unit}"))?;
    let st = status(2).await?;
    assert_eq!(st.restarts, Some(1));
    assert!(started(&th, 1, 0)?["step"].as_i64() >= Some(20), "not resumed from a checkpoint");

    jobs.delete("gang", &DeleteParams::default()).await?;
    test_cluster::eventually("the job gone", WAIT, || async {
        anyhow::Ok(jobs.get_opt("gang").await?.is_none())
    })
    .await?;
    assert!(!units(&th).contains("nova-train-"), "the finalizer left {}", units(&th));
    op.stop().await
}

/// The thermal guard on a host, through `nova apply` rounds. The host has no GPU: the reading
/// is injected at the narrowest seam, an `nvidia-smi` on the host that prints what the test
/// wrote (the query Nova asks, in nvidia-smi's CSV, and its temperature report). Too hot →
/// every worker's processes are stopped (state T) and the job is Paused; every GPU cool again →
/// they run on; a GPU whose own slowdown threshold is low pauses the job below pauseAboveCelsius.
#[tokio::test]
async fn a_hot_gpu_pauses_the_workers_and_a_cool_one_resumes_them() -> Result<()> {
    let th = tokio::task::spawn_blocking(|| TestHost::start("tjg")).await??;
    let dir = tempfile::tempdir()?;
    let key_path = dir.path().join("id");
    std::fs::write(&key_path, &th.client_key)?;
    let key = key_path.to_str().context("path")?;
    std::fs::create_dir_all(th.root().join("opt"))?;
    std::fs::write(th.root().join("opt/trainer.py"), TRAINER)?;
    let smi = th.root().join("usr/local/bin/nvidia-smi");
    // `-q` is the temperature report (the slowdown thresholds); anything else the CSV query.
    std::fs::write(
        &smi,
        "#!/bin/sh\nif [ \"$1\" = -q ]; then cat /root/temps.txt; else cat /root/gpus.csv; fi\n",
    )?;
    let slowdown = |t: &str| {
        let gpu =
            |bus: &str| format!("GPU 0000000{bus}:00.0\n    Temperature\n        GPU Slowdown Temp : {t}\n");
        std::fs::write(
            th.root().join("root/temps.txt"),
            format!("Attached GPUs : 2\n{}{}", gpu("1"), gpu("2")),
        )
    };
    slowdown("N/A")?;
    th.ssh("chmod 755 /usr/local/bin/nvidia-smi")?;
    let gpus = |a: i32, b: i32| {
        std::fs::write(th.root().join("root/gpus.csv"), format!("0, {a}, 90, 1000\n1, {b}, 80, 2000\n"))
    };
    gpus(50, 60)?;
    let mut job = job_doc(&th.name, &th.name);
    job["metadata"]["name"] = json!("gang");
    job["spec"]["gpusPerWorker"] = json!(1);
    job["spec"]["thermal"] = json!({"pauseAboveCelsius": 85, "resumeBelowCelsius": 70});
    let file = dir.path().join("job.yaml");
    std::fs::write(&file, [host_doc(&th), job].map(|d| serde_yaml::to_string(&d).unwrap()).join("---\n"))?;
    let apply = ["apply", "-f", file.to_str().context("path")?, "-i", key];

    let st = until(dir.path(), &apply, "running with readings", |s| {
        running(s, 1, 20) && s["workers"][1]["gpuTemperatureCelsius"] == 60
    })
    .await?;
    assert_eq!(st["workers"][0]["gpus"], "0");
    assert_eq!(
        (&st["workers"][1]["gpus"], &st["workers"][1]["gpuMemoryUsedMib"]),
        (&json!("1"), &json!(2000))
    );
    let state = |w: u32| -> Result<String> {
        let unit = format!("nova-train-default--gang-a1-w{w}.service");
        Ok(th.ssh(&format!("grep State: /proc/$(systemctl show -p MainPID --value {unit})/status"))?)
    };

    gpus(50, 90)?;
    let st = until(dir.path(), &apply, "paused", |s| s["phase"] == "Paused").await?;
    let msg = st["conditions"].to_string();
    assert!(msg.contains("ThermalPause") && msg.contains("worker 1 GPU 1 is at 90"), "{msg}");
    assert!(state(0)?.contains("stopped") && state(1)?.contains("stopped"), "{} {}", state(0)?, state(1)?);

    // 75 °C: below the pause threshold but not below the resume one: still paused.
    gpus(50, 75)?;
    let (_, out) = nova(&apply, dir.path()).await?;
    assert_eq!(status(dir.path()).await?["phase"], "Paused", "{out}");
    gpus(50, 65)?;
    let paused_at = status(dir.path()).await?["step"].as_i64().unwrap_or(0);
    let st = until(dir.path(), &apply, "resumed and stepping", |s| running(s, 1, paused_at + 10)).await?;
    assert_eq!(st["attempt"], 1, "a pause is not a restart");
    assert!(!state(0)?.contains("stopped") && !state(1)?.contains("stopped"));

    // A GPU that slows itself down at 83 °C: 80 °C is above 83 − 5, under pauseAboveCelsius.
    slowdown("83 C")?;
    gpus(80, 50)?;
    let st = until(dir.path(), &apply, "paused below its slowdown", |s| s["phase"] == "Paused").await?;
    let msg = st["conditions"].to_string();
    assert!(msg.contains("worker 0 GPU 0 is at 80 °C, above 78 °C"), "{msg}");
    Ok(())
}

/// The built-in trainer on a host: Nova copies its own binary there and runs `nova train` as
/// the worker's unit. A host of another architecture (a `uname` stand-in says aarch64) is
/// refused naming `spec.target.hosts`; the real one trains to Succeeded with its checkpoints
/// on the host.
#[tokio::test]
async fn the_built_in_trainer_runs_on_a_host_from_novas_own_binary() -> Result<()> {
    let th = tokio::task::spawn_blocking(|| TestHost::start("tjt")).await??;
    let dir = tempfile::tempdir()?;
    let key_path = dir.path().join("id");
    std::fs::write(&key_path, &th.client_key)?;
    let job = json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "TrainingJob",
        "metadata": {"name": "builtin", "namespace": "default"},
        "spec": {"target": {"hosts": {"names": [th.name]}}, "workers": 1, "gpusPerWorker": 0,
                 "trainer": {"model": "linear", "dataset": "synthetic-classification", "epochs": 2, "batchSize": 64},
                 "checkpoint": {"everySteps": 20, "keepLast": 2}}});
    let file = dir.path().join("job.yaml");
    std::fs::write(&file, [host_doc(&th), job].map(|d| serde_yaml::to_string(&d).unwrap()).join("---\n"))?;
    let args = ["apply", "-f", file.to_str().context("path")?, "-i", key_path.to_str().context("path")?];

    th.ssh("printf '#!/bin/sh\\necho aarch64\\n' > /usr/local/bin/uname && chmod 755 /usr/local/bin/uname")?;
    let (ok, out) = nova(&args, dir.path()).await?;
    assert!(!ok && out.contains("spec.target.hosts: the host is aarch64"), "{out}");
    th.ssh("rm /usr/local/bin/uname")?;

    let supervise = [&args[..], &["--supervise", "--every", "1"]].concat();
    let (ok, out) = tokio::time::timeout(WAIT, nova(&supervise, dir.path())).await??;
    assert!(ok && out.contains("trainingjob/builtin: Succeeded"), "{out}");
    let st = status_of(dir.path(), "builtin").await?;
    assert!(st["step"].as_i64() >= Some(100), "{st:#}");
    let ck = st["lastCheckpoint"]["path"].as_str().context("a checkpoint")?.to_owned();
    assert!(ck.ends_with(".safetensors"), "{ck}");
    th.ssh(&format!("test -s {ck} && test -x /usr/local/lib/nova/nova"))?;
    Ok(())
}

/// Real PyTorch DDP over gloo, the gang's two workers on two test hosts joined as on a LAN
/// (PyTorch from PyPI, installed by scripts/test outside git and bound read-only into the
/// hosts): the gradients are all-reduced across the hosts (both ranks hold the same weights at
/// every checkpoint step), and a killed worker restarts the gang, both ranks resuming from rank
/// 0's torch checkpoint at its step — rank 1 from the copy Nova carried to its host. Through
/// `torchrun`, whose c10d rendezvous numbers the nodes by hostname, not by `PET_NODE_RANK`: the
/// hosts are named so that torch's rank 0 runs on Nova's worker 1, and the trainer writes
/// progress and checkpoints on Nova's worker 0 (`PET_NODE_RANK` 0), as docs/training.md says.
const DDP: &str = r#"import hashlib, json, os, time
import torch, torch.distributed as dist
dist.init_process_group("gloo")
rank = dist.get_rank(); torch.manual_seed(0)
node = int(os.environ["PET_NODE_RANK"]); lead = node == 0 and os.environ["LOCAL_RANK"] == "0"
model = torch.nn.Linear(16, 1); ddp = torch.nn.parallel.DistributedDataParallel(model)
opt = torch.optim.AdamW(ddp.parameters(), lr=0.01)
ck, resume = os.environ["NOVA_CHECKPOINT_DIR"], os.environ.get("NOVA_RESUME_FROM", "")
step = 0
if resume:
    s = torch.load(resume); model.load_state_dict(s["model"]); opt.load_state_dict(s["opt"]); step = s["step"]
open("/root/started-%s-%d" % (os.environ["NOVA_RESTART_COUNT"], node), "w").write(json.dumps({"step": step, "rank": rank}))
os.makedirs(ck, exist_ok=True)
g = torch.Generator().manual_seed(1000 * rank + step)
def line(kind, **kw):
    with open(os.environ["NOVA_PROGRESS_FILE"], "a") as f:
        f.write(json.dumps(dict(kind=kind, time=time.time(), step=step, epoch=0, **kw)) + "\n")
while True:
    x = torch.randn(32, 16, generator=g); y = x.sum(1, keepdim=True)
    loss = ((ddp(x) - y) ** 2).mean(); opt.zero_grad(); loss.backward(); opt.step(); step += 1
    time.sleep(0.05)
    if step % 20 == 0:
        digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
        open("/root/weights-%d-%d" % (node, step), "w").write(digest)
    if lead and step % 5 == 0: line("step", loss=loss.item())
    if lead and step % 20 == 0:
        p = "%s/step-%010d.pt" % (ck, step)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, p + ".tmp"); os.rename(p + ".tmp", p)
        line("checkpoint", checkpoint=p)
"#;

#[tokio::test]
async fn pytorch_ddp_over_gloo_restarts_as_a_gang_from_its_checkpoint() -> Result<()> {
    let torch = std::env::var("NOVA_TORCH_DIR").context(
        "NOVA_TORCH_DIR: PyTorch for Python 3.11 installed with pip --target (scripts/test does it)",
    )?;
    let boot = |name: &'static str| {
        let torch = torch.clone();
        tokio::task::spawn_blocking(move || TestHost::start_with(name, &[(Path::new(&torch), "/opt/torch")]))
    };
    // Worker 0 goes to Host gpu-1, hostname `tjn`; torchrun's rank 0 to `tjm`, Nova's worker 1.
    let (a, b) = (boot("tjn").await??, boot("tjm").await??);
    a.link(&b)?;
    let dir = tempfile::tempdir()?;
    let key_path = dir.path().join("id");
    std::fs::write(&key_path, &a.client_key)?;
    let key = key_path.to_str().context("path")?;
    for th in [&a, &b] {
        std::fs::write(th.root().join("root/ddp.py"), DDP)?;
        // One key for both hosts: Nova logs in to each with the same identity.
        th.ssh(&format!("echo {:?} >> /root/.ssh/authorized_keys", a.client_public_key.trim()))?;
    }
    let mut job = job_doc("gpu-1", "gpu-2");
    job["metadata"]["name"] = json!("ddp");
    job["spec"]["command"] = json!(["/usr/bin/python3", "-m", "torch.distributed.run", "/root/ddp.py"]);
    job["spec"]["env"] = json!({"PYTHONPATH": "/opt/torch", "OMP_NUM_THREADS": "1"});
    job["spec"]["runPolicy"] = json!({"backoffLimit": 2});
    let file = dir.path().join("job.yaml");
    let docs =
        [host_named(&a, "gpu-1"), host_named(&b, "gpu-2"), job].map(|d| serde_yaml::to_string(&d).unwrap());
    std::fs::write(&file, docs.join("---\n"))?;
    let apply = ["apply", "-f", file.to_str().context("path")?, "-i", key];
    let stat = || async { nova(&["status", "ddp"], dir.path()).await };
    let journal = |th: &TestHost| th.ssh("journalctl -u 'nova-train-*' --no-pager | tail -n 20");
    let st = until_named(dir.path(), &apply, "ddp", "DDP running past a checkpoint", |s| {
        running(s, 1, 45) && s["lastCheckpoint"]["step"].as_i64() >= Some(40)
    })
    .await
    .with_context(|| format!("{:?}\n{:?}", journal(&a), journal(&b)))?;
    let hosts: Vec<&Value> = (0..2).map(|i| &st["workers"][i]["host"]).collect();
    assert_eq!(hosts, [&json!("gpu-1"), &json!("gpu-2")], "one worker per host: {st:#}");
    let same = |step: i64| -> Result<bool> {
        let w =
            |th: &TestHost, r| std::fs::read_to_string(th.root().join(format!("root/weights-{r}-{step}")));
        Ok(w(&a, 0)? == w(&b, 1)?)
    };
    assert!(same(20)? && same(40)?, "the ranks' weights differ: no all-reduce ({st:#})");

    b.ssh("systemctl kill -s KILL nova-train-default--ddp-a1-w1.service")?;
    let st = until_named(dir.path(), &apply, "ddp", "the DDP gang restarted", |s| running(s, 2, 1)).await?;
    assert_eq!(st["restarts"], 1, "{:?}", stat().await?);
    let ck = st["lastCheckpoint"]["step"].as_i64().unwrap_or(0);
    // Steps past the checkpoint are the new gang's (torch takes seconds to import).
    until_named(dir.path(), &apply, "ddp", "stepping after the resume", |s| running(s, 2, ck + 25)).await?;
    let (r0, r1) = (started(&a, 1, 0)?, started(&b, 1, 1)?);
    assert!(r0["step"].as_i64() >= Some(40) && r0["step"] == r1["step"], "{r0} {r1}");
    assert_eq!((&r0["rank"], &r1["rank"]), (&json!(1), &json!(0)), "torchrun numbered the nodes otherwise");
    let resumed = r0["step"].as_i64().unwrap_or(0);
    assert!(same(resumed + 20)?, "the ranks' weights differ after the resume");
    Ok(())
}
