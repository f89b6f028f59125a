//! Steady state writes nothing: with 50 settled objects of every kind (Platforms on Kubernetes,
//! BlueGreenDeployments, Hosts, AcmeIssuers, TlsCertificates), the operator sends not one write
//! to the apiserver over a quiet minute. Counted in the apiserver's audit log by the operator's
//! User-Agent; the lease renewals (its heartbeat) are the only writes allowed.

use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use futures::future::try_join_all;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client, Resource, ResourceExt};
use nova::api::bluegreen::BlueGreenDeployment;
use nova::api::{AcmeIssuer, Host, Platform, TlsCertificate};
use serde_json::json;
use test_cluster::pebble::{Options as PebbleOptions, Pebble};
use test_cluster::testhost::TestHost;
use test_cluster::{Mode, eventually, shared};

mod common;

const N: usize = 50;

fn ready<K: Resource>(
    list: &[K],
    conditions: impl Fn(&K) -> Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>>,
) -> usize {
    list.iter()
        .filter(|o| {
            conditions(o).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count()
}

async fn create<K>(api: &Api<K>, objs: Vec<serde_json::Value>) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let made = objs.into_iter().map(|v| async move {
        let o: K = serde_json::from_value(v)?;
        api.create(&PostParams::default(), &o).await?;
        anyhow::Ok(())
    });
    try_join_all(made).await?;
    Ok(())
}

/// A client for the operator with its own User-Agent, so the audit log tells its writes apart.
async fn operator_client(cp: &test_cluster::ControlPlane, agent: &str) -> Result<Client> {
    let kc = kube::config::Kubeconfig::read_from(cp.kubeconfig())?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(nova::kubeclient::for_config(nova::kubeclient::with_user_agent(config, agent))?)
}

#[tokio::test]
async fn fifty_settled_objects_of_every_kind_cause_no_writes() -> Result<()> {
    let cp = shared(Mode::Simulated).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, "steady").await?;
    let agent = nova::kubeclient::operator_agent(&format!("steady-{ns}"));
    let op = common::Operator::start(operator_client(cp, &agent).await?, &ns).await?;
    let th = tokio::task::spawn_blocking(|| TestHost::start("steady")).await??;
    let opts = PebbleOptions { http01_port: op.port(), ..Default::default() };
    let pebble = tokio::task::spawn_blocking(move || Pebble::start_with(opts)).await??;
    let ca = std::fs::read_to_string(&pebble.api_ca_path)?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for s in [
        json!({"metadata": {"name": "key"}, "stringData": {"id_ed25519": th.client_key}}),
        json!({"metadata": {"name": "pebble-ca"}, "stringData": {"ca.crt": ca}}),
    ] {
        secrets.create(&PostParams::default(), &serde_json::from_value(s)?).await?;
    }
    let tag = ns.rsplit('-').next().unwrap_or("x").to_owned();
    let (platforms, hosts, issuers, certs): (Api<Platform>, Api<Host>, Api<AcmeIssuer>, Api<TlsCertificate>) = (
        Api::namespaced(client.clone(), &ns),
        Api::all(client.clone()),
        Api::all(client.clone()),
        Api::namespaced(client.clone(), &ns),
    );
    let platform = |name: String, strategy: serde_json::Value| {
        json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "Platform", "metadata": {"name": name},
               "spec": {"image": "nginx:1.27", "replicas": 1, "strategy": strategy}})
    };
    let rolling = (0..N).map(|i| platform(format!("r{i}"), json!({"type": "Rolling"})));
    let bluegreen = (0..N).map(|i| {
        platform(format!("b{i}"), json!({"type": "BlueGreen", "blueGreen": {"scaleDownDelaySeconds": 0}}))
    });
    create(&platforms, rolling.chain(bluegreen).collect()).await?;
    create(
        &hosts,
        (0..N)
            .map(|i| {
                json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Host", "metadata": {"name": format!("s{tag}-{i}")},
        "spec": {"address": th.ssh_addr.ip().to_string(), "hostKey": th.host_key,
                 "sshKeySecretRef": {"name": "key", "key": "id_ed25519"}}})
            })
            .collect(),
    )
    .await?;
    create(&issuers, (0..N).map(|i| json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "AcmeIssuer", "metadata": {"name": format!("s{tag}-{i}")},
        "spec": {"server": pebble.directory_url, "accountKeySecretRef": {"name": format!("s{tag}-{i}-account")},
                 "caBundleSecretRef": {"name": "pebble-ca", "key": "ca.crt"},
                 "solvers": [{"http01": {"ingress": {"className": "nginx"}}}]}})).collect()).await?;
    create(&certs, (0..N).map(|i| json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "TlsCertificate", "metadata": {"name": format!("c{i}")},
        "spec": {"dnsNames": [format!("c{i}.example.test")], "issuerRef": {"name": format!("s{tag}-{i}")},
                 "secretName": format!("c{i}-tls")}})).collect()).await?;

    let bgds: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), &ns);
    let mine = |h: &&Host| h.name_any().starts_with(&format!("s{tag}-"));
    eventually("every object Ready", Duration::from_secs(300), || async {
        let counts = [
            ready(&platforms.list(&Default::default()).await?.items, |p| {
                p.status.as_ref().map(|s| &s.conditions)
            }),
            ready(&bgds.list(&Default::default()).await?.items, |b| b.status.as_ref().map(|s| &s.conditions)),
            ready(
                &hosts
                    .list(&Default::default())
                    .await?
                    .items
                    .iter()
                    .filter(mine)
                    .cloned()
                    .collect::<Vec<_>>(),
                |h| h.status.as_ref().map(|s| &s.conditions),
            ),
            ready(
                &issuers
                    .list(&Default::default())
                    .await?
                    .items
                    .iter()
                    .filter(|i| i.name_any().starts_with(&format!("s{tag}-")))
                    .cloned()
                    .collect::<Vec<_>>(),
                |i| i.status.as_ref().map(|s| &s.conditions),
            ),
            {
                // Issued is not yet settled: one more status write (Issuing: UpToDate) follows
                // once the new Secret is read back, seconds later on a slow machine.
                let items = certs.list(&Default::default()).await?.items;
                let current: Vec<_> = items
                    .into_iter()
                    .filter(|c| {
                        c.status.as_ref().is_some_and(|s| {
                            s.conditions.iter().any(|c| c.type_ == "Issuing" && c.reason == "UpToDate")
                        })
                    })
                    .collect();
                ready(&current, |c| c.status.as_ref().map(|s| &s.conditions))
            },
        ];
        anyhow::Ok(counts == [2 * N, N, N, N, N])
    })
    .await
    .context("50 of every kind settle")?;
    // Settled also means no rollout step pending: the writes of the last step have landed.
    eventually("no writes for 5 s", Duration::from_secs(120), || async {
        let since = SystemTime::now() - Duration::from_secs(5);
        anyhow::Ok(cp.audited_writes(&agent, since)?.iter().all(|w| w.uri.contains("/leases/")))
    })
    .await?;

    // The quiet minute itself: a fixed window is what is measured here.
    let since = SystemTime::now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let writes: Vec<String> = cp
        .audited_writes(&agent, since)?
        .into_iter()
        .filter(|w| !w.uri.contains("/leases/nova-operator"))
        .map(|w| format!("{} {} -> {}", w.verb, w.uri, w.code))
        .collect();
    assert!(writes.is_empty(), "{} writes in a quiet minute: {writes:#?}", writes.len());
    let renewals = cp.audited_writes(&agent, since)?.len();
    assert!(renewals >= 20, "the audit log sees the operator at all (lease renewals: {renewals})");
    op.stop().await
}
