//! Drift detection between a live object and a dry-run apply result, and the ignore rules that
//! exclude JSON pointers from it (`spec.ignore`, and serin's implicit `/spec/replicas` rule for
//! Canary targets). Pure.

use regex::Regex;
use serde_json::Value;

use super::order::ObjectId;
use crate::api::kustomization::{IgnoreRule, Selector};

/// Whether the dry-run result differs from the live object: labels, annotations, or anything
/// but `metadata` and `status`, after removing the ignored paths from both.
pub fn has_drifted(live: &Value, dry_run: &Value, ignored: &[String]) -> bool {
    if dry_run["metadata"]["resourceVersion"].is_null() {
        return true;
    }
    for field in ["labels", "annotations"] {
        let empty = Value::Object(serde_json::Map::new());
        let a = if live["metadata"][field].is_null() {
            &empty
        } else {
            &live["metadata"][field]
        };
        let b = if dry_run["metadata"][field].is_null() {
            &empty
        } else {
            &dry_run["metadata"][field]
        };
        if a != b {
            return true;
        }
    }
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
        }
        for p in ignored {
            remove_pointer(&mut v, p);
        }
        v
    };
    strip(live) != strip(dry_run)
}

/// Removes the value at a JSON pointer, if present.
pub fn remove_pointer(value: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let last = unescape(last);
    let target = if parent.is_empty() {
        Some(value)
    } else {
        value.pointer_mut(parent)
    };
    match target {
        Some(Value::Object(m)) => {
            m.remove(&last);
        }
        Some(Value::Array(a)) => {
            if let Ok(i) = last.parse::<usize>()
                && i < a.len()
            {
                a.remove(i);
            }
        }
        _ => {}
    }
}

/// Sets the value at a JSON pointer, creating objects on the way.
pub fn set_pointer(value: &mut Value, pointer: &str, new: Value) {
    let mut current = value;
    let parts: Vec<String> = pointer.split('/').skip(1).map(unescape).collect();
    for (n, part) in parts.iter().enumerate() {
        if !current.is_object() {
            *current = Value::Object(serde_json::Map::new());
        }
        let Some(map) = current.as_object_mut() else {
            return;
        };
        if n == parts.len() - 1 {
            map.insert(part.clone(), new);
            return;
        }
        current = map
            .entry(part.clone())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
    }
}

fn unescape(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

/// The pointers the ignore rules exclude for this object.
pub fn ignored_paths(rules: &[IgnoreRule], object: &Value) -> Vec<String> {
    rules
        .iter()
        .filter(|r| r.target.as_ref().is_none_or(|t| selects(t, object)))
        .flat_map(|r| r.paths.iter().cloned())
        .collect()
}

/// Whether a selector (regex fields, label and annotation selectors) selects the object.
pub fn selects(selector: &Selector, object: &Value) -> bool {
    let id = ObjectId::of(object);
    let matches = |pattern: &Option<String>, value: &str| {
        pattern
            .as_ref()
            .is_none_or(|p| Regex::new(&format!("^(?:{p})$")).is_ok_and(|re| re.is_match(value)))
    };
    matches(&selector.group, &id.group)
        && matches(&selector.version, &id.version)
        && matches(&selector.kind, &id.kind)
        && matches(&selector.name, &id.name)
        && matches(&selector.namespace, &id.namespace)
        && selector
            .label_selector
            .as_ref()
            .is_none_or(|s| label_selects(s, &object["metadata"]["labels"]))
        && selector
            .annotation_selector
            .as_ref()
            .is_none_or(|s| label_selects(s, &object["metadata"]["annotations"]))
}

/// A label (or annotation) selector with the API server's full grammar; one that does not parse
/// selects nothing (and is logged).
fn label_selects(selector: &str, labels: &Value) -> bool {
    match serin_runtime::selector::LabelSelector::parse(selector) {
        Ok(s) => s.matches(Some(labels)),
        Err(e) => {
            tracing::warn!(error = %e, "ignore rule selector selects nothing");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn drift_ignores_status_and_ignored_paths() {
        let live = json!({"metadata": {"resourceVersion": "1", "labels": {"a": "1"}}, "spec": {"replicas": 0, "x": 1}, "status": {"ready": 1}});
        let same = json!({"metadata": {"resourceVersion": "1", "labels": {"a": "1"}}, "spec": {"replicas": 0, "x": 1}});
        assert!(!has_drifted(&live, &same, &[]));
        let replicas = json!({"metadata": {"resourceVersion": "1", "labels": {"a": "1"}}, "spec": {"replicas": 3, "x": 1}});
        assert!(has_drifted(&live, &replicas, &[]));
        assert!(!has_drifted(&live, &replicas, &["/spec/replicas".into()]));
        let label = json!({"metadata": {"resourceVersion": "1", "labels": {"a": "2"}}, "spec": {"replicas": 0, "x": 1}});
        assert!(has_drifted(&live, &label, &["/spec/replicas".into()]));
        let created = json!({"metadata": {}, "spec": {}});
        assert!(has_drifted(&live, &created, &[]));
    }

    #[test]
    fn pointers_and_selectors() {
        let mut v = json!({"spec": {"template": {"metadata": {"annotations": {"a/b": "x"}}}}});
        remove_pointer(&mut v, "/spec/template/metadata/annotations/a~1b");
        assert_eq!(v["spec"]["template"]["metadata"]["annotations"], json!({}));
        set_pointer(&mut v, "/spec/replicas", json!(0));
        assert_eq!(v["spec"]["replicas"], 0);
        let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "podinfo", "namespace": "apps", "labels": {"app": "podinfo"}}});
        let rule = IgnoreRule {
            paths: vec!["/spec/replicas".into()],
            target: Some(Selector {
                kind: Some("Deploy.*".into()),
                label_selector: Some("app=podinfo".into()),
                ..Default::default()
            }),
        };
        assert_eq!(
            ignored_paths(std::slice::from_ref(&rule), &deploy),
            ["/spec/replicas"]
        );
        let other = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"}});
        assert!(ignored_paths(&[rule], &other).is_empty());
    }

    #[test]
    fn set_based_selectors_select_as_the_api_server_does() {
        let object = |env: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"env": env}}});
        let selects_env = |selector: &str, env: &str| {
            selects(
                &Selector {
                    label_selector: Some(selector.into()),
                    ..Default::default()
                },
                &object(env),
            )
        };
        assert!(
            selects_env("env in (a,b)", "b"),
            "not split on the comma inside the set"
        );
        assert!(!selects_env("env in (a,b)", "c"));
        assert!(selects_env("env notin (a,b)", "c"));
        assert!(
            !selects_env("env in (a", "a"),
            "an unparsable selector selects nothing"
        );
    }
}
