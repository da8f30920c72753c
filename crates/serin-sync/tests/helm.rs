//! HelmReleases through the real helm program, from a chart repository served over http by the
//! test (packages and index made by `helm package` and `helm repo index`): installed with values
//! from a ConfigMap, upgraded when a new chart version enters the semver range, a failing
//! upgrade rolled back until its retries are spent (then Stalled), `status.history` as
//! `helm history` lists it, and the release uninstalled when the HelmRelease is deleted.

mod support;

use std::{path::Path, process::Command, time::Duration};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, api::DeleteParams};
use serin_sync::api::{HelmChart, HelmRelease};
use serin_testbed::Testbed;
use support::*;

/// Packages the fixture chart as `version` into `repo` (with `image`), and indexes the repository.
fn publish(repo: &Path, version: &str, image: &str, url: &str) {
    let work = tempfile::tempdir().expect("tempdir");
    let chart = work.path().join("demo");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/charts/demo");
    for file in [
        "Chart.yaml",
        "values.yaml",
        "templates/configmap.yaml",
        "templates/deployment.yaml",
        "templates/tests/test.yaml",
    ] {
        let dest = chart.join(file);
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("dir");
        let text = std::fs::read_to_string(fixture.join(file)).expect("fixture");
        std::fs::write(&dest, text.replace("ghcr.io/stefanprodan/podinfo:6.0.1", image)).expect("write");
    }
    publish_chart(&chart, repo, url, Some(version));
}

/// The real control plane with serin-sync's CRDs, the namespace `apps`, and a chart repository
/// holding the fixture chart 0.1.0 (the HelmRepository `apps/charts`); `None` (the test
/// skipped) on the API emulator.
struct Bed {
    tb: Testbed,
    repo: tempfile::TempDir,
    url: String,
    _server: tokio::task::JoinHandle<()>,
}

async fn bed() -> Option<Bed> {
    let tb = Testbed::start().await.expect("test bed");
    if tb.kind() == serin_testbed::ClusterKind::Emulator {
        eprintln!(
            "skipped on the API emulator: helm --wait needs ReplicaSets (FIDELITY.md row 5); run it with SERIN_TESTBED_CLUSTER=real"
        );
        return None;
    }
    let repo = tempfile::tempdir().expect("tempdir");
    let (url, _server) = serve_dir(repo.path().to_path_buf()).await;
    publish(repo.path(), "0.1.0", "ghcr.io/stefanprodan/podinfo:6.0.1", &url);
    install_crds(&tb).await;
    create_namespace(&tb.client(), "apps").await;
    kubectl_apply(
        &tb,
        &format!(
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: charts\n  namespace: apps\nspec:\n  interval: 1m\n  url: {url}\n"
        ),
    );
    Some(Bed {
        tb,
        repo,
        url,
        _server,
    })
}

const RELEASE: &str = r#"
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: demo
  namespace: apps
spec:
  interval: 1m
  chart:
    spec:
      chart: demo
      version: "0.x"
      sourceRef:
        kind: HelmRepository
        name: charts
      interval: 1m
  install:
    timeout: 60s
  upgrade:
    timeout: 15s
    remediation:
      retries: 1
  valuesFrom:
    - kind: ConfigMap
      name: demo-values
  values:
    replicas: 1
"#;

async fn release(client: &kube::Client) -> HelmRelease {
    Api::<HelmRelease>::namespaced(client.clone(), "apps")
        .get("demo")
        .await
        .expect("HelmRelease")
}

fn condition(hr: &HelmRelease, type_: &str) -> Option<(String, String, String)> {
    hr.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// `helm history` of the release: (revision, status, chart), oldest first.
fn helm_history(tb: &Testbed) -> Vec<(i64, String, String)> {
    let out = helm(&[
        "history",
        "demo",
        "--namespace",
        "apps",
        "--output",
        "json",
        "--kubeconfig",
        tb.kubeconfig().to_str().expect("utf8"),
    ]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json");
    list.iter()
        .map(|r| {
            (
                r["revision"].as_i64().unwrap_or_default(),
                r["status"].as_str().unwrap_or_default().to_owned(),
                r["chart"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn status_history(hr: &HelmRelease) -> Vec<(i64, String, String)> {
    let mut out: Vec<_> = hr
        .status
        .iter()
        .flat_map(|s| s.history.iter())
        .map(|h| {
            (
                h.version,
                h.status.clone(),
                format!("{}-{}", h.chart_name, h.chart_version),
            )
        })
        .collect();
    out.reverse();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helm_release_installs_upgrades_remediates_and_uninstalls() {
    let Some(Bed {
        tb,
        repo,
        url,
        _server,
    }) = bed().await
    else {
        return;
    };
    let client = tb.client();
    let _controllers = start_controllers(&tb);
    kubectl_apply(
        &tb,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo-values\n  namespace: apps\ndata:\n  values.yaml: |\n    message: from the ConfigMap\n",
    );
    kubectl_apply(&tb, RELEASE);

    // Installed from the repository, with the ConfigMap's values.
    let hr = eventually(Duration::from_secs(120), "the release installed", || async {
        let hr = release(&client).await;
        condition(&hr, "Ready")
            .filter(|(s, _, _)| s == "True")
            .map(|_| hr)
    })
    .await;
    let (_, reason, message) = condition(&hr, "Ready").expect("Ready");
    assert_eq!(reason, "InstallSucceeded");
    assert_eq!(
        message,
        "Helm install succeeded for release apps/demo.v1 with chart demo@0.1.0"
    );
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "apps");
    let rendered = configmaps
        .get("demo-message")
        .await
        .expect("the chart's ConfigMap");
    assert_eq!(
        rendered
            .data
            .unwrap_or_default()
            .get("message")
            .map(String::as_str),
        Some("from the ConfigMap")
    );
    let chart: HelmChart = Api::namespaced(client.clone(), "apps")
        .get("apps-demo")
        .await
        .expect("HelmChart");
    assert_eq!(
        chart
            .status
            .and_then(|s| s.artifact)
            .map(|a| a.revision)
            .as_deref(),
        Some("0.1.0")
    );

    // A new version in the range: upgraded.
    publish(repo.path(), "0.2.0", "ghcr.io/stefanprodan/podinfo:6.0.2", &url);
    kubectl(
        &tb,
        &[
            "annotate",
            "--overwrite",
            "-n",
            "apps",
            "helmrepository",
            "charts",
            "reconcile.fluxcd.io/requestedAt=1",
        ],
    );
    let hr = eventually(Duration::from_secs(120), "the upgrade to 0.2.0", || async {
        let hr = release(&client).await;
        condition(&hr, "Ready")
            .filter(|(s, _, m)| s == "True" && m.contains("demo@0.2.0"))
            .map(|_| hr)
    })
    .await;
    assert_eq!(
        condition(&hr, "Ready").map(|c| c.2).as_deref(),
        Some("Helm upgrade succeeded for release apps/demo.v2 with chart demo@0.2.0")
    );
    assert_eq!(
        status_history(&hr),
        helm_history(&tb),
        "status.history is helm history"
    );

    // A version that never gets ready: the failed upgrade is rolled back, tried once more,
    // rolled back again, and the release stalls on 0.2.0.
    publish(repo.path(), "0.3.0", "registry.invalid/podinfo:6.0.3", &url);
    kubectl(
        &tb,
        &[
            "annotate",
            "--overwrite",
            "-n",
            "apps",
            "helmrepository",
            "charts",
            "reconcile.fluxcd.io/requestedAt=2",
        ],
    );
    let hr = eventually(Duration::from_secs(240), "the retries spent", || async {
        let hr = release(&client).await;
        condition(&hr, "Stalled")
            .filter(|(s, _, _)| s == "True")
            .map(|_| hr)
    })
    .await;
    let (_, reason, message) = condition(&hr, "Stalled").expect("Stalled");
    assert_eq!(
        (reason.as_str(), message.as_str()),
        ("RetriesExceeded", "Failed to upgrade after 2 attempt(s)")
    );
    assert_eq!(condition(&hr, "Ready").map(|c| c.0).as_deref(), Some("False"));
    // Helm keeps maxHistory (5) revisions: the install is pruned by the last rollback.
    let history = helm_history(&tb);
    let statuses: Vec<(&str, &str)> = history.iter().map(|(_, s, c)| (s.as_str(), c.as_str())).collect();
    assert_eq!(
        statuses,
        [
            ("superseded", "demo-0.2.0"),
            ("failed", "demo-0.3.0"),
            ("superseded", "demo-0.2.0"),
            ("failed", "demo-0.3.0"),
            ("deployed", "demo-0.2.0"),
        ],
        "an upgrade, then two failed upgrades each rolled back"
    );
    assert_eq!(status_history(&hr), history);

    // Deleted: the release is uninstalled and its HelmChart deleted.
    Api::<HelmRelease>::namespaced(client.clone(), "apps")
        .delete("demo", &DeleteParams::default())
        .await
        .expect("delete");
    eventually(Duration::from_secs(90), "the release uninstalled", || async {
        let gone = Api::<HelmRelease>::namespaced(client.clone(), "apps")
            .get_opt("demo")
            .await
            .expect("get")
            .is_none();
        let chart_gone = Api::<HelmChart>::namespaced(client.clone(), "apps")
            .get_opt("apps-demo")
            .await
            .expect("get")
            .is_none();
        (gone && chart_gone && configmaps.get_opt("demo-message").await.expect("get").is_none()).then_some(())
    })
    .await;
    let out = Command::new(serin_testbed::helm_program())
        .args([
            "history",
            "demo",
            "--namespace",
            "apps",
            "--kubeconfig",
            tb.kubeconfig().to_str().expect("utf8"),
        ])
        .output()
        .expect("helm runs");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("release: not found"),
        "helm history after deletion"
    );
}

/// The events recorded on the HelmRelease `apps/NAME` with this reason: their messages.
async fn events(client: &kube::Client, name: &str, reason: &str) -> Vec<String> {
    use k8s_openapi::api::core::v1::Event;
    let api: Api<Event> = Api::namespaced(client.clone(), "apps");
    api.list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some("HelmRelease")
                && e.involved_object.name.as_deref() == Some(name)
                && e.reason.as_deref() == Some(reason)
        })
        .filter_map(|e| e.message)
        .collect()
}

async fn deployment(client: &kube::Client, name: &str) -> k8s_openapi::api::apps::v1::Deployment {
    Api::namespaced(client.clone(), "apps")
        .get(name)
        .await
        .expect("Deployment")
}

fn image_of(d: &k8s_openapi::api::apps::v1::Deployment) -> String {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

fn replicas_of(d: &k8s_openapi::api::apps::v1::Deployment) -> Option<i32> {
    d.spec.as_ref().and_then(|s| s.replicas)
}

/// Asks for a reconcile of the HelmRelease `apps/canary-demo` and waits until it was handled.
async fn reconcile_now(tb: &Testbed, client: &kube::Client, token: &str) -> HelmRelease {
    kubectl(
        tb,
        &[
            "annotate",
            "--overwrite",
            "-n",
            "apps",
            "helmrelease",
            "canary-demo",
            &format!("reconcile.fluxcd.io/requestedAt={token}"),
        ],
    );
    eventually(Duration::from_secs(60), "the reconcile handled", || async {
        let hr: HelmRelease = Api::namespaced(client.clone(), "apps")
            .get("canary-demo")
            .await
            .expect("HelmRelease");
        (hr.status.as_ref()?.last_handled_reconcile_at.as_deref() == Some(token)).then_some(hr)
    })
    .await
}

const CANARY_RELEASE: &str = r#"
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: canary-demo
  namespace: apps
spec:
  interval: 1h
  releaseName: demo
  chart:
    spec:
      chart: demo
      sourceRef:
        kind: HelmRepository
        name: charts
  install:
    timeout: 60s
  upgrade:
    timeout: 60s
  driftDetection:
    mode: enabled
  commonMetadata:
    labels:
      owner: platform
  postRenderers:
    - kustomize:
        images:
          - name: ghcr.io/stefanprodan/podinfo
            newTag: 6.0.4
        patches:
          - target:
              kind: Deployment
            patch: |
              apiVersion: apps/v1
              kind: Deployment
              metadata:
                name: any
                labels:
                  team: web
  values:
    replicas: 2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helm_release_post_renders_keeps_serins_share_and_corrects_drift() {
    let Some(Bed {
        tb,
        repo: _repo,
        url: _,
        _server,
    }) = bed().await
    else {
        return;
    };
    let client = tb.client();
    // A Canary targets the chart's Deployment, and serin made the ConfigMap the chart renders.
    kubectl_apply(
        &tb,
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: demo\n  namespace: apps\nspec:\n  targetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: demo\n  service:\n    port: 9898\n  analysis:\n    interval: 1m\n    threshold: 5\n    maxWeight: 50\n    stepWeight: 10\n",
    );
    let canary_uid = kubectl(
        &tb,
        &[
            "get",
            "-n",
            "apps",
            "canary",
            "demo",
            "-o",
            "jsonpath={.metadata.uid}",
        ],
    );
    kubectl_apply(
        &tb,
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo-message\n  namespace: apps\n  ownerReferences:\n    - apiVersion: flagger.app/v1beta1\n      kind: Canary\n      name: demo\n      uid: {}\n      controller: true\ndata:\n  message: serin's\n",
            canary_uid.trim()
        ),
    );
    let _controllers = start_controllers(&tb);
    kubectl_apply(&tb, CANARY_RELEASE);

    // Released through the post-renderer; Ready waits for the Canary.
    let hr = eventually(
        Duration::from_secs(120),
        "the release waiting for its Canary",
        || async {
            let hr: HelmRelease = Api::namespaced(client.clone(), "apps")
                .get("canary-demo")
                .await
                .expect("HelmRelease");
            condition(&hr, "Ready")
                .filter(|(s, _, _)| s == "Unknown")
                .map(|_| hr)
        },
    )
    .await;
    let (_, reason, message) = condition(&hr, "Ready").expect("Ready");
    assert_eq!(
        (reason.as_str(), message.as_str()),
        ("Progressing", "Canary 'apps/demo': Canary not yet initialized")
    );
    assert_eq!(
        condition(&hr, "Reconciling").map(|c| (c.0, c.1)),
        Some(("True".to_owned(), "Progressing".to_owned())),
        "a Kustomization's health check waits too"
    );
    let deploy = deployment(&client, "demo").await;
    assert_eq!(
        image_of(&deploy),
        "ghcr.io/stefanprodan/podinfo:6.0.4",
        "images post-renderer"
    );
    let labels = deploy.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("team").map(String::as_str),
        Some("web"),
        "patch post-renderer"
    );
    assert_eq!(
        labels.get("owner").map(String::as_str),
        Some("platform"),
        "commonMetadata"
    );
    assert_eq!(replicas_of(&deployment(&client, "demo").await), Some(2));
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "apps");
    let serins = configmaps.get("demo-message").await.expect("ConfigMap");
    assert_eq!(
        serins.data.unwrap_or_default().get("message").map(String::as_str),
        Some("serin's"),
        "the object serin made is left out of the release"
    );
    assert!(
        !helm(&[
            "get",
            "manifest",
            "demo",
            "-n",
            "apps",
            "--kubeconfig",
            tb.kubeconfig().to_str().expect("utf8")
        ])
        .contains("kind: ConfigMap"),
        "the release does not hold serin's ConfigMap"
    );

    // serin initializes the Canary and scales the target to zero: Ready, and no drift.
    kubectl(&tb, &["scale", "-n", "apps", "deployment/demo", "--replicas=0"]);
    mark_canary(&client, "apps", "demo", "Initialized").await;
    let hr = reconcile_now(&tb, &client, "1").await;
    assert_eq!(condition(&hr, "Ready").map(|c| c.0).as_deref(), Some("True"));
    assert_eq!(
        replicas_of(&deployment(&client, "demo").await),
        Some(0),
        "serin's replicas kept"
    );
    assert!(events(&client, "canary-demo", "DriftCorrected").await.is_empty());

    // A hand edit of the image is drift: corrected, the replicas still serin's.
    kubectl(
        &tb,
        &[
            "set",
            "image",
            "-n",
            "apps",
            "deployment/demo",
            "web=ghcr.io/stefanprodan/podinfo:6.0.9",
        ],
    );
    reconcile_now(&tb, &client, "2").await;
    let deploy = deployment(&client, "demo").await;
    assert_eq!(
        image_of(&deploy),
        "ghcr.io/stefanprodan/podinfo:6.0.4",
        "drift corrected"
    );
    assert_eq!(replicas_of(&deploy), Some(0));
    assert_eq!(
        events(&client, "canary-demo", "DriftCorrected").await,
        ["Cluster state of release apps/demo.v1 has been corrected:\nDeployment/apps/demo configured"]
    );

    // An upgrade keeps serin's replicas too.
    kubectl(
        &tb,
        &[
            "patch",
            "-n",
            "apps",
            "helmrelease",
            "canary-demo",
            "--type=merge",
            "-p",
            r#"{"spec":{"values":{"replicas":3,"message":"v2"}}}"#,
        ],
    );
    eventually(Duration::from_secs(120), "the upgrade", || async {
        let hr: HelmRelease = Api::namespaced(client.clone(), "apps")
            .get("canary-demo")
            .await
            .expect("HelmRelease");
        condition(&hr, "Released").filter(|(_, r, m)| r == "UpgradeSucceeded" && m.contains("demo.v2"))
    })
    .await;
    assert_eq!(
        replicas_of(&deployment(&client, "demo").await),
        Some(0),
        "serin's replicas kept on upgrade"
    );

    // The CLI: reconcile with its sources, the tree of what the release installed, suspend
    // and resume.
    let out = cli(
        &tb,
        &[
            "reconcile",
            "helmrelease",
            "canary-demo",
            "--with-source",
            "-n",
            "apps",
        ],
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for line in [
        "► annotating HelmRepository charts in apps namespace",
        "► annotating HelmChart apps-canary-demo in apps namespace",
        "► annotating HelmRelease canary-demo in apps namespace",
        "✔ applied revision 0.1.0",
    ] {
        assert!(err.contains(line), "{line:?} in\n{err}");
    }
    let out = cli(&tb, &["tree", "helmrelease", "canary-demo", "-n", "apps"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "HelmRelease/apps/canary-demo\n└── Deployment/apps/demo\n",
        "the release holds the Deployment, not serin's ConfigMap"
    );
    let out = cli(&tb, &["suspend", "helmrelease", "canary-demo", "-n", "apps"]).await;
    assert!(out.status.success());
    let suspended = cli(&tb, &["get", "helmreleases", "-n", "apps"]).await;
    assert!(String::from_utf8_lossy(&suspended.stdout).contains("canary-demo\t0.1.0   \tTrue     \t"));
    let out = cli(&tb, &["resume", "helmrelease", "canary-demo", "-n", "apps"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("✔ applied revision 0.1.0"));

    // warn: drift is only reported.
    kubectl(
        &tb,
        &[
            "patch",
            "-n",
            "apps",
            "helmrelease",
            "canary-demo",
            "--type=merge",
            "-p",
            r#"{"spec":{"driftDetection":{"mode":"warn"}}}"#,
        ],
    );
    kubectl(
        &tb,
        &[
            "set",
            "image",
            "-n",
            "apps",
            "deployment/demo",
            "web=ghcr.io/stefanprodan/podinfo:6.0.9",
        ],
    );
    reconcile_now(&tb, &client, "3").await;
    eventually(Duration::from_secs(30), "the drift reported", || async {
        let found = events(&client, "canary-demo", "DriftDetected").await;
        (found == ["Cluster state of release apps/demo.v2 has drifted from the desired state:\nDeployment/apps/demo configured"]).then_some(())
    })
    .await;
    assert_eq!(
        image_of(&deployment(&client, "demo").await),
        "ghcr.io/stefanprodan/podinfo:6.0.9",
        "warn leaves the drift"
    );
}

const TESTED_RELEASE: &str = r#"
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: tested
  namespace: apps
spec:
  interval: 1h
  chart:
    spec:
      chart: demo
      sourceRef:
        kind: HelmRepository
        name: charts
  install:
    timeout: 60s
  upgrade:
    timeout: 60s
    remediation:
      retries: 1
  test:
    enable: true
    timeout: 60s
  values:
    replicas: 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helm_release_runs_its_tests_and_remediates_a_failing_one() {
    let Some(Bed {
        tb,
        repo: _repo,
        url: _,
        _server,
    }) = bed().await
    else {
        return;
    };
    let client = tb.client();
    let _controllers = start_controllers(&tb);
    kubectl_apply(&tb, TESTED_RELEASE);
    let get = || async {
        Api::<HelmRelease>::namespaced(client.clone(), "apps")
            .get("tested")
            .await
            .expect("HelmRelease")
    };

    // Installed and tested: Ready copies TestSuccess.
    let hr = eventually(Duration::from_secs(120), "the release tested", || async {
        let hr = get().await;
        condition(&hr, "TestSuccess").is_some().then_some(hr)
    })
    .await;
    assert_eq!(
        condition(&hr, "TestSuccess"),
        Some((
            "True".into(),
            "TestSucceeded".into(),
            "Helm test succeeded for release apps/tested.v1 with chart demo@0.1.0: 1 test hooks completed successfully".into()
        ))
    );
    assert_eq!(
        condition(&hr, "Ready").map(|c| (c.0, c.1)),
        Some(("True".into(), "TestSucceeded".into()))
    );

    // Tests that fail: each upgrade is rolled back, then the release stalls.
    kubectl(
        &tb,
        &[
            "patch",
            "-n",
            "apps",
            "helmrelease",
            "tested",
            "--type=merge",
            "-p",
            r#"{"spec":{"values":{"failTests":true}}}"#,
        ],
    );
    let hr = eventually(
        Duration::from_secs(240),
        "the failing tests remediated",
        || async {
            let hr = get().await;
            condition(&hr, "Stalled").filter(|c| c.0 == "True").map(|_| hr)
        },
    )
    .await;
    assert_eq!(
        condition(&hr, "Stalled").map(|c| (c.1, c.2)),
        Some((
            "RetriesExceeded".into(),
            "Failed to upgrade after 2 attempt(s)".into()
        ))
    );
    let (status, reason, message) = condition(&hr, "TestSuccess").expect("TestSuccess");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "TestFailed"));
    assert!(
        message.starts_with("Helm test failed for release apps/tested.v"),
        "{message}"
    );
    assert_eq!(
        condition(&hr, "Remediated").map(|c| c.1).as_deref(),
        Some("RollbackSucceeded")
    );
    assert_eq!(condition(&hr, "Ready").map(|c| c.0).as_deref(), Some("False"));
    // The release runs the first revision's values again.
    let values = helm(&[
        "get",
        "values",
        "tested",
        "-n",
        "apps",
        "-o",
        "json",
        "--kubeconfig",
        tb.kubeconfig().to_str().expect("utf8"),
    ]);
    assert!(!values.contains("failTests"), "rolled back: {values}");
}
