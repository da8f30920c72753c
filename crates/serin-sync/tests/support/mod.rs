//! Helpers of serin-sync's test-bed tests: a local Git repository made from `examples/gitops`,
//! the controllers running in-process against the test bed, and waits with deadlines.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

use kube::{Api, Client};
use serin_sync::{
    api::{GitRepository, Kustomization},
    controller::{self, metrics::ObjectLabels},
};
use serin_testbed::Testbed;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs git in `dir`, panicking with its output on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A bare repository holding `examples/gitops` on branch `main`, and a work tree to commit to.
#[derive(Debug)]
pub struct GitFixture {
    pub dir: tempfile::TempDir,
}

impl GitFixture {
    pub fn from_examples() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).expect("mkdir");
        serin_sync::build::copy_dir(&repo_root().join("examples/gitops"), &work).expect("copy examples");
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "Initial cluster state"]);
        git(dir.path(), &["clone", "-q", "--bare", "work", "repo.git"]);
        git(
            &work,
            &[
                "remote",
                "add",
                "origin",
                dir.path().join("repo.git").to_str().expect("utf-8"),
            ],
        );
        Self { dir }
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.dir.path().join("repo.git").display())
    }

    /// The commit `main` points at.
    pub fn head(&self) -> String {
        git(&self.work(), &["rev-parse", "HEAD"])
    }

    /// Writes (or with `None` removes) a file, commits and pushes; returns the new commit.
    pub fn commit(&self, changes: &[(&str, Option<&str>)], message: &str) -> String {
        for (path, content) in changes {
            let full = self.work().join(path);
            match content {
                Some(c) => {
                    std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
                    std::fs::write(&full, c).expect("write");
                }
                None => std::fs::remove_file(&full).expect("remove"),
            }
        }
        git(&self.work(), &["add", "-A"]);
        git(&self.work(), &["commit", "-q", "-m", message]);
        git(&self.work(), &["push", "-q", "origin", "main"]);
        self.head()
    }
}

/// Installs serin-sync's CRDs and serin's (from `crds/`), and waits until the API server serves
/// them: a Kustomization applying a Canary before its CRD is Established fails until its next
/// interval.
pub async fn install_crds(tb: &Testbed) {
    let mut crds = serin_sync::api::crds();
    for entry in std::fs::read_dir(repo_root().join("crds")).expect("crds/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).expect("read");
            crds.push(serde_yaml::from_str(&text).expect("serin's CRD"));
        }
    }
    tb.install_crds(crds).await.expect("CRDs");
}

pub use serin_testbed::harness::{create_namespace, eventually};

/// Runs serin-sync's controllers in-process with short test intervals until dropped.
#[derive(Debug)]
pub struct Controllers {
    pub storage: tempfile::TempDir,
    /// The controllers' metrics, registered in `registry`: each finished reconcile is counted,
    /// which lets a test know that a reconcile happened even when it changed nothing it can see.
    pub metrics: controller::metrics::Metrics,
    registry: prometheus_client::registry::Registry,
    task: tokio::task::JoinHandle<()>,
    /// Where the Receivers' webhooks are served (`http://127.0.0.1:<port>`).
    pub receiver_url: String,
}

impl Controllers {
    /// How many reconciles of `kind` `flux-system/name` have finished.
    pub fn reconciles(&self, kind: &str, name: &str) -> u64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("metrics encode");
        let series = format!(
            "gotk_reconcile_duration_seconds_count{{kind=\"{kind}\",name=\"{name}\",namespace=\"flux-system\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |n| n.parse().expect("a count"))
    }

    /// The suspend gauge of `kind` `flux-system/name`, as its last finished reconcile saw it.
    pub fn suspended(&self, kind: &str, name: &str) -> bool {
        self.metrics
            .suspend_status
            .get_or_create(&ObjectLabels::new(kind, name, "flux-system"))
            .get()
            == 1
    }
}

impl Drop for Controllers {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn start_controllers(tb: &Testbed) -> Controllers {
    start_controllers_with(tb, None)
}

/// Like `start_controllers`, with the client configuration that impersonation starts from.
pub fn start_controllers_with(tb: &Testbed, kube_config: Option<kube::Config>) -> Controllers {
    let storage = tempfile::tempdir().expect("tempdir");
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = controller::metrics::Metrics::register(&mut registry);
    // A free port for the webhook server (reserved by binding, then handed over).
    let receiver_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let ctx = Arc::new(controller::Context {
        client: tb.client(),
        kube_config,
        config: controller::Config {
            storage_dir: storage.path().to_path_buf(),
            requeue_dependency: Duration::from_millis(500),
            stage_timeout: Duration::from_secs(20),
            poll_interval: Duration::from_millis(200),
            health_interval: Duration::from_millis(300),
            retry_cap: Duration::from_secs(2),
            namespace: None,
            concurrency: 4,
            test_hooks: true,
            helm: serin_sync::helm::Helm {
                program: serin_testbed::helm_program(),
                kubeconfig: Some(tb.kubeconfig().to_path_buf()),
            },
            post_renderer: Some(env!("CARGO_BIN_EXE_serin-sync").into()),
            receiver_addr: Some(receiver_addr),
        },
        metrics: metrics.clone(),
        backoffs: Default::default(),
    });
    let task = tokio::spawn(controller::run(ctx, || {}, futures::future::pending()));
    Controllers {
        storage,
        metrics,
        registry,
        task,
        receiver_url: format!("http://{receiver_addr}"),
    }
}

/// Applies YAML with kubectl (server-side, as a user would with `kubectl apply`).
pub fn kubectl_apply(tb: &Testbed, yaml: &str) {
    use std::io::Write;
    let mut child = tb
        .kubectl()
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("kubectl ends");
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The bootstrap objects: GitRepository `flux-system` and Kustomization `flux-system`.
pub fn bootstrap_yaml(url: &str, path: &str, interval: &str) -> String {
    format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: flux-system\n  namespace: flux-system\nspec:\n  interval: {interval}\n  timeout: 20s\n  ref:\n    branch: main\n  url: {url}\n---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: flux-system\n  namespace: flux-system\nspec:\n  interval: 10m\n  path: {path}\n  prune: true\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n"
    )
}

/// The GitRepository `flux-system` alone, polling `main` every `interval`.
pub fn git_repository_yaml(url: &str, interval: &str) -> String {
    format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: flux-system\n  namespace: flux-system\nspec:\n  interval: {interval}\n  timeout: 20s\n  ref:\n    branch: main\n  url: {url}\n"
    )
}

/// Waits until the GitRepository `flux-system` has stored an artifact of `revision`.
pub async fn wait_artifact(client: &Client, revision: &str) -> GitRepository {
    eventually(
        Duration::from_secs(60),
        &format!("an artifact of {revision}"),
        || async move {
            let repo = source(client).await?;
            let stored = repo.status.as_ref()?.artifact.as_ref()?.revision == revision;
            stored.then_some(repo)
        },
    )
    .await
}

/// A Kustomization's Ready condition: `(status, reason, message)`.
pub async fn ready(client: &Client, name: &str) -> Option<(String, String, String)> {
    let api: Api<Kustomization> = Api::namespaced(client.clone(), "flux-system");
    let ks = api.get_opt(name).await.ok()??;
    let c = ks.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
    Some((c.status, c.reason, c.message))
}

/// Waits until a Kustomization is Ready=True at `revision`; on timeout the panic shows its last
/// Ready condition.
pub async fn wait_applied(client: &Client, name: &str, revision: &str, deadline: Duration) -> Kustomization {
    let api: Api<Kustomization> = Api::namespaced(client.clone(), "flux-system");
    let start = tokio::time::Instant::now();
    loop {
        let ks = api.get_opt(name).await.ok().flatten();
        let st = ks.as_ref().and_then(|k| k.status.clone());
        if let (Some(ks), Some(st)) = (&ks, &st) {
            let ready = st
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if ready && st.last_applied_revision.as_deref() == Some(revision) {
                return ks.clone();
            }
        }
        if start.elapsed() > deadline {
            let last = st.and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"));
            panic!(
                "timed out after {deadline:?} waiting for Kustomization {name} applied at {revision}; Ready: {last:?}\n{}",
                sync_state(client).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every GitRepository and Kustomization of `flux-system` with its generation and status, for
/// the message of a test that timed out.
pub async fn sync_state(client: &Client) -> String {
    let mut text = String::new();
    let repos: Api<GitRepository> = Api::namespaced(client.clone(), "flux-system");
    for r in repos
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        text.push_str(&format!(
            "GitRepository {} generation {:?}: {}\n",
            r.metadata.name.as_deref().unwrap_or_default(),
            r.metadata.generation,
            serde_json::to_string(&r.status).unwrap_or_default()
        ));
    }
    let kss: Api<Kustomization> = Api::namespaced(client.clone(), "flux-system");
    for k in kss
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        text.push_str(&format!(
            "Kustomization {} generation {:?}: {}\n",
            k.metadata.name.as_deref().unwrap_or_default(),
            k.metadata.generation,
            serde_json::to_string(&k.status).unwrap_or_default()
        ));
    }
    text
}

/// Marks the Canary as serin does once it has initialized it (serin itself does not run here).
pub async fn mark_canary(client: &Client, ns: &str, name: &str, phase: &str) {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
    let gvk = GroupVersionKind::gvk("flagger.app", "v1beta1", "Canary");
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, "canaries"),
    );
    let body = serde_json::json!({"status": {"phase": phase}});
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .is_ok()
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after 60s waiting for Canary {ns}/{name} to exist\n{}",
            sync_state(client).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The GitRepository `flux-system`.
pub async fn source(client: &Client) -> Option<GitRepository> {
    let api: Api<GitRepository> = Api::namespaced(client.clone(), "flux-system");
    api.get_opt("flux-system").await.ok()?
}

/// Asks for an immediate reconcile (as `flux reconcile` does) and waits until it was handled;
/// returns the Kustomization as it was then.
pub async fn request_reconcile(client: &Client, name: &str) -> Kustomization {
    use kube::api::{Patch, PatchParams};
    let api: Api<Kustomization> = Api::namespaced(client.clone(), "flux-system");
    let token = jiff::Timestamp::now().to_string();
    let body = serde_json::json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": token}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .expect("annotated");
    eventually(
        Duration::from_secs(60),
        &format!("Kustomization {name} to handle {token}"),
        || {
            let (api, token) = (api.clone(), token.clone());
            async move {
                let ks = api.get_opt(name).await.ok()??;
                let st = ks.status.clone()?;
                let handled = st.last_handled_reconcile_at.as_deref() == Some(token.as_str());
                // As with Flux, the request is handled with the run's final status only.
                let running = st.conditions.iter().any(|c| {
                    (c.type_ == "Reconciling" && c.reason == "Progressing")
                        || (c.type_ == "Ready" && c.status == "Unknown")
                });
                assert!(
                    !(handled && running),
                    "Kustomization {name} shows the request {token} handled while it still runs: {:?}",
                    st.conditions
                );
                handled.then_some(ks)
            }
        },
    )
    .await
}

/// Asks the GitRepository `flux-system` for an immediate reconcile (as `flux reconcile source
/// git` does) and waits until it was handled: a new commit is fetched at once, not at the next
/// interval.
pub async fn request_source_reconcile(client: &Client) -> GitRepository {
    use kube::api::{Patch, PatchParams};
    let api: Api<GitRepository> = Api::namespaced(client.clone(), "flux-system");
    let token = jiff::Timestamp::now().to_string();
    let body = serde_json::json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": token}}});
    api.patch("flux-system", &PatchParams::default(), &Patch::Merge(&body))
        .await
        .expect("annotated");
    eventually(
        Duration::from_secs(60),
        &format!("GitRepository to handle {token}"),
        || {
            let (api, token) = (api.clone(), token.clone());
            async move {
                let repo = api.get_opt("flux-system").await.ok()??;
                let handled =
                    repo.status.as_ref()?.last_handled_reconcile_at.as_deref() == Some(token.as_str());
                handled.then_some(repo)
            }
        },
    )
    .await
}

/// Waits until a Kustomization's Ready condition is False with `reason`; returns its message.
pub async fn wait_failed(client: &Client, name: &str, reason: &str) -> String {
    eventually(
        Duration::from_secs(60),
        &format!("Kustomization {name} Ready=False {reason}"),
        || async move {
            let (status, r, message) = ready(client, name).await?;
            (status == "False" && r == reason).then_some(message)
        },
    )
    .await
}

/// Runs kubectl, panicking on failure; returns stdout.
pub fn kubectl(tb: &Testbed, args: &[&str]) -> String {
    let out = tb.kubectl().args(args).output().expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the serin-sync program against the test bed.
pub async fn cli(tb: &Testbed, args: &[&str]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_serin-sync"));
    cmd.args(args)
        .arg("--kubeconfig")
        .arg(tb.kubeconfig())
        .env_remove("KUBECONFIG");
    cmd.output().await.expect("serin-sync runs")
}

/// Runs the helm program of the test bed; its standard output.
pub fn helm(args: &[&str]) -> String {
    let out = Command::new(serin_testbed::helm_program())
        .args(args)
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Packages the chart in `chart` (as `version`, else its own) into the chart repository `repo`
/// and indexes the repository for `url`, with the real helm program.
pub fn publish_chart(chart: &Path, repo: &Path, url: &str, version: Option<&str>) {
    let mut args = vec![
        "package",
        chart.to_str().expect("utf8"),
        "--destination",
        repo.to_str().expect("utf8"),
    ];
    if let Some(v) = version {
        args.extend(["--version", v]);
    }
    helm(&args);
    helm(&["repo", "index", repo.to_str().expect("utf8"), "--url", url]);
}

/// Serves the files under `root` over http: the URL and the server's task.
pub async fn serve_dir(root: PathBuf) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://127.0.0.1:{}", listener.local_addr().expect("addr").port());
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let root = root.clone();
        async move {
            match std::fs::read(root.join(uri.path().trim_start_matches('/'))) {
                Ok(bytes) => (axum::http::StatusCode::OK, bytes),
                Err(_) => (axum::http::StatusCode::NOT_FOUND, Vec::new()),
            }
        }
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

/// A Slack-compatible webhook that keeps what it is sent.
pub async fn slack_sink() -> (
    String,
    Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    tokio::task::JoinHandle<()>,
) {
    let received: Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Arc::default();
    let keep = received.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "http://127.0.0.1:{}/services/T0/B0/secret",
        listener.local_addr().expect("addr").port()
    );
    let app = axum::Router::new().route(
        "/services/T0/B0/secret",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let keep = keep.clone();
            async move {
                keep.lock().expect("lock").push(body);
                "ok"
            }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, received, task)
}

pub fn attachment_by(
    received: &std::sync::Mutex<Vec<serde_json::Value>>,
    author: &str,
) -> Option<serde_json::Value> {
    received
        .lock()
        .expect("lock")
        .iter()
        .find(|m| m["attachments"][0]["author_name"] == author)
        .cloned()
}
