//! The authentication and authorization endpoints the emulator serves itself: TokenReview,
//! SubjectAccessReview and friends, TokenRequest, and admission of a request by RBAC. No I/O.

use super::*;

/// `SelfSubjectAccessReview`, `SubjectAccessReview` (`kubectl auth can-i`) and
/// `SelfSubjectReview` (`kubectl auth whoami`), answered from the authorizer.
pub(super) fn review_response(
    server: &Server,
    user: &User,
    res: &ResourceInfo,
    mut review: Value,
) -> Result<Response, ApiError> {
    let spec_attrs = |spec: &Value| -> Attributes {
        let s = |k: &str| spec.pointer(k).and_then(Value::as_str).unwrap_or_default();
        match spec.get("nonResourceAttributes") {
            Some(_) => {
                Attributes::non_resource(s("/nonResourceAttributes/verb"), s("/nonResourceAttributes/path"))
            }
            None => Attributes::resource(
                s("/resourceAttributes/verb"),
                s("/resourceAttributes/group"),
                s("/resourceAttributes/resource"),
                Some(s("/resourceAttributes/subresource")).filter(|x| !x.is_empty()),
                Some(s("/resourceAttributes/namespace")).filter(|x| !x.is_empty()),
                Some(s("/resourceAttributes/name")).filter(|x| !x.is_empty()),
            ),
        }
    };
    match res.kind.as_str() {
        "SelfSubjectReview" => {
            review["status"] = json!({"userInfo": {"username": user.name, "groups": user.groups}});
        }
        "SelfSubjectAccessReview" => {
            let spec = review.get("spec").cloned().unwrap_or_default();
            let decision = rbac::authorize(&server.store, user, &spec_attrs(&spec));
            review["status"] = json!({"allowed": decision.allowed, "reason": decision.reason});
        }
        _ => {
            let spec = review.get("spec").cloned().unwrap_or_default();
            let name = spec.get("user").and_then(Value::as_str).unwrap_or_default();
            let groups: Vec<String> = spec
                .get("groups")
                .and_then(Value::as_array)
                .map(|g| g.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            let subject = User {
                name: name.to_owned(),
                admin: groups.iter().any(|g| g == "system:masters"),
                groups,
            };
            let decision = rbac::authorize(&server.store, &subject, &spec_attrs(&spec));
            review["status"] = json!({"allowed": decision.allowed, "reason": decision.reason});
        }
    }
    review["apiVersion"] = json!(res.api_version());
    review["kind"] = json!(res.kind);
    Ok(json_response(StatusCode::CREATED, &review))
}

/// The TokenRequest subresource (`kubectl create token`): a bound token for the ServiceAccount.
pub(super) fn token_request(
    server: &Server,
    res: &ResourceInfo,
    p: &ResourcePath,
    method: &Method,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    if *method != Method::POST {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    let ns = p.namespace.as_deref().unwrap_or("default");
    let name = p.name.as_deref().unwrap_or_default();
    let sa = server.store.get(res, Some(ns), name)?;
    let mut request = if body.is_empty() {
        json!({})
    } else {
        parse_body(headers, body)?
    };
    let seconds = request
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    if seconds < 600 {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            name,
            &[(
                "spec.expirationSeconds".into(),
                format!("Invalid value: {seconds}: may not specify a duration less than 10 minutes"),
            )],
        ));
    }
    let audiences: Vec<String> = request
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| vec![rbac::DEFAULT_AUDIENCE.to_owned()]);
    let now = jiff::Timestamp::now().as_second();
    let claims = rbac::TokenClaims {
        namespace: ns.to_owned(),
        service_account: name.to_owned(),
        uid: sa
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        expires: now + seconds,
    };
    let token = server.tokens.issue(&claims, &audiences, now);
    let expiration = jiff::Timestamp::from_second(claims.expires)
        .map(|t| t.to_string())
        .unwrap_or_default();
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["kind"] = json!("TokenRequest");
    request["metadata"] = json!({"name": name, "namespace": ns, "creationTimestamp": null});
    request["spec"]["audiences"] = json!(audiences);
    request["spec"]["expirationSeconds"] = json!(seconds);
    request["status"] = json!({"token": token, "expirationTimestamp": expiration});
    Ok(json_response(StatusCode::CREATED, &request))
}

/// The checks of writes by identities other than the admin that go beyond the request's own
/// authorization: RBAC's escalation prevention for Roles, ClusterRoles and their bindings, and
/// the OwnerReferencesPermissionEnforcement admission plugin. A patch is first run as a dry run
/// to see the object it would make.
#[allow(clippy::too_many_arguments)]
pub(super) fn admit(
    server: &Server,
    user: &User,
    res: &ResourceInfo,
    p: &ResourcePath,
    attrs: &Attributes,
    headers: &HeaderMap,
    query: &BTreeMap<String, String>,
    body: &Bytes,
    agent: &str,
) -> Result<(), ApiError> {
    let writes = matches!(attrs.verb.as_str(), "create" | "update" | "patch");
    let rbac_object = res.group == "rbac.authorization.k8s.io";
    let owner_references = body.windows(15).any(|w| w == b"ownerReferences");
    if !writes || p.subresource.is_some() || !(rbac_object || owner_references) {
        return Ok(());
    }
    let store = &server.store;
    let ns = p.namespace.as_deref();
    let old = p.name.as_deref().and_then(|n| store.get(res, ns, n).ok());
    let new = match attrs.verb.as_str() {
        "patch" => {
            let name = p.name.as_deref().unwrap_or_default();
            let patch = parse_body(headers, body)?;
            let mut opts = write_options(query, agent)?;
            opts.dry_run = true;
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let written = match content_type.split(';').next().unwrap_or_default() {
                "application/apply-patch+yaml" | "application/apply-patch+json" => {
                    opts.manager = query.get("fieldManager").cloned().unwrap_or_default();
                    store.apply(res, ns, name, patch, Subresource::Main, &opts)
                }
                "application/json-patch+json" => {
                    store.patch(res, ns, name, PatchKind::Json, &patch, Subresource::Main, &opts)
                }
                "application/strategic-merge-patch+json" => store.patch(
                    res,
                    ns,
                    name,
                    PatchKind::Strategic,
                    &patch,
                    Subresource::Main,
                    &opts,
                ),
                _ => store.patch(res, ns, name, PatchKind::Merge, &patch, Subresource::Main, &opts),
            };
            // An invalid patch fails the same way when it is really applied.
            match written {
                Ok(w) => w.object,
                Err(_) => return Ok(()),
            }
        }
        _ => parse_body(headers, body)?,
    };
    let registry = store.registry();
    let target = Attributes {
        name: p.name.clone().unwrap_or_else(|| {
            new.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        }),
        ..attrs.clone()
    };
    match (rbac_object, res.plural.as_str()) {
        (true, "roles" | "clusterroles") => rbac::check_role_escalation(store, user, &target, &new)?,
        (true, "rolebindings" | "clusterrolebindings") => {
            rbac::check_binding_escalation(store, user, &target, &new)?;
        }
        _ => {}
    }
    if !owner_references {
        return Ok(());
    }
    let checks = rbac::owner_reference_checks(&target, old.as_ref(), &new, |api_version, kind| {
        registry
            .find_kind(api_version, kind)
            .map(|r| (r.group.clone(), r.plural.clone()))
    })
    .map_err(|e| ApiError::forbidden(format!("{} {:?} is forbidden: {e}", res.plural, target.name)))?;
    for check in &checks {
        if !server.authorize(user, check).allowed {
            let why = if check.verb == "delete" {
                "cannot set an ownerRef on a resource you can't delete"
            } else {
                "cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set finalizers on"
            };
            let denied = rbac::forbidden(user, check, "");
            let qualified = if res.group.is_empty() {
                res.plural.clone()
            } else {
                format!("{}.{}", res.plural, res.group)
            };
            return Err(ApiError::forbidden(format!(
                "{qualified} {:?} is forbidden: {why}: {}",
                target.name,
                denied.message.split_once("forbidden: ").map_or("", |(_, m)| m)
            )));
        }
    }
    Ok(())
}
