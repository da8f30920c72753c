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
pub mod istio;
pub mod loadtester;
pub mod mesh;
pub mod network;
pub mod prometheus;
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
    /// Everything: API emulator, data plane, network, loadtester and Prometheus.
    pub fn full() -> Self {
        Self {
            mesh: true,
            prometheus: true,
            ..Self::default()
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
    token_controller: tokio::task::JoinHandle<()>,
    mesh: Option<MeshParts>,
    _dir: Option<tempfile::TempDir>,
}

/// The running data plane, network and Prometheus.
struct MeshParts {
    plane: Arc<mesh::dataplane::DataPlane>,
    network: Arc<network::Network>,
    proxy_url: String,
    loadtester_url: String,
    prometheus: Option<prometheus::Prometheus>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
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
        install_bootstrap_rbac(&store)?;
        let audit = match &options.audit_dir {
            Some(dir) => Some(
                apiserver::rbac::Audit::open(dir, addr.port())
                    .with_context(|| format!("cannot open the audit log in {}", dir.display()))?,
            ),
            None => None,
        };
        let shutdown = Shutdown::new();
        let api = Arc::new(Server::new(store.clone(), token.clone(), addr.to_string()).with_audit(audit));
        let token_controller = spawn_token_controller(store.clone(), api.token_issuer());
        let app = apiserver::server::router(api);
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
        let mesh = if options.mesh {
            Some(start_mesh(&store, &shutdown, options.prometheus).await?)
        } else {
            None
        };
        Ok(Self {
            base_url,
            kubeconfig,
            token,
            store,
            client,
            shutdown,
            server,
            workloads,
            token_controller,
            mesh,
            _dir: dir,
        })
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
    pub fn register_loadtester(&self, namespace: &str) -> anyhow::Result<()> {
        ensure_service(&self.store, namespace, "flagger-loadtester", 80)
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

    /// Creates (or replaces) ClusterRole `role` with `rules_yaml` (a YAML list of PolicyRules,
    /// as a chart keeps them) and binds it cluster-wide to ServiceAccount `namespace/name`,
    /// which is created when missing.
    pub async fn bind_cluster_role(
        &self,
        role: &str,
        rules_yaml: &str,
        namespace: &str,
        service_account: &str,
    ) -> anyhow::Result<()> {
        use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
        let rules: Vec<PolicyRule> =
            serde_yaml::from_str(rules_yaml).with_context(|| format!("the rules of ClusterRole {role}"))?;
        self.ensure_service_account(namespace, service_account).await?;
        let params = kube::api::PatchParams::apply("serin-testbed").force();
        let roles: kube::Api<ClusterRole> = kube::Api::all(self.client.clone());
        let object = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": role}, "rules": rules,
        });
        roles
            .patch(role, &params, &kube::api::Patch::Apply(&object))
            .await
            .with_context(|| format!("applying ClusterRole {role}"))?;
        let bindings: kube::Api<ClusterRoleBinding> = kube::Api::all(self.client.clone());
        let binding = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
        });
        bindings
            .patch(role, &params, &kube::api::Patch::Apply(&binding))
            .await
            .with_context(|| format!("applying ClusterRoleBinding {role}"))?;
        Ok(())
    }

    async fn ensure_service_account(&self, namespace: &str, name: &str) -> anyhow::Result<()> {
        use k8s_openapi::api::core::v1::ServiceAccount;
        ensure_namespace(&self.store, namespace)?;
        let api: kube::Api<ServiceAccount> = kube::Api::namespaced(self.client.clone(), namespace);
        if api.get_opt(name).await?.is_none() {
            let sa = ServiceAccount {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_owned()),
                    ..Default::default()
                },
                ..Default::default()
            };
            match api.create(&kube::api::PostParams::default(), &sa).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("creating ServiceAccount {namespace}/{name}"));
                }
            }
        }
        Ok(())
    }

    /// A bound token for ServiceAccount `namespace/name` (created when missing) from the
    /// TokenRequest API, as `kubectl create token` gets one.
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> anyhow::Result<String> {
        self.ensure_service_account(namespace, name).await?;
        let request = http::Request::builder()
            .method("POST")
            .uri(format!(
                "/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"
            ))
            .header("content-type", "application/json")
            .body(
                serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 86_400}})
                    .to_string()
                    .into_bytes(),
            )?;
        let answer: serde_json::Value = serde_json::from_str(&self.client.request_text(request).await?)?;
        answer
            .pointer("/status/token")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .context("a TokenRequest answer without status.token")
    }

    /// Writes a kubeconfig that authenticates as ServiceAccount `namespace/name` (created when
    /// missing) next to the admin's, and returns its path.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> anyhow::Result<PathBuf> {
        let token = self.service_account_token(namespace, name).await?;
        let path = self
            .kubeconfig
            .with_file_name(format!("kubeconfig-{namespace}-{name}"));
        std::fs::write(&path, kubeconfig_yaml(&self.base_url, &token))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
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
        self.token_controller.abort();
        if let Some(mut mesh) = self.mesh.take() {
            mesh.plane.stop_loads();
            for t in mesh.tasks.drain(..) {
                t.abort();
            }
            if let Some(p) = mesh.prometheus.take() {
                p.stop().await;
            }
        }
        let _ = (&mut self.server).await;
    }
}

fn admin_options() -> apiserver::store::WriteOptions {
    apiserver::store::WriteOptions {
        manager: "serin-testbed".into(),
        ..Default::default()
    }
}

/// The bootstrap ClusterRoles and bindings every API server has that matter here:
/// `cluster-admin` for `system:masters`, and discovery, OpenAPI, version and health for every
/// authenticated identity.
fn install_bootstrap_rbac(store: &Store) -> anyhow::Result<()> {
    use serde_json::json;
    let registry = store.registry();
    let roles = registry
        .find("rbac.authorization.k8s.io", "v1", "clusterroles")
        .context("clusterroles are built in")?;
    let bindings = registry
        .find("rbac.authorization.k8s.io", "v1", "clusterrolebindings")
        .context("clusterrolebindings are built in")?;
    let meta = |name: &str| json!({"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}, "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}});
    let group = |name: &str| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": name});
    let defaults = [
        (
            "cluster-admin",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
            vec![group("system:masters")],
        ),
        (
            "system:discovery",
            json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
            vec![group("system:authenticated")],
        ),
        (
            "system:basic-user",
            json!([{"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]}, {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]}]),
            vec![group("system:authenticated")],
        ),
        (
            "system:public-info-viewer",
            json!([{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
            vec![group("system:authenticated"), group("system:unauthenticated")],
        ),
    ];
    for (name, rules, subjects) in defaults {
        let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta(name), "rules": rules});
        let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": meta(name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}, "subjects": subjects});
        for (res, object) in [(roles, role), (bindings, binding)] {
            match store.create(res, None, object, &admin_options()) {
                Ok(_) => {}
                Err(e) if e.code == 409 => {}
                Err(e) => anyhow::bail!("installing the bootstrap {name}: {e}"),
            }
        }
    }
    Ok(())
}

/// The token controller of kube-controller-manager: a `kubernetes.io/service-account-token`
/// Secret naming an existing ServiceAccount (annotation `kubernetes.io/service-account.name`) gets
/// a legacy token, the namespace and `ca.crt` (empty: the emulator serves plain http).
fn spawn_token_controller(
    store: Arc<Store>,
    issuer: Arc<apiserver::rbac::TokenIssuer>,
) -> tokio::task::JoinHandle<()> {
    use apiserver::store::EventType;
    let mut events = store.subscribe();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) if e.type_ != EventType::Deleted && e.key.group.is_empty() => {
                    match e.key.plural.as_str() {
                        "secrets" => fill_token(&store, &issuer, &e.object),
                        // A Secret created before its ServiceAccount is filled when it appears.
                        "serviceaccounts" if e.type_ == EventType::Added => {
                            let registry = store.registry();
                            if let Some(res) = registry.find("", "v1", "secrets") {
                                let (secrets, ..) = store.list(
                                    res,
                                    &apiserver::store::ListQuery {
                                        namespace: Some(e.key.namespace.clone()),
                                        ..Default::default()
                                    },
                                );
                                for secret in &secrets {
                                    fill_token(&store, &issuer, secret);
                                }
                            }
                        }
                        _ => {}
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    })
}

fn fill_token(store: &Store, issuer: &apiserver::rbac::TokenIssuer, secret: &serde_json::Value) {
    use base64::Engine;
    use serde_json::{Value, json};
    let at = |p: &str| {
        secret
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    if at("/type") != apiserver::rbac::SERVICE_ACCOUNT_TOKEN_TYPE || !at("/data/token").is_empty() {
        return;
    }
    let (namespace, name) = (at("/metadata/namespace"), at("/metadata/name"));
    let account = at("/metadata/annotations/kubernetes.io~1service-account.name");
    let registry = store.registry();
    let (Some(accounts), Some(secrets)) = (
        registry.find("", "v1", "serviceaccounts"),
        registry.find("", "v1", "secrets"),
    ) else {
        return;
    };
    let Ok(sa) = store.get(accounts, Some(&namespace), &account) else {
        return;
    };
    let uid = sa
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let token = issuer.issue_legacy(&apiserver::rbac::LegacyTokenClaims {
        namespace: namespace.clone(),
        service_account: account,
        uid: uid.clone(),
        secret: name.clone(),
    });
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let patch = json!({
        "metadata": {"annotations": {"kubernetes.io/service-account.uid": uid}},
        "data": {"token": b64(&token), "namespace": b64(&namespace), "ca.crt": ""},
    });
    let options = apiserver::store::WriteOptions {
        manager: "kube-controller-manager".into(),
        ..Default::default()
    };
    if let Err(err) = store.patch(
        secrets,
        Some(&namespace),
        &name,
        apiserver::store::PatchKind::Merge,
        &patch,
        apiserver::store::Subresource::Main,
        &options,
    ) {
        tracing::warn!(error = %err, secret = %name, "filling a ServiceAccount token Secret failed");
    }
}

/// Creates a namespace if it does not exist.
fn ensure_namespace(store: &Store, name: &str) -> anyhow::Result<()> {
    let registry = store.registry();
    let res = registry
        .find("", "v1", "namespaces")
        .context("namespaces are built in")?;
    match store.create(
        res,
        None,
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        &admin_options(),
    ) {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(anyhow::anyhow!("creating namespace {name}: {e}")),
    }
}

/// Creates a selector-less Service (served by the test bed itself) if it does not exist.
fn ensure_service(store: &Store, namespace: &str, name: &str, port: u16) -> anyhow::Result<()> {
    ensure_namespace(store, namespace)?;
    let registry = store.registry();
    let res = registry
        .find("", "v1", "services")
        .context("services are built in")?;
    let svc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "serin-testbed"}},
        "spec": {"ports": [{"name": "http", "port": port, "targetPort": port}]}
    });
    match store.create(res, Some(namespace), svc, &admin_options()) {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(anyhow::anyhow!("creating Service {namespace}/{name}: {e}")),
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

async fn start_mesh(
    store: &Arc<Store>,
    shutdown: &Shutdown,
    with_prometheus: bool,
) -> anyhow::Result<MeshParts> {
    let registry = store.registry();
    let crd_res = registry
        .find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .context("CRDs are built in")?;
    for crd in istio::crds() {
        match store.create(crd_res, None, crd, &admin_options()) {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => anyhow::bail!("installing the Istio CRDs: {e}"),
        }
    }
    let (plane, plane_task) = mesh::dataplane::DataPlane::spawn(store.clone());
    let loadtester = Arc::new(loadtester::Loadtester::new(plane.clone()));

    let proxy_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the cluster network proxy")?;
    let proxy_addr = proxy_listener.local_addr()?;
    let prometheus = if with_prometheus {
        let p = prometheus::Prometheus::start(proxy_addr).await?;
        ensure_service(store, "istio-system", "prometheus", 9090)?;
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
    let mut tasks = vec![plane_task];
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

    // Register the loadtester in the namespaces whose Canaries call it.
    let mut events = store.subscribe();
    let registrar_store = store.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) if e.key.group == "flagger.app" && e.key.plural == "canaries" => {
                    for ns in loadtester_namespaces(&e.object) {
                        if let Err(err) = ensure_service(&registrar_store, &ns, "flagger-loadtester", 80) {
                            tracing::warn!(error = %err, "registering the loadtester failed");
                        }
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
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

impl Drop for Testbed {
    fn drop(&mut self) {
        self.shutdown.trigger();
        self.workloads.abort();
        self.token_controller.abort();
        if let Some(mesh) = &self.mesh {
            mesh.plane.stop_loads();
            for t in &mesh.tasks {
                t.abort();
            }
        }
        // Prometheus is killed when its handle (in `mesh`) drops.
    }
}
