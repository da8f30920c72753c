//! Flagger compatibility suite: Flagger's own example manifests and CRD (in `../shared/fixtures/`)
//! against serin's types and generated CRDs. Skips with a message where the fixtures are absent.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde_json::Value;
use serin::api::{self, AlertProvider, Canary, MetricTemplate};

fn fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/flagger");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: Flagger fixtures not found at {} (the compatibility suite needs ../shared)",
            dir.display()
        );
        None
    }
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let yaml =
                serde_yaml::Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            serde_json::to_value(yaml).expect("yaml is json")
        })
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

/// Every leaf of `original` is present in `round_tripped` with an equal value (numbers compared
/// numerically, so `99` and `99.0` agree).
fn missing_fields(original: &Value, round_tripped: &Value, path: &str, out: &mut Vec<String>) {
    match (original, round_tripped) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(w) => missing_fields(v, w, &p, out),
                    None => out.push(format!("{p} lost")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                out.push(format!("{path}: {} items became {}", a.len(), b.len()));
            }
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                missing_fields(v, w, &format!("{path}[{i}]"), out);
            }
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: {a} became {b}")),
    }
}

#[test]
fn fixture_manifests_round_trip_without_loss() {
    let Some(dir) = fixtures() else { return };
    let mut checked = 0;
    for entry in std::fs::read_dir(dir.join("canaries")).expect("canaries dir") {
        let path = entry.expect("entry").path();
        for doc in yaml_docs(&path) {
            let back = match doc["kind"].as_str() {
                Some("Canary") => serde_json::to_value(
                    serde_json::from_value::<Canary>(doc.clone())
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
                ),
                Some("MetricTemplate") => serde_json::to_value(
                    serde_json::from_value::<MetricTemplate>(doc.clone())
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
                ),
                Some("AlertProvider") => serde_json::to_value(
                    serde_json::from_value::<AlertProvider>(doc.clone())
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
                ),
                other => panic!("{}: unexpected kind {other:?}", path.display()),
            }
            .expect("serializes");
            let mut lost = Vec::new();
            missing_fields(&doc, &back, "", &mut lost);
            assert!(lost.is_empty(), "{}: {lost:#?}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} manifests checked");
}

fn crd_schema(crds: &[Value], name: &str) -> Value {
    let crd = crds
        .iter()
        .find(|c| c["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no CRD {name}"));
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Property path -> (type, required children) for every declared property.
fn schema_paths(schema: &Value, path: &str, out: &mut BTreeMap<String, (String, Vec<String>)>) {
    let ty = if schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        "int-or-string".to_owned()
    } else {
        schema
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let mut required: Vec<String> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    required.sort();
    out.insert(path.to_owned(), (ty, required));
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            schema_paths(v, &format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = schema.get("items") {
        schema_paths(items, &format!("{path}[]"), out);
    }
    if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        schema_paths(additional, &format!("{path}{{*}}"), out);
    }
}

fn serin_crds() -> Vec<Value> {
    api::crds()
        .into_iter()
        .map(|c| serde_json::to_value(c).expect("crd json"))
        .collect()
}

#[test]
fn every_flagger_schema_path_exists_with_the_same_type() {
    let Some(dir) = fixtures() else { return };
    let flagger = yaml_docs(&dir.join("flagger-crd.yaml"));
    let serin = serin_crds();
    for name in [
        "canaries.flagger.app",
        "metrictemplates.flagger.app",
        "alertproviders.flagger.app",
    ] {
        let mut theirs = BTreeMap::new();
        schema_paths(&crd_schema(&flagger, name), "", &mut theirs);
        let mut ours = BTreeMap::new();
        schema_paths(&crd_schema(&serin, name), "", &mut ours);
        let mut problems = Vec::new();
        for (path, (ty, required)) in &theirs {
            match ours.get(path) {
                None => problems.push(format!("{path}: missing (Flagger: {ty})")),
                Some((our_ty, our_required)) => {
                    if our_ty != ty {
                        problems.push(format!("{path}: type {our_ty:?}, Flagger {ty:?}"));
                    }
                    if our_required != required {
                        problems.push(format!("{path}: required {our_required:?}, Flagger {required:?}"));
                    }
                }
            }
        }
        assert!(problems.is_empty(), "{name}:\n{}", problems.join("\n"));
        assert!(
            theirs.len() > 5,
            "{name}: Flagger schema has {} paths",
            theirs.len()
        );
    }
}

fn one_of_required(schema: &Value) -> Vec<Vec<String>> {
    let mut sets: Vec<Vec<String>> = schema["oneOf"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let mut r: Vec<String> = o["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            r.sort();
            r
        })
        .collect();
    sets.sort();
    sets
}

#[test]
fn validation_rules_match_flagger() {
    let Some(dir) = fixtures() else { return };
    let flagger = yaml_docs(&dir.join("flagger-crd.yaml"));
    let serin = serin_crds();
    let (theirs, ours) = (
        crd_schema(&flagger, "canaries.flagger.app"),
        crd_schema(&serin, "canaries.flagger.app"),
    );
    let analysis = |s: &Value| s["properties"]["spec"]["properties"]["analysis"].clone();
    assert_eq!(
        one_of_required(&analysis(&ours)),
        one_of_required(&analysis(&theirs))
    );
    let alert = |s: &Value| s["properties"]["spec"].clone();
    assert_eq!(
        one_of_required(&alert(&crd_schema(&serin, "alertproviders.flagger.app"))),
        one_of_required(&alert(&crd_schema(&flagger, "alertproviders.flagger.app")))
    );
    // Enums and patterns, wherever Flagger declares them.
    let mut theirs_rules = BTreeMap::new();
    rules(&theirs, "", &mut theirs_rules);
    let mut ours_rules = BTreeMap::new();
    rules(&ours, "", &mut ours_rules);
    for (path, rule) in &theirs_rules {
        assert_eq!(ours_rules.get(path), Some(rule), "{path}");
    }
}

fn rules(schema: &Value, path: &str, out: &mut BTreeMap<String, Value>) {
    for key in ["enum", "pattern", "minimum", "maxItems", "format"] {
        if let Some(v) = schema.get(key) {
            // Flagger marks plain strings `format: string`, which validates nothing.
            if key == "format" && v == "string" {
                continue;
            }
            let mut v = match v.as_f64() {
                // `minimum: 1` and `minimum: 1.0` are the same rule.
                Some(n) if v.is_number() => Value::from(n),
                _ => v.clone(),
            };
            if let Value::Array(items) = &mut v {
                items.sort_by_key(|a| a.to_string());
            }
            out.insert(format!("{path}@{key}"), v);
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            rules(v, &format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = schema.get("items") {
        rules(items, &format!("{path}[]"), out);
    }
    if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        rules(additional, &format!("{path}{{*}}"), out);
    }
}

#[test]
fn printer_columns_names_and_subresources_match_flagger() {
    let Some(dir) = fixtures() else { return };
    let flagger = yaml_docs(&dir.join("flagger-crd.yaml"));
    let serin = serin_crds();
    for theirs in &flagger {
        let name = theirs["metadata"]["name"].as_str().expect("name");
        let ours = serin
            .iter()
            .find(|c| c["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{name}"));
        let columns = |crd: &Value| -> Vec<(String, String, String, i64)> {
            crd["spec"]["versions"][0]["additionalPrinterColumns"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or_default().to_owned(),
                        c["type"].as_str().unwrap_or_default().to_owned(),
                        c["jsonPath"].as_str().unwrap_or_default().to_owned(),
                        c["priority"].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        };
        assert_eq!(columns(ours), columns(theirs), "{name} printer columns");
        assert_eq!(ours["spec"]["names"], theirs["spec"]["names"], "{name} names");
        assert_eq!(ours["spec"]["scope"], theirs["spec"]["scope"], "{name} scope");
        assert_eq!(ours["spec"]["group"], theirs["spec"]["group"], "{name} group");
        assert_eq!(
            ours["spec"]["versions"][0]["subresources"], theirs["spec"]["versions"][0]["subresources"],
            "{name} subresources"
        );
        assert_eq!(
            ours["metadata"]["annotations"], theirs["metadata"]["annotations"],
            "{name} annotations"
        );
    }
}
