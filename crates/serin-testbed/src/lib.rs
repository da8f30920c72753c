//! serin's local test bed: a Kubernetes API emulator that real `kubectl`, kube-rs and Helm
//! accept, with workload simulation, and the harness that tests, the demo and benchmarks start.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let testbed = serin_testbed::Testbed::start().await?;
//! let client = testbed.client();
//! // ... use `client`, or run `kubectl --kubeconfig` with `testbed.kubeconfig()` ...
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod apiserver;
pub mod workloads;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use serin_runtime::shutdown::Shutdown;

use crate::apiserver::{server::Server, store::Store};

/// One row of `/testbed/requests`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestCount {
    pub verb: String,
    pub resource: String,
    pub user_agent: String,
    pub count: u64,
}

/// How a test bed starts.
#[derive(Clone, Debug)]
pub struct TestbedOptions {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Where to write the kubeconfig; a temporary directory when `None`.
    pub kubeconfig: Option<PathBuf>,
    /// How long simulated controllers take to report a workload's status.
    pub workload_delay: Duration,
    /// How many changes the event log keeps for watches to resume from.
    pub event_log: usize,
}

impl Default for TestbedOptions {
    fn default() -> Self {
        Self {
            port: 0,
            kubeconfig: None,
            workload_delay: Duration::from_millis(200),
            event_log: 10_000,
        }
    }
}

/// A running test bed. Dropping it stops the server.
pub struct Testbed {
    base_url: String,
    kubeconfig: PathBuf,
    token: String,
    store: Arc<Store>,
    client: kube::Client,
    shutdown: Shutdown,
    server: tokio::task::JoinHandle<()>,
    workloads: tokio::task::JoinHandle<()>,
    _dir: Option<tempfile::TempDir>,
}

/// The kubeconfig for a server URL and bearer token, with its context selected.
pub fn kubeconfig_yaml(server: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: serin-testbed\n  cluster:\n    server: {server}\nusers:\n- name: admin\n  user:\n    token: \"{token}\"\ncontexts:\n- name: serin-testbed\n  context:\n    cluster: serin-testbed\n    user: admin\n    namespace: default\ncurrent-context: serin-testbed\npreferences: {{}}\n"
    )
}

impl std::fmt::Debug for Testbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testbed")
            .field("base_url", &self.base_url)
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl Testbed {
    /// Starts a test bed with default options.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(TestbedOptions::default()).await
    }

    /// Starts a test bed.
    pub async fn start_with(options: TestbedOptions) -> anyhow::Result<Self> {
        serin_runtime::tls::install_crypto_provider();
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], options.port)))
            .await
            .with_context(|| format!("cannot listen on 127.0.0.1:{}", options.port))?;
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        let token: String = (0..32)
            .map(|_| format!("{:x}", rand::random_range(0..16u8)))
            .collect();
        let store = Arc::new(Store::new(options.event_log));
        let shutdown = Shutdown::new();
        let app = apiserver::server::router(Arc::new(Server::new(
            store.clone(),
            token.clone(),
            addr.to_string(),
        )));
        let server = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let serve =
                    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.wait().await });
                if let Err(err) = serve.await {
                    tracing::error!(error = %err, "test bed API server failed");
                }
            })
        };
        let workloads = workloads::spawn(store.clone(), options.workload_delay);
        let (dir, kubeconfig) = match options.kubeconfig {
            Some(path) => (None, path),
            None => {
                let dir = tempfile::Builder::new().prefix("serin-testbed-").tempdir()?;
                let path = dir.path().join("kubeconfig");
                (Some(dir), path)
            }
        };
        if let Some(parent) = kubeconfig.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&kubeconfig, kubeconfig_yaml(&base_url, &token))
            .with_context(|| format!("cannot write the kubeconfig {}", kubeconfig.display()))?;
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig)?,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        let client = kube::Client::try_from(config)?;
        Ok(Self {
            base_url,
            kubeconfig,
            token,
            store,
            client,
            shutdown,
            server,
            workloads,
            _dir: dir,
        })
    }

    /// The API server's URL (`http://127.0.0.1:PORT`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The kubeconfig file.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The admin bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A client authenticated as admin.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The object store, for tests that inspect it directly.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// A `kubectl` command pointed at this test bed.
    pub fn kubectl(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    async fn instrument(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())?;
        let text = self.client.request_text(request).await?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Requests served since start (or the last reset): `(verb, resource, user agent) -> count`.
    pub async fn requests(&self) -> anyhow::Result<Vec<RequestCount>> {
        let value = self.instrument("GET", "/testbed/requests", None).await?;
        Ok(serde_json::from_value(value["requests"].clone())?)
    }

    /// Forgets the requests counted so far.
    pub async fn reset_requests(&self) -> anyhow::Result<()> {
        self.instrument("DELETE", "/testbed/requests", None)
            .await
            .map(|_| ())
    }

    /// Makes the next matching requests fail or wait.
    pub async fn inject_fault(&self, fault: &apiserver::server::Fault) -> anyhow::Result<()> {
        self.instrument("POST", "/testbed/faults", Some(serde_json::to_value(fault)?))
            .await
            .map(|_| ())
    }

    /// Ends every open watch stream, as an API server restart or a load balancer would.
    pub async fn close_watches(&self) -> anyhow::Result<()> {
        self.instrument("POST", "/testbed/watches/close", None)
            .await
            .map(|_| ())
    }

    /// Stops the server and waits until it has stopped.
    pub async fn stop(mut self) {
        self.shutdown.trigger();
        self.workloads.abort();
        let _ = (&mut self.server).await;
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.shutdown.trigger();
        self.workloads.abort();
    }
}
