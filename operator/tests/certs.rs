//! AcmeIssuer and TlsCertificate through the operator, against the real control plane and a
//! real ACME server (Pebble, on loopback). Pebble validates HTTP-01 on the operator's own HTTP
//! port, which is where the challenge Ingress would route it in a cluster.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions::is_deleted};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use nova::api::{AcmeIssuer, TlsCertificate};
use serde_json::json;
use test_cluster::pebble::{Options as PebbleOptions, Pebble};
use test_cluster::{Mode, shared};

mod common;
use common::{Operator, install_crds};

/// AcmeIssuers and Hosts are cluster-scoped: every operator reconciles every one of them, with
/// its own namespace's Secrets. One Nova manages them per cluster; here, one test at a time.
static ONE_OPERATOR: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn openssl(args: &[&str], dir: &Path) -> Result<String> {
    let out = Command::new("openssl").args(args).current_dir(dir).output().context("openssl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "openssl {args:?}: {text}");
    Ok(text)
}

/// GET https://shop.example.test/ from `ip`, the chain checked against `root.pem` in `dir`;
/// curl's output and errors.
fn https_get(dir: &Path, ip: &str) -> Result<String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--noproxy", "*", "--cacert", "root.pem", "--resolve"])
        .arg(format!("shop.example.test:443:{ip}"))
        .arg("https://shop.example.test/")
        .current_dir(dir)
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// [`https_get`] until the answer contains `want` or `secs` pass; the last answer.
async fn https_until(dir: &Path, ip: &str, want: &str, secs: u64) -> Result<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let got = https_get(dir, ip)?;
        if got.contains(want) || std::time::Instant::now() > deadline {
            return Ok(got);
        }
        // Polled: nginx takes the new configuration, or the rollout looks again, shortly.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn data(s: &Secret, key: &str) -> String {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

/// An AcmeIssuer for `pebble` (HTTP-01 through an Ingress) with its CA bundle in a Secret of
/// `ns`, Ready.
async fn issuer(client: &Client, ns: &str, name: &str, pebble: &Pebble) -> Result<AcmeIssuer> {
    issuer_with(client, ns, name, pebble, json!([{"http01": {"ingress": {"className": "nginx"}}}])).await
}

async fn issuer_with(
    client: &Client,
    ns: &str,
    name: &str,
    pebble: &Pebble,
    solvers: serde_json::Value,
) -> Result<AcmeIssuer> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let ca = std::fs::read_to_string(&pebble.api_ca_path)?;
    let bundle = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pebble-ca"},
                        "stringData": {"ca.crt": ca}});
    secrets.patch("pebble-ca", &PatchParams::apply("test").force(), &Patch::Apply(bundle)).await?;
    let issuers: Api<AcmeIssuer> = Api::all(client.clone());
    let obj: AcmeIssuer = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "AcmeIssuer", "metadata": {"name": name},
        "spec": {"server": pebble.directory_url, "email": "ops@example.test",
                 "accountKeySecretRef": {"name": format!("{name}-account")},
                 "caBundleSecretRef": {"name": "pebble-ca", "key": "ca.crt"},
                 "solvers": solvers},
    }))?;
    issuers.create(&PostParams::default(), &obj).await?;
    let ready = |i: Option<&AcmeIssuer>| {
        i.and_then(|i| i.status.as_ref())
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let got = tokio::time::timeout(Duration::from_secs(60), await_condition(issuers.clone(), name, ready))
        .await
        .context("AcmeIssuer Ready")??;
    got.context("issuer")
}

fn certificate(name: &str, issuer: &str, names: &[&str], extra: serde_json::Value) -> Result<TlsCertificate> {
    let mut spec =
        json!({"dnsNames": names, "issuerRef": {"name": issuer}, "secretName": format!("{name}-tls")});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "TlsCertificate", "metadata": {"name": name},
        "spec": spec,
    }))?)
}

fn cond<'a>(
    c: &'a TlsCertificate,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    c.status.as_ref()?.conditions.iter().find(|x| x.type_ == type_)
}

async fn wait_cert(
    api: &Api<TlsCertificate>,
    name: &str,
    secs: u64,
    what: &str,
    f: impl Fn(&TlsCertificate) -> bool,
) -> Result<TlsCertificate> {
    let got = tokio::time::timeout(
        Duration::from_secs(secs),
        await_condition(api.clone(), name, move |c: Option<&TlsCertificate>| c.is_some_and(&f)),
    )
    .await
    .with_context(|| format!("waiting for {what}"))??;
    got.context("certificate")
}

#[tokio::test]
async fn http01_issuance_renewal_and_key_rotation_on_kubernetes() -> Result<()> {
    let _turn = ONE_OPERATOR.lock().await;
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    install_crds(&client).await?;
    let ns = cp.namespace(&client, "certs").await?;
    let op = Operator::start(client.clone(), &ns).await?;
    let prom = common::dashboards::scraping(op.port())?;
    // Short-lived certificates, so renewal (at 2/3 of the lifetime) happens within the test.
    let opts = PebbleOptions {
        http01_port: op.port(),
        validity: Some(Duration::from_secs(45)),
        ..Default::default()
    };
    let pebble = tokio::task::spawn_blocking(move || Pebble::start_with(opts)).await??;
    let suffix = ns.rsplit('-').next().unwrap_or("x").to_owned();
    let issuer_name = format!("pebble-{suffix}");
    let iss = issuer(&client, &ns, &issuer_name, &pebble).await?;
    let uri = iss.status.and_then(|s| s.account_uri).context("account URI in status")?;
    assert!(uri.starts_with("https://127.0.0.1:"), "{uri}");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let account = secrets.get(&format!("{issuer_name}-account")).await?;
    assert!(data(&account, "tls.key").contains("BEGIN PRIVATE KEY"), "the generated account key is stored");

    // Every challenge object the issuance makes, as the watch sees them.
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &ns);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Ingress>::new()));
    let seen_w = seen.clone();
    let cfg = watcher::Config::default().labels(nova::certs::ingress::LABEL);
    let watch = tokio::spawn(watcher(ingresses.clone(), cfg).applied_objects().try_for_each(move |i| {
        seen_w.lock().unwrap().push(i);
        futures::future::ready(Ok(()))
    }));

    let certs: Api<TlsCertificate> = Api::namespaced(client.clone(), &ns);
    let names = ["shop.example.test", "www.shop.example.test"];
    certs.create(&PostParams::default(), &certificate("shop", &issuer_name, &names, json!({}))?).await?;
    let ready = |c: &TlsCertificate| cond(c, "Ready").is_some_and(|r| r.status == "True");
    let first = wait_cert(&certs, "shop", 60, "first issuance", ready).await?;
    let st = first.status.clone().context("status")?;
    let (nb, na, renew) = (st.not_before.unwrap().0, st.not_after.unwrap().0, st.renewal_time.unwrap().0);
    let third = na.duration_since(nb).as_secs() / 3;
    assert!((renew.duration_since(nb).as_secs() - 2 * third).abs() <= 1, "renewal at 2/3: {nb} {renew} {na}");

    // The Secret: type, full chain verified by openssl against Pebble's root, names, key.
    let secret = secrets.get("shop-tls").await?;
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let chain = data(&secret, "tls.crt");
    let blocks: Vec<&str> = chain.split_inclusive("-----END CERTIFICATE-----\n").collect();
    assert!(blocks.len() >= 2, "full chain: {chain}");
    std::fs::write(d.join("leaf.pem"), blocks[0])?;
    std::fs::write(d.join("rest.pem"), blocks[1..].concat())?;
    std::fs::write(d.join("root.pem"), pebble.issuing_root()?)?;
    std::fs::write(d.join("key.pem"), data(&secret, "tls.key"))?;
    let verified = openssl(&["verify", "-CAfile", "root.pem", "-untrusted", "rest.pem", "leaf.pem"], d)?;
    assert!(verified.contains("leaf.pem: OK"), "{verified}");
    let san = openssl(&["x509", "-in", "leaf.pem", "-noout", "-ext", "subjectAltName"], d)?;
    assert!(names.iter().all(|n| san.contains(&format!("DNS:{n}"))), "{san}");
    assert_eq!(
        openssl(&["pkey", "-in", "key.pem", "-pubout"], d)?,
        openssl(&["x509", "-in", "leaf.pem", "-noout", "-pubkey"], d)?,
        "tls.key is the leaf's key"
    );
    assert!(data(&secret, "ca.crt").contains("BEGIN CERTIFICATE"), "ca.crt holds the issuing CA");

    // The challenge went through an Ingress for the name, to a Service backed by the
    // operator's endpoint; all of it is gone once issued.
    let saw = seen.lock().unwrap().clone();
    let rule_hosts: Vec<String> = saw
        .iter()
        .flat_map(|i| i.spec.iter().flat_map(|s| s.rules.iter().flatten()).filter_map(|r| r.host.clone()))
        .collect();
    assert!(
        names.iter().all(|n| rule_hosts.iter().any(|h| h == n)),
        "an Ingress rule per name: {rule_hosts:?}"
    );
    let path = saw[0]
        .spec
        .as_ref()
        .and_then(|s| s.rules.as_ref())
        .and_then(|r| r[0].http.as_ref())
        .map(|h| h.paths[0].clone());
    let path = path.context("a path")?;
    assert!(path.path.as_deref().is_some_and(|p| p.starts_with("/.well-known/acme-challenge/")), "{path:?}");
    assert_eq!(path.path_type, "Exact");
    let obj = nova::certs::ingress::object_name("shop");
    assert!(ingresses.get_opt(&obj).await?.is_none(), "the challenge Ingress is deleted");
    assert!(Api::<Service>::namespaced(client.clone(), &ns).get_opt(&obj).await?.is_none());
    assert!(Api::<EndpointSlice>::namespaced(client.clone(), &ns).get_opt(&obj).await?.is_none());
    watch.abort();

    let metrics = op.metrics().await?;
    assert!(
        metrics.contains(&format!(
            "nova_certificate_expiration_timestamp_seconds{{name=\"shop\",namespace=\"{ns}\"}} {}",
            na.as_second()
        )),
        "{metrics}"
    );
    assert!(metrics.contains("nova_acme_issuances_total{outcome=\"issued\"} 1"), "{metrics}");
    common::dashboards::assert_every_panel_has_data("certificates", prom.url(), Duration::from_secs(60))
        .await?;

    // Renewal at 2/3 of the lifetime, with a new key (rotationPolicy Always, the default).
    let serial = st.serial_number.clone().unwrap();
    let key1 = data(&secret, "tls.key");
    let renewed = wait_cert(&certs, "shop", 90, "renewal", move |c: &TlsCertificate| {
        c.status.as_ref().and_then(|s| s.serial_number.as_ref()).is_some_and(|s| *s != serial) && ready(c)
    })
    .await?;
    let secret2 = secrets.get("shop-tls").await?;
    assert_ne!(data(&secret2, "tls.key"), key1, "Always: a new key at renewal");
    let renewed_at = renewed.status.as_ref().and_then(|s| s.not_before.clone()).unwrap().0;
    assert!(
        renewed_at >= renew - k8s_openapi::jiff::SignedDuration::from_secs(2),
        "not renewed before its time"
    );

    // rotationPolicy Never: the next renewal keeps the key.
    let never =
        json!({"spec": {"privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Never"}}});
    certs.patch("shop", &PatchParams::default(), &Patch::Merge(never)).await?;
    let serial2 = renewed.status.as_ref().and_then(|s| s.serial_number.clone()).unwrap();
    wait_cert(&certs, "shop", 90, "second renewal", move |c: &TlsCertificate| {
        c.status.as_ref().and_then(|s| s.serial_number.as_ref()).is_some_and(|s| *s != serial2) && ready(c)
    })
    .await?;
    let secret3 = secrets.get("shop-tls").await?;
    assert_eq!(data(&secret3, "tls.key"), data(&secret2, "tls.key"), "Never: the key is kept");

    // A P-384 key asked for: reissued at once with that key.
    let p384 =
        json!({"spec": {"privateKey": {"algorithm": "ECDSA", "size": 384, "rotationPolicy": "Always"}}});
    certs.patch("shop", &PatchParams::default(), &Patch::Merge(p384)).await?;
    let p384_key = |s: Option<&Secret>| {
        s.is_some_and(|s| nova::acme::keys::shape(&data(s, "tls.key")).is_ok_and(|k| k.size == 384))
    };
    tokio::time::timeout(Duration::from_secs(60), await_condition(secrets.clone(), "shop-tls", p384_key))
        .await
        .context("a P-384 key")??;

    // A deleted certificate's gauges go (an expiry alert must not outlive it).
    certs.delete("shop", &DeleteParams::default()).await?;
    let series = format!("nova_certificate_expiration_timestamp_seconds{{name=\"shop\",namespace=\"{ns}\"}}");
    test_cluster::eventually("the deleted certificate's gauges dropped", Duration::from_secs(60), || async {
        Ok::<_, anyhow::Error>(!op.metrics().await?.contains(&series))
    })
    .await?;

    Api::<AcmeIssuer>::all(client.clone()).delete(&issuer_name, &DeleteParams::default()).await?;
    op.stop().await
}

#[tokio::test]
async fn a_failing_challenge_backs_off_and_says_why() -> Result<()> {
    let _turn = ONE_OPERATOR.lock().await;
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    install_crds(&client).await?;
    let ns = cp.namespace(&client, "certfail").await?;
    let op = Operator::start(client.clone(), &ns).await?;
    // Pebble validates on a port where nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let opts = PebbleOptions { http01_port: closed, ..Default::default() };
    let pebble = tokio::task::spawn_blocking(move || Pebble::start_with(opts)).await??;
    let suffix = ns.rsplit('-').next().unwrap_or("x").to_owned();
    let issuer_name = format!("pebble-fail-{suffix}");
    issuer(&client, &ns, &issuer_name, &pebble).await?;

    let certs: Api<TlsCertificate> = Api::namespaced(client.clone(), &ns);
    certs
        .create(
            &PostParams::default(),
            &certificate("down", &issuer_name, &["down.example.test"], json!({}))?,
        )
        .await?;
    let attempts = |n: i32| {
        move |c: &TlsCertificate| {
            c.status.as_ref().and_then(|s| s.failed_issuance_attempts).is_some_and(|a| a >= n)
        }
    };
    let one = wait_cert(&certs, "down", 60, "a failed attempt", attempts(1)).await?;
    let ready = cond(&one, "Ready").context("Ready")?;
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "IssuanceFailed"));
    assert!(
        ready.message.contains("down.example.test") && ready.message.contains("refused"),
        "the message names the challenge and what the server saw: {}",
        ready.message
    );
    let t1 = one.status.as_ref().and_then(|s| s.last_failure_time.clone()).unwrap().0;
    // The test operator's backoff starts at 2 s and doubles.
    let two = wait_cert(&certs, "down", 60, "a second attempt", attempts(2)).await?;
    let t2 = two.status.as_ref().and_then(|s| s.last_failure_time.clone()).unwrap().0;
    assert!(t2.duration_since(t1).as_secs_f64() >= 2.0, "waited out the backoff: {t1} → {t2}");
    let three = wait_cert(&certs, "down", 60, "a third attempt", attempts(3)).await?;
    let t3 = three.status.as_ref().and_then(|s| s.last_failure_time.clone()).unwrap().0;
    assert!(t3.duration_since(t2).as_secs_f64() >= 4.0, "the backoff doubled: {t2} → {t3}");
    let issuing = cond(&three, "Issuing").context("Issuing")?;
    assert_eq!(issuing.status, "False");
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await?;
    assert!(events.items.iter().any(|e| e.reason.as_deref() == Some("IssuanceFailed")), "a Warning event");
    assert!(op.metrics().await?.contains("nova_acme_issuances_total{outcome=\"failed\"}"));

    Api::<AcmeIssuer>::all(client.clone()).delete(&issuer_name, &DeleteParams::default()).await?;
    op.stop().await
}

#[tokio::test]
async fn dns01_through_rfc2136_issues_a_wildcard() -> Result<()> {
    let _turn = ONE_OPERATOR.lock().await;
    let bind = tokio::task::spawn_blocking(|| test_cluster::bind::Bind::start("dns.test")).await??;
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    install_crds(&client).await?;
    let ns = cp.namespace(&client, "dns01").await?;
    let op = Operator::start(client.clone(), &ns).await?;
    // Pebble asks BIND for the TXT records.
    let opts = PebbleOptions { http01_port: op.port(), dns_server: Some(bind.addr), ..Default::default() };
    let pebble = tokio::task::spawn_blocking(move || Pebble::start_with(opts)).await??;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let tsig = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tsig"},
                      "stringData": {"secret": bind.key_secret}});
    secrets.patch("tsig", &PatchParams::apply("test").force(), &Patch::Apply(tsig)).await?;
    let suffix = ns.rsplit('-').next().unwrap_or("x").to_owned();
    let issuer_name = format!("pebble-dns-{suffix}");
    let dns = json!([{"dns01": {"rfc2136": {"nameserver": bind.addr.to_string(), "tsigKeyName": bind.key_name,
                                            "tsigSecretRef": {"name": "tsig", "key": "secret"}}}}]);
    issuer_with(&client, &ns, &issuer_name, &pebble, dns).await?;
    let issuers: Api<AcmeIssuer> = Api::all(client.clone());

    let certs: Api<TlsCertificate> = Api::namespaced(client.clone(), &ns);
    let names = ["*.dns.test", "dns.test"];
    certs.create(&PostParams::default(), &certificate("wild", &issuer_name, &names, json!({}))?).await?;
    let ready = |c: &TlsCertificate| cond(c, "Ready").is_some_and(|r| r.status == "True");
    wait_cert(&certs, "wild", 90, "a wildcard certificate over DNS-01", ready).await?;
    let secret = secrets.get("wild-tls").await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("leaf.pem"), data(&secret, "tls.crt"))?;
    let san = openssl(&["x509", "-in", "leaf.pem", "-noout", "-ext", "subjectAltName"], dir.path())?;
    assert!(san.contains("DNS:*.dns.test") && san.contains("DNS:dns.test"), "{san}");
    // The challenge records are deleted once issued.
    let left = bind.txt("_acme-challenge.dns.test")?;
    assert!(left.is_empty(), "TXT records left behind: {left:?}");

    // A wildcard with an issuer that has only HTTP-01 is refused naming the field.
    let http_only = format!("pebble-http-{suffix}");
    issuer_with(&client, &ns, &http_only, &pebble, json!([{"http01": {"ingress": {}}}])).await?;
    certs
        .create(&PostParams::default(), &certificate("wild2", &http_only, &["*.dns.test"], json!({}))?)
        .await?;
    let refused = wait_cert(&certs, "wild2", 60, "a refusal", |c: &TlsCertificate| {
        cond(c, "Issuing").is_some_and(|i| i.reason == "InvalidSpec")
    })
    .await?;
    let msg = &cond(&refused, "Issuing").unwrap().message;
    assert!(msg.contains("spec.dnsNames[0]") && msg.contains("DNS-01"), "{msg}");
    for n in [&issuer_name, &http_only] {
        issuers.delete(n, &DeleteParams::default()).await?;
    }
    op.stop().await
}

/// A Host object for a test host, reached with the key in Secret `key` of `ns`.
async fn test_host(
    client: &Client,
    ns: &str,
    name: &str,
    th: &test_cluster::testhost::TestHost,
) -> Result<()> {
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "key"}, "stringData": {"id_ed25519": th.client_key}}),
    )?;
    Api::<Secret>::namespaced(client.clone(), ns).create(&PostParams::default(), &s).await?;
    let h: nova::api::Host = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Host", "metadata": {"name": name},
        "spec": {"address": th.ssh_addr.ip().to_string(), "hostKey": th.host_key,
                 "sshKeySecretRef": {"name": "key", "key": "id_ed25519"}},
    }))?;
    Api::<nova::api::Host>::all(client.clone()).create(&PostParams::default(), &h).await?;
    Ok(())
}

#[tokio::test]
async fn webroot_challenge_and_distribution_to_a_host_served_by_its_nginx() -> Result<()> {
    let _turn = ONE_OPERATOR.lock().await;
    let th = tokio::task::spawn_blocking(|| test_cluster::testhost::TestHost::start("tls")).await??;
    th.ssh("apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >/dev/null && systemctl start nginx")?;
    // Port 80 serves the ACME path from the webroot, as the site Nova renders does
    // (templates/nginx/site.conf.tera).
    th.ssh(
        "rm -f /etc/nginx/sites-enabled/default && printf 'server {\\n listen 80 default_server;\\n \
         location ^~ /.well-known/acme-challenge/ { root /var/www/acme; }\\n}\\n' > /etc/nginx/conf.d/acme.conf \
         && nginx -t 2>/dev/null && systemctl reload nginx",
    )?;
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    install_crds(&client).await?;
    let ns = cp.namespace(&client, "certhost").await?;
    let suffix = ns.rsplit('-').next().unwrap_or("x").to_owned();
    let host_name = format!("tls-{suffix}");
    test_host(&client, &ns, &host_name, &th).await?;
    let op = Operator::start(client.clone(), &ns).await?;
    // Pebble resolves every name to the host and validates on its port 80: the webroot path.
    let std::net::IpAddr::V4(host_ip) = th.ssh_addr.ip() else { anyhow::bail!("an IPv4 test host") };
    let opts = PebbleOptions { http01_port: 80, default_ipv4: Some(host_ip), ..Default::default() };
    let pebble = tokio::task::spawn_blocking(move || Pebble::start_with(opts)).await??;
    let issuer_name = format!("pebble-host-{suffix}");
    let webroot = json!([{"http01": {"webroot": {"path": "/var/www/acme"}}}]);
    issuer_with(&client, &ns, &issuer_name, &pebble, webroot).await?;

    let certs: Api<TlsCertificate> = Api::namespaced(client.clone(), &ns);
    let dist = json!({"distributeTo": {"hosts": {"names": [host_name]}}});
    certs
        .create(
            &PostParams::default(),
            &certificate("shop", &issuer_name, &["shop.example.test"], dist.clone())?,
        )
        .await?;
    let distributed = |c: &TlsCertificate| cond(c, "Distributed").is_some_and(|d| d.status == "True");
    let done = wait_cert(&certs, "shop", 120, "distribution to the host", distributed).await?;
    assert!(cond(&done, "Distributed").unwrap().message.contains(&host_name));
    assert_eq!(
        th.ssh("stat -c '%a %U' /etc/nova/tls/shop-tls/tls.key")?.trim(),
        "600 root",
        "the key is private"
    );

    // The host's nginx serves it; curl checks the chain against Pebble's root and the name.
    th.ssh(
        "printf 'server {\\n listen 443 ssl;\\n server_name shop.example.test;\\n \
         ssl_certificate /etc/nova/tls/shop-tls/tls.crt;\\n ssl_certificate_key /etc/nova/tls/shop-tls/tls.key;\\n \
         location / { return 200 \"tls ok\\\\n\"; }\\n}\\n' > /etc/nginx/conf.d/shop.conf && nginx -t 2>/dev/null && systemctl reload nginx",
    )?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("root.pem"), pebble.issuing_root()?)?;
    let ip = th.ssh_addr.ip().to_string();
    // nginx's reload is graceful: new workers take over shortly after systemctl returns.
    let served = https_until(dir.path(), &ip, "tls ok", 10).await?;
    assert_eq!(served.trim(), "tls ok", "TLS handshake verified against Pebble's root");

    // nginx refusing its configuration: the new certificate is not installed, the old stays.
    let before = th.ssh("cat /etc/nova/tls/shop-tls/tls.crt")?;
    th.ssh("echo 'this is not nginx;' > /etc/nginx/conf.d/broken.conf")?;
    let names = json!({"spec": {"dnsNames": ["shop.example.test", "www.shop.example.test"]}});
    certs.patch("shop", &PatchParams::default(), &Patch::Merge(names)).await?;
    let refused = wait_cert(&certs, "shop", 120, "a refused distribution", |c: &TlsCertificate| {
        cond(c, "Distributed").is_some_and(|d| d.status == "False")
    })
    .await?;
    let msg = &cond(&refused, "Distributed").unwrap().message;
    assert!(msg.contains("nginx -t") && msg.contains("old files kept"), "{msg}");
    assert_eq!(th.ssh("cat /etc/nova/tls/shop-tls/tls.crt")?, before, "the old chain is still in place");
    assert!(https_get(dir.path(), &ip)?.contains("tls ok"), "and still served");

    // Deleted while a site still names its files: the files stay (the site would fail its next
    // reload without them), an event says so, and the certificate goes.
    th.ssh("rm -f /etc/nginx/conf.d/broken.conf")?;
    let uid = certs.get("shop").await?.metadata.uid.context("uid")?;
    certs.delete("shop", &DeleteParams::default()).await?;
    tokio::time::timeout(Duration::from_secs(60), await_condition(certs.clone(), "shop", is_deleted(&uid)))
        .await
        .context("the certificate goes")??;
    assert_eq!(th.ssh("test -f /etc/nova/tls/shop-tls/tls.key && echo kept")?.trim(), "kept");
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().fields("regarding.name=shop"))
        .await?;
    assert!(events.items.iter().any(|e| e.reason.as_deref() == Some("FilesKept")), "{events:?}");

    // A certificate no site uses: deleted, its files go from the host.
    certs
        .create(&PostParams::default(), &certificate("api", &issuer_name, &["api.example.test"], dist)?)
        .await?;
    wait_cert(&certs, "api", 120, "distribution of the second certificate", distributed).await?;
    assert_eq!(th.ssh("ls /etc/nova/tls/api-tls")?.split_whitespace().count(), 2, "tls.crt and tls.key");
    let uid = certs.get("api").await?.metadata.uid.context("uid")?;
    certs.delete("api", &DeleteParams::default()).await?;
    tokio::time::timeout(Duration::from_secs(60), await_condition(certs.clone(), "api", is_deleted(&uid)))
        .await
        .context("the second certificate goes")??;
    assert_eq!(th.ssh("ls -A /etc/nova/tls/api-tls 2>/dev/null || true")?.trim(), "", "its files are gone");

    Api::<nova::api::Host>::all(client.clone()).delete(&host_name, &DeleteParams::default()).await?;
    Api::<AcmeIssuer>::all(client.clone()).delete(&issuer_name, &DeleteParams::default()).await?;
    op.stop().await
}

#[tokio::test]
async fn platform_tls_auto_gets_a_certificate_for_its_domains() -> Result<()> {
    let _turn = ONE_OPERATOR.lock().await;
    use nova::api::Platform;
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    install_crds(&client).await?;
    let ns = cp.namespace(&client, "tlsauto").await?;
    let op = Operator::start(client.clone(), &ns).await?;
    let opts = PebbleOptions { http01_port: op.port(), ..Default::default() };
    let pebble = tokio::task::spawn_blocking(move || Pebble::start_with(opts)).await??;

    // Auto with no issuer named and none marked default: refused naming the field, nothing made.
    let platforms: Api<Platform> = Api::namespaced(client.clone(), &ns);
    let p: Platform = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Platform", "metadata": {"name": "shop"},
        "spec": {"image": "shop:1", "domains": ["shop.auto.test", "www.shop.auto.test"], "tls": {"mode": "Auto"}},
    }))?;
    platforms.create(&PostParams::default(), &p).await?;
    let refused = |p: Option<&Platform>| {
        p.and_then(|p| p.status.as_ref()).is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Ready" && c.reason == "MissingDependency" && c.message.contains("spec.tls.issuer")
            })
        })
    };
    tokio::time::timeout(Duration::from_secs(60), await_condition(platforms.clone(), "shop", refused))
        .await
        .context("MissingDependency naming spec.tls.issuer")??;
    let certs: Api<TlsCertificate> = Api::namespaced(client.clone(), &ns);
    assert!(certs.get_opt("shop").await?.is_none());

    // An issuer marked default: the certificate is made for the domains and issued into the
    // Secret the Ingress serves.
    let suffix = ns.rsplit('-').next().unwrap_or("x").to_owned();
    let issuer_name = format!("pebble-auto-{suffix}");
    issuer(&client, &ns, &issuer_name, &pebble).await?;
    let mark = json!({"metadata": {"annotations": {"nova.infra.dev/default-issuer": "true"}}});
    Api::<AcmeIssuer>::all(client.clone())
        .patch(&issuer_name, &PatchParams::default(), &Patch::Merge(mark))
        .await?;
    let ready = |c: &TlsCertificate| cond(c, "Ready").is_some_and(|r| r.status == "True");
    let cert = wait_cert(&certs, "shop", 90, "the Platform's certificate", ready).await?;
    assert_eq!(cert.spec.dns_names, ["shop.auto.test", "www.shop.auto.test"]);
    assert_eq!(cert.spec.issuer_ref.name, issuer_name);
    let ingress = Api::<Ingress>::namespaced(client.clone(), &ns).get("shop").await?;
    let served = ingress.spec.and_then(|s| s.tls).and_then(|t| t[0].secret_name.clone());
    assert_eq!(served.as_deref(), Some(cert.spec.secret_name.as_str()));
    let secret = Api::<Secret>::namespaced(client.clone(), &ns).get(&cert.spec.secret_name).await?;
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));

    // TLS turned off: the certificate goes (the Secret stays, as with cert-manager).
    let uid = cert.metadata.uid.clone().context("uid")?;
    platforms.patch("shop", &PatchParams::default(), &Patch::Merge(json!({"spec": {"tls": null}}))).await?;
    let gone = kube::runtime::conditions::is_deleted(&uid);
    tokio::time::timeout(Duration::from_secs(60), await_condition(certs.clone(), "shop", gone))
        .await
        .context("the certificate deleted")??;
    assert!(Api::<Secret>::namespaced(client.clone(), &ns).get_opt(&cert.spec.secret_name).await?.is_some());
    Api::<AcmeIssuer>::all(client.clone()).delete(&issuer_name, &DeleteParams::default()).await?;
    op.stop().await
}

#[tokio::test]
async fn deleting_a_certificate_mid_challenge_removes_its_challenge_objects() -> Result<()> {
    let _turn = ONE_OPERATOR.lock().await;
    // Simulated mode: kube-controller-manager's garbage collector runs.
    let cp = shared(Mode::Simulated).await?;
    let client = cp.client().await?;
    install_crds(&client).await?;
    let ns = cp.namespace(&client, "certdel").await?;
    let op = Operator::start(client.clone(), &ns).await?;
    // Pebble validates against a listener that accepts and never answers: the challenge stays
    // pending.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let silent_port = silent.local_addr()?.port();
    let opts = PebbleOptions { http01_port: silent_port, ..Default::default() };
    let pebble = tokio::task::spawn_blocking(move || Pebble::start_with(opts)).await??;
    let suffix = ns.rsplit('-').next().unwrap_or("x").to_owned();
    let issuer_name = format!("pebble-del-{suffix}");
    issuer(&client, &ns, &issuer_name, &pebble).await?;

    let certs: Api<TlsCertificate> = Api::namespaced(client.clone(), &ns);
    certs
        .create(
            &PostParams::default(),
            &certificate("pending", &issuer_name, &["pending.example.test"], json!({}))?,
        )
        .await?;
    let obj = nova::certs::ingress::object_name("pending");
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &ns);
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(ingresses.clone(), &obj, |i: Option<&Ingress>| i.is_some()),
    )
    .await
    .context("the challenge Ingress")??;
    assert!(Api::<Service>::namespaced(client.clone(), &ns).get_opt(&obj).await?.is_some());

    certs.delete("pending", &DeleteParams::default()).await?;
    let gone = |i: Option<&Ingress>| i.is_none();
    tokio::time::timeout(Duration::from_secs(60), await_condition(ingresses.clone(), &obj, gone))
        .await
        .context("challenge Ingress deleted with its certificate")??;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    tokio::time::timeout(Duration::from_secs(60), async {
        while services.get_opt(&obj).await?.is_some() || slices.get_opt(&obj).await?.is_some() {
            let w = await_condition(services.clone(), &obj, |s: Option<&Service>| s.is_none());
            let _ = tokio::time::timeout(Duration::from_secs(1), w).await;
        }
        anyhow::Ok(())
    })
    .await
    .context("challenge Service and EndpointSlice deleted")??;
    drop(silent);
    Api::<AcmeIssuer>::all(client.clone()).delete(&issuer_name, &DeleteParams::default()).await?;
    op.stop().await
}

#[tokio::test]
async fn profiles_and_renewal_information_with_a_newer_pebble() -> Result<()> {
    let _turn = ONE_OPERATOR.lock().await;
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    install_crds(&client).await?;
    let ns = cp.namespace(&client, "ari").await?;
    let op = Operator::start(client.clone(), &ns).await?;
    let profiles = vec![
        ("default".to_owned(), Duration::from_secs(90 * 24 * 3600)),
        ("shortlived".to_owned(), Duration::from_secs(3600)),
    ];
    let opts =
        PebbleOptions { http01_port: op.port(), modern_profiles: Some(profiles), ..Default::default() };
    let pebble = tokio::task::spawn_blocking(move || Pebble::start_with(opts)).await??;
    let suffix = ns.rsplit('-').next().unwrap_or("x").to_owned();
    let issuer_name = format!("pebble-ari-{suffix}");
    issuer(&client, &ns, &issuer_name, &pebble).await?;

    // The profile asked for decides the lifetime (Pebble picks one at random when none is).
    let certs: Api<TlsCertificate> = Api::namespaced(client.clone(), &ns);
    let short =
        certificate("short", &issuer_name, &["short.example.test"], json!({"profile": "shortlived"}))?;
    certs.create(&PostParams::default(), &short).await?;
    certs
        .create(
            &PostParams::default(),
            &certificate("long", &issuer_name, &["long.example.test"], json!({"profile": "default"}))?,
        )
        .await?;
    let ready = |c: &TlsCertificate| cond(c, "Ready").is_some_and(|r| r.status == "True");
    let s = wait_cert(&certs, "short", 60, "the short-lived certificate", ready).await?;
    let l = wait_cert(&certs, "long", 60, "the default-profile certificate", ready).await?;
    let lifetime = |c: &TlsCertificate| {
        let st = c.status.as_ref().unwrap();
        st.not_after.as_ref().unwrap().0.duration_since(st.not_before.as_ref().unwrap().0).as_secs()
    };
    assert!((3500..=3700).contains(&lifetime(&s)), "shortlived: {} s", lifetime(&s));
    assert!(lifetime(&l) > 80 * 24 * 3600, "default: {} s", lifetime(&l));

    // The server's renewal window moves renewal forward: Pebble is told the short-lived
    // certificate should be renewed now; a reconcile asks, and renews well before 2/3.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let chain = data(&secrets.get("short-tls").await?, "tls.crt");
    let leaf = chain.split_inclusive("-----END CERTIFICATE-----\n").next().unwrap_or_default().to_owned();
    let now = k8s_openapi::jiff::Timestamp::now();
    let window = json!({"suggestedWindow": {
        "start": (now - k8s_openapi::jiff::SignedDuration::from_secs(60)).to_string(),
        "end": (now + k8s_openapi::jiff::SignedDuration::from_secs(5)).to_string()}});
    pebble.set_renewal_info(&leaf, &window)?;
    let serial = s.status.as_ref().and_then(|st| st.serial_number.clone()).unwrap();
    let nudge = json!({"metadata": {"annotations": {"test/nudge": "1"}}});
    certs.patch("short", &PatchParams::default(), &Patch::Merge(nudge)).await?;
    let renewed = wait_cert(&certs, "short", 60, "renewal from the ARI window", move |c: &TlsCertificate| {
        c.status.as_ref().and_then(|s| s.serial_number.as_ref()).is_some_and(|s| *s != serial) && ready(c)
    })
    .await?;
    let issuing = cond(&renewed, "Issuing").map(|c| c.message.clone()).unwrap_or_default();
    assert!(issuing.contains("renewal time"), "renewed because it was due: {issuing}");
    Api::<AcmeIssuer>::all(client.clone()).delete(&issuer_name, &DeleteParams::default()).await?;
    op.stop().await
}

#[tokio::test]
async fn platform_tls_auto_on_a_host() -> Result<()> {
    let _turn = ONE_OPERATOR.lock().await;
    let th = tokio::task::spawn_blocking(|| test_cluster::testhost::TestHost::start("auto")).await??;
    std::fs::create_dir_all(th.root().join("opt"))?;
    std::fs::write(th.root().join("opt/app.py"), common::TEST_APP)?;
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    install_crds(&client).await?;
    let ns = cp.namespace(&client, "autohost").await?;
    let suffix = ns.rsplit('-').next().unwrap_or("x").to_owned();
    let host_name = format!("auto-{suffix}");
    test_host(&client, &ns, &host_name, &th).await?;
    let op = Operator::start(client.clone(), &ns).await?;
    // Every name resolves to the host; Pebble validates through the site Nova renders there.
    let std::net::IpAddr::V4(host_ip) = th.ssh_addr.ip() else { anyhow::bail!("an IPv4 test host") };
    let opts = PebbleOptions { http01_port: 80, default_ipv4: Some(host_ip), ..Default::default() };
    let pebble = tokio::task::spawn_blocking(move || Pebble::start_with(opts)).await??;
    let issuer_name = format!("pebble-autohost-{suffix}");
    issuer_with(&client, &ns, &issuer_name, &pebble, json!([{"http01": {"webroot": {}}}])).await?;

    let platforms: Api<nova::api::Platform> = Api::namespaced(client.clone(), &ns);
    let p: nova::api::Platform = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Platform", "metadata": {"name": "shop"},
        "spec": {"image": "shop:v1", "command": ["/usr/bin/python3", "/opt/app.py"],
                 "env": [{"name": "VERSION", "value": "v1"}], "domains": ["shop.example.test"],
                 "health": {"path": "/healthz"}, "tls": {"mode": "Auto", "issuer": issuer_name},
                 "target": {"hosts": {"names": [host_name]}}},
    }))?;
    platforms.create(&PostParams::default(), &p).await?;
    let certs: Api<TlsCertificate> = Api::namespaced(client.clone(), &ns);
    let done = |c: &TlsCertificate| {
        cond(c, "Ready").is_some_and(|r| r.status == "True")
            && cond(c, "Distributed").is_some_and(|d| d.status == "True")
    };
    let cert = wait_cert(&certs, "shop", 180, "the Platform's certificate on its host", done).await?;
    assert_eq!(cert.spec.dns_names, ["shop.example.test"]);

    // The site turns to TLS once the files are there: the app over HTTPS, verified by curl
    // against Pebble's root.
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("root.pem"), pebble.issuing_root()?)?;
    let ip = th.ssh_addr.ip().to_string();
    let served = https_until(dir.path(), &ip, "v1 blue", 60).await?;
    assert_eq!(served.trim(), "v1 blue", "the application over verified HTTPS");
    Api::<nova::api::Host>::all(client.clone()).delete(&host_name, &DeleteParams::default()).await?;
    Api::<AcmeIssuer>::all(client.clone()).delete(&issuer_name, &DeleteParams::default()).await?;
    op.stop().await
}
