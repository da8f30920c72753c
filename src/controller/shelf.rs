//! Deployments that no Canary uses are not cached ("shelved"): a cluster's thousands of other
//! Deployments cost serin their name and resource version, not their pod templates. A
//! Deployment is cached whole when a Canary targets it (or it is a target's `-primary`, or serin
//! scaled it down for a Canary). When a Canary starts using a shelved Deployment, the first
//! reconcile that needs it reads it from the API server once and keeps that copy until the watch
//! brings a newer one. Does I/O (`unshelve`, `deployment`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, core::DeserializeGuard, runtime::reflector::ObjectRef, runtime::watcher};
use serin_runtime::api_error::{Context as _, Failure};

use super::{Context, finalize::SCALED_DOWN_BY, index, slim::PackedDeployment};
use crate::api::Canary;

/// Whether serin needs a Deployment whole: a Canary targets it or its base name, or serin
/// scaled it down for a Canary.
pub fn wanted(canaries: &index::Index<DeserializeGuard<Canary>>, d: &PackedDeployment) -> bool {
    let ns = d.metadata.namespace.as_deref().unwrap_or_default();
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let targeted = |n: &str| canaries.count(&index::targeting(ns, n)) > 0;
    targeted(name)
        || name.strip_suffix("-primary").is_some_and(targeted)
        || d.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(SCALED_DOWN_BY))
}

fn key(d: &PackedDeployment) -> String {
    format!(
        "{}/{}",
        d.metadata.namespace.as_deref().unwrap_or_default(),
        d.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The shelved Deployments (their resource versions by `namespace/name`, replaced whole when a
/// relist completes, as the cache is) and the whole copies read of them.
#[derive(Debug, Default)]
pub struct Shelf {
    shelved: Mutex<Shelved>,
    fetched: Mutex<HashMap<String, Arc<Deployment>>>,
}

#[derive(Debug, Default)]
struct Shelved {
    current: HashMap<String, String>,
    relisting: Option<HashMap<String, String>>,
}

impl Shelf {
    /// Files a watch event of the Deployments and returns what the cache gets of it: a wanted
    /// Deployment as it is; a shelved one recorded here instead, and removed from the cache
    /// (`Delete`) when `cached` says the cache holds it.
    pub fn sort(
        &self,
        event: watcher::Event<PackedDeployment>,
        wanted: impl Fn(&PackedDeployment) -> bool,
        cached: impl Fn(&PackedDeployment) -> bool,
    ) -> Option<watcher::Event<PackedDeployment>> {
        let mut shelved = self.shelved.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            watcher::Event::Init => {
                shelved.relisting = Some(HashMap::new());
                Some(watcher::Event::Init)
            }
            watcher::Event::InitDone => {
                if let Some(listed) = shelved.relisting.take() {
                    shelved.current = listed;
                }
                Some(watcher::Event::InitDone)
            }
            watcher::Event::InitApply(d) => {
                if wanted(&d) {
                    self.forget_copy(&key(&d));
                    return Some(watcher::Event::InitApply(d));
                }
                let version = d.metadata.resource_version.clone().unwrap_or_default();
                shelved
                    .relisting
                    .get_or_insert_with(HashMap::new)
                    .insert(key(&d), version);
                None
            }
            watcher::Event::Apply(d) => {
                let key = key(&d);
                if wanted(&d) {
                    shelved.current.remove(&key);
                    self.forget_copy(&key);
                    return Some(watcher::Event::Apply(d));
                }
                let version = d.metadata.resource_version.clone().unwrap_or_default();
                shelved.current.insert(key, version);
                cached(&d).then_some(watcher::Event::Delete(d))
            }
            watcher::Event::Delete(d) => {
                let key = key(&d);
                shelved.current.remove(&key);
                self.forget_copy(&key);
                Some(watcher::Event::Delete(d))
            }
        }
    }

    fn forget_copy(&self, key: &str) {
        self.fetched.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    /// The resource version of a shelved Deployment.
    fn version(&self, key: &str) -> Option<String> {
        let shelved = self.shelved.lock().unwrap_or_else(|p| p.into_inner());
        shelved.current.get(key).cloned()
    }

    fn get(&self, key: &str, resource_version: Option<&str>) -> Option<Arc<Deployment>> {
        let fetched = self.fetched.lock().unwrap_or_else(|p| p.into_inner());
        fetched
            .get(key)
            .filter(|d| not_older(d.metadata.resource_version.as_deref(), resource_version))
            .cloned()
    }
}

/// Whether a copy at resource version `copy` is at least as new as the cache's `cached` (the
/// API server's versions are numbers in practice; anything else must match exactly).
fn not_older(copy: Option<&str>, cached: Option<&str>) -> bool {
    match (
        copy.and_then(|c| c.parse::<u64>().ok()),
        cached.and_then(|c| c.parse::<u64>().ok()),
    ) {
        (Some(copy), Some(cached)) => copy >= cached,
        _ => copy == cached,
    }
}

/// A Deployment from the cache, whole: a shelved one from its fetched copy (`None` until
/// `unshelve` has read it).
pub fn cached(ctx: &Context, ns: &str, name: &str) -> Option<Arc<Deployment>> {
    if let Some(d) = ctx.stores.deployments.get(&ObjectRef::new(name).within(ns)) {
        return Some(Arc::new(d.unpack()));
    }
    let key = format!("{ns}/{name}");
    let version = ctx.shelf.version(&key)?;
    ctx.shelf.get(&key, Some(&version))
}

/// Reads from the API server those of `names` the cache holds shelved and has no current copy
/// of.
pub async fn unshelve(ctx: &Context, ns: &str, names: &[&str]) -> Result<(), Failure> {
    for name in names {
        deployment(ctx, ns, name).await?;
    }
    Ok(())
}

/// A Deployment, whole: from the cache, or read once from the API server when shelved.
pub async fn deployment(ctx: &Context, ns: &str, name: &str) -> Result<Option<Arc<Deployment>>, Failure> {
    if let Some(whole) = cached(ctx, ns, name) {
        return Ok(Some(whole));
    }
    let Some(version) = ctx.shelf.version(&format!("{ns}/{name}")) else {
        return Ok(None);
    };
    let Some(packed) = Api::<PackedDeployment>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await
        .doing(|| format!("deployment {name}.{ns} get query error"))?
    else {
        return Ok(None);
    };
    let live = Arc::new(packed.unpack());
    ctx.deployment_index.apply(&watcher::Event::Apply(packed));
    // The cache may have moved on meanwhile; the copy is used only while it matches.
    tracing::debug!(deployment = %format!("{name}.{ns}"), shelved = %version, read = ?live.metadata.resource_version, "read a shelved Deployment");
    let mut fetched = ctx.shelf.fetched.lock().unwrap_or_else(|p| p.into_inner());
    fetched.insert(format!("{ns}/{name}"), live.clone());
    Ok(Some(live))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(name: &str, version: &str) -> PackedDeployment {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "test", "uid": "u1", "resourceVersion": version},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "app"}]}}},
        }))
        .expect("deployment")
    }

    fn kind(event: &Option<watcher::Event<PackedDeployment>>) -> &'static str {
        match event {
            None => "none",
            Some(watcher::Event::Init) => "init",
            Some(watcher::Event::InitApply(_)) => "init-apply",
            Some(watcher::Event::InitDone) => "init-done",
            Some(watcher::Event::Apply(_)) => "apply",
            Some(watcher::Event::Delete(_)) => "delete",
        }
    }

    #[test]
    fn shelved_deployments_stay_out_of_the_cache_and_are_remembered_by_version() {
        let shelf = Shelf::default();
        let wanted = |d: &PackedDeployment| d.metadata.name.as_deref() == Some("web");
        let not_cached = |_: &PackedDeployment| false;
        let sort = |e| kind(&shelf.sort(e, wanted, not_cached));
        assert_eq!(sort(watcher::Event::Init), "init");
        assert_eq!(
            sort(watcher::Event::InitApply(deployment("web", "1"))),
            "init-apply"
        );
        assert_eq!(sort(watcher::Event::InitApply(deployment("other", "2"))), "none");
        assert_eq!(
            shelf.version("test/other"),
            None,
            "a relist counts when it completes"
        );
        assert_eq!(sort(watcher::Event::InitDone), "init-done");
        assert_eq!(shelf.version("test/other").as_deref(), Some("2"));
        assert_eq!(shelf.version("test/web"), None);

        // An update of a shelved Deployment the cache does not hold passes nothing on.
        assert_eq!(sort(watcher::Event::Apply(deployment("other", "3"))), "none");
        assert_eq!(shelf.version("test/other").as_deref(), Some("3"));
        // One the cache holds (a Deployment no Canary uses any more) leaves it.
        let left = shelf.sort(watcher::Event::Apply(deployment("web-was", "4")), wanted, |_| {
            true
        });
        assert_eq!(kind(&left), "delete");

        // A relist forgets what is gone.
        assert_eq!(sort(watcher::Event::Init), "init");
        assert_eq!(sort(watcher::Event::InitDone), "init-done");
        assert_eq!(shelf.version("test/other"), None);

        assert_eq!(sort(watcher::Event::Apply(deployment("other", "5"))), "none");
        assert_eq!(sort(watcher::Event::Delete(deployment("other", "6"))), "delete");
        assert_eq!(shelf.version("test/other"), None);
    }

    #[test]
    fn a_fetched_copy_is_used_while_not_older_than_the_shelved_version() {
        let shelf = Shelf::default();
        shelf
            .fetched
            .lock()
            .expect("lock")
            .insert("test/web".into(), Arc::new(deployment("web", "7").unpack()));
        assert!(shelf.get("test/web", Some("7")).is_some());
        assert!(
            shelf.get("test/web", Some("6")).is_some(),
            "a copy newer than the shelved version is used"
        );
        assert!(
            shelf.get("test/web", Some("8")).is_none(),
            "a copy older than the shelved version is not used"
        );
        let shelved = |_: &PackedDeployment| false;
        shelf.sort(watcher::Event::Apply(deployment("web", "8")), shelved, |_| false);
        assert!(
            shelf.get("test/web", Some("7")).is_some(),
            "a shelved update keeps the copy"
        );
        shelf.sort(watcher::Event::Apply(deployment("web", "9")), |_| true, |_| false);
        assert!(
            shelf.get("test/web", Some("7")).is_none(),
            "a whole one replaces it"
        );
        assert_eq!(shelf.version("test/web"), None);
    }

    #[test]
    fn deployments_are_wanted_when_a_canary_uses_them() {
        let canaries = index::canaries();
        let canary: Canary = serde_json::from_value(json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "web", "namespace": "test"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "service": {"port": 80}}
        }))
        .expect("canary");
        canaries.apply(&watcher::Event::Apply(DeserializeGuard(Ok(canary))));
        let deployment = |name: &str, annotations: serde_json::Value| -> PackedDeployment {
            serde_json::from_value(
                json!({"metadata": {"name": name, "namespace": "test", "annotations": annotations}}),
            )
            .expect("deployment")
        };
        assert!(wanted(&canaries, &deployment("web", json!({}))));
        assert!(wanted(&canaries, &deployment("web-primary", json!({}))));
        assert!(!wanted(&canaries, &deployment("other", json!({}))));
        assert!(!wanted(&canaries, &deployment("other-primary", json!({}))));
        assert!(wanted(
            &canaries,
            &deployment("other", json!({SCALED_DOWN_BY: "gone"}))
        ));
    }
}
