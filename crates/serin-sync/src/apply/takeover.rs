//! Flux's metadata cleanup before an apply: managedFields entries of `kubectl` (Apply and Update,
//! matched by name prefix, so `kubectl-edit`, `kubectl-client-side-apply`, `kubectl-label` …),
//! `before-first-apply` and `kustomize-controller` (Update) are merged into one
//! `kustomize-controller` Apply entry, and kubectl's and old Flux's bookkeeping annotations and
//! labels are removed. The next apply then owns, and drops, fields only such an edit had set.
//! Objects marked `kustomize.toolkit.fluxcd.io/ssa: Merge` are left alone. Pure.

use serde_json::{Map, Value, json};

use super::manager::FIELD_MANAGER;

/// `(manager name prefix, operation)` pairs whose fields are taken over.
pub const TAKEN_OVER: [(&str, &str); 4] = [
    ("kubectl", "Apply"),
    ("kubectl", "Update"),
    ("before-first-apply", "Update"),
    (FIELD_MANAGER, "Update"),
];
/// Annotations removed from applied objects.
pub const CLEANUP_ANNOTATIONS: [&str; 3] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "kustomize.toolkit.fluxcd.io/checksum",
    "fluxcd.io/sync-checksum",
];
/// Labels removed from applied objects.
pub const CLEANUP_LABELS: [&str; 1] = ["fluxcd.io/sync-gc-mark"];

fn taken_over(entry: &Value) -> bool {
    let manager = entry["manager"].as_str().unwrap_or_default();
    let operation = entry["operation"].as_str().unwrap_or_default();
    entry["subresource"].as_str().is_none_or(str::is_empty)
        && TAKEN_OVER
            .iter()
            .any(|(prefix, op)| manager.starts_with(prefix) && operation == *op)
}

/// The JSON merge patch that cleans up a live object, `None` when there is nothing to do.
pub fn cleanup_patch(live: &Value, now: &str) -> Option<Value> {
    let entries = live["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut patch = Map::new();
    if entries.iter().any(taken_over) {
        let mut merged = Value::Object(Map::new());
        let mut api_version = live["apiVersion"].clone();
        let mut kept = Vec::new();
        for entry in entries {
            let ours = entry["manager"] == FIELD_MANAGER
                && entry["operation"] == "Apply"
                && entry["subresource"].is_null();
            if taken_over(&entry) || ours {
                merge(&mut merged, &entry["fieldsV1"]);
                if ours {
                    api_version = entry["apiVersion"].clone();
                }
            } else {
                kept.push(entry);
            }
        }
        kept.push(json!({
            "manager": FIELD_MANAGER,
            "operation": "Apply",
            "apiVersion": api_version,
            "time": now,
            "fieldsType": "FieldsV1",
            "fieldsV1": merged,
        }));
        patch.insert("managedFields".into(), Value::Array(kept));
    }
    for (field, keys) in [
        ("annotations", &CLEANUP_ANNOTATIONS[..]),
        ("labels", &CLEANUP_LABELS[..]),
    ] {
        let present: Vec<&&str> = keys
            .iter()
            .filter(|k| !live["metadata"][field][**k].is_null())
            .collect();
        if !present.is_empty() {
            patch.insert(
                field.into(),
                Value::Object(
                    present
                        .into_iter()
                        .map(|k| ((*k).to_owned(), Value::Null))
                        .collect(),
                ),
            );
        }
    }
    (!patch.is_empty()).then(|| json!({ "metadata": patch }))
}

/// Union of two fieldsV1 sets.
fn merge(into: &mut Value, from: &Value) {
    let (Some(target), Some(source)) = (into.as_object_mut(), from.as_object()) else {
        return;
    };
    for (k, v) in source {
        merge(
            target
                .entry(k.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            v,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_entries_become_ours() {
        let live = json!({"apiVersion": "apps/v1", "metadata": {
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "x"},
            "managedFields": [
                {"manager": "kustomize-controller", "operation": "Apply", "apiVersion": "apps/v1", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
                {"manager": "kubectl-edit", "operation": "Update", "apiVersion": "apps/v1", "fieldsV1": {"f:spec": {"f:paused": {}}}},
                {"manager": "serin", "operation": "Update", "apiVersion": "apps/v1", "fieldsV1": {"f:spec": {"f:template": {}}}},
                {"manager": "kubectl", "operation": "Update", "subresource": "scale", "fieldsV1": {"f:spec": {}}}
            ]
        }});
        let patch = cleanup_patch(&live, "now").expect("a patch");
        let entries = patch["metadata"]["managedFields"].as_array().expect("entries");
        let managers: Vec<&str> = entries.iter().filter_map(|e| e["manager"].as_str()).collect();
        assert_eq!(managers, ["serin", "kubectl", "kustomize-controller"]);
        assert_eq!(
            entries[2]["fieldsV1"],
            json!({"f:spec": {"f:replicas": {}, "f:paused": {}}})
        );
        assert_eq!(
            patch["metadata"]["annotations"],
            json!({"kubectl.kubernetes.io/last-applied-configuration": null})
        );
    }

    #[test]
    fn nothing_to_clean_is_no_patch() {
        let live = json!({"metadata": {"managedFields": [{"manager": "kustomize-controller", "operation": "Apply", "fieldsV1": {}}, {"manager": "serin", "operation": "Update", "fieldsV1": {}}]}});
        assert_eq!(cleanup_patch(&live, "now"), None);
    }
}
