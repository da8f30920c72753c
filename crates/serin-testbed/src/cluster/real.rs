//! A real Kubernetes control plane on 127.0.0.1, from the binaries `build.rs` makes: etcd,
//! kube-apiserver (RBAC, the default admission plugins, service-account token signing, an audit
//! log), kube-controller-manager, kube-scheduler and kwok with one fake node. Each process runs
//! in its own process group and is stopped (SIGTERM, then SIGKILL) when the cluster drops; a
//! cluster whose owner died without stopping it is swept by the next start. Does I/O
//! (processes, files, HTTP).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use base64::Engine;
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::api::{Api, PostParams};

use super::{
    build,
    components::{ETCD, KUBERNETES, KWOK},
    kwok,
};

/// The fake node's name.
pub const NODE_NAME: &str = "kwok-node-0";
/// The prefix of a real cluster's directory in the temporary directory.
const DIR_PREFIX: &str = "serin-testbed-real-";
/// How long each component may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The controllers kube-controller-manager runs: what Deployments, HPAs, garbage collection,
/// namespaces, ServiceAccounts and fake nodes need.
const CONTROLLERS: &str = "deployment-controller,replicaset-controller,statefulset-controller,daemonset-controller,job-controller,garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,node-lifecycle-controller,horizontal-pod-autoscaler-controller,endpointslice-controller,disruption-controller,ttl-controller";

/// One started process.
#[derive(Debug)]
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// A running control plane. Dropping it stops every process and removes its directory.
#[derive(Debug)]
pub struct RealCluster {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    server: String,
    version: String,
    processes: Vec<Process>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                anyhow::anyhow!("`openssl` is not on PATH; install it with `apt-get install -y openssl`")
            }
            _ => anyhow::Error::new(e).context("cannot run openssl"),
        })?;
    if !output.status.success() {
        bail!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// A CA, the API server's serving certificate (for 127.0.0.1 and localhost), the admin's client
/// certificate (group `system:masters`) and the service-account signing key.
fn write_pki(dir: &Path) -> anyhow::Result<()> {
    std::fs::write(
        dir.join("serving.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n",
    )?;
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
    )?;
    let ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
    for key in ["ca.key", "apiserver.key", "admin.key"] {
        let mut args = vec!["genpkey"];
        args.extend(ec);
        args.extend(["-out", key]);
        openssl(dir, &args)?;
    }
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-days",
            "30",
            "-subj",
            "/CN=serin-testbed-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            "-out",
            "ca.crt",
        ],
    )?;
    for (name, subject, ext) in [
        ("apiserver", "/CN=kube-apiserver", "serving.ext"),
        ("admin", "/O=system:masters/CN=serin-testbed-admin", "client.ext"),
    ] {
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        openssl(
            dir,
            &["req", "-new", "-key", &key, "-subj", subject, "-out", &csr],
        )?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "30",
                "-extfile",
                ext,
                "-out",
                &crt,
            ],
        )?;
    }
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "sa.key",
        ],
    )?;
    openssl(dir, &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
    std::fs::write(
        dir.join("audit-policy.yaml"),
        // Writes at Request level: their bodies show the ownerReferences whose finalizers
        // permission the API server checks in admission (see `audit.rs`).
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Request\n  verbs: [create, update, patch]\n- level: Metadata\n",
    )?;
    Ok(())
}

/// A kubeconfig for `server` that trusts the cluster's CA, with `user` (YAML of a user entry).
pub fn kubeconfig_yaml(server: &str, ca_pem: &[u8], user: &str) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: serin-testbed\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: user\n  user:\n{user}contexts:\n- name: serin-testbed\n  context:\n    cluster: serin-testbed\n    user: user\n    namespace: default\ncurrent-context: serin-testbed\npreferences: {{}}\n",
        b64(ca_pem)
    )
}

impl RealCluster {
    /// Starts a control plane (building its components first if needed) and waits until the
    /// fake node is Ready and the `default` ServiceAccount exists.
    pub async fn start() -> anyhow::Result<Self> {
        sweep_orphans();
        tokio::task::spawn_blocking(|| {
            build::ensure(&KUBERNETES)?;
            build::ensure(&ETCD)?;
            build::ensure(&KWOK)
        })
        .await??;
        let dir = tempfile::Builder::new().prefix(DIR_PREFIX).tempdir()?;
        std::fs::write(dir.path().join("owner.pid"), std::process::id().to_string())?;
        write_pki(dir.path())?;
        let mut cluster = Self {
            kubeconfig: dir.path().join("kubeconfig"),
            server: String::new(),
            version: String::new(),
            processes: Vec::new(),
            dir,
        };
        cluster.boot().await.map_err(|e| {
            let logs = cluster.log_tails();
            e.context(logs)
        })?;
        Ok(cluster)
    }

    async fn boot(&mut self) -> anyhow::Result<()> {
        let d = self.dir.path().to_path_buf();
        let p = |name: &str| d.join(name).display().to_string();
        // etcd
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        self.spawn(
            "etcd",
            build::binary(&ETCD, "etcd"),
            vec![
                "--name=n0".into(),
                format!("--data-dir={}", p("etcd")),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=n0={peer_url}"),
                "--quota-backend-bytes=8589934592".into(),
            ],
        )?;
        self.wait_for("etcd", || async {
            crate::prometheus::http_get(client_port, "/health")
                .await
                .is_some_and(|(code, body)| code == 200 && body.contains("true"))
        })
        .await?;

        // kube-apiserver
        let api_port = free_port()?;
        self.server = format!("https://127.0.0.1:{api_port}");
        self.spawn(
            "kube-apiserver",
            build::binary(&KUBERNETES, "kube-apiserver"),
            vec![
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                format!("--cert-dir={}", p("pki")),
                format!("--tls-cert-file={}", p("apiserver.crt")),
                format!("--tls-private-key-file={}", p("apiserver.key")),
                format!("--client-ca-file={}", p("ca.crt")),
                "--authorization-mode=RBAC".into(),
                "--allow-privileged=true".into(),
                "--service-cluster-ip-range=10.0.0.0/16".into(),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                format!("--audit-policy-file={}", p("audit-policy.yaml")),
                format!("--audit-log-path={}", p("audit.log")),
                "--audit-log-maxsize=0".into(),
                "--endpoint-reconciler-type=none".into(),
                "--profiling=false".into(),
                "--v=0".into(),
            ],
        )?;
        let kubeconfig = kubeconfig_yaml(
            &self.server,
            &std::fs::read(d.join("ca.crt"))?,
            &format!(
                "    client-certificate-data: {}\n    client-key-data: {}\n",
                base64::engine::general_purpose::STANDARD.encode(std::fs::read(d.join("admin.crt"))?),
                base64::engine::general_purpose::STANDARD.encode(std::fs::read(d.join("admin.key"))?),
            ),
        );
        std::fs::write(&self.kubeconfig, kubeconfig)?;
        let client = self.client().await?;
        self.wait_for("kube-apiserver", || {
            let client = client.clone();
            async move {
                let request = http::Request::get("/readyz").body(Vec::new());
                match request {
                    Ok(r) => client.request_text(r).await.is_ok_and(|t| t.trim() == "ok"),
                    Err(_) => false,
                }
            }
        })
        .await?;
        self.version = client
            .apiserver_version()
            .await
            .map(|v| v.git_version)
            .context("reading the API server's version")?;

        // The rest need only the API server; they start together.
        let admin = p("kubeconfig");
        self.spawn(
            "kube-controller-manager",
            build::binary(&KUBERNETES, "kube-controller-manager"),
            vec![
                format!("--kubeconfig={admin}"),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
                format!("--service-account-private-key-file={}", p("sa.key")),
                format!("--root-ca-file={}", p("ca.crt")),
                format!("--controllers={CONTROLLERS}"),
                "--node-monitor-grace-period=60s".into(),
                "--horizontal-pod-autoscaler-sync-period=5s".into(),
                "--v=0".into(),
            ],
        )?;
        self.spawn(
            "kube-scheduler",
            build::binary(&KUBERNETES, "kube-scheduler"),
            vec![
                format!("--kubeconfig={admin}"),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
                "--v=0".into(),
            ],
        )?;
        let classes: Api<k8s_openapi::api::storage::v1::StorageClass> = Api::all(client.clone());
        classes
            .create(
                &PostParams::default(),
                &serde_json::from_value(kwok::storage_class())?,
            )
            .await
            .context("creating the default StorageClass")?;
        std::fs::write(d.join("kwok.yaml"), kwok::stages())?;
        self.spawn(
            "kwok",
            build::binary(&KWOK, "kwok"),
            vec![
                format!("--kubeconfig={admin}"),
                format!("--config={}", p("kwok.yaml")),
                "--manage-all-nodes=false".into(),
                format!(
                    "--manage-nodes-with-annotation-selector={}=fake",
                    kwok::NODE_ANNOTATION
                ),
                "--node-lease-duration-seconds=40".into(),
                "--cidr=10.244.0.0/16".into(),
                format!("--server-address=127.0.0.1:{}", free_port()?),
            ],
        )?;
        let nodes: Api<Node> = Api::all(client.clone());
        let node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "annotations": {kwok::NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "type": "kwok"},
            },
        }))?;
        nodes
            .create(&PostParams::default(), &node)
            .await
            .context("creating the fake node")?;
        self.wait_for("the kwok node to be Ready and schedulable", || {
            let nodes = nodes.clone();
            async move {
                nodes.get(NODE_NAME).await.is_ok_and(|n| {
                    let ready = n
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                    let tainted = n
                        .spec
                        .as_ref()
                        .and_then(|s| s.taints.as_ref())
                        .is_some_and(|ts| !ts.is_empty());
                    ready && !tainted
                })
            }
        })
        .await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        self.wait_for("the default ServiceAccount", || {
            let accounts = accounts.clone();
            async move { accounts.get_opt("default").await.is_ok_and(|a| a.is_some()) }
        })
        .await?;
        Ok(())
    }

    fn spawn(&mut self, name: &'static str, binary: PathBuf, args: Vec<String>) -> anyhow::Result<()> {
        use std::os::unix::process::CommandExt;
        let log = self.dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(&binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        std::fs::write(
            self.dir.path().join(format!("{name}.pid")),
            child.id().to_string(),
        )?;
        self.processes.push(Process { name, child, log });
        Ok(())
    }

    async fn wait_for<F, Fut>(&mut self, what: &str, mut ready: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        loop {
            for p in &mut self.processes {
                if let Some(status) = p.child.try_wait()? {
                    bail!("{} exited ({status}) while waiting for {what}", p.name);
                }
            }
            if ready().await {
                tracing::debug!(what, elapsed = ?start.elapsed(), "real cluster: ready");
                return Ok(());
            }
            if start.elapsed() > READY_TIMEOUT {
                bail!("{what} was not ready within {}s", READY_TIMEOUT.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of every component's log, for an error message.
    fn log_tails(&self) -> String {
        let mut out = String::from("component logs (last lines):");
        for p in &self.processes {
            let text = std::fs::read_to_string(&p.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("\n--- {} ({})", p.name, p.log.display()));
            for line in &lines[lines.len().saturating_sub(15)..] {
                out.push_str("\n  ");
                out.push_str(line);
            }
        }
        out
    }

    /// An admin client.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&self.kubeconfig)?,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// The admin kubeconfig (client certificate, group `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:PORT`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The API server's version, such as `v1.36.3`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The cluster's CA certificate (PEM), for kubeconfigs of other identities.
    pub fn ca_pem(&self) -> anyhow::Result<Vec<u8>> {
        Ok(std::fs::read(self.dir.path().join("ca.crt"))?)
    }

    /// The API server's audit log (JSON lines of `audit.k8s.io/v1` Events).
    pub fn audit_log(&self) -> PathBuf {
        self.dir.path().join("audit.log")
    }

    /// The cluster's directory (logs, PKI, audit log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn stop_processes(&mut self) {
        use rustix::process::{Pid, Signal, kill_process_group};
        // Reverse order: kwok and the controllers before the API server, etcd last.
        for p in self.processes.iter_mut().rev() {
            if let Some(pid) = Pid::from_raw(p.child.id() as i32) {
                let _ = kill_process_group(pid, Signal::TERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match p.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        if let Some(pid) = Pid::from_raw(p.child.id() as i32) {
                            let _ = kill_process_group(pid, Signal::KILL);
                        }
                        let _ = p.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        self.processes.clear();
    }
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        self.stop_processes();
    }
}

/// Kills the processes of real clusters whose owner is gone (a test process killed by a
/// timeout never drops its cluster) and removes their directories.
fn sweep_orphans() {
    use rustix::process::{Pid, Signal, kill_process_group, test_kill_process};
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let alive = |pid: i32| Pid::from_raw(pid).is_some_and(|p| test_kill_process(p).is_ok());
    let read_pid = |path: PathBuf| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let Some(owner) = read_pid(path.join("owner.pid")) else {
            continue;
        };
        if alive(owner) {
            continue;
        }
        for name in [
            "kwok",
            "kube-scheduler",
            "kube-controller-manager",
            "kube-apiserver",
            "etcd",
        ] {
            if let Some(pid) = read_pid(path.join(format!("{name}.pid"))).and_then(Pid::from_raw) {
                let _ = kill_process_group(pid, Signal::KILL);
            }
        }
        let _ = std::fs::remove_dir_all(&path);
    }
}
