//! Serving a resource request against the store: get, list, create, update, patch, apply,
//! delete, and the scale subresource. No I/O of its own.

use super::*;

#[allow(clippy::too_many_arguments)]
pub(super) async fn serve_resource(
    server: &Arc<Server>,
    res: &ResourceInfo,
    p: &ResourcePath,
    method: &Method,
    headers: &HeaderMap,
    query: &BTreeMap<String, String>,
    body: &Bytes,
    agent: &str,
) -> Result<Response, ApiError> {
    let store = &server.store;
    let ns = p.namespace.as_deref();
    let sub = match p.subresource.as_deref() {
        None => Subresource::Main,
        Some("status") if res.status_subresource => Subresource::Status,
        Some("scale") if res.scale.is_some() => {
            return serve_scale(store, res, p, method, headers, query, body, agent);
        }
        Some(other) => return Err(ApiError::not_found_path(&format!("{}/{other}", res.plural))),
    };
    match (method.as_str(), &p.name) {
        ("GET", None) => {
            let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
            let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))
                .map_err(ApiError::bad_request)?;
            if watch {
                return watch_response(server, res, ns, query, labels, fields, wants_table(headers));
            }
            let continued = query
                .get("continue")
                .filter(|c| !c.is_empty())
                .map(|c| decode_continue(c))
                .transpose()?;
            let list_query = ListQuery {
                namespace: ns.map(str::to_owned),
                labels,
                fields,
                limit: query.get("limit").and_then(|l| l.parse().ok()),
                continue_after: continued.as_ref().map(|(_, after)| after.clone()),
            };
            let (items, current, next, remaining) = store.list(res, &list_query);
            // Every page of a list answers with the first page's resource version.
            let rv = continued.map_or(current, |(first, _)| first);
            let next = next.map(|n| encode_continue(rv, &n));
            if wants_table(headers) {
                return Ok(ok(&table::table(
                    res,
                    &items,
                    &rv.to_string(),
                    include_object(query),
                    next.as_deref(),
                )));
            }
            let mut metadata = json!({"resourceVersion": rv.to_string()});
            if let Some(n) = next {
                metadata["continue"] = json!(n);
            }
            if let Some(r) = remaining {
                metadata["remainingItemCount"] = json!(r);
            }
            Ok(ok(
                &json!({"kind": res.list_kind, "apiVersion": res.api_version(), "metadata": metadata, "items": items}),
            ))
        }
        ("GET", Some(name)) => {
            let obj = store.get(res, ns, name)?;
            if wants_table(headers) {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                return Ok(ok(&table::table(res, &[obj], &rv, include_object(query), None)));
            }
            Ok(ok(&obj))
        }
        ("POST", None) => {
            let obj = parse_body(headers, body)?;
            let written = store.create(res, ns, obj, &write_options(query, agent)?)?;
            Ok(with_warnings(
                json_response(StatusCode::CREATED, &written.object),
                &written.warnings,
            ))
        }
        ("PUT", Some(name)) => {
            let obj = parse_body(headers, body)?;
            let written = store.update(res, ns, name, obj, sub, &write_options(query, agent)?)?;
            Ok(with_warnings(ok(&written.object), &written.warnings))
        }
        ("PATCH", Some(name)) => {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let patch_body = parse_body(headers, body)?;
            let mut opts = write_options(query, agent)?;
            let written = match content_type.split(';').next().unwrap_or_default() {
                "application/apply-patch+yaml" | "application/apply-patch+json" => {
                    opts.manager = query.get("fieldManager").cloned().unwrap_or_default();
                    store.apply(res, ns, name, patch_body, sub, &opts)?
                }
                "application/merge-patch+json" => {
                    store.patch(res, ns, name, PatchKind::Merge, &patch_body, sub, &opts)?
                }
                "application/json-patch+json" => {
                    store.patch(res, ns, name, PatchKind::Json, &patch_body, sub, &opts)?
                }
                "application/strategic-merge-patch+json" => {
                    store.patch(res, ns, name, PatchKind::Strategic, &patch_body, sub, &opts)?
                }
                other => return Err(ApiError::unsupported_media_type(other)),
            };
            Ok(with_warnings(ok(&written.object), &written.warnings))
        }
        ("DELETE", Some(name)) => {
            let options = if body.is_empty() {
                json!({})
            } else {
                parse_body(headers, body).unwrap_or(json!({}))
            };
            let propagation = query
                .get("propagationPolicy")
                .map(String::as_str)
                .or_else(|| options.get("propagationPolicy").and_then(Value::as_str))
                .map(parse_propagation)
                .transpose()?;
            let dry_run = query.get("dryRun").is_some_and(|d| d == "All")
                || options
                    .get("dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|d| d.iter().any(|x| x == "All"));
            if let Some(uid) = options.pointer("/preconditions/uid").and_then(Value::as_str) {
                let current = store.get(res, ns, name)?;
                if current.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid) {
                    return Err(ApiError::conflict(&res.group, &res.plural, name));
                }
            }
            let obj = store.delete(res, ns, name, propagation, dry_run)?;
            Ok(ok(&obj))
        }
        ("DELETE", None) => {
            let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))
                .map_err(ApiError::bad_request)?;
            let (items, rv, _, _) = store.list(
                res,
                &ListQuery {
                    namespace: ns.map(str::to_owned),
                    labels,
                    fields,
                    ..Default::default()
                },
            );
            let mut deleted = Vec::new();
            for item in items {
                let name = item
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let item_ns = item
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if let Ok(obj) = store.delete(res, item_ns.as_deref(), &name, None, false) {
                    deleted.push(obj);
                }
            }
            Ok(ok(
                &json!({"kind": res.list_kind, "apiVersion": res.api_version(), "metadata": {"resourceVersion": rv.to_string()}, "items": deleted}),
            ))
        }
        (m, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({m})"
        ))),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn serve_scale(
    store: &Arc<Store>,
    res: &ResourceInfo,
    p: &ResourcePath,
    method: &Method,
    headers: &HeaderMap,
    query: &BTreeMap<String, String>,
    body: &Bytes,
    agent: &str,
) -> Result<Response, ApiError> {
    let ns = p.namespace.as_deref();
    let name = p.name.as_deref().unwrap_or_default();
    let (spec_path, status_path, selector_path) = res.scale.clone().unwrap_or_default();
    let to_scale = |obj: &Value| {
        let selector = selector_path.as_ref().and_then(|s| obj.pointer(s)).map(|s| {
            s.get("matchLabels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_else(|| s.as_str().unwrap_or_default().to_owned())
        });
        let mut scale = json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": obj.pointer("/metadata/name"),
                "namespace": obj.pointer("/metadata/namespace"),
                "uid": obj.pointer("/metadata/uid"),
                "resourceVersion": obj.pointer("/metadata/resourceVersion"),
                "creationTimestamp": obj.pointer("/metadata/creationTimestamp"),
            },
            "spec": {"replicas": obj.pointer(&spec_path).cloned().unwrap_or(json!(0))},
            "status": {"replicas": obj.pointer(&status_path).cloned().unwrap_or(json!(0))},
        });
        if let Some(s) = selector {
            scale["status"]["selector"] = json!(s);
        }
        scale
    };
    let current = store.get(res, ns, name)?;
    if method == Method::GET {
        return Ok(ok(&to_scale(&current)));
    }
    let mut scale = to_scale(&current);
    let incoming = parse_body(headers, body)?;
    match *method {
        Method::PUT => scale = incoming,
        Method::PATCH => {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if content_type.starts_with("application/json-patch+json") {
                crate::apiserver::patch::json_patch(&mut scale, &incoming)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
            } else {
                crate::apiserver::patch::merge_patch(&mut scale, &incoming);
            }
        }
        _ => {
            return Err(ApiError::method_not_allowed(
                "scale supports get, update and patch",
            ));
        }
    }
    let replicas = scale.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
    if !replicas.is_i64() || replicas.as_i64().is_some_and(|r| r < 0) {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            name,
            &[(
                "spec.replicas".into(),
                format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            )],
        ));
    }
    if let Some(rv) = scale.pointer("/metadata/resourceVersion").and_then(Value::as_str)
        && current
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            != Some(rv)
    {
        return Err(ApiError::conflict(&res.group, &res.plural, name));
    }
    let mut patch = json!({});
    let mut node = &mut patch;
    let segments: Vec<&str> = spec_path.trim_start_matches('/').split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        if i + 1 == segments.len() {
            node[*seg] = replicas.clone();
        } else {
            node[*seg] = json!({});
            node = &mut node[*seg];
        }
    }
    let written = store.patch(
        res,
        ns,
        name,
        PatchKind::Merge,
        &patch,
        Subresource::Main,
        &write_options(query, agent)?,
    )?;
    Ok(ok(&to_scale(&written.object)))
}
