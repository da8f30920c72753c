//! What the API server does to an object before it stores it: the namespace must exist, custom
//! resources are validated and pruned against their schema, and defaults are filled in. No I/O.

use super::*;

impl Store {
    pub(super) fn check_namespace(
        state: &State,
        res: &ResourceInfo,
        namespace: &str,
    ) -> Result<(), ApiError> {
        if !res.namespaced {
            return Ok(());
        }
        if namespace.is_empty() {
            return Err(ApiError::bad_request("the namespace of the object is required"));
        }
        let key = Key {
            group: String::new(),
            plural: "namespaces".into(),
            namespace: String::new(),
            name: namespace.into(),
        };
        match state.objects.get(&key) {
            None => Err(ApiError::not_found("", "namespaces", namespace)),
            Some(ns) if meta(ns).get("deletionTimestamp").is_some() => Err(ApiError::forbidden(format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Schema validation and pruning for custom resources.
    pub(super) fn validate_custom(
        res: &ResourceInfo,
        obj: &mut Value,
        validation: FieldValidation,
    ) -> Result<Vec<String>, ApiError> {
        let Some(schema) = &res.schema else {
            return Ok(Vec::new());
        };
        let name = meta_str(obj, "name").unwrap_or_default().to_owned();
        let violations = serin_runtime::schema::validate(schema, obj);
        let (unknown, invalid): (Vec<_>, Vec<_>) = violations.into_iter().partition(|v| v.unknown_field);
        if !invalid.is_empty() {
            let causes: Vec<(String, String)> = invalid.into_iter().map(|v| (v.path, v.message)).collect();
            return Err(ApiError::invalid(&res.group, &res.kind, &name, &causes));
        }
        let warnings: Vec<String> = unknown
            .iter()
            .map(|v| format!("unknown field \"{}\"", v.path))
            .collect();
        if validation == FieldValidation::Strict && !warnings.is_empty() {
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                warnings.join(", ")
            )));
        }
        serin_runtime::schema::prune(schema, obj);
        Ok(if validation == FieldValidation::Warn {
            warnings
        } else {
            Vec::new()
        })
    }

    /// Defaults and derived fields of built-in kinds.
    pub(super) fn apply_defaults(
        state: &mut State,
        res: &ResourceInfo,
        obj: &mut Value,
        old: Option<&Value>,
    ) {
        match (res.group.as_str(), res.plural.as_str()) {
            ("", "secrets") => {
                if let Some(Value::Object(string_data)) = obj.get("stringData").cloned() {
                    use base64::Engine;
                    let data = obj.get("data").cloned().unwrap_or(json!({}));
                    let mut data = if data.is_object() { data } else { json!({}) };
                    for (k, v) in string_data {
                        let text = v.as_str().unwrap_or_default();
                        data[k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
                    }
                    obj["data"] = data;
                    obj.as_object_mut().map(|m| m.remove("stringData"));
                }
                if obj.get("type").is_none() {
                    obj["type"] = json!("Opaque");
                }
            }
            ("", "services") => {
                let spec = obj.get("spec").cloned().unwrap_or(json!({}));
                let kind = spec
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("ClusterIP")
                    .to_owned();
                obj["spec"]["type"] = json!(kind);
                if kind != "ExternalName"
                    && spec
                        .get("clusterIP")
                        .is_none_or(|ip| ip.as_str().is_none_or(str::is_empty))
                {
                    let ip = old
                        .and_then(|o| o.pointer("/spec/clusterIP").cloned())
                        .filter(|ip| ip.as_str().is_some_and(|s| !s.is_empty()))
                        .unwrap_or_else(|| {
                            state.next_ip += 1;
                            json!(format!(
                                "10.96.{}.{}",
                                state.next_ip / 250,
                                state.next_ip % 250 + 2
                            ))
                        });
                    obj["spec"]["clusterIP"] = ip.clone();
                    obj["spec"]["clusterIPs"] = json!([ip]);
                }
                if obj["spec"].get("sessionAffinity").is_none() {
                    obj["spec"]["sessionAffinity"] = json!("None");
                }
                if let Some(ports) = obj["spec"].get_mut("ports").and_then(Value::as_array_mut) {
                    for port in ports {
                        if port.get("protocol").is_none() {
                            port["protocol"] = json!("TCP");
                        }
                        if port.get("targetPort").is_none()
                            && let Some(p) = port.get("port").cloned()
                        {
                            port["targetPort"] = p;
                        }
                    }
                }
            }
            ("apps", "deployments" | "statefulsets" | "replicasets") => {
                if obj.pointer("/spec/replicas").is_none() && obj.get("spec").is_some() {
                    obj["spec"]["replicas"] = json!(1);
                }
                if res.plural == "deployments" && obj.get("spec").is_some() {
                    if obj.pointer("/spec/progressDeadlineSeconds").is_none() {
                        obj["spec"]["progressDeadlineSeconds"] = json!(600);
                    }
                    if obj.pointer("/spec/revisionHistoryLimit").is_none() {
                        obj["spec"]["revisionHistoryLimit"] = json!(10);
                    }
                    if obj.pointer("/spec/strategy/type").is_none() {
                        obj["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
                    }
                }
            }
            ("", "namespaces") => {
                if obj.pointer("/status/phase").is_none() {
                    obj["status"] = json!({"phase": "Active"});
                }
                let name = meta_str(obj, "name").unwrap_or_default().to_owned();
                let labels = meta_mut(obj).entry("labels").or_insert(json!({}));
                if labels.is_object() {
                    labels["kubernetes.io/metadata.name"] = json!(name);
                }
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                let names = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
                let mut accepted = names.clone();
                if accepted.get("singular").is_none()
                    && let Some(kind) = names.get("kind").and_then(Value::as_str)
                {
                    accepted["singular"] = json!(kind.to_lowercase());
                }
                if accepted.get("listKind").is_none()
                    && let Some(kind) = names.get("kind").and_then(Value::as_str)
                {
                    accepted["listKind"] = json!(format!("{kind}List"));
                }
                let now = now_rfc3339();
                let stored: Vec<Value> = obj
                    .pointer("/spec/versions")
                    .and_then(Value::as_array)
                    .map(|vs| {
                        vs.iter()
                            .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                            .filter_map(|v| v.get("name").cloned())
                            .collect()
                    })
                    .unwrap_or_default();
                obj["status"] = json!({
                    "acceptedNames": accepted,
                    "storedVersions": stored,
                    "conditions": [
                        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now}
                    ]
                });
            }
            _ => {}
        }
    }
}

/// A body for a named object: a JSON object of the URL's kind, naming the URL's object (if at all).
pub(super) fn check_named_body(res: &ResourceInfo, obj: &Value, name: &str) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    check_kind(res, obj)?;
    match meta_str(obj, "name") {
        Some(body_name) if body_name != name => Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        ))),
        _ => Ok(()),
    }
}

pub(super) fn check_kind(res: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    if let Some(kind) = obj.get("kind").and_then(Value::as_str)
        && kind != res.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            res.kind
        )));
    }
    if let Some(api_version) = obj.get("apiVersion").and_then(Value::as_str)
        && api_version != res.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            res.api_version()
        )));
    }
    Ok(())
}

/// The name Go's JSON decoder gives a value's type in its errors.
pub(super) fn go_json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
