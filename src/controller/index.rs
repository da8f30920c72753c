//! Indexes next to the caches, so that finding the Canaries a change concerns costs a lookup
//! instead of a scan of every Canary: each watched object is filed under keys (its namespace,
//! its target, its apex Service; for a Deployment, the ConfigMaps and Secrets its pod template
//! uses), kept current from the same watch events as the cache. A relist replaces the index
//! whole when it completes, as the cache does. No I/O.

use std::{
    collections::{BTreeSet, HashMap},
    sync::RwLock,
};

use kube::{core::DeserializeGuard, runtime::watcher};

use super::slim::PackedDeployment;
use crate::{api::Canary, engine::build::configs};

/// `namespace/name` of a watched object.
pub type Key = String;

fn key(namespace: Option<&str>, name: Option<&str>) -> Option<Key> {
    Some(format!("{}/{}", namespace.unwrap_or_default(), name?))
}

#[derive(Default)]
struct State {
    /// The keys each object is filed under.
    objects: HashMap<Key, Vec<String>>,
    /// The objects filed under each key.
    filed: HashMap<String, BTreeSet<Key>>,
    /// The objects of a relist in progress.
    relist: Option<HashMap<Key, Vec<String>>>,
}

impl State {
    fn remove(&mut self, object: &str) {
        for k in self.objects.remove(object).into_iter().flatten() {
            if let Some(set) = self.filed.get_mut(&k) {
                set.remove(object);
                if set.is_empty() {
                    self.filed.remove(&k);
                }
            }
        }
    }

    fn insert(&mut self, object: Key, keys: Vec<String>) {
        self.remove(&object);
        for k in &keys {
            self.filed.entry(k.clone()).or_default().insert(object.clone());
        }
        self.objects.insert(object, keys);
    }
}

/// An object's `namespace/name` and the keys it is filed under.
type Filing = (Key, Vec<String>);

/// Objects of one kind filed under the keys `file` gives them.
pub struct Index<K> {
    state: RwLock<State>,
    /// The object's `namespace/name` and its keys; `None` leaves it out of the index.
    file: fn(&K) -> Option<Filing>,
    /// The object's `namespace/name` whether or not it is filed (to remove what is not).
    name: fn(&K) -> Option<Key>,
}

impl<K> std::fmt::Debug for Index<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("Index")
            .field("objects", &state.objects.len())
            .field("keys", &state.filed.len())
            .finish()
    }
}

impl<K> Index<K> {
    /// Applies one watch event, as the cache does.
    pub fn apply(&self, event: &watcher::Event<K>) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        match event {
            watcher::Event::Apply(obj) => match (self.file)(obj) {
                Some((object, keys)) => state.insert(object, keys),
                None => {
                    if let Some(object) = (self.name)(obj) {
                        state.remove(&object);
                    }
                }
            },
            watcher::Event::Delete(obj) => {
                if let Some(object) = (self.name)(obj) {
                    state.remove(&object);
                }
            }
            watcher::Event::Init => state.relist = Some(HashMap::new()),
            watcher::Event::InitApply(obj) => {
                if let (Some(relist), Some((object, keys))) = (state.relist.as_mut(), (self.file)(obj)) {
                    relist.insert(object, keys);
                }
            }
            watcher::Event::InitDone => {
                let objects = state.relist.take().unwrap_or_default();
                *state = State::default();
                for (object, keys) in objects {
                    state.insert(object, keys);
                }
            }
        }
    }

    /// The `namespace/name` of the objects filed under `key`.
    pub fn get(&self, key: &str) -> Vec<Key> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state
            .filed
            .get(key)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many objects are filed under `key`.
    pub fn count(&self, key: &str) -> usize {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.filed.get(key).map_or(0, BTreeSet::len)
    }
}

/// The key of the Canaries of a namespace.
pub fn in_namespace(namespace: &str) -> String {
    format!("ns:{namespace}")
}

/// The key of the Canaries whose target is `namespace/name`.
pub fn targeting(namespace: &str, name: &str) -> String {
    format!("target:{namespace}/{name}")
}

/// The key of the Canaries whose apex Service (and VirtualService) is `namespace/name`.
pub fn with_apex(namespace: &str, name: &str) -> String {
    format!("apex:{namespace}/{name}")
}

/// The key of the Deployments whose pod template uses the ConfigMap or Secret (`kind` as in
/// `configs::ConfigRef`) `namespace/name`.
pub fn using(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}:{namespace}/{name}")
}

/// The Canaries (readable ones) by namespace, target and apex Service.
pub fn canaries() -> Index<DeserializeGuard<Canary>> {
    Index {
        state: RwLock::default(),
        file: |guard| {
            let canary = guard.0.as_ref().ok()?;
            let ns = canary.metadata.namespace.as_deref().unwrap_or_default();
            let object = key(Some(ns), canary.metadata.name.as_deref())?;
            let keys = vec![
                in_namespace(ns),
                targeting(ns, &canary.spec.target_ref.name),
                with_apex(ns, &canary.service_names().apex),
            ];
            Some((object, keys))
        },
        name: |guard| match &guard.0 {
            Ok(c) => key(c.metadata.namespace.as_deref(), c.metadata.name.as_deref()),
            Err(invalid) => key(
                invalid.metadata.namespace.as_deref(),
                invalid.metadata.name.as_deref(),
            ),
        },
    }
}

/// The Deployments by the ConfigMaps and Secrets their pod templates use.
pub fn deployments() -> Index<PackedDeployment> {
    Index {
        state: RwLock::default(),
        file: |d| {
            let ns = d.metadata.namespace.as_deref().unwrap_or_default();
            let object = key(Some(ns), d.metadata.name.as_deref())?;
            let spec = serde_json::to_value(&d.unpack().spec?.template.spec).ok()?;
            let keys: Vec<String> = configs::references(&spec)
                .iter()
                .map(|r| using(r.kind, ns, &r.name))
                .collect();
            (!keys.is_empty()).then_some((object, keys))
        },
        name: |d| key(d.metadata.namespace.as_deref(), d.metadata.name.as_deref()),
    }
}

/// The name part of a `namespace/name` key.
pub fn name_of(key: &str) -> &str {
    key.split_once('/').map_or(key, |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn canary(name: &str, target: &str) -> DeserializeGuard<Canary> {
        DeserializeGuard(Ok(serde_json::from_value(json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": name, "namespace": "test"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                     "service": {"port": 80}}
        }))
        .expect("canary")))
    }

    fn deployment(name: &str, config: &str) -> PackedDeployment {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "test"},
            "spec": {"selector": {}, "template": {"spec": {
                "containers": [{"name": "app", "envFrom": [{"configMapRef": {"name": config}}]}]
            }}}
        }))
        .expect("deployment")
    }

    #[test]
    fn canaries_are_found_by_namespace_target_and_apex() {
        let index = canaries();
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(canary("a", "web")));
        index.apply(&watcher::Event::InitApply(canary("b", "web")));
        assert_eq!(
            index.count(&in_namespace("test")),
            0,
            "not before the list completes"
        );
        index.apply(&watcher::Event::InitDone);
        assert_eq!(index.count(&in_namespace("test")), 2);
        assert_eq!(index.get(&targeting("test", "web")), ["test/a", "test/b"]);
        assert_eq!(index.get(&with_apex("test", "web")), ["test/a", "test/b"]);

        // A changed target moves the Canary; a deletion removes it.
        index.apply(&watcher::Event::Apply(canary("b", "api")));
        assert_eq!(index.get(&targeting("test", "web")), ["test/a"]);
        assert_eq!(index.get(&targeting("test", "api")), ["test/b"]);
        index.apply(&watcher::Event::Delete(canary("a", "web")));
        assert!(index.get(&targeting("test", "web")).is_empty());
        assert_eq!(index.count(&in_namespace("test")), 1);

        // A relist replaces everything: what it does not list is gone.
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(canary("c", "web")));
        index.apply(&watcher::Event::InitDone);
        assert_eq!(index.get(&in_namespace("test")), ["test/c"]);
        assert_eq!(name_of("test/c"), "c");
    }

    #[test]
    fn deployments_are_found_by_the_configs_they_use() {
        let index = deployments();
        index.apply(&watcher::Event::Apply(deployment("web", "settings")));
        assert_eq!(index.get(&using("configmap", "test", "settings")), ["test/web"]);
        assert!(index.get(&using("secret", "test", "settings")).is_empty());
        index.apply(&watcher::Event::Apply(deployment("web", "other")));
        assert!(index.get(&using("configmap", "test", "settings")).is_empty());
        assert_eq!(index.get(&using("configmap", "test", "other")), ["test/web"]);
        index.apply(&watcher::Event::Delete(deployment("web", "other")));
        assert!(index.get(&using("configmap", "test", "other")).is_empty());
    }
}
