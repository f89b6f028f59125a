//! `distributeTo`: the chain and key written on the selected Hosts over SSH (key mode 0600,
//! each file by atomic rename), `nginx -t`, then a graceful reload. When nginx refuses the
//! configuration with the new files, the old files are put back and the host is reported.

use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use crate::api::Host;
use crate::api::common::HostSelector;
use crate::api::tls::{Distribution, Reload, TlsCertificate};
use crate::context::{Blocked, Call, Context, Error};
use crate::kit::finalizer::{SKIP_CLEANUP_ANNOTATION, skip_cleanup};
use crate::ssh::{self, quote, valid_remote_path};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Where the files go: by default `/etc/nova/tls/<secretName>/tls.crt` and `tls.key`, the
/// paths a Platform on hosts with `tls: {mode: Secret, secretName}` serves from.
pub fn paths(c: &TlsCertificate, d: &Distribution) -> (String, String) {
    let dir = format!("/etc/nova/tls/{}", c.spec.secret_name);
    (
        d.certificate_path.clone().unwrap_or_else(|| format!("{dir}/tls.crt")),
        d.key_path.clone().unwrap_or_else(|| format!("{dir}/tls.key")),
    )
}

/// A path a certificate may be written to: a file under Nova's TLS directory (admission says so
/// too; this holds for objects stored before it did).
fn in_nova_dir(p: &str) -> Result<(), String> {
    valid_remote_path(p)?;
    if !p.starts_with("/etc/nova/tls/") {
        return Err(format!("{p:?} is outside /etc/nova/tls/, where distributeTo paths must lie"));
    }
    Ok(())
}

/// The Hosts `sel` picks.
pub async fn selected_hosts(ctx: &Context, sel: &HostSelector) -> Result<Vec<Host>, kube::Error> {
    let hosts = Api::<Host>::all(ctx.client.clone()).list(&Default::default()).await?.items;
    Ok(crate::hostapp::select(&hosts, sel).into_iter().cloned().collect())
}

/// Installs on every selected Host; returns the hosts done and the failures (host: why).
pub async fn run(
    c: &TlsCertificate,
    ctx: &Context,
    d: &Distribution,
    chain: &str,
    key: &str,
) -> Result<(Vec<String>, Vec<String>), Error> {
    let selected =
        selected_hosts(ctx, &d.hosts).await.call(|| "listing Hosts (spec.distributeTo.hosts)".into())?;
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    if selected.is_empty() {
        failed.push("spec.distributeTo.hosts selects no Host".to_owned());
    }
    for h in &selected {
        let name = h.name_any();
        let conn = match crate::hostaccess::connect(h, ctx, &c.namespace().unwrap_or_default()).await {
            Ok(conn) => conn,
            // A Host that cannot be reached or has no key is reported in Distributed and
            // retried; the other hosts still get the certificate.
            Err(e @ (Error::Host(_) | Error::Blocked(_))) => {
                failed.push(e.to_string());
                continue;
            }
            Err(e) => return Err(e),
        };
        let result = install(&conn, c, d, chain, key).await;
        conn.close().await;
        match result {
            Ok(()) => done.push(name),
            Err(msg) => failed.push(format!("{name}: {msg}")),
        }
    }
    Ok((done, failed))
}

async fn install(
    conn: &ssh::Connection,
    c: &TlsCertificate,
    d: &Distribution,
    chain: &str,
    key: &str,
) -> Result<(), String> {
    let (cert_path, key_path) = paths(c, d);
    let mut files: Vec<(String, &str, u32)> = vec![(key_path, key, 0o600), (cert_path, chain, 0o644)];
    for extra in &d.extra_paths {
        files.push((extra.clone(), chain, 0o644));
    }
    for (p, _, _) in &files {
        in_nova_dir(p)?;
    }
    // Keep the old files until nginx accepts the new ones.
    let backup: Vec<String> = files
        .iter()
        .map(|(p, _, _)| {
            let q = quote(p);
            let b = quote(&format!("{p}.nova-old"));
            format!("if [ -f {q} ]; then cp -p {q} {b}; else rm -f {b}; fi")
        })
        .collect();
    conn.run(&backup.join("; "), TIMEOUT).await.map_err(|e| e.to_string())?;
    let mut changed = false;
    for (p, content, mode) in &files {
        changed |= conn
            .upload(p, content.as_bytes(), *mode, Some("root:root"), TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
    }
    let cleanup: Vec<String> =
        files.iter().map(|(p, _, _)| format!("rm -f {}", quote(&format!("{p}.nova-old")))).collect();
    if d.reload == Reload::Nginx && changed {
        let test = conn.exec("nginx -t 2>&1", None, TIMEOUT).await.map_err(|e| e.to_string())?;
        if test.code != 0 {
            let restore: Vec<String> = files
                .iter()
                .map(|(p, _, _)| {
                    let (q, b) = (quote(p), quote(&format!("{p}.nova-old")));
                    format!("if [ -f {b} ]; then mv -f {b} {q}; else rm -f {q}; fi")
                })
                .collect();
            conn.run(&restore.join("; "), TIMEOUT).await.map_err(|e| e.to_string())?;
            let said = test.stdout.lines().filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join(" ");
            return Err(format!("nginx -t refused the new certificate, old files kept: {said}"));
        }
        // As a site switch does: returns once the workers serving the old files are gone.
        conn.run(crate::render::NGINX_RELOAD, TIMEOUT).await.map_err(|e| e.to_string())?;
    }
    conn.run(&cleanup.join("; "), TIMEOUT).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Deleting a distributed certificate: its files go from every selected Host, except files an
/// nginx configuration there still names (a site serving them would fail its next reload);
/// those stay and an event says which. A Host that cannot be reached keeps the certificate,
/// Stalled, until it can or until the skip-cleanup annotation lets it go.
pub async fn remove(c: &TlsCertificate, ctx: &Context) -> Result<Action, Error> {
    let obj = c.object_ref(&());
    let Some(d) = c.spec.distribute_to.as_ref().filter(|_| !skip_cleanup(c)) else {
        if skip_cleanup(c) {
            let note =
                format!("{SKIP_CLEANUP_ANNOTATION} is \"true\": the certificate's files stay on its hosts");
            ctx.publish(&obj, "Delete", EventType::Warning, "CleanupSkipped", &note).await;
        }
        return Ok(Action::await_change());
    };
    let (cert, key) = paths(c, d);
    let mut files = vec![cert, key];
    files.extend(d.extra_paths.iter().cloned());
    for p in &files {
        in_nova_dir(p).map_err(|e| Error::Bug(format!("a distributed path: {e}")))?;
    }
    let selected =
        selected_hosts(ctx, &d.hosts).await.call(|| "listing Hosts (spec.distributeTo.hosts)".into())?;
    let mut kept = Vec::new();
    for h in &selected {
        let conn = match crate::hostaccess::connect(h, ctx, &c.namespace().unwrap_or_default()).await {
            // A Host that does not allow the namespace never got the files.
            Err(Error::Blocked(b)) if b.reason == crate::hostaccess::NOT_ALLOWED => continue,
            other => other,
        };
        let conn = conn.map_err(|e| match e {
            Error::Host(msg) => Blocked::new(
                "CleanupBlocked",
                format!(
                    "removing the certificate's files from Host {} failed: {msg}; the TlsCertificate stays until \
                     they are removed, or annotate it {SKIP_CLEANUP_ANNOTATION}=\"true\" to leave them",
                    h.name_any()
                ),
            )
            .retry(Duration::from_secs(30))
            .into(),
            other => other,
        })?;
        let out = conn.run(&removal_script(&files), TIMEOUT).await;
        conn.close().await;
        let out =
            out.map_err(|e| Error::Host(format!("Host {}: removing certificate files: {e}", h.name_any())))?;
        kept.extend(out.lines().filter(|l| !l.is_empty()).map(|l| format!("{}:{l}", h.name_any())));
    }
    if !kept.is_empty() {
        let note = format!("kept, an nginx configuration still names them: {}", kept.join(", "));
        ctx.publish(&obj, "Delete", EventType::Warning, "FilesKept", &note).await;
    }
    Ok(Action::await_change())
}

/// Shell: removes each file that no file under /etc/nginx names; prints the ones it keeps.
fn removal_script(files: &[String]) -> String {
    files
        .iter()
        .map(|p| {
            let q = quote(p);
            let old = quote(&format!("{p}.nova-old"));
            format!("if [ -e {q} ]; then if grep -rqsF -- {q} /etc/nginx; then echo {q}; else rm -f {q} {old}; fi; fi")
        })
        .collect::<Vec<_>>()
        .join("; ")
}
