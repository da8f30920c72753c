//! Patch formats the API server accepts: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
//! strategic merge patch with the merge keys of the built-in kinds. No I/O.

use serde_json::{Map, Value};

/// The field an item of a list named `field` is merged by, for the built-in kinds' lists
/// (`patchMergeKey` in the Kubernetes API), judged from the field name and its items.
pub fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let has = |key: &str| items.iter().any(|i| i.get(key).is_some());
    match field {
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "volumes" | "imagePullSecrets" => {
            Some("name")
        }
        "ports" if has("containerPort") => Some("containerPort"),
        "ports" => Some("port"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "resourceClaims" => Some("name"),
        _ => None,
    }
}

/// Lists of scalars that strategic merge patch unions instead of replacing.
fn is_merged_primitive_list(field: &str) -> bool {
    matches!(field, "finalizers")
}

/// Applies an RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target_map) = target else { return };
    for (key, value) in patch_map {
        if value.is_null() {
            target_map.remove(key);
        } else {
            merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Why a patch cannot be applied.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch itself cannot be decoded (a JSON patch that is not an array): 400.
    #[error("{0}")]
    Malformed(String),
    /// The patch does not apply to the object: 422 for JSON patches, as the API server answers.
    #[error("{0}")]
    Invalid(String),
    #[error("the server rejected our request due to an error in our request: test operation failed at {0}")]
    TestFailed(String),
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<Vec<String>, PatchError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    if !path.starts_with('/') {
        return Err(PatchError::Invalid(format!("invalid JSON pointer {path:?}")));
    }
    Ok(path[1..].split('/').map(unescape).collect())
}

fn parent_mut<'a>(root: &'a mut Value, tokens: &[String], path: &str) -> Result<&'a mut Value, PatchError> {
    let mut node = root;
    for token in tokens {
        node = match node {
            Value::Object(map) => map.get_mut(token),
            Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| PatchError::Invalid(format!("doc is missing path: {path:?}")))?;
    }
    Ok(node)
}

fn json_add(root: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    let tokens = split_pointer(path)?;
    let Some((last, parents)) = tokens.split_last() else {
        *root = value;
        return Ok(());
    };
    match parent_mut(root, parents, path)? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            let index = if last == "-" {
                items.len()
            } else {
                last.parse::<usize>()
                    .map_err(|_| PatchError::Invalid(format!("invalid array index in {path:?}")))?
            };
            if index > items.len() {
                return Err(PatchError::Invalid(format!(
                    "array index out of bounds in {path:?}"
                )));
            }
            items.insert(index, value);
            Ok(())
        }
        _ => Err(PatchError::Invalid(format!("doc is missing path: {path:?}"))),
    }
}

fn json_remove(root: &mut Value, path: &str) -> Result<Value, PatchError> {
    let tokens = split_pointer(path)?;
    let Some((last, parents)) = tokens.split_last() else {
        return Err(PatchError::Invalid("cannot remove the whole document".to_owned()));
    };
    let missing = || PatchError::Invalid(format!("doc is missing path: {path:?}: missing value"));
    match parent_mut(root, parents, path)? {
        Value::Object(map) => map.remove(last).ok_or_else(missing),
        Value::Array(items) => {
            let index = last.parse::<usize>().map_err(|_| missing())?;
            if index < items.len() {
                Ok(items.remove(index))
            } else {
                Err(missing())
            }
        }
        _ => Err(missing()),
    }
}

/// Applies an RFC 6902 JSON patch.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| PatchError::Malformed("a JSON patch must be an array of operations".into()))?;
    for op in ops {
        let kind = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| PatchError::Invalid("operation without \"op\"".into()))?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| PatchError::Invalid("operation without \"path\"".into()))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| PatchError::Invalid(format!("{kind} operation without \"value\"")))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| PatchError::Invalid(format!("{kind} operation without \"from\"")))
        };
        match kind {
            "add" => json_add(target, path, value()?)?,
            "remove" => {
                json_remove(target, path)?;
            }
            "replace" => {
                json_remove(target, path)?;
                json_add(target, path, value()?)?;
            }
            "move" => {
                let v = json_remove(target, from()?)?;
                json_add(target, path, v)?;
            }
            "copy" => {
                let v = target.pointer(from()?).cloned().ok_or_else(|| {
                    PatchError::Invalid(format!(
                        "doc is missing from path: {:?}",
                        from().unwrap_or_default()
                    ))
                })?;
                json_add(target, path, v)?;
            }
            "test" => {
                if target.pointer(path) != Some(&value()?) {
                    return Err(PatchError::TestFailed(path.to_owned()));
                }
            }
            other => return Err(PatchError::Invalid(format!("unexpected operation {other:?}"))),
        }
    }
    Ok(())
}

/// Applies a strategic merge patch to a built-in object.
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Object(patch_map) = patch else {
        return Err(PatchError::Invalid(
            "a strategic merge patch must be a JSON object".into(),
        ));
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    match patch_map.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replaced = patch_map.clone();
            replaced.remove("$patch");
            *target = Value::Object(replaced);
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some(other) => return Err(PatchError::Invalid(format!("unknown patch type {other:?}"))),
        None => {}
    }
    let Value::Object(target_map) = target else {
        return Ok(());
    };
    // Directives first: they refer to fields that the rest of the patch may also set.
    for (key, value) in patch_map {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/")
            && let (Some(Value::Array(items)), Some(remove)) = (target_map.get_mut(field), value.as_array())
        {
            items.retain(|i| !remove.contains(i));
        }
    }
    for (key, value) in patch_map {
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            target_map.remove(key);
            continue;
        }
        match value {
            Value::Object(_) => {
                let entry = target_map.entry(key.clone()).or_insert(Value::Object(Map::new()));
                strategic_merge(entry, value)?;
                if entry.is_null() {
                    target_map.remove(key);
                }
            }
            Value::Array(patch_items) => {
                let merged = merge_list(key, target_map.get(key), patch_items)?;
                target_map.insert(key.clone(), merged);
            }
            scalar => {
                target_map.insert(key.clone(), scalar.clone());
            }
        }
    }
    // `$setElementOrder/<field>` reorders a merged list as the client last wrote it.
    for (key, value) in patch_map {
        if let (Some(field), Some(order)) = (key.strip_prefix("$setElementOrder/"), value.as_array())
            && let Some(Value::Array(items)) = target_map.get_mut(field)
        {
            reorder(field, items, order);
        }
    }
    Ok(())
}

fn reorder(field: &str, items: &mut [Value], order: &[Value]) {
    let key = merge_key(field, items);
    let position = |item: &Value| {
        order.iter().position(|o| match key {
            Some(k) => o.get(k).is_some() && o.get(k) == item.get(k),
            None => o == item,
        })
    };
    items.sort_by_key(|item| position(item).unwrap_or(usize::MAX));
}

fn merge_list(field: &str, current: Option<&Value>, patch_items: &[Value]) -> Result<Value, PatchError> {
    if patch_items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(Value::Array(
            patch_items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .cloned()
                .collect(),
        ));
    }
    let current_items = current.and_then(Value::as_array).cloned().unwrap_or_default();
    if is_merged_primitive_list(field) {
        let mut out = current_items;
        for item in patch_items {
            if !out.contains(item) {
                out.push(item.clone());
            }
        }
        return Ok(Value::Array(out));
    }
    let Some(key) = merge_key(field, patch_items).or_else(|| merge_key(field, &current_items)) else {
        return Ok(Value::Array(patch_items.to_vec()));
    };
    let mut out = current_items;
    for item in patch_items {
        let id = item.get(key);
        let existing = out.iter().position(|o| id.is_some() && o.get(key) == id);
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (existing, delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut out[i], item)?,
            (None, false) => {
                let mut fresh = Value::Object(Map::new());
                strategic_merge(&mut fresh, item)?;
                out.push(fresh);
            }
        }
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_sets_and_deletes() {
        let mut v = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge_patch(&mut v, &json!({"a": {"b": null, "d": 3}, "l": [3]}));
        assert_eq!(v, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn json_patch_operations() {
        let mut v = json!({"spec": {"replicas": 1, "list": [1, 2]}});
        json_patch(
            &mut v,
            &json!([
                {"op": "replace", "path": "/spec/replicas", "value": 3},
                {"op": "add", "path": "/spec/list/-", "value": 3},
                {"op": "add", "path": "/metadata", "value": {"labels": {"a/b": "x"}}},
                {"op": "test", "path": "/metadata/labels/a~1b", "value": "x"},
                {"op": "remove", "path": "/spec/list/0"},
                {"op": "copy", "from": "/spec/replicas", "path": "/spec/copy"},
                {"op": "move", "from": "/spec/copy", "path": "/spec/moved"}
            ]),
        )
        .expect("applies");
        assert_eq!(
            v,
            json!({"spec": {"replicas": 3, "list": [2, 3], "moved": 3}, "metadata": {"labels": {"a/b": "x"}}})
        );
        assert!(
            json_patch(
                &mut v,
                &json!([{"op": "test", "path": "/spec/replicas", "value": 1}])
            )
            .is_err()
        );
        assert!(json_patch(&mut v, &json!([{"op": "remove", "path": "/nope"}])).is_err());
    }

    #[test]
    fn strategic_merge_keeps_container_fields() {
        let mut deploy = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "a:1", "ports": [{"containerPort": 80, "name": "http"}], "env": [{"name": "X", "value": "1"}]},
            {"name": "sidecar", "image": "s:1"}
        ]}}}});
        strategic_merge(
            &mut deploy,
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "a:2"}]}}}}),
        )
        .expect("applies");
        let containers = &deploy["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "a:2");
        assert_eq!(containers[0]["ports"][0]["containerPort"], 80);
        assert_eq!(containers[0]["env"][0]["name"], "X");
        assert_eq!(containers[1]["name"], "sidecar");
    }

    #[test]
    fn strategic_merge_directives() {
        let mut v = json!({"metadata": {"finalizers": ["a"]}, "spec": {"containers": [{"name": "a"}, {"name": "b"}], "args": ["x", "y"], "tolerations": [{"key": "k"}]}});
        strategic_merge(
            &mut v,
            &json!({
                "metadata": {"finalizers": ["b"]},
                "spec": {
                    "containers": [{"name": "a", "$patch": "delete"}, {"name": "c"}],
                    "args": ["z"],
                    "tolerations": [{"key": "t"}],
                    "$setElementOrder/containers": [{"name": "c"}, {"name": "b"}]
                }
            }),
        )
        .expect("applies");
        assert_eq!(v["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(v["spec"]["containers"], json!([{"name": "c"}, {"name": "b"}]));
        assert_eq!(v["spec"]["args"], json!(["z"]));
        assert_eq!(v["spec"]["tolerations"], json!([{"key": "t"}]));
        strategic_merge(&mut v, &json!({"spec": {"$patch": "replace", "only": 1}})).expect("applies");
        assert_eq!(v["spec"], json!({"only": 1}));
        strategic_merge(
            &mut v,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        )
        .expect("applies");
        assert_eq!(v["metadata"]["finalizers"], json!(["b"]));
    }
}
