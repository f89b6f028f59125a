//! Blue-green on SSH hosts: what the hosts run (observe), one decision of the same state
//! machine as on Kubernetes (`rollouts::plan`), and the actions it asks for (act). Each colour
//! is a systemd unit on its own port (the program itself, or the colour's compose project); a
//! switch rewrites the nginx upstream, checks it with `nginx -t` and reloads gracefully. Every action is idempotent, so a round cut off half-way
//! is completed by the next one.

use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::colour;
use crate::api::bluegreen::{BlueGreenDeploymentSpec, BlueGreenDeploymentStatus, Color, GateCheck};
use crate::host::bootstrap;
use crate::hostapp::desired::{self, App, NGINX_INCLUDE_DIR, Runtime};
use crate::render::NGINX_RELOAD as RELOAD;
use crate::rollouts::gate;
use crate::rollouts::plan::{self, ColorLive, GateDue, GateRound, Input, Outcome, Plan, Template};
use crate::ssh::{self, Connection, quote};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Ssh(#[from] ssh::Error),
    #[error("{host}: nginx refused the new site, the old one stays in place: {output}")]
    NginxRejected { host: String, output: String },
    #[error("{host}: {what}: {output}")]
    Step { host: String, what: String, output: String },
}

pub(super) const TIMEOUT: Duration = Duration::from_secs(120);

/// A connected host and its name (for messages).
pub struct HostConn {
    pub name: String,
    pub conn: Connection,
}

/// One colour on one host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Instance {
    pub active: bool,
    /// Revision it runs (from the marker written after its start).
    pub revision: Option<String>,
    /// It answered its health check (or, with no health path, accepted a connection).
    pub healthy: bool,
}

/// Bash: `probe PORT [PATH]` prints the HTTP status of GET PATH on 127.0.0.1:PORT (or `open`
/// when no path is given and the port accepts), nothing when it does not answer in 3 s.
const PROBE: &str = r#"probe() { timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1; [ -z "$2" ] && { echo open; exit 0; }; printf "GET %s HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n" "$2" >&3; IFS=" " read -r _ code _ <&3 && echo "$code"' probe "$1" "${2:-}" 2>/dev/null; }"#;

/// Bash: `answers PORT` prints `open` when GET / on 127.0.0.1:PORT gets an HTTP answer of any
/// status (needs [`PROBE`]).
const ANSWERS: &str = r#"answers() { [ -n "$(probe "$1" /)" ] && echo open; }"#;

fn observe_script(app: &App) -> String {
    let path = quote(app.health_path.as_deref().unwrap_or(""));
    // With compose, Docker's proxy accepts on the published port before the application
    // listens: an open port says nothing there, an HTTP answer of any status does.
    let probe = match (&app.runtime, &app.health_path) {
        (Runtime::Compose { .. }, None) => "answers",
        _ => "probe",
    };
    let mut s = format!("{PROBE}\n{ANSWERS}\n");
    for c in [Color::Blue, Color::Green] {
        s.push_str(&format!(
            "a=$(systemctl is-active {unit} 2>/dev/null); r=$(cat {marker} 2>/dev/null); h=-; \
             if [ \"$a\" = active ]; then h=$({probe} {port} {path}); fi; echo \"{c} ${{a:-unknown}} ${{r:--}} ${{h:--}}\"\n",
            unit = quote(&app.unit(c)),
            marker = quote(&app.marker_path(c)),
            port = app.port(c),
        ));
    }
    s
}

fn parse_observation(out: &str) -> [Instance; 2] {
    let mut r = [Instance::default(), Instance::default()];
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [c, active, rev, health] = f[..] else { continue };
        let i = match c {
            "blue" => 0,
            "green" => 1,
            _ => continue,
        };
        let healthy = health == "open" || health.parse::<u16>().is_ok_and(|code| (200..400).contains(&code));
        r[i] = Instance {
            active: active == "active",
            revision: (rev != "-").then(|| rev.to_owned()),
            healthy: active == "active" && healthy,
        };
    }
    r
}

/// What every host runs, per colour: `[blue, green]` for each host in order (`apps`: the
/// application as each host runs it, with its ports there).
pub async fn observe(hosts: &[HostConn], apps: &[App]) -> Result<Vec<[Instance; 2]>, Error> {
    let outs = join_all(hosts.iter().zip(apps).map(|(h, a)| async move {
        let script = observe_script(a);
        h.conn.run(&script, TIMEOUT).await
    }))
    .await;
    outs.into_iter().map(|o| Ok(parse_observation(&o?))).collect()
}

/// One colour across hosts, as the state machine counts replicas: one instance per host.
pub fn colour_live(obs: &[[Instance; 2]], c: Color) -> Option<ColorLive> {
    let i = usize::from(c == Color::Green);
    let running: Vec<&Instance> = obs.iter().map(|o| &o[i]).filter(|x| x.active).collect();
    if running.is_empty() {
        return None;
    }
    // The revision most hosts run (they differ only while a round is half-way).
    let mut revs: Vec<&String> = running.iter().filter_map(|x| x.revision.as_ref()).collect();
    revs.sort();
    let revision = revs.iter().max_by_key(|r| revs.iter().filter(|x| x == r).count()).map(|r| (*r).clone());
    let available = running.iter().filter(|x| x.healthy && x.revision == revision).count();
    Some(ColorLive {
        revision,
        replicas: i32::try_from(running.len()).unwrap_or(i32::MAX),
        available: i32::try_from(available).unwrap_or(i32::MAX),
    })
}

/// The gate's HTTP check, run on each host against the preview colour's port.
async fn health_round(hosts: &[HostConn], apps: &[App], c: Color, check: &GateCheck) -> Outcome {
    let port = |a: &App| check.port.and_then(|p| u16::try_from(p).ok()).unwrap_or(a.port(c));
    let outs = join_all(hosts.iter().zip(apps).map(|(h, a)| async move {
        let script = format!("{PROBE}\nprobe {} {}", port(a), quote(&check.path));
        h.conn.run(&script, TIMEOUT).await
    }))
    .await;
    let mut failures = Vec::new();
    for ((h, a), out) in hosts.iter().zip(apps).zip(outs) {
        let port = port(a);
        match out {
            Ok(code) if code.trim() == check.expected_status.to_string() => {}
            Ok(code) if code.trim().is_empty() => {
                failures.push(format!("{}: {c} did not answer on port {port}", h.name))
            }
            Ok(code) => failures.push(format!(
                "{}: {c} answered {} (expected {})",
                h.name,
                code.trim(),
                check.expected_status
            )),
            Err(e) => failures.push(format!("{}: {e}", h.name)),
        }
    }
    if failures.is_empty() {
        Outcome::Pass(format!("{} of {} hosts answered {}", hosts.len(), hosts.len(), check.expected_status))
    } else {
        Outcome::Fail(failures.join("; "))
    }
}

/// Requests to act on: promotion and abort asked for outside the spec (the CLI).
#[derive(Clone, Copy, Debug, Default)]
pub struct Requests {
    pub promote: bool,
    pub abort: bool,
}

/// One round: observe, plan (running the gate checks the plan asks for), act. The returned
/// plan's status is what to store; when this returns an error, nothing of the plan was
/// completed that the next round would not redo, and status should keep what it had.
pub async fn round(
    hosts: &[HostConn],
    app: &App,
    spec: &BlueGreenDeploymentSpec,
    status: &BlueGreenDeploymentStatus,
    req: Requests,
    backup: Option<crate::rollouts::plan::BackupView>,
) -> Result<Plan, Error> {
    let apps = super::ports::resolve(hosts, app).await?;
    let obs = observe(hosts, &apps).await?;
    let mut input = Input {
        spec,
        desired: &app.revision,
        status,
        blue: colour_live(&obs, Color::Blue),
        green: colour_live(&obs, Color::Green),
        promote: req.promote,
        abort_requested: req.abort,
        round: None,
        backup,
        now: Timestamp::now(),
    };
    let mut p = plan::plan(&input);
    if p.gate_due.any() {
        input.round = Some(gate_round(hosts, &apps, spec, status, p.gate_due).await);
        p = plan::plan(&input);
    }
    p.status.host_ports = super::ports::status(hosts, &apps);
    let results = join_all(hosts.iter().zip(&apps).zip(&obs).map(|((h, a), o)| act(h, a, &p, o))).await;
    let waiting = results.into_iter().collect::<Result<Vec<bool>, Error>>()?;
    if waiting.contains(&true) {
        // Look again soon: the certificate's distribution does not trigger this rollout.
        p.requeue = Some(p.requeue.map_or(CERTIFICATE_WAIT, |r| r.min(CERTIFICATE_WAIT)));
    }
    Ok(p)
}

async fn gate_round(
    hosts: &[HostConn],
    apps: &[App],
    spec: &BlueGreenDeploymentSpec,
    status: &BlueGreenDeploymentStatus,
    due: GateDue,
) -> GateRound {
    let preview = status.preview_color.unwrap_or(status.active_color.unwrap_or(Color::Blue).other());
    let mut round = GateRound::default();
    if due.health
        && let Some(check) = &spec.strategy.health_check
    {
        round.health = Some(health_round(hosts, apps, preview, check).await);
    }
    if due.analysis
        && let Some(a) = &spec.strategy.analysis
    {
        round.analysis = Some(gate::analysis_round(gate::client(), a).await);
    }
    round
}

fn want(p: &Plan, c: Color) -> Option<plan::Want> {
    match c {
        Color::Blue => p.blue,
        Color::Green => p.green,
    }
}

/// Brings one host to what the plan asks: colours that should run are started first, then
/// traffic moves, then colours that should stop are stopped, so no request meets a stopped
/// process.
/// Returns whether the site waits for its certificate (TLS Auto, files not on the host yet).
async fn act(h: &HostConn, app: &App, p: &Plan, obs: &[Instance; 2]) -> Result<bool, Error> {
    for c in [Color::Blue, Color::Green] {
        let i = &obs[usize::from(c == Color::Green)];
        match want(p, c) {
            Some(w) if w.replicas > 0 && w.template == Template::Spec => {
                let current = i.active && i.revision.as_deref() == Some(&app.revision);
                if !current {
                    colour::start(h, app, c).await?;
                }
            }
            Some(w) if w.replicas > 0 && !i.active => colour::resume(h, app, c).await?,
            _ => {}
        }
    }
    // Every round, not only on a switch: domains or TLS may change without a new revision.
    // Only to a colour seen healthy here: a first release is checked before nginx sends it
    // anything (the plan makes it active at once, with nothing to fall back to).
    let mut waiting = false;
    if let Some(active) = p.status.active_color
        && obs[usize::from(active == Color::Green)].healthy
    {
        waiting = ensure_site(h, app, active).await?;
        super::scrape::ensure(h, app, active).await?;
    }
    for c in [Color::Blue, Color::Green] {
        let i = &obs[usize::from(c == Color::Green)];
        if want(p, c).is_some_and(|w| w.replicas == 0) && i.active {
            colour::stop(h, app, c).await?;
        }
    }
    Ok(waiting)
}

/// How soon a round looks again while a site waits for its certificate.
const CERTIFICATE_WAIT: Duration = Duration::from_secs(10);

pub(super) fn step_err(h: &HostConn, what: &str, e: ssh::Error) -> Error {
    match e {
        ssh::Error::Failed { output, .. } => Error::Step { host: h.name.clone(), what: what.into(), output },
        other => Error::Ssh(other),
    }
}

/// Installs nginx when missing (the runtime the site needs), writes the site for colour `to`,
/// and reloads nginx only when the site changed and `nginx -t` accepts it; otherwise the old
/// files go back and nginx keeps serving the old configuration.
async fn ensure_site(h: &HostConn, app: &App, to: Color) -> Result<bool, Error> {
    let c = &h.conn;
    let installed = match (&app.tls, app.tls_when_installed) {
        (Some(t), true) => {
            let check = format!("test -s {} && test -s {}", quote(&t.certificate), quote(&t.key));
            c.exec(&check, None, TIMEOUT).await?.code == 0
        }
        _ => true,
    };
    let site = desired::site_with(app, to, installed).map_err(|output| Error::Step {
        host: h.name.clone(),
        what: "nginx site".into(),
        output,
    })?;
    let site_path = app.site_path();
    let include_path = format!("{NGINX_INCLUDE_DIR}/{}", site.proxy_include_file);
    // Every round passes here: when nginx runs and both files are as wanted, one command
    // settles it (a hash comparison) instead of the install check, the copies and two uploads.
    let sums = format!(
        "{}  {include_path}\n{}  {site_path}\n",
        hex::encode(Sha256::digest(site.proxy_include.as_bytes())),
        hex::encode(Sha256::digest(site.site.as_bytes())),
    );
    // And nginx has loaded them: the marker is written after a reload of exactly these files
    // and removed before new ones are uploaded, so files left by a cut between the upload and
    // the reload are reloaded by the next round instead of being taken as done.
    let digest = hex::encode(Sha256::digest(sums.as_bytes()));
    let loaded = format!("/var/lib/nova/state/{}/site.loaded", app.id);
    let same = format!(
        "systemctl is-active -q nginx && printf {} | sha256sum -c --status && [ \"$(cat {} 2>/dev/null)\" = {digest} ]",
        quote(&sums),
        quote(&loaded)
    );
    if c.exec(&same, None, TIMEOUT).await?.code == 0 {
        return Ok(!installed);
    }
    // Outside nginx's directories: nginx includes every file in sites-enabled.
    let keep_dir = format!("/var/lib/nova/state/{}/nginx-previous", app.id);
    // Installs nginx if needed, and keeps what is there to put it back if nginx refuses the
    // new files.
    let prepare = format!(
        "set -e; command -v nginx >/dev/null || {{ {apt} && {{ apt-get -qq install -y --no-install-recommends nginx-light \
         || apt-get -qq install -y --no-install-recommends nginx; }}; }}; mkdir -p {inc} {acme}; \
         systemctl is-active -q nginx || systemctl start nginx; \
         mkdir -p {keep}; rm -f {loaded}; for f in {s} {i}; do k={keep}/$(basename \"$f\"); \
         if [ -f \"$f\" ]; then cp -p \"$f\" \"$k\"; else rm -f \"$k\"; fi; done",
        apt = bootstrap::APT_PREPARE,
        inc = quote(NGINX_INCLUDE_DIR),
        acme = quote(desired::ACME_WEBROOT),
        s = quote(&site_path),
        i = quote(&include_path),
        keep = quote(&keep_dir),
        loaded = quote(&loaded),
    );
    c.run(&prepare, Duration::from_secs(600)).await.map_err(|e| step_err(h, "installing nginx", e))?;
    // Unchanged files are still tested and reloaded here: the marker said nginx may not have
    // loaded them.
    c.upload(&include_path, site.proxy_include.as_bytes(), 0o644, None, TIMEOUT).await?;
    c.upload(&site_path, site.site.as_bytes(), 0o644, None, TIMEOUT).await?;
    let test = c.exec("nginx -t -q", None, TIMEOUT).await?;
    if test.code != 0 {
        let restore = format!(
            "for f in {s} {i}; do k={keep}/$(basename \"$f\"); if [ -f \"$k\" ]; then cp -p \"$k\" \"$f\"; else rm -f \"$f\"; fi; done",
            s = quote(&site_path),
            i = quote(&include_path),
            keep = quote(&keep_dir),
        );
        c.run(&restore, TIMEOUT).await.map_err(|e| step_err(h, "restoring the old site", e))?;
        return Err(Error::NginxRejected { host: h.name.clone(), output: test.stderr });
    }
    let reload = format!("{RELOAD}; echo {digest} > {}", quote(&loaded));
    c.run(&reload, TIMEOUT).await.map_err(|e| step_err(h, "reloading nginx", e))?;
    Ok(!installed)
}

/// Shell that removes everything of application `id` from a host: both colours' units (their
/// compose projects first), environment, compose and state files, the work directory, and the
/// nginx site with its include; then nginx is checked and reloaded, other sites untouched.
/// Idempotent: a second run finds nothing and changes nothing.
pub fn removal_script(id: &str) -> String {
    let mut colours = String::new();
    for c in [Color::Blue, Color::Green] {
        let unit = format!("nova-{id}-{c}.service");
        let compose = format!("/etc/nova/apps/{id}/{c}.compose.yaml");
        colours += &format!(
            "if [ -f {f} ] && [ -x {w} ]; then {w} -p {p} -f {f} down --remove-orphans -t 30 >/dev/null 2>&1 || true; fi; \
             if [ -f {up} ]; then systemctl disable --now {u} >/dev/null 2>&1 || true; rm -f {up}; reload=1; fi; ",
            f = quote(&compose),
            w = quote(desired::COMPOSE_WRAPPER),
            p = quote(&format!("nova-{id}-{c}")),
            u = quote(&unit),
            up = quote(&format!("/etc/systemd/system/{unit}")),
        );
    }
    let site = quote(&format!("/etc/nginx/sites-enabled/nova-{id}.conf"));
    let include = quote(&format!("{NGINX_INCLUDE_DIR}/proxy_{id}.conf"));
    format!(
        "set -e; reload=; {colours}if [ -n \"$reload\" ]; then systemctl daemon-reload; fi; \
         rm -rf {etc} {state} {work} {ports} {target}; \
         if [ -e {site} ] || [ -e {include} ]; then rm -f {site} {include}; \
         if systemctl is-active -q nginx; then nginx -t -q; {RELOAD}; fi; fi",
        etc = quote(&format!("/etc/nova/apps/{id}")),
        state = quote(&format!("/var/lib/nova/state/{id}")),
        work = quote(&format!("/var/lib/nova/apps/{id}")),
        ports = quote(&super::ports::record(id)),
        target = quote(&super::scrape::file(id)),
    )
}

/// Removes application `id` from a host (see [`removal_script`]).
pub async fn remove(h: &HostConn, id: &str) -> Result<(), Error> {
    h.conn
        .run(&removal_script(id), Duration::from_secs(300))
        .await
        .map_err(|e| step_err(h, "removing the application", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(active: bool, rev: Option<&str>, healthy: bool) -> Instance {
        Instance { active, revision: rev.map(str::to_owned), healthy }
    }

    #[test]
    fn observations_parse() {
        let out = "blue active abc 200\ngreen inactive - -\n";
        assert_eq!(parse_observation(out), [inst(true, Some("abc"), true), inst(false, None, false)]);
        let out = "blue active abc 500\ngreen active def open\n";
        assert_eq!(parse_observation(out), [inst(true, Some("abc"), false), inst(true, Some("def"), true)]);
        let out = "blue failed abc 200\ngreen activating def -\n";
        assert_eq!(
            parse_observation(out),
            [inst(false, Some("abc"), false), inst(false, Some("def"), false)]
        );
    }

    #[test]
    fn a_colour_counts_one_replica_per_host() {
        let obs = vec![
            [inst(true, Some("r1"), true), inst(true, Some("r2"), true)],
            [inst(true, Some("r1"), false), inst(true, Some("r2"), true)],
            [inst(true, Some("r1"), true), inst(false, None, false)],
        ];
        assert_eq!(
            colour_live(&obs, Color::Blue),
            Some(ColorLive { revision: Some("r1".into()), replicas: 3, available: 2 })
        );
        assert_eq!(
            colour_live(&obs, Color::Green),
            Some(ColorLive { revision: Some("r2".into()), replicas: 2, available: 2 })
        );
        let none = vec![[inst(false, None, false), inst(false, None, false)]];
        assert_eq!(colour_live(&none, Color::Blue), None);
    }
}
