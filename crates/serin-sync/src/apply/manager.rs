//! Server-side apply of a Kustomization's objects as Flux's `ssa.ResourceManager` does it:
//! stages applied in order (definitions and classes waited for), a dry-run per object to detect
//! drift, the real apply only for created or drifted objects (field manager
//! `kustomize-controller`, forced), recreation on immutable-field errors when forced; pruning
//! with the ownership and exclusion checks; health waits with the kstatus rules. Objects that
//! serin generates (owned by a Canary) are never applied nor deleted. Does I/O (the API).

use serin_runtime::api_error::Kind;
use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    time::Duration,
};

use kube::{
    Api, Client,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PropagationPolicy,
    },
    discovery::{self, ApiCapabilities, Scope},
};
use serde_json::Value;
use serin_runtime::kstatus::{self, Status};

use super::{
    drift,
    order::{self, ObjectId, Stage},
    takeover,
};
use crate::{
    api::kustomization::IgnoreRule,
    build::objects::{self, NAME_LABEL, NAMESPACE_LABEL},
};

/// The field manager of every apply, Flux's.
pub const FIELD_MANAGER: &str = "kustomize-controller";
/// `kustomize.toolkit.fluxcd.io/reconcile: disabled`: never applied nor pruned.
pub const RECONCILE_KEY: &str = "kustomize.toolkit.fluxcd.io/reconcile";
/// `kustomize.toolkit.fluxcd.io/prune: disabled`: never pruned.
pub const PRUNE_KEY: &str = "kustomize.toolkit.fluxcd.io/prune";
/// `kustomize.toolkit.fluxcd.io/ssa`: `Ignore`, `IfNotPresent`, `Merge`, `Override`.
pub const SSA_KEY: &str = "kustomize.toolkit.fluxcd.io/ssa";
/// `kustomize.toolkit.fluxcd.io/force: enabled`: recreate on immutable-field errors.
pub const FORCE_KEY: &str = "kustomize.toolkit.fluxcd.io/force";
/// The pointer serin-sync never reverts on a Canary's target.
pub const REPLICAS_POINTER: &str = "/spec/replicas";

/// What happened to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Created,
    Configured,
    Unchanged,
    Deleted,
    Skipped,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Created => "created",
            Self::Configured => "configured",
            Self::Unchanged => "unchanged",
            Self::Deleted => "deleted",
            Self::Skipped => "skipped",
        })
    }
}

/// One entry of a change set: `Kind/ns/name action`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub id: ObjectId,
    pub action: Action,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.id.subject(), self.action)
    }
}

/// The Deployments Canaries target, as far as serin-sync could tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CanaryTargets {
    /// `(namespace, name)` of each (none when serin is not installed).
    Known(Vec<(String, String)>),
    /// The Canaries could not be listed (the reason): every Deployment keeps its live replicas,
    /// since any of them may be a Canary's target.
    Unknown(String),
}

impl Default for CanaryTargets {
    fn default() -> Self {
        Self::Known(Vec::new())
    }
}

impl CanaryTargets {
    /// Whether the replicas of Deployment `namespace/name` must be left as they are.
    pub fn keeps_replicas(&self, namespace: &str, name: &str) -> bool {
        match self {
            Self::Known(targets) => targets.iter().any(|(ns, n)| ns == namespace && n == name),
            Self::Unknown(_) => true,
        }
    }
}

/// Options of one apply.
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    /// Recreate objects whose dry-run fails on an immutable field.
    pub force: bool,
    /// `spec.ignore`.
    pub ignore: Vec<IgnoreRule>,
    /// The Deployments Canaries target: their replicas are not reverted.
    pub canary_targets: CanaryTargets,
    /// How long a stage waits for its objects to become current.
    pub stage_timeout: Duration,
    /// How often waits poll.
    pub poll_interval: Duration,
    /// The field manager of the applies (default [`FIELD_MANAGER`]).
    pub field_manager: Option<&'static str>,
    /// Leave other managers' managedFields and kubectl's annotations as they are (no takeover).
    pub keep_managed_fields: bool,
}

impl ApplyOptions {
    fn manager(&self) -> &'static str {
        self.field_manager.unwrap_or(FIELD_MANAGER)
    }
}

/// An apply error with the change set so far.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApplyError {
    pub message: String,
    pub changes: Vec<Change>,
}

/// Applies, deletes and watches objects of any kind.
#[derive(Clone)]
pub struct ResourceManager {
    client: Client,
    resources: HashMap<(String, String, String), (ApiResource, ApiCapabilities)>,
}

impl fmt::Debug for ResourceManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceManager").finish_non_exhaustive()
    }
}

impl ResourceManager {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            resources: HashMap::new(),
        }
    }

    /// The resource of an object's kind, `None` when the API server does not serve it.
    async fn discover(&mut self, id: &ObjectId) -> Option<(ApiResource, ApiCapabilities)> {
        let key = (id.group.clone(), id.version.clone(), id.kind.clone());
        if !self.resources.contains_key(&key) {
            let gvk = GroupVersionKind::gvk(&id.group, &id.version, &id.kind);
            let found = discovery::pinned_kind(&self.client, &gvk).await.ok()?;
            self.resources.insert(key.clone(), found);
        }
        self.resources.get(&key).cloned()
    }

    /// Whether the object's kind is namespaced (`None`: the kind is not served).
    pub async fn is_namespaced(&mut self, id: &ObjectId) -> Option<bool> {
        self.discover(id)
            .await
            .map(|(_, caps)| caps.scope == Scope::Namespaced)
    }

    /// Reads an object, `None` when it or its kind does not exist.
    pub async fn live(&mut self, id: &ObjectId) -> Result<Option<Value>, String> {
        if self.discover(id).await.is_none() {
            return Ok(None);
        }
        self.get(id).await
    }

    /// The API of an object's kind, or the error Flux reports when the kind is unknown.
    async fn api(&mut self, id: &ObjectId) -> Result<(Api<DynamicObject>, bool), String> {
        let (resource, caps) = self.discover(id).await.ok_or_else(|| {
            format!(
                "{} dry-run failed: no matches for kind \"{}\" in version \"{}\"",
                id.subject(),
                id.kind,
                id.api_version()
            )
        })?;
        let (resource, caps) = (&resource, &caps);
        let namespaced = caps.scope == Scope::Namespaced;
        let api = if namespaced {
            if id.namespace.is_empty() {
                return Err(format!("{} namespace not specified", id.subject()));
            }
            Api::namespaced_with(self.client.clone(), &id.namespace, resource)
        } else {
            Api::all_with(self.client.clone(), resource)
        };
        Ok((api, namespaced))
    }

    /// Reads an object, `None` when it does not exist.
    pub async fn get(&mut self, id: &ObjectId) -> Result<Option<Value>, String> {
        let (api, _) = self.api(id).await?;
        match api.get_opt(&id.name).await {
            Ok(found) => Ok(found.map(to_value)),
            Err(e) => Err(format!("{} get failed: {}", id.subject(), api_message(&e))),
        }
    }

    /// Applies the objects stage by stage; definitions and classes are waited for.
    pub async fn apply_all_staged(
        &mut self,
        objects: Vec<Value>,
        options: &ApplyOptions,
    ) -> Result<Vec<Change>, ApplyError> {
        let mut changes = Vec::new();
        for (stage, members) in order::staged(objects) {
            let applied = self.apply_all(members, options, &mut changes).await;
            if let Err(message) = applied {
                return Err(ApplyError { message, changes });
            }
            if stage != Stage::Resources {
                // Newly defined kinds must be discovered again.
                self.resources.clear();
                let ids: Vec<ObjectId> = changes
                    .iter()
                    .filter(|c| order::stage_of(&c.id) == stage && c.action != Action::Skipped)
                    .map(|c| c.id.clone())
                    .collect();
                if let Err(message) = self
                    .wait_for(&ids, options.stage_timeout, options.poll_interval)
                    .await
                {
                    return Err(ApplyError { message, changes });
                }
            }
        }
        Ok(changes)
    }

    async fn apply_all(
        &mut self,
        objects: Vec<Value>,
        options: &ApplyOptions,
        changes: &mut Vec<Change>,
    ) -> Result<(), String> {
        for object in objects {
            let change = self.apply_one(object, options).await?;
            changes.push(change);
        }
        Ok(())
    }

    /// Applies one object when it is new or drifted (skipping what the exclusion rules skip).
    pub async fn apply_one(&mut self, desired: Value, options: &ApplyOptions) -> Result<Change, String> {
        let (id, api, desired, action) = match self.plan(desired, options).await? {
            Planned::Done(change) => return Ok(change),
            Planned::Apply {
                id,
                api,
                desired,
                live,
                dry_run,
                ignored,
                cleanup,
            } => {
                if let Some(patch) = &cleanup {
                    api.patch(&id.name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                        .map_err(|e| {
                            format!("{} metadata cleanup failed: {}", id.subject(), api_message(&e))
                        })?;
                }
                let action = match &live {
                    None => Action::Created,
                    Some(live) if cleanup.is_some() || drift::has_drifted(live, &dry_run, &ignored) => {
                        Action::Configured
                    }
                    Some(_) => {
                        return Ok(Change {
                            id,
                            action: Action::Unchanged,
                        });
                    }
                };
                (id, api, desired, action)
            }
        };
        let params = PatchParams::apply(options.manager()).force();
        api.patch(&id.name, &params, &Patch::Apply(&desired))
            .await
            .map_err(|e| format!("{} apply failed: {}", id.subject(), api_message(&e)))?;
        Ok(Change { id, action })
    }

    /// What applying `desired` would change, without changing anything: the action and, for
    /// drifted objects, the live object and the dry-run result (both without `status`).
    pub async fn diff_one(
        &mut self,
        desired: Value,
        options: &ApplyOptions,
    ) -> Result<(Change, Option<(Value, Value)>), String> {
        let options = ApplyOptions {
            force: false,
            ..options.clone()
        };
        match self.plan(desired, &options).await? {
            Planned::Done(change) => Ok((change, None)),
            Planned::Apply {
                id,
                live,
                dry_run,
                ignored,
                ..
            } => Ok(match live {
                None => (
                    Change {
                        id,
                        action: Action::Created,
                    },
                    None,
                ),
                Some(live) if drift::has_drifted(&live, &dry_run, &ignored) => (
                    Change {
                        id,
                        action: Action::Configured,
                    },
                    Some((live, dry_run)),
                ),
                Some(_) => (
                    Change {
                        id,
                        action: Action::Unchanged,
                    },
                    None,
                ),
            }),
        }
    }

    /// Reads the live object, applies the exclusion rules and ignore rules, and runs the
    /// server-side dry-run (recreating the object first on an immutable-field error when forced).
    async fn plan(&mut self, mut desired: Value, options: &ApplyOptions) -> Result<Planned, String> {
        let id = ObjectId::of(&desired);
        let (api, _) = self.api(&id).await?;
        let live = api
            .get_opt(&id.name)
            .await
            .map_err(|e| format!("{} dry-run failed: {}", id.subject(), api_message(&e)))?
            .map(to_value);
        let skip = |o: &Value| {
            objects::has_meta(o, RECONCILE_KEY, "disabled")
                || objects::has_meta(o, SSA_KEY, "Ignore")
                || owned_by_canary(o)
        };
        if skip(&desired) || live.as_ref().is_some_and(skip) {
            return Ok(Planned::Done(Change {
                id,
                action: Action::Skipped,
            }));
        }
        if live.is_some() && objects::has_meta(&desired, SSA_KEY, "IfNotPresent") {
            return Ok(Planned::Done(Change {
                id,
                action: Action::Skipped,
            }));
        }
        let mut ignored = drift::ignored_paths(&options.ignore, &desired);
        if id.group == "apps"
            && id.kind == "Deployment"
            && options.canary_targets.keeps_replicas(&id.namespace, &id.name)
        {
            ignored.push(REPLICAS_POINTER.to_owned());
        }
        // Ignored paths keep their live value (Flux's "adopt"), so they are never reverted.
        if let Some(live) = &live {
            for pointer in &ignored {
                match live.pointer(pointer) {
                    Some(v) => drift::set_pointer(&mut desired, pointer, v.clone()),
                    None => drift::remove_pointer(&mut desired, pointer),
                }
            }
        }
        let dry_params = PatchParams::apply(options.manager()).force().dry_run();
        let mut live = live;
        let dry_run = match api.patch(&id.name, &dry_params, &Patch::Apply(&desired)).await {
            Ok(o) => to_value(o),
            Err(err) => {
                let force = options.force
                    || objects::has_meta(&desired, FORCE_KEY, "enabled")
                    || live
                        .as_ref()
                        .is_some_and(|l| objects::has_meta(l, FORCE_KEY, "enabled"));
                if live.is_some() && is_immutable(&err) && force {
                    self.recreate_wait(&api, &id, options).await?;
                    live = None;
                    api.patch(&id.name, &dry_params, &Patch::Apply(&desired))
                        .await
                        .map(to_value)
                        .map_err(|e| dry_run_error(&id, &e))?
                } else {
                    return Err(dry_run_error(&id, &err));
                }
            }
        };
        let cleanup = live.as_ref().and_then(|l| {
            let merge =
                objects::has_meta(&desired, SSA_KEY, "Merge") || objects::has_meta(l, SSA_KEY, "Merge");
            let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
            if merge || options.keep_managed_fields {
                None
            } else {
                takeover::cleanup_patch(l, &now)
            }
        });
        Ok(Planned::Apply {
            id,
            api,
            desired,
            live,
            dry_run,
            ignored,
            cleanup,
        })
    }

    async fn recreate_wait(
        &mut self,
        api: &Api<DynamicObject>,
        id: &ObjectId,
        options: &ApplyOptions,
    ) -> Result<(), String> {
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        api.delete(&id.name, &params)
            .await
            .map_err(|e| format!("{} delete failed: {}", id.subject(), api_message(&e)))?;
        let deadline = tokio::time::Instant::now() + options.stage_timeout.max(Duration::from_secs(5));
        while tokio::time::Instant::now() < deadline {
            if matches!(api.get_opt(&id.name).await, Ok(None)) {
                return Ok(());
            }
            tokio::time::sleep(options.poll_interval).await;
        }
        Err(format!(
            "{} was not deleted in time to be recreated",
            id.subject()
        ))
    }

    /// Waits until every object is current; fails early when one fails.
    pub async fn wait_for(
        &mut self,
        ids: &[ObjectId],
        timeout: Duration,
        interval: Duration,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let statuses = self.statuses(ids).await;
            let pending: Vec<&(ObjectId, kstatus::Health)> = statuses
                .iter()
                .filter(|(_, h)| h.status != Status::Current)
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            let describe = |list: &[&(ObjectId, kstatus::Health)]| {
                list.iter()
                    .map(|(id, h)| format!("{} status: '{}'", id.subject(), h.status))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let failed: Vec<&(ObjectId, kstatus::Health)> = pending
                .iter()
                .copied()
                .filter(|(_, h)| h.status == Status::Failed)
                .collect();
            if !failed.is_empty() {
                return Err(format!(
                    "failed early due to stalled resources: [{}]",
                    describe(&failed)
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("timeout waiting for: [{}]", describe(&pending)));
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// The kstatus of each object (`NotFound` when absent).
    pub async fn statuses(&mut self, ids: &[ObjectId]) -> Vec<(ObjectId, kstatus::Health)> {
        let mut out = Vec::new();
        for id in ids {
            let health = match self.get(id).await {
                Ok(Some(obj)) => kstatus::compute(&obj),
                Ok(None) => kstatus::Health {
                    status: Status::NotFound,
                    message: "Resource not found".into(),
                },
                Err(message) => kstatus::Health {
                    status: Status::Unknown,
                    message,
                },
            };
            out.push((id.clone(), health));
        }
        out
    }

    /// Deletes stale objects in the given order (already reversed), only those carrying the
    /// Kustomization's ownership labels and not excluded. Returns the changes and the errors.
    pub async fn delete_all(
        &mut self,
        stale: &[ObjectId],
        owner: &BTreeMap<String, String>,
    ) -> (Vec<Change>, Vec<String>) {
        let mut changes = Vec::new();
        let mut errors = Vec::new();
        for id in stale {
            match self.delete_one(id, owner).await {
                Ok(action) => changes.push(Change {
                    id: id.clone(),
                    action,
                }),
                Err(e) => errors.push(e),
            }
        }
        (changes, errors)
    }

    async fn delete_one(
        &mut self,
        id: &ObjectId,
        owner: &BTreeMap<String, String>,
    ) -> Result<Action, String> {
        let (api, _) = match self.api(id).await {
            Ok(api) => api,
            // The kind is gone (its CRD was deleted), and so is the object.
            Err(_) => return Ok(Action::Deleted),
        };
        let live = match api.get_opt(&id.name).await {
            Ok(Some(o)) => to_value(o),
            Ok(None) => return Ok(Action::Deleted),
            Err(e) => return Err(format!("{} get failed: {}", id.subject(), api_message(&e))),
        };
        let owned = owner
            .iter()
            .all(|(k, v)| live["metadata"]["labels"][k].as_str() == Some(v.as_str()));
        let excluded = objects::has_meta(&live, PRUNE_KEY, "disabled")
            || objects::has_meta(&live, RECONCILE_KEY, "disabled")
            || objects::has_meta(&live, SSA_KEY, "Ignore")
            || owned_by_canary(&live);
        if !owned || excluded {
            return Ok(Action::Skipped);
        }
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match api.delete(&id.name, &params).await {
            Ok(_) => Ok(Action::Deleted),
            Err(e) if Kind::of(&e) == Kind::NotFound => Ok(Action::Deleted),
            Err(e) => Err(format!("{} delete failed: {}", id.subject(), api_message(&e))),
        }
    }
}

/// The outcome of planning one object (short-lived, one at a time: its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Planned {
    Done(Change),
    Apply {
        id: ObjectId,
        api: Api<DynamicObject>,
        desired: Value,
        live: Option<Value>,
        dry_run: Value,
        ignored: Vec<String>,
        /// Flux's metadata cleanup to patch before applying.
        cleanup: Option<Value>,
    },
}

/// The ownership labels of a Kustomization, as `delete_all` checks them.
pub fn owner(name: &str, namespace: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), name.to_owned()),
        (NAMESPACE_LABEL.to_owned(), namespace.to_owned()),
    ])
}

/// Whether serin generated the object (a Canary owns it).
pub fn owned_by_canary(object: &Value) -> bool {
    object["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| {
            refs.iter().any(|r| {
                r["kind"] == "Canary"
                    && r["apiVersion"]
                        .as_str()
                        .is_some_and(|v| v.starts_with("flagger.app/"))
            })
        })
}

fn to_value(o: DynamicObject) -> Value {
    serde_json::to_value(o).unwrap_or(Value::Null)
}

fn api_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

fn dry_run_error(id: &ObjectId, err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) => format!("{} dry-run failed ({}): {}", id.subject(), s.reason, s.message),
        other => format!("{} dry-run failed: {other}", id.subject()),
    }
}

/// Flux's heuristic: a Conflict or Invalid answer, or a message saying a field is immutable.
fn is_immutable(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(s) => {
            matches!(Kind::of(err), Kind::Conflict | Kind::Invalid)
                || s.message.contains("is immutable")
                || s.message.contains("immutable field")
        }
        _ => false,
    }
}
