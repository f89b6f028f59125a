//! ACME issuance against a real ACME server: Pebble (Let's Encrypt's test server) with its DNS
//! mock on loopback, HTTP-01 answered by Nova's solver; the result checked with openssl.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use nova::acme::{self, Directory, solver::Http01};
use test_cluster::pebble::Pebble;

/// Serves the solver on a free loopback port; returns the port.
async fn serve(solver: &Http01) -> Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = solver.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(port)
}

fn openssl(args: &[&str], dir: &Path) -> Result<String> {
    let out = Command::new("openssl").args(args).current_dir(dir).output().context("openssl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "openssl {args:?}: {text}");
    Ok(text)
}

#[tokio::test]
async fn http01_issuance_against_pebble_and_account_reuse() -> Result<()> {
    let solver = Http01::default();
    let port = serve(&solver).await?;
    let pebble = tokio::task::spawn_blocking(move || Pebble::start(port)).await??;
    let dir = Directory { url: pebble.directory_url.clone(), root_pem: Some(pebble.api_ca_path.clone()) };

    let (account, creds) = acme::account(&dir, None, &["mailto:ops@example.test".into()]).await?;
    let names = vec!["shop.example.test".to_owned(), "www.shop.example.test".to_owned()];
    let issued = acme::issue(&dir, &account, &names, &solver, Duration::from_secs(30)).await?;
    assert_eq!(solver.pending(), 0, "challenge tokens are removed once issued");
    assert!(!format!("{issued:?}").contains("PRIVATE KEY"), "Debug never shows the key");

    // Checked by an independent tool: the chain leads to Pebble's root, the names are in the
    // leaf, and the key is the leaf's.
    let files = tempfile::tempdir()?;
    let d = files.path();
    let certs: Vec<&str> = issued.chain_pem.split_inclusive("-----END CERTIFICATE-----\n").collect();
    assert!(certs.len() >= 2, "leaf and intermediate: {}", issued.chain_pem);
    std::fs::write(d.join("leaf.pem"), certs[0])?;
    std::fs::write(d.join("rest.pem"), certs[1..].concat())?;
    std::fs::write(d.join("root.pem"), pebble.issuing_root()?)?;
    std::fs::write(d.join("key.pem"), &issued.key_pem)?;
    let verified = openssl(&["verify", "-CAfile", "root.pem", "-untrusted", "rest.pem", "leaf.pem"], d)?;
    assert!(verified.contains("leaf.pem: OK"), "{verified}");
    let san = openssl(&["x509", "-in", "leaf.pem", "-noout", "-ext", "subjectAltName"], d)?;
    assert!(san.contains("DNS:shop.example.test") && san.contains("DNS:www.shop.example.test"), "{san}");
    let key_type = openssl(&["pkey", "-in", "key.pem", "-noout", "-text"], d)?;
    assert!(key_type.contains("prime256v1") || key_type.contains("P-256"), "ECDSA P-256: {key_type}");
    let from_key = openssl(&["pkey", "-in", "key.pem", "-pubout"], d)?;
    let from_cert = openssl(&["x509", "-in", "leaf.pem", "-noout", "-pubkey"], d)?;
    assert_eq!(from_key, from_cert, "the key belongs to the certificate");

    // The stored credentials restore the same account, which orders again.
    let (again, same) = acme::account(&dir, Some(&creds), &[]).await?;
    assert_eq!(same, creds);
    let more =
        acme::issue(&dir, &again, &["api.example.test".to_owned()], &solver, Duration::from_secs(30)).await?;
    assert!(more.chain_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    Ok(())
}

#[tokio::test]
async fn a_failing_challenge_says_which_and_what_the_server_saw() -> Result<()> {
    // Pebble validates on a port where nothing answers: bound here and never listened on, so
    // connections are refused and no other test's server can take the port meanwhile (a port
    // merely picked and let go was taken once, and answered 404).
    let held = tokio::net::TcpSocket::new_v4()?;
    held.bind("127.0.0.1:0".parse()?)?;
    let closed = held.local_addr()?.port();
    let pebble = tokio::task::spawn_blocking(move || Pebble::start(closed)).await??;
    let dir = Directory { url: pebble.directory_url.clone(), root_pem: Some(pebble.api_ca_path.clone()) };
    let solver = Http01::default();
    let (account, _) = acme::account(&dir, None, &[]).await?;
    let err =
        acme::issue(&dir, &account, &["down.example.test".to_owned()], &solver, Duration::from_secs(30))
            .await
            .expect_err("nobody answers the challenge");
    let msg = err.to_string();
    assert!(msg.contains("Http01 challenge for down.example.test"), "{msg}");
    assert!(msg.to_lowercase().contains("connect"), "the server's reason is kept: {msg}");
    assert_eq!(solver.pending(), 0, "tokens are removed after a failure too");
    drop(held);
    Ok(())
}

#[tokio::test]
async fn external_account_binding_when_the_server_requires_it() -> Result<()> {
    use base64::Engine;
    let hmac = [7u8; 32];
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hmac);
    let opts = test_cluster::pebble::Options {
        http01_port: 1,
        eab: Some(("kid-1".into(), b64)),
        ..Default::default()
    };
    let pebble = tokio::task::spawn_blocking(move || Pebble::start_with(opts)).await??;
    let dir = Directory { url: pebble.directory_url.clone(), root_pem: Some(pebble.api_ca_path.clone()) };
    let refused = match acme::account_for_key(&dir, None, &[], None).await {
        Ok(_) => anyhow::bail!("registered without the binding the server requires"),
        Err(e) => e.to_string(),
    };
    assert!(refused.contains("externalAccountRequired"), "{refused}");
    let eab = instant_acme::ExternalAccountKey::new("kid-1".into(), &hmac);
    let (account, key_pem) = acme::account_for_key(&dir, None, &[], Some(&eab)).await?;
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    // The stored key finds the same account again, without the binding.
    let (again, _) = acme::account_for_key(&dir, Some(&key_pem), &[], None).await?;
    assert_eq!(again.id(), account.id());
    Ok(())
}
