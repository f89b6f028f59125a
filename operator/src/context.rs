//! What every controller shares: the kit, the caches of owned objects, the state database,
//! the SSH pool; and [`Own`], each controller's small context around it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::Client;
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;

use crate::api::BlueGreenDeployment;
use crate::kit::{self, StatusWriter};
use crate::state::State;
use crate::telemetry::Metrics;

pub use crate::kit::{Blocked, Call, Error, FIELD_MANAGER};

/// The error policy of every controller: the kit's per-object backoff.
pub fn error_policy<K: kit::Reconciled, M>(
    obj: Arc<K>,
    err: &Error,
    ctx: Arc<Own<K, M>>,
) -> kube::runtime::controller::Action {
    kit::error_policy(obj, err, &ctx.kit)
}

/// Caches of the objects Nova owns, fed by the same watches that trigger reconciles. Reading
/// them costs no API request, so a reconcile with nothing to change writes nothing.
#[derive(Clone)]
pub struct ChildStores {
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub ingresses: Store<Ingress>,
    pub bluegreens: Store<BlueGreenDeployment>,
}

/// A controller's own small context around the shared one: the status writer of its kind and
/// its own metric families (`M`; `()` for none), registered by the component itself. Derefs to
/// the shared [`Context`], so what every controller shares reads the same everywhere.
pub struct Own<K: kit::Reconciled, M = ()> {
    pub shared: Arc<Context>,
    pub status: StatusWriter<K>,
    pub families: M,
}

impl<K: kit::Reconciled, M> Own<K, M>
where
    StatusWriter<K>: Default,
{
    pub fn new(shared: Arc<Context>, families: M) -> Arc<Self> {
        Arc::new(Self { shared, status: StatusWriter::default(), families })
    }
}

impl<K: kit::Reconciled, M> std::ops::Deref for Own<K, M> {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.shared
    }
}

impl Context {
    /// A value from a Secret in `ns`; blocked, naming `field`, when there is none (the message
    /// never holds the value).
    pub async fn secret_value(&self, ns: &str, name: &str, key: &str, field: &str) -> Result<Vec<u8>, Error> {
        use k8s_openapi::api::core::v1::Secret;
        let s = kube::Api::<Secret>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .call(|| format!("reading Secret {ns}/{name} ({field})"))?;
        let Some(s) = s else {
            let msg = format!("Secret {ns}/{name} named in {field} does not exist");
            return Err(Blocked::new("MissingSecret", msg).into());
        };
        s.data.and_then(|mut d| d.remove(key)).map(|b| b.0).ok_or_else(|| {
            Blocked::new("MissingSecret", format!("Secret {ns}/{name} has no key {key:?} ({field})")).into()
        })
    }
}

pub struct Context {
    pub kit: kit::Shared,
    pub client: Client,
    /// The operator's own namespace: where cluster-scoped objects' Secrets live (Host keys).
    pub namespace: String,
    /// Namespaces that may use a Host without `spec.allowedNamespaces` (see [`crate::tenancy`]).
    pub trusted_namespaces: Vec<String>,
    pub metrics: Metrics,
    pub state: State,
    pub children: ChildStores,
    /// For the blue-green health gate and Prometheus analysis ([`crate::rollouts::gate::client`]).
    pub http: reqwest::Client,
    /// Per owner UID, the generation whose children were last applied in full. Only in memory:
    /// after a restart everything is applied once again.
    pub applied: Mutex<HashMap<String, i64>>,
    /// Certificates: settings, HTTP-01 answers, ACME accounts.
    pub certs: crate::acme::shared::Shared,
    /// SSH sessions to Hosts, kept between reconciles.
    pub ssh: crate::ssh::Pool,
    /// One lock per host-targeted Platform (by UID): its rollout rounds and its cleanup on
    /// deletion never overlap, and no round runs after the cleanup began.
    pub host_apps: HostAppLocks,
}

/// Per Platform UID, a lock whose value says whether the Platform's cleanup has begun.
#[derive(Default)]
pub struct HostAppLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<bool>>>>);

impl HostAppLocks {
    pub fn get(&self, uid: &str) -> Arc<tokio::sync::Mutex<bool>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(uid.to_owned()).or_default().clone()
    }

    /// Drops the locks of Platforms not in `live` (deleted ones).
    pub fn retain(&self, live: &std::collections::HashSet<String>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).retain(|uid, _| live.contains(uid));
    }
}

/// The operator's namespace, and those it trusts on Hosts that do not list their namespaces.
pub struct Namespaces {
    pub own: String,
    pub trusted: Vec<String>,
}

impl Namespaces {
    /// `trusted` as configured; empty means the operator's own namespace alone.
    pub fn new(own: String, trusted: Vec<String>) -> Self {
        let trusted = if trusted.is_empty() { vec![own.clone()] } else { trusted };
        Self { own, trusted }
    }
}

/// How long an unused SSH session to a Host stays open (Hosts are re-checked every few minutes).
pub const SSH_IDLE: Duration = Duration::from_secs(600);

impl Context {
    pub fn new(
        client: Client,
        namespaces: Namespaces,
        metrics: Metrics,
        state: State,
        children: ChildStores,
        certs: crate::acme::shared::Shared,
        fence: kit::Fence,
    ) -> Arc<Self> {
        let http = crate::rollouts::gate::client().clone();
        let mut shared = kit::Shared::new(client.clone(), metrics.reconcile.clone());
        shared.fence = fence;
        Arc::new(Self {
            kit: shared,
            client,
            namespace: namespaces.own,
            trusted_namespaces: namespaces.trusted,
            metrics,
            state,
            children,
            http,
            applied: Mutex::new(HashMap::new()),
            certs,
            ssh: crate::ssh::Pool::new(SSH_IDLE),
            host_apps: HostAppLocks::default(),
        })
    }

    /// Records an event on `obj` (best effort, note cut to 1 KiB).
    pub async fn publish(
        &self,
        obj: &ObjectReference,
        action: &str,
        type_: EventType,
        reason: &str,
        note: &str,
    ) {
        self.kit.publish(obj, action, type_, reason, note).await;
    }

    /// Whether the children of `uid` were applied in full for `generation`.
    pub fn settled(&self, uid: &str, generation: i64) -> bool {
        self.applied.lock().unwrap_or_else(|p| p.into_inner()).get(uid) == Some(&generation)
    }

    pub fn mark_applied(&self, uid: String, generation: i64) {
        self.applied.lock().unwrap_or_else(|p| p.into_inner()).insert(uid, generation);
    }
}

#[cfg(test)]
impl Context {
    /// A context over `client` (a [`kit::verifier`] client in unit tests): empty caches, an
    /// in-memory state database, default certificate settings.
    pub async fn for_test(client: Client) -> Arc<Self> {
        use kube::runtime::reflector::store;
        let state = State::connect("sqlite::memory:").await.expect("in-memory state database");
        let children = ChildStores {
            deployments: store().0,
            services: store().0,
            ingresses: store().0,
            bluegreens: store().0,
        };
        let certs = crate::acme::shared::Shared::new(Default::default(), Default::default());
        let ns = Namespaces::new("nova-system".into(), Vec::new());
        Self::new(client, ns, Metrics::new(), state, children, certs, kit::Fence::open())
    }
}
