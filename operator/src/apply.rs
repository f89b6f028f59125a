//! Writing children: server-side apply with Nova's one field manager, skipped when the watch
//! cache shows the child already as wanted; deletion only of what Nova controls.

use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use tracing::info;

use crate::context::{Error, FIELD_MANAGER};
use crate::drift;

/// Applies `desired` unless the owner's spec is already applied (`settled`) and the live object
/// in the watch cache still matches it; returns the object as it now stands.
pub async fn ensure<K>(
    client: &kube::Client,
    store: &Store<K>,
    ns: &str,
    name: &str,
    desired: &K,
    settled: bool,
) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    if let Some(live) = store.get(&ObjectRef::new(name).within(ns))
        && settled
        && drift::matches(desired, &*live)
    {
        return Ok((*live).clone());
    }
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    Ok(api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(desired)).await?)
}

/// Deletes `name` only if `owner` controls it, so hand-made objects are left alone.
pub async fn delete_if_owned<K, O>(api: &Api<K>, name: &str, owner: &O) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    O: Resource,
{
    let Some(existing) = api.get_metadata_opt(name).await? else {
        return Ok(());
    };
    let uid = owner.meta().uid.clone();
    let owned = existing
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref());
    if owned {
        api.delete(name, &DeleteParams::background()).await?;
        info!(%name, "deleted a child no longer wanted");
    }
    Ok(())
}
