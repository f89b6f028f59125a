//! `nova operator`: waits for the CRDs, wins the leader lease, then runs the controllers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, conditions, reflector, wait::await_condition, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use crate::api::{
    AcmeIssuer, AlertRule, Backup, BlueGreenDeployment, Host, Platform, Restore, TlsCertificate, TrainingJob,
};
use crate::context::{ChildStores, Context};
use crate::leader::{Elector, LeaseConfig};
use crate::state::State;
use crate::telemetry::Metrics;
use crate::{bluegreen, certs, host, http, platform};

/// Debug shows the state URL without its password (see [`crate::state::redact`]).
#[derive(Clone)]
pub struct Config {
    pub state_url: String,
    pub http_addr: SocketAddr,
    pub lease: LeaseConfig,
    pub concurrency: u16,
    /// Watch only this namespace (a namespace-scoped install); all namespaces when None.
    pub watch_namespace: Option<String>,
    /// Certificate issuance (backoff, order timeout, where HTTP-01 is routed).
    pub acme: crate::certs::Settings,
    /// Namespaces that may use Hosts without `spec.allowedNamespaces`; empty: the operator's own.
    pub trusted_namespaces: Vec<String>,
    /// The Prometheus AlertRules are read back from, and the labels their rules get.
    pub alerts: crate::alerts::controller::Settings,
    /// The image of the built-in trainer's workers.
    pub training: crate::training::controller::Settings,
    /// Nova's binary as uploaded to Hosts that run a Backup's schedule (`spec.runOn`); this
    /// process's own when None.
    pub host_binary: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("state_url", &crate::state::redact(&self.state_url))
            .field("http_addr", &self.http_addr)
            .field("lease", &self.lease)
            .field("concurrency", &self.concurrency)
            .field("watch_namespace", &self.watch_namespace)
            .field("acme", &self.acme)
            .field("trusted_namespaces", &self.trusted_namespaces)
            .field("alerts", &self.alerts)
            .field("training", &self.training)
            .field("host_binary", &self.host_binary)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("{0}")]
    State(#[from] crate::state::Error),
    #[error("leader election: {0}")]
    Lease(#[source] kube::Error),
    #[error("lost leadership: {0}")]
    LostLease(String),
    #[error("waiting for CRD {0}: {1}")]
    Crd(String, #[source] kube::runtime::wait::Error),
    #[error("HTTP server on {0}: {1}")]
    Http(SocketAddr, #[source] std::io::Error),
}

/// How long reconciles in flight may run on after a shutdown signal (the chart's
/// terminationGracePeriodSeconds leaves room for this and the lease release).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Runs until `shutdown` resolves (then returns Ok after a graceful stop) or leadership is lost.
pub async fn run(
    cfg: Config,
    client: Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    let http_addr = cfg.http_addr;
    let http01 = crate::acme::solver::Http01::default();
    let mut server = tokio::spawn(http::serve(http_addr, metrics.clone(), ready.clone(), http01.clone()));

    let state = State::connect(&cfg.state_url).await?;
    wait_for_crds(&client).await?;
    ready.store(true, Ordering::Relaxed);

    let elector = Elector::new(client.clone(), cfg.lease.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopping = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    tokio::select! {
        r = elector.acquire() => r.map_err(Error::Lease)?,
        _ = stopping() => return Ok(()),
        r = &mut server => return Err(Error::Http(http_addr, server_error(r))),
    }

    let controllers =
        run_controllers(client.clone(), metrics, state, &cfg, http01, elector.fence(), stopping());
    // On shutdown, reconciles in flight get SHUTDOWN_GRACE to finish; a longer one (an SSH
    // step) is cut, which every step tolerates, so that the lease is released well within the
    // pod's termination grace period and a standby takes over at once.
    let cut_short = {
        let stopping = stopping();
        async move {
            stopping.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
    };
    tokio::select! {
        _ = controllers => {
            elector.release().await;
            info!("controllers stopped; lease released");
            Ok(())
        }
        () = cut_short => {
            elector.release().await;
            warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "reconciles still running were cut short; lease released");
            Ok(())
        }
        why = elector.hold() => Err(Error::LostLease(why)),
        r = &mut server => Err(Error::Http(http_addr, server_error(r))),
    }
}

fn server_error(r: Result<std::io::Result<()>, tokio::task::JoinError>) -> std::io::Error {
    match r {
        Ok(Err(e)) => e,
        Ok(Ok(())) => std::io::Error::other("the HTTP server stopped"),
        Err(e) => std::io::Error::other(e),
    }
}

async fn wait_for_crds(client: &Client) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crate::api::crds() {
        let name = crd.name_any();
        info!(crd = %name, "waiting for CRD to be established");
        await_condition(api.clone(), &name, conditions::is_crd_established())
            .await
            .map_err(|e| Error::Crd(name, e))?;
    }
    Ok(())
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn run_controllers(
    client: Client,
    metrics: Metrics,
    state: State,
    cfg: &Config,
    http01: crate::acme::solver::Http01,
    fence: crate::kit::Fence,
    stopping: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = cfg.watch_namespace.as_deref();
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=nova");
    // One watch per child type, shared by the controllers that own that type: it fills the
    // store first and then triggers the owners' reconciles, so a reconcile always sees the
    // change that triggered it.
    let (deployments, dw) = reflector::store_shared(SHARED_BUFFER);
    let (services, sw) = reflector::store_shared(SHARED_BUFFER);
    let (ingresses, iw) = reflector::store_shared(SHARED_BUFFER);
    let (bluegreens, bw) = reflector::store_shared(SHARED_BUFFER);
    let (d_plat, d_bg) = (subscribe(&dw), subscribe(&dw));
    let (s_plat, s_bg) = (subscribe(&sw), subscribe(&sw));
    let i_plat = subscribe(&iw);
    let (b_plat, b_self) = (subscribe(&bw), subscribe(&bw));
    let watches = futures::future::join4(
        drive(watcher(api::<Deployment>(&client, ns), owned.clone()).default_backoff().reflect_shared(dw)),
        drive(watcher(api::<Service>(&client, ns), owned.clone()).default_backoff().reflect_shared(sw)),
        drive(watcher(api::<Ingress>(&client, ns), owned).default_backoff().reflect_shared(iw)),
        drive(
            watcher(api::<BlueGreenDeployment>(&client, ns), watcher::Config::default())
                .default_backoff()
                .reflect_shared(bw),
        ),
    );
    // Everything the controllers write goes through the fence; watches are reads.
    let writer = crate::kit::fence::fenced_client(client.clone(), fence.clone());
    let ctx = Context::new(
        writer,
        crate::context::Namespaces::new(cfg.lease.namespace.clone(), cfg.trusted_namespaces.clone()),
        metrics,
        state,
        ChildStores { deployments, services, ingresses, bluegreens: bluegreens.clone() },
        crate::certs::Shared::new(cfg.acme.clone(), http01),
        fence,
    );
    // Each controller's small context; each registers its own metric families (a duplicate
    // name is a bug every test that starts an operator catches).
    let registry = ctx.metrics.registry.clone();
    let platform_ctx = crate::context::Own::<Platform>::new(ctx.clone(), ());
    let switches =
        bluegreen::metrics::Switches::register(&registry).expect("blue-green metrics register once");
    let bg_ctx = crate::context::Own::new(ctx.clone(), switches);
    let host_ctx = crate::context::Own::<Host>::new(ctx.clone(), ());
    let config = controller::Config::default().concurrency(cfg.concurrency);
    let shared_stop = futures::FutureExt::shared(Box::pin(stopping));
    let (stop_a, stop_b, stop_c) = (shared_stop.clone(), shared_stop.clone(), shared_stop.clone());
    let platform_controller = Controller::new(api::<Platform>(&client, ns), watcher::Config::default());
    let platform_store = platform_controller.store();
    let platforms = platform_controller
        .owns_shared_stream(d_plat)
        .owns_shared_stream(s_plat)
        .owns_shared_stream(i_plat)
        .owns_shared_stream(b_plat)
        .with_config(config.clone())
        .graceful_shutdown_on(stop_a)
        .run(platform::reconcile, crate::context::error_policy, platform_ctx.clone())
        .for_each(log_controller_error);
    let bg_store = bluegreens.clone();
    let bg_stores = bluegreens.clone();
    let rollouts = Controller::for_shared_stream(b_self, bluegreens)
        .owns_shared_stream(d_bg)
        .owns_shared_stream(s_bg)
        // A BlueGreenDeployment with platformRef follows its Platform's template.
        .watches(api::<Platform>(&client, ns), watcher::Config::default(), move |p: Platform| {
            let name = p.name_any();
            let pns = p.namespace();
            bg_store
                .state()
                .into_iter()
                .filter(|b| {
                    b.namespace() == pns && b.spec.platform_ref.as_ref().is_some_and(|r| r.name == name)
                })
                .map(|b| ObjectRef::from_obj(&*b))
                .collect::<Vec<_>>()
        })
        .with_config(config)
        .graceful_shutdown_on(stop_b)
        .run(bluegreen::reconcile, crate::context::error_policy, bg_ctx.clone())
        .for_each(log_controller_error);
    let host_controller = Controller::new(Api::<Host>::all(client.clone()), watcher::Config::default());
    let host_store = host_controller.store();
    let hosts = host_controller
        .with_config(controller::Config::default().concurrency(cfg.concurrency))
        .graceful_shutdown_on(stop_c)
        .run(host::controller::reconcile, crate::context::error_policy, host_ctx.clone())
        .for_each(log_controller_error);
    let prune = forget_deleted((platform_ctx, bg_ctx, host_ctx), platform_store, bg_stores, host_store);
    let backups = backups(&client, ns, cfg, ctx.clone(), shared_stop.clone());
    let training = training(&client, ns, cfg, ctx.clone(), shared_stop.clone());
    let alerts = alerts(&client, ns, cfg, ctx.clone(), shared_stop.clone());
    let generated = crate::alertgen::run(&client, ctx.client.clone(), ns, shared_stop.clone());
    let certs = certificates(&client, ns, cfg, ctx, shared_stop);
    // The watches never end on their own; the controllers end on shutdown.
    tokio::select! {
        _ = futures::future::join4(futures::future::join5(platforms, rollouts, hosts, certs, backups), training, alerts, generated) => {}
        _ = watches => {}
        () = prune => {}
    }
}

/// How often the status writers forget objects that were deleted.
const FORGET_DELETED: Duration = Duration::from_secs(60);

fn uids<K: kube::Resource + Clone>(store: &reflector::Store<K>) -> std::collections::HashSet<String>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store.state().iter().filter_map(|o| o.meta().uid.clone()).collect()
}

/// Drops what the status writers remember of objects no longer in the caches (deleted).
async fn forget_deleted(
    (pc, bc, hc): (Arc<platform::Ctx>, Arc<bluegreen::Ctx>, Arc<host::controller::Ctx>),
    platforms: reflector::Store<Platform>,
    bluegreens: reflector::Store<BlueGreenDeployment>,
    hosts: reflector::Store<Host>,
) {
    for s in [
        platforms.wait_until_ready().await,
        bluegreens.wait_until_ready().await,
        hosts.wait_until_ready().await,
    ] {
        if s.is_err() {
            return std::future::pending().await;
        }
    }
    loop {
        tokio::time::sleep(FORGET_DELETED).await;
        pc.status.retain(&uids(&platforms));
        pc.host_apps.retain(&uids(&platforms));
        bc.status.retain(&uids(&bluegreens));
        hc.status.retain(&uids(&hosts));
    }
}

/// The AcmeIssuer and TlsCertificate controllers. A certificate is reconciled again when its
/// issuer changes (it may have become Ready) and when the Secret Nova wrote for it changes
/// (deleted or edited by hand).
async fn certificates(
    client: &Client,
    ns: Option<&str>,
    cfg: &Config,
    ctx: Arc<Context>,
    stop: impl Future<Output = ()> + Clone + Send + Sync + 'static,
) {
    let config = controller::Config::default().concurrency(cfg.concurrency);
    let families = certs::metrics::Certificates::register(&ctx.metrics.registry)
        .expect("certificate metrics register once");
    let issuer_ctx = crate::context::Own::<AcmeIssuer>::new(ctx.clone(), ());
    let ctx = crate::context::Own::new(ctx, families);
    let issuer_controller =
        Controller::new(Api::<AcmeIssuer>::all(client.clone()), watcher::Config::default());
    let issuer_store = issuer_controller.store();
    let issuers = issuer_controller
        .with_config(config.clone())
        .graceful_shutdown_on(stop.clone())
        .run(certs::issuer::reconcile, crate::context::error_policy, issuer_ctx.clone())
        .for_each(log_controller_error);
    let cert_api = api::<TlsCertificate>(client, ns);
    let controller = Controller::new(cert_api, watcher::Config::default());
    let store = controller.store();
    let by_issuer = store.clone();
    let written = watcher::Config::default().labels("app.kubernetes.io/managed-by=nova");
    let certificates = controller
        .watches(Api::<AcmeIssuer>::all(client.clone()), watcher::Config::default(), move |i: AcmeIssuer| {
            let name = i.name_any();
            by_issuer
                .state()
                .into_iter()
                .filter(|c| c.spec.issuer_ref.name == name)
                .map(|c| ObjectRef::from_obj(&*c))
                .collect::<Vec<_>>()
        })
        .watches(api::<Secret>(client, ns), written, |s: Secret| {
            let cert = s.annotations().get(certs::CERTIFICATE_ANNOTATION).cloned();
            cert.map(|c| ObjectRef::<TlsCertificate>::new(&c).within(&s.namespace().unwrap_or_default()))
        })
        .with_config(config)
        .graceful_shutdown_on(stop)
        .run(certs::reconcile, crate::context::error_policy, ctx.clone())
        .for_each(log_controller_error);
    // A deleted certificate is never reconciled again (no finalizer): its gauges and what the
    // status writers remember of it go here.
    let prune = async move {
        if store.wait_until_ready().await.is_err() {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(CERTIFICATE_GAUGES_PRUNE).await;
            let live =
                store.state().iter().map(|c| (c.namespace().unwrap_or_default(), c.name_any())).collect();
            ctx.families.keep_certificates(&live);
            ctx.status.retain(&uids(&store));
            if issuer_store.wait_until_ready().await.is_ok() {
                issuer_ctx.status.retain(&uids(&issuer_store));
            }
        }
    };
    tokio::select! {
        _ = futures::future::join(issuers, certificates) => {}
        () = prune => {}
    }
}

/// The TrainingJob controller; the workers' pods wake it.
async fn training(
    client: &Client,
    ns: Option<&str>,
    cfg: &Config,
    ctx: Arc<Context>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let metrics = crate::training::metrics::Training::register(&ctx.metrics.registry)
        .expect("training metrics register once");
    let families = crate::training::controller::Families { settings: cfg.training.clone(), metrics };
    let own = crate::context::Own::<TrainingJob, _>::new(ctx, families);
    let pods = watcher::Config::default().labels(crate::training::pods::JOB);
    Controller::new(api::<TrainingJob>(client, ns), watcher::Config::default())
        .owns(api::<Pod>(client, ns), pods)
        .with_config(controller::Config::default().concurrency(cfg.concurrency))
        .graceful_shutdown_on(stop)
        .run(crate::training::controller::reconcile, crate::context::error_policy, own)
        .for_each(log_controller_error)
        .await;
}

/// The AlertRule controller.
async fn alerts(
    client: &Client,
    ns: Option<&str>,
    cfg: &Config,
    ctx: Arc<Context>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let controller = Controller::new(api::<AlertRule>(client, ns), watcher::Config::default());
    let rounds = crate::kit::rounds::RoundMetrics::register(
        &ctx.metrics.registry,
        "nova_alert_host",
        "host",
        "AlertRule files checked and loaded on a Host",
    )
    .expect("alert round metrics register once");
    let families = crate::alerts::memo::Alerts::new(cfg.alerts.clone(), controller.store(), rounds);
    let own = crate::context::Own::<AlertRule, _>::new(ctx, families);
    // Objects whose rules are loading are woken when Prometheus answers of them differently.
    let controller = match cfg.alerts.prometheus_url.clone() {
        Some(url) => controller.reconcile_on(crate::alerts::loading::wakeups(own.clone(), url)),
        None => controller,
    };
    controller
        .with_config(controller::Config::default().concurrency(cfg.concurrency))
        .graceful_shutdown_on(stop)
        .run(crate::alerts::controller::reconcile, crate::context::error_policy, own)
        .for_each(log_controller_error)
        .await;
}

/// The Backup and Restore controllers; they share the backup metric families.
async fn backups(
    client: &Client,
    ns: Option<&str>,
    cfg: &Config,
    ctx: Arc<Context>,
    stop: impl Future<Output = ()> + Clone + Send + Sync + 'static,
) {
    let config = controller::Config::default().concurrency(cfg.concurrency);
    let mut families = crate::backup::metrics::Backups::register(&ctx.metrics.registry)
        .expect("backup metrics register once");
    families.host_binary = cfg.host_binary.clone();
    // The trainer's image is Nova's own (the chart passes the operator's image).
    families.image = cfg.training.trainer_image.clone();
    let backup_ctx = crate::context::Own::<Backup, _>::new(ctx.clone(), families.clone());
    let restore_ctx = crate::context::Own::<Restore, _>::new(ctx, families);
    let (backup_controller, restore_controller) = (
        Controller::new(api::<Backup>(client, ns), watcher::Config::default()),
        Controller::new(api::<Restore>(client, ns), watcher::Config::default()),
    );
    let (backup_store, restore_store) = (backup_controller.store(), restore_controller.store());
    let backups = backup_controller
        .with_config(config.clone())
        .graceful_shutdown_on(stop.clone())
        .run(crate::backup::controller::reconcile, crate::context::error_policy, backup_ctx.clone())
        .for_each(log_controller_error);
    let restores = restore_controller
        .with_config(config)
        .graceful_shutdown_on(stop)
        .run(crate::backup::restorer::reconcile, crate::context::error_policy, restore_ctx.clone())
        .for_each(log_controller_error);
    // What the status writers remember of deleted objects is dropped now and then.
    let prune = async move {
        if backup_store.wait_until_ready().await.is_err() || restore_store.wait_until_ready().await.is_err() {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(FORGET_DELETED).await;
            backup_ctx.status.retain(&uids(&backup_store));
            restore_ctx.status.retain(&uids(&restore_store));
        }
    };
    tokio::select! {
        _ = futures::future::join(backups, restores) => {}
        () = prune => {}
    }
}

/// How often the gauges of deleted certificates are dropped.
const CERTIFICATE_GAUGES_PRUNE: Duration = Duration::from_secs(15);

fn subscribe<K>(w: &reflector::store::Writer<K>) -> reflector::ReflectHandle<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    w.subscribe().expect("a shared store")
}

/// Shared watches must be polled for their subscribers to see anything.
async fn drive<S: futures::Stream + Send>(s: S) {
    s.for_each(|_| async {}).await;
}

async fn log_controller_error<T, E: std::fmt::Display>(result: Result<T, E>) {
    if let Err(e) = result {
        // Reconcile errors are logged by error_policy; these are queue or watch errors.
        warn!(error = %e, "controller");
    }
}

/// Events a slow subscriber may lag behind a shared watch before the watch waits for it.
const SHARED_BUFFER: usize = 1024;

/// How long the operator waits between lease attempts and renewals.
pub fn default_lease(namespace: String, identity: String) -> LeaseConfig {
    LeaseConfig {
        namespace,
        name: "nova-operator".into(),
        identity,
        lease_duration: Duration::from_secs(15),
        renew_every: Duration::from_secs(2),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn debug_of_the_config_holds_no_password() {
        let cfg = super::Config {
            state_url: "postgres://nova:hunter2@db/nova?sslpassword=k3y".into(),
            http_addr: ([127, 0, 0, 1], 8080).into(),
            lease: super::default_lease("nova-system".into(), "a".into()),
            concurrency: 1,
            watch_namespace: None,
            acme: Default::default(),
            trusted_namespaces: Vec::new(),
            alerts: crate::alerts::controller::Settings {
                prometheus_url: Some("https://nova:s3cret@prom:9090".into()),
                ..Default::default()
            },
            training: Default::default(),
            host_binary: None,
        };
        let text = format!("{cfg:?}");
        assert!(text.contains("https://nova:***@prom:9090") && !text.contains("s3cret"), "{text}");
        assert!(
            !text.contains("hunter2") && !text.contains("k3y") && text.contains("postgres://nova:***@db"),
            "{text}"
        );
    }
}
