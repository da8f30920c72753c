//! The object store: every object, a cluster-wide resourceVersion, the event log watches resume
//! from, and the API server's object semantics (uid, timestamps, generation, managedFields,
//! optimistic concurrency, finalizers, deletion propagation and ownerReference garbage
//! collection, CRD registration, structural-schema pruning). In-memory; no network I/O.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::{
    error::ApiError,
    fields::{self, FieldSet},
    patch,
    resources::{Registry, ResourceInfo},
    selector::{FieldSelector, LabelSelector},
};

mod admission;
mod delete;
mod managers;
mod write;

use admission::*;
use managers::*;
pub use write::PatchKind;

/// Where an object is stored (version-independent).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
}

/// A watch event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as watchers see it.
#[derive(Clone, Debug)]
pub struct WatchEvent {
    pub rv: u64,
    pub key: Key,
    pub type_: EventType,
    pub object: Value,
}

/// Which part of an object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    Main,
    Status,
}

/// How unknown fields in a write are treated (`fieldValidation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

/// Options of a write.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    pub manager: String,
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    pub force: bool,
}

/// Deletion propagation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Propagation {
    #[default]
    Background,
    Foreground,
    Orphan,
}

/// A write's result: the object and any warnings for the `Warning` header.
#[derive(Clone, Debug)]
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// A list request.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_after: Option<String>,
}

/// A started watch: the events to send first, the receiver of later ones, and the
/// resourceVersion the watch is at.
pub type WatchStart = (Vec<Arc<WatchEvent>>, broadcast::Receiver<Arc<WatchEvent>>, u64);

/// Where a watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchFrom {
    /// Synthetic ADDED events for every current object, then changes.
    Now,
    /// Changes after this resourceVersion.
    Version(u64),
}

struct State {
    rv: u64,
    /// Shared with the requests in flight: a CRD change replaces it (copy on write).
    registry: Arc<Registry>,
    objects: BTreeMap<Key, Value>,
    log: VecDeque<Arc<WatchEvent>>,
    log_capacity: usize,
    next_ip: u32,
}

/// The store. Cheap to share behind an `Arc`.
pub struct Store {
    state: Mutex<State>,
    tx: broadcast::Sender<Arc<WatchEvent>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// The time as the API server writes it.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

fn random_uid() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-4{:01x}{:02x}-{:01x}{:01x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0],
        b[1],
        b[2],
        b[3],
        b[4],
        b[5],
        b[6] & 0x0f,
        b[7],
        8 | (b[8] & 0x3),
        b[8] >> 4,
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

fn random_suffix() -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| CHARS[rand::random_range(0..CHARS.len())] as char)
        .collect()
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

fn meta(obj: &Value) -> &Value {
    obj.get("metadata").unwrap_or(&Value::Null)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).get(field).and_then(Value::as_str)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"].as_object_mut().expect("metadata is an object")
}

/// The part of an object whose change bumps `generation`.
fn generation_content(obj: &Value, status_subresource: bool) -> Value {
    let mut content = obj.clone();
    if let Value::Object(map) = &mut content {
        map.remove("metadata");
        map.remove("apiVersion");
        map.remove("kind");
        if status_subresource {
            map.remove("status");
        }
    }
    content
}

/// Equal but for bookkeeping metadata (resourceVersion, managedFields, generation).
fn same_content(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            m.remove("managedFields");
            m.remove("generation");
        }
        v
    };
    strip(a) == strip(b)
}

impl Store {
    /// A store with the built-in kinds, the `default`, `kube-system`, `kube-public` and
    /// `kube-node-lease` namespaces, and an event log of `log_capacity` entries.
    pub fn new(log_capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(8192);
        let store = Self {
            state: Mutex::new(State {
                rv: 1,
                registry: Arc::new(Registry::builtin()),
                objects: BTreeMap::new(),
                log: VecDeque::new(),
                log_capacity: log_capacity.max(16),
                next_ip: 10,
            }),
            tx,
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let res = store
                .registry()
                .find("", "v1", "namespaces")
                .cloned()
                .expect("namespaces are built in");
            let _ = store.create(
                &res,
                None,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                &WriteOptions {
                    manager: "testbed".into(),
                    ..Default::default()
                },
            );
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A snapshot of the registry (shared; a CRD change after it makes a new one).
    pub fn registry(&self) -> Arc<Registry> {
        self.lock().registry.clone()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Subscribes to every future change.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WatchEvent>> {
        self.tx.subscribe()
    }

    fn key(res: &ResourceInfo, namespace: Option<&str>, name: &str) -> Key {
        Key {
            group: res.group.clone(),
            plural: res.plural.clone(),
            namespace: if res.namespaced {
                namespace.unwrap_or_default().to_owned()
            } else {
                String::new()
            },
            name: name.to_owned(),
        }
    }

    /// The object as served at `res`'s version.
    fn present(res: &ResourceInfo, obj: &Value) -> Value {
        let mut out = obj.clone();
        out["apiVersion"] = json!(res.api_version());
        out["kind"] = json!(res.kind);
        out
    }

    /// Reads one object.
    pub fn get(&self, res: &ResourceInfo, namespace: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let state = self.lock();
        state
            .objects
            .get(&Self::key(res, namespace, name))
            .map(|o| Self::present(res, o))
            .ok_or_else(|| ApiError::not_found(&res.group, &res.plural, name))
    }

    /// Lists objects: (items, resourceVersion, continue token, remaining count).
    pub fn list(
        &self,
        res: &ResourceInfo,
        query: &ListQuery,
    ) -> (Vec<Value>, u64, Option<String>, Option<usize>) {
        let state = self.lock();
        let mut items: Vec<(&Key, &Value)> = state
            .objects
            .iter()
            .filter(|(k, _)| k.group == res.group && k.plural == res.plural)
            .filter(|(k, _)| query.namespace.as_ref().is_none_or(|ns| &k.namespace == ns))
            .filter(|(_, o)| query.labels.matches(meta(o).get("labels")) && query.fields.matches(o))
            .collect();
        if let Some(after) = &query.continue_after {
            items.retain(|(k, _)| format!("{}/{}", k.namespace, k.name) > *after);
        }
        let mut next = None;
        let mut remaining = None;
        if let Some(limit) = query.limit.filter(|l| *l > 0 && items.len() > *l) {
            remaining = Some(items.len() - limit);
            items.truncate(limit);
            next = items.last().map(|(k, _)| format!("{}/{}", k.namespace, k.name));
        }
        (
            items.into_iter().map(|(_, o)| Self::present(res, o)).collect(),
            state.rv,
            next,
            remaining,
        )
    }

    /// Starts a watch: the events to send first, and the receiver of later ones.
    pub fn watch(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        from: WatchFrom,
    ) -> Result<WatchStart, ApiError> {
        let state = self.lock();
        let rx = self.tx.subscribe();
        let in_scope = |k: &Key| {
            k.group == res.group && k.plural == res.plural && namespace.is_none_or(|ns| k.namespace == ns)
        };
        let initial = match from {
            WatchFrom::Now => state
                .objects
                .iter()
                .filter(|(k, _)| in_scope(k))
                .map(|(k, o)| {
                    Arc::new(WatchEvent {
                        rv: state.rv,
                        key: k.clone(),
                        type_: EventType::Added,
                        object: o.clone(),
                    })
                })
                .collect(),
            WatchFrom::Version(rv) => {
                let oldest = state.log.front().map_or(state.rv, |e| e.rv);
                if rv + 1 < oldest && rv < state.rv {
                    return Err(ApiError::gone(format!(
                        "too old resource version: {rv} ({})",
                        oldest - 1
                    )));
                }
                state
                    .log
                    .iter()
                    .filter(|e| e.rv > rv && in_scope(&e.key))
                    .cloned()
                    .collect()
            }
        };
        Ok((initial, rx, state.rv))
    }

    fn commit(&self, state: &mut State, key: Key, type_: EventType, mut object: Value) -> Value {
        state.rv += 1;
        let rv = state.rv;
        meta_mut(&mut object).insert("resourceVersion".to_owned(), json!(rv.to_string()));
        match type_ {
            EventType::Deleted => {
                state.objects.remove(&key);
            }
            _ => {
                state.objects.insert(key.clone(), object.clone());
            }
        }
        let event = Arc::new(WatchEvent {
            rv,
            key,
            type_,
            object: object.clone(),
        });
        state.log.push_back(event.clone());
        while state.log.len() > state.log_capacity {
            state.log.pop_front();
        }
        let _ = self.tx.send(event);
        object
    }
}
