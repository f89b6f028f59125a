//! One colour's process on a host: written and (re)started for a revision, checked to listen
//! on its port, resumed with the files it has, stopped. The state machine decides which; these
//! do it, idempotently (a marker file says which revision a colour runs, written after a start).

use std::time::Duration;

use super::engine::{Error, HostConn, TIMEOUT, step_err};
use crate::api::bluegreen::Color;
use crate::host::{bootstrap, services};
use crate::hostapp::desired::{self, App, Runtime};
use crate::ssh::quote;

/// Writes the colour's files for the desired revision and (re)starts it.
pub(super) async fn start(h: &HostConn, app: &App, c: Color) -> Result<(), Error> {
    let c_ = &h.conn;
    let compose = matches!(app.runtime, Runtime::Compose { .. });
    let user = quote(&app.user);
    let setup = if compose {
        // The runtime, as nginx for the site: Docker's engine and a compose from the
        // distribution when missing (what `bootstrap.docker` installs), the engine enabled.
        // A docker and a compose already there (Docker's own packages, say) are left alone.
        let docker = services::docker_step();
        let install = bootstrap::packages_step(&services::DOCKER_PACKAGES.map(String::from));
        format!(
            "if ! ( {check} ) >/dev/null 2>&1; then \
             {{ command -v docker && {{ docker compose version || docker-compose version; }}; }} >/dev/null 2>&1 \
             || ( {install} ) >/dev/null; ( {apply} ); fi",
            check = docker.check,
            install = install.apply,
            apply = docker.apply,
        )
    } else {
        format!(
            "id -u {user} >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin {user}; \
             mkdir -p {work}; chown {user}: {work}",
            work = quote(&app.work_dir()),
        )
    };
    // A stopped colour's port must be free: something else listening there (not Nova's) would
    // take the colour's traffic, or keep it from starting.
    let port_free = format!(
        "if ! systemctl is-active -q {u} && command -v ss >/dev/null && [ -n \"$(ss -Hltn '( sport = :{p} )')\" ]; then \
         echo \"port {p} (colour {c} of {id}) is in use by something else on this host: \
         $(ss -Hltnp '( sport = :{p} )' | awk '{{print $6}}' | head -n1)\" >&2; exit 1; fi",
        u = quote(&app.unit(c)),
        p = app.port(c),
        id = app.id,
    );
    let prepare = format!(
        "set -e; {port_free}; {setup}; mkdir -p {state} {etc}; chmod 0700 {etc}; rm -f {marker}",
        state = quote(&format!("/var/lib/nova/state/{}", app.id)),
        etc = quote(&format!("/etc/nova/apps/{}", app.id)),
        marker = quote(&app.marker_path(c)),
    );
    let what = if compose {
        "installing Docker and preparing the application's directories"
    } else {
        "preparing the application's user and directories"
    };
    c_.run(&prepare, Duration::from_secs(900)).await.map_err(|e| step_err(h, what, e))?;
    let rendered = |what: &str, r: Result<String, String>| {
        r.map_err(|output| Error::Step { host: h.name.clone(), what: what.into(), output })
    };
    if compose {
        let file = rendered("compose file", desired::compose_file(app, c))?;
        c_.upload(desired::COMPOSE_WRAPPER, desired::COMPOSE_WRAPPER_SCRIPT.as_bytes(), 0o755, None, TIMEOUT)
            .await?;
        c_.upload(&app.compose_path(c), file.as_bytes(), 0o600, Some("root:root"), TIMEOUT).await?;
    } else {
        let env = rendered("environment", desired::env_file(app, c))?;
        c_.upload(&app.env_path(c), env.as_bytes(), 0o600, Some("root:root"), TIMEOUT).await?;
    }
    let unit = rendered("unit", desired::unit(app, c))?;
    let unit_changed = c_.upload(&app.unit_path(c), unit.as_bytes(), 0o644, None, TIMEOUT).await?;
    let reload = if unit_changed { "systemctl daemon-reload && " } else { "" };
    // With compose, why a start failed is worth saying (a pull refused, a port taken), but
    // compose's output can quote the colour's environment: only fixed phrases found in it
    // reach the error, never a line of it (and no value from `env`).
    let why = match &app.runtime {
        Runtime::Compose { image, .. } => format!(
            " || {{ r=$(journalctl -u {u} -n 50 --no-pager -o cat --since=-300s | grep -Eo {pat} | head -n1); \
             [ -n \"$r\" ] || r={fallback}; printf '%s %s\\n' {prefix} \"$r\" >&2; exit 1; }}",
            u = quote(&app.unit(c)),
            pat = quote(COMPOSE_FAILURES),
            fallback = quote(&format!("the reason is in journalctl -u {} on the host", app.unit(c))),
            prefix = quote(&format!("compose could not start image {image}:")),
        ),
        Runtime::Systemd { .. } => String::new(),
    };
    // Moving a colour from compose to systemd: its containers live in Docker's cgroups, not
    // the unit's, so the restart would not stop them and they would keep the port. The colour
    // takes no traffic while it is (re)started, so they can go first.
    let leftover = if compose {
        String::new()
    } else {
        format!(
            "if [ -f {f} ]; then {w} -p {p} -f {f} down --remove-orphans -t 30 >/dev/null 2>&1; rm -f {f}; fi; ",
            f = quote(&app.compose_path(c)),
            w = quote(desired::COMPOSE_WRAPPER),
            p = quote(&app.project(c)),
        )
    };
    let run = format!(
        "{leftover}{reload}{{ systemctl restart {u}{why}; }} && echo {rev} > {marker}",
        u = quote(&app.unit(c)),
        rev = quote(&app.revision),
        marker = quote(&app.marker_path(c)),
    );
    c_.run(&run, Duration::from_secs(900))
        .await
        .map_err(|e| redacted(app, step_err(h, &format!("starting {c}"), e)))?;
    bound(h, app, c).await
}

/// How long a started colour may take to listen on its port.
const BIND_WAIT_SECONDS: u32 = 30;

/// Waits until the started colour listens on its port: a program that exits at once, or runs
/// without ever listening there (a wrong port, say), is reported now, by name, instead of
/// waiting for a health check that can never pass. Its marker is written already, so the next
/// round does not start it again. Without `ss` on the host, the health check alone decides.
async fn bound(h: &HostConn, app: &App, c: Color) -> Result<(), Error> {
    // With compose, Docker publishes the port (a proxy, or only NAT rules): the answer check of
    // each round decides there.
    if matches!(app.runtime, Runtime::Compose { .. }) {
        return Ok(());
    }
    let script = format!(
        "command -v ss >/dev/null || exit 0; \
         for i in $(seq 1 {tries}); do \
           systemctl is-active -q {u} || {{ echo {exited} >&2; exit 1; }}; \
           [ -n \"$(ss -Hltn '( sport = :{p} )')\" ] && exit 0; sleep 0.1; \
         done; echo {silent} >&2; exit 1",
        tries = BIND_WAIT_SECONDS * 10,
        u = quote(&app.unit(c)),
        p = app.port(c),
        exited = quote(&format!(
            "colour {c} exited right after it started (see journalctl -u {} on the host)",
            app.unit(c)
        )),
        silent = quote(&format!(
            "colour {c} runs but nothing listens on its port {} after {BIND_WAIT_SECONDS} s (does the program listen on $PORT?)",
            app.port(c)
        )),
    );
    h.conn
        .run(&script, Duration::from_secs(u64::from(BIND_WAIT_SECONDS) + 30))
        .await
        .map_err(|e| step_err(h, &format!("starting {c}"), e))?;
    Ok(())
}

/// What a failed compose start may say (an ERE of fixed phrases; see [`start`]).
const COMPOSE_FAILURES: &str = "pull access denied|manifest unknown|repository does not exist|not found|no such host|\
     network is unreachable|connection refused|port is already allocated|address already in use|no space left on device|\
     permission denied|invalid reference format|Cannot connect to the Docker daemon";

/// Replaces the application's environment values in an error's text: whatever a start printed,
/// no value from `env` reaches status or events.
fn redacted(app: &App, e: Error) -> Error {
    match e {
        Error::Step { host, what, mut output } => {
            for (_, v) in &app.env {
                if v.len() >= 4 {
                    output = output.replace(v.as_str(), "[redacted]");
                }
            }
            Error::Step { host, what, output }
        }
        other => other,
    }
}

/// Starts a stopped colour with the files it has (an older revision kept for rollback); the
/// revision is read back from its environment (`NOVA_REVISION="…"`, or `NOVA_REVISION: "…"` in
/// a compose file).
pub(super) async fn resume(h: &HostConn, app: &App, c: Color) -> Result<(), Error> {
    let run = format!(
        r#"set -e; [ -f {unit_path} ]; systemctl start {u}; sed -n 's/^ *NOVA_REVISION[=:] *"\([0-9a-f]*\)"$/\1/p' {config} > {marker}"#,
        unit_path = quote(&app.unit_path(c)),
        u = quote(&app.unit(c)),
        config = quote(&app.config_path(c)),
        marker = quote(&app.marker_path(c)),
    );
    h.conn.run(&run, TIMEOUT).await.map_err(|e| step_err(h, &format!("starting {c} again"), e))?;
    Ok(())
}

/// Stops a colour. Traffic left it before: a switch returns only once the old nginx workers
/// have exited (see [`crate::render::NGINX_RELOAD`]).
pub(super) async fn stop(h: &HostConn, app: &App, c: Color) -> Result<(), Error> {
    let run = format!(
        "rm -f {marker}; systemctl stop {u}",
        marker = quote(&app.marker_path(c)),
        u = quote(&app.unit(c)),
    );
    h.conn.run(&run, TIMEOUT).await.map_err(|e| step_err(h, &format!("stopping {c}"), e))?;
    Ok(())
}
