//! Adding and removing Flux's finalizer with a JSON merge patch. Does I/O.

use kube::{
    Api, Resource,
    api::{Patch, PatchParams},
};
use serde::de::DeserializeOwned;

use super::Error;

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
