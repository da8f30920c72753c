//! The HTTP face of the emulator: routing of Kubernetes REST paths to the store, discovery,
//! OpenAPI, watch streams, Tables, authentication and RBAC authorization (see [`super::rbac`]),
//! and the test instruments (`/testbed/requests`, `/testbed/faults`). Does I/O (HTTP).

use std::{
    collections::BTreeMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{
    discovery,
    error::ApiError,
    rbac::{self, Attributes, Audit, TokenIssuer, User},
    resources::ResourceInfo,
    selector::{FieldSelector, LabelSelector},
    store::{
        EventType, FieldValidation, ListQuery, PatchKind, Propagation, Store, Subresource, WatchFrom,
        WriteOptions,
    },
    table::{self, IncludeObject},
};

/// A fault to inject into matching requests.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, or `*`.
    pub verb: String,
    /// Plural resource name (`canaries`), or `*`.
    pub resource: String,
    /// How many matching requests it applies to.
    pub count: u32,
    /// Status code to answer with; 0 passes the request on after the delay.
    #[serde(default)]
    pub status: u16,
    /// Delay before answering, in milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
}

/// Shared state of the HTTP server.
#[derive(Debug)]
pub struct Server {
    pub store: Arc<Store>,
    pub token: String,
    pub address: String,
    requests: Mutex<BTreeMap<(String, String, String), u64>>,
    faults: Mutex<Vec<Fault>>,
    /// Bumped to end every open watch stream (`POST /testbed/watches/close`).
    watch_epoch: tokio::sync::watch::Sender<u64>,
    /// Signs and checks ServiceAccount tokens.
    tokens: Arc<TokenIssuer>,
    /// Where authorization decisions for non-admin identities are appended.
    audit: Option<Audit>,
}

impl Server {
    pub fn new(store: Arc<Store>, token: String, address: String) -> Self {
        Self {
            store,
            token,
            address,
            requests: Mutex::new(BTreeMap::new()),
            faults: Mutex::new(Vec::new()),
            watch_epoch: tokio::sync::watch::channel(0).0,
            tokens: Arc::new(TokenIssuer::new(format!("{:032x}", rand::random::<u128>()))),
            audit: None,
        }
    }

    /// The issuer of ServiceAccount tokens, for the token controller.
    pub fn token_issuer(&self) -> Arc<TokenIssuer> {
        self.tokens.clone()
    }

    /// Appends every authorization decision for identities other than the admin to `audit`.
    pub fn with_audit(mut self, audit: Option<Audit>) -> Self {
        self.audit = audit;
        self
    }

    /// Who a request is: the admin without a credential or with the admin token, a
    /// ServiceAccount with a token it was issued (and that still exists with the same uid), then
    /// whoever the impersonation headers name when the requester may impersonate them.
    fn authenticate(&self, headers: &HeaderMap) -> Result<User, ApiError> {
        let user = match headers.get("authorization").and_then(|v| v.to_str().ok()) {
            None => User::admin(),
            Some(value) => {
                let token = value.strip_prefix("Bearer ").unwrap_or_default();
                if token == self.token {
                    User::admin()
                } else {
                    self.service_account_of(token)?
                }
            }
        };
        let Some(as_user) = headers.get("impersonate-user").and_then(|v| v.to_str().ok()) else {
            return Ok(user);
        };
        let groups: Vec<String> = headers
            .get_all("impersonate-group")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let mut checks = vec![match as_user
            .strip_prefix(rbac::SERVICE_ACCOUNT_PREFIX)
            .and_then(|r| r.split_once(':'))
        {
            Some((ns, name)) => {
                Attributes::resource("impersonate", "", "serviceaccounts", None, Some(ns), Some(name))
            }
            None => Attributes::resource("impersonate", "", "users", None, None, Some(as_user)),
        }];
        checks.extend(
            groups
                .iter()
                .map(|g| Attributes::resource("impersonate", "", "groups", None, None, Some(g))),
        );
        for attrs in &checks {
            if !self.authorize(&user, attrs).allowed {
                return Err(rbac::forbidden(&user, attrs, ""));
            }
        }
        Ok(User::impersonated(as_user, &groups))
    }

    /// The ServiceAccount a bound token (unexpired) or a legacy token (still in its Secret) was
    /// issued for, while that ServiceAccount exists with the same uid.
    fn service_account_of(&self, token: &str) -> Result<User, ApiError> {
        use base64::Engine;
        let now = jiff::Timestamp::now().as_second();
        let registry = self.store.registry();
        let (namespace, name, uid) = match self.tokens.verify(token, now) {
            Some(c) => (c.namespace, c.service_account, c.uid),
            None => {
                let c = self
                    .tokens
                    .verify_legacy(token)
                    .ok_or_else(ApiError::unauthorized)?;
                let secrets = registry
                    .find("", "v1", "secrets")
                    .ok_or_else(ApiError::unauthorized)?;
                let secret = self
                    .store
                    .get(secrets, Some(&c.namespace), &c.secret)
                    .map_err(|_| ApiError::unauthorized())?;
                let held = secret
                    .pointer("/data/token")
                    .and_then(Value::as_str)
                    .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok());
                if held.as_deref() != Some(token.as_bytes()) {
                    return Err(ApiError::unauthorized());
                }
                (c.namespace, c.service_account, c.uid)
            }
        };
        let res = registry
            .find("", "v1", "serviceaccounts")
            .ok_or_else(ApiError::unauthorized)?;
        let sa = self
            .store
            .get(res, Some(&namespace), &name)
            .map_err(|_| ApiError::unauthorized())?;
        if sa.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid.as_str()) {
            return Err(ApiError::unauthorized());
        }
        Ok(User::service_account(&namespace, &name))
    }

    /// Authorizes and audits one request.
    fn authorize(&self, user: &User, attrs: &Attributes) -> rbac::Decision {
        let decision = rbac::authorize(&self.store, user, attrs);
        if let Some(audit) = &self.audit {
            audit.record(user, attrs, &decision);
        }
        decision
    }

    fn count(&self, verb: &str, resource: &str, agent: &str) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *requests
            .entry((verb.to_owned(), resource.to_owned(), agent.to_owned()))
            .or_default() += 1;
    }

    fn take_fault(&self, verb: &str, resource: &str) -> Option<Fault> {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let i = faults.iter().position(|f| {
            (f.verb == "*" || f.verb == verb) && (f.resource == "*" || f.resource == resource) && f.count > 0
        })?;
        faults[i].count -= 1;
        let fault = faults[i].clone();
        if faults[i].count == 0 {
            faults.remove(i);
        }
        Some(fault)
    }
}

/// The router.
pub fn router(server: Arc<Server>) -> Router {
    Router::new().fallback(handle).with_state(server)
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    (code, [("content-type", "application/json")], value.to_string()).into_response()
}

fn ok(value: &Value) -> Response {
    json_response(StatusCode::OK, value)
}

fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for w in warnings {
        if let Ok(v) = format!("299 - \"{}\"", w.replace('"', "'")).parse() {
            response.headers_mut().append("warning", v);
        }
    }
    response
}

/// A parsed resource path.
#[derive(Debug, Default, PartialEq)]
struct ResourcePath {
    group: String,
    version: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_resource_path(segments: &[&str]) -> Option<ResourcePath> {
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

fn query_map(query: Option<&str>) -> BTreeMap<String, String> {
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

fn percent_decode(s: &str) -> String {
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

fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        return super::proto::decode(body).map_err(|e| ApiError {
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

fn verb_of(method: &Method, p: &ResourcePath, q: &BTreeMap<String, String>) -> &'static str {
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

async fn handle(State(server): State<Arc<Server>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query = query_map(parts.uri.query());
    let agent = parts
        .headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
        .to_owned();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();

    // Unauthenticated endpoints, as system:public-info-viewer allows.
    match segments.as_slice() {
        ["healthz" | "readyz" | "livez", ..] => return (StatusCode::OK, "ok").into_response(),
        ["version"] => return ok(&discovery::version()),
        _ => {}
    }
    // A wrong credential is refused. A request without one is the admin's: kubectl does not send
    // bearer tokens over plain http, so the emulator serves like an API server's local insecure
    // port, which is what it is (it listens on 127.0.0.1 only).
    let user = match server.authenticate(&parts.headers) {
        Ok(user) => user,
        Err(err) => return err.into_response(),
    };
    // Everything that is not a resource is a non-resource URL to the authorizer: discovery and
    // OpenAPI (which every authenticated identity may read through system:discovery), and the
    // test instruments (the admin's only).
    if parse_resource_path(&segments).is_none() || segments.first() == Some(&"testbed") {
        let attrs = Attributes::non_resource(parts.method.as_str(), &path);
        if !server.authorize(&user, &attrs).allowed {
            return rbac::forbidden(&user, &attrs, "").into_response();
        }
    }
    let body = match axum::body::to_bytes(body, 64 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => return ApiError::bad_request(format!("cannot read the request body: {e}")).into_response(),
    };
    match segments.as_slice() {
        ["testbed", "requests"] => return instrument_requests(&server, &parts.method),
        ["testbed", "faults"] => return instrument_faults(&server, &parts.method, &body),
        ["testbed", "watches", "close"] if parts.method == Method::POST => {
            server.watch_epoch.send_modify(|e| *e += 1);
            return ok(&json!({"closed": true}));
        }
        _ => {}
    }
    let registry = server.store.registry();
    match segments.as_slice() {
        ["api"] => {
            server.count("get", "discovery", &agent);
            return ok(&discovery::core_versions(&server.address));
        }
        ["apis"] => {
            server.count("get", "discovery", &agent);
            return ok(&discovery::groups(&registry));
        }
        ["apis", group] => {
            server.count("get", "discovery", &agent);
            return discovery::group(&registry, group)
                .map_or_else(|| ApiError::not_found_path(&path).into_response(), |d| ok(&d));
        }
        ["api", version] => {
            server.count("get", "discovery", &agent);
            return discovery::resources(&registry, "", version)
                .map_or_else(|| ApiError::not_found_path(&path).into_response(), |d| ok(&d));
        }
        ["apis", group, version] => {
            server.count("get", "discovery", &agent);
            return discovery::resources(&registry, group, version)
                .map_or_else(|| ApiError::not_found_path(&path).into_response(), |d| ok(&d));
        }
        ["openapi", "v3"] => return ok(&discovery::openapi_v3_index(&registry)),
        ["openapi", "v3", "api", version] => {
            return discovery::openapi_v3_group_version(&registry, "", version)
                .map_or_else(|| ApiError::not_found_path(&path).into_response(), |d| ok(&d));
        }
        ["openapi", "v3", "apis", group, version] => {
            return discovery::openapi_v3_group_version(&registry, group, version)
                .map_or_else(|| ApiError::not_found_path(&path).into_response(), |d| ok(&d));
        }
        _ => {}
    }
    let Some(p) = parse_resource_path(&segments) else {
        return ApiError::not_found_path(&path).into_response();
    };
    let verb = verb_of(&parts.method, &p, &query);
    // A Namespace's own path is in that namespace, as the API server's request info has it.
    let attrs_ns = p.namespace.as_deref().or_else(|| {
        (p.group.is_empty() && p.plural == "namespaces")
            .then_some(p.name.as_deref())
            .flatten()
    });
    let selected_name = matches!(verb, "list" | "watch" | "deletecollection")
        .then(|| {
            query
                .get("fieldSelector")
                .and_then(|f| rbac::name_from_field_selector(f))
        })
        .flatten();
    let attrs = Attributes::resource(
        verb,
        &p.group,
        &p.plural,
        p.subresource.as_deref(),
        attrs_ns,
        p.name.as_deref().or(selected_name.as_deref()),
    );
    if !server.authorize(&user, &attrs).allowed {
        return rbac::forbidden(&user, &attrs, "").into_response();
    }
    server.count(verb, &p.plural, &agent);
    if let Some(fault) = server.take_fault(verb, &p.plural) {
        if fault.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
        }
        if fault.status > 0 {
            let reason = match fault.status {
                409 => "Conflict",
                429 => "TooManyRequests",
                500 => "InternalError",
                503 => "ServiceUnavailable",
                504 => "Timeout",
                _ => "InternalError",
            };
            let err = ApiError {
                code: fault.status,
                reason,
                message: format!("injected fault for {verb} {}", p.plural),
                details: None,
            };
            return err.into_response();
        }
    }
    let Some(res) = registry.find(&p.group, &p.version, &p.plural).cloned() else {
        return ApiError::not_found_path(&path).into_response();
    };
    if p.namespace.is_some() && !res.namespaced {
        return ApiError::not_found_path(&path).into_response();
    }
    // A server-side apply that creates its object needs `create` as well as `patch`, as the
    // API server's patch handler authorizes it.
    if verb == "patch"
        && p.subresource.is_none()
        && parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/apply-patch"))
        && let Some(name) = p.name.as_deref()
        && server.store.get(&res, p.namespace.as_deref(), name).is_err()
    {
        let create = Attributes::resource("create", &p.group, &p.plural, None, attrs_ns, Some(name));
        if !server.authorize(&user, &create).allowed {
            return rbac::forbidden(&user, &create, "").into_response();
        }
    }
    if res.is_review() {
        return match parse_body(&parts.headers, &body)
            .and_then(|review| review_response(&server, &user, &res, review))
        {
            Ok(response) => response,
            Err(err) => err.into_response(),
        };
    }
    if res.group.is_empty() && res.plural == "serviceaccounts" && p.subresource.as_deref() == Some("token") {
        return match token_request(&server, &res, &p, &parts.method, &parts.headers, &body) {
            Ok(response) => response,
            Err(err) => err.into_response(),
        };
    }
    if !user.admin
        && let Err(err) = admit(
            &server,
            &user,
            &res,
            &p,
            &attrs,
            &parts.headers,
            &query,
            &body,
            &agent,
        )
    {
        return err.into_response();
    }
    match serve_resource(
        &server,
        &res,
        &p,
        &parts.method,
        &parts.headers,
        &query,
        &body,
        &agent,
    )
    .await
    {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

/// `SelfSubjectAccessReview`, `SubjectAccessReview` (`kubectl auth can-i`) and
/// `SelfSubjectReview` (`kubectl auth whoami`), answered from the authorizer.
fn review_response(
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
fn token_request(
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
fn admit(
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

fn instrument_requests(server: &Server, method: &Method) -> Response {
    let mut requests = server.requests.lock().unwrap_or_else(|p| p.into_inner());
    if method == Method::DELETE {
        requests.clear();
        return ok(&json!({"requests": []}));
    }
    let rows: Vec<Value> = requests
        .iter()
        .map(|((verb, resource, agent), count)| json!({"verb": verb, "resource": resource, "userAgent": agent, "count": count}))
        .collect();
    ok(&json!({"requests": rows}))
}

fn instrument_faults(server: &Server, method: &Method, body: &Bytes) -> Response {
    let mut faults = server.faults.lock().unwrap_or_else(|p| p.into_inner());
    match *method {
        Method::POST => match serde_json::from_slice::<Fault>(body) {
            Ok(fault) => {
                faults.push(fault);
                json_response(StatusCode::CREATED, &json!({"faults": *faults}))
            }
            Err(e) => ApiError::bad_request(format!(
                "a fault is {{verb, resource, count, status, delayMs}}: {e}"
            ))
            .into_response(),
        },
        Method::DELETE => {
            faults.clear();
            ok(&json!({"faults": []}))
        }
        _ => ok(&json!({"faults": *faults})),
    }
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

fn include_object(query: &BTreeMap<String, String>) -> IncludeObject {
    match query.get("includeObject").map(String::as_str) {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    }
}

/// The manager of a non-apply write: `fieldManager`, else the user agent's program name.
fn manager_of(query: &BTreeMap<String, String>, agent: &str) -> String {
    query
        .get("fieldManager")
        .cloned()
        .unwrap_or_else(|| agent.split('/').next().unwrap_or(agent).to_owned())
}

fn write_options(query: &BTreeMap<String, String>, agent: &str) -> Result<WriteOptions, ApiError> {
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

#[allow(clippy::too_many_arguments)]
async fn serve_resource(
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
            let list_query = ListQuery {
                namespace: ns.map(str::to_owned),
                labels,
                fields,
                limit: query.get("limit").and_then(|l| l.parse().ok()),
                continue_after: query
                    .get("continue")
                    .filter(|c| !c.is_empty())
                    .map(|c| decode_continue(c))
                    .transpose()?,
            };
            let (items, rv, next, remaining) = store.list(res, &list_query);
            let next = next.map(|n| encode_continue(&n));
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

fn parse_propagation(p: &str) -> Result<Propagation, ApiError> {
    match p {
        "Background" => Ok(Propagation::Background),
        "Foreground" => Ok(Propagation::Foreground),
        "Orphan" => Ok(Propagation::Orphan),
        other => Err(ApiError::bad_request(format!(
            "propagationPolicy: Unsupported value: \"{other}\""
        ))),
    }
}

fn encode_continue(after: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(after)
}

fn decode_continue(token: &str) -> Result<String, ApiError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiError::bad_request("continue key is not valid"))
}

#[allow(clippy::too_many_arguments)]
fn serve_scale(
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
                super::patch::json_patch(&mut scale, &incoming)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
            } else {
                super::patch::merge_patch(&mut scale, &incoming);
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

fn event_line(type_: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": type_, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

#[allow(clippy::too_many_arguments)]
fn watch_response(
    server: &Arc<Server>,
    res: &ResourceInfo,
    ns: Option<&str>,
    query: &BTreeMap<String, String>,
    labels: LabelSelector,
    fields: FieldSelector,
    as_table: bool,
) -> Result<Response, ApiError> {
    let from = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => WatchFrom::Now,
        Some(rv) => WatchFrom::Version(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?,
        ),
    };
    let send_initial = query.get("sendInitialEvents").is_some_and(|v| v == "true");
    let bookmarks = query.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let include = include_object(query);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let res = res.clone();
    let ns = ns.map(str::to_owned);
    let store = server.store.clone();
    let mut epoch = server.watch_epoch.subscribe();
    let start = match store.watch(
        &res,
        ns.as_deref(),
        if send_initial { WatchFrom::Now } else { from },
    ) {
        Ok(start) => Some(start),
        Err(err) if err.code == 410 => {
            // As the API server does: a 200 stream whose only event is the 410 error.
            let _ = tx.try_send(event_line("ERROR", &err.status()));
            None
        }
        Err(err) => return Err(err),
    };
    tokio::spawn(async move {
        let Some((initial, mut events, start_rv)) = start else {
            return;
        };
        let render = |obj: &Value| -> Value {
            if as_table {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                table::table(&res, std::slice::from_ref(obj), &rv, include, None)
            } else {
                let mut o = obj.clone();
                o["apiVersion"] = json!(res.api_version());
                o["kind"] = json!(res.kind);
                o
            }
        };
        let matches = |obj: &Value| labels.matches(obj.pointer("/metadata/labels")) && fields.matches(obj);
        let mut last_rv = start_rv;
        for e in &initial {
            if matches(&e.object)
                && tx
                    .send(event_line(e.type_.as_str(), &render(&e.object)))
                    .await
                    .is_err()
            {
                return;
            }
            last_rv = last_rv.max(e.rv);
        }
        if send_initial && bookmarks {
            let mark = json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": {"resourceVersion": last_rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
            if tx.send(event_line("BOOKMARK", &mark)).await.is_err() {
                return;
            }
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut bookmark_tick = tokio::time::interval(Duration::from_secs(1));
        bookmark_tick.tick().await;
        loop {
            let sleep_until =
                deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                received = events.recv() => match received {
                    Ok(e) => {
                        if e.rv <= last_rv {
                            continue;
                        }
                        last_rv = e.rv;
                        let in_scope = e.key.group == res.group && e.key.plural == res.plural && ns.as_ref().is_none_or(|n| &e.key.namespace == n);
                        if !in_scope || !matches(&e.object) {
                            continue;
                        }
                        let type_ = match e.type_ { EventType::Added => "ADDED", EventType::Modified => "MODIFIED", EventType::Deleted => "DELETED" };
                        if tx.send(event_line(type_, &render(&e.object))).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let err = ApiError::gone("the watch fell behind; relist");
                        let _ = tx.send(event_line("ERROR", &err.status())).await;
                        return;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = bookmark_tick.tick(), if bookmarks => {
                    let mark = json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": {"resourceVersion": last_rv.to_string()}});
                    if tx.send(event_line("BOOKMARK", &mark)).await.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep_until(sleep_until) => return,
                () = tx.closed() => return,
                _ = epoch.changed() => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| ApiError::internal("cannot build the watch response").into_response()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse() {
        let p = parse_resource_path(&[
            "apis",
            "apps",
            "v1",
            "namespaces",
            "test",
            "deployments",
            "podinfo",
            "scale",
        ])
        .expect("parses");
        assert_eq!(
            (
                p.group.as_str(),
                p.namespace.as_deref(),
                p.plural.as_str(),
                p.name.as_deref(),
                p.subresource.as_deref()
            ),
            (
                "apps",
                Some("test"),
                "deployments",
                Some("podinfo"),
                Some("scale")
            )
        );
        let p = parse_resource_path(&["api", "v1", "namespaces", "test"]).expect("parses");
        assert_eq!(
            (p.plural.as_str(), p.name.as_deref(), p.namespace),
            ("namespaces", Some("test"), None)
        );
        let p = parse_resource_path(&["api", "v1", "namespaces"]).expect("parses");
        assert_eq!(p.plural, "namespaces");
        let p = parse_resource_path(&["api", "v1", "namespaces", "test", "status"]).expect("parses");
        assert_eq!(
            (p.plural.as_str(), p.name.as_deref(), p.subresource.as_deref()),
            ("namespaces", Some("test"), Some("status"))
        );
    }

    #[test]
    fn query_decoding() {
        let q = query_map(Some("labelSelector=app%3Dpodinfo%2Ctier+in+%28a%29&watch=true"));
        assert_eq!(q["labelSelector"], "app=podinfo,tier in (a)");
        assert_eq!(q["watch"], "true");
    }
}
