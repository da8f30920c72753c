//! Field ownership for server-side apply: the set of fields an object's configuration sets, in
//! the API server's `FieldsV1` form (`f:name`, `k:{"name":"app"}`, `v:"x"`), and the structured
//! merge of an applied configuration into the live object. No I/O.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::patch::merge_key;

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// A map field.
    Field(String),
    /// A list item identified by its merge key, as canonical JSON (`{"name":"app"}`).
    Key(String),
}

/// A field path.
pub type Path = Vec<Step>;

/// The fields owned by one manager: leaves, plus the list items it created.
pub type FieldSet = BTreeSet<Path>;

fn key_of(field: &str, item: &Value, items: &[Value]) -> Option<String> {
    let key = merge_key(field, items)?;
    let id = item.get(key)?;
    let mut m = Map::new();
    m.insert(key.to_owned(), id.clone());
    // Service ports are keyed by port and protocol on a real server.
    if (key == "port" || key == "containerPort")
        && let Some(protocol) = item.get("protocol")
    {
        m.insert("protocol".to_owned(), protocol.clone());
    }
    Some(Value::Object(m).to_string())
}

/// The fields set by `value` (status excluded unless `include_status`).
pub fn field_set(value: &Value, include_status: bool) -> FieldSet {
    let mut out = FieldSet::new();
    if let Value::Object(map) = value {
        for (k, v) in map {
            if matches!(k.as_str(), "apiVersion" | "kind") || (k == "status" && !include_status) {
                continue;
            }
            if k == "metadata" {
                for mk in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(mv) = v.get(mk) {
                        collect(
                            mv,
                            mk,
                            &mut vec![Step::Field("metadata".into()), Step::Field(mk.into())],
                            &mut out,
                        );
                    }
                }
                continue;
            }
            collect(v, k, &mut vec![Step::Field(k.clone())], &mut out);
        }
    }
    out
}

fn collect(value: &Value, field: &str, path: &mut Path, out: &mut FieldSet) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                path.push(Step::Field(k.clone()));
                collect(v, k, path, out);
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() && merge_key(field, items).is_some() => {
            for item in items {
                match key_of(field, item, items) {
                    Some(key) => {
                        path.push(Step::Key(key));
                        out.insert(path.clone());
                        collect(item, "", path, out);
                        path.pop();
                    }
                    None => {
                        out.insert(path.clone());
                    }
                }
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The value at `path`, if present.
pub fn get<'a>(value: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let mut node = value;
    let mut field = String::new();
    for step in path {
        node = match step {
            Step::Field(f) => {
                field.clone_from(f);
                node.get(f)?
            }
            Step::Key(key) => {
                let items = node.as_array()?;
                items
                    .iter()
                    .find(|i| key_of(&field, i, items).as_deref() == Some(key.as_str()))?
            }
        };
    }
    Some(node)
}

/// Removes the value at `path`; empty parent maps left behind are removed too.
pub fn remove(value: &mut Value, path: &[Step]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut field = String::new();
    let mut node = &mut *value;
    for step in parents {
        let next = match step {
            Step::Field(f) => {
                field.clone_from(f);
                node.get_mut(f)
            }
            Step::Key(key) => match node {
                Value::Array(items) => {
                    let snapshot = items.clone();
                    items
                        .iter_mut()
                        .find(|i| key_of(&field, i, &snapshot).as_deref() == Some(key.as_str()))
                }
                _ => None,
            },
        };
        match next {
            Some(n) => node = n,
            None => return,
        }
    }
    match (last, node) {
        (Step::Field(f), Value::Object(map)) => {
            map.remove(f);
        }
        (Step::Key(key), Value::Array(items)) => {
            let snapshot = items.clone();
            items.retain(|i| key_of(&field, i, &snapshot).as_deref() != Some(key.as_str()));
        }
        _ => {}
    }
    prune_empty(value, path.len().saturating_sub(1));
}

fn prune_empty(value: &mut Value, depth: usize) {
    if depth == 0 {
        return;
    }
    if let Value::Object(map) = value {
        for v in map.values_mut() {
            prune_empty(v, depth - 1);
        }
        map.retain(|_, v| !matches!(v, Value::Object(m) if m.is_empty()));
    }
}

/// Merges an applied configuration into the live object: maps field by field, keyed lists item
/// by item, everything else replaced.
pub fn merge_applied(live: &mut Value, applied: &Value, field: &str) {
    match (live, applied) {
        (Value::Object(live_map), Value::Object(applied_map)) => {
            for (k, v) in applied_map {
                match live_map.get_mut(k) {
                    Some(existing) if !v.is_null() => merge_applied(existing, v, k),
                    _ => {
                        live_map.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(live_items), Value::Array(applied_items))
            if merge_key(field, applied_items).is_some() =>
        {
            for item in applied_items {
                let key = key_of(field, item, applied_items);
                let snapshot = live_items.clone();
                match live_items
                    .iter_mut()
                    .find(|l| key.is_some() && key_of(field, l, &snapshot) == key)
                {
                    Some(existing) => merge_applied(existing, item, ""),
                    None => live_items.push(item.clone()),
                }
            }
        }
        (live, applied) => *live = applied.clone(),
    }
}

/// A field set in `FieldsV1` form.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for step in path {
            let name = match step {
                Step::Field(f) => format!("f:{f}"),
                Step::Key(k) => format!("k:{k}"),
            };
            let entry = node.entry(name).or_insert_with(|| Value::Object(Map::new()));
            if matches!(step, Step::Key(_))
                && let Value::Object(m) = entry
            {
                m.entry(".".to_owned())
                    .or_insert_with(|| Value::Object(Map::new()));
            }
            let Value::Object(next) = entry else { break };
            node = next;
        }
    }
    Value::Object(root)
}

/// A field set from `FieldsV1` form.
pub fn from_fields_v1(value: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    walk_v1(value, &mut Vec::new(), &mut out);
    out
}

fn walk_v1(value: &Value, path: &mut Path, out: &mut FieldSet) {
    let Value::Object(map) = value else { return };
    let children: Vec<_> = map.iter().filter(|(k, _)| k.as_str() != ".").collect();
    if (map.contains_key(".") || children.is_empty()) && !path.is_empty() {
        out.insert(path.clone());
    }
    for (k, v) in children {
        let step = if let Some(f) = k.strip_prefix("f:") {
            Step::Field(f.to_owned())
        } else if let Some(key) = k.strip_prefix("k:") {
            Step::Key(key.to_owned())
        } else {
            continue;
        };
        path.push(step);
        walk_v1(v, path, out);
        path.pop();
    }
}

/// Human form of a path for conflict messages: `.spec.replicas`,
/// `.spec.template.spec.containers[name="app"].image`.
pub fn display(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Field(f) => {
                out.push('.');
                out.push_str(f);
            }
            Step::Key(k) => {
                let parsed: Value = serde_json::from_str(k).unwrap_or(Value::Null);
                let inner: Vec<String> = parsed
                    .as_object()
                    .map(|m| m.iter().map(|(a, b)| format!("{a}={b}")).collect())
                    .unwrap_or_default();
                out.push_str(&format!("[{}]", inner.join(",")));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn field_sets_round_trip_through_fields_v1() {
        let obj = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "labels": {"app": "x"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "app", "image": "a:1"}]}}},
            "status": {"replicas": 2}
        });
        let set = field_set(&obj, false);
        assert!(set.contains(&vec![Step::Field("spec".into()), Step::Field("replicas".into())]));
        assert!(!set.iter().any(|p| p[0] == Step::Field("status".into())));
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]["f:image"],
            json!({})
        );
        assert_eq!(from_fields_v1(&v1), set);
    }

    #[test]
    fn get_remove_and_merge() {
        let mut obj = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}], "x": {"y": 1}}});
        let path = vec![
            Step::Field("spec".into()),
            Step::Field("containers".into()),
            Step::Key("{\"name\":\"b\"}".into()),
            Step::Field("image".into()),
        ];
        assert_eq!(get(&obj, &path), Some(&json!("2")));
        remove(&mut obj, &path[..3]);
        assert_eq!(obj["spec"]["containers"], json!([{"name": "a", "image": "1"}]));
        remove(
            &mut obj,
            &[
                Step::Field("spec".into()),
                Step::Field("x".into()),
                Step::Field("y".into()),
            ],
        );
        assert_eq!(obj["spec"].get("x"), None);
        merge_applied(
            &mut obj,
            &json!({"spec": {"containers": [{"name": "a", "image": "9"}, {"name": "c"}]}}),
            "",
        );
        assert_eq!(
            obj["spec"]["containers"],
            json!([{"name": "a", "image": "9"}, {"name": "c"}])
        );
        assert_eq!(display(&path), ".spec.containers[name=\"b\"].image");
    }
}
