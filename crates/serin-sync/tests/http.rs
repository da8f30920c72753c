//! GitRepositories over smart HTTP, served by `git http-backend` behind a small test server on
//! 127.0.0.1: an anonymous repository (fetched in-process by gix), and repositories behind basic
//! auth and a bearer token (credentials from a Secret, through the system git); wrong
//! credentials fail with AuthenticationFailed.

mod support;

use std::{path::PathBuf, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::Response,
};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, api::PostParams};
use serin_sync::api::GitRepository;
use serin_testbed::Testbed;
use support::*;

#[derive(Clone)]
struct Server {
    root: PathBuf,
}

const BASIC: &str = "Basic Z2l0OnMzY3JldA=="; // git:s3cret
const BEARER: &str = "Bearer t0ken";

/// Serves `<root>/<repo>` through `git http-backend`; `/basic/…` and `/bearer/…` need those
/// credentials.
async fn cgi(
    State(server): State<Server>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (needed, path_info) = if let Some(rest) = path.strip_prefix("/basic") {
        (Some(BASIC), rest.to_owned())
    } else if let Some(rest) = path.strip_prefix("/bearer") {
        (Some(BEARER), rest.to_owned())
    } else {
        (None, path.clone())
    };
    if needed.is_some_and(|n| n != auth) {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("WWW-Authenticate", "Basic realm=\"git\"")
            .body(Body::empty())
            .expect("response");
    }
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env("GIT_PROJECT_ROOT", &server.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", &path_info)
        .env("REQUEST_METHOD", method.as_str())
        .env("QUERY_STRING", uri.query().unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    for (header, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
    ] {
        if let Some(v) = headers.get(header).and_then(|v| v.to_str().ok()) {
            cmd.env(var, v);
        }
    }
    let mut child = cmd.spawn().expect("git http-backend");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&body).await.expect("body");
    }
    let out = child.wait_with_output().await.expect("output");
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4))
        .or_else(|| out.stdout.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)));
    let Some((end, sep)) = split else {
        return Response::builder()
            .status(500)
            .body(Body::empty())
            .expect("response");
    };
    let head = String::from_utf8_lossy(&out.stdout[..end]).into_owned();
    let mut response = Response::builder().status(200);
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if k.eq_ignore_ascii_case("status") {
            let code: u16 = v
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(200);
            response = response.status(code);
        } else {
            response = response.header(k.trim(), v.trim());
        }
    }
    response
        .body(Body::from(out.stdout[end + sep..].to_vec()))
        .expect("response")
}

fn secret(name: &str, data: serde_json::Value) -> Secret {
    serde_json::from_value(
        serde_json::json!({"metadata": {"name": name, "namespace": "flux-system"}, "stringData": data}),
    )
    .expect("secret")
}

fn repository(name: &str, url: &str, secret: Option<&str>) -> String {
    let secret = secret
        .map(|s| format!("  secretRef:\n    name: {s}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: {name}\n  namespace: flux-system\nspec:\n  interval: 1m\n  ref:\n    branch: main\n  url: {url}\n{secret}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_anonymous_basic_and_bearer() {
    let repo = GitFixture::from_examples();
    let server = Server {
        root: repo.dir.path().to_path_buf(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = axum::Router::new().fallback(cgi).with_state(server);
    let served = tokio::spawn(async move { axum::serve(listener, app).await });

    let tb = Testbed::start().await.expect("test bed");
    install_crds(&tb).await;
    create_namespace(&tb.client(), "flux-system").await;
    let secrets: Api<Secret> = Api::namespaced(tb.client(), "flux-system");
    for (name, data) in [
        (
            "basic",
            serde_json::json!({"username": "git", "password": "s3cret"}),
        ),
        ("bearer", serde_json::json!({"bearerToken": "t0ken"})),
        (
            "wrong",
            serde_json::json!({"username": "git", "password": "nope"}),
        ),
    ] {
        secrets
            .create(&PostParams::default(), &secret(name, data))
            .await
            .expect("secret");
    }
    let _controllers = start_controllers(&tb);
    let base = format!("http://127.0.0.1:{port}");
    kubectl_apply(&tb, &repository("anonymous", &format!("{base}/repo.git"), None));
    kubectl_apply(
        &tb,
        &repository("basic", &format!("{base}/basic/repo.git"), Some("basic")),
    );
    kubectl_apply(
        &tb,
        &repository("bearer", &format!("{base}/bearer/repo.git"), Some("bearer")),
    );
    kubectl_apply(
        &tb,
        &repository("wrong", &format!("{base}/basic/repo.git"), Some("wrong")),
    );

    let api: Api<GitRepository> = Api::namespaced(tb.client(), "flux-system");
    let revision = format!("main@sha1:{}", repo.head());
    for name in ["anonymous", "basic", "bearer", "wrong"] {
        let (status, reason, message) = eventually(
            Duration::from_secs(60),
            &format!("GitRepository {name} settled"),
            || {
                let api = api.clone();
                async move {
                    let r = api.get_opt(name).await.ok()??;
                    // Ready=Unknown is the run still in progress.
                    let c = r.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
                    (c.status != "Unknown").then_some((c.status, c.reason, c.message))
                }
            },
        )
        .await;
        if name == "wrong" {
            assert_eq!(
                (status.as_str(), reason.as_str()),
                ("False", "AuthenticationFailed"),
                "{message}"
            );
        } else {
            assert_eq!(status, "True", "{name}: {message}");
            assert_eq!(message, format!("stored artifact for revision '{revision}'"));
        }
    }
    served.abort();
}
