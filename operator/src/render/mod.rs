//! Configs for SSH hosts, rendered from the tera templates in `templates/`: an nginx site,
//! systemd units and a docker-compose file. Inputs are validated (see `validate`) before they
//! reach a template; the templates themselves add no logic beyond layout.

pub mod validate;

use std::sync::LazyLock;

use serde::Serialize;
use tera::{Context, Tera};

pub use validate::Invalid;

/// The templates, compiled into the binary; a parse error is a bug every render test catches,
/// reported as an error rather than a panic.
static TERA: LazyLock<Result<Tera, String>> = LazyLock::new(|| {
    let mut t = Tera::default();
    t.add_raw_templates([
        ("nginx/site.conf", include_str!("../../../templates/nginx/site.conf.tera")),
        ("nginx/proxy.conf", include_str!("../../../templates/nginx/proxy.conf.tera")),
        ("systemd/service", include_str!("../../../templates/systemd/service.tera")),
        ("systemd/timer", include_str!("../../../templates/systemd/timer.tera")),
        ("systemd/compose", include_str!("../../../templates/systemd/compose.tera")),
        ("compose/app.yaml", include_str!("../../../templates/compose/app.yaml.tera")),
    ])
    .map_err(|e| format!("{e:?}"))?;
    // Nothing here is HTML; values are made safe by validation, not by escaping.
    t.autoescape_on(vec![]);
    Ok(t)
});

/// Renders validated input; a failure names the template (never the values).
fn render(template: &str, ctx: &impl Serialize) -> Result<String, Invalid> {
    let failed = |problem: String| Invalid {
        field: format!("template {template}"),
        problem,
        accepted: "a template that renders",
    };
    let tera = TERA.as_ref().map_err(|e| failed(e.clone()))?;
    let ctx = Context::from_serialize(ctx).map_err(|e| failed(e.to_string()))?;
    tera.render(template, &ctx).map_err(|e| failed(e.to_string()))
}

/// An nginx reverse-proxy site for one application.
#[derive(Clone, Debug)]
pub struct Site {
    pub name: String,
    pub domains: Vec<String>,
    /// Port of the colour taking traffic (the blue-green upstream).
    pub active_port: i64,
    pub tls: Option<SiteTls>,
    pub body_size: String,
    pub acme_webroot: String,
    pub api_rate_per_second: u32,
    pub login_rate_per_minute: u32,
    /// Directory of the proxy include (`/etc/nginx/nova` on hosts).
    pub include_dir: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SiteTls {
    pub certificate: String,
    pub key: String,
}

/// The site file and the proxy include it needs (install it as `<include_dir>/proxy_<name>.conf`).
pub struct RenderedSite {
    pub site: String,
    pub proxy_include: String,
    /// File name the site includes from `include_dir`.
    pub proxy_include_file: String,
}

pub fn nginx_site(s: &Site) -> Result<RenderedSite, Invalid> {
    #[derive(Serialize)]
    struct Ctx {
        name: String,
        domains: Vec<String>,
        active_port: u16,
        tls: Option<SiteTls>,
        body_size: String,
        acme_webroot: String,
        api_rate: u32,
        login_rate: u32,
        include_dir: String,
    }
    let name = validate::name("name", &s.name)?;
    if s.domains.is_empty() {
        return Err(Invalid {
            field: "domains".into(),
            problem: "is empty".into(),
            accepted: "at least one domain",
        });
    }
    let domains = s
        .domains
        .iter()
        .enumerate()
        .map(|(i, d)| validate::domain(&format!("domains[{i}]"), d))
        .collect::<Result<_, _>>()?;
    let tls = match &s.tls {
        Some(t) => Some(SiteTls {
            certificate: validate::abs_path("tls.certificate", &t.certificate)?,
            key: validate::abs_path("tls.key", &t.key)?,
        }),
        None => None,
    };
    let ctx = Ctx {
        // nginx identifiers (upstream, zone, variable names) may not contain '-'.
        name: name.replace('-', "_"),
        domains,
        active_port: validate::port("activePort", s.active_port)?,
        tls,
        body_size: validate::size("bodySize", &s.body_size)?,
        acme_webroot: validate::abs_path("acmeWebroot", &s.acme_webroot)?,
        api_rate: s.api_rate_per_second.clamp(1, 10_000),
        login_rate: s.login_rate_per_minute.clamp(1, 10_000),
        include_dir: validate::abs_path("includeDir", &s.include_dir)?,
    };
    Ok(RenderedSite {
        site: render("nginx/site.conf", &ctx)?,
        proxy_include: render("nginx/proxy.conf", &ctx)?,
        proxy_include_file: format!("proxy_{}.conf", ctx.name),
    })
}

/// A hardened systemd service running an application directly.
#[derive(Clone, Debug)]
pub struct Service {
    pub description: String,
    pub user: String,
    pub working_directory: String,
    pub environment_file: String,
    pub exec: Vec<String>,
    /// e.g. `512M`
    pub memory_max: Option<String>,
    /// percent of one CPU
    pub cpu_quota_percent: Option<u32>,
}

pub fn systemd_service(s: &Service) -> Result<String, Invalid> {
    #[derive(Serialize)]
    struct Ctx {
        description: String,
        user: String,
        working_directory: String,
        environment_file: String,
        exec_start: String,
        memory_max: Option<String>,
        cpu_quota: Option<u32>,
    }
    let memory_max = match &s.memory_max {
        Some(m) => Some(validate::size("memoryMax", &m.to_lowercase())?.to_uppercase()),
        None => None,
    };
    render(
        "systemd/service",
        &Ctx {
            description: validate::one_line("description", &s.description)?,
            user: validate::user("user", &s.user)?,
            working_directory: validate::abs_path("workingDirectory", &s.working_directory)?,
            environment_file: validate::abs_path("environmentFile", &s.environment_file)?,
            exec_start: validate::exec_start("exec", &s.exec)?,
            memory_max,
            cpu_quota: s.cpu_quota_percent.map(|q| q.clamp(1, 100_000)),
        },
    )
}

/// A systemd timer (scheduled backups and the like).
pub fn systemd_timer(
    description: &str,
    on_calendar: &str,
    randomized_delay_seconds: u32,
) -> Result<String, Invalid> {
    #[derive(Serialize)]
    struct Ctx {
        description: String,
        on_calendar: String,
        randomized_delay_seconds: u32,
    }
    render(
        "systemd/timer",
        &Ctx {
            description: validate::one_line("description", description)?,
            on_calendar: validate::calendar("onCalendar", on_calendar)?,
            randomized_delay_seconds: randomized_delay_seconds.min(86_400),
        },
    )
}

/// Environment variables as an EnvironmentFile / env_file.
pub fn environment_file(vars: &[(String, String)]) -> Result<String, Invalid> {
    let mut out = String::from("# Managed by Nova; changes are overwritten.\n");
    for (i, (k, v)) in vars.iter().enumerate() {
        out.push_str(&validate::env_line(&format!("env[{i}]"), k, v)?);
        out.push('\n');
    }
    Ok(out)
}

/// A docker-compose application (one service, `app`, published on loopback only).
#[derive(Clone, Debug, Default)]
pub struct ComposeApp {
    pub image: String,
    /// Port the application listens on inside the container.
    pub port: i64,
    /// Loopback port on the host it is published on.
    pub host_port: i64,
    /// Overrides the image's ENTRYPOINT when not empty.
    pub entrypoint: Vec<String>,
    /// Overrides the image's CMD when not empty.
    pub command: Vec<String>,
    /// Written into the file: compose's env_file parsers interpolate `${...}` even in quoted
    /// values, and v1 and v2 disagree on escapes, so literal values go here.
    pub environment: Vec<(String, String)>,
    pub env_file: Option<String>,
    /// `(host path, container path)`
    pub volumes: Vec<(String, String)>,
    /// e.g. `512m`
    pub memory_limit: Option<String>,
    /// Docker's own check, run inside the container (needs a shell and wget in the image).
    pub health: Option<ComposeHealth>,
}

#[derive(Clone, Debug)]
pub struct ComposeHealth {
    pub path: String,
    pub interval_seconds: u32,
    pub timeout_seconds: u32,
    pub retries: u32,
}

/// A YAML double-quoted scalar that compose reads back as exactly `v`: printable ASCII as is
/// (`"` and `\` escaped, `$` doubled against compose's interpolation), everything else as a
/// `\u`/`\U` escape, so no character can end the scalar, start a line or be folded by YAML 1.1.
pub fn compose_string(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '$' => out.push_str("$$"),
            ' '..='~' => out.push(c),
            c if u32::from(c) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08X}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

pub fn compose(app: &ComposeApp) -> Result<String, Invalid> {
    #[derive(Serialize)]
    struct Health {
        path: String,
        interval: u32,
        timeout: u32,
        retries: u32,
    }
    #[derive(Serialize)]
    struct Ctx {
        image: String,
        entrypoint: Vec<String>,
        command: Vec<String>,
        port: u16,
        host_port: u16,
        environment: Vec<(String, String)>,
        env_file: Option<String>,
        volumes: Vec<String>,
        memory_limit: Option<String>,
        health: Option<Health>,
    }
    let volumes = app
        .volumes
        .iter()
        .enumerate()
        .map(|(i, (host, container))| {
            Ok(format!(
                "{}:{}",
                validate::abs_path(&format!("volumes[{i}].host"), host)?,
                validate::abs_path(&format!("volumes[{i}].container"), container)?
            ))
        })
        .collect::<Result<_, Invalid>>()?;
    let environment = app
        .environment
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            validate::env_value(&format!("environment[{i}].value"), v)?;
            Ok((validate::env_key(&format!("environment[{i}].name"), k)?, compose_string(v)))
        })
        .collect::<Result<_, Invalid>>()?;
    let health = match &app.health {
        Some(h) => Some(Health {
            path: validate::url_path("health.path", &h.path)?,
            interval: h.interval_seconds.clamp(1, 3600),
            timeout: h.timeout_seconds.clamp(1, 600),
            retries: h.retries.clamp(1, 100),
        }),
        None => None,
    };
    render(
        "compose/app.yaml",
        &Ctx {
            image: validate::image("image", &app.image)?,
            entrypoint: app.entrypoint.iter().map(|a| compose_string(a)).collect(),
            command: app.command.iter().map(|a| compose_string(a)).collect(),
            port: validate::port("port", app.port)?,
            host_port: validate::port("hostPort", app.host_port)?,
            environment,
            env_file: app.env_file.as_deref().map(|f| validate::abs_path("envFile", f)).transpose()?,
            volumes,
            memory_limit: match &app.memory_limit {
                Some(m) => Some(validate::size("memoryLimit", m)?),
                None => None,
            },
            health,
        },
    )
}

/// A systemd unit running one compose project: started with `up -d`, stopped with `down`.
#[derive(Clone, Debug)]
pub struct ComposeService {
    pub description: String,
    /// Compose project name (`-p`).
    pub project: String,
    /// The compose file (`-f`).
    pub file: String,
    /// Program that runs compose (the plugin or docker-compose).
    pub compose: String,
    pub working_directory: String,
}

pub fn systemd_compose_service(s: &ComposeService) -> Result<String, Invalid> {
    #[derive(Serialize)]
    struct Ctx {
        description: String,
        project: String,
        file: String,
        compose: String,
        working_directory: String,
    }
    render(
        "systemd/compose",
        &Ctx {
            description: validate::one_line("description", &s.description)?,
            project: validate::name("project", &s.project)?,
            file: validate::abs_path("file", &s.file)?,
            compose: validate::abs_path("compose", &s.compose)?,
            working_directory: validate::abs_path("workingDirectory", &s.working_directory)?,
        },
    )
}

/// Shell, for every reload of nginx Nova does (site switches, certificate distribution): reloads
/// nginx gracefully and returns once every worker from before the reload has
/// exited (at most 30 s), that is once no request can still go to the old upstream. `systemctl
/// reload` only sends the signal; a colour stopped right after it would fail the requests the
/// old workers are still finishing. `/proc` rather than pgrep: minimal images lack procps;
/// `proces[s]` keeps the pattern from matching grep's own command line.
pub const NGINX_RELOAD: &str = "old=$(grep -ls 'nginx: worker proces[s]' /proc/[0-9]*/cmdline | cut -d/ -f3); \
     { systemctl reload nginx || nginx -s reload; }; \
     for i in $(seq 1 300); do alive=; for p in $old; do [ -e /proc/$p ] && alive=1; done; \
     [ -z \"$alive\" ] && break; sleep 0.1; done";
