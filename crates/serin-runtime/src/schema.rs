//! Validation and pruning of objects against a structural OpenAPI v3 schema (the
//! `openAPIV3Schema` of a CustomResourceDefinition), following the API server's rules: types,
//! `nullable`, `x-kubernetes-int-or-string`, `x-kubernetes-preserve-unknown-fields`, required
//! fields, enums, patterns, numeric and length bounds, and the `oneOf` / `anyOf` / `allOf` /
//! `not` value validations. Used by `serin lint` and by the test bed's API emulator. No I/O.

use std::fmt;

use serde_json::{Map, Value};

/// What is wrong at one place of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Field path, such as `spec.analysis.metrics[0].interval`.
    pub path: String,
    /// What is wrong, in the API server's words where it has them.
    pub message: String,
    /// The field is not declared by the schema (the API server would drop it).
    pub unknown_field: bool,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Validates `value` against `schema`. Fields the schema does not declare are reported with
/// `unknown_field` set (the API server prunes them silently).
pub fn validate(schema: &Value, value: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    check(schema, value, "", &mut out);
    out
}

/// Removes every field `schema` does not declare, as the API server does before storing. At the
/// root, `apiVersion`, `kind` and `metadata` are kept: the API server handles them itself.
pub fn prune(schema: &Value, value: &mut Value) {
    let Value::Object(map) = value else {
        return prune_value(schema, value);
    };
    let props = schema.get("properties").and_then(Value::as_object);
    for (key, field) in map.iter_mut() {
        if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(s) = props.and_then(|p| p.get(key)) {
            prune_value(s, field);
        }
    }
    let preserve = bool_at(schema, "x-kubernetes-preserve-unknown-fields");
    map.retain(|k, _| {
        preserve
            || matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
            || props.is_some_and(|p| p.contains_key(k))
    });
}

fn prune_value(schema: &Value, value: &mut Value) {
    if bool_at(schema, "x-kubernetes-preserve-unknown-fields") && schema.get("properties").is_none() {
        return;
    }
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                let preserve = bool_at(schema, "x-kubernetes-preserve-unknown-fields");
                map.retain(|k, _| preserve || props.contains_key(k));
                for (k, v) in map.iter_mut() {
                    if let Some(s) = props.get(k) {
                        prune_value(s, v);
                    }
                }
            } else if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for v in map.values_mut() {
                    prune_value(additional, v);
                }
            } else if is_object_type(schema)
                && !bool_at(schema, "x-kubernetes-preserve-unknown-fields")
                && schema.get("additionalProperties").and_then(Value::as_bool) != Some(true)
            {
                // An object declaring neither properties nor additionalProperties keeps nothing.
                map.clear();
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    prune_value(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

fn is_object_type(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("object")
}

fn bool_at(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn push(out: &mut Vec<Violation>, path: &str, message: String) {
    out.push(Violation {
        path: path.to_owned(),
        message,
        unknown_field: false,
    });
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => value.is_number(),
        _ => true,
    }
}

fn check(schema: &Value, value: &Value, path: &str, out: &mut Vec<Violation>) {
    if value.is_null() {
        if !bool_at(schema, "nullable") && schema.get("type").is_some() {
            // The API server drops nulls in non-nullable fields; report them as lint errors.
            push(
                out,
                path,
                format!("must be {}, not null", schema["type"].as_str().unwrap_or("set")),
            );
        }
        return;
    }
    if bool_at(schema, "x-kubernetes-int-or-string") {
        if !(value.is_string() || type_matches("integer", value)) {
            push(
                out,
                path,
                format!("must be an integer or a string, not {}", type_name(value)),
            );
            return;
        }
    } else if let Some(expected) = schema.get("type").and_then(Value::as_str)
        && !type_matches(expected, value)
    {
        push(
            out,
            path,
            format!("must be of type {expected}, not {}", type_name(value)),
        );
        return;
    }
    check_value_rules(schema, value, path, out);
    check_combinators(schema, value, path, out);
    match value {
        Value::Object(map) => check_object(schema, map, path, out),
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn check_object(schema: &Value, map: &Map<String, Value>, path: &str, out: &mut Vec<Violation>) {
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if map.get(name).is_none_or(Value::is_null) {
                push(out, &join(path, name), "Required value".to_owned());
            }
        }
    }
    let preserve = bool_at(schema, "x-kubernetes-preserve-unknown-fields");
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    for (key, field) in map {
        let field_path = join(path, key);
        if let Some(s) = props.and_then(|p| p.get(key)) {
            check(s, field, &field_path, out);
        } else if let Some(s) = additional.filter(|a| a.is_object()) {
            check(s, field, &field_path, out);
        } else if props.is_some() && !preserve && additional.and_then(Value::as_bool) != Some(true) {
            out.push(Violation {
                path: field_path,
                message: "unknown field (not declared by the schema; the API server would drop it)"
                    .to_owned(),
                unknown_field: true,
            });
        }
    }
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
        && map.len() as u64 > max
    {
        push(out, path, format!("must have at most {max} properties"));
    }
}

fn check_value_rules(schema: &Value, value: &Value, path: &str, out: &mut Vec<Violation>) {
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
        push(
            out,
            path,
            format!(
                "Unsupported value: {value}: supported values: {}",
                list.join(", ")
            ),
        );
    }
    if let (Some(pattern), Some(text)) = (schema.get("pattern").and_then(Value::as_str), value.as_str()) {
        match regex::Regex::new(pattern) {
            Ok(re) if !re.is_match(text) => {
                push(
                    out,
                    path,
                    format!("Invalid value: {value}: should match '{pattern}'"),
                );
            }
            Ok(_) => {}
            Err(err) => push(
                out,
                path,
                format!("schema pattern {pattern:?} does not compile: {err}"),
            ),
        }
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            push(
                out,
                path,
                format!("Invalid value: {value}: should be greater than or equal to {min}"),
            );
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            push(
                out,
                path,
                format!("Invalid value: {value}: should be less than or equal to {max}"),
            );
        }
    }
    if let Some(text) = value.as_str() {
        let len = text.chars().count() as u64;
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            push(out, path, format!("Too long: may not be longer than {max}"));
        }
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            push(
                out,
                path,
                format!("Invalid value: {value}: should be at least {min} chars long"),
            );
        }
        if schema.get("format").and_then(Value::as_str) == Some("date-time")
            && text.parse::<jiff::Timestamp>().is_err()
        {
            push(
                out,
                path,
                format!("Invalid value: {value}: must be an RFC 3339 date-time"),
            );
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            push(
                out,
                path,
                format!("Too many: {}: must have at most {max} items", items.len()),
            );
        }
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            push(
                out,
                path,
                format!(
                    "Invalid value: {} items: must have at least {min} items",
                    items.len()
                ),
            );
        }
    }
}

/// `oneOf`, `anyOf`, `allOf` and `not`: in a structural schema these only add value validation.
fn check_combinators(schema: &Value, value: &Value, path: &str, out: &mut Vec<Violation>) {
    let passes = |sub: &Value| validate_rules_only(sub, value, path).is_empty();
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = options.iter().filter(|s| passes(s)).count();
        if matching != 1 {
            let described: Vec<String> = options.iter().map(describe).collect();
            let message = if matching == 0 {
                format!(
                    "must match exactly one of: {}; it matches none",
                    described.join(" | ")
                )
            } else {
                format!(
                    "must match exactly one of: {}; it matches {matching}",
                    described.join(" | ")
                )
            };
            push(out, path, message);
        }
    }
    if let Some(options) = schema.get("anyOf").and_then(Value::as_array)
        && !options.iter().any(&passes)
    {
        let described: Vec<String> = options.iter().map(describe).collect();
        push(
            out,
            path,
            format!("must match at least one of: {}", described.join(" | ")),
        );
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for sub in all {
            out.extend(validate_rules_only(sub, value, path));
        }
    }
    if let Some(not) = schema.get("not")
        && passes(not)
    {
        push(out, path, format!("must not match {}", describe(not)));
    }
}

/// Validation of a combinator branch: no unknown-field reports (branches declare no properties).
fn validate_rules_only(schema: &Value, value: &Value, path: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    check(schema, value, path, &mut out);
    out.retain(|v| !v.unknown_field);
    out
}

/// A short description of a combinator branch, such as `{interval, threshold, stepWeight}`.
fn describe(schema: &Value) -> String {
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        let names: Vec<&str> = required.iter().filter_map(Value::as_str).collect();
        return format!("{{{}}} set", names.join(", "));
    }
    if let Some(not) = schema.get("not") {
        return format!("not ({})", describe(not));
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        return any.iter().map(describe).collect::<Vec<_>>().join(" or ");
    }
    schema.to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["spec"],
            "properties": {
                "metadata": {"type": "object"},
                "spec": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "pattern": "^[a-z]+$"},
                        "port": {"x-kubernetes-int-or-string": true},
                        "kind": {"type": "string", "enum": ["A", "B"]},
                        "weight": {"type": "integer", "minimum": 1, "maximum": 100},
                        "steps": {"type": "array", "maxItems": 2, "items": {"type": "number"}},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "opt": {"type": "string", "nullable": true},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "analysis": {
                            "type": "object",
                            "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
                            "properties": {"a": {"type": "number"}, "b": {"type": "number"}}
                        }
                    }
                }
            }
        })
    }

    fn paths(value: Value) -> Vec<String> {
        validate(&schema(), &value)
            .into_iter()
            .map(|v| v.to_string())
            .collect()
    }

    #[test]
    fn valid_object_passes() {
        let ok = json!({
            "metadata": {"name": "x", "labels": {"a": "b"}},
            "spec": {"name": "abc", "port": "http", "kind": "A", "weight": 5, "steps": [1.5, 2],
                     "labels": {"x": "y"}, "opt": null, "free": {"any": {"thing": 1}}, "analysis": {"a": 1}}
        });
        assert_eq!(paths(ok), Vec::<String>::new());
        assert!(paths(json!({"spec": {"name": "a", "port": 80}})).is_empty());
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases = [
            (json!({}), "spec: Required value"),
            (json!({"spec": {}}), "spec.name: Required value"),
            (
                json!({"spec": {"name": "A1"}}),
                "spec.name: Invalid value: \"A1\": should match '^[a-z]+$'",
            ),
            (
                json!({"spec": {"name": "a", "kind": "C"}}),
                "spec.kind: Unsupported value: \"C\"",
            ),
            (
                json!({"spec": {"name": "a", "weight": 0}}),
                "spec.weight: Invalid value: 0: should be greater",
            ),
            (
                json!({"spec": {"name": "a", "weight": 101}}),
                "spec.weight: Invalid value: 101: should be less",
            ),
            (
                json!({"spec": {"name": "a", "weight": 1.5}}),
                "spec.weight: must be of type integer",
            ),
            (
                json!({"spec": {"name": "a", "steps": [1, 2, 3]}}),
                "spec.steps: Too many: 3",
            ),
            (
                json!({"spec": {"name": "a", "steps": ["x"]}}),
                "spec.steps[0]: must be of type number",
            ),
            (
                json!({"spec": {"name": "a", "labels": {"k": 1}}}),
                "spec.labels.k: must be of type string",
            ),
            (
                json!({"spec": {"name": "a", "port": true}}),
                "spec.port: must be an integer or a string",
            ),
            (
                json!({"spec": {"name": "a", "typo": 1}}),
                "spec.typo: unknown field",
            ),
            (
                json!({"spec": {"name": "a", "analysis": {}}}),
                "spec.analysis: must match exactly one of: {a} set | {b} set; it matches none",
            ),
            (
                json!({"spec": {"name": "a", "analysis": {"a": 1, "b": 2}}}),
                "spec.analysis: must match exactly one of: {a} set | {b} set; it matches 2",
            ),
        ];
        for (value, want) in cases {
            let got = paths(value.clone());
            assert!(
                got.iter().any(|g| g.starts_with(want)),
                "{value}: want {want:?}, got {got:?}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_flagged_as_such() {
        let v = validate(&schema(), &json!({"spec": {"name": "a", "typo": 1}}));
        assert_eq!(v.len(), 1);
        assert!(v[0].unknown_field);
    }

    #[test]
    fn prune_drops_undeclared_fields() {
        let mut value = json!({
            "metadata": {"name": "x"},
            "spec": {"name": "a", "typo": 1, "labels": {"k": "v"}, "free": {"keep": {"me": 1}}},
            "extra": true
        });
        prune(&schema(), &mut value);
        assert_eq!(
            value,
            json!({"metadata": {"name": "x"}, "spec": {"name": "a", "labels": {"k": "v"}, "free": {"keep": {"me": 1}}}})
        );
    }
}
