//! serin-sync on the test bed, from a local Git repository made of `examples/gitops`: the
//! bootstrap, dependency order, ownership labels, inventory, pruning, drift, suspend/resume,
//! serin's replicas and the error cases of the acceptance list.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, api::ListParams};
use serin_sync::api::Kustomization;
use serin_testbed::Testbed;
use support::*;

const DEADLINE: Duration = Duration::from_secs(60);

async fn bootstrap() -> (Testbed, GitFixture, Controllers) {
    let tb = Testbed::start().await.expect("test bed");
    install_crds(&tb).await;
    create_namespace(&tb.client(), "flux-system").await;
    let repo = GitFixture::from_examples();
    let controllers = start_controllers(&tb);
    kubectl_apply(&tb, &bootstrap_yaml(&repo.url(), "./clusters/dev", "2s"));
    (tb, repo, controllers)
}

/// Acceptance 1: infrastructure before apps, ownership labels, Ready=True, inventory complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_the_dev_cluster_from_git() {
    let (tb, repo, _controllers) = bootstrap().await;
    let client = tb.client();
    let revision = format!("main@sha1:{}", repo.head());
    let infra = wait_applied(&client, "infrastructure", &revision, DEADLINE).await;

    // apps waits for infrastructure, then for its Canary, which serin would initialize.
    mark_canary(&client, "podinfo", "podinfo", "Initialized").await;
    let apps = wait_applied(&client, "apps", &revision, DEADLINE).await;
    let root = wait_applied(&client, "flux-system", &revision, DEADLINE).await;

    let ready_at = |ks: &Kustomization| {
        ks.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.last_transition_time.0)
            .expect("Ready")
    };
    assert!(
        ready_at(&infra) <= ready_at(&apps),
        "infrastructure is ready before apps"
    );
    let apps_ready = apps
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .expect("Ready");
    assert_eq!(apps_ready.reason, "ReconciliationSucceeded");
    assert_eq!(apps_ready.message, format!("Applied revision: {revision}"));

    let ids = |ks: &Kustomization| -> Vec<String> {
        ks.status
            .as_ref()
            .and_then(|s| s.inventory.as_ref())
            .map(|i| i.entries.iter().map(|e| format!("{} {}", e.id, e.v)).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        ids(&infra),
        [
            "_database__Namespace v1",
            "_podinfo__Namespace v1",
            "database_postgres__Service v1",
            "database_postgres_apps_StatefulSet v1",
            "podinfo_flagger-loadtester__Service v1",
            "podinfo_flagger-loadtester_apps_Deployment v1",
            "podinfo_latency_flagger.app_MetricTemplate v1beta1",
        ]
    );
    assert_eq!(
        ids(&apps),
        [
            "podinfo_podinfo_apps_Deployment v1",
            "podinfo_podinfo_autoscaling_HorizontalPodAutoscaler v2",
            "podinfo_podinfo_flagger.app_Canary v1beta1",
        ]
    );
    assert_eq!(
        ids(&root),
        [
            "flux-system_apps_kustomize.toolkit.fluxcd.io_Kustomization v1",
            "flux-system_infrastructure_kustomize.toolkit.fluxcd.io_Kustomization v1",
        ]
    );

    // Every object carries its Kustomization's ownership labels; substitution ran.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "podinfo");
    let podinfo = deployments.get("podinfo").await.expect("podinfo");
    let labels = podinfo.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("kustomize.toolkit.fluxcd.io/name").map(String::as_str),
        Some("apps")
    );
    assert_eq!(
        labels
            .get("kustomize.toolkit.fluxcd.io/namespace")
            .map(String::as_str),
        Some("flux-system")
    );
    assert_eq!(
        podinfo
            .metadata
            .annotations
            .unwrap_or_default()
            .get("example.serin.dev/cluster")
            .map(String::as_str),
        Some("dev")
    );
    let owned = tb
        .kubectl()
        .args([
            "get",
            "deploy,svc,statefulset",
            "-A",
            "-l",
            "kustomize.toolkit.fluxcd.io/name=infrastructure",
            "-o",
            "name",
        ])
        .output()
        .expect("kubectl");
    let owned = String::from_utf8_lossy(&owned.stdout);
    for name in [
        "deployment.apps/flagger-loadtester",
        "service/flagger-loadtester",
        "service/postgres",
        "statefulset.apps/postgres",
    ] {
        assert!(owned.contains(name), "{name} labelled: {owned}");
    }
    let src = source(&client).await.expect("source");
    let artifact = src.status.and_then(|s| s.artifact).expect("artifact");
    assert_eq!(artifact.revision, revision);
    let _ = deployments.list(&ListParams::default()).await;
}
