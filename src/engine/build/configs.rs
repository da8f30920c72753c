//! ConfigMaps and Secrets a pod template uses: finding them, renaming them to their `-primary`
//! copies in the primary's pod spec, and building the copies. Pure.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::Value;

use crate::api::Canary;

/// The ownerReferences of a `-primary` config copy written for `canary` (Flagger's
/// `CreatePrimaryConfigs`): `canary` as its controller, and every other owner the copy already
/// has kept as a plain owner, so several Canaries can share one copy and deleting one of them
/// does not garbage-collect what the other primaries mount.
pub fn shared_owner_references(canary: &Canary, existing: &[OwnerReference]) -> Vec<OwnerReference> {
    let mut out = vec![super::owner_reference(canary)];
    let uid = canary.metadata.uid.as_deref().unwrap_or_default();
    let name = canary.metadata.name.as_deref().unwrap_or_default();
    for owner in existing {
        let this = owner.uid == uid || (owner.kind == "Canary" && owner.name == name);
        if !this {
            out.push(OwnerReference {
                controller: Some(false),
                ..owner.clone()
            });
        }
    }
    out
}

/// A ConfigMap or Secret a pod template refers to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigRef {
    /// `configmap` or `secret` (the status key prefix).
    pub kind: &'static str,
    pub name: String,
    /// `optional: true` on every reference to it.
    pub optional: bool,
}

impl ConfigRef {
    /// `configmap/<name>` or `secret/<name>`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

fn optional(v: &Value) -> bool {
    v.get("optional").and_then(Value::as_bool).unwrap_or(false)
}

/// Every ConfigMap and Secret referenced by a pod spec (volumes, projected sources, env and
/// envFrom of containers and init containers).
pub fn references(pod_spec: &Value) -> Vec<ConfigRef> {
    let mut found: Vec<ConfigRef> = Vec::new();
    let mut add = |kind: &'static str, name: Option<&str>, opt: bool| {
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            match found.iter_mut().find(|r| r.kind == kind && r.name == name) {
                Some(r) => r.optional &= opt,
                None => found.push(ConfigRef {
                    kind,
                    name: name.to_owned(),
                    optional: opt,
                }),
            }
        }
    };
    for volume in pod_spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(cm) = volume.get("configMap") {
            add("configmap", cm.get("name").and_then(Value::as_str), optional(cm));
        }
        if let Some(s) = volume.get("secret") {
            add("secret", s.get("secretName").and_then(Value::as_str), optional(s));
        }
        for source in volume
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(cm) = source.get("configMap") {
                add("configmap", cm.get("name").and_then(Value::as_str), optional(cm));
            }
            if let Some(s) = source.get("secret") {
                add("secret", s.get("name").and_then(Value::as_str), optional(s));
            }
        }
    }
    for list in ["containers", "initContainers"] {
        for container in pod_spec.get(list).and_then(Value::as_array).into_iter().flatten() {
            for env in container
                .get("env")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(r) = env.pointer("/valueFrom/configMapKeyRef") {
                    add("configmap", r.get("name").and_then(Value::as_str), optional(r));
                }
                if let Some(r) = env.pointer("/valueFrom/secretKeyRef") {
                    add("secret", r.get("name").and_then(Value::as_str), optional(r));
                }
            }
            for from in container
                .get("envFrom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(r) = from.get("configMapRef") {
                    add("configmap", r.get("name").and_then(Value::as_str), optional(r));
                }
                if let Some(r) = from.get("secretRef") {
                    add("secret", r.get("name").and_then(Value::as_str), optional(r));
                }
            }
        }
    }
    found.sort();
    found
}

/// The pod spec with references to tracked configs renamed to their `-primary` copies.
pub fn rename_to_primary(pod_spec: &Value, tracked: &BTreeSet<(String, String)>) -> Value {
    let mut spec = pod_spec.clone();
    let rename = |node: &mut Value, field: &str, kind: &str| {
        if let Some(Value::String(name)) = node.get_mut(field)
            && tracked.contains(&(kind.to_owned(), name.clone()))
        {
            *name = format!("{name}-primary");
        }
    };
    if let Some(volumes) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for volume in volumes {
            if let Some(cm) = volume.get_mut("configMap") {
                rename(cm, "name", "configmap");
            }
            if let Some(s) = volume.get_mut("secret") {
                rename(s, "secretName", "secret");
            }
            if let Some(sources) = volume
                .pointer_mut("/projected/sources")
                .and_then(Value::as_array_mut)
            {
                for source in sources {
                    if let Some(cm) = source.get_mut("configMap") {
                        rename(cm, "name", "configmap");
                    }
                    if let Some(s) = source.get_mut("secret") {
                        rename(s, "name", "secret");
                    }
                }
            }
        }
    }
    for list in ["containers", "initContainers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for container in containers {
                if let Some(envs) = container.get_mut("env").and_then(Value::as_array_mut) {
                    for env in envs {
                        if let Some(r) = env.pointer_mut("/valueFrom/configMapKeyRef") {
                            rename(r, "name", "configmap");
                        }
                        if let Some(r) = env.pointer_mut("/valueFrom/secretKeyRef") {
                            rename(r, "name", "secret");
                        }
                    }
                }
                if let Some(froms) = container.get_mut("envFrom").and_then(Value::as_array_mut) {
                    for from in froms {
                        if let Some(r) = from.get_mut("configMapRef") {
                            rename(r, "name", "configmap");
                        }
                        if let Some(r) = from.get_mut("secretRef") {
                            rename(r, "name", "secret");
                        }
                    }
                }
            }
        }
    }
    spec
}

/// Secret types whose contents serin tracks (registry credentials are not).
pub const TRACKED_SECRET_TYPES: [&str; 4] = [
    "Opaque",
    "kubernetes.io/basic-auth",
    "kubernetes.io/ssh-auth",
    "kubernetes.io/tls",
];

/// The annotation that opts a ConfigMap or Secret out of tracking (`disable...`).
pub const CONFIG_TRACKING_ANNOTATION: &str = "flagger.app/config-tracking";

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_shared_copy_keeps_every_canarys_owner_reference() {
        let canary = |name: &str, uid: &str| -> Canary {
            serde_json::from_value(json!({
                "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
                "metadata": {"name": name, "namespace": "test", "uid": uid},
                "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}, "service": {"port": 80}},
            }))
            .expect("canary")
        };
        let (a, b) = (canary("a", "ua"), canary("b", "ub"));
        let first = shared_owner_references(&a, &[]);
        assert_eq!(first.len(), 1);
        // b writes the copy a made: both own it, b as its controller.
        let second = shared_owner_references(&b, &first);
        let owners: Vec<(&str, Option<bool>)> =
            second.iter().map(|o| (o.name.as_str(), o.controller)).collect();
        assert_eq!(owners, [("b", Some(true)), ("a", Some(false))]);
        // a writes again: still both, a's reference not repeated.
        let third = shared_owner_references(&a, &second);
        let owners: Vec<(&str, Option<bool>)> =
            third.iter().map(|o| (o.name.as_str(), o.controller)).collect();
        assert_eq!(owners, [("a", Some(true)), ("b", Some(false))]);
    }

    fn pod_spec() -> Value {
        json!({
            "volumes": [
                {"name": "cfg", "configMap": {"name": "podinfo-config"}},
                {"name": "tls", "secret": {"secretName": "podinfo-tls", "optional": true}},
                {"name": "all", "projected": {"sources": [{"configMap": {"name": "extra"}}, {"secret": {"name": "podinfo-secret"}}]}}
            ],
            "containers": [{
                "name": "podinfod",
                "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "podinfo-secret", "key": "value"}}}, {"name": "B", "value": "x"}],
                "envFrom": [{"configMapRef": {"name": "podinfo-env"}}]
            }],
            "initContainers": [{"name": "init", "env": [{"name": "C", "valueFrom": {"configMapKeyRef": {"name": "init-config", "key": "k"}}}]}]
        })
    }

    #[test]
    fn finds_every_reference_once() {
        let keys: Vec<String> = references(&pod_spec()).iter().map(ConfigRef::key).collect();
        assert_eq!(
            keys,
            [
                "configmap/extra",
                "configmap/init-config",
                "configmap/podinfo-config",
                "configmap/podinfo-env",
                "secret/podinfo-secret",
                "secret/podinfo-tls"
            ]
        );
        assert!(
            references(&pod_spec())
                .iter()
                .find(|r| r.name == "podinfo-tls")
                .is_some_and(|r| r.optional)
        );
    }

    #[test]
    fn renames_tracked_references_only() {
        let tracked = BTreeSet::from([
            ("secret".to_owned(), "podinfo-secret".to_owned()),
            ("configmap".to_owned(), "podinfo-env".to_owned()),
        ]);
        let renamed = rename_to_primary(&pod_spec(), &tracked);
        assert_eq!(
            renamed.pointer("/containers/0/env/0/valueFrom/secretKeyRef/name"),
            Some(&json!("podinfo-secret-primary"))
        );
        assert_eq!(
            renamed.pointer("/volumes/2/projected/sources/1/secret/name"),
            Some(&json!("podinfo-secret-primary"))
        );
        assert_eq!(
            renamed.pointer("/containers/0/envFrom/0/configMapRef/name"),
            Some(&json!("podinfo-env-primary"))
        );
        assert_eq!(
            renamed.pointer("/volumes/0/configMap/name"),
            Some(&json!("podinfo-config")),
            "untracked stays"
        );
    }
}
