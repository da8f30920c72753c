//! Reading the built YAML into objects (Lists expanded; objects without `apiVersion`, `kind` or
//! `metadata.name`, and kustomize's own Kustomizations, dropped) and setting the ownership
//! labels and common metadata on them. Pure.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// Label naming the Kustomization that applied an object.
pub const NAME_LABEL: &str = "kustomize.toolkit.fluxcd.io/name";
/// Label naming that Kustomization's namespace.
pub const NAMESPACE_LABEL: &str = "kustomize.toolkit.fluxcd.io/namespace";

/// Decodes a multi-document YAML stream into objects.
pub fn read_objects(yaml: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(doc).map_err(|e| serin_runtime::yaml::describe(&e))?;
        if value.is_null() {
            continue;
        }
        let is_list =
            value["kind"].as_str().is_some_and(|k| k.ends_with("List")) && value["items"].is_array();
        let items = if is_list {
            value["items"].as_array().cloned().unwrap_or_default()
        } else {
            vec![value]
        };
        for item in items {
            let api_version = item["apiVersion"].as_str().unwrap_or_default();
            let kind = item["kind"].as_str().unwrap_or_default();
            let name = item["metadata"]["name"].as_str().unwrap_or_default();
            if api_version.is_empty() || kind.is_empty() || name.is_empty() {
                continue;
            }
            if api_version.starts_with("kustomize.config.k8s.io/") && kind == "Kustomization" {
                continue;
            }
            out.push(item);
        }
    }
    Ok(out)
}

/// Sets labels and annotations on an object, overriding keys it already has.
pub fn set_metadata(
    object: &mut Value,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) {
    for (field, entries) in [("labels", labels), ("annotations", annotations)] {
        if entries.is_empty() {
            continue;
        }
        let meta = &mut object["metadata"];
        if !meta[field].is_object() {
            meta[field] = Value::Object(serde_json::Map::new());
        }
        if let Some(map) = meta[field].as_object_mut() {
            for (k, v) in entries {
                map.insert(k.clone(), Value::String(v.clone()));
            }
        }
    }
}

/// The ownership labels of a Kustomization.
pub fn owner_labels(name: &str, namespace: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), name.to_owned()),
        (NAMESPACE_LABEL.to_owned(), namespace.to_owned()),
    ])
}

/// A label or annotation value of an object.
pub fn meta_value<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object["metadata"]["labels"][key]
        .as_str()
        .or_else(|| object["metadata"]["annotations"][key].as_str())
}

/// Whether `key` is set, as label or annotation, to `value` (case-insensitively), as Flux's
/// selectors match.
pub fn has_meta(object: &Value, key: &str, value: &str) -> bool {
    ["labels", "annotations"].iter().any(|f| {
        object["metadata"][f][key]
            .as_str()
            .is_some_and(|v| !v.is_empty() && v.eq_ignore_ascii_case(value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_expand_and_incomplete_objects_drop() {
        let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: b}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {}\n---\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nmetadata: {name: k}\n---\n";
        let objects = read_objects(yaml).expect("read");
        let names: Vec<&str> = objects
            .iter()
            .filter_map(|o| o["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn metadata_matches_labels_or_annotations_case_insensitively() {
        let mut o = serde_json::json!({"metadata": {"name": "a"}});
        set_metadata(
            &mut o,
            &owner_labels("apps", "flux-system"),
            &BTreeMap::from([(
                "kustomize.toolkit.fluxcd.io/prune".to_owned(),
                "Disabled".to_owned(),
            )]),
        );
        assert_eq!(o["metadata"]["labels"][NAME_LABEL], "apps");
        assert!(has_meta(&o, "kustomize.toolkit.fluxcd.io/prune", "disabled"));
        assert!(!has_meta(&o, "kustomize.toolkit.fluxcd.io/reconcile", "disabled"));
    }
}
