//! The end-to-end harness: a full test bed (API emulator, data plane, real Prometheus,
//! loadtester), serin's CRDs, the project's `examples/canary/` applied with real kubectl, and the
//! `serin run` binary reaching in-cluster URLs through the test bed's proxy.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use serin::api::{Canary, CanaryPhase};
use serin_testbed::{Testbed, TestbedOptions};

pub const NS: &str = "test";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// A running scenario: test bed, applied example and the controller.
pub struct Scenario {
    pub tb: Testbed,
    pub client: Client,
    /// Running `serin run` processes by replica name (one unless a test runs standbys).
    replicas: Vec<(String, Child)>,
    started: usize,
    log: PathBuf,
    /// serin's kubeconfig: the chart's ServiceAccount under the chart's ClusterRoles.
    serin_kubeconfig: PathBuf,
}

impl Drop for Scenario {
    fn drop(&mut self) {
        self.kill_serin();
    }
}

impl Scenario {
    /// Starts the test bed and applies the CRDs and the namespace.
    pub async fn start() -> Self {
        Self::start_with(TestbedOptions::full()).await
    }

    /// [`Scenario::start`] on a test bed started with `options`.
    pub async fn start_with(options: TestbedOptions) -> Self {
        let tb = Testbed::start_with(options)
            .await
            .expect("test bed with Prometheus (apt-get install -y prometheus)");
        let client = tb.client();
        tb.install_crds(serin::api::crds()).await.expect("CRDs");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(NS.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("namespace");
        // serin runs as the Helm chart's ServiceAccount under the chart's ClusterRoles, with RBAC
        // enforced; `make test` compares what it requested with those rules afterwards.
        let rbac = repo().join("charts/serin/files/rbac");
        for (role, file) in [("serin", "controller.yaml"), ("serin-crds", "crds.yaml")] {
            let rules = std::fs::read_to_string(rbac.join(file)).expect("the chart's RBAC rules");
            tb.bind_cluster_role(role, &rules, "istio-system", "serin")
                .await
                .expect("the chart's ClusterRole");
        }
        let serin_kubeconfig = tb
            .service_account_kubeconfig("istio-system", "serin")
            .await
            .expect("a token of serin's ServiceAccount");
        let log =
            std::env::temp_dir().join(format!("serin-e2e-{}-{}.log", std::process::id(), rand_suffix()));
        Self {
            tb,
            client,
            replicas: Vec::new(),
            started: 0,
            log,
            serin_kubeconfig,
        }
    }

    /// Runs real kubectl against the test bed.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let output = self.tb.kubectl().args(args).output().expect("kubectl runs");
        assert!(
            output.status.success(),
            "kubectl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `kubectl serin ARGS` through real kubectl's plugin mechanism: kubectl finds
    /// `kubectl-serin` on PATH and runs it with the test bed's kubeconfig.
    pub fn kubectl_serin(&self, args: &[&str]) -> String {
        let output = self.kubectl_serin_command(args).output().expect("kubectl runs");
        assert!(
            output.status.success(),
            "kubectl serin {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The command of `kubectl serin ARGS`, to spawn (`--watch`).
    pub fn kubectl_serin_command(&self, args: &[&str]) -> std::process::Command {
        let plugin = Path::new(env!("CARGO_BIN_EXE_kubectl-serin"));
        let path = std::env::join_paths(
            std::iter::once(plugin.parent().expect("bin dir").to_path_buf()).chain(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            )),
        )
        .expect("PATH");
        let mut command = std::process::Command::new(serin_testbed::kubectl_program());
        command
            .arg("serin")
            .args(args)
            .env("KUBECONFIG", self.tb.kubeconfig())
            .env("PATH", path);
        command
    }

    /// Applies a directory or file into the test namespace.
    pub fn apply(&self, path: &Path) {
        self.kubectl(&["-n", NS, "apply", "-f", path.to_str().expect("utf8")]);
    }

    /// `serin ARGS` (another subcommand than `run`) as the test runs it: with the cluster's
    /// network (the proxy) and the test bed's kubeconfig.
    pub fn serin_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_serin"));
        command
            .args(args)
            .env("KUBECONFIG", self.tb.kubeconfig())
            .env("HTTP_PROXY", self.tb.proxy_url().expect("proxy"))
            .env("http_proxy", self.tb.proxy_url().expect("proxy"))
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost");
        command
    }

    /// Starts `serin run`.
    pub fn start_serin(&mut self) {
        self.start_serin_with(&[]);
    }

    /// Starts `serin run` with more flags; returns the replica's name (its `POD_NAME`).
    pub fn start_serin_with(&mut self, flags: &[&str]) -> String {
        // Appended: the log of every run of the controller stays.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        self.started += 1;
        let name = format!("serin-{}", self.started);
        let child = Command::new(env!("CARGO_BIN_EXE_serin"))
            .args([
                "run",
                "--admin-addr",
                "127.0.0.1:0",
                "--metrics-server",
                "http://prometheus.istio-system:9090",
                "--include-label-prefix",
                "app.kubernetes.io",
            ])
            .args(flags)
            .env("KUBECONFIG", &self.serin_kubeconfig)
            .env("HTTP_PROXY", self.tb.proxy_url().expect("proxy"))
            .env("http_proxy", self.tb.proxy_url().expect("proxy"))
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            // `SERIN_E2E_LOG` sets serin's log filter (default `info,kube=warn`).
            .env(
                "RUST_LOG",
                std::env::var("SERIN_E2E_LOG").unwrap_or_else(|_| "info,kube=warn".to_owned()),
            )
            .env(serin::controller::TEST_HOOKS_ENV, "1")
            .env("POD_NAME", &name)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("serin starts");
        self.replicas.push((name.clone(), child));
        name
    }

    /// Stops every `serin run` (as a crash would: SIGKILL).
    pub fn kill_serin(&mut self) {
        for (_, mut child) in self.replicas.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops one replica (SIGKILL); whether it was running.
    pub fn kill_replica(&mut self, name: &str) -> bool {
        let Some(i) = self.replicas.iter().position(|(n, _)| n == name) else {
            return false;
        };
        let (_, mut child) = self.replicas.remove(i);
        let _ = child.kill();
        let _ = child.wait();
        true
    }

    /// The names of the running replicas.
    pub fn replicas(&self) -> Vec<String> {
        self.replicas.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The controller's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn canaries(&self) -> Api<Canary> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// Waits until the Canary satisfies `pred`, returning it; fails with the controller's log.
    pub async fn wait_canary(
        &self,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&Canary) -> bool,
    ) -> Canary {
        let start = Instant::now();
        loop {
            if let Ok(Some(c)) = self.canaries().get_opt("podinfo").await
                && pred(&c)
            {
                return c;
            }
            if start.elapsed() > deadline {
                let c = self.canaries().get_opt("podinfo").await.ok().flatten();
                panic!(
                    "timed out after {deadline:?} waiting for {what}; canary status: {:?}\n--- serin log (tail) ---\n{}",
                    c.and_then(|c| c.status),
                    tail(&self.log(), 60)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Events recorded on the Canary, oldest first (by last occurrence), each message as many
    /// times as its Event's count says it happened.
    pub fn events(&self) -> Vec<String> {
        let out = self.kubectl(&["-n", NS, "get", "events", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        let mut items: Vec<(String, String, usize)> = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["involvedObject"]["kind"] == "Canary")
            .map(|e| {
                (
                    e["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    e["message"].as_str().unwrap_or_default().to_owned(),
                    e["count"].as_u64().unwrap_or(1).max(1) as usize,
                )
            })
            .collect();
        items.sort_by_key(|(rv, _, _)| rv.parse::<u64>().unwrap_or(0));
        items
            .into_iter()
            .flat_map(|(_, message, count)| std::iter::repeat_n(message, count))
            .collect()
    }
}

pub fn phase(c: &Canary) -> CanaryPhase {
    c.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Scenario {
    /// The workload of `examples/canary/` (Deployment, Secret, HPA, MetricTemplate) and the
    /// Canary of `examples/<example>/` (with any other objects there), then `serin run`.
    pub async fn example(example: &str) -> Self {
        let mut s = Self::start().await;
        for file in [
            "deployment.yaml",
            "secret.yaml",
            "hpa.yaml",
            "metrictemplate.yaml",
        ] {
            s.apply(&repo().join("examples/canary").join(file));
        }
        s.apply(&repo().join("examples").join(example));
        s.start_serin();
        s
    }

    /// The controller's `/metrics` text (its admin address is in its log).
    pub async fn controller_metrics(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = loop {
            let log = self.log();
            // The line may carry terminal colours around the field name.
            if let Some(port) = log
                .lines()
                .find(|l| l.contains("admin server listening"))
                .and_then(|l| l.split("127.0.0.1:").nth(1))
                .map(|p| p.chars().take_while(char::is_ascii_digit).collect::<String>())
                .filter(|p| !p.is_empty())
            {
                break format!("127.0.0.1:{port}");
            }
            assert!(Instant::now() < deadline, "no admin address in the log:\n{log}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        serin_runtime::tls::install_crypto_provider();
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    }

    /// A PromQL instant query against the test bed's Prometheus; the sum of the values.
    pub async fn prometheus_sum(&self, query: &str) -> f64 {
        serin_runtime::tls::install_crypto_provider();
        let url = format!("{}/api/v1/query", self.tb.prometheus_url().expect("prometheus"));
        let v: serde_json::Value = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .get(url)
            .query(&[("query", query)])
            .send()
            .await
            .expect("prometheus answers")
            .json()
            .await
            .expect("json");
        v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["value"][1].as_str()?.parse::<f64>().ok())
            .sum()
    }

    /// Requests Prometheus has seen at a workload of the test namespace from a source workload.
    pub async fn requests_at(&self, workload: &str, source: &str) -> f64 {
        self.prometheus_sum(&format!(
            r#"sum(istio_requests_total{{reporter="destination",destination_workload_namespace="{NS}",destination_workload="{workload}",source_workload="{source}"}})"#
        ))
        .await
    }

    /// Whether some event on the Canary has exactly this text.
    pub fn has_event(&self, message: &str) -> bool {
        self.events().iter().any(|e| e == message)
    }

    /// Serves one simulated in-mesh request through the data plane (a client in the test
    /// namespace).
    pub fn request(&self, host: &str, headers: &[(&str, &str)]) -> serin_testbed::mesh::dataplane::Response {
        self.request_via(None, host, headers)
    }

    /// Serves one simulated request entering through `gateway` (`None`: in-mesh).
    pub fn request_via(
        &self,
        gateway: Option<&str>,
        host: &str,
        headers: &[(&str, &str)],
    ) -> serin_testbed::mesh::dataplane::Response {
        let req = serin_testbed::mesh::routing::Request {
            host: host.into(),
            source_namespace: NS.into(),
            gateway: gateway.map(str::to_owned),
            method: "GET".into(),
            path: "/".into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_lowercase(), (*v).to_owned()))
                .collect(),
        };
        let source = serin_testbed::mesh::dataplane::Source {
            workload: "e2e-client".into(),
            namespace: NS.into(),
        };
        self.tb.data_plane().expect("data plane").serve(&req, &source)
    }
}

/// One request a local HTTP receiver got.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub path: String,
    pub body: serde_json::Value,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

/// What a local HTTP receiver got, in order.
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<Delivery>>>;

/// A local HTTP receiver (a webhook or an alert provider) that answers every POST with `status`.
pub async fn receiver(status: u16) -> (String, Received) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    let seen: Received = Default::default();
    let store = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() < length {
                        continue;
                    }
                    let path = head
                        .lines()
                        .next()
                        .and_then(|l| l.split_whitespace().nth(1))
                        .unwrap_or("/")
                        .to_owned();
                    let authorization = head.lines().find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("authorization")
                            .then(|| value.trim().to_owned())
                    });
                    if let Ok(body) = serde_json::from_str(&body[..length]) {
                        store.lock().expect("lock").push(Delivery {
                            path,
                            body,
                            authorization,
                        });
                    }
                    let answer =
                        format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    let _ = stream.write_all(answer.as_bytes()).await;
                    return;
                }
            });
        }
    });
    (url, seen)
}

impl Scenario {
    /// Pushes a revision (image 6.0.2) that answers half its requests with 500s.
    pub fn push_failing_revision(&self) {
        self.patch_target(
            r#"{"spec":{"template":{"metadata":{"annotations":{"testbed.serin.dev/error-rate":"0.5"}},"spec":{"containers":[{"name":"podinfod","image":"ghcr.io/stefanprodan/podinfo:6.0.2"}]}}}}"#,
        );
    }

    /// Sets the target's image to podinfo `tag` with real kubectl (`kubectl set image`), as a
    /// user releasing a new version would.
    pub fn set_image(&self, tag: &str) {
        self.kubectl(&[
            "-n",
            NS,
            "set",
            "image",
            "deploy/podinfo",
            &format!("podinfod=ghcr.io/stefanprodan/podinfo:{tag}"),
        ]);
    }

    /// Patches the target Deployment `podinfo` (strategic merge patch), as a user would.
    pub fn patch_target(&self, patch: &str) {
        self.kubectl(&[
            "-n",
            NS,
            "patch",
            "deploy",
            "podinfo",
            "--type=strategic",
            "-p",
            patch,
        ]);
    }

    /// Waits until the rollout failed.
    pub async fn wait_failed(&self, deadline: Duration) -> Canary {
        self.wait_canary("Failed", deadline, |c| phase(c) == CanaryPhase::Failed)
            .await
    }
}

impl Scenario {
    /// Merge-patches the `podinfo` Canary with real kubectl.
    pub fn patch_canary(&self, patch: &str) {
        self.kubectl(&[
            "-n",
            NS,
            "patch",
            "canary",
            "podinfo",
            "--type=merge",
            "-p",
            patch,
        ]);
    }
}

/// Fails unless an event has exactly this text.
pub fn assert_event(events: &[String], message: &str) {
    assert!(
        events.iter().any(|e| e == message),
        "no event {message:?} in {events:#?}"
    );
}
