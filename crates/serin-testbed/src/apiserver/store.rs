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
    registry: Registry,
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

/// One managedFields entry.
#[derive(Clone, Debug)]
struct Manager {
    manager: String,
    operation: String,
    subresource: Option<String>,
    time: String,
    api_version: String,
    fields: FieldSet,
}

fn read_managers(obj: &Value) -> Vec<Manager> {
    meta(obj)
        .get("managedFields")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .map(|e| Manager {
                    manager: e
                        .get("manager")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    operation: e
                        .get("operation")
                        .and_then(Value::as_str)
                        .unwrap_or("Update")
                        .to_owned(),
                    subresource: e.get("subresource").and_then(Value::as_str).map(str::to_owned),
                    time: e
                        .get("time")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    api_version: e
                        .get("apiVersion")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    fields: e.get("fieldsV1").map(fields::from_fields_v1).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn write_managers(obj: &mut Value, managers: &[Manager]) {
    let entries: Vec<Value> = managers
        .iter()
        .filter(|m| !m.fields.is_empty())
        .map(|m| {
            let mut e = json!({
                "manager": m.manager,
                "operation": m.operation,
                "apiVersion": m.api_version,
                "time": m.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields::to_fields_v1(&m.fields),
            });
            if let Some(sub) = &m.subresource {
                e["subresource"] = json!(sub);
            }
            e
        })
        .collect();
    if entries.is_empty() {
        meta_mut(obj).remove("managedFields");
    } else {
        meta_mut(obj).insert("managedFields".to_owned(), Value::Array(entries));
    }
}

/// Records an Update by `manager`: it owns what it changed; others lose what it changed or removed.
fn record_update(old: Option<&Value>, new: &mut Value, manager: &str, sub: Subresource, api_version: &str) {
    let include_status = sub == Subresource::Status;
    let new_set = fields::field_set(new, include_status);
    let old_set = old
        .map(|o| fields::field_set(o, include_status))
        .unwrap_or_default();
    let changed: FieldSet = new_set
        .iter()
        .filter(|p| old.is_none_or(|o| fields::get(o, p) != fields::get(new, p)))
        .cloned()
        .collect();
    let removed: FieldSet = old_set.difference(&new_set).cloned().collect();
    let mut managers = old.map(read_managers).unwrap_or_default();
    for m in &mut managers {
        m.fields.retain(|p| !changed.contains(p) && !removed.contains(p));
    }
    if !changed.is_empty() {
        let subresource = include_status.then(|| "status".to_owned());
        let now = now_rfc3339();
        match managers
            .iter_mut()
            .find(|m| m.manager == manager && m.operation == "Update" && m.subresource == subresource)
        {
            Some(m) => {
                m.fields.extend(changed);
                m.time = now;
            }
            None => managers.push(Manager {
                manager: manager.to_owned(),
                operation: "Update".to_owned(),
                subresource,
                time: now,
                api_version: api_version.to_owned(),
                fields: changed,
            }),
        }
    }
    write_managers(new, &managers);
}

impl Store {
    /// A store with the built-in kinds, the `default`, `kube-system`, `kube-public` and
    /// `kube-node-lease` namespaces, and an event log of `log_capacity` entries.
    pub fn new(log_capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(8192);
        let store = Self {
            state: Mutex::new(State {
                rv: 1,
                registry: Registry::builtin(),
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

    /// A snapshot of the registry.
    pub fn registry(&self) -> Registry {
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

    fn check_namespace(state: &State, res: &ResourceInfo, namespace: &str) -> Result<(), ApiError> {
        if !res.namespaced {
            return Ok(());
        }
        if namespace.is_empty() {
            return Err(ApiError::bad_request("the namespace of the object is required"));
        }
        let key = Key {
            group: String::new(),
            plural: "namespaces".into(),
            namespace: String::new(),
            name: namespace.into(),
        };
        match state.objects.get(&key) {
            None => Err(ApiError::not_found("", "namespaces", namespace)),
            Some(ns) if meta(ns).get("deletionTimestamp").is_some() => Err(ApiError::forbidden(format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Schema validation and pruning for custom resources.
    fn validate_custom(
        res: &ResourceInfo,
        obj: &mut Value,
        validation: FieldValidation,
    ) -> Result<Vec<String>, ApiError> {
        let Some(schema) = &res.schema else {
            return Ok(Vec::new());
        };
        let name = meta_str(obj, "name").unwrap_or_default().to_owned();
        let violations = serin_runtime::schema::validate(schema, obj);
        let (unknown, invalid): (Vec<_>, Vec<_>) = violations.into_iter().partition(|v| v.unknown_field);
        if !invalid.is_empty() {
            let causes: Vec<(String, String)> = invalid.into_iter().map(|v| (v.path, v.message)).collect();
            return Err(ApiError::invalid(&res.group, &res.kind, &name, &causes));
        }
        let warnings: Vec<String> = unknown
            .iter()
            .map(|v| format!("unknown field \"{}\"", v.path))
            .collect();
        if validation == FieldValidation::Strict && !warnings.is_empty() {
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                warnings.join(", ")
            )));
        }
        serin_runtime::schema::prune(schema, obj);
        Ok(if validation == FieldValidation::Warn {
            warnings
        } else {
            Vec::new()
        })
    }

    /// Defaults and derived fields of built-in kinds.
    fn apply_defaults(state: &mut State, res: &ResourceInfo, obj: &mut Value, old: Option<&Value>) {
        match (res.group.as_str(), res.plural.as_str()) {
            ("", "secrets") => {
                if let Some(Value::Object(string_data)) = obj.get("stringData").cloned() {
                    use base64::Engine;
                    let data = obj.get("data").cloned().unwrap_or(json!({}));
                    let mut data = if data.is_object() { data } else { json!({}) };
                    for (k, v) in string_data {
                        let text = v.as_str().unwrap_or_default();
                        data[k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
                    }
                    obj["data"] = data;
                    obj.as_object_mut().map(|m| m.remove("stringData"));
                }
                if obj.get("type").is_none() {
                    obj["type"] = json!("Opaque");
                }
            }
            ("", "services") => {
                let spec = obj.get("spec").cloned().unwrap_or(json!({}));
                let kind = spec
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("ClusterIP")
                    .to_owned();
                obj["spec"]["type"] = json!(kind);
                if kind != "ExternalName"
                    && spec
                        .get("clusterIP")
                        .is_none_or(|ip| ip.as_str().is_none_or(str::is_empty))
                {
                    let ip = old
                        .and_then(|o| o.pointer("/spec/clusterIP").cloned())
                        .filter(|ip| ip.as_str().is_some_and(|s| !s.is_empty()))
                        .unwrap_or_else(|| {
                            state.next_ip += 1;
                            json!(format!(
                                "10.96.{}.{}",
                                state.next_ip / 250,
                                state.next_ip % 250 + 2
                            ))
                        });
                    obj["spec"]["clusterIP"] = ip.clone();
                    obj["spec"]["clusterIPs"] = json!([ip]);
                }
                if obj["spec"].get("sessionAffinity").is_none() {
                    obj["spec"]["sessionAffinity"] = json!("None");
                }
                if let Some(ports) = obj["spec"].get_mut("ports").and_then(Value::as_array_mut) {
                    for port in ports {
                        if port.get("protocol").is_none() {
                            port["protocol"] = json!("TCP");
                        }
                        if port.get("targetPort").is_none()
                            && let Some(p) = port.get("port").cloned()
                        {
                            port["targetPort"] = p;
                        }
                    }
                }
            }
            ("apps", "deployments" | "statefulsets" | "replicasets") => {
                if obj.pointer("/spec/replicas").is_none() && obj.get("spec").is_some() {
                    obj["spec"]["replicas"] = json!(1);
                }
                if res.plural == "deployments" && obj.get("spec").is_some() {
                    if obj.pointer("/spec/progressDeadlineSeconds").is_none() {
                        obj["spec"]["progressDeadlineSeconds"] = json!(600);
                    }
                    if obj.pointer("/spec/revisionHistoryLimit").is_none() {
                        obj["spec"]["revisionHistoryLimit"] = json!(10);
                    }
                    if obj.pointer("/spec/strategy/type").is_none() {
                        obj["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
                    }
                }
            }
            ("", "namespaces") => {
                if obj.pointer("/status/phase").is_none() {
                    obj["status"] = json!({"phase": "Active"});
                }
                let name = meta_str(obj, "name").unwrap_or_default().to_owned();
                let labels = meta_mut(obj).entry("labels").or_insert(json!({}));
                if labels.is_object() {
                    labels["kubernetes.io/metadata.name"] = json!(name);
                }
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                let names = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
                let mut accepted = names.clone();
                if accepted.get("singular").is_none()
                    && let Some(kind) = names.get("kind").and_then(Value::as_str)
                {
                    accepted["singular"] = json!(kind.to_lowercase());
                }
                if accepted.get("listKind").is_none()
                    && let Some(kind) = names.get("kind").and_then(Value::as_str)
                {
                    accepted["listKind"] = json!(format!("{kind}List"));
                }
                let now = now_rfc3339();
                let stored: Vec<Value> = obj
                    .pointer("/spec/versions")
                    .and_then(Value::as_array)
                    .map(|vs| {
                        vs.iter()
                            .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                            .filter_map(|v| v.get("name").cloned())
                            .collect()
                    })
                    .unwrap_or_default();
                obj["status"] = json!({
                    "acceptedNames": accepted,
                    "storedVersions": stored,
                    "conditions": [
                        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now}
                    ]
                });
            }
            _ => {}
        }
    }

    /// Creates an object.
    pub fn create(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        check_kind(res, &obj)?;
        let mut state = self.lock();
        let ns = if res.namespaced {
            let body_ns = meta_str(&obj, "namespace").filter(|n| !n.is_empty());
            match (namespace, body_ns) {
                (Some(url), Some(body)) if url != body => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                (Some(url), _) => url.to_owned(),
                (None, Some(body)) => body.to_owned(),
                (None, None) => return Err(ApiError::bad_request("the namespace of the object is required")),
            }
        } else {
            String::new()
        };
        Self::check_namespace(&state, res, &ns)?;
        let name = match meta_str(&obj, "name").filter(|n| !n.is_empty()) {
            Some(n) => n.to_owned(),
            None => match meta_str(&obj, "generateName") {
                Some(prefix) => format!("{prefix}{}", random_suffix()),
                None => {
                    return Err(ApiError::invalid(
                        &res.group,
                        &res.kind,
                        "",
                        &[(
                            "metadata.name".into(),
                            "Required value: name or generateName is required".into(),
                        )],
                    ));
                }
            },
        };
        // RBAC objects are named like path segments (`system:discovery`), as on a real server.
        if res.group == "rbac.authorization.k8s.io" {
            if let Some(why) = super::rbac::path_segment_name_error(&name) {
                return Err(ApiError::invalid(
                    &res.group,
                    &res.kind,
                    &name,
                    &[(
                        "metadata.name".into(),
                        format!("Invalid value: \"{name}\": {why}"),
                    )],
                ));
            }
        } else if !is_dns_subdomain(&name) {
            return Err(ApiError::invalid(
                &res.group,
                &res.kind,
                &name,
                &[(
                    "metadata.name".into(),
                    format!(
                        "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                    ),
                )],
            ));
        }
        let key = Self::key(res, Some(&ns), &name);
        if state.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&res.group, &res.plural, &name));
        }
        obj["apiVersion"] = json!(res.api_version());
        obj["kind"] = json!(res.kind);
        if res.status_subresource && res.custom {
            obj.as_object_mut().map(|m| m.remove("status"));
        }
        let warnings = Self::validate_custom(res, &mut obj, opts.field_validation)?;
        if res.plural == "customresourcedefinitions" && res.group == "apiextensions.k8s.io" {
            super::resources::crd_resources(&obj).map_err(|m| {
                ApiError::invalid(
                    &res.group,
                    &res.kind,
                    &name,
                    &[(m.split(':').next().unwrap_or_default().to_owned(), m.clone())],
                )
            })?;
        }
        Self::apply_defaults(&mut state, res, &mut obj, None);
        {
            let m = meta_mut(&mut obj);
            m.insert("name".into(), json!(name));
            if res.namespaced {
                m.insert("namespace".into(), json!(ns));
            } else {
                m.remove("namespace");
            }
            m.insert("uid".into(), json!(random_uid()));
            m.insert("creationTimestamp".into(), json!(now_rfc3339()));
            m.remove("deletionTimestamp");
            m.remove("resourceVersion");
            m.remove("managedFields");
            if res.tracks_generation {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        record_update(
            None,
            &mut obj,
            &opts.manager,
            Subresource::Main,
            &res.api_version(),
        );
        if opts.dry_run {
            return Ok(Written {
                object: Self::present(res, &obj),
                warnings,
            });
        }
        if res.group == "apiextensions.k8s.io" && res.plural == "customresourcedefinitions" {
            state.registry.register_crd(&obj).map_err(ApiError::bad_request)?;
        }
        let stored = self.commit(&mut state, key, EventType::Added, obj);
        Ok(Written {
            object: Self::present(res, &stored),
            warnings,
        })
    }

    /// Replaces an object (PUT), or its status.
    pub fn update(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        obj: Value,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        check_named_body(res, &obj, name)?;
        let precondition = meta_str(&obj, "resourceVersion")
            .filter(|rv| !rv.is_empty())
            .map(str::to_owned);
        let mut state = self.lock();
        let key = Self::key(res, namespace, name);
        let existing = state
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&res.group, &res.plural, name))?;
        if let Some(rv) = precondition
            && meta_str(&existing, "resourceVersion") != Some(rv.as_str())
        {
            return Err(ApiError::conflict(&res.group, &res.plural, name));
        }
        self.write(&mut state, res, key, existing, obj, sub, opts, None)
    }

    /// The shared tail of update, patch and apply: validation, bookkeeping, commit, finalizers.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        state: &mut State,
        res: &ResourceInfo,
        key: Key,
        existing: Value,
        body: Value,
        sub: Subresource,
        opts: &WriteOptions,
        managers: Option<Vec<Manager>>,
    ) -> Result<Written, ApiError> {
        let mut obj = match sub {
            Subresource::Status => {
                let mut o = existing.clone();
                match body.get("status") {
                    Some(status) => o["status"] = status.clone(),
                    None => {
                        o.as_object_mut().map(|m| m.remove("status"));
                    }
                }
                o
            }
            Subresource::Main => {
                let mut o = body;
                if res.status_subresource {
                    match existing.get("status") {
                        Some(status) => o["status"] = status.clone(),
                        None => {
                            o.as_object_mut().map(|m| m.remove("status"));
                        }
                    }
                }
                o
            }
        };
        obj["apiVersion"] = json!(res.api_version());
        obj["kind"] = json!(res.kind);
        // An update or patch that sets managedFields to something new replaces them, as the API
        // server does (how controllers such as Flux take fields over from other managers).
        let explicit_managers = (managers.is_none() && sub == Subresource::Main)
            .then(|| meta(&obj).get("managedFields").cloned())
            .flatten()
            .filter(|m| m.is_array() && Some(m) != meta(&existing).get("managedFields"));
        {
            // Fields the server owns.
            let old_meta = meta(&existing).clone();
            let m = meta_mut(&mut obj);
            for field in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old_meta.get(field) {
                    Some(v) => {
                        m.insert(field.into(), v.clone());
                    }
                    None => {
                        m.remove(field);
                    }
                }
            }
            if managers.is_none() {
                match old_meta.get("managedFields") {
                    Some(v) => m.insert("managedFields".into(), v.clone()),
                    None => m.remove("managedFields"),
                };
            }
            // A finalizer cannot be added to an object that is being deleted.
            if old_meta.get("deletionTimestamp").is_some() {
                let old_finalizers = old_meta
                    .get("finalizers")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if let Some(Value::Array(new_finalizers)) = m.get("finalizers")
                    && new_finalizers.iter().any(|f| !old_finalizers.contains(f))
                {
                    return Err(ApiError::forbidden(
                        "no new finalizers can be added if the object is being deleted",
                    ));
                }
            }
        }
        let warnings = Self::validate_custom(res, &mut obj, opts.field_validation)?;
        // A workload's selector is immutable (apps/v1), as on the API server.
        if sub == Subresource::Main
            && res.group == "apps"
            && matches!(
                res.kind.as_str(),
                "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet"
            )
        {
            let (old_selector, new_selector) =
                (existing.pointer("/spec/selector"), obj.pointer("/spec/selector"));
            if old_selector.is_some() && old_selector != new_selector {
                let shown = new_selector.map_or_else(|| "null".to_owned(), Value::to_string);
                return Err(ApiError::invalid(
                    &res.group,
                    &res.kind,
                    &key.name,
                    &[(
                        "spec.selector".to_owned(),
                        format!("Invalid value: {shown}: field is immutable"),
                    )],
                ));
            }
        }
        if res.group == "apiextensions.k8s.io" && res.plural == "customresourcedefinitions" {
            super::resources::crd_resources(&obj)
                .map_err(|m| ApiError::invalid(&res.group, &res.kind, &key.name, &[(String::new(), m)]))?;
        }
        Self::apply_defaults(state, res, &mut obj, Some(&existing));
        if res.tracks_generation {
            let old_gen = meta(&existing)
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let changed = generation_content(&existing, res.status_subresource)
                != generation_content(&obj, res.status_subresource);
            meta_mut(&mut obj).insert(
                "generation".into(),
                json!(if changed && sub == Subresource::Main {
                    old_gen + 1
                } else {
                    old_gen
                }),
            );
        }
        match (managers, explicit_managers) {
            (Some(list), _) => write_managers(&mut obj, &list),
            (None, Some(given)) => {
                let mut base = existing.clone();
                meta_mut(&mut base).insert("managedFields".into(), given);
                record_update(Some(&base), &mut obj, &opts.manager, sub, &res.api_version());
            }
            (None, None) => record_update(Some(&existing), &mut obj, &opts.manager, sub, &res.api_version()),
        }
        if same_content(&existing, &obj)
            && meta(&existing).get("managedFields") == meta(&obj).get("managedFields")
        {
            // A no-op write changes nothing, not even the resourceVersion.
            return Ok(Written {
                object: Self::present(res, &existing),
                warnings,
            });
        }
        if opts.dry_run {
            return Ok(Written {
                object: Self::present(res, &obj),
                warnings,
            });
        }
        if res.group == "apiextensions.k8s.io" && res.plural == "customresourcedefinitions" {
            state.registry.register_crd(&obj).map_err(ApiError::bad_request)?;
        }
        let finishing = meta(&obj).get("deletionTimestamp").is_some()
            && meta(&obj)
                .get("finalizers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
        let stored = self.commit(state, key.clone(), EventType::Modified, obj);
        if finishing {
            self.remove_now(state, &key);
            self.collect_garbage(state);
        }
        Ok(Written {
            object: Self::present(res, &stored),
            warnings,
        })
    }

    /// Patches an object (merge, JSON or strategic merge patch).
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        kind: PatchKind,
        patch_body: &Value,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let mut state = self.lock();
        let key = Self::key(res, namespace, name);
        let existing = state
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&res.group, &res.plural, name))?;
        let mut patched = Self::present(res, &existing);
        // A merge patch must be an object (the API server's JSON merge answers "Invalid JSON
        // Patch"; its strategic merge, Go's decoding error).
        if !patch_body.is_object() {
            match kind {
                PatchKind::Merge => return Err(ApiError::bad_request("Invalid JSON Patch".to_owned())),
                PatchKind::Strategic => {
                    return Err(ApiError::bad_request(format!(
                        "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                        go_json_type(patch_body)
                    )));
                }
                PatchKind::Json => {}
            }
        }
        match kind {
            PatchKind::Merge => patch::merge_patch(&mut patched, patch_body),
            PatchKind::Json => patch::json_patch(&mut patched, patch_body).map_err(|e| match e {
                patch::PatchError::Malformed(why) => ApiError::bad_request(why),
                patch::PatchError::TestFailed(_) => ApiError {
                    code: 422,
                    reason: "Invalid",
                    message: e.to_string(),
                    details: None,
                },
                patch::PatchError::Invalid(why) => ApiError {
                    code: 422,
                    reason: "Invalid",
                    message: format!("the server rejected our request due to an error in our request: {why}"),
                    details: None,
                },
            })?,
            PatchKind::Strategic => {
                if !res.strategic_merge {
                    return Err(ApiError::unsupported_media_type(
                        "application/strategic-merge-patch+json",
                    ));
                }
                patch::strategic_merge(&mut patched, patch_body)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
            }
        }
        if let Some(rv) = patch_body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            && meta_str(&existing, "resourceVersion") != Some(rv)
        {
            return Err(ApiError::conflict(&res.group, &res.plural, name));
        }
        self.write(&mut state, res, key, existing, patched, sub, opts, None)
    }

    /// Server-side apply.
    pub fn apply(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        config: Value,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if opts.manager.is_empty() {
            return Err(ApiError::bad_request(
                "PATCH, fieldManager is required for apply requests",
            ));
        }
        check_named_body(res, &config, name)?;
        let key = Self::key(res, namespace, name);
        let existing = self.lock().objects.get(&key).cloned();
        let Some(existing) = existing else {
            if sub == Subresource::Status {
                return Err(ApiError::not_found(&res.group, &res.plural, name));
            }
            // Apply creates; the applier owns every field it set.
            let mut obj = config.clone();
            meta_mut(&mut obj).insert("name".into(), json!(name));
            let written = self.create(
                res,
                namespace,
                obj,
                &WriteOptions {
                    manager: opts.manager.clone(),
                    ..opts.clone()
                },
            )?;
            let mut state = self.lock();
            let Some(stored) = state.objects.get(&key).cloned() else {
                return Ok(written);
            };
            if opts.dry_run {
                return Ok(written);
            }
            let mut obj = stored.clone();
            write_managers(
                &mut obj,
                &[Manager {
                    manager: opts.manager.clone(),
                    operation: "Apply".into(),
                    subresource: None,
                    time: now_rfc3339(),
                    api_version: res.api_version(),
                    fields: fields::field_set(&config, false),
                }],
            );
            let stored = self.commit(&mut state, key, EventType::Modified, obj);
            return Ok(Written {
                object: Self::present(res, &stored),
                warnings: written.warnings,
            });
        };
        let include_status = sub == Subresource::Status;
        let applied = fields::field_set(&config, include_status);
        let subresource = include_status.then(|| "status".to_owned());
        let mut managers = read_managers(&existing);
        let mut conflicts = Vec::new();
        for m in &managers {
            if m.manager == opts.manager && m.operation == "Apply" && m.subresource == subresource {
                continue;
            }
            for path in applied.intersection(&m.fields) {
                if fields::get(&existing, path) != fields::get(&config, path) {
                    conflicts.push((m.manager.clone(), fields::display(path)));
                }
            }
        }
        if !conflicts.is_empty() && !opts.force {
            return Err(ApiError::apply_conflict(
                &res.group,
                &res.plural,
                name,
                &conflicts,
            ));
        }
        let previous: FieldSet = managers
            .iter()
            .find(|m| m.manager == opts.manager && m.operation == "Apply" && m.subresource == subresource)
            .map(|m| m.fields.clone())
            .unwrap_or_default();
        // Others keep a field when their value is the applied one (shared ownership); a forced
        // apply takes the conflicting ones.
        for m in &mut managers {
            if m.manager == opts.manager && m.operation == "Apply" && m.subresource == subresource {
                continue;
            }
            m.fields
                .retain(|p| !applied.contains(p) || fields::get(&existing, p) == fields::get(&config, p));
        }
        let mut obj = Self::present(res, &existing);
        let mut body = config.clone();
        if let Value::Object(map) = &mut body {
            map.remove("apiVersion");
            map.remove("kind");
            if !include_status {
                map.remove("status");
            }
            if let Some(Value::Object(m)) = map.get_mut("metadata") {
                m.retain(|k, _| {
                    matches!(
                        k.as_str(),
                        "labels" | "annotations" | "finalizers" | "ownerReferences"
                    )
                });
            }
        }
        fields::merge_applied(&mut obj, &body, "");
        for path in previous.difference(&applied) {
            let owned_elsewhere = managers.iter().any(|m| {
                !(m.manager == opts.manager && m.operation == "Apply" && m.subresource == subresource)
                    && m.fields.iter().any(|p| p.starts_with(path))
            });
            if !owned_elsewhere {
                fields::remove(&mut obj, path);
            }
        }
        managers.retain(|m| {
            !(m.manager == opts.manager && m.operation == "Apply" && m.subresource == subresource)
        });
        managers.push(Manager {
            manager: opts.manager.clone(),
            operation: "Apply".into(),
            subresource,
            time: now_rfc3339(),
            api_version: res.api_version(),
            fields: applied,
        });
        let mut state = self.lock();
        let current = state
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&res.group, &res.plural, name))?;
        if meta_str(&current, "resourceVersion") != meta_str(&existing, "resourceVersion") {
            return Err(ApiError::conflict(&res.group, &res.plural, name));
        }
        self.write(&mut state, res, key, existing, obj, sub, opts, Some(managers))
    }

    /// Deletes an object, honouring finalizers and propagation. Returns the object as deleted (or
    /// marked for deletion).
    pub fn delete(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        propagation: Option<Propagation>,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let key = Self::key(res, namespace, name);
        let existing = state
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&res.group, &res.plural, name))?;
        if dry_run {
            return Ok(Self::present(res, &existing));
        }
        let propagation = propagation.unwrap_or(Propagation::Background);
        let is_namespace = res.group.is_empty() && res.plural == "namespaces";
        let mut obj = existing.clone();
        let mut finalizers: Vec<Value> = meta(&obj)
            .get("finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let add = |finalizers: &mut Vec<Value>, f: &str| {
            if !finalizers.iter().any(|x| x == f) {
                finalizers.push(json!(f));
            }
        };
        match propagation {
            Propagation::Foreground => add(&mut finalizers, "foregroundDeletion"),
            Propagation::Orphan => add(&mut finalizers, "orphan"),
            Propagation::Background => {}
        }
        if is_namespace && meta(&obj).get("deletionTimestamp").is_none() {
            obj["status"] = json!({"phase": "Terminating"});
        }
        if finalizers.is_empty() && !is_namespace {
            let removed = self.remove_now(&mut state, &key);
            self.collect_garbage(&mut state);
            return Ok(Self::present(res, &removed.unwrap_or(existing)));
        }
        if meta(&obj).get("deletionTimestamp").is_none()
            || meta(&obj)
                .get("finalizers")
                .and_then(Value::as_array)
                .map(Vec::len)
                != Some(finalizers.len())
        {
            let m = meta_mut(&mut obj);
            m.entry("deletionTimestamp")
                .or_insert_with(|| json!(now_rfc3339()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            m.insert("finalizers".into(), Value::Array(finalizers));
            obj = self.commit(&mut state, key, EventType::Modified, obj);
        }
        self.collect_garbage(&mut state);
        Ok(Self::present(res, &obj))
    }

    fn remove_now(&self, state: &mut State, key: &Key) -> Option<Value> {
        let obj = state.objects.get(key).cloned()?;
        if key.group == "apiextensions.k8s.io"
            && key.plural == "customresourcedefinitions"
            && let (Some(group), Some(plural)) = (
                obj.pointer("/spec/group").and_then(Value::as_str),
                obj.pointer("/spec/names/plural").and_then(Value::as_str),
            )
        {
            let (group, plural) = (group.to_owned(), plural.to_owned());
            let doomed: Vec<Key> = state
                .objects
                .keys()
                .filter(|k| k.group == group && k.plural == plural)
                .cloned()
                .collect();
            for k in doomed {
                if let Some(o) = state.objects.get(&k).cloned() {
                    self.commit(state, k, EventType::Deleted, o);
                }
            }
            state.registry.unregister_crd(&group, &plural);
        }
        Some(self.commit(state, key.clone(), EventType::Deleted, obj))
    }

    /// Garbage collection, run after every deletion: dependents of deleted owners, foreground
    /// and orphan finalizers, and terminating namespaces.
    fn collect_garbage(&self, state: &mut State) {
        loop {
            let mut changed = false;
            let uids: std::collections::HashSet<String> = state
                .objects
                .values()
                .filter_map(|o| meta_str(o, "uid").map(str::to_owned))
                .collect();
            let snapshot: Vec<(Key, Value)> = state
                .objects
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (key, obj) in &snapshot {
                let deleting = meta(obj).get("deletionTimestamp").is_some();
                let finalizers: Vec<String> = meta(obj)
                    .get("finalizers")
                    .and_then(Value::as_array)
                    .map(|f| f.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                let uid = meta_str(obj, "uid").unwrap_or_default().to_owned();
                let dependents: Vec<&(Key, Value)> = snapshot
                    .iter()
                    .filter(|(_, d)| {
                        meta(d)
                            .get("ownerReferences")
                            .and_then(Value::as_array)
                            .is_some_and(|refs| {
                                refs.iter()
                                    .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid.as_str()))
                            })
                    })
                    .collect();
                // Orphan: drop our ownerReferences from dependents, then our finalizer.
                if deleting && finalizers.iter().any(|f| f == "orphan") {
                    for (dk, d) in &dependents {
                        let mut d = d.clone();
                        if let Some(Value::Array(refs)) = meta_mut(&mut d).get_mut("ownerReferences") {
                            refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
                        }
                        self.commit(state, dk.clone(), EventType::Modified, d);
                    }
                    self.drop_finalizer(state, key, obj, "orphan");
                    changed = true;
                    break;
                }
                // Foreground: delete dependents first; finish once none is left.
                if deleting && finalizers.iter().any(|f| f == "foregroundDeletion") {
                    if dependents.is_empty() {
                        self.drop_finalizer(state, key, obj, "foregroundDeletion");
                        changed = true;
                        break;
                    }
                    for (dk, d) in &dependents {
                        if meta(d).get("deletionTimestamp").is_none() {
                            self.mark_or_remove(state, dk, d);
                            changed = true;
                        }
                    }
                    if changed {
                        break;
                    }
                }
                // Terminating namespace: delete its contents, then itself.
                if deleting && key.group.is_empty() && key.plural == "namespaces" {
                    let contents: Vec<&(Key, Value)> =
                        snapshot.iter().filter(|(k, _)| k.namespace == key.name).collect();
                    if contents.is_empty() {
                        self.commit(state, key.clone(), EventType::Deleted, obj.clone());
                        changed = true;
                        break;
                    }
                    for (ck, c) in contents {
                        if meta(c).get("deletionTimestamp").is_none() {
                            self.mark_or_remove(state, ck, c);
                            changed = true;
                        }
                    }
                    if changed {
                        break;
                    }
                }
                // Background: a dependent whose owners are all gone is deleted.
                if let Some(refs) = meta(obj).get("ownerReferences").and_then(Value::as_array)
                    && !refs.is_empty()
                    && !deleting
                    && refs.iter().all(|r| {
                        r.get("uid")
                            .and_then(Value::as_str)
                            .is_none_or(|u| !uids.contains(u))
                    })
                {
                    self.mark_or_remove(state, key, obj);
                    changed = true;
                    break;
                }
            }
            if !changed {
                break;
            }
        }
    }

    fn mark_or_remove(&self, state: &mut State, key: &Key, obj: &Value) {
        let has_finalizers = meta(obj)
            .get("finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            let mut o = obj.clone();
            meta_mut(&mut o).insert("deletionTimestamp".into(), json!(now_rfc3339()));
            self.commit(state, key.clone(), EventType::Modified, o);
        } else {
            self.remove_now(state, key);
        }
    }

    fn drop_finalizer(&self, state: &mut State, key: &Key, obj: &Value, finalizer: &str) {
        let mut o = obj.clone();
        if let Some(Value::Array(f)) = meta_mut(&mut o).get_mut("finalizers") {
            f.retain(|x| x.as_str() != Some(finalizer));
        }
        let done = meta(&o)
            .get("finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        self.commit(state, key.clone(), EventType::Modified, o);
        if done {
            self.remove_now(state, key);
        }
    }
}

/// The patch formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Json,
    Strategic,
}

/// A body for a named object: a JSON object of the URL's kind, naming the URL's object (if at all).
fn check_named_body(res: &ResourceInfo, obj: &Value, name: &str) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    check_kind(res, obj)?;
    match meta_str(obj, "name") {
        Some(body_name) if body_name != name => Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        ))),
        _ => Ok(()),
    }
}

fn check_kind(res: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    if let Some(kind) = obj.get("kind").and_then(Value::as_str)
        && kind != res.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            res.kind
        )));
    }
    if let Some(api_version) = obj.get("apiVersion").and_then(Value::as_str)
        && api_version != res.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            res.api_version()
        )));
    }
    Ok(())
}

/// The name Go's JSON decoder gives a value's type in its errors.
fn go_json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
