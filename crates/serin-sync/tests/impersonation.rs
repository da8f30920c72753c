//! `serviceAccountName`: the Kustomization applies as that ServiceAccount (impersonation), so
//! its RBAC decides what it may change.

mod support;

use std::time::Duration;

use kube::Api;
use serin_testbed::Testbed;
use support::*;

const ONLY_CONFIGMAPS: &str = "- apiGroups: [\"\"]\n  resources: [configmaps]\n  verbs: [get, list, watch, create, update, patch, delete]\n";
const CONFIGMAPS_AND_DEPLOYMENTS: &str = "- apiGroups: [\"\"]\n  resources: [configmaps]\n  verbs: [get, list, watch, create, update, patch, delete]\n- apiGroups: [apps]\n  resources: [deployments]\n  verbs: [get, list, watch, create, update, patch, delete]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_as_the_service_account() {
    let repo = GitFixture::from_examples();
    let manifests = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: team-settings\n  namespace: team\ndata:\n  a: b\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: team-app\n  namespace: team\nspec:\n  selector:\n    matchLabels: {app: team-app}\n  template:\n    metadata:\n      labels: {app: team-app}\n    spec:\n      containers:\n      - name: app\n        image: ghcr.io/stefanprodan/podinfo:6.5.0\n";
    let rev = repo.commit(&[("apps/team/app.yaml", Some(manifests))], "Team app");

    let tb = Testbed::start().await.expect("test bed");
    install_crds(&tb).await;
    create_namespace(&tb.client(), "flux-system").await;
    create_namespace(&tb.client(), "team").await;
    tb.bind_cluster_role("deployer", ONLY_CONFIGMAPS, "flux-system", "deployer")
        .await
        .expect("RBAC");
    let kubeconfig = kube::config::Kubeconfig::read_from(tb.kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    let _controllers = start_controllers_with(&tb, Some(config));
    let bootstrap = bootstrap_yaml(&repo.url(), "./clusters/dev", "1m");
    kubectl_apply(&tb, bootstrap.split("---").next().expect("the GitRepository"));
    kubectl_apply(
        &tb,
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: team\n  namespace: flux-system\nspec:\n  interval: 10m\n  path: ./apps/team\n  prune: true\n  serviceAccountName: deployer\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n",
    );
    let message = wait_failed(&tb.client(), "team", "ReconciliationFailed").await;
    assert!(
        message.contains("Deployment/team/team-app") && message.contains("forbidden"),
        "{message}"
    );

    tb.bind_cluster_role("deployer", CONFIGMAPS_AND_DEPLOYMENTS, "flux-system", "deployer")
        .await
        .expect("RBAC");
    request_reconcile(&tb.client(), "team").await;
    wait_applied(
        &tb.client(),
        "team",
        &format!("main@sha1:{rev}"),
        Duration::from_secs(60),
    )
    .await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(tb.client(), "team");
    assert!(deployments.get_opt("team-app").await.expect("get").is_some());

    // The deployer may not list Canaries, so any Deployment may be a Canary's target: serin-sync
    // leaves replicas alone (serin scaled this one to 0) and says why.
    let scale = serde_json::json!({"spec": {"replicas": 0}});
    let as_serin = kube::api::PatchParams {
        field_manager: Some("serin".into()),
        ..Default::default()
    };
    deployments
        .patch("team-app", &as_serin, &kube::api::Patch::Merge(&scale))
        .await
        .expect("scaled");
    let with_replicas = manifests.replace("spec:\n  selector:", "spec:\n  replicas: 2\n  selector:");
    let rev = repo.commit(&[("apps/team/app.yaml", Some(&with_replicas))], "Two replicas");
    // As `flux reconcile kustomization team --with-source`: the source's interval is a minute.
    request_source_reconcile(&tb.client()).await;
    request_reconcile(&tb.client(), "team").await;
    let ks = wait_applied(
        &tb.client(),
        "team",
        &format!("main@sha1:{rev}"),
        Duration::from_secs(60),
    )
    .await;
    let replicas = deployments
        .get("team-app")
        .await
        .expect("get")
        .spec
        .and_then(|s| s.replicas);
    assert_eq!(
        replicas,
        Some(0),
        "replicas are not reset while Canary targets are unknown"
    );
    let condition = ks
        .status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "CanaryTargetsKnown"))
        .expect("the condition says why");
    assert_eq!(condition.status, "False");
    assert!(
        condition.message.starts_with("cannot list Canaries (")
            && condition
                .message
                .ends_with("): the replicas of every Deployment are left as they are"),
        "{}",
        condition.message
    );
}
