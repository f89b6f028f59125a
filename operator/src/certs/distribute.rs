//! `distributeTo`: the chain and key written on the selected Hosts over SSH (key mode 0600,
//! each file by atomic rename), `nginx -t`, then a graceful reload. When nginx refuses the
//! configuration with the new files, the old files are put back and the host is reported.

use std::time::Duration;

use kube::{Api, ResourceExt};

use crate::api::Host;
use crate::api::common::HostSelector;
use crate::api::tls::{Distribution, Reload, TlsCertificate};
use crate::context::{Call, Context, Error};
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
        let conn = match crate::host::connect(h, ctx).await {
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
        valid_remote_path(p)?;
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
        conn.run("systemctl reload nginx || nginx -s reload", TIMEOUT).await.map_err(|e| e.to_string())?;
    }
    conn.run(&cleanup.join("; "), TIMEOUT).await.map_err(|e| e.to_string())?;
    Ok(())
}
