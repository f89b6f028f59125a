//! The container image, as `scripts/image` builds it without any registry (the binary under
//! test, its libraries, the Dockerfile's configuration), runs the operator: imported into Docker
//! on a test host and started with a read-only root as the image's non-root user, it reconciles
//! a Platform on the simulated cluster; and the Job of a Backup of a PersistentVolumeClaim,
//! run as its pod spec says, backs the claim up.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use kube::Api;
use kube::api::PostParams;
use kube::runtime::wait::await_condition;
use nova::api::Platform;
use serde_json::{Value, json};
use test_cluster::testhost::TestHost;
use test_cluster::{Mode, eventually, shared};

mod common;

/// Kills the SSH forward when the test ends, however it ends.
struct Forward(Child);

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Makes `port` on the host's loopback reach `port` on this process's loopback (the
/// apiserver's), over an SSH remote forward, so the kubeconfig and its certificate work there
/// unchanged.
fn forward(th: &TestHost, port: u16, dir: &std::path::Path) -> Result<Forward> {
    let known = dir.join("known_hosts");
    let (ip, port_22) = (th.ssh_addr.ip(), th.ssh_addr.port());
    let name = if port_22 == 22 { ip.to_string() } else { format!("[{ip}]:{port_22}") };
    std::fs::write(&known, format!("{name} {}\n", th.host_key))?;
    let child = Command::new("ssh")
        .args(["-N", "-o", "ExitOnForwardFailure=yes", "-o", "BatchMode=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .arg("-i")
        .arg(th.client_key_path())
        .args(["-p", &th.ssh_addr.port().to_string(), "-R", &format!("127.0.0.1:{port}:127.0.0.1:{port}")])
        .arg(format!("root@{}", th.ssh_addr.ip()))
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(dir.join("ssh.log"))?)
        .spawn()?;
    Ok(Forward(child))
}

/// Builds the image's root file system into the host and imports it there as `nova:test`;
/// returns the image's configuration as Docker reports it.
fn import_image(th: &TestHost) -> Result<Value> {
    std::fs::create_dir_all(th.root().join("opt"))?;
    let tar = th.root().join("opt/nova-image.tar");
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/image"))
        .arg(env!("CARGO_BIN_EXE_nova"))
        .env("NOVA_IMAGE_TAR", &tar)
        .output()?;
    ensure!(out.status.success(), "scripts/image: {}", String::from_utf8_lossy(&out.stderr));
    let changes = std::fs::read_to_string(th.root().join("opt/nova-image.tar.changes"))?;
    ensure!(!changes.contains('\''), "a Dockerfile line with a quote: {changes}");
    let flags: String = changes.lines().map(|l| format!(" -c '{l}'")).collect();
    th.ssh(&format!(
        "docker import{flags} /opt/nova-image.tar nova:test >/dev/null && rm /opt/nova-image.tar"
    ))?;
    Ok(serde_json::from_str(&th.ssh("docker image inspect nova:test --format '{{json .Config}}'")?)?)
}

#[tokio::test]
async fn the_image_runs_the_operator_read_only_and_non_root() -> Result<()> {
    let cp = shared(Mode::Simulated).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, "image").await?;
    let th = tokio::task::spawn_blocking(|| TestHost::start("image")).await??;
    // Docker from the hosts' apt repository (no registry is reachable, none is needed).
    th.ssh("apt-get -qq update && DEBIAN_FRONTEND=noninteractive apt-get -qq install -y docker.io >/dev/null && systemctl start docker")?;
    let config = import_image(&th)?;
    assert_eq!(config["User"], json!("65532:65532"), "{config}");
    assert_eq!(config["Entrypoint"], json!(["/usr/local/bin/nova"]), "{config}");
    assert_eq!(config["Cmd"], json!(["operator"]), "{config}");
    assert_eq!(config["WorkingDir"], json!("/var/lib/nova"), "{config}");

    let dir = tempfile::tempdir()?;
    let port: u16 = cp.server().rsplit(':').next().context("apiserver port")?.parse()?;
    let _forward = forward(&th, port, dir.path())?;
    let check = format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}'");
    eventually("the forward to the apiserver", Duration::from_secs(30), || async {
        Ok::<bool, std::convert::Infallible>(th.ssh(&check).is_ok())
    })
    .await
    .with_context(|| std::fs::read_to_string(dir.path().join("ssh.log")).unwrap_or_default())?;
    let kubeconfig = cp.kubectl().args(["config", "view", "--raw", "--flatten", "--minify"]).output()?;
    ensure!(kubeconfig.status.success(), "kubectl config view");
    std::fs::write(th.root().join("opt/kubeconfig"), &kubeconfig.stdout)?;
    th.ssh("chmod 0644 /opt/kubeconfig")?;
    th.ssh(&format!(
        "docker run -d --name nova --network host --read-only --tmpfs /tmp \
         -v /opt/kubeconfig:/etc/nova/kubeconfig:ro -e KUBECONFIG=/etc/nova/kubeconfig nova:test \
         operator --watch-namespace {ns} --lease-namespace {ns} --trusted-namespaces {ns} \
         --http-addr 127.0.0.1:18080 >/dev/null"
    ))?;

    let platforms: Api<Platform> = Api::namespaced(client.clone(), &ns);
    let p: Platform =
        serde_json::from_value(json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "Platform",
        "metadata": {"name": "web"}, "spec": {"image": "app:1", "replicas": 1, "port": 8080}}))?;
    platforms.create(&PostParams::default(), &p).await?;
    let ready = |p: Option<&Platform>| {
        p.and_then(|p| p.status.as_ref())
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    if tokio::time::timeout(Duration::from_secs(120), await_condition(platforms.clone(), "web", ready))
        .await
        .is_err()
    {
        let logs = th.ssh("docker logs --tail 40 nova 2>&1").unwrap_or_default();
        anyhow::bail!("the operator in the image did not make the Platform ready; its log:\n{logs}");
    }
    // It ran as the image's user, on a read-only root, its state in the image's volume.
    let inspect = th.ssh("docker inspect nova --format '{{.HostConfig.ReadonlyRootfs}} {{.Config.User}} {{range .Mounts}}{{.Destination}} {{end}}'")?;
    let words: Vec<&str> = inspect.split_whitespace().collect();
    assert_eq!(&words[..2], ["true", "65532:65532"], "{inspect}");
    assert!(words.contains(&"/var/lib/nova"), "{inspect}");
    let top = th.ssh("docker top nova -o pid,uid,args")?;
    let uids: Vec<&str> = top.lines().skip(1).filter_map(|l| l.split_whitespace().nth(1)).collect();
    assert!(!uids.is_empty() && uids.iter().all(|u| *u == "65532"), "{top}");
    th.ssh("docker rm -f nova >/dev/null")?;
    backup_job_runs_in_the_image(&th)
}

/// The Job of a Backup of a PersistentVolumeClaim, run by Docker exactly as its pod spec says
/// (arguments, user, capabilities, read-only root and claim, the config Secret as a file, the
/// termination message file): it backs up files only root may read into the destination
/// claim, drills the artifact, and reports it in the termination message the operator reads.
/// (The simulated cluster's pods run no container; this is where the container runs.)
fn backup_job_runs_in_the_image(th: &TestHost) -> Result<()> {
    use nova::api::backup::Backup;
    use nova::backup::jobs::Report;
    let b: Backup = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Backup",
        "metadata": {"name": "data", "namespace": "shop", "uid": "u-1"},
        "spec": {"schedule": "@daily", "source": {"volume": {"pvc": "shop-data"}},
                 "destination": {"pvc": {"pvc": "vault"}},
                 "integrity": {"hmacKeySecretRef": {"name": "k", "key": "hmac"}},
                 "verify": {"restoreTest": true}}}))?;
    let config = nova::backup::hostcli::config(&b, None, |_, _, _| Ok(b"image-test-hmac".to_vec()))?;
    th.ssh(
        "set -e; mkdir -p /opt/bk/config /opt/bk/data/private /opt/bk/vault; echo public > /opt/bk/data/index.html; \
         echo secret > /opt/bk/data/private/key; chown -R 1234:1234 /opt/bk/data; chmod 700 /opt/bk/data/private; \
         chmod 600 /opt/bk/data/private/key; : > /opt/bk/termination-log",
    )?;
    std::fs::write(th.root().join("opt/bk/config/backup.yaml"), config)?;
    let out = th.ssh(&docker_run(&b, &nova::backup::volume::Run::backup(&b.spec))?)?;
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(th.root().join("opt/bk/termination-log"))?)
            .with_context(|| out.clone())?;
    let st = report.status.clone().with_context(|| format!("no status in {report:?}; the run: {out}"))?;
    let last = st.last_backup.context("an artifact")?;
    ensure!(last.verified, "not verified: {report:?} {out}", report = report.lines);
    let stored = th.ssh("ls /opt/bk/vault/shop/data")?;
    ensure!(stored.contains(&format!("{}.zst", last.id)) && stored.contains(".verified.json"), "{stored}");
    let manifest =
        std::fs::read_to_string(th.root().join(format!("opt/bk/vault/shop/data/{}.manifest.json", last.id)))?;
    ensure!(manifest.contains("files /data on PVC shop-data"), "{manifest}");
    ensure!(report.lines.iter().any(|l| l.contains("extracted 2 files")), "{:?}", report.lines);

    // A Restore's Job: the newest verified artifact into the claim, below `restored`, with
    // owners and modes back.
    th.ssh(": > /opt/bk/termination-log")?;
    let run = nova::backup::volume::Run::restore(None, "shop-data", Some("restored"), false)
        .map_err(anyhow::Error::msg)?;
    let out = th.ssh(&docker_run(&b, &run)?)?;
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(th.root().join("opt/bk/termination-log"))?)
            .with_context(|| out.clone())?;
    let restored = report.restored.with_context(|| format!("no restore reported: {out}"))?;
    ensure!(restored.id == last.id, "{restored:?}");
    let key = th.ssh("stat -c '%a %u' /opt/bk/data/restored/data/private/key && cat /opt/bk/data/restored/data/private/key")?;
    ensure!(key.trim() == "600 1234\nsecret", "{key} {out}");
    Ok(())
}

/// `docker run` of the Job Nova makes for `run` of Backup `b`, exactly as its pod spec says;
/// the command prints the container's exit status and output.
fn docker_run(b: &nova::api::backup::Backup, run: &nova::backup::volume::Run) -> Result<String> {
    let job = serde_json::to_value(nova::backup::volume::job(b, "data-1", "nova:test", run))?;
    let pod = &job["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    ensure!(
        sc["readOnlyRootFilesystem"] == json!(true) && sc["capabilities"]["drop"] == json!(["ALL"]),
        "{sc}"
    );
    let mut cmd = format!("docker run --rm --read-only --user {} --cap-drop ALL", sc["runAsUser"]);
    for cap in sc["capabilities"]["add"].as_array().context("caps")? {
        cmd += &format!(" --cap-add {}", cap.as_str().context("cap")?);
    }
    cmd += " --security-opt no-new-privileges -v /opt/bk/termination-log:/dev/termination-log";
    let host_dir = |volume: &str| match volume {
        "config" => "/opt/bk/config",
        "source" => "/opt/bk/data",
        "destination" => "/opt/bk/vault",
        _ => "",
    };
    for m in c["volumeMounts"].as_array().context("mounts")? {
        let (name, at) =
            (m["name"].as_str().unwrap_or_default(), m["mountPath"].as_str().unwrap_or_default());
        if name == "tmp" {
            cmd += &format!(" --tmpfs {at}");
            continue;
        }
        let ro = if m["readOnly"] == json!(true) { ":ro" } else { "" };
        cmd += &format!(" -v {}:{at}{ro}", host_dir(name));
    }
    cmd += " nova:test";
    for a in c["args"].as_array().context("args")? {
        cmd += &format!(" {}", a.as_str().context("arg")?);
    }
    Ok(format!("{cmd} > /opt/bk/run.log 2>&1; echo exit $?; cat /opt/bk/run.log"))
}
