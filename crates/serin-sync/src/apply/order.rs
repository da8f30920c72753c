//! Flux's apply order and stages, object identities and the inventory: `ReconcileOrder` (kind
//! index, then group, kind, namespace, name), the staged apply (CRDs, Namespaces and
//! ClusterRoles; then `*Class` kinds; then the rest), inventory ids
//! `<namespace>_<name>_<group>_<kind>` and the stale set. Pure.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::api::ResourceRef;

/// Kinds applied first, in this order.
pub const FIRST: [&str; 23] = [
    "CustomResourceDefinition",
    "Namespace",
    "ClusterRole",
    "ClusterClass",
    "RuntimeClass",
    "PriorityClass",
    "StorageClass",
    "VolumeSnapshotClass",
    "IngressClass",
    "GatewayClass",
    "ClusterRoleBinding",
    "ResourceQuota",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "Secret",
    "Service",
    "LimitRange",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
];
/// Kinds applied last, in this order.
pub const LAST: [&str; 2] = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"];

/// An object's identity: group, version, kind, namespace, name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectId {
    /// The identity of an object (an empty namespace for cluster-scoped ones).
    pub fn of(object: &Value) -> Self {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: object["kind"].as_str().unwrap_or_default().to_owned(),
            namespace: object["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            name: object["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
        }
    }

    /// `Kind/namespace/name`, or `Kind/name` for cluster-scoped objects, as Flux's change sets.
    pub fn subject(&self) -> String {
        if self.namespace.is_empty() {
            format!("{}/{}", self.kind, self.name)
        } else {
            format!("{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The inventory id (`:` in RBAC names written as `__`).
    pub fn inventory_id(&self) -> String {
        let name = if is_rbac(&self.group, &self.kind) {
            self.name.replace(':', "__")
        } else {
            self.name.clone()
        };
        format!("{}_{}_{}_{}", self.namespace, name, self.group, self.kind)
    }

    /// Parses an inventory entry.
    pub fn from_inventory(entry: &ResourceRef) -> Option<Self> {
        let (namespace, rest) = entry.id.split_once('_')?;
        let (rest, kind) = rest.rsplit_once('_')?;
        let (name, group) = rest.rsplit_once('_')?;
        let name = if is_rbac(group, kind) {
            name.replace("__", ":")
        } else {
            name.to_owned()
        };
        Some(Self {
            group: group.to_owned(),
            version: entry.v.clone(),
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name,
        })
    }

    /// Identity without the version, for comparing inventories.
    fn key(&self) -> (String, String, String, String) {
        (
            self.group.clone(),
            self.kind.clone(),
            self.namespace.clone(),
            self.name.clone(),
        )
    }
}

fn is_rbac(group: &str, kind: &str) -> bool {
    group == "rbac.authorization.k8s.io"
        && matches!(
            kind,
            "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding"
        )
}

fn kind_index(kind: &str) -> i64 {
    if let Some(i) = FIRST.iter().position(|k| *k == kind) {
        return i as i64 - FIRST.len() as i64;
    }
    if let Some(i) = LAST.iter().position(|k| *k == kind) {
        return i as i64 + 1;
    }
    0
}

/// Flux's `ReconcileOrder` comparison.
pub fn reconcile_order(a: &ObjectId, b: &ObjectId) -> std::cmp::Ordering {
    kind_index(&a.kind)
        .cmp(&kind_index(&b.kind))
        .then_with(|| a.group.cmp(&b.group))
        .then_with(|| a.kind.cmp(&b.kind))
        .then_with(|| a.namespace.cmp(&b.namespace))
        .then_with(|| a.name.cmp(&b.name))
}

/// The apply stages, each waited for before the next except the last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// CRDs, Namespaces, ClusterRoles.
    Definitions,
    /// Kinds whose name ends in `Class`.
    Classes,
    /// Everything else.
    Resources,
}

/// The stage an object is applied in.
pub fn stage_of(id: &ObjectId) -> Stage {
    match (id.group.as_str(), id.kind.as_str()) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") | ("", "Namespace") => Stage::Definitions,
        ("rbac.authorization.k8s.io", "ClusterRole") => Stage::Definitions,
        (_, kind) if kind.ends_with("Class") => Stage::Classes,
        _ => Stage::Resources,
    }
}

/// Splits objects into stages, each sorted in reconcile order.
pub fn staged(objects: Vec<Value>) -> Vec<(Stage, Vec<Value>)> {
    let mut stages: Vec<(Stage, Vec<Value>)> = Vec::new();
    for stage in [Stage::Definitions, Stage::Classes, Stage::Resources] {
        let mut members: Vec<Value> = objects
            .iter()
            .filter(|o| stage_of(&ObjectId::of(o)) == stage)
            .cloned()
            .collect();
        members.sort_by(|a, b| reconcile_order(&ObjectId::of(a), &ObjectId::of(b)));
        if !members.is_empty() {
            stages.push((stage, members));
        }
    }
    stages
}

/// The inventory entries of applied objects, sorted by id.
pub fn inventory(ids: &[ObjectId]) -> Vec<ResourceRef> {
    let mut entries: Vec<ResourceRef> = ids
        .iter()
        .map(|id| ResourceRef {
            id: id.inventory_id(),
            v: id.version.clone(),
        })
        .collect();
    entries.sort();
    entries.dedup();
    entries
}

/// Objects of the old inventory that the new one lacks, in reverse reconcile order (the order
/// they are deleted in).
pub fn stale(old: &[ResourceRef], new: &[ResourceRef]) -> Vec<ObjectId> {
    let keep: BTreeSet<_> = new
        .iter()
        .filter_map(ObjectId::from_inventory)
        .map(|id| id.key())
        .collect();
    let mut out: Vec<ObjectId> = old
        .iter()
        .filter_map(ObjectId::from_inventory)
        .filter(|id| !keep.contains(&id.key()))
        .collect();
    out.sort_by(|a, b| reconcile_order(b, a));
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(api_version: &str, kind: &str, ns: &str, name: &str) -> Value {
        json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": ns}})
    }

    #[test]
    fn inventory_ids_round_trip() {
        let cases = [
            (obj("v1", "Namespace", "", "podinfo"), "_podinfo__Namespace"),
            (
                obj("v1", "Service", "default", "podinfo"),
                "default_podinfo__Service",
            ),
            (
                obj("rbac.authorization.k8s.io/v1", "ClusterRole", "", "system:x"),
                "_system__x_rbac.authorization.k8s.io_ClusterRole",
            ),
            (
                obj("apps/v1", "Deployment", "apps", "my_app"),
                "apps_my_app_apps_Deployment",
            ),
        ];
        for (o, want) in cases {
            let id = ObjectId::of(&o);
            assert_eq!(id.inventory_id(), want);
            let back = ObjectId::from_inventory(&ResourceRef {
                id: want.to_owned(),
                v: id.version.clone(),
            })
            .expect("parses");
            assert_eq!(back, id);
        }
    }

    #[test]
    fn stages_and_order_follow_flux() {
        let objects = vec![
            obj("flagger.app/v1beta1", "Canary", "apps", "podinfo"),
            obj("apps/v1", "Deployment", "apps", "podinfo"),
            obj("v1", "Service", "apps", "db"),
            obj("storage.k8s.io/v1", "StorageClass", "", "fast"),
            obj("v1", "Namespace", "", "apps"),
            obj(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "",
                "canaries.flagger.app",
            ),
            obj(
                "admissionregistration.k8s.io/v1",
                "ValidatingWebhookConfiguration",
                "",
                "hook",
            ),
        ];
        let stages = staged(objects);
        let names: Vec<(Stage, Vec<String>)> = stages
            .iter()
            .map(|(s, objs)| (*s, objs.iter().map(|o| ObjectId::of(o).subject()).collect()))
            .collect();
        assert_eq!(
            names,
            vec![
                (
                    Stage::Definitions,
                    vec![
                        "CustomResourceDefinition/canaries.flagger.app".into(),
                        "Namespace/apps".into()
                    ]
                ),
                (Stage::Classes, vec!["StorageClass/fast".into()]),
                (
                    Stage::Resources,
                    vec![
                        "Service/apps/db".into(),
                        "Deployment/apps/podinfo".into(),
                        "Canary/apps/podinfo".into(),
                        "ValidatingWebhookConfiguration/hook".into()
                    ]
                ),
            ]
        );
    }

    #[test]
    fn stale_objects_come_in_reverse_order() {
        let old = inventory(&[
            ObjectId::of(&obj("v1", "Namespace", "", "apps")),
            ObjectId::of(&obj("apps/v1", "Deployment", "apps", "a")),
            ObjectId::of(&obj("autoscaling/v2", "HorizontalPodAutoscaler", "apps", "a")),
            ObjectId::of(&obj("v1", "ConfigMap", "apps", "keep")),
        ]);
        let new = inventory(&[ObjectId::of(&obj("v1", "ConfigMap", "apps", "keep"))]);
        let subjects: Vec<String> = stale(&old, &new).iter().map(ObjectId::subject).collect();
        assert_eq!(
            subjects,
            [
                "HorizontalPodAutoscaler/apps/a",
                "Deployment/apps/a",
                "Namespace/apps"
            ]
        );
    }
}
