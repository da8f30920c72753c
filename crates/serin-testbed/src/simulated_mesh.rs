//! The test bed's simulated Istio side, started next to either API server: the data plane, the
//! cluster network proxy, the loadtester (registered as a Service in the namespaces whose
//! Canaries call it) and the real Prometheus. Does I/O (listeners, tasks, a process).

use std::sync::Arc;

use anyhow::Context;
use serin_runtime::shutdown::Shutdown;

use crate::{harness::ensure_service, istio, loadtester, mesh, network, prometheus};

/// The running data plane, network and Prometheus.
pub(crate) struct MeshParts {
    pub(crate) plane: Arc<mesh::dataplane::DataPlane>,
    pub(crate) network: Arc<network::Network>,
    pub(crate) proxy_url: String,
    pub(crate) loadtester_url: String,
    pub(crate) prometheus: Option<prometheus::Prometheus>,
    pub(crate) tasks: Tasks,
}

/// Tasks aborted when dropped, so a test bed that fails half-way leaves no watch running.
#[derive(Default)]
pub(crate) struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Tasks {
    fn push(&mut self, task: tokio::task::JoinHandle<()>) {
        self.0.push(task);
    }

    pub(crate) fn abort(&self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Namespaces named by `flagger-loadtester.<ns>` webhook URLs of a Canary.
fn loadtester_namespaces(canary: &serde_json::Value) -> Vec<String> {
    let own = canary
        .pointer("/metadata/namespace")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("default");
    canary
        .pointer("/spec/analysis/webhooks")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|w| w.get("url").and_then(serde_json::Value::as_str))
        .filter_map(|url| loadtester::split_url(url).ok())
        .filter_map(|(host, _)| {
            let fqdn = mesh::routing::fqdn(&host, own);
            let mut labels = fqdn.split('.');
            (labels.next() == Some("flagger-loadtester")).then(|| labels.next().unwrap_or(own).to_owned())
        })
        .collect()
}

/// Starts the data plane, the network proxy, the loadtester and (with `with_prometheus`) a real
/// Prometheus next to the cluster `client` reaches.
pub(crate) async fn start(
    client: &kube::Client,
    shutdown: &Shutdown,
    with_prometheus: bool,
) -> anyhow::Result<MeshParts> {
    istio::install_crds(client).await?;
    let (plane, plane_tasks) = mesh::dataplane::DataPlane::spawn(client.clone());
    let mut tasks = Tasks(plane_tasks);
    let loadtester = Arc::new(loadtester::Loadtester::new(plane.clone()));

    let proxy_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the cluster network proxy")?;
    let proxy_addr = proxy_listener.local_addr()?;
    let prometheus = if with_prometheus {
        let p = prometheus::Prometheus::start(proxy_addr).await?;
        ensure_service(client, "istio-system", "prometheus", 9090).await?;
        Some(p)
    } else {
        None
    };
    let network = Arc::new(network::Network {
        plane: plane.clone(),
        loadtester: loadtester.clone(),
        prometheus: prometheus
            .as_ref()
            .map(|p| p.url().trim_start_matches("http://").to_owned()),
        prometheus_fault: std::sync::atomic::AtomicU8::new(0),
    });
    tasks.push(serve_until(
        proxy_listener,
        network::router(network.clone()),
        shutdown.clone(),
    ));

    let lt_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the loadtester")?;
    let loadtester_url = format!("http://{}", lt_listener.local_addr()?);
    let lt = loadtester.clone();
    let lt_app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let lt = lt.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1024 * 1024).await.unwrap_or_default();
            let (code, text) = lt.handle(None, parts.method.as_str(), parts.uri.path(), &body);
            (
                axum::http::StatusCode::from_u16(code)
                    .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
                text,
            )
        }
    });
    tasks.push(serve_until(lt_listener, lt_app, shutdown.clone()));

    // Register the loadtester in the namespaces whose Canaries call it (followed through the
    // API; the Canary CRD may be installed after the test bed starts).
    let canaries = kube::api::ApiResource {
        group: "flagger.app".into(),
        version: "v1beta1".into(),
        api_version: "flagger.app/v1beta1".into(),
        kind: "Canary".into(),
        plural: "canaries".into(),
    };
    let (found, mut register) = tokio::sync::mpsc::unbounded_channel::<String>();
    tasks.push(mesh::view::follow(client.clone(), canaries, move |event| {
        if let kube::runtime::watcher::Event::Apply(c) | kube::runtime::watcher::Event::InitApply(c) = event {
            let value = serde_json::to_value(&c).unwrap_or_default();
            for ns in loadtester_namespaces(&value) {
                let _ = found.send(ns);
            }
        }
    }));
    let registrar = client.clone();
    tasks.push(tokio::spawn(async move {
        let mut done = std::collections::BTreeSet::new();
        while let Some(ns) = register.recv().await {
            if done.contains(&ns) {
                continue;
            }
            match ensure_service(&registrar, &ns, "flagger-loadtester", 80).await {
                Ok(()) => {
                    done.insert(ns);
                }
                Err(err) => tracing::warn!(error = %err, "registering the loadtester failed"),
            }
        }
    }));
    Ok(MeshParts {
        plane,
        network,
        proxy_url: format!("http://{proxy_addr}"),
        loadtester_url,
        prometheus,
        tasks,
    })
}

fn serve_until(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.wait().await });
        if let Err(err) = serve.await {
            tracing::error!(error = %err, "test bed server failed");
        }
    })
}
