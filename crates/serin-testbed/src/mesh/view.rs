//! What the simulated data plane sees of the cluster: Services, Deployments and VirtualServices,
//! kept current by kube-rs watches through the API, so the same code follows the emulator and
//! a real API server. Each object is read once when it changes, into the shared form routing
//! uses, so a routing snapshot costs a reference per object. Does I/O (watch tasks).

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

use super::{
    dataplane::RPS_ANNOTATION,
    routing::{self, Service, VirtualService, Workload},
};

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

/// The objects of one resource as the data plane reads them, by `namespace/name`, shared with
/// the routing snapshots.
#[derive(Debug)]
struct Objects<T> {
    current: BTreeMap<String, Arc<T>>,
    /// The list a relist is building, swapped in when it is complete.
    relist: BTreeMap<String, Arc<T>>,
}

impl<T> Default for Objects<T> {
    fn default() -> Self {
        Self {
            current: BTreeMap::new(),
            relist: BTreeMap::new(),
        }
    }
}

fn key(o: &DynamicObject) -> String {
    format!(
        "{}/{}",
        o.metadata.namespace.as_deref().unwrap_or_default(),
        o.metadata.name.as_deref().unwrap_or_default()
    )
}

/// A Service that asks for background load: namespace, name and requests per second.
pub type Load = (String, String, f64);

/// The watched resources, read once per change into what the data plane uses.
#[derive(Debug, Default)]
pub struct ClusterView {
    services: RwLock<Objects<Service>>,
    loads: RwLock<Objects<Load>>,
    deployments: RwLock<Objects<Workload>>,
    virtual_services: RwLock<Objects<VirtualService>>,
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

/// A Service's background load (`testbed.serin.dev/rps`).
fn load_from(obj: &Value) -> Option<Load> {
    let rps = obj
        .pointer("/metadata/annotations")?
        .get(RPS_ANNOTATION)?
        .as_str()?
        .parse::<f64>()
        .ok()?;
    Some((
        obj.pointer("/metadata/namespace")?.as_str()?.to_owned(),
        obj.pointer("/metadata/name")?.as_str()?.to_owned(),
        rps,
    ))
}

fn virtual_service_from(obj: &Value) -> Option<VirtualService> {
    Some((
        obj.pointer("/metadata/namespace")?.as_str()?.to_owned(),
        obj.pointer("/metadata/name")?.as_str()?.to_owned(),
        obj.get("spec").cloned().unwrap_or(Value::Null),
    ))
}

impl ClusterView {
    /// Starts the watches; `changed` is notified after every change.
    pub fn spawn(client: kube::Client) -> (Arc<Self>, Vec<tokio::task::JoinHandle<()>>) {
        use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
        let view = Arc::new(Self::default());
        let services = {
            let view = view.clone();
            follow(client.clone(), ApiResource::erase::<Service>(&()), move |event| {
                apply(&view.services, &event, routing::service_from);
                apply(&view.loads, &event, load_from);
                view.changed.notify_one();
            })
        };
        let deployments = {
            let view = view.clone();
            follow(
                client.clone(),
                ApiResource::erase::<Deployment>(&()),
                move |event| {
                    apply(&view.deployments, &event, routing::workload_from);
                    view.changed.notify_one();
                },
            )
        };
        let virtual_services = {
            let view = view.clone();
            follow(client, virtual_service_resource(), move |event| {
                apply(&view.virtual_services, &event, virtual_service_from);
                view.changed.notify_one();
            })
        };
        (view, vec![services, deployments, virtual_services])
    }

    /// Completes after the next change (or at once if one happened since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    pub fn services(&self) -> Vec<Arc<Service>> {
        list(&self.services)
    }

    /// The Services with background load.
    pub fn loads(&self) -> Vec<Arc<Load>> {
        list(&self.loads)
    }

    pub fn deployments(&self) -> Vec<Arc<Workload>> {
        list(&self.deployments)
    }

    pub fn virtual_services(&self) -> Vec<Arc<VirtualService>> {
        list(&self.virtual_services)
    }
}

fn list<T>(objects: &RwLock<Objects<T>>) -> Vec<Arc<T>> {
    objects
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .current
        .values()
        .cloned()
        .collect()
}

/// Applies a watch event, reading each object with `read` (an object it cannot read, or no
/// longer reads, is left out).
fn apply<T>(
    objects: &RwLock<Objects<T>>,
    event: &watcher::Event<DynamicObject>,
    read: fn(&Value) -> Option<T>,
) {
    let read = |o: &DynamicObject| serde_json::to_value(o).ok().and_then(|v| read(&v)).map(Arc::new);
    let mut objects = objects.write().unwrap_or_else(|p| p.into_inner());
    match event {
        watcher::Event::Init => objects.relist.clear(),
        watcher::Event::InitApply(o) => {
            if let Some(v) = read(o) {
                objects.relist.insert(key(o), v);
            }
        }
        watcher::Event::InitDone => objects.current = std::mem::take(&mut objects.relist),
        watcher::Event::Apply(o) => match read(o) {
            Some(v) => {
                objects.current.insert(key(o), v);
            }
            None => {
                objects.current.remove(&key(o));
            }
        },
        watcher::Event::Delete(o) => {
            objects.current.remove(&key(o));
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
        let read = |o: &Value| o.pointer("/metadata/resourceVersion").cloned();
        apply(&objects, &watcher::Event::Apply(object("a", "1")), read);
        apply(&objects, &watcher::Event::Apply(object("b", "2")), read);
        apply(&objects, &watcher::Event::Init, read);
        apply(&objects, &watcher::Event::InitApply(object("b", "3")), read);
        // Until the relist completes, the old view stands.
        assert_eq!(list(&objects).len(), 2);
        apply(&objects, &watcher::Event::InitDone, read);
        let now = list(&objects);
        assert_eq!(now.len(), 1);
        assert_eq!(*now[0], Value::from("3"));
        apply(&objects, &watcher::Event::Delete(object("b", "4")), read);
        assert!(list(&objects).is_empty());
    }

    #[test]
    fn services_with_background_load_are_read_from_their_annotation() {
        let service = |rps: Option<&str>| {
            serde_json::json!({"metadata": {"name": "web", "namespace": "test",
                "annotations": rps.map(|r| serde_json::json!({RPS_ANNOTATION: r}))}})
        };
        assert_eq!(
            load_from(&service(Some("2.5"))),
            Some(("test".into(), "web".into(), 2.5))
        );
        assert_eq!(load_from(&service(Some("lots"))), None);
        assert_eq!(load_from(&service(None)), None);
    }
}
