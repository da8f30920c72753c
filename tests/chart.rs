//! The install: the Helm chart (the real helm CLI: lint, install with default values,
//! with serin-sync and with every value set, uninstall), the kustomize install for Istio (real
//! kubectl), and the copies they keep of the CRDs and RBAC rules. The chart's Deployment is run
//! as its pod would run: its command line, under its ServiceAccount's token, until ready.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Secret, Service, ServiceAccount},
    policy::v1::PodDisruptionBudget,
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding},
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams, ObjectMeta, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};
use serin_testbed::{Testbed, TestbedOptions};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn chart() -> PathBuf {
    repo().join("charts/serin")
}

/// Runs the real `helm` CLI (built from Helm's Go module by `make cluster`, else the one on
/// PATH); `Ok` carries its standard output, `Err` its error.
fn helm(args: &[&str]) -> Result<String, String> {
    let output = Command::new(serin_testbed::helm_program())
        .args(args)
        .output()
        .expect("helm runs (make cluster builds it)");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

async fn helm_async(args: Vec<String>) -> Result<String, String> {
    tokio::task::spawn_blocking(move || helm(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .expect("helm task")
}

fn rules_file(name: &str) -> Vec<PolicyRule> {
    let text = std::fs::read_to_string(chart().join("files/rbac").join(name)).expect("rules file");
    serde_yaml::from_str(&text).expect("a list of PolicyRules")
}

async fn testbed() -> Testbed {
    // The mesh installs Istio's CRDs, which serin checks for at start-up.
    let tb = Testbed::start_with(TestbedOptions {
        mesh: true,
        ..Default::default()
    })
    .await
    .expect("test bed starts");
    let namespaces: Api<Namespace> = Api::all(tb.client());
    for name in ["istio-system", "apps"] {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match namespaces.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("namespace {name}: {e}"),
        }
    }
    tb
}

/// `helm install --wait` with `values` (a values file, as `-f` reads it); the release as JSON.
async fn install(tb: &Testbed, release: &str, values: Value) -> Result<Value, String> {
    let file = tempfile::NamedTempFile::new().expect("values file");
    std::fs::write(file.path(), values.to_string()).expect("values written");
    let out = helm_async(
        [
            "install",
            release,
            chart().to_str().expect("utf8"),
            "--kubeconfig",
            tb.kubeconfig().to_str().expect("utf8"),
            "--namespace",
            "istio-system",
            "--values",
            file.path().to_str().expect("utf8"),
            "--wait",
            "--timeout",
            "90s",
            "--output",
            "json",
        ]
        .map(str::to_owned)
        .to_vec(),
    )
    .await?;
    Ok(serde_json::from_str(&out).expect("helm install --output json prints the release"))
}

async fn uninstall(tb: &Testbed, release: &str) {
    helm_async(
        [
            "uninstall",
            release,
            "--kubeconfig",
            tb.kubeconfig().to_str().expect("utf8"),
            "--namespace",
            "istio-system",
            "--wait",
            "--timeout",
            "90s",
        ]
        .map(str::to_owned)
        .to_vec(),
    )
    .await
    .expect("uninstalled");
}

fn container(d: &Deployment) -> k8s_openapi::api::core::v1::Container {
    d.spec
        .as_ref()
        .expect("spec")
        .template
        .spec
        .as_ref()
        .expect("pod spec")
        .containers[0]
        .clone()
}

fn args(d: &Deployment) -> Vec<String> {
    container(d).args.unwrap_or_default()
}

fn env(d: &Deployment) -> Value {
    serde_json::to_value(container(d).env.unwrap_or_default()).expect("env")
}

/// Everything a release labels as its own, by kind and name.
async fn release_objects(client: &Client) -> Vec<String> {
    let selector = ListParams::default().labels("app.kubernetes.io/managed-by=Helm");
    let mut out = Vec::new();
    macro_rules! collect {
        ($kind:ty, $api:expr) => {
            let api: Api<$kind> = $api;
            for o in api.list(&selector).await.expect("list").items {
                out.push(format!(
                    "{}/{}",
                    <$kind as kube::Resource>::kind(&()),
                    o.metadata.name.unwrap_or_default()
                ));
            }
        };
    }
    collect!(Deployment, Api::all(client.clone()));
    collect!(Service, Api::all(client.clone()));
    collect!(ServiceAccount, Api::all(client.clone()));
    collect!(Secret, Api::all(client.clone()));
    collect!(ClusterRole, Api::all(client.clone()));
    collect!(ClusterRoleBinding, Api::all(client.clone()));
    collect!(Role, Api::all(client.clone()));
    collect!(RoleBinding, Api::all(client.clone()));
    collect!(PodDisruptionBudget, Api::all(client.clone()));
    out.sort();
    out
}

#[test]
fn the_chart_lints_without_errors() {
    let output = helm(&["lint", chart().to_str().expect("utf8")]).expect("helm lint passes");
    // Helm prints one line per finding: [INFO], [WARNING] or [ERROR].
    let problems: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("[WARNING]") || l.contains("[ERROR]"))
        .collect();
    assert!(problems.is_empty(), "helm lint: {output}");
    assert!(
        output.contains("1 chart(s) linted, 0 chart(s) failed"),
        "{output}"
    );
}

#[test]
fn the_chart_and_the_kustomize_base_keep_the_crds_and_rules_of_the_repository() {
    let yaml_files = |dir: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(repo().join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect();
        names.sort();
        names
    };
    for (copy, source) in [
        ("charts/serin/crds", "crds"),
        ("deploy/base/crds", "crds"),
        ("charts/serin/files/crds/serin-sync", "crds/serin-sync"),
    ] {
        let names = yaml_files(copy);
        assert_eq!(names, yaml_files(source), "{copy} holds the CRDs of {source}/");
        for name in names {
            assert_eq!(
                std::fs::read_to_string(repo().join(copy).join(&name)).expect("copy"),
                std::fs::read_to_string(repo().join(source).join(&name)).expect("source"),
                "{copy}/{name} is stale: cp {source}/*.yaml {copy}/"
            );
        }
    }
    let rendered = kubectl_kustomize("deploy/istio");
    for (role, file) in [("serin", "controller.yaml"), ("serin-crds", "crds.yaml")] {
        let doc = rendered
            .iter()
            .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == role)
            .unwrap_or_else(|| panic!("ClusterRole {role} in deploy/istio"));
        let rules: Vec<PolicyRule> = serde_json::from_value(doc["rules"].clone()).expect("rules");
        assert_eq!(
            rules,
            rules_file(file),
            "deploy/base/rbac.yaml: the rules of {role} differ from charts/serin/files/rbac/{file}"
        );
    }
}

fn kubectl_kustomize(dir: &str) -> Vec<Value> {
    let output = Command::new("kubectl")
        .args(["kustomize", repo().join(dir).to_str().expect("utf8")])
        .output()
        .expect("kubectl runs");
    assert!(
        output.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_yaml::Deserializer::from_slice(&output.stdout)
        .map(|d| {
            serde_yaml::from_value::<Value>(serde_yaml::Value::deserialize(d).expect("yaml")).expect("json")
        })
        .collect()
}

use serde::Deserialize;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kustomize_installs_serin_into_istio_system() {
    let rendered = kubectl_kustomize("deploy/istio");
    let deployment = rendered
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    assert_eq!(deployment["metadata"]["namespace"], "istio-system");
    let args: Vec<&str> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for flag in [
        "--mesh-provider=istio",
        "--metrics-server=http://prometheus.istio-system:9090",
        "--include-label-prefix=app.kubernetes.io",
    ] {
        assert!(args.contains(&flag), "{flag} in {args:?}");
    }
    assert!(
        !rendered.iter().any(|d| d["kind"] == "Namespace"),
        "istio-system is Istio's, not created"
    );
    for b in rendered.iter().filter(|d| d["kind"] == "ClusterRoleBinding") {
        assert_eq!(b["subjects"][0]["namespace"], "istio-system", "{b}");
    }

    // The base stands alone too, in its own namespace.
    let base = kubectl_kustomize("deploy/base");
    assert!(
        base.iter()
            .any(|d| d["kind"] == "Namespace" && d["metadata"]["name"] == "serin-system")
    );
    for b in base.iter().filter(|d| d["kind"] == "ClusterRoleBinding") {
        assert_eq!(b["subjects"][0]["namespace"], "serin-system", "{b}");
    }

    let tb = testbed().await;
    let output = tb
        .kubectl()
        .args(["apply", "-k", repo().join("deploy/istio").to_str().expect("utf8")])
        .output()
        .expect("kubectl runs");
    assert!(
        output.status.success(),
        "kubectl apply -k deploy/istio: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = tb
        .kubectl()
        .args([
            "-n",
            "istio-system",
            "rollout",
            "status",
            "deployment/serin",
            "--timeout=30s",
        ])
        .output()
        .expect("kubectl runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let client = tb.client();
    Api::<CustomResourceDefinition>::all(client.clone())
        .get("canaries.flagger.app")
        .await
        .expect("the CRDs are installed");
    Api::<ClusterRoleBinding>::all(client.clone())
        .get("serin")
        .await
        .expect("the ClusterRoleBinding");
    Api::<ServiceAccount>::namespaced(client.clone(), "istio-system")
        .get("serin")
        .await
        .expect("the ServiceAccount");
    // The installed Deployment's command line runs under the installed RBAC.
    let d = Api::<Deployment>::namespaced(client.clone(), "istio-system")
        .get("serin")
        .await
        .expect("the Deployment");
    run_like_the_pod(&tb, &d).await;
}

/// Runs the Deployment's container command as its pod would: the same arguments (the admin
/// server on a free local port), the ServiceAccount's token; waits for `/readyz` to answer 200,
/// then has it track a ConfigMap.
async fn run_like_the_pod(tb: &Testbed, deployment: &Deployment) {
    let c = container(deployment);
    assert_eq!(
        c.command.as_deref(),
        Some(&["/usr/local/bin/serin".to_owned()][..])
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let args: Vec<String> = args(deployment)
        .into_iter()
        .map(|a| {
            if a.starts_with("--admin-addr=") {
                format!("--admin-addr=127.0.0.1:{port}")
            } else {
                a
            }
        })
        .collect();
    let sa = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.service_account_name.clone())
        .expect("serviceAccountName");
    let kubeconfig = tb
        .service_account_kubeconfig("istio-system", &sa)
        .await
        .expect("a token of the chart's ServiceAccount");
    // The container's environment: literal values, Secret references resolved as the kubelet
    // would, the downward API's pod name and namespace. No collector listens for OTLP here.
    let secrets: Api<Secret> = Api::namespaced(tb.client(), "istio-system");
    let mut vars = vec![
        ("POD_NAMESPACE".to_owned(), "istio-system".to_owned()),
        ("POD_NAME".to_owned(), "serin-0".to_owned()),
    ];
    for var in c.env.clone().unwrap_or_default() {
        if var.name.starts_with("OTEL_") || var.name.starts_with("POD_") {
            continue;
        }
        let value = match (var.value, var.value_from.and_then(|f| f.secret_key_ref)) {
            (Some(v), _) => v,
            (None, Some(r)) => {
                let secret = secrets.get(&r.name).await.expect("the referenced Secret");
                let data = secret.data.unwrap_or_default();
                String::from_utf8(data.get(&r.key).expect("the referenced key").0.clone()).expect("utf8")
            }
            (None, None) => panic!("{} has no value", var.name),
        };
        vars.push((var.name, value));
    }
    let log = tempfile::NamedTempFile::new().expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_serin"))
        .args(&args)
        .env("KUBECONFIG", &kubeconfig)
        .envs(vars)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen().expect("log"))
        .spawn()
        .expect("serin starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = format!("http://127.0.0.1:{port}/readyz");
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let ready = loop {
        if let Ok(r) = http.get(&url).send().await
            && r.status().is_success()
        {
            break true;
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let leader = args.iter().any(|a| a == "--leader-elect");
    let tracked = if ready {
        let tracking = !args.iter().any(|a| a == "--enable-config-tracking=false");
        let tracked = track_a_config_map(tb, tracking).await;
        if leader {
            // Stay past one retry period (2 s), so the leader renews its Lease with an update.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        tracked
    } else {
        Err("not ready".to_owned())
    };
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert!(ready, "serin {args:?} did not become ready:\n{text}");
    assert!(!text.contains("forbidden"), "serin was denied something:\n{text}");
    tracked.unwrap_or_else(|e| panic!("{e}\n--- serin log ---\n{text}"));
    if leader {
        assert!(text.contains("became leader"), "{text}");
    }
}

/// A Canary whose target reads a ConfigMap: serin initializes it (the primary Deployment) and,
/// with config tracking on, copies the ConfigMap for the primary, which the e2e scenarios do not
/// cover.
async fn track_a_config_map(tb: &Testbed, tracking: bool) -> Result<(), String> {
    let manifest = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: podinfo-config, namespace: apps}
data: {color: blue}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: podinfo, namespace: apps}
spec:
  replicas: 1
  selector: {matchLabels: {app: podinfo}}
  template:
    metadata: {labels: {app: podinfo}}
    spec:
      containers:
        - name: podinfod
          image: ghcr.io/stefanprodan/podinfo:6.0.0
          ports: [{name: http, containerPort: 9898}]
          env:
            - name: PODINFO_UI_COLOR
              valueFrom: {configMapKeyRef: {name: podinfo-config, key: color}}
---
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: podinfo, namespace: apps}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service: {port: 9898}
  analysis: {interval: 1m, threshold: 5, maxWeight: 50, stepWeight: 10}
"#;
    let mut child = tb
        .kubectl()
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().ok_or("stdin")?;
        stdin.write_all(manifest.as_bytes()).map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("kubectl apply: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(tb.client(), "apps");
    let deployments: Api<Deployment> = Api::namespaced(tb.client(), "apps");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let primary = deployments.get_opt("podinfo-primary").await.ok().flatten();
        if primary.is_some() && !tracking {
            return match configmaps.get_opt("podinfo-config-primary").await {
                Ok(None) => Ok(()),
                other => Err(format!("config tracking is off, yet: {other:?}")),
            };
        }
        if let Ok(Some(copy)) = configmaps.get_opt("podinfo-config-primary").await {
            let color = copy.data.and_then(|d| d.get("color").cloned());
            return if color.as_deref() == Some("blue") {
                Ok(())
            } else {
                Err(format!("podinfo-config-primary holds {color:?}"))
            };
        }
        if Instant::now() > deadline {
            return Err(format!(
                "after 30s: primary Deployment {}, ConfigMap copy absent (config tracking {tracking})",
                if primary.is_some() { "created" } else { "absent" }
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installs_the_chart_with_default_values_and_uninstalls_it() {
    let tb = testbed().await;
    let client = tb.client();
    let release = install(&tb, "serin", json!({})).await.expect("installed");
    assert_eq!(release["info"]["status"], "deployed", "{release}");

    let d = Api::<Deployment>::namespaced(client.clone(), "istio-system")
        .get("serin")
        .await
        .expect("the Deployment");
    let spec = d.spec.clone().expect("spec");
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.strategy.and_then(|s| s.type_).as_deref(), Some("Recreate"));
    let c = container(&d);
    assert_eq!(
        c.image.as_deref(),
        Some("ghcr.io/serin-dev/serin:0.1.0"),
        "the appVersion tag"
    );
    let sc = c.security_context.clone().expect("securityContext");
    assert_eq!(sc.run_as_user, Some(10001));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.and_then(|c| c.drop), Some(vec!["ALL".to_owned()]));
    let pod = spec.template.spec.clone().expect("pod spec");
    assert_eq!(
        pod.security_context
            .and_then(|s| s.seccomp_profile)
            .map(|p| p.type_),
        Some("RuntimeDefault".to_owned())
    );
    let probe_path =
        |p: Option<k8s_openapi::api::core::v1::Probe>| p.and_then(|p| p.http_get).and_then(|h| h.path);
    assert_eq!(probe_path(c.liveness_probe.clone()).as_deref(), Some("/healthz"));
    assert_eq!(probe_path(c.readiness_probe.clone()).as_deref(), Some("/readyz"));
    let resources = c.resources.clone().expect("resources");
    assert!(resources.requests.is_some() && resources.limits.is_some());
    assert!(!args(&d).iter().any(|a| a == "--leader-elect"));
    assert!(args(&d).contains(&"--mesh-provider=istio".to_owned()));

    // For people: the read-only role of `kubectl serin get|explain`, bound to nobody, not
    // aggregated unless asked.
    let viewer = Api::<ClusterRole>::all(client.clone())
        .get("serin-canary-viewer")
        .await
        .expect("the viewer ClusterRole");
    assert_eq!(
        viewer.rules.clone().unwrap_or_default(),
        rules_file("viewer.yaml")
    );
    assert!(
        !viewer
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key("rbac.authorization.k8s.io/aggregate-to-view")
    );
    // And the role of `kubectl serin promote|abort|retry|pause|resume`: its rules only.
    let operator = Api::<ClusterRole>::all(client.clone())
        .get("serin-canary-operator")
        .await
        .expect("the operator ClusterRole");
    assert_eq!(operator.rules.unwrap_or_default(), rules_file("operator.yaml"));
    requesters_are_checked(&tb).await;
    for (role, file) in [("serin", "controller.yaml"), ("serin-crds", "crds.yaml")] {
        let cr = Api::<ClusterRole>::all(client.clone())
            .get(role)
            .await
            .expect("ClusterRole");
        assert_eq!(
            cr.rules.unwrap_or_default(),
            rules_file(file),
            "ClusterRole {role}"
        );
        let crb = Api::<ClusterRoleBinding>::all(client.clone())
            .get(role)
            .await
            .expect("ClusterRoleBinding");
        let subject = &crb.subjects.expect("subjects")[0];
        assert_eq!(
            (
                subject.kind.as_str(),
                subject.name.as_str(),
                subject.namespace.as_deref()
            ),
            ("ServiceAccount", "serin", Some("istio-system"))
        );
    }
    let objects = release_objects(&client).await;
    assert!(
        !objects
            .iter()
            .any(|o| o.contains("leader-election") || o.contains("sync")),
        "{objects:?}"
    );
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    for name in [
        "canaries.flagger.app",
        "metrictemplates.flagger.app",
        "alertproviders.flagger.app",
        "canaryactions.serin.dev",
    ] {
        crds.get(name).await.expect("the chart's CRDs are installed");
    }

    // The rendered command line runs under the chart's RBAC.
    run_like_the_pod(&tb, &d).await;

    uninstall(&tb, "serin").await;
    let left = release_objects(&client).await;
    assert!(left.is_empty(), "left after uninstall: {left:?}");
    let secrets = Api::<Secret>::namespaced(client.clone(), "istio-system");
    assert!(
        secrets
            .get_opt("sh.helm.release.v1.serin.v1")
            .await
            .expect("get")
            .is_none()
    );
    for name in ["canaries.flagger.app", "alertproviders.flagger.app"] {
        crds.get(name).await.expect("Helm keeps the CRDs of crds/");
    }
}

/// The chart's ValidatingAdmissionPolicy refuses a CanaryAction naming someone else as who asked
/// (on a real API server; the emulator has no admission policies), and takes one naming the
/// requesting user.
async fn requesters_are_checked(tb: &Testbed) {
    if tb.real_cluster().is_none() {
        return;
    }
    let kubectl = |args: &[&str], stdin: Option<String>| {
        let mut cmd = Command::new("kubectl");
        cmd.args(args).env("KUBECONFIG", tb.kubeconfig());
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl runs");
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write");
        }
        let out = child.wait_with_output().expect("kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, me) = kubectl(
        &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
        None,
    );
    assert!(ok, "kubectl auth whoami: {me}");
    let action = |name: &str, by: &str| {
        format!(
            "apiVersion: serin.dev/v1alpha1\nkind: CanaryAction\nmetadata: {{name: {name}, namespace: default}}\n\
             spec: {{canary: podinfo, action: pause, revision: r1, requestedBy: {by:?}}}\n"
        )
    };
    // The policy takes effect a moment after it is created.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out) = kubectl(&["create", "-f", "-"], Some(action("impostor", "someone-else")));
        if !ok {
            assert!(out.contains("spec.requestedBy must be the user name"), "{out}");
            break;
        }
        kubectl(&["delete", "canaryaction", "impostor", "-n", "default"], None);
        assert!(
            Instant::now() < deadline,
            "a CanaryAction naming someone else was still accepted"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (ok, out) = kubectl(&["create", "-f", "-"], Some(action("honest", &me)));
    assert!(ok, "a CanaryAction naming its requester: {out}");
    let (ok, out) = kubectl(
        &[
            "patch",
            "canaryaction",
            "honest",
            "-n",
            "default",
            "--type=merge",
            "-p",
            r#"{"spec":{"action":"abort"}}"#,
        ],
        None,
    );
    assert!(!ok && out.contains("does not change once made"), "{out}");
    kubectl(&["delete", "canaryaction", "honest", "-n", "default"], None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installs_serin_sync_and_every_value_given() {
    let tb = testbed().await;
    let client = tb.client();
    // The Prometheus operator's CRDs, for the ServiceMonitor and PodMonitor.
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    for (kind, plural) in [
        ("ServiceMonitor", "servicemonitors"),
        ("PodMonitor", "podmonitors"),
    ] {
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.monitoring.coreos.com")},
            "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "listKind": format!("{kind}List"), "singular": kind.to_lowercase()},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
        }))
        .expect("crd");
        crds.create(&PostParams::default(), &crd).await.expect("CRD");
    }
    // A values file, as `helm install -f charts/serin/ci/full-values.yaml` reads it.
    let file = std::fs::read_to_string(chart().join("ci/full-values.yaml")).expect("values file");
    let values: Value = serde_yaml::from_str(&file).expect("YAML values");
    let release = install(&tb, "serin", values).await.expect("installed");
    assert_eq!(release["info"]["status"], "deployed", "{release}");
    let viewer = Api::<ClusterRole>::all(client.clone())
        .get("serin-canary-viewer")
        .await
        .expect("the viewer ClusterRole");
    assert_eq!(
        viewer
            .metadata
            .labels
            .unwrap_or_default()
            .get("rbac.authorization.k8s.io/aggregate-to-view")
            .map(String::as_str),
        Some("true"),
        "rbac.aggregateToView"
    );
    let deployments = Api::<Deployment>::namespaced(client.clone(), "istio-system");
    let d = deployments.get("serin").await.expect("serin");
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(2));
    assert_ne!(
        d.spec
            .as_ref()
            .and_then(|s| s.strategy.clone())
            .and_then(|s| s.type_)
            .as_deref(),
        Some("Recreate"),
        "replicas elect a leader and roll"
    );
    assert_eq!(
        container(&d).image.as_deref(),
        Some("ghcr.io/serin-dev/serin:1.2.3")
    );
    let a = args(&d);
    for flag in [
        "run",
        "--metrics-server=http://prometheus.istio-system:9090",
        "--comparison-window=20s",
        "--selector-labels=app.kubernetes.io/name,app",
        "--include-label-prefix=app.kubernetes.io,team",
        "--namespace=apps",
        "--enable-config-tracking=false",
        "--log-level=debug",
        "--log-format=text",
        "--leader-elect",
    ] {
        assert!(a.contains(&flag.to_owned()), "{flag} in {a:?}");
    }
    let e = env(&d);
    let var = |name: &str| {
        e.as_array()
            .and_then(|vars| vars.iter().find(|v| v["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {e}"))
    };
    assert_eq!(var("CLUSTER_NAME")["value"], "prod-eu");
    assert_eq!(var("SLACK_CHANNEL")["value"], "deploys");
    assert_eq!(var("SLACK_USER")["value"], "serin");
    assert_eq!(var("SLACK_PROXY_URL")["value"], "http://proxy:3128");
    assert_eq!(var("MSTEAMS_PROXY_URL")["value"], "http://teams-proxy:3128");
    assert_eq!(
        var("SLACK_TOKEN")["valueFrom"]["secretKeyRef"]["key"],
        "slack-token"
    );
    assert_eq!(
        var("OTEL_EXPORTER_OTLP_ENDPOINT")["value"],
        "http://otel.observability:4317"
    );
    assert_eq!(var("SLACK_URL")["valueFrom"]["secretKeyRef"]["key"], "slack-url");
    assert_eq!(
        var("MSTEAMS_URL")["valueFrom"]["secretKeyRef"]["key"],
        "msteams-url"
    );
    assert_eq!(
        var("EVENT_WEBHOOK_URL")["valueFrom"]["secretKeyRef"]["key"],
        "event-webhook-url"
    );
    let secret = Api::<Secret>::namespaced(client.clone(), "istio-system")
        .get("serin-notifications")
        .await
        .expect("the notifications Secret");
    let data = secret.data.expect("data");
    assert_eq!(data["slack-url"].0, b"https://hooks.slack.test/T/B/x");
    assert_eq!(data["msteams-url"].0, b"https://teams.test/webhook");
    assert_eq!(data["slack-token"].0, b"xoxb-chart-test");
    // Standbys are ready through /healthz.
    assert_eq!(
        container(&d)
            .readiness_probe
            .and_then(|p| p.http_get)
            .and_then(|h| h.path)
            .as_deref(),
        Some("/healthz")
    );

    // Restricted to apps: a RoleBinding there, no cluster-wide binding of the controller's rules.
    let rb = Api::<RoleBinding>::namespaced(client.clone(), "apps")
        .get("serin")
        .await
        .expect("RoleBinding in apps");
    assert_eq!(rb.role_ref.kind, "ClusterRole");
    assert!(
        Api::<ClusterRoleBinding>::all(client.clone())
            .get_opt("serin")
            .await
            .expect("get")
            .is_none()
    );
    // Leader election: a Role in the release namespace.
    let role = Api::<Role>::namespaced(client.clone(), "istio-system")
        .get("serin-leader-election")
        .await
        .expect("the leader election Role");
    assert_eq!(role.rules.unwrap_or_default(), rules_file("leader-election.yaml"));
    Api::<PodDisruptionBudget>::namespaced(client.clone(), "istio-system")
        .get("serin")
        .await
        .expect("the PodDisruptionBudget");
    for (kind, plural) in [
        ("ServiceMonitor", "servicemonitors"),
        ("PodMonitor", "podmonitors"),
    ] {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("monitoring.coreos.com", "v1", kind),
            plural,
        );
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "istio-system", &ar);
        api.get("serin").await.expect("the monitor");
    }

    // The rendered command line, environment and leader election run under the chart's RBAC,
    // restricted to apps.
    run_like_the_pod(&tb, &d).await;

    // serin-sync: same image, its own ServiceAccount, cluster-admin by default.
    let sync = deployments.get("serin-sync").await.expect("serin-sync");
    let c = container(&sync);
    assert_eq!(c.image.as_deref(), Some("ghcr.io/serin-dev/serin:1.2.3"));
    assert_eq!(
        c.command.as_deref(),
        Some(&["/usr/local/bin/serin-sync".to_owned()][..])
    );
    assert_eq!(args(&sync).first().map(String::as_str), Some("run"));
    assert_eq!(
        sync.spec
            .and_then(|s| s.template.spec)
            .and_then(|s| s.service_account_name)
            .as_deref(),
        Some("serin-sync")
    );
    let crb = Api::<ClusterRoleBinding>::all(client.clone())
        .get("serin-sync")
        .await
        .expect("serin-sync's binding");
    assert_eq!(crb.role_ref.name, "cluster-admin");
    let output = tb
        .kubectl()
        .args([
            "auth",
            "can-i",
            "create",
            "deployments",
            "-n",
            "apps",
            "--as",
            "system:serviceaccount:istio-system:serin-sync",
        ])
        .output()
        .expect("kubectl runs");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "yes");

    for name in [
        "gitrepositories.source.toolkit.fluxcd.io",
        "kustomizations.kustomize.toolkit.fluxcd.io",
    ] {
        crds.get(name).await.expect("Flux's CRDs for serin-sync");
    }

    uninstall(&tb, "serin").await;
    let left = release_objects(&client).await;
    assert!(left.is_empty(), "left after uninstall: {left:?}");
    for (kind, plural) in [
        ("ServiceMonitor", "servicemonitors"),
        ("PodMonitor", "podmonitors"),
    ] {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("monitoring.coreos.com", "v1", kind),
            plural,
        );
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "istio-system", &ar);
        assert!(
            api.get_opt("serin").await.expect("get").is_none(),
            "{kind} left after uninstall"
        );
    }
    for name in [
        "canaries.flagger.app",
        "gitrepositories.source.toolkit.fluxcd.io",
        "kustomizations.kustomize.toolkit.fluxcd.io",
    ] {
        crds.get(name).await.expect("the CRDs stay");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrowed_serin_sync_and_bad_values_are_handled() {
    let tb = testbed().await;
    let client = tb.client();
    let err = install(&tb, "bad", json!({"logFormat": "xml"}))
        .await
        .expect_err("values.schema.json refuses it");
    assert!(err.contains("logFormat"), "{err}");
    let err = install(&tb, "bad", json!({"meshProvider": "linkerd"}))
        .await
        .expect_err("values.schema.json refuses it");
    assert!(err.contains("meshProvider"), "{err}");
    let err = install(&tb, "bad", json!({"metricServer": "http://prometheus:9090"}))
        .await
        .expect_err("a misspelt value is refused, not ignored");
    assert!(err.contains("metricServer"), "{err}");
    let err = install(&tb, "bad", json!({"replicaCount": 0}))
        .await
        .expect_err("values.schema.json refuses it");
    assert!(err.contains("replicaCount"), "{err}");

    let values = json!({"sync": {"enabled": true, "rbac": {"clusterAdmin": false, "rules": [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "patch"]}
    ]}}});
    install(&tb, "serin", values).await.expect("installed");
    let role = Api::<ClusterRole>::all(client.clone())
        .get("serin-sync")
        .await
        .expect("serin-sync's own ClusterRole");
    let rules = role.rules.unwrap_or_default();
    let mut expected = rules_file("sync.yaml");
    expected.push(PolicyRule {
        api_groups: Some(vec!["apps".into()]),
        resources: Some(vec!["deployments".into()]),
        verbs: vec!["get".into(), "list".into(), "watch".into(), "patch".into()],
        ..Default::default()
    });
    assert_eq!(rules, expected);
    let can = |verb: &str, resource: &str| {
        let output = tb
            .kubectl()
            .args([
                "auth",
                "can-i",
                verb,
                resource,
                "-n",
                "apps",
                "--as",
                "system:serviceaccount:istio-system:serin-sync",
            ])
            .output()
            .expect("kubectl runs");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    assert_eq!(can("patch", "deployments"), "yes");
    assert_eq!(can("delete", "deployments"), "no");
    assert_eq!(can("create", "secrets"), "no");
    uninstall(&tb, "serin").await;
}

/// The container image: Docker's own parser (through the PyPI package `dockerfile`) reads the
/// Dockerfile; the test checks its stages, the toolchain, the non-root user and the entrypoints
/// the chart uses. No engine runs here to build it.
#[test]
fn the_dockerfile_builds_both_binaries_into_a_non_root_image() {
    let output = Command::new("python3")
        .arg(repo().join("tests/chart/parse_dockerfile.py"))
        .arg(repo().join("Dockerfile"))
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "parsing the Dockerfile failed (pip install dockerfile, or make deps): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let commands: Vec<Value> = serde_json::from_slice(&output.stdout).expect("JSON");
    let values = |c: &Value| -> Vec<String> {
        c["value"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    // Stages: FROM image AS name.
    let stages: Vec<(String, String)> = commands
        .iter()
        .filter(|c| c["cmd"] == "FROM")
        .map(|c| {
            let v = values(c);
            assert_eq!(v.len(), 3, "every stage is named: {v:?}");
            assert!(v[1].eq_ignore_ascii_case("as"));
            (v[0].clone(), v[2].clone())
        })
        .collect();
    let names: Vec<&str> = stages.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["build", "kustomize", "helm", "runtime"]);
    let toolchain = std::fs::read_to_string(repo().join("rust-toolchain.toml")).expect("toolchain");
    let channel = toolchain
        .lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .map(|c| c.trim_matches('"').to_owned())
        .expect("a pinned channel");
    assert!(
        stages[0].0.contains(&format!("rust:{channel}")),
        "the build stage uses the pinned toolchain {channel}: {}",
        stages[0].0
    );
    let build_runs: Vec<String> = commands
        .iter()
        .skip_while(|c| c["cmd"] != "FROM")
        .take_while(|c| !(c["cmd"] == "FROM" && values(c)[2] == "kustomize"))
        .filter(|c| c["cmd"] == "RUN")
        .flat_map(values)
        .collect();
    assert!(
        build_runs
            .iter()
            .any(|r| r.contains("cargo build --release --locked")
                && r.contains("-p serin ")
                && r.contains("-p serin-sync")),
        "{build_runs:?}"
    );
    // The runtime stage: both binaries, a non-root numeric user, serin as the entrypoint.
    let runtime: Vec<&Value> = commands
        .iter()
        .skip_while(|c| !(c["cmd"] == "FROM" && values(c)[2] == "runtime"))
        .collect();
    let copies: Vec<(Vec<String>, Vec<String>)> = runtime
        .iter()
        .filter(|c| c["cmd"] == "COPY")
        .map(|c| {
            let flags = c["flags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect();
            (flags, values(c))
        })
        .collect();
    assert!(
        copies.iter().any(|(flags, v)| flags == &["--from=build"]
            && v.contains(&"/out/serin".to_owned())
            && v.contains(&"/out/serin-sync".to_owned())
            && v.last().map(String::as_str) == Some("/usr/local/bin/")),
        "{copies:?}"
    );
    let user = runtime
        .iter()
        .rev()
        .find(|c| c["cmd"] == "USER")
        .map(|c| values(c)[0].clone())
        .expect("a USER in the runtime stage");
    let chart_values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("values.yaml")).expect("values"))
            .expect("YAML");
    assert_eq!(
        user,
        format!(
            "{}:{}",
            chart_values["securityContext"]["runAsUser"], chart_values["securityContext"]["runAsGroup"]
        ),
        "the image's user is the chart's runAsUser and runAsGroup"
    );
    let entrypoint = runtime
        .iter()
        .find(|c| c["cmd"] == "ENTRYPOINT")
        .expect("an ENTRYPOINT");
    assert_eq!(entrypoint["json"], true, "exec form, so signals reach serin");
    assert_eq!(values(entrypoint), ["/usr/local/bin/serin"]);
    // The chart's commands are the binaries the image holds.
    let templates = std::fs::read_to_string(chart().join("templates/deployment.yaml")).expect("template");
    assert!(templates.contains(r#"command: ["/usr/local/bin/serin"]"#));
    let sync = std::fs::read_to_string(chart().join("templates/sync.yaml")).expect("template");
    assert!(sync.contains(r#"command: ["/usr/local/bin/serin-sync"]"#));
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        "the build context leaves target/ out"
    );
}

/// The image tag the chart and the kustomize base default to is serin's version.
#[test]
fn the_chart_and_the_base_install_this_version_of_serin() {
    let chart_yaml: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).expect("Chart.yaml"))
            .expect("YAML");
    assert_eq!(chart_yaml["appVersion"], env!("CARGO_PKG_VERSION"));
    let base: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("deploy/base/kustomization.yaml")).expect("kustomization"),
    )
    .expect("YAML");
    assert_eq!(base["images"][0]["name"], "ghcr.io/serin-dev/serin");
    assert_eq!(base["images"][0]["newTag"], env!("CARGO_PKG_VERSION"));
}
