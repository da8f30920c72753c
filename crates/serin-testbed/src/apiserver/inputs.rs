//! The emulator's request parsing as one entry point for fuzzing: requests written as text are
//! served in-process by a fresh API emulator (paths, query parameters, selectors, continue
//! tokens, content types, JSON, YAML and protobuf bodies, merge, JSON and strategic merge
//! patches, server-side apply, Tables). `fuzz/` feeds it to libFuzzer and `tests/inputs.rs`
//! drives it with generated requests; both check that no request panics the emulator.
//!
//! The text holds up to [`MAX_REQUESTS`] requests separated by a line `===`; each is a line
//! `METHOD PATH[?QUERY]`, a line with the content type (may be empty) and the body. The test
//! bed's own control endpoints (`/testbed/...`) are left out: they are not part of the
//! Kubernetes API and trust their caller. Each input starts from a store holding the namespace
//! `test`, a ConfigMap `c` and a Deployment `d` there.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use http::{Method, Request};
use tower::ServiceExt;

use super::{
    server::{Server, router},
    store::Store,
};

/// Requests served per input, at most.
pub const MAX_REQUESTS: usize = 4;

/// Objects every input starts from.
const PREAMBLE: &[(&str, &str, &str)] = &[
    (
        "POST",
        "/api/v1/namespaces",
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"test"}}"#,
    ),
    (
        "POST",
        "/api/v1/namespaces/test/configmaps",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","labels":{"app":"c"}},"data":{"k":"v"}}"#,
    ),
    (
        "POST",
        "/apis/apps/v1/namespaces/test/deployments",
        r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d","labels":{"app":"d"}},"spec":{"replicas":1,"selector":{"matchLabels":{"app":"d"}},"template":{"metadata":{"labels":{"app":"d"}},"spec":{"containers":[{"name":"c","image":"x","ports":[{"containerPort":80}]}]}}}}"#,
    ),
];

/// One parsed request of an input.
struct Written<'a> {
    method: &'a str,
    target: &'a str,
    content_type: &'a str,
    body: &'a str,
}

fn parse(block: &str) -> Option<Written<'_>> {
    let mut parts = block.splitn(3, '\n');
    let (method, target) = parts.next()?.trim().split_once(' ')?;
    let content_type = parts.next().unwrap_or("").trim();
    let body = parts.next().unwrap_or("");
    Some(Written {
        method,
        target: target.trim(),
        content_type,
        body,
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// Serves the requests of `text` on a fresh emulator; the status of each request that could be
/// sent (a malformed method or target is not sent: the HTTP layer rejects it before the
/// emulator sees it).
pub fn requests(text: &str) -> Vec<u16> {
    runtime().block_on(serve(text))
}

async fn serve(text: &str) -> Vec<u16> {
    let store = Arc::new(Store::new(64));
    crate::emulator::install_bootstrap_rbac(&store).expect("bootstrap RBAC");
    let server = Arc::new(Server::new(store, "fuzz".to_owned(), "127.0.0.1:0".to_owned()));
    let app = router(server);
    for (method, target, body) in PREAMBLE {
        let status = send(&app, method, target, "application/json", body).await;
        assert_eq!(status, Some(201), "{method} {target}");
    }
    let mut out = Vec::new();
    for block in text.split("\n===\n").take(MAX_REQUESTS) {
        let Some(w) = parse(block) else { continue };
        if w.target.trim_start_matches('/').starts_with("testbed") {
            continue;
        }
        if let Some(status) = send(&app, w.method, w.target, w.content_type, w.body).await {
            out.push(status);
        }
    }
    out
}

async fn send(app: &axum::Router, method: &str, target: &str, content_type: &str, body: &str) -> Option<u16> {
    let method = Method::from_bytes(method.as_bytes()).ok()?;
    let mut request = Request::builder()
        .method(method)
        .uri(target)
        .header("authorization", "Bearer fuzz")
        .header("user-agent", "fuzz");
    if !content_type.is_empty() {
        request = request.header("content-type", content_type);
    }
    let request = request.body(Body::from(body.to_owned())).ok()?;
    let watch = target.contains("watch");
    let response = app.clone().oneshot(request).await.ok()?;
    let status = response.status().as_u16();
    // A watch streams until it is dropped; every other answer is read whole.
    if !watch {
        let _ = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024).await;
    }
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_requests_reach_the_emulator() {
        let statuses = requests(
            "GET /api/v1/namespaces/test/configmaps/c\n\n===\nPATCH /apis/apps/v1/namespaces/test/deployments/d\napplication/merge-patch+json\n{\"spec\":{\"replicas\":3}}\n===\nGET /api/v1/namespaces/test/configmaps?labelSelector=app%20in%20(c,x)\n\n===\nDELETE /api/v1/namespaces/test/configmaps/missing\n\n",
        );
        assert_eq!(statuses, vec![200, 200, 200, 404]);
        assert_eq!(
            requests(
                "PATCH /api/v1/namespaces/test/configmaps/c\napplication/json-patch+json\n[{\"op\":\"remove\",\"path\":\"/nope\"}]"
            ),
            vec![422]
        );
        assert!(requests("POST /testbed/faults\n\n{}").is_empty());
    }
}
