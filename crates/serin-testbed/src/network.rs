//! The cluster network: an HTTP forward proxy on 127.0.0.1 that resolves cluster names
//! (`svc`, `svc.ns`, `svc.ns.svc.cluster.local`, with or without port) to what serves them —
//! simulated workloads behind Services (answered through the mesh routing), the loadtester, and
//! Prometheus. Its origin-form `/metrics` is the mesh's Istio metrics, which Prometheus scrapes.
//! A client run with `HTTP_PROXY` pointing here (and `NO_PROXY=127.0.0.1,localhost`) reaches
//! in-cluster URLs unchanged. Does I/O (HTTP).

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{
    loadtester::Loadtester,
    mesh::{
        dataplane::{self, DataPlane, Source},
        routing::{self, Request as MeshRequest},
    },
};

/// What the proxy reaches.
#[derive(Debug)]
pub struct Network {
    pub plane: Arc<DataPlane>,
    pub loadtester: Arc<Loadtester>,
    /// `127.0.0.1:PORT` of the real Prometheus, when running.
    pub prometheus: Option<String>,
    /// A Prometheus fault for outage tests: 0 none, 1 unreachable (as when it is stopped),
    /// 2 answering 500.
    pub prometheus_fault: std::sync::atomic::AtomicU8,
}

/// The proxy's routes.
pub fn router(network: Arc<Network>) -> Router {
    Router::new().fallback(handle).with_state(network)
}

/// The body a simulated podinfo-like workload answers with.
pub fn workload_body(response: &dataplane::Response, path: &str) -> String {
    let Some((ns, name)) = &response.workload else {
        return match response.flags {
            "UH" => "no healthy upstream".into(),
            _ => "route not found".into(),
        };
    };
    if response.status >= 500 {
        return "internal server error".into();
    }
    let path = path.split('?').next().unwrap_or("/");
    if path.starts_with("/token") {
        let token: String = (0..24)
            .map(|_| format!("{:x}", rand::random_range(0..16u8)))
            .collect();
        return json!({"token": token, "expires_at": "2099-01-01T00:00:00Z"}).to_string();
    }
    if matches!(path, "/healthz" | "/readyz") {
        return json!({"status": "OK"}).to_string();
    }
    json!({"hostname": format!("{name}-{}", &ns.len()), "workload": name, "namespace": ns, "message": "greetings from the serin test bed"}).to_string()
}

async fn handle(State(network): State<Arc<Network>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let Some(authority) = parts.uri.authority().map(|a| a.as_str().to_owned()) else {
        // Origin-form: the mesh's own endpoints.
        return match parts.uri.path() {
            "/metrics" => (
                StatusCode::OK,
                [("content-type", "text/plain; version=0.0.4")],
                network.plane.metrics.render(),
            )
                .into_response(),
            "/healthz" => (StatusCode::OK, "ok").into_response(),
            other => (
                StatusCode::NOT_FOUND,
                format!("the test bed network serves /metrics and proxies absolute URLs; not {other}"),
            )
                .into_response(),
        };
    };
    if parts.method == axum::http::Method::CONNECT {
        return (
            StatusCode::NOT_IMPLEMENTED,
            "the test bed proxy carries plain http only",
        )
            .into_response();
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let host = authority.split(':').next().unwrap_or_default().to_owned();
    let full = routing::fqdn(&host, "default");
    let labels: Vec<&str> = full.split('.').collect();
    let namespace = labels.get(1).copied().unwrap_or("default").to_owned();
    if labels.first() == Some(&"prometheus") && namespace == "istio-system" {
        let Some(target) = &network.prometheus else {
            return (
                StatusCode::BAD_GATEWAY,
                "Prometheus is not running in this test bed",
            )
                .into_response();
        };
        match network.prometheus_fault.load(std::sync::atomic::Ordering::SeqCst) {
            1 => {
                let message = format!("cannot connect to {target}: connection refused (Prometheus is down)");
                return (StatusCode::BAD_GATEWAY, message).into_response();
            }
            2 => {
                let body = r#"{"status":"error","errorType":"internal","error":"simulated internal error"}"#;
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [("content-type", "application/json")],
                    body,
                )
                    .into_response();
            }
            _ => {}
        }
        return forward(target, parts.method.as_str(), &path, &parts.headers, &body).await;
    }
    if labels.first() == Some(&"flagger-loadtester") {
        let (code, text) = network
            .loadtester
            .handle(Some(&namespace), parts.method.as_str(), &path, &body);
        return (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            text,
        )
            .into_response();
    }
    if !network.plane.knows_host(&host, "default") {
        return (
            StatusCode::BAD_GATEWAY,
            format!("no Service answers for {host} in the test bed"),
        )
            .into_response();
    }
    let headers = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_lowercase(), v.to_str().ok()?.to_owned())))
        .collect();
    let req = MeshRequest {
        host: authority.clone(),
        source_namespace: "default".into(),
        gateway: None,
        method: parts.method.to_string(),
        path: path.clone(),
        headers,
    };
    let source = Source {
        workload: "testbed-proxy".into(),
        namespace: "default".into(),
    };
    let response = network.plane.serve(&req, &source);
    let mut out = (
        StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        workload_body(&response, &path),
    )
        .into_response();
    for (k, v) in &response.headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::try_from(k.as_str()),
            axum::http::HeaderValue::try_from(v.as_str()),
        ) {
            out.headers_mut().append(name, value);
        }
    }
    if let Some((_, workload)) = &response.workload
        && let Ok(value) = axum::http::HeaderValue::try_from(workload.as_str())
    {
        out.headers_mut().insert("x-testbed-workload", value);
    }
    out
}

/// Forwards a request to `127.0.0.1:PORT` over HTTP/1.0 (no chunking, closed at the end).
async fn forward(
    target: &str,
    method: &str,
    path: &str,
    headers: &axum::http::HeaderMap,
    body: &Bytes,
) -> Response {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(target).await else {
        return (StatusCode::BAD_GATEWAY, format!("cannot connect to {target}")).into_response();
    };
    let mut request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {target}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        if matches!(
            k.as_str(),
            "host" | "content-length" | "connection" | "proxy-connection" | "transfer-encoding"
        ) {
            continue;
        }
        if let Ok(v) = v.to_str() {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    if stream.write_all(&bytes).await.is_err() {
        return (StatusCode::BAD_GATEWAY, format!("cannot send to {target}")).into_response();
    }
    let mut response = Vec::new();
    if stream.read_to_end(&mut response).await.is_err() {
        return (StatusCode::BAD_GATEWAY, format!("cannot read from {target}")).into_response();
    }
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let code = head.get(9..12).and_then(|c| c.parse::<u16>().ok()).unwrap_or(502);
    let content_type = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "application/octet-stream".into());
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
        [("content-type", content_type)],
        response[split..].to_vec(),
    )
        .into_response()
}
