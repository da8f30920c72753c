//! Deployments that no Canary uses are cached as metadata only ("shelved"): a cluster's
//! thousands of other Deployments cost serin their names, not their pod templates. A Deployment
//! is kept whole when a Canary targets it (or it is a target's `-primary`, or serin scaled it
//! down for a Canary). When a Canary starts using a Deployment the cache holds shelved, the
//! first reconcile that needs it reads it from the API server once and keeps that copy until
//! the watch brings a newer one. Does I/O (`unshelve`, `deployment`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, core::DeserializeGuard, runtime::reflector::ObjectRef, runtime::watcher};
use serin_runtime::api_error::{Context as _, Failure};

use super::{Context, finalize::SCALED_DOWN_BY, index, slim};
use crate::api::Canary;

/// Annotation of a cached Deployment kept as metadata only.
const SHELVED: &str = "cache.serin.dev/shelved";

/// Whether serin needs a Deployment whole: a Canary targets it or its base name, or serin
/// scaled it down for a Canary.
pub fn wanted(canaries: &index::Index<DeserializeGuard<Canary>>, d: &Deployment) -> bool {
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

/// Reduces a Deployment to what identifies it.
pub fn shelve(d: &mut Deployment) {
    let meta = &mut d.metadata;
    *meta = kube::api::ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        uid: meta.uid.take(),
        resource_version: meta.resource_version.take(),
        generation: meta.generation,
        annotations: Some([(SHELVED.to_owned(), "true".to_owned())].into()),
        ..Default::default()
    };
    d.spec = None;
    d.status = None;
}

/// Whether a cached Deployment is shelved.
pub fn shelved(d: &Deployment) -> bool {
    d.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(SHELVED))
}

/// Whole copies of shelved Deployments read from the API server, by `namespace/name`.
#[derive(Debug, Default)]
pub struct Shelf {
    fetched: Mutex<HashMap<String, Arc<Deployment>>>,
}

impl Shelf {
    /// Forgets the fetched copy of a Deployment the watch brought whole or deleted.
    pub fn on_event(&self, event: &watcher::Event<Deployment>) {
        let forget = |d: &Deployment| {
            let key = format!(
                "{}/{}",
                d.metadata.namespace.as_deref().unwrap_or_default(),
                d.metadata.name.as_deref().unwrap_or_default()
            );
            self.fetched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        };
        match event {
            watcher::Event::Apply(d) | watcher::Event::InitApply(d) if !shelved(d) => forget(d),
            watcher::Event::Delete(d) => forget(d),
            _ => {}
        }
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
    let d = ctx.stores.deployments.get(&ObjectRef::new(name).within(ns))?;
    if !shelved(&d) {
        return Some(d);
    }
    ctx.shelf
        .get(&format!("{ns}/{name}"), d.metadata.resource_version.as_deref())
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
    let Some(d) = ctx.stores.deployments.get(&ObjectRef::new(name).within(ns)) else {
        return Ok(None);
    };
    if let Some(whole) = cached(ctx, ns, name) {
        return Ok(Some(whole));
    }
    let Some(mut live) = Api::<Deployment>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await
        .doing(|| format!("deployment {name}.{ns} get query error"))?
    else {
        return Ok(None);
    };
    slim::deployment(&mut live);
    ctx.deployment_index.apply(&watcher::Event::Apply(live.clone()));
    let live = Arc::new(live);
    // The cache may have moved on meanwhile; the copy is used only while it matches.
    tracing::debug!(deployment = %format!("{name}.{ns}"), cached = ?d.metadata.resource_version, read = ?live.metadata.resource_version, "read a shelved Deployment");
    let mut fetched = ctx.shelf.fetched.lock().unwrap_or_else(|p| p.into_inner());
    fetched.insert(format!("{ns}/{name}"), live.clone());
    Ok(Some(live))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_shelved_deployment_keeps_its_identity_only() {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "test", "uid": "u1", "resourceVersion": "7",
                         "labels": {"app": "web"}, "annotations": {"a": "b"}},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "app"}]}}},
            "status": {"replicas": 1}
        }))
        .expect("deployment");
        assert!(!shelved(&d));
        shelve(&mut d);
        assert!(shelved(&d));
        assert_eq!(d.metadata.name.as_deref(), Some("web"));
        assert_eq!(d.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(d.metadata.labels, None);
        assert!(d.spec.is_none() && d.status.is_none());

        let shelf = Shelf::default();
        let mut whole = d.clone();
        whole.metadata.annotations = None;
        shelf
            .fetched
            .lock()
            .expect("lock")
            .insert("test/web".into(), Arc::new(whole.clone()));
        assert!(shelf.get("test/web", Some("7")).is_some());
        assert!(
            shelf.get("test/web", Some("6")).is_some(),
            "a copy newer than the cache is used"
        );
        assert!(
            shelf.get("test/web", Some("8")).is_none(),
            "a copy older than the cache is not used"
        );
        shelf.on_event(&watcher::Event::Apply(d.clone()));
        assert!(
            shelf.get("test/web", Some("7")).is_some(),
            "a shelved event keeps the copy"
        );
        shelf.on_event(&watcher::Event::Apply(whole));
        assert!(
            shelf.get("test/web", Some("7")).is_none(),
            "a whole one replaces it"
        );
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
        let deployment = |name: &str, annotations: serde_json::Value| -> Deployment {
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
