//! The example monorepo's staging cluster (`examples/gitops/clusters/staging`) synced whole on
//! the real control plane with real Helm: a HelmRepository served by the test (examples/charts),
//! the infrastructure Kustomization with a HelmRelease from it, the apps Kustomization with a
//! HelmRelease of the chart in the same Git repository and its Canary, and an Alert to a
//! Slack-compatible webhook. Every object of `serin-sync get all -A` ends Ready, and the
//! webhook gets the HelmReleases' and Kustomizations' events.

mod support;

use std::{path::Path, time::Duration};

use serin_testbed::Testbed;
use support::*;

/// The root Kustomization of the staging cluster, its variables from `cluster-settings`.
fn bootstrap(url: &str) -> String {
    format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: flux-system\n  namespace: flux-system\nspec:\n  interval: 1m\n  ref:\n    branch: main\n  url: {url}\n---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: flux-system\n  namespace: flux-system\nspec:\n  interval: 10m\n  path: ./clusters/staging\n  prune: true\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n  postBuild:\n    substituteFrom:\n      - kind: ConfigMap\n        name: cluster-settings\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_monorepo_reconciles_whole() {
    let tb = Testbed::start().await.expect("test bed");
    if tb.kind() == serin_testbed::ClusterKind::Emulator {
        eprintln!(
            "skipped on the API emulator: helm --wait needs ReplicaSets (FIDELITY.md row 5); run it with SERIN_TESTBED_CLUSTER=real"
        );
        return;
    }
    // The chart repository and the Slack-compatible webhook.
    let charts = tempfile::tempdir().expect("tempdir");
    let (chart_url, _charts) = serve_dir(charts.path().to_path_buf()).await;
    publish_chart(
        &repo_root().join("examples/charts/cache"),
        charts.path(),
        &chart_url,
        None,
    );
    let (slack_url, received, _slack) = slack_sink().await;

    install_crds(&tb).await;
    let client = tb.client();
    create_namespace(&client, "flux-system").await;
    kubectl_apply(
        &tb,
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cluster-settings\n  namespace: flux-system\ndata:\n  chart_repository: {chart_url}\n  slack_address: {slack_url}\n"
        ),
    );
    let git = GitFixture::from_examples();
    let _controllers = start_controllers(&tb);
    kubectl_apply(&tb, &bootstrap(&git.url()));

    // serin (not running here) initializes the Canary the app's chart renders.
    mark_canary(&client, "podinfo", "podinfo", "Initialized").await;

    let expected = [
        ("flux-system", "gitrepository/flux-system"),
        ("flux-system", "helmrepository/testbed-charts"),
        ("flux-system", "helmchart/cache-cache"),
        ("flux-system", "helmchart/podinfo-podinfo"),
        ("flux-system", "kustomization/flux-system"),
        ("flux-system", "kustomization/infrastructure"),
        ("flux-system", "kustomization/apps"),
        ("cache", "helmrelease/cache"),
        ("podinfo", "helmrelease/podinfo"),
    ];
    let table = eventually(Duration::from_secs(300), "every object Ready", || async {
        let out = cli(&tb, &["get", "all", "-A"]).await;
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        let ready = |ns: &str, name: &str| {
            table.lines().any(|l| {
                let cells: Vec<&str> = l.split('\t').map(str::trim).collect();
                cells.len() >= 5 && cells[0] == ns && cells[1] == name && cells[4] == "True"
            })
        };
        let all_ready = expected.iter().all(|(ns, name)| ready(ns, name));
        let none_else = table
            .lines()
            .filter(|l| !l.starts_with("NAMESPACE") && !l.trim().is_empty())
            .all(|l| l.split('\t').nth(4).map(str::trim) == Some("True"));
        (all_ready && none_else).then_some(table)
    })
    .await;
    eprintln!("{table}");

    // The release of the in-repository chart: the Deployment and the Canary, not serin's objects.
    let out = cli(&tb, &["tree", "helmrelease", "podinfo", "-n", "podinfo"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "HelmRelease/podinfo/podinfo\n├── Deployment/podinfo/podinfo\n└── Canary/podinfo/podinfo\n"
    );
    let out = helm(&[
        "list",
        "-A",
        "--kubeconfig",
        tb.kubeconfig().to_str().expect("utf8"),
        "-o",
        "json",
    ]);
    let releases: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json");
    let mut names: Vec<String> = releases
        .iter()
        .map(|r| {
            format!(
                "{}/{} {}",
                r["namespace"].as_str().unwrap_or_default(),
                r["name"].as_str().unwrap_or_default(),
                r["chart"].as_str().unwrap_or_default()
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["cache/cache cache-1.0.0", "podinfo/podinfo podinfo-0.1.0"],
        "helm list agrees"
    );

    // The Slack-compatible webhook got the HelmReleases' and Kustomizations' events.
    for author in [
        "helmrelease/cache.cache",
        "helmrelease/podinfo.podinfo",
        "kustomization/apps.flux-system",
        "kustomization/infrastructure.flux-system",
    ] {
        eventually(
            Duration::from_secs(30),
            &format!("an event of {author}"),
            || async { attachment_by(&received, author) },
        )
        .await;
    }
    let installed = eventually(Duration::from_secs(30), "the cache's install sent", || async {
        received
            .lock()
            .expect("lock")
            .iter()
            .find(|m| {
                m["attachments"][0]["author_name"] == "helmrelease/cache.cache"
                    && m["attachments"][0]["text"]
                        == "Helm install succeeded for release cache/cache.v1 with chart cache@1.0.0"
            })
            .cloned()
    })
    .await;
    assert_eq!(installed["channel"], "deployments");
    assert_eq!(installed["username"], "helm-controller");
    assert_eq!(installed["attachments"][0]["color"], "good");
    let errors: Vec<String> = received
        .lock()
        .expect("lock")
        .iter()
        .filter(|m| m["attachments"][0]["color"] == "danger")
        .map(|m| {
            format!(
                "{}: {}",
                m["attachments"][0]["author_name"], m["attachments"][0]["text"]
            )
        })
        .collect();
    assert!(errors.is_empty(), "no error was reported: {errors:#?}");
    assert!(Path::new(&repo_root().join("examples/gitops/charts/podinfo/Chart.yaml")).is_file());
}
