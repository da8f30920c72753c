//! Adding and removing Flux's finalizer with a JSON merge patch, and the steps every reconcile
//! takes first (`preamble`). Does I/O.

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde::de::DeserializeOwned;

use super::Error;

/// What every reconcile of a GitRepository or Kustomization does first: an object being deleted
/// is cleaned up (`cleanup`) and loses Flux's finalizer; a live one gets it; a suspended one
/// stops there. `Some(action)` ends the reconcile with that action.
pub async fn preamble<K, F>(
    obj: &K,
    api: &Api<K>,
    suspended: bool,
    cleanup: impl FnOnce() -> F,
) -> Result<Option<Action>, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    F: std::future::Future<Output = ()>,
{
    let name = obj.name_any();
    if obj.meta().deletion_timestamp.is_some() {
        cleanup().await;
        remove(api, &name, obj.finalizers(), crate::api::FINALIZER).await?;
        return Ok(Some(Action::await_change()));
    }
    if !obj.finalizers().iter().any(|f| f == crate::api::FINALIZER) {
        add(api, &name, obj.finalizers(), crate::api::FINALIZER).await?;
    }
    if suspended {
        let kind = K::kind(&()).to_lowercase();
        tracing::info!(kind, object = %format!("{}/{name}", obj.namespace().unwrap_or_default()), "Reconciliation is suspended for this object");
        return Ok(Some(Action::await_change()));
    }
    Ok(None)
}

/// Adds `finalizer` to the object's finalizers.
pub async fn add<K>(api: &Api<K>, name: &str, current: &[String], finalizer: &str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut list = current.to_vec();
    list.push(finalizer.to_owned());
    set(api, name, list).await
}

/// Removes `finalizer` from the object's finalizers.
pub async fn remove<K>(api: &Api<K>, name: &str, current: &[String], finalizer: &str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    if !current.iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let list: Vec<String> = current.iter().filter(|f| *f != finalizer).cloned().collect();
    set(api, name, list).await
}

async fn set<K>(api: &Api<K>, name: &str, list: Vec<String>) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let body = serde_json::json!({ "metadata": { "finalizers": list } });
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if serin_runtime::api_error::Kind::of(&e) == serin_runtime::api_error::Kind::NotFound => {
            Ok(())
        }
        Err(e) => Err(Error::Kube(e)),
    }
}
