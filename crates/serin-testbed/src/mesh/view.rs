//! What the simulated data plane sees of the cluster: Services, Deployments and VirtualServices,
//! kept current by kube-rs watches through the API, so the same code follows the emulator and
//! a real API server. Does I/O (watch tasks).

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use futures::StreamExt;
use kube::{
    api::{Api, ApiResource, DynamicObject},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::Value;

/// A watch retries every second: a resource whose CRD is installed later is followed soon
/// after, and a test bed's short-lived API errors cost a second at most.
#[derive(Clone, Copy, Debug)]
pub struct EverySecond;

impl Iterator for EverySecond {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(Duration::from_secs(1))
    }
}

impl kube::runtime::utils::Backoff for EverySecond {
    fn reset(&mut self) {}
}

/// The objects of one resource, by `namespace/name`.
#[derive(Debug, Default)]
struct Objects {
    current: BTreeMap<String, Value>,
    /// The list a relist is building, swapped in when it is complete.
    relist: BTreeMap<String, Value>,
}

fn key(o: &DynamicObject) -> String {
    format!(
        "{}/{}",
        o.metadata.namespace.as_deref().unwrap_or_default(),
        o.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Which of the view's object sets a watch fills.
type Field = fn(&ClusterView) -> &RwLock<Objects>;

/// The watched resources.
#[derive(Debug, Default)]
pub struct ClusterView {
    services: RwLock<Objects>,
    deployments: RwLock<Objects>,
    virtual_services: RwLock<Objects>,
    changed: tokio::sync::Notify,
}

/// Istio's VirtualService at its storage version.
pub fn virtual_service_resource() -> ApiResource {
    ApiResource {
        group: "networking.istio.io".into(),
        version: "v1beta1".into(),
        api_version: "networking.istio.io/v1beta1".into(),
        kind: "VirtualService".into(),
        plural: "virtualservices".into(),
    }
}

/// Follows every object of `resource` through `client`, calling `on_event` after each change.
pub fn follow(
    client: kube::Client,
    resource: ApiResource,
    mut on_event: impl FnMut(watcher::Event<DynamicObject>) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .backoff(EverySecond)
            .boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(e) => on_event(e),
                Err(err) => {
                    tracing::debug!(error = %err, kind = %resource.kind, "test bed watch error; retrying")
                }
            }
        }
    })
}

impl ClusterView {
    /// Starts the watches; `changed` is notified after every change.
    pub fn spawn(client: kube::Client) -> (Arc<Self>, Vec<tokio::task::JoinHandle<()>>) {
        use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
        let view = Arc::new(Self::default());
        let followed: [(ApiResource, Field); 3] = [
            (ApiResource::erase::<Service>(&()), ClusterView::services_field),
            (
                ApiResource::erase::<Deployment>(&()),
                ClusterView::deployments_field,
            ),
            (virtual_service_resource(), ClusterView::virtual_services_field),
        ];
        let tasks = followed
            .into_iter()
            .map(|(resource, field)| {
                let view = view.clone();
                follow(client.clone(), resource, move |event| {
                    apply(field(&view), event);
                    view.changed.notify_one();
                })
            })
            .collect();
        (view, tasks)
    }

    fn services_field(&self) -> &RwLock<Objects> {
        &self.services
    }

    fn deployments_field(&self) -> &RwLock<Objects> {
        &self.deployments
    }

    fn virtual_services_field(&self) -> &RwLock<Objects> {
        &self.virtual_services
    }

    /// Completes after the next change (or at once if one happened since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    pub fn services(&self) -> Vec<Value> {
        list(&self.services)
    }

    pub fn deployments(&self) -> Vec<Value> {
        list(&self.deployments)
    }

    pub fn virtual_services(&self) -> Vec<Value> {
        list(&self.virtual_services)
    }
}

fn list(objects: &RwLock<Objects>) -> Vec<Value> {
    objects
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .current
        .values()
        .cloned()
        .collect()
}

fn apply(objects: &RwLock<Objects>, event: watcher::Event<DynamicObject>) {
    let mut objects = objects.write().unwrap_or_else(|p| p.into_inner());
    let value = |o: &DynamicObject| serde_json::to_value(o).unwrap_or(Value::Null);
    match event {
        watcher::Event::Init => objects.relist.clear(),
        watcher::Event::InitApply(o) => {
            let v = value(&o);
            objects.relist.insert(key(&o), v);
        }
        watcher::Event::InitDone => objects.current = std::mem::take(&mut objects.relist),
        watcher::Event::Apply(o) => {
            let v = value(&o);
            objects.current.insert(key(&o), v);
        }
        watcher::Event::Delete(o) => {
            objects.current.remove(&key(&o));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str, rv: &str) -> DynamicObject {
        let mut o = DynamicObject::new(name, &virtual_service_resource()).within("apps");
        o.metadata.resource_version = Some(rv.into());
        o
    }

    #[test]
    fn a_relist_replaces_the_objects_once_complete() {
        let objects = RwLock::new(Objects::default());
        apply(&objects, watcher::Event::Apply(object("a", "1")));
        apply(&objects, watcher::Event::Apply(object("b", "2")));
        apply(&objects, watcher::Event::Init);
        apply(&objects, watcher::Event::InitApply(object("b", "3")));
        // Until the relist completes, the old view stands.
        assert_eq!(list(&objects).len(), 2);
        apply(&objects, watcher::Event::InitDone);
        let now = list(&objects);
        assert_eq!(now.len(), 1);
        assert_eq!(
            now[0].pointer("/metadata/resourceVersion"),
            Some(&Value::from("3"))
        );
        apply(&objects, watcher::Event::Delete(object("b", "4")));
        assert!(list(&objects).is_empty());
    }
}
