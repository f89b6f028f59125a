//! Configs for SSH hosts, rendered from the tera templates in `templates/`: an nginx site,
//! systemd units and a docker-compose file. Inputs are validated (see `validate`) before they
//! reach a template; the templates themselves add no logic beyond layout.

pub mod validate;

use std::sync::LazyLock;

use serde::Serialize;
use tera::{Context, Tera};

pub use validate::Invalid;

static TERA: LazyLock<Tera> = LazyLock::new(|| {
    let mut t = Tera::default();
    t.add_raw_templates([
        ("nginx/site.conf", include_str!("../../../templates/nginx/site.conf.tera")),
        ("nginx/proxy.conf", include_str!("../../../templates/nginx/proxy.conf.tera")),
        ("systemd/service", include_str!("../../../templates/systemd/service.tera")),
        ("systemd/timer", include_str!("../../../templates/systemd/timer.tera")),
        ("compose/app.yaml", include_str!("../../../templates/compose/app.yaml.tera")),
    ])
    .expect("templates parse");
    // Nothing here is HTML; values are made safe by validation, not by escaping.
    t.autoescape_on(vec![]);
    t
});

fn render(template: &str, ctx: &impl Serialize) -> String {
    let ctx = Context::from_serialize(ctx).expect("a render context serializes");
    TERA.render(template, &ctx).expect("validated input renders")
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
        site: render("nginx/site.conf", &ctx),
        proxy_include: render("nginx/proxy.conf", &ctx),
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
    Ok(render(
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
    ))
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
    Ok(render(
        "systemd/timer",
        &Ctx {
            description: validate::one_line("description", description)?,
            on_calendar: validate::calendar("onCalendar", on_calendar)?,
            randomized_delay_seconds: randomized_delay_seconds.min(86_400),
        },
    ))
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

/// A docker-compose application.
#[derive(Clone, Debug)]
pub struct ComposeApp {
    pub name: String,
    pub image: String,
    pub port: i64,
    pub host_port: i64,
    pub env_file: String,
    /// `(host path, container path)`
    pub volumes: Vec<(String, String)>,
    pub health_path: String,
    pub health_interval_seconds: u32,
    pub health_timeout_seconds: u32,
    pub health_retries: u32,
}

pub fn compose(app: &ComposeApp) -> Result<String, Invalid> {
    #[derive(Serialize)]
    struct Ctx {
        name: String,
        image: String,
        port: u16,
        host_port: u16,
        env_file: String,
        volumes: Vec<String>,
        health_path: String,
        health_interval: u32,
        health_timeout: u32,
        health_retries: u32,
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
    Ok(render(
        "compose/app.yaml",
        &Ctx {
            name: validate::name("name", &app.name)?,
            image: validate::image("image", &app.image)?,
            port: validate::port("port", app.port)?,
            host_port: validate::port("hostPort", app.host_port)?,
            env_file: validate::abs_path("envFile", &app.env_file)?,
            volumes,
            health_path: validate::url_path("health.path", &app.health_path)?,
            health_interval: app.health_interval_seconds.clamp(1, 3600),
            health_timeout: app.health_timeout_seconds.clamp(1, 600),
            health_retries: app.health_retries.clamp(1, 100),
        },
    ))
}
