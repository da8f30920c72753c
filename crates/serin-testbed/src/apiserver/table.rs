//! Server-side printing: `meta.k8s.io/v1` Tables, as `kubectl get` asks for them. Custom
//! resources use their CRD's printer columns; Deployments and Services have their usual columns;
//! everything else gets NAME and AGE. No I/O.

use serde_json::{Value, json};

use super::resources::{PrinterColumn, ResourceInfo};

/// What a row carries besides its cells (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

/// A Kubernetes-style age: `45s`, `3m12s`, `27m`, `5h3m`, `2d4h`, `90d`.
pub fn human_age(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        format!("{m}m{}s", s % 60)
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        format!("{h}h{}m", m % 60)
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        format!("{d}d{}h", h % 24)
    } else {
        format!("{d}d")
    }
}

fn age_of(obj: &Value) -> String {
    let created = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    match created {
        Some(t) => human_age(jiff::Timestamp::now().as_second() - t.as_second()),
        None => "<unknown>".to_owned(),
    }
}

fn column(name: &str, type_: &str, format: &str, priority: i64) -> Value {
    json!({"name": name, "type": type_, "format": format, "description": "", "priority": priority})
}

/// Evaluates a simple JSONPath (`.status.phase`, `.spec.items[0].name`) for a printer column.
fn json_path(obj: &Value, path: &str) -> Option<Value> {
    let mut node = obj;
    for seg in path.trim_start_matches('.').split('.') {
        if seg.is_empty() {
            continue;
        }
        let (field, index) = match seg.split_once('[') {
            Some((f, rest)) => (f, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        node = node.get(field)?;
        if let Some(i) = index {
            node = node.get(i)?;
        }
    }
    Some(node.clone())
}

fn cell(value: Option<Value>, col: &PrinterColumn) -> Value {
    let Some(value) = value else { return Value::Null };
    if col.type_ == "date"
        && let Some(t) = value.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok())
    {
        return json!(human_age(jiff::Timestamp::now().as_second() - t.as_second()));
    }
    match (&value, col.type_.as_str()) {
        (Value::String(_) | Value::Number(_) | Value::Bool(_), _) => value,
        (Value::Null, _) => Value::Null,
        _ => json!(value.to_string()),
    }
}

fn columns(res: &ResourceInfo) -> Vec<Value> {
    let mut cols = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    if res.custom {
        if res.printer_columns.is_empty() {
            cols.push(column("Age", "date", "", 0));
        }
        for c in &res.printer_columns {
            cols.push(json!({"name": c.name, "type": c.type_, "format": c.format.clone().unwrap_or_default(), "description": c.description, "priority": c.priority}));
        }
        return cols;
    }
    match (res.group.as_str(), res.plural.as_str()) {
        ("apps", "deployments") => {
            cols.extend([
                column("Ready", "string", "", 0),
                column("Up-to-date", "string", "", 0),
                column("Available", "string", "", 0),
                column("Age", "string", "", 0),
                column("Containers", "string", "", 1),
                column("Images", "string", "", 1),
                column("Selector", "string", "", 1),
            ]);
        }
        ("", "services") => {
            cols.extend([
                column("Type", "string", "", 0),
                column("Cluster-IP", "string", "", 0),
                column("External-IP", "string", "", 0),
                column("Port(s)", "string", "", 0),
                column("Age", "string", "", 0),
                column("Selector", "string", "", 1),
            ]);
        }
        _ => cols.push(column("Age", "string", "", 0)),
    }
    cols
}

fn join_strings(items: Option<&Value>, field: &str) -> String {
    items
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get(field).and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn selector_text(selector: Option<&Value>) -> String {
    selector
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<none>".to_owned())
}

fn cells(res: &ResourceInfo, obj: &Value) -> Vec<Value> {
    let name = json!(
        obj.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    );
    let mut out = vec![name];
    if res.custom {
        if res.printer_columns.is_empty() {
            out.push(json!(age_of(obj)));
        }
        out.extend(
            res.printer_columns
                .iter()
                .map(|c| cell(json_path(obj, &c.json_path), c)),
        );
        return out;
    }
    let int = |p: &str| obj.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    match (res.group.as_str(), res.plural.as_str()) {
        ("apps", "deployments") => {
            let containers = obj.pointer("/spec/template/spec/containers");
            out.extend([
                json!(format!(
                    "{}/{}",
                    int("/status/readyReplicas"),
                    int("/spec/replicas")
                )),
                json!(int("/status/updatedReplicas")),
                json!(int("/status/availableReplicas")),
                json!(age_of(obj)),
                json!(join_strings(containers, "name")),
                json!(join_strings(containers, "image")),
                json!(selector_text(obj.pointer("/spec/selector/matchLabels"))),
            ]);
        }
        ("", "services") => {
            let ports = obj
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            format!(
                                "{}/{}",
                                p.get("port").and_then(Value::as_i64).unwrap_or(0),
                                p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "<none>".to_owned());
            out.extend([
                json!(
                    obj.pointer("/spec/type")
                        .and_then(Value::as_str)
                        .unwrap_or("ClusterIP")
                ),
                json!(
                    obj.pointer("/spec/clusterIP")
                        .and_then(Value::as_str)
                        .unwrap_or("<none>")
                ),
                json!("<none>"),
                json!(ports),
                json!(age_of(obj)),
                json!(selector_text(obj.pointer("/spec/selector"))),
            ]);
        }
        _ => out.push(json!(age_of(obj))),
    }
    out
}

fn row_object(obj: &Value, include: IncludeObject) -> Option<Value> {
    match include {
        IncludeObject::None => None,
        IncludeObject::Object => Some(obj.clone()),
        IncludeObject::Metadata => {
            let mut metadata = obj.get("metadata").cloned().unwrap_or(json!({}));
            if let Some(m) = metadata.as_object_mut() {
                m.remove("managedFields");
            }
            Some(
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata}),
            )
        }
    }
}

/// A Table of `objects`.
pub fn table(
    res: &ResourceInfo,
    objects: &[Value],
    resource_version: &str,
    include: IncludeObject,
    continue_token: Option<&str>,
) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(res, o)});
            if let Some(obj) = row_object(o, include) {
                row["object"] = obj;
            }
            row
        })
        .collect();
    let mut metadata = json!({"resourceVersion": resource_version});
    if let Some(c) = continue_token {
        metadata["continue"] = json!(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns(res),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(119), "119s");
        assert_eq!(human_age(192), "3m12s");
        assert_eq!(human_age(27 * 60), "27m");
        assert_eq!(human_age(5 * 3600 + 180), "5h3m");
        assert_eq!(human_age(20 * 3600), "20h");
        assert_eq!(human_age(2 * 86400 + 4 * 3600), "2d4h");
        assert_eq!(human_age(90 * 86400), "90d");
    }

    #[test]
    fn json_paths() {
        let obj = json!({"status": {"phase": "Progressing", "canaryWeight": 10}, "spec": {"analysis": {"stepWeights": [1, 5]}}});
        assert_eq!(json_path(&obj, ".status.phase"), Some(json!("Progressing")));
        assert_eq!(json_path(&obj, ".spec.analysis.stepWeights[1]"), Some(json!(5)));
        assert_eq!(json_path(&obj, ".spec.missing"), None);
    }
}
