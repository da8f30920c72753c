//! Reading a request: the resource path, query parameters, bodies (JSON, YAML, protobuf), the
//! verb, and the options of writes, lists and deletes. No I/O.

use super::*;

/// A parsed resource path.
#[derive(Debug, Default, PartialEq)]
pub(super) struct ResourcePath {
    pub(super) group: String,
    pub(super) version: String,
    pub(super) namespace: Option<String>,
    pub(super) plural: String,
    pub(super) name: Option<String>,
    pub(super) subresource: Option<String>,
}

pub(super) fn parse_resource_path(segments: &[&str]) -> Option<ResourcePath> {
    let (group, version, rest) = match segments {
        ["api", version, rest @ ..] => (String::new(), (*version).to_owned(), rest),
        ["apis", group, version, rest @ ..] => ((*group).to_owned(), (*version).to_owned(), rest),
        _ => return None,
    };
    let mut p = ResourcePath {
        group,
        version,
        ..Default::default()
    };
    let rest: Vec<&str> = rest.to_vec();
    let namespace_subresource =
        rest.len() == 3 && rest[0] == "namespaces" && matches!(rest[2], "status" | "finalize");
    let rest = if rest.first() == Some(&"namespaces") && rest.len() >= 3 && !namespace_subresource {
        p.namespace = Some(rest[1].to_owned());
        rest[2..].to_vec()
    } else {
        rest
    };
    match rest.as_slice() {
        [plural] => p.plural = (*plural).to_owned(),
        [plural, name] => {
            p.plural = (*plural).to_owned();
            p.name = Some((*name).to_owned());
        }
        [plural, name, sub] => {
            p.plural = (*plural).to_owned();
            p.name = Some((*name).to_owned());
            p.subresource = Some((*sub).to_owned());
        }
        _ => return None,
    }
    Some(p)
}

pub(super) fn query_map(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        return crate::apiserver::proto::decode(body).map_err(|e| ApiError {
            code: 415,
            reason: "UnsupportedMediaType",
            message: e,
            details: None,
        });
    }
    if content_type.contains("yaml") {
        let yaml: serde_yaml::Value = serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        serde_json::to_value(yaml).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}")))
    }
}

pub(super) fn verb_of(method: &Method, p: &ResourcePath, q: &BTreeMap<String, String>) -> &'static str {
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    match (method.as_str(), p.name.is_some()) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

pub(super) fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

pub(super) fn include_object(query: &BTreeMap<String, String>) -> IncludeObject {
    match query.get("includeObject").map(String::as_str) {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    }
}

/// The manager of a non-apply write: `fieldManager`, else the user agent's program name.
pub(super) fn manager_of(query: &BTreeMap<String, String>, agent: &str) -> String {
    query
        .get("fieldManager")
        .cloned()
        .unwrap_or_else(|| agent.split('/').next().unwrap_or(agent).to_owned())
}

pub(super) fn write_options(query: &BTreeMap<String, String>, agent: &str) -> Result<WriteOptions, ApiError> {
    let field_validation = match query.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => FieldValidation::Warn,
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
            )));
        }
    };
    Ok(WriteOptions {
        manager: manager_of(query, agent),
        dry_run: query.get("dryRun").is_some_and(|d| d == "All"),
        field_validation,
        force: query.get("force").is_some_and(|f| f == "true"),
    })
}

pub(super) fn parse_propagation(p: &str) -> Result<Propagation, ApiError> {
    match p {
        "Background" => Ok(Propagation::Background),
        "Foreground" => Ok(Propagation::Foreground),
        "Orphan" => Ok(Propagation::Orphan),
        other => Err(ApiError::bad_request(format!(
            "propagationPolicy: Unsupported value: \"{other}\""
        ))),
    }
}

/// A continue token: the resource version of the list's first page (every page answers with it,
/// as the API server serves all pages from one snapshot, so that a watch from it misses no change
/// made while the pages were read) and the last key served.
pub(super) fn encode_continue(rv: u64, after: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{rv}:{after}"))
}

pub(super) fn decode_continue(token: &str) -> Result<(u64, String), ApiError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|text| {
            let (rv, after) = text.split_once(':')?;
            Some((rv.parse().ok()?, after.to_owned()))
        })
        .ok_or_else(|| ApiError::bad_request("continue key is not valid"))
}
