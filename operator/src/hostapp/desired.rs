//! What a Platform looks like on an SSH host, as pure functions: the application's identity and
//! revision, each colour's systemd unit (running the program, or the colour's compose project)
//! and its environment or compose file, and the nginx site that sends traffic to the active
//! colour. Every value is validated here (through `render`), before any of it reaches a host.

use sha2::{Digest, Sha256};

use crate::api::bluegreen::{BlueGreenDeploymentSpec, BlueGreenStrategy, Color};
use crate::api::common::LocalRef;
use crate::api::platform::{HostRuntime, Platform, StrategyType, TlsMode};
use crate::render::{self, ComposeApp, ComposeService, RenderedSite, Service, Site, SiteTls, validate};

/// The first colour port pair on a host (Kamal and most hand-written scripts use a pair like it);
/// each application gets a pair of its own there (see [`super::ports`]).
pub const PORTS: [u16; 2] = [5001, 5002];
/// Where the proxy includes live; the site files go to `sites-enabled`.
pub const NGINX_INCLUDE_DIR: &str = "/etc/nginx/nova";
/// Served for ACME http-01 challenges (the certificates issue writes tokens here).
pub const ACME_WEBROOT: &str = crate::api::tls::DEFAULT_WEBROOT;
/// Runs Docker's compose plugin where installed, else docker-compose (v1, Debian 12's).
pub const COMPOSE_WRAPPER: &str = "/usr/local/lib/nova/compose";
pub const COMPOSE_WRAPPER_SCRIPT: &str = "#!/bin/sh\n\
    # Managed by Nova: Docker's compose plugin where installed, else docker-compose (v1).\n\
    if docker compose version >/dev/null 2>&1; then exec docker compose \"$@\"; fi\n\
    exec docker-compose \"$@\"\n";

/// How the application's process runs on a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// A program on the host under systemd (`spec.command` + `spec.args`).
    Systemd { exec: Vec<String> },
    /// The image in a compose project per colour, its port published on the colour's port.
    Compose {
        image: String,
        /// Port inside the container (`spec.port`).
        port: u16,
        entrypoint: Vec<String>,
        args: Vec<String>,
    },
}

/// An application as it runs on hosts, built from a Platform. Debug shows the environment's
/// names, never its values.
#[derive(Clone, PartialEq, Eq)]
pub struct App {
    /// `<namespace>-<name>`: unit, file and nginx names derive from it.
    pub id: String,
    /// Hash of everything that changes the running process.
    pub revision: String,
    pub runtime: Runtime,
    /// Literal environment (validated).
    pub env: Vec<(String, String)>,
    /// Path that answers 2xx/3xx when an instance is healthy; without one, an open port counts.
    pub health_path: Option<String>,
    pub domains: Vec<String>,
    pub tls: Option<SiteTls>,
    /// `tls.mode: Auto`: the site serves plain HTTP (and the ACME path) until the
    /// TlsCertificate's files are on the host, then TLS.
    pub tls_when_installed: bool,
    /// System user the application runs as with systemd (made by Nova, no login, no home).
    pub user: String,
    pub memory_max: Option<String>,
    /// `spec.metrics`: the host's Prometheus scrapes the serving colour (see [`super::scrape`]).
    pub metrics: Option<Metrics>,
    /// The colours' ports on the host at hand: [`PORTS`] until [`super::ports`] resolves the
    /// pair allocated there. Not part of the revision (hosts may differ).
    pub ports: [u16; 2],
}

/// What a host's Prometheus needs to scrape an application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metrics {
    pub path: String,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<String> = self.env.iter().map(|(k, _)| format!("{k}=***")).collect();
        f.debug_struct("App")
            .field("id", &self.id)
            .field("revision", &self.revision)
            .field("runtime", &self.runtime)
            .field("env", &env)
            .field("health_path", &self.health_path)
            .field("domains", &self.domains)
            .field("tls", &self.tls)
            .field("tls_when_installed", &self.tls_when_installed)
            .field("user", &self.user)
            .field("memory_max", &self.memory_max)
            .field("metrics", &self.metrics)
            .field("ports", &self.ports)
            .finish()
    }
}

impl App {
    pub fn port(&self, c: Color) -> u16 {
        match c {
            Color::Blue => self.ports[0],
            Color::Green => self.ports[1],
        }
    }

    pub fn unit(&self, c: Color) -> String {
        format!("nova-{}-{c}.service", self.id)
    }

    pub fn unit_path(&self, c: Color) -> String {
        format!("/etc/systemd/system/{}", self.unit(c))
    }

    /// Root-only: systemd reads it before dropping privileges; it may hold secrets.
    pub fn env_path(&self, c: Color) -> String {
        format!("/etc/nova/apps/{}/{c}.env", self.id)
    }

    /// Root-only, as the environment file: it holds the environment.
    pub fn compose_path(&self, c: Color) -> String {
        format!("/etc/nova/apps/{}/{c}.compose.yaml", self.id)
    }

    /// The file that says what the colour runs: the compose file or the environment file.
    pub fn config_path(&self, c: Color) -> String {
        match self.runtime {
            Runtime::Systemd { .. } => self.env_path(c),
            Runtime::Compose { .. } => self.compose_path(c),
        }
    }

    /// Compose project of a colour (its containers and network are named after it).
    pub fn project(&self, c: Color) -> String {
        format!("nova-{}-{c}", self.id)
    }

    /// Written after a colour (re)started with a revision, removed before it changes: the
    /// revision a running colour really runs, whatever its files say.
    pub fn marker_path(&self, c: Color) -> String {
        format!("/var/lib/nova/state/{}/{c}.running", self.id)
    }

    pub fn work_dir(&self) -> String {
        format!("/var/lib/nova/apps/{}", self.id)
    }

    pub fn site_path(&self) -> String {
        format!("/etc/nginx/sites-enabled/nova-{}.conf", self.id)
    }
}

/// Why a Platform cannot run on hosts as written, naming the field.
fn refuse(field: &str, why: &str) -> String {
    format!("{field}: {why}")
}

fn invalid(e: render::Invalid) -> String {
    e.to_string()
}

/// `<namespace>-<name>`, the name of everything the Platform has on a host.
pub fn app_id(p: &Platform) -> Result<String, String> {
    let ns = p.metadata.namespace.as_deref().unwrap_or("default");
    let name = p.metadata.name.as_deref().unwrap_or_default();
    validate::name("metadata.namespace and metadata.name (joined by '-')", &format!("{ns}-{name}"))
        .map_err(invalid)
}

/// The application a host-targeted Platform describes.
pub fn app(p: &Platform) -> Result<App, String> {
    let s = &p.spec;
    let id = app_id(p)?;
    let name = p.metadata.name.as_deref().unwrap_or_default();
    let compose =
        s.target.as_ref().and_then(|t| t.hosts.as_ref()).map(|h| h.runtime) == Some(HostRuntime::Compose);
    let runtime = if compose {
        let image = validate::image("spec.image", &s.image).map_err(invalid)?;
        let port = validate::port("spec.port", i64::from(s.port)).map_err(invalid)?;
        Runtime::Compose { image, port, entrypoint: s.command.clone(), args: s.args.clone() }
    } else {
        if s.command.is_empty() {
            return Err(refuse(
                "spec.command",
                "is required on hosts with the systemd runtime: the absolute path of the program to run \
                 (the image is not pulled there; it names the release); or use runtime compose",
            ));
        }
        let exec: Vec<String> = s.command.iter().chain(&s.args).cloned().collect();
        validate::exec_start("spec.command", &exec).map_err(invalid)?;
        Runtime::Systemd { exec }
    };
    if !s.env_from.is_empty() {
        return Err(refuse("spec.envFrom", "is not supported on hosts yet; give literal env values"));
    }
    let mut env = Vec::new();
    for (i, e) in s.env.iter().enumerate() {
        if e.value_from.is_some() {
            return Err(refuse(
                &format!("spec.env[{i}].valueFrom"),
                "is not supported on hosts yet; give value",
            ));
        }
        if e.name == "PORT" {
            return Err(refuse(&format!("spec.env[{i}].name"), "PORT is set by Nova to the colour's port"));
        }
        let v = e.value.clone().unwrap_or_default();
        validate::env_line(&format!("spec.env[{i}]"), &e.name, &v).map_err(invalid)?;
        env.push((e.name.clone(), v));
    }
    let metrics = match &s.metrics {
        Some(m) => Some(Metrics {
            path: validate::url_path("spec.metrics.path", &m.path).map_err(invalid)?,
            namespace: p.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            name: name.to_owned(),
        }),
        None => None,
    };
    let health_path = match &s.health {
        Some(h) => Some(validate::url_path("spec.health.path", &h.path).map_err(invalid)?),
        None => None,
    };
    if s.domains.is_empty() {
        return Err(refuse("spec.domains", "needs at least one domain on hosts (nginx serves by name)"));
    }
    let tls = match &s.tls {
        Some(t) if t.mode == TlsMode::Secret => {
            // On hosts the pair is a file pair; TlsCertificate's distributeTo writes it there.
            let secret = t.secret_name.as_deref().unwrap_or_default();
            let dir = format!("/etc/nova/tls/{secret}");
            Some(SiteTls { certificate: format!("{dir}/tls.crt"), key: format!("{dir}/tls.key") })
        }
        // The Platform's TlsCertificate (`<name>-tls`, distributed to these hosts) lands here.
        Some(t) if t.mode == TlsMode::Auto => {
            let dir = format!("/etc/nova/tls/{name}-tls");
            Some(SiteTls { certificate: format!("{dir}/tls.crt"), key: format!("{dir}/tls.key") })
        }
        _ => None,
    };
    let memory_max = s
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("memory"))
        .map(|q| kube_memory_to_systemd(&q.0))
        .transpose()?;
    // Linux user names are at most 32 characters.
    let user = if id.len() <= 27 { format!("nova-{id}") } else { format!("nova-{}", &hash(&id)[..10]) };
    let mut app = App {
        id,
        revision: String::new(),
        runtime,
        env,
        health_path,
        domains: s.domains.clone(),
        tls_when_installed: s.tls.as_ref().is_some_and(|t| t.mode == TlsMode::Auto),
        tls,
        user,
        memory_max,
        metrics,
        ports: PORTS,
    };
    app.revision = revision(&app, &s.image);
    // Render once here so that a bad value is refused before anything reaches a host.
    unit(&app, Color::Blue)?;
    if matches!(app.runtime, Runtime::Compose { .. }) {
        compose_file(&app, Color::Blue)?;
    }
    site(&app, Color::Blue)?;
    Ok(app)
}

/// `512Mi` → `512M`; systemd counts in 1024s as Kubernetes' binary suffixes do.
fn kube_memory_to_systemd(q: &str) -> Result<String, String> {
    let (digits, suffix) = q.split_at(q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len()));
    let unit = match suffix {
        "" => "",
        "Ki" => "K",
        "Mi" => "M",
        "Gi" => "G",
        "Ti" => "T",
        _ => {
            return Err(refuse(
                "spec.resources.limits.memory",
                &format!("{q:?} on hosts must be a whole number with Ki, Mi, Gi or Ti, e.g. 512Mi"),
            ));
        }
    };
    if digits.is_empty() {
        return Err(refuse("spec.resources.limits.memory", &format!("{q:?} is not a quantity like 512Mi")));
    }
    Ok(format!("{digits}{unit}"))
}

fn hash(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Same program, arguments, environment and image → same revision.
fn revision(app: &App, image: &str) -> String {
    // Keyed by runtime, so that a systemd application keeps the revision it had before compose
    // existed (an operator upgrade restarts nothing).
    let (field, what) = match &app.runtime {
        Runtime::Systemd { exec } => ("exec", serde_json::json!(exec)),
        Runtime::Compose { port, entrypoint, args, .. } => {
            ("compose", serde_json::json!((port, entrypoint, args)))
        }
    };
    let mut key = serde_json::json!({
        "image": image, "env": app.env, "memory": app.memory_max, "health": app.health_path,
    });
    key[field] = what;
    hash(&key.to_string())[..10].to_owned()
}

pub fn unit(app: &App, c: Color) -> Result<String, String> {
    match &app.runtime {
        Runtime::Systemd { exec } => render::systemd_service(&Service {
            description: format!("Nova application {} ({c})", app.id),
            user: app.user.clone(),
            working_directory: app.work_dir(),
            environment_file: app.env_path(c),
            exec: exec.clone(),
            memory_max: app.memory_max.clone(),
            cpu_quota_percent: None,
        }),
        Runtime::Compose { .. } => render::systemd_compose_service(&ComposeService {
            description: format!("Nova application {} ({c}, compose)", app.id),
            project: app.project(c),
            file: app.compose_path(c),
            compose: COMPOSE_WRAPPER.into(),
            working_directory: format!("/etc/nova/apps/{}", app.id),
        }),
    }
    .map_err(invalid)
}

/// What the application sees: where to listen, which colour and revision it is, and its own
/// environment. With compose `PORT` is the port inside the container.
fn environment(app: &App, c: Color) -> Vec<(String, String)> {
    let port = match app.runtime {
        Runtime::Systemd { .. } => app.port(c),
        Runtime::Compose { port, .. } => port,
    };
    let mut vars = vec![
        ("PORT".to_owned(), port.to_string()),
        ("NOVA_COLOR".to_owned(), c.to_string()),
        ("NOVA_REVISION".to_owned(), app.revision.clone()),
    ];
    vars.extend(app.env.iter().cloned());
    vars
}

/// The colour's environment file (systemd runtime).
pub fn env_file(app: &App, c: Color) -> Result<String, String> {
    render::environment_file(&environment(app, c)).map_err(invalid)
}

/// The colour's compose file (compose runtime): the image published on the colour's port.
pub fn compose_file(app: &App, c: Color) -> Result<String, String> {
    let Runtime::Compose { image, port, entrypoint, args } = &app.runtime else {
        return Err(format!("{}: not a compose application", app.id));
    };
    render::compose(&ComposeApp {
        image: image.clone(),
        port: i64::from(*port),
        host_port: i64::from(app.port(c)),
        entrypoint: entrypoint.clone(),
        command: args.clone(),
        environment: environment(app, c),
        memory_limit: app.memory_max.as_ref().map(|m| m.to_lowercase()),
        // Nova checks health from the host through the published port, which works for any
        // image; Docker's in-container check would need a shell and wget in the image.
        health: None,
        ..Default::default()
    })
    .map_err(invalid)
}

/// The nginx site sending traffic to colour `active`.
pub fn site(app: &App, active: Color) -> Result<RenderedSite, String> {
    site_with(app, active, true)
}

/// The site; with `tls_installed` false, an Auto site is rendered without TLS (its
/// certificate is not on the host yet).
pub fn site_with(app: &App, active: Color, tls_installed: bool) -> Result<RenderedSite, String> {
    let tls = if app.tls_when_installed && !tls_installed { None } else { app.tls.clone() };
    render::nginx_site(&Site {
        name: app.id.clone(),
        domains: app.domains.clone(),
        active_port: i64::from(app.port(active)),
        tls,
        body_size: "10m".into(),
        acme_webroot: ACME_WEBROOT.into(),
        api_rate_per_second: 100,
        login_rate_per_minute: 30,
        include_dir: NGINX_INCLUDE_DIR.into(),
    })
    .map_err(invalid)
}

/// The blue-green rollout a host-targeted Platform runs, one instance per host. Rolling on
/// hosts is the same two-colour switch with no waiting: start the new process, check it,
/// move nginx, stop the old one (a single process cannot be replaced in place without a gap).
pub fn rollout_spec(p: &Platform, hosts: usize) -> BlueGreenDeploymentSpec {
    let strategy = p.spec.strategy.as_ref();
    let bg = match strategy {
        Some(s) if s.type_ == StrategyType::BlueGreen => s.blue_green.clone().unwrap_or_default(),
        _ => BlueGreenStrategy { scale_down_delay_seconds: 0, ..Default::default() },
    };
    BlueGreenDeploymentSpec {
        template: None,
        platform_ref: Some(LocalRef { name: p.metadata.name.clone().unwrap_or_default() }),
        replicas: i32::try_from(hosts).unwrap_or(i32::MAX),
        strategy: bg,
        abort: false,
        revision_history_limit: 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn platform(spec: serde_json::Value) -> Platform {
        serde_json::from_value(json!({
            "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Platform",
            "metadata": {"name": "shop", "namespace": "prod"},
            "spec": spec,
        }))
        .expect("platform")
    }

    fn base() -> serde_json::Value {
        json!({"image": "shop:1", "command": ["/usr/bin/python3", "/opt/app.py"],
               "domains": ["shop.example.com"], "health": {"path": "/healthz"},
               "env": [{"name": "MODE", "value": "a b \"c\""}],
               "target": {"hosts": {"names": ["web-1"]}}})
    }

    #[test]
    fn a_platform_becomes_an_app_with_two_colours() {
        let a = app(&platform(base())).expect("valid");
        assert_eq!(a.id, "prod-shop");
        assert_eq!(a.unit(Color::Green), "nova-prod-shop-green.service");
        let env = env_file(&a, Color::Green).unwrap();
        assert!(env.contains("PORT=\"5002\"") || env.contains("PORT=5002"), "{env}");
        assert!(env.contains(&a.revision));
        let u = unit(&a, Color::Blue).unwrap();
        assert!(u.contains("EnvironmentFile=/etc/nova/apps/prod-shop/blue.env"), "{u}");
        assert!(u.contains("User=nova-prod-shop"));
        let s = site(&a, Color::Green).unwrap();
        assert!(s.site.contains("server 127.0.0.1:5002;"));
    }

    #[test]
    fn debug_names_the_environment_without_its_values() {
        let mut b = base();
        b["env"] = json!([{"name": "DB_PASSWORD", "value": "hunter2-secret"}]);
        let text = format!("{:?}", app(&platform(b)).expect("valid"));
        assert!(text.contains("DB_PASSWORD=***") && !text.contains("hunter2"), "{text}");
    }

    #[test]
    fn revision_follows_what_runs() {
        let a = app(&platform(base())).unwrap();
        let mut b = base();
        b["domains"] = json!(["other.example.com"]);
        assert_eq!(app(&platform(b)).unwrap().revision, a.revision, "domains do not restart the process");
        for (k, v) in [("image", json!("shop:2")), ("args", json!(["--x"])), ("env", json!([]))] {
            let mut c = base();
            c[k] = v;
            assert_ne!(app(&platform(c)).unwrap().revision, a.revision, "{k}");
        }
    }

    #[test]
    fn what_hosts_cannot_run_is_refused_naming_the_field() {
        let cases = [
            ("command", json!([]), "spec.command"),
            ("command", json!(["relative/app"]), "spec.command[0]"),
            ("envFrom", json!([{"secretRef": {"name": "x"}}]), "spec.envFrom"),
            ("env", json!([{"name": "PORT", "value": "1"}]), "spec.env[0].name"),
            ("env", json!([{"name": "A", "value": "x\ny"}]), "spec.env[0]"),
            ("domains", json!([]), "spec.domains"),
            ("resources", json!({"limits": {"memory": "1.5G"}}), "spec.resources.limits.memory"),
        ];
        for (field, value, named) in cases {
            let mut s = base();
            s[field] = value;
            let err = app(&platform(s)).expect_err(field);
            assert!(err.contains(named), "{field}: {err}");
        }
    }

    fn compose(extra: serde_json::Value) -> serde_json::Value {
        let mut b = base();
        b["target"] = json!({"hosts": {"names": ["web-1"], "runtime": "compose"}});
        b["port"] = json!(8080);
        b["command"] = json!([]);
        if let (Some(s), Some(e)) = (b.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        b
    }

    #[test]
    fn with_compose_each_colour_is_a_project_publishing_its_port() {
        let a = app(&platform(compose(json!({"args": ["--greeting", "$HOME\nx"]})))).expect("valid");
        let f = compose_file(&a, Color::Green).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&f).unwrap();
        let svc = &doc["services"]["app"];
        assert_eq!(svc["image"], "shop:1");
        assert_eq!(svc["ports"][0], "127.0.0.1:5002:8080");
        assert_eq!(svc["security_opt"][0], "no-new-privileges:true");
        // PORT is the container's port; `$` is doubled so compose interpolates nothing.
        assert_eq!(svc["environment"]["PORT"], "8080");
        assert_eq!(svc["environment"]["MODE"], "a b \"c\"");
        assert_eq!(svc["environment"]["NOVA_REVISION"], a.revision.as_str());
        assert_eq!(svc["command"][1], "$$HOME\nx");
        let u = unit(&a, Color::Green).unwrap();
        assert!(
            u.contains("-p nova-prod-shop-green -f /etc/nova/apps/prod-shop/green.compose.yaml up -d"),
            "{u}"
        );
        assert_eq!(a.config_path(Color::Blue), "/etc/nova/apps/prod-shop/blue.compose.yaml");
        // The runtime is part of what runs: moving to compose is a new revision.
        assert_ne!(a.revision, app(&platform(base())).unwrap().revision);
    }

    #[test]
    fn compose_refuses_what_it_cannot_carry() {
        for (extra, named) in [
            (json!({"image": "shop:$(id)"}), "spec.image"),
            (json!({"image": "Shop:1"}), "spec.image"),
            (json!({"env": [{"name": "A", "value": "x\ny"}]}), "spec.env[0]"),
        ] {
            let err = app(&platform(compose(extra.clone()))).expect_err(&extra.to_string());
            assert!(err.starts_with(named), "{extra}: {err}");
        }
    }

    #[test]
    fn rolling_on_hosts_is_a_switch_without_delay() {
        let p = platform(base());
        let s = rollout_spec(&p, 3);
        assert_eq!((s.replicas, s.strategy.scale_down_delay_seconds), (3, 0));
        assert!(s.strategy.auto_promotion_enabled);
        let mut b = base();
        b["strategy"] = json!({"type": "BlueGreen", "blueGreen": {"autoPromotionEnabled": false}});
        let s = rollout_spec(&platform(b), 1);
        assert_eq!((s.strategy.auto_promotion_enabled, s.strategy.scale_down_delay_seconds), (false, 30));
    }
}
