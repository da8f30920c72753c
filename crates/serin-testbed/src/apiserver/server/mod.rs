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

mod auth;
mod instruments;
mod parse;
mod resource;
mod watch;

use auth::*;
use instruments::*;
use parse::*;
use resource::*;
use watch::*;

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
    // Counted as the API server's audit log names it (`canaries/status`); a dry run apart, as
    // it writes nothing.
    let mut counted = match &p.subresource {
        Some(sub) => format!("{}/{sub}", p.plural),
        None => p.plural.clone(),
    };
    if query.get("dryRun").is_some_and(|d| d == "All") {
        counted = format!("{counted} {}", crate::DRY_RUN);
    }
    server.count(verb, &counted, &agent);
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
