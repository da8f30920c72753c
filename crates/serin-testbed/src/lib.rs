//! serin's local test bed: a Kubernetes API emulator that real `kubectl`, kube-rs and Helm
//! accept, or a real control plane built from Kubernetes' Go modules (`cluster`), with the
//! simulated Istio data plane, Prometheus and the harness that tests, the demo and benchmarks
//! start.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let testbed = serin_testbed::Testbed::start().await?;
//! let client = testbed.client();
//! // ... use `client`, or run `kubectl --kubeconfig` with `testbed.kubeconfig()` ...
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod accounts;
pub mod apiserver;
pub mod cluster;
mod emulator;
pub mod harness;
pub use harness::install_crds;
pub mod istio;
pub mod loadtester;
pub mod mesh;
pub mod network;
pub mod process;
pub mod prometheus;
pub mod property;
mod simulated_mesh;
pub mod workloads;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use serin_runtime::shutdown::Shutdown;

pub use crate::cluster::ClusterKind;
use crate::{apiserver::store::Store, cluster::real::RealCluster};

/// What the resource of a dry-run request is counted with (`configmaps (dry run)`).
pub const DRY_RUN: &str = "(dry run)";

/// One row of `/testbed/requests`; a dry-run request's resource ends with [`DRY_RUN`].
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
    /// The API server: `None` takes `$SERIN_TESTBED_CLUSTER` (`emulator` when unset).
    pub cluster: Option<ClusterKind>,
    /// Port on 127.0.0.1; 0 picks a free one (the emulator's; a real cluster picks its own).
    pub port: u16,
    /// Where to write the kubeconfig; a temporary directory when `None`.
    pub kubeconfig: Option<PathBuf>,
    /// How long the emulator's simulated controllers take to report a workload's status.
    pub workload_delay: Duration,
    /// How many changes the emulator's event log keeps for watches to resume from.
    pub event_log: usize,
    /// Start the simulated Istio data plane, the cluster network proxy and the loadtester (and
    /// install Istio's networking CRDs).
    pub mesh: bool,
    /// Start a real Prometheus scraping the data plane (needs `mesh`).
    pub prometheus: bool,
    /// Append every authorization decision for identities other than the admin to a file in
    /// this directory (default: `$SERIN_TESTBED_AUDIT_DIR`, else none).
    pub audit_dir: Option<PathBuf>,
}

impl Default for TestbedOptions {
    fn default() -> Self {
        Self {
            cluster: None,
            port: 0,
            kubeconfig: None,
            workload_delay: Duration::from_millis(200),
            event_log: 10_000,
            mesh: false,
            prometheus: false,
            audit_dir: std::env::var_os(apiserver::rbac::AUDIT_DIR_ENV)
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
        }
    }
}

impl TestbedOptions {
    /// Everything: API server, data plane, network, loadtester and Prometheus.
    pub fn full() -> Self {
        Self {
            mesh: true,
            prometheus: true,
            ..Self::default()
        }
    }

    /// The API emulator, whatever `$SERIN_TESTBED_CLUSTER` says: for tests of the emulator
    /// itself and of its instruments (fault injection, closing watches).
    pub fn emulator() -> Self {
        Self {
            cluster: Some(ClusterKind::Emulator),
            ..Self::default()
        }
    }
}

/// The API server behind a test bed.
enum Backend {
    Emulator(Emulator),
    Real(Box<RealCluster>),
}

/// The in-process API emulator and its simulated controllers.
struct Emulator {
    store: Arc<Store>,
    token: String,
    server: tokio::task::JoinHandle<()>,
    workloads: tokio::task::JoinHandle<()>,
    token_controller: tokio::task::JoinHandle<()>,
}

/// A running test bed. Dropping it stops the server (and a real cluster's processes).
pub struct Testbed {
    base_url: String,
    kubeconfig: PathBuf,
    client: kube::Client,
    shutdown: Shutdown,
    backend: Backend,
    audit_dir: Option<PathBuf>,
    /// Where `requests()` starts reading a real cluster's audit log.
    audit_offset: std::sync::atomic::AtomicU64,
    mesh: Option<simulated_mesh::MeshParts>,
    _dir: Option<tempfile::TempDir>,
}

/// The emulator's kubeconfig for a server URL and bearer token, with its context selected.
pub fn kubeconfig_yaml(server: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: serin-testbed\n  cluster:\n    server: {server}\nusers:\n- name: admin\n  user:\n    token: \"{token}\"\ncontexts:\n- name: serin-testbed\n  context:\n    cluster: serin-testbed\n    user: admin\n    namespace: default\ncurrent-context: serin-testbed\npreferences: {{}}\n"
    )
}

/// The `kubectl` the tests run: the one built with the real cluster when it is built (its
/// version matches the server's), else the one on PATH.
pub fn kubectl_program() -> PathBuf {
    built_or_on_path(&cluster::components::KUBERNETES, "kubectl")
}

/// The `helm` the tests run: the one built from Helm's Go module when it is built, else the one
/// on PATH.
pub fn helm_program() -> PathBuf {
    built_or_on_path(&cluster::components::HELM, "helm")
}

fn built_or_on_path(component: &cluster::components::Component, name: &str) -> PathBuf {
    let built = cluster::build::binary(component, name);
    if built.is_file() {
        built
    } else {
        PathBuf::from(name)
    }
}

impl std::fmt::Debug for Testbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testbed")
            .field("base_url", &self.base_url)
            .field("kubeconfig", &self.kubeconfig)
            .field("cluster", &self.kind())
            .finish_non_exhaustive()
    }
}

async fn client_for(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig)?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

impl Testbed {
    /// Starts a test bed with default options.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(TestbedOptions::default()).await
    }

    /// Starts a test bed.
    pub async fn start_with(options: TestbedOptions) -> anyhow::Result<Self> {
        serin_runtime::tls::install_crypto_provider();
        let kind = match options.cluster {
            Some(kind) => kind,
            None => ClusterKind::from_env().map_err(anyhow::Error::msg)?,
        };
        let shutdown = Shutdown::new();
        let (dir, kubeconfig) = match &options.kubeconfig {
            Some(path) => (None, path.clone()),
            None => {
                let dir = tempfile::Builder::new().prefix("serin-testbed-").tempdir()?;
                let path = dir.path().join("kubeconfig");
                (Some(dir), path)
            }
        };
        if let Some(parent) = kubeconfig.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let (base_url, backend) = match kind {
            ClusterKind::Emulator => emulator::start_emulator(&options, &shutdown, &kubeconfig).await?,
            ClusterKind::Real => {
                let real = RealCluster::start().await?;
                cluster::report::record(&format!("kube-apiserver {}", real.version()));
                std::fs::copy(real.kubeconfig(), &kubeconfig)
                    .with_context(|| format!("cannot write the kubeconfig {}", kubeconfig.display()))?;
                (real.server().to_owned(), Backend::Real(Box::new(real)))
            }
        };
        let client = client_for(&kubeconfig).await?;
        let mut testbed = Self {
            base_url,
            kubeconfig,
            client,
            shutdown,
            backend,
            audit_dir: options.audit_dir.clone(),
            audit_offset: std::sync::atomic::AtomicU64::new(0),
            mesh: None,
            _dir: dir,
        };
        if options.mesh {
            testbed.mesh =
                Some(simulated_mesh::start(&testbed.client, &testbed.shutdown, options.prometheus).await?);
        }
        Ok(testbed)
    }

    /// Which API server this test bed runs.
    pub fn kind(&self) -> ClusterKind {
        match self.backend {
            Backend::Emulator(_) => ClusterKind::Emulator,
            Backend::Real(_) => ClusterKind::Real,
        }
    }

    /// A real cluster's API server version (`v1.36.3`), or the emulator's name.
    pub fn server_version(&self) -> String {
        match &self.backend {
            Backend::Emulator(_) => "serin-testbed API emulator".into(),
            Backend::Real(real) => format!("kube-apiserver {}", real.version()),
        }
    }

    /// The real cluster, when this test bed runs one (its logs, audit log and PKI).
    pub fn real_cluster(&self) -> Option<&RealCluster> {
        match &self.backend {
            Backend::Real(real) => Some(real),
            Backend::Emulator(_) => None,
        }
    }

    /// The cluster network proxy's URL, for `HTTP_PROXY` (with the mesh on).
    pub fn proxy_url(&self) -> Option<&str> {
        self.mesh.as_ref().map(|m| m.proxy_url.as_str())
    }

    /// The loadtester's own URL (it is also `http://flagger-loadtester.<ns>/` through the proxy).
    pub fn loadtester_url(&self) -> Option<&str> {
        self.mesh.as_ref().map(|m| m.loadtester_url.as_str())
    }

    /// The real Prometheus' URL (it is also `http://prometheus.istio-system:9090` through the proxy).
    pub fn prometheus_url(&self) -> Option<&str> {
        self.mesh
            .as_ref()
            .and_then(|m| m.prometheus.as_ref())
            .map(|p| p.url())
    }

    /// Makes Prometheus unreachable through the cluster network (`false`) or reachable again,
    /// as an outage of the in-cluster Prometheus looks to a controller.
    pub fn set_prometheus_reachable(&self, reachable: bool) {
        self.set_prometheus_fault(if reachable { 0 } else { 1 });
    }

    /// Makes Prometheus answer every query with a 500 error (`true`), or normally again.
    pub fn set_prometheus_failing(&self, failing: bool) {
        self.set_prometheus_fault(if failing { 2 } else { 0 });
    }

    fn set_prometheus_fault(&self, fault: u8) {
        if let Some(m) = &self.mesh {
            m.network
                .prometheus_fault
                .store(fault, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// The data plane, for tests that count simulated requests directly.
    pub fn data_plane(&self) -> Option<&Arc<mesh::dataplane::DataPlane>> {
        self.mesh.as_ref().map(|m| &m.plane)
    }

    /// Registers the loadtester as Service `flagger-loadtester` in `namespace` (done on its own
    /// for namespaces whose Canaries call it).
    pub async fn register_loadtester(&self, namespace: &str) -> anyhow::Result<()> {
        harness::ensure_service(&self.client, namespace, "flagger-loadtester", 80).await
    }

    /// The API server's URL (`http://127.0.0.1:PORT` for the emulator, `https://...` for a real
    /// cluster).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The kubeconfig file.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The emulator's admin bearer token (a real cluster's admin uses a client certificate).
    pub fn token(&self) -> Option<&str> {
        match &self.backend {
            Backend::Emulator(e) => Some(&e.token),
            Backend::Real(_) => None,
        }
    }

    /// A client authenticated as admin.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The emulator's object store, for tests that inspect it directly.
    pub fn store(&self) -> Option<&Arc<Store>> {
        match &self.backend {
            Backend::Emulator(e) => Some(&e.store),
            Backend::Real(_) => None,
        }
    }
    /// Creates CRDs (those that exist are left alone) and waits until the API server serves
    /// them: a real API server answers 404 for a new resource until its CRD is Established.
    pub async fn install_crds(
        &self,
        crds: impl IntoIterator<Item = k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>,
    ) -> anyhow::Result<()> {
        install_crds(&self.client, crds).await
    }

    /// A `kubectl` command pointed at this test bed.
    pub fn kubectl(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(kubectl_program());
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    fn emulator_only(&self, what: &str) -> anyhow::Result<()> {
        match self.backend {
            Backend::Emulator(_) => Ok(()),
            Backend::Real(_) => anyhow::bail!(
                "{what} is an instrument of the API emulator; this test bed runs a real cluster \
                 (start it with TestbedOptions::emulator())"
            ),
        }
    }

    async fn instrument(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        self.emulator_only(path)?;
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())?;
        let text = self.client.request_text(request).await?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Requests served since start (or the last reset): `(verb, resource, user agent) -> count`.
    /// A real cluster counts them from its audit log.
    pub async fn requests(&self) -> anyhow::Result<Vec<RequestCount>> {
        match &self.backend {
            Backend::Emulator(_) => {
                let value = self.instrument("GET", "/testbed/requests", None).await?;
                Ok(serde_json::from_value(value["requests"].clone())?)
            }
            Backend::Real(real) => {
                let offset = self.audit_offset.load(std::sync::atomic::Ordering::SeqCst);
                cluster::audit::request_counts(&real.audit_log(), offset)
            }
        }
    }

    /// Forgets the requests counted so far.
    pub async fn reset_requests(&self) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Emulator(_) => self
                .instrument("DELETE", "/testbed/requests", None)
                .await
                .map(|_| ()),
            Backend::Real(real) => {
                let len = std::fs::metadata(real.audit_log()).map(|m| m.len()).unwrap_or(0);
                self.audit_offset.store(len, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }
        }
    }

    /// Makes the next matching requests fail or wait (the emulator only).
    pub async fn inject_fault(&self, fault: &apiserver::server::Fault) -> anyhow::Result<()> {
        self.instrument("POST", "/testbed/faults", Some(serde_json::to_value(fault)?))
            .await
            .map(|_| ())
    }

    /// How many injected faults are still waiting for a matching request (the emulator only).
    pub async fn pending_faults(&self) -> anyhow::Result<usize> {
        let answer = self.instrument("GET", "/testbed/faults", None).await?;
        Ok(answer["faults"].as_array().map_or(0, Vec::len))
    }

    /// Ends every open watch stream, as an API server restart or a load balancer would (the
    /// emulator only).
    pub async fn close_watches(&self) -> anyhow::Result<()> {
        self.instrument("POST", "/testbed/watches/close", None)
            .await
            .map(|_| ())
    }

    /// Stops the server and waits until it has stopped.
    pub async fn stop(mut self) {
        self.stop_parts();
        if let Some(mut mesh) = self.mesh.take()
            && let Some(p) = mesh.prometheus.take()
        {
            p.stop().await;
        }
        if let Backend::Emulator(e) = &mut self.backend {
            let _ = (&mut e.server).await;
        }
    }

    fn stop_parts(&mut self) {
        self.shutdown.trigger();
        if let Backend::Emulator(e) = &self.backend {
            e.workloads.abort();
            e.token_controller.abort();
        }
        if let Some(mesh) = &self.mesh {
            mesh.plane.stop_loads();
            mesh.tasks.abort();
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.stop_parts();
        // A real cluster's authorization decisions join the emulator's in the audit directory,
        // so `serin-testbed rbac-audit` reads both.
        if let (Backend::Real(real), Some(dir)) = (&self.backend, &self.audit_dir)
            && let Err(err) = cluster::audit::export_decisions(&real.audit_log(), dir)
        {
            eprintln!(
                "serin-testbed: cannot export the audit log to {}: {err:#}",
                dir.display()
            );
        }
        // Prometheus is killed when its handle (in `mesh`) drops, a real cluster's processes
        // when it drops.
    }
}
