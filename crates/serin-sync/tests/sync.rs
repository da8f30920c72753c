//! serin-sync on the test bed, from a local Git repository made of `examples/gitops`: the
//! bootstrap, dependency order, ownership labels, inventory, pruning, drift, suspend/resume,
//! serin's replicas and the error cases of the issue's acceptance list.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, api::ListParams};
use serin_sync::api::Kustomization;
use serin_testbed::Testbed;
use support::*;

const DEADLINE: Duration = Duration::from_secs(60);

async fn bootstrap() -> (Testbed, GitFixture, Controllers) {
    bootstrap_with_interval("2s").await
}

async fn bootstrap_with_interval(interval: &str) -> (Testbed, GitFixture, Controllers) {
    let tb = Testbed::start().await.expect("test bed");
    install_crds(&tb).await;
    create_namespace(&tb.client(), "flux-system").await;
    let repo = GitFixture::from_examples();
    let controllers = start_controllers(&tb);
    kubectl_apply(&tb, &bootstrap_yaml(&repo.url(), "./clusters/dev", interval));
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

pub async fn synced() -> (Testbed, GitFixture, Controllers, String) {
    synced_with_interval("2s").await
}

pub async fn synced_with_interval(interval: &str) -> (Testbed, GitFixture, Controllers, String) {
    let (tb, repo, controllers) = bootstrap_with_interval(interval).await;
    mark_canary(&tb.client(), "podinfo", "podinfo", "Initialized").await;
    let revision = format!("main@sha1:{}", repo.head());
    wait_applied(&tb.client(), "apps", &revision, DEADLINE).await;
    (tb, repo, controllers, revision)
}

const CONFIG_MAP: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: NAME\n  namespace: podinfo\nANNOTATIONSdata:\n  a: b\n";

fn config_map(name: &str, annotations: &str) -> String {
    CONFIG_MAP
        .replace("NAME", name)
        .replace("ANNOTATIONS", annotations)
}

async fn config_map_exists(client: &kube::Client, name: &str) -> bool {
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), "podinfo");
    api.get_opt(name).await.expect("get").is_some()
}

const DEV_KUSTOMIZATION: &str = "apps/dev/kustomization.yaml";

fn dev_kustomization(repo: &GitFixture) -> String {
    std::fs::read_to_string(repo.work().join(DEV_KUSTOMIZATION)).expect("read")
}

/// Acceptance 3: prune, `prune: disabled`, `kubectl edit` reverted, suspend and resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prunes_restores_drift_and_suspends() {
    let (tb, repo, _controllers, _) = synced().await;
    let client = tb.client();

    // Two ConfigMaps join the overlay, one of them never to be pruned.
    let with_maps = dev_kustomization(&repo).replace(
        "  - ../base/podinfo\n",
        "  - ../base/podinfo\n  - extra.yaml\n  - keep.yaml\n",
    );
    let rev = repo.commit(
        &[
            (DEV_KUSTOMIZATION, Some(&with_maps)),
            ("apps/dev/extra.yaml", Some(&config_map("extra", ""))),
            (
                "apps/dev/keep.yaml",
                Some(&config_map(
                    "keep",
                    "  annotations:\n    kustomize.toolkit.fluxcd.io/prune: disabled\n",
                )),
            ),
        ],
        "Add two ConfigMaps",
    );
    wait_applied(&client, "apps", &format!("main@sha1:{rev}"), DEADLINE).await;
    assert!(config_map_exists(&client, "extra").await && config_map_exists(&client, "keep").await);

    // Removed from Git: extra and the HPA are pruned, keep stays.
    let without = dev_kustomization(&repo).replace("  - extra.yaml\n  - keep.yaml\n", "");
    let base =
        std::fs::read_to_string(repo.work().join("apps/base/podinfo/kustomization.yaml")).expect("read");
    let rev = repo.commit(
        &[
            (DEV_KUSTOMIZATION, Some(&without)),
            ("apps/dev/extra.yaml", None),
            ("apps/dev/keep.yaml", None),
            (
                "apps/base/podinfo/kustomization.yaml",
                Some(&base.replace("  - hpa.yaml\n", "")),
            ),
            ("apps/base/podinfo/hpa.yaml", None),
        ],
        "Remove the ConfigMaps and the HPA",
    );
    let apps = wait_applied(&client, "apps", &format!("main@sha1:{rev}"), DEADLINE).await;
    assert!(!config_map_exists(&client, "extra").await, "extra is pruned");
    assert!(
        config_map_exists(&client, "keep").await,
        "keep has prune: disabled"
    );
    let hpas: Api<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> =
        Api::namespaced(client.clone(), "podinfo");
    assert!(
        hpas.get_opt("podinfo").await.expect("get").is_none(),
        "the HPA is pruned"
    );
    let inventory = apps.status.and_then(|s| s.inventory).expect("inventory");
    assert!(
        inventory
            .entries
            .iter()
            .all(|e| !e.id.contains("HorizontalPodAutoscaler") && !e.id.contains("_extra_"))
    );

    // A real `kubectl edit` of a field Git declares is reverted on the next run.
    let edit = tb
        .kubectl()
        .args(["edit", "deployment/podinfo", "-n", "podinfo"])
        .env("EDITOR", "sed -i s/podinfo:6.5.0/podinfo:9.9.9/")
        .env("KUBE_EDITOR", "sed -i s/podinfo:6.5.0/podinfo:9.9.9/")
        .output()
        .expect("kubectl edit");
    assert!(
        edit.status.success(),
        "kubectl edit: {}",
        String::from_utf8_lossy(&edit.stderr)
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "podinfo");
    let image = |d: Deployment| {
        d.spec
            .and_then(|s| s.template.spec)
            .map(|s| s.containers[0].image.clone().unwrap_or_default())
            .unwrap_or_default()
    };
    assert_eq!(
        image(deployments.get("podinfo").await.expect("get")),
        "ghcr.io/stefanprodan/podinfo:9.9.9"
    );
    request_reconcile(&client, "apps").await;
    assert_eq!(
        image(deployments.get("podinfo").await.expect("get")),
        "ghcr.io/stefanprodan/podinfo:6.5.0"
    );

    // A field only a kubectl edit set is dropped too: serin-sync takes the kubectl managers'
    // fields over (as Flux does), so its next apply no longer keeps them.
    kubectl(
        &tb,
        &[
            "annotate",
            "deployment/podinfo",
            "-n",
            "podinfo",
            "example.com/manual=yes",
        ],
    );
    request_reconcile(&client, "apps").await;
    let annotations = deployments
        .get("podinfo")
        .await
        .expect("get")
        .metadata
        .annotations
        .unwrap_or_default();
    assert!(!annotations.contains_key("example.com/manual"), "{annotations:?}");
    assert_eq!(
        annotations.get("example.serin.dev/cluster").map(String::as_str),
        Some("dev")
    );

    // Suspended: a new commit is fetched but not applied; resumed: it is.
    set_suspend(&client, "apps", true).await;
    let with_late =
        dev_kustomization(&repo).replace("  - ../base/podinfo\n", "  - ../base/podinfo\n  - late.yaml\n");
    let rev = repo.commit(
        &[
            (DEV_KUSTOMIZATION, Some(&with_late)),
            ("apps/dev/late.yaml", Some(&config_map("late", ""))),
        ],
        "Add late",
    );
    let revision = format!("main@sha1:{rev}");
    wait_applied(&client, "infrastructure", &revision, DEADLINE).await;
    // A negative check needs a window: unsuspended, apps would apply within a second of its
    // dependency (dependency retry 0.5 s), so three seconds without it is telling.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !config_map_exists(&client, "late").await,
        "suspended: nothing applied"
    );
    let api: Api<Kustomization> = Api::namespaced(client.clone(), "flux-system");
    let suspended = api.get("apps").await.expect("apps");
    assert_ne!(
        suspended.status.and_then(|s| s.last_applied_revision).as_deref(),
        Some(revision.as_str())
    );
    set_suspend(&client, "apps", false).await;
    wait_applied(&client, "apps", &revision, DEADLINE).await;
    assert!(config_map_exists(&client, "late").await, "resumed: caught up");
}

/// Acceptance 5: each error gives Ready=False with Flux's reason and a message naming the
/// problem, and the applied state stays (nothing is pruned because a build failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_keep_the_applied_state() {
    let (tb, repo, _controllers, _) = synced().await;
    let client = tb.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "podinfo");
    let still_there = || async { deployments.get_opt("podinfo").await.expect("get").is_some() };
    let original = dev_kustomization(&repo);
    let apps_yaml = std::fs::read_to_string(repo.work().join("clusters/dev/apps.yaml")).expect("read");

    // A missing path.
    repo.commit(
        &[(
            "clusters/dev/apps.yaml",
            Some(&apps_yaml.replace("./apps/dev", "./apps/missing")),
        )],
        "Wrong path",
    );
    let message = wait_failed(&client, "apps", "ArtifactFailed").await;
    assert!(
        message.starts_with("kustomization path not found: stat ") && message.contains("apps/missing"),
        "{message}"
    );
    assert!(still_there().await);
    repo.commit(&[("clusters/dev/apps.yaml", Some(&apps_yaml))], "Right path");

    // A YAML syntax error in a directory without kustomization.yaml (the generator reads it).
    let rev = repo.commit(
        &[(
            "clusters/dev/broken.yaml",
            Some("apiVersion: v1\nkind: [ConfigMap\n"),
        )],
        "Broken YAML",
    );
    let message = wait_failed(&client, "flux-system", "BuildFailed").await;
    assert!(
        message.starts_with("failed to decode Kubernetes YAML from clusters/dev/broken.yaml"),
        "{message}"
    );
    let root = Api::<Kustomization>::namespaced(client.clone(), "flux-system")
        .get("flux-system")
        .await
        .expect("root");
    assert_eq!(
        root.status
            .as_ref()
            .and_then(|s| s.last_attempted_revision.clone()),
        Some(format!("main@sha1:{rev}"))
    );
    assert_eq!(
        root.status.and_then(|s| s.inventory).map(|i| i.entries.len()),
        Some(2),
        "the inventory is kept"
    );
    let rev = repo.commit(&[("clusters/dev/broken.yaml", None)], "Fix YAML");
    wait_applied(&client, "flux-system", &format!("main@sha1:{rev}"), DEADLINE).await;

    // A kustomize build error.
    repo.commit(
        &[(
            DEV_KUSTOMIZATION,
            Some(&original.replace("  - ../base/podinfo\n", "  - ../base/podinfo\n  - missing.yaml\n")),
        )],
        "Missing resource",
    );
    let message = wait_failed(&client, "apps", "BuildFailed").await;
    assert!(
        message.starts_with("kustomize build failed: ") && message.contains("missing.yaml"),
        "{message}"
    );
    assert!(still_there().await);

    // An unknown kind without a CRD.
    let widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: podinfo\n";
    repo.commit(
        &[
            (
                DEV_KUSTOMIZATION,
                Some(&original.replace("  - ../base/podinfo\n", "  - ../base/podinfo\n  - widget.yaml\n")),
            ),
            ("apps/dev/widget.yaml", Some(widget)),
        ],
        "Unknown kind",
    );
    let message = wait_failed(&client, "apps", "ReconciliationFailed").await;
    assert!(
        message.contains("Widget/podinfo/w dry-run failed")
            && message.contains("no matches for kind \"Widget\""),
        "{message}"
    );
    assert!(still_there().await);
    let rev = repo.commit(
        &[
            (DEV_KUSTOMIZATION, Some(&original)),
            ("apps/dev/widget.yaml", None),
        ],
        "Back to good",
    );
    wait_applied(&client, "apps", &format!("main@sha1:{rev}"), DEADLINE).await;

    // Sources: an unreachable repository and a wrong branch.
    let source = |name: &str, url: &str, branch: &str| {
        format!(
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: {name}\n  namespace: flux-system\nspec:\n  interval: 1m\n  ref:\n    branch: {branch}\n  url: {url}\n"
        )
    };
    kubectl_apply(
        &tb,
        &source("unreachable", "file:///nonexistent/repo.git", "main"),
    );
    kubectl_apply(&tb, &source("wrong-branch", &repo.url(), "nope"));
    let repos: Api<serin_sync::api::GitRepository> = Api::namespaced(client.clone(), "flux-system");
    for (name, needle) in [
        ("unreachable", "/nonexistent/repo.git"),
        ("wrong-branch", "couldn't find remote ref \"refs/heads/nope\""),
    ] {
        let message = eventually(DEADLINE, &format!("GitRepository {name} failing"), || {
            let repos = repos.clone();
            async move {
                let r = repos.get_opt(name).await.ok()??;
                let c = r.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
                (c.status == "False" && c.reason == "GitOperationFailed").then_some(c.message)
            }
        })
        .await;
        assert!(
            message.starts_with("failed to checkout and determine revision: unable to clone '"),
            "{message}"
        );
        assert!(message.contains(needle), "{name}: {message}");
    }
}

/// Acceptance 4: serin's replicas on a Canary target survive serin-sync even when Git declares
/// `replicas`, and objects serin generated are neither overwritten nor pruned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serin_keeps_its_replicas_and_generated_objects() {
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Patch, PatchParams, PostParams};
    let (tb, repo, _controllers, _) = synced().await;
    let client = tb.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "podinfo");
    let replicas = |d: Deployment| d.spec.and_then(|s| s.replicas);

    // serin scales the target to zero, as it does after a promotion.
    let scale = serde_json::json!({"spec": {"replicas": 0}});
    deployments
        .patch(
            "podinfo",
            &PatchParams {
                field_manager: Some("serin".into()),
                ..Default::default()
            },
            &Patch::Merge(&scale),
        )
        .await
        .expect("scaled");
    // serin's generated apex Service, owned by the Canary.
    let canary_uid = kubectl(
        &tb,
        &[
            "get",
            "canary",
            "podinfo",
            "-n",
            "podinfo",
            "-o",
            "jsonpath={.metadata.uid}",
        ],
    );
    let services: Api<Service> = Api::namespaced(client.clone(), "podinfo");
    let generated: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "podinfo", "namespace": "podinfo", "ownerReferences": [{"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo", "uid": canary_uid, "controller": true}]},
        "spec": {"selector": {"app": "podinfo-primary"}, "ports": [{"name": "http", "port": 9898, "targetPort": 9898}]}
    }))
    .expect("service");
    services
        .create(&PostParams::default(), &generated)
        .await
        .expect("created");

    // Git now declares replicas and a Service of the same name.
    let patch = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\nspec:\n  replicas: 3\n";
    let service = "apiVersion: v1\nkind: Service\nmetadata:\n  name: podinfo\n  namespace: podinfo\nspec:\n  selector:\n    app: podinfo\n  ports:\n  - name: http\n    port: 80\n";
    let original = dev_kustomization(&repo);
    let with = original
        .replace("  - ../base/podinfo\n", "  - ../base/podinfo\n  - service.yaml\n")
        .replace(
            "patches:\n",
            "patches:\n  - path: replicas.yaml\n    target:\n      kind: Deployment\n      name: podinfo\n",
        );
    let rev = repo.commit(
        &[
            (DEV_KUSTOMIZATION, Some(&with)),
            ("apps/dev/replicas.yaml", Some(patch)),
            ("apps/dev/service.yaml", Some(service)),
        ],
        "Declare replicas and a Service",
    );
    wait_applied(&client, "apps", &format!("main@sha1:{rev}"), DEADLINE).await;
    request_reconcile(&client, "apps").await;
    assert_eq!(
        replicas(deployments.get("podinfo").await.expect("get")),
        Some(0),
        "serin's replicas are kept"
    );
    let svc = services.get("podinfo").await.expect("get");
    assert_eq!(
        svc.spec
            .and_then(|s| s.selector)
            .and_then(|s| s.get("app").cloned())
            .as_deref(),
        Some("podinfo-primary")
    );

    // Gone from Git: serin's Service is not pruned.
    let rev = repo.commit(
        &[
            (DEV_KUSTOMIZATION, Some(&original)),
            ("apps/dev/replicas.yaml", None),
            ("apps/dev/service.yaml", None),
        ],
        "Drop them",
    );
    wait_applied(&client, "apps", &format!("main@sha1:{rev}"), DEADLINE).await;
    assert!(
        services.get_opt("podinfo").await.expect("get").is_some(),
        "serin's Service stays"
    );
    assert_eq!(replicas(deployments.get("podinfo").await.expect("get")), Some(0));
}

/// Acceptance 2: a new image tag committed to Git is applied within one source interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_image_tag_is_applied_within_one_interval() {
    let (tb, repo, _controllers, _) = synced().await;
    let client = tb.client();
    let promoted = dev_kustomization(&repo).replace("newTag: 6.5.0", "newTag: 6.5.1");
    let rev = repo.commit(&[(DEV_KUSTOMIZATION, Some(&promoted))], "podinfo 6.5.1");
    // The source polls every 2 s; the apps Kustomization follows its artifact at once.
    wait_applied(
        &client,
        "apps",
        &format!("main@sha1:{rev}"),
        Duration::from_secs(10),
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "podinfo");
    let d = deployments.get("podinfo").await.expect("get");
    let image = d
        .spec
        .and_then(|s| s.template.spec)
        .map(|s| s.containers[0].image.clone().unwrap_or_default());
    assert_eq!(image.as_deref(), Some("ghcr.io/stefanprodan/podinfo:6.5.1"));
}

/// Sets `spec.suspend` as `serin-sync suspend|resume` does (field manager `serin-sync`). With
/// `kubectl patch` the parent Kustomization would take the field over and revert it, as Flux does.
async fn set_suspend(client: &kube::Client, name: &str, suspend: bool) {
    use kube::api::{Patch, PatchParams};
    let api: Api<Kustomization> = Api::namespaced(client.clone(), "flux-system");
    let body = serde_json::json!({"spec": {"suspend": suspend}});
    let params = PatchParams {
        field_manager: Some("serin-sync".into()),
        ..Default::default()
    };
    api.patch(name, &params, &Patch::Merge(&body))
        .await
        .expect("suspend set");
}

/// Health follows the Canary: a failed canary marks the Kustomization unhealthy, a promoted one
/// healthy again; the events carry Flux's texts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_canary_marks_apps_unhealthy() {
    use k8s_openapi::api::core::v1::Event;
    let (tb, _repo, _controllers, revision) = synced().await;
    let client = tb.client();

    mark_canary(&client, "podinfo", "podinfo", "Failed").await;
    let api: Api<Kustomization> = Api::namespaced(client.clone(), "flux-system");
    let token = jiff::Timestamp::now().to_string();
    let body = serde_json::json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": token}}});
    api.patch(
        "apps",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&body),
    )
    .await
    .expect("annotated");
    let message = wait_failed(&client, "apps", "HealthCheckFailed").await;
    assert!(message.starts_with("health check failed after "), "{message}");
    assert!(
        message.contains("failed early due to stalled resources: [Canary/podinfo/podinfo status: 'Failed']"),
        "{message}"
    );
    let apps = api.get("apps").await.expect("apps");
    let healthy = apps
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Healthy"))
        .expect("Healthy");
    assert_eq!(
        (healthy.status.as_str(), healthy.reason.as_str()),
        ("False", "HealthCheckFailed")
    );

    mark_canary(&client, "podinfo", "podinfo", "Succeeded").await;
    let apps = request_reconcile(&client, "apps").await;
    let st = apps.status.expect("status");
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    assert!(st.conditions.iter().any(|c| c.type_ == "Healthy"
        && c.status == "True"
        && c.message.starts_with("Health check passed in ")));
    assert_eq!(st.last_applied_revision.as_deref(), Some(revision.as_str()));
    assert!(
        st.history
            .iter()
            .any(|h| h.last_reconciled_status == "HealthCheckFailed")
    );
    assert_eq!(st.history[0].last_reconciled_status, "ReconciliationSucceeded");

    let events: Api<Event> = Api::namespaced(client.clone(), "flux-system");
    let texts: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some("apps"))
        .map(|e| {
            format!(
                "{} {}",
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            )
        })
        .collect();
    let has = |needle: &str| texts.iter().any(|t| t.contains(needle));
    assert!(has("Deployment/podinfo/podinfo created"), "{texts:#?}");
    assert!(has("Canary/podinfo/podinfo created"), "{texts:#?}");
    assert!(
        texts.iter().any(
            |t| t.starts_with("ReconciliationSucceeded Reconciliation finished in ")
                && t.ends_with(", next run in 10m0s")
        ),
        "{texts:#?}"
    );
    assert!(has("HealthCheckFailed health check failed after "), "{texts:#?}");
}

/// Variables from a ConfigMap and a Secret, `spec.ignore` rules, `targetNamespace` and
/// `commonMetadata` on a Kustomization of its own; an unsupported field is reported, not ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn substitution_from_objects_ignore_rules_and_unsupported_fields() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let (tb, repo, _controllers, revision) = synced().await;
    let client = tb.client();
    kubectl_apply(
        &tb,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: vars\n  namespace: flux-system\ndata:\n  greeting: hello\n  region: eu\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: secret-vars\n  namespace: flux-system\nstringData:\n  region: us\n",
    );
    // Under apps/: the example's .sourceignore keeps only apps/, clusters/ and infrastructure/.
    let path = "apps/extra/settings.yaml";
    repo.commit(
        &[(path, Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  greeting: ${greeting}\n  region: ${region}\n  cluster: ${cluster:=unknown}\n  size: small\n"))],
        "Add settings",
    );
    let revision_now = format!("main@sha1:{}", repo.head());
    assert_ne!(revision_now, revision);
    kubectl_apply(
        &tb,
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: extra\n  namespace: flux-system\nspec:\n  interval: 10m\n  path: ./apps/extra\n  prune: true\n  targetNamespace: podinfo\n  commonMetadata:\n    labels:\n      team: platform\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n  ignore:\n  - paths: [\"/data/size\"]\n    target:\n      kind: ConfigMap\n      name: settings\n  postBuild:\n    substituteFrom:\n    - kind: ConfigMap\n      name: vars\n    - kind: Secret\n      name: secret-vars\n    - kind: ConfigMap\n      name: absent\n      optional: true\n",
    );
    wait_applied(&client, "extra", &revision_now, DEADLINE).await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "podinfo");
    let settings = maps.get("settings").await.expect("settings");
    let data = settings.data.clone().unwrap_or_default();
    assert_eq!(data.get("greeting").map(String::as_str), Some("hello"));
    assert_eq!(
        data.get("region").map(String::as_str),
        Some("us"),
        "later sources override earlier ones"
    );
    assert_eq!(data.get("cluster").map(String::as_str), Some("unknown"));
    assert_eq!(
        settings
            .metadata
            .labels
            .unwrap_or_default()
            .get("team")
            .map(String::as_str),
        Some("platform")
    );

    // An ignored path keeps a manual change.
    kubectl(
        &tb,
        &[
            "patch",
            "configmap",
            "settings",
            "-n",
            "podinfo",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"size":"large"}}"#,
        ],
    );
    request_reconcile(&client, "extra").await;
    let data = maps
        .get("settings")
        .await
        .expect("settings")
        .data
        .unwrap_or_default();
    assert_eq!(data.get("size").map(String::as_str), Some("large"));

    // Unsupported: named in Ready=False and Stalled.
    kubectl_apply(
        &tb,
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: secrets\n  namespace: flux-system\nspec:\n  interval: 10m\n  path: ./apps/extra\n  prune: true\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n  decryption:\n    provider: sops\n",
    );
    let message = wait_failed(&client, "secrets", "UnsupportedField").await;
    assert!(message.contains("spec.decryption"), "{message}");
    let api: Api<Kustomization> = Api::namespaced(client.clone(), "flux-system");
    let st = api.get("secrets").await.expect("secrets").status.expect("status");
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True")
    );
    assert!(st.inventory.is_none(), "nothing was applied");
}

/// An immutable field changed in Git fails the apply with the API server's message; with
/// `force: true` the object is recreated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_fields_need_force() {
    let (tb, repo, _controllers, _) = synced().await;
    let client = tb.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "podinfo");
    let before = deployments
        .get("flagger-loadtester")
        .await
        .expect("loadtester")
        .metadata
        .uid;
    let file = "infrastructure/base/loadtester/deployment.yaml";
    let text = std::fs::read_to_string(repo.work().join(file)).expect("read");
    let relabelled = text.replace("app: flagger-loadtester", "app: loadtester");
    repo.commit(&[(file, Some(&relabelled))], "Relabel the loadtester");
    let message = wait_failed(&client, "infrastructure", "ReconciliationFailed").await;
    assert!(
        message.starts_with("Deployment/podinfo/flagger-loadtester dry-run failed (Invalid): "),
        "{message}"
    );
    assert!(message.contains("field is immutable"), "{message}");

    // force: true in Git (the infrastructure Kustomization is itself applied from clusters/dev).
    let infra = std::fs::read_to_string(repo.work().join("clusters/dev/infrastructure.yaml")).expect("read");
    let rev = repo.commit(
        &[(
            "clusters/dev/infrastructure.yaml",
            Some(&infra.replace("  wait: true\n", "  wait: true\n  force: true\n")),
        )],
        "Force",
    );
    wait_applied(&client, "infrastructure", &format!("main@sha1:{rev}"), DEADLINE).await;
    let after = deployments.get("flagger-loadtester").await.expect("loadtester");
    assert_ne!(after.metadata.uid, before, "recreated");
    let labels = after
        .spec
        .and_then(|s| s.selector.match_labels)
        .unwrap_or_default();
    assert_eq!(labels.get("app").map(String::as_str), Some("loadtester"));
}

/// `kustomize.toolkit.fluxcd.io/reconcile: disabled` set in the cluster stops applies (and prunes)
/// of that object; `ssa: IfNotPresent` creates an object once and leaves it alone after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_disabled_and_if_not_present() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let (tb, repo, _controllers, _) = synced().await;
    let client = tb.client();
    kubectl(
        &tb,
        &[
            "annotate",
            "deployment/podinfo",
            "-n",
            "podinfo",
            "kustomize.toolkit.fluxcd.io/reconcile=disabled",
        ],
    );
    kubectl(
        &tb,
        &[
            "set",
            "image",
            "deployment/podinfo",
            "-n",
            "podinfo",
            "podinfod=ghcr.io/stefanprodan/podinfo:9.9.9",
        ],
    );
    let with_seed =
        dev_kustomization(&repo).replace("  - ../base/podinfo\n", "  - ../base/podinfo\n  - seed.yaml\n");
    let rev = repo.commit(
        &[
            (DEV_KUSTOMIZATION, Some(&with_seed)),
            (
                "apps/dev/seed.yaml",
                Some(&config_map(
                    "seed",
                    "  annotations:\n    kustomize.toolkit.fluxcd.io/ssa: IfNotPresent\n",
                )),
            ),
        ],
        "Seed a ConfigMap once",
    );
    wait_applied(&client, "apps", &format!("main@sha1:{rev}"), DEADLINE).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "podinfo");
    let image = |d: Deployment| {
        d.spec
            .and_then(|s| s.template.spec)
            .map(|s| s.containers[0].image.clone().unwrap_or_default())
    };
    assert_eq!(
        image(deployments.get("podinfo").await.expect("get")).as_deref(),
        Some("ghcr.io/stefanprodan/podinfo:9.9.9")
    );

    kubectl(
        &tb,
        &[
            "patch",
            "configmap",
            "seed",
            "-n",
            "podinfo",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"a":"changed"}}"#,
        ],
    );
    request_reconcile(&client, "apps").await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "podinfo");
    let data = maps.get("seed").await.expect("seed").data.unwrap_or_default();
    assert_eq!(
        data.get("a").map(String::as_str),
        Some("changed"),
        "IfNotPresent: not reapplied"
    );
    assert_eq!(
        image(deployments.get("podinfo").await.expect("get")).as_deref(),
        Some("ghcr.io/stefanprodan/podinfo:9.9.9")
    );
}

/// A ConfigMap labelled `reconcile.fluxcd.io/watch: Enabled` triggers the Kustomizations that
/// substitute from it when it changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_variables_trigger_a_reconcile() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let (tb, repo, _controllers, _) = synced().await;
    let client = tb.client();
    let vars = |tier: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: tier\n  namespace: flux-system\n  labels:\n    reconcile.fluxcd.io/watch: Enabled\ndata:\n  tier: {tier}\n"
        )
    };
    kubectl_apply(&tb, &vars("bronze"));
    let rev = repo.commit(
        &[("apps/tier/tier.yaml", Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: tier\n  namespace: podinfo\ndata:\n  tier: ${tier}\n"))],
        "Tier",
    );
    kubectl_apply(
        &tb,
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: tier\n  namespace: flux-system\nspec:\n  interval: 1h\n  path: ./apps/tier\n  prune: true\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n  postBuild:\n    substituteFrom:\n    - kind: ConfigMap\n      name: tier\n",
    );
    wait_applied(&client, "tier", &format!("main@sha1:{rev}"), DEADLINE).await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "podinfo");
    let tier = || async { maps.get("tier").await.ok()?.data?.get("tier").cloned() };
    assert_eq!(tier().await.as_deref(), Some("bronze"));
    kubectl_apply(&tb, &vars("gold"));
    eventually(DEADLINE, "the new variable applied without a request", || async {
        (tier().await.as_deref() == Some("gold")).then_some(())
    })
    .await;
}
