//! The resource types the emulator serves: the built-in kinds serin, serin-sync, kubectl and
//! Helm use, and every CustomResourceDefinition created through the API. No I/O.

use serde_json::Value;

/// A printer column of a CRD (`additionalPrinterColumns`).
#[derive(Clone, Debug, PartialEq)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: Option<String>,
    pub description: String,
    pub json_path: String,
    pub priority: i64,
}

/// One served resource at one group/version.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceInfo {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub list_kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status_subresource: bool,
    /// JSON pointers of the scale subresource: (spec replicas, status replicas, label selector).
    pub scale: Option<(String, String, Option<String>)>,
    /// `metadata.generation` is kept and bumped on spec changes.
    pub tracks_generation: bool,
    /// Strategic merge patch is supported (built-in kinds only, as on a real server).
    pub strategic_merge: bool,
    pub printer_columns: Vec<PrinterColumn>,
    /// The structural schema of a custom resource (`openAPIV3Schema`).
    pub schema: Option<Value>,
    /// From a CRD (so deleting the CRD removes it).
    pub custom: bool,
}

impl ResourceInfo {
    /// `apiVersion` of objects of this resource.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// An access or identity review (`SelfSubjectAccessReview`, `SelfSubjectReview`, ...):
    /// created and answered, never stored.
    pub fn is_review(&self) -> bool {
        matches!(
            self.group.as_str(),
            "authorization.k8s.io" | "authentication.k8s.io"
        )
    }

    /// The group and kind, such as `Deployment.apps`.
    pub fn group_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Verbs for discovery.
    pub fn verbs(&self) -> Vec<&'static str> {
        if self.is_review() {
            return vec!["create"];
        }
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    categories: &'static [&'static str],
    status: bool,
    scale: bool,
    generation: bool,
}

const fn b(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
) -> Builtin {
    Builtin {
        group,
        version,
        kind,
        plural,
        namespaced,
        short,
        categories: &[],
        status: false,
        scale: false,
        generation: false,
    }
}

const BUILTINS: &[Builtin] = &[
    Builtin {
        status: true,
        ..b("", "v1", "Namespace", "namespaces", false, &["ns"])
    },
    b("", "v1", "ConfigMap", "configmaps", true, &["cm"]),
    b("", "v1", "Secret", "secrets", true, &[]),
    Builtin {
        status: true,
        categories: &["all"],
        ..b("", "v1", "Service", "services", true, &["svc"])
    },
    b("", "v1", "ServiceAccount", "serviceaccounts", true, &["sa"]),
    b("", "v1", "Event", "events", true, &["ev"]),
    Builtin {
        status: true,
        categories: &["all"],
        ..b("", "v1", "Pod", "pods", true, &["po"])
    },
    Builtin {
        status: true,
        ..b(
            "",
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            true,
            &["pvc"],
        )
    },
    b("", "v1", "Endpoints", "endpoints", true, &["ep"]),
    b("events.k8s.io", "v1", "Event", "events", true, &["ev"]),
    Builtin {
        status: true,
        scale: true,
        generation: true,
        categories: &["all"],
        ..b("apps", "v1", "Deployment", "deployments", true, &["deploy"])
    },
    Builtin {
        status: true,
        scale: true,
        generation: true,
        categories: &["all"],
        ..b("apps", "v1", "StatefulSet", "statefulsets", true, &["sts"])
    },
    Builtin {
        status: true,
        generation: true,
        categories: &["all"],
        ..b("apps", "v1", "DaemonSet", "daemonsets", true, &["ds"])
    },
    Builtin {
        status: true,
        scale: true,
        generation: true,
        categories: &["all"],
        ..b("apps", "v1", "ReplicaSet", "replicasets", true, &["rs"])
    },
    Builtin {
        status: true,
        generation: true,
        categories: &["all"],
        ..b(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            true,
            &["hpa"],
        )
    },
    b("coordination.k8s.io", "v1", "Lease", "leases", true, &[]),
    Builtin {
        status: true,
        generation: true,
        ..b(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            &["crd", "crds"],
        )
    },
    b("rbac.authorization.k8s.io", "v1", "Role", "roles", true, &[]),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
        &[],
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
        &[],
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
        &[],
    ),
    Builtin {
        status: true,
        generation: true,
        ..b(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
            &["pdb"],
        )
    },
    Builtin {
        status: true,
        generation: true,
        ..b("networking.k8s.io", "v1", "Ingress", "ingresses", true, &["ing"])
    },
    b(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        false,
        &[],
    ),
    b(
        "authorization.k8s.io",
        "v1",
        "SubjectAccessReview",
        "subjectaccessreviews",
        false,
        &[],
    ),
    b(
        "authentication.k8s.io",
        "v1",
        "SelfSubjectReview",
        "selfsubjectreviews",
        false,
        &[],
    ),
    Builtin {
        status: true,
        generation: true,
        categories: &["all"],
        ..b("batch", "v1", "Job", "jobs", true, &[])
    },
];

/// Every served resource.
#[derive(Clone, Debug)]
pub struct Registry {
    resources: Vec<ResourceInfo>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Registry {
    /// The built-in kinds.
    pub fn builtin() -> Self {
        let resources = BUILTINS
            .iter()
            .map(|b| ResourceInfo {
                group: b.group.to_owned(),
                version: b.version.to_owned(),
                kind: b.kind.to_owned(),
                list_kind: format!("{}List", b.kind),
                plural: b.plural.to_owned(),
                singular: b.kind.to_lowercase(),
                namespaced: b.namespaced,
                short_names: b.short.iter().map(|s| (*s).to_owned()).collect(),
                categories: b.categories.iter().map(|s| (*s).to_owned()).collect(),
                status_subresource: b.status,
                scale: b.scale.then(|| {
                    (
                        "/spec/replicas".to_owned(),
                        "/status/replicas".to_owned(),
                        Some("/spec/selector".to_owned()),
                    )
                }),
                tracks_generation: b.generation,
                strategic_merge: true,
                printer_columns: Vec::new(),
                schema: None,
                custom: false,
            })
            .collect();
        Self { resources }
    }

    /// All resources.
    pub fn all(&self) -> &[ResourceInfo] {
        &self.resources
    }

    /// The resource served at `group/version` under `plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// Any version of `group`/`plural` (for storage, which is version-independent).
    pub fn find_any_version(&self, group: &str, plural: &str) -> Option<&ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.plural == plural)
    }

    /// The resource of an `apiVersion` and `kind`.
    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceInfo> {
        let (group, version) = split_api_version(api_version);
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
    }

    /// Group versions in discovery order: (group, versions).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in &self.resources {
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, versions)) => {
                    if !versions.contains(&r.version) {
                        versions.push(r.version.clone());
                    }
                }
                None => out.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        out
    }

    /// Registers (or replaces) the resources of a CRD object. Returns an error message when the
    /// CRD is unusable.
    pub fn register_crd(&mut self, crd: &Value) -> Result<(), String> {
        let infos = crd_resources(crd)?;
        let (group, plural) = (infos[0].group.clone(), infos[0].plural.clone());
        self.resources
            .retain(|r| !(r.custom && r.group == group && r.plural == plural));
        self.resources.extend(infos);
        Ok(())
    }

    /// Removes the resources of a CRD.
    pub fn unregister_crd(&mut self, group: &str, plural: &str) {
        self.resources
            .retain(|r| !(r.custom && r.group == group && r.plural == plural));
    }
}

/// `apps/v1` -> (`apps`, `v1`); `v1` -> (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn strings_at(v: &Value, pointer: &str) -> Vec<String> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// The served resources of a CRD object, validated as the API server does for what matters here.
/// The API server's complaint about a `default` that is not one of its schema's `enum` values,
/// anywhere in a CRD schema (the API server validates defaults against their schema).
pub fn default_outside_enum(schema: &Value, path: &str) -> Option<String> {
    if let (Some(default), Some(values)) = (
        schema.get("default"),
        schema.get("enum").and_then(Value::as_array),
    ) && !values.contains(default)
    {
        let supported: Vec<String> = values.iter().map(Value::to_string).collect();
        return Some(format!(
            "{path}.default: Unsupported value: {default}: supported values: {}",
            supported.join(", ")
        ));
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            if let Some(m) = default_outside_enum(sub, &format!("{path}.properties[{name}]")) {
                return Some(m);
            }
        }
    }
    schema
        .get("items")
        .and_then(|items| default_outside_enum(items, &format!("{path}.items")))
        .or_else(|| {
            schema
                .get("additionalProperties")
                .filter(|a| a.is_object())
                .and_then(|a| default_outside_enum(a, &format!("{path}.additionalProperties")))
        })
}

pub fn crd_resources(crd: &Value) -> Result<Vec<ResourceInfo>, String> {
    let group = str_at(crd, "/spec/group").ok_or("spec.group: Required value")?;
    let kind = str_at(crd, "/spec/names/kind").ok_or("spec.names.kind: Required value")?;
    let plural = str_at(crd, "/spec/names/plural").ok_or("spec.names.plural: Required value")?;
    let name = str_at(crd, "/metadata/name").unwrap_or_default();
    if name != format!("{plural}.{group}") {
        return Err(format!(
            "metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
        ));
    }
    let scope = str_at(crd, "/spec/scope").ok_or("spec.scope: Required value")?;
    let namespaced = match scope {
        "Namespaced" => true,
        "Cluster" => false,
        other => {
            return Err(format!(
                "spec.scope: Unsupported value: \"{other}\": supported values: \"Cluster\", \"Namespaced\""
            ));
        }
    };
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .ok_or("spec.versions: Required value")?;
    if versions.is_empty() {
        return Err(
            "spec.versions: Invalid value: must have exactly one version marked as storage version"
                .to_owned(),
        );
    }
    let mut out = Vec::new();
    for v in versions {
        let version = v
            .get("name")
            .and_then(Value::as_str)
            .ok_or("spec.versions[].name: Required value")?;
        if !v.get("served").and_then(Value::as_bool).unwrap_or(false) {
            continue;
        }
        let schema = v.pointer("/schema/openAPIV3Schema").cloned();
        let Some(schema) = schema else {
            return Err(format!(
                "spec.versions[{version}].schema.openAPIV3Schema: Required value: schemas are required"
            ));
        };
        if let Some(message) = default_outside_enum(&schema, "spec.validation.openAPIV3Schema") {
            return Err(message);
        }
        let schema = Some(schema);
        let printer_columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .map(|c| PrinterColumn {
                        name: c
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        type_: c
                            .get("type")
                            .and_then(Value::as_str)
                            .unwrap_or("string")
                            .to_owned(),
                        format: c.get("format").and_then(Value::as_str).map(str::to_owned),
                        description: c
                            .get("description")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        json_path: c
                            .get("jsonPath")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let scale = v.pointer("/subresources/scale").map(|s| {
            let path = |key: &str| s.get(key).and_then(Value::as_str).map(json_path_to_pointer);
            (
                path("specReplicasPath").unwrap_or_else(|| "/spec/replicas".to_owned()),
                path("statusReplicasPath").unwrap_or_else(|| "/status/replicas".to_owned()),
                path("labelSelectorPath"),
            )
        });
        out.push(ResourceInfo {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
            list_kind: str_at(crd, "/spec/names/listKind")
                .map_or_else(|| format!("{kind}List"), str::to_owned),
            plural: plural.to_owned(),
            singular: str_at(crd, "/spec/names/singular").map_or_else(|| kind.to_lowercase(), str::to_owned),
            namespaced,
            short_names: strings_at(crd, "/spec/names/shortNames"),
            categories: strings_at(crd, "/spec/names/categories"),
            status_subresource: v.pointer("/subresources/status").is_some(),
            scale,
            tracks_generation: true,
            strategic_merge: false,
            printer_columns,
            schema,
            custom: true,
        });
    }
    if out.is_empty() {
        return Err("spec.versions: Invalid value: no version is served".to_owned());
    }
    Ok(out)
}

/// `.spec.replicas` -> `/spec/replicas`.
pub fn json_path_to_pointer(path: &str) -> String {
    path.trim_start_matches('.')
        .split('.')
        .fold(String::new(), |acc, seg| format!("{acc}/{seg}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_default_outside_the_enum_is_rejected_as_the_api_server_does() {
        let schema = serde_json::json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "type": {"type": "string", "default": "", "enum": ["slack", "msteams"]},
            "ok": {"type": "string", "default": "a", "enum": ["a"]}}}}});
        assert_eq!(
            super::default_outside_enum(&schema, "spec.validation.openAPIV3Schema").as_deref(),
            Some(
                "spec.validation.openAPIV3Schema.properties[spec].properties[type].default: Unsupported value: \"\": supported values: \"slack\", \"msteams\""
            )
        );
        let fine = serde_json::json!({"type": "string", "default": "a", "enum": ["a"]});
        assert_eq!(super::default_outside_enum(&fine, "x"), None);
    }

    use serde_json::json;

    use super::*;

    #[test]
    fn builtins_are_found() {
        let r = Registry::builtin();
        let d = r.find("apps", "v1", "deployments").expect("deployments");
        assert_eq!(d.kind, "Deployment");
        assert!(d.scale.is_some() && d.status_subresource && d.tracks_generation);
        assert_eq!(
            r.find_kind("v1", "ConfigMap").map(|c| c.plural.as_str()),
            Some("configmaps")
        );
        assert!(r.groups().iter().any(|(g, v)| g.is_empty() && v == &["v1"]));
    }

    #[test]
    fn crds_register_and_unregister() {
        let crd = json!({
            "metadata": {"name": "canaries.flagger.app"},
            "spec": {
                "group": "flagger.app", "scope": "Namespaced",
                "names": {"kind": "Canary", "plural": "canaries", "categories": ["all"]},
                "versions": [{"name": "v1beta1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [{"name": "Status", "type": "string", "jsonPath": ".status.phase"}]}]
            }
        });
        let mut r = Registry::builtin();
        r.register_crd(&crd).expect("registers");
        let c = r.find("flagger.app", "v1beta1", "canaries").expect("served");
        assert_eq!(c.list_kind, "CanaryList");
        assert_eq!(c.singular, "canary");
        assert_eq!(c.printer_columns[0].json_path, ".status.phase");
        r.unregister_crd("flagger.app", "canaries");
        assert!(r.find("flagger.app", "v1beta1", "canaries").is_none());
        let mut bad = crd.clone();
        bad["metadata"]["name"] = json!("wrong");
        assert!(r.register_crd(&bad).is_err());
    }
}
