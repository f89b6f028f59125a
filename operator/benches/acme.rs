//! ACME issuance: 100 certificates from Pebble with Nova's ACME path, and the same 100 with
//! certbot one after another, in one run. See docs/benchmarks.md.
//!
//!     cargo bench -p nova --bench acme -- [--certs 100] [--concurrency 16] [--certbot PATH]
//!
//! Needs pebble and certbot (`apt-get install pebble certbot`). Each tool gets its own Pebble
//! (same settings) and registers its own account inside the timed part.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use nova::acme::{self, Directory, solver::Http01};
use test_cluster::pebble::Pebble;

mod common;
use common::{arg, median};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// Nova: one account, `n` orders at most `concurrency` at a time (as the controller runs
/// them). Returns the total and each order's time.
async fn nova(n: usize, concurrency: usize) -> (Duration, Vec<f64>) {
    let solver = Http01::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let app = solver.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let pebble =
        tokio::task::spawn_blocking(move || Pebble::start(port)).await.expect("join").expect("pebble");
    let dir = Directory { url: pebble.directory_url.clone(), root_pem: Some(pebble.api_ca_path.clone()) };
    let started = Instant::now();
    let (account, _) = acme::account(&dir, None, &[]).await.expect("account");
    let times: Vec<f64> = stream::iter(0..n)
        .map(|i| {
            let (dir, account, solver) = (&dir, &account, &solver);
            async move {
                let t = Instant::now();
                let names = vec![format!("n{i}.nova.bench.test")];
                acme::issue(dir, account, &names, solver, Duration::from_secs(60)).await.expect("issued");
                t.elapsed().as_secs_f64()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    (started.elapsed(), times)
}

/// certbot: `certonly --standalone` per certificate, one after another.
fn certbot(bin: &str, n: usize) -> (Duration, Vec<f64>) {
    let port = free_port();
    let pebble = Pebble::start(port).expect("pebble");
    let work = tempfile::tempdir().expect("tempdir");
    let d: &Path = work.path();
    let started = Instant::now();
    let mut times = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        let out = Command::new(bin)
            .args([
                "certonly",
                "--standalone",
                "--non-interactive",
                "--agree-tos",
                "--register-unsafely-without-email",
            ])
            .args([
                "--key-type",
                "ecdsa",
                "--http-01-address",
                "127.0.0.1",
                "--http-01-port",
                &port.to_string(),
            ])
            .args(["--server", &pebble.directory_url, "-d", &format!("n{i}.certbot.bench.test")])
            .arg("--config-dir")
            .arg(d.join("config"))
            .arg("--work-dir")
            .arg(d.join("work"))
            .arg("--logs-dir")
            .arg(d.join("logs"))
            .env("REQUESTS_CA_BUNDLE", &pebble.api_ca_path)
            .output()
            .expect("certbot runs");
        assert!(out.status.success(), "certbot: {}", String::from_utf8_lossy(&out.stderr));
        times.push(t.elapsed().as_secs_f64());
    }
    (started.elapsed(), times)
}

#[tokio::main]
async fn main() {
    let n: usize = arg("--certs").and_then(|v| v.parse().ok()).unwrap_or(100);
    let concurrency: usize = arg("--concurrency").and_then(|v| v.parse().ok()).unwrap_or(16);
    let bin = arg("--certbot").unwrap_or_else(|| "certbot".into());
    let version = Command::new(&bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let Ok(version) = version else {
        eprintln!("certbot not found (apt-get install certbot, or --certbot PATH)");
        std::process::exit(2);
    };
    println!("{n} certificates from Pebble; {version}");
    let (nova_total, nova_times) = nova(n, concurrency).await;
    println!(
        "nova    concurrency {concurrency:>2}: total {:>7.2} s, per certificate median {:.3} s",
        nova_total.as_secs_f64(),
        median(nova_times)
    );
    let (serial_total, serial_times) = nova(n, 1).await;
    println!(
        "nova    concurrency  1: total {:>7.2} s, per certificate median {:.3} s",
        serial_total.as_secs_f64(),
        median(serial_times)
    );
    let (cb_total, cb_times) = tokio::task::spawn_blocking(move || certbot(&bin, n)).await.expect("join");
    println!(
        "certbot one by one   : total {:>7.2} s, per certificate median {:.3} s",
        cb_total.as_secs_f64(),
        median(cb_times)
    );
    println!(
        "nova / certbot: {:.1} % (concurrency {concurrency}), {:.1} % (one by one)",
        100.0 * nova_total.as_secs_f64() / cb_total.as_secs_f64(),
        100.0 * serial_total.as_secs_f64() / cb_total.as_secs_f64()
    );
}
