//! serin-sync on the test bed with only the GitRepository bootstrapped and Kustomizations of the
//! test's own: what `deletionPolicy` does when a Kustomization is deleted, kustomize Components
//! through `spec.components` (and `ignoreMissingComponents`), and a suspended GitRepository.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serin_sync::api::{GitRepository, Kustomization};
use serin_testbed::Testbed;
use support::*;

const DEADLINE: Duration = Duration::from_secs(60);
/// The namespace the test manifests go to.
const NS: &str = "lifecycle";

/// A test bed with the GitRepository `flux-system` polling the examples plus `files` every
/// `interval`; returns once its artifact is stored.
async fn source_only(
    files: &[(&str, Option<&str>)],
    interval: &str,
) -> (Testbed, GitFixture, Controllers, String) {
    let tb = Testbed::start().await.expect("test bed");
    install_crds(&tb).await;
    create_namespace(&tb.client(), "flux-system").await;
    create_namespace(&tb.client(), NS).await;
    let repo = GitFixture::from_examples();
    let head = if files.is_empty() {
        repo.head()
    } else {
        repo.commit(files, "Test manifests")
    };
    let controllers = start_controllers(&tb);
    kubectl_apply(&tb, &git_repository_yaml(&repo.url(), interval));
    let revision = format!("main@sha1:{head}");
    wait_artifact(&tb.client(), &revision).await;
    (tb, repo, controllers, revision)
}

fn config_map(name: &str, data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {NS}\ndata:\n  {data}\n"
    )
}

/// A Kustomization of the GitRepository `flux-system`; `extra` is more of its spec, each line
/// indented by two spaces.
fn kustomization(name: &str, path: &str, prune: bool, extra: &str) -> String {
    format!(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: {name}\n  namespace: flux-system\nspec:\n  interval: 10m\n  path: {path}\n  prune: {prune}\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n{extra}"
    )
}

async fn config_map_data(client: &Client, name: &str) -> Option<std::collections::BTreeMap<String, String>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    api.get_opt(name)
        .await
        .expect("get")
        .map(|c| c.data.unwrap_or_default())
}

/// Deleting a Kustomization garbage-collects its objects per `deletionPolicy`: `MirrorPrune`
/// (the default) follows `prune`, `Delete` and `WaitForTermination` delete even without prune,
/// `Orphan` keeps them even with prune.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_policy_decides_what_deleting_a_kustomization_deletes() {
    let settings = config_map("settings", "a: b");
    let (tb, _repo, _controllers, revision) =
        source_only(&[("apps/gc/settings.yaml", Some(&settings))], "1h").await;
    let client = tb.client();

    // (name, prune, deletionPolicy, objects deleted with the Kustomization)
    let cases = [
        ("mirror-prune", true, None, true),
        ("mirror-keep", false, None, false),
        ("delete", false, Some("Delete"), true),
        ("wait-for-termination", false, Some("WaitForTermination"), true),
        ("orphan", true, Some("Orphan"), false),
    ];
    // One copy of the ConfigMap per Kustomization, told apart by a name prefix.
    for (name, prune, policy, _) in cases {
        let policy = policy.map_or(String::new(), |p| format!("  deletionPolicy: {p}\n"));
        kubectl_apply(
            &tb,
            &kustomization(
                name,
                "./apps/gc",
                prune,
                &format!("  namePrefix: {name}-\n{policy}"),
            ),
        );
    }
    for (name, ..) in cases {
        wait_applied(&client, name, &revision, DEADLINE).await;
        assert!(
            config_map_data(&client, &format!("{name}-settings"))
                .await
                .is_some(),
            "{name} applied its ConfigMap"
        );
    }

    for (name, ..) in cases {
        kubectl(
            &tb,
            &[
                "delete",
                "kustomization",
                name,
                "-n",
                "flux-system",
                "--wait=false",
            ],
        );
    }
    // The finalizer is removed only after the garbage collection, so once a Kustomization is
    // gone its objects are deleted or kept for good.
    let api: Api<Kustomization> = Api::namespaced(client.clone(), "flux-system");
    for (name, ..) in cases {
        eventually(DEADLINE, &format!("Kustomization {name} to be gone"), || {
            let api = api.clone();
            async move { api.get_opt(name).await.expect("get").is_none().then_some(()) }
        })
        .await;
    }
    for (name, _, _, deleted) in cases {
        let object = format!("{name}-settings");
        if deleted {
            eventually(DEADLINE, &format!("{object} to be deleted"), || {
                let (client, object) = (client.clone(), object.clone());
                async move { config_map_data(&client, &object).await.is_none().then_some(()) }
            })
            .await;
        } else {
            assert!(
                config_map_data(&client, &object).await.is_some(),
                "{object} is kept when {name} is deleted"
            );
        }
    }
}

const BASE_KUSTOMIZATION: &str =
    "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - settings.yaml\n";
const COMPONENT: &str = "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources:\n  - extra.yaml\npatches:\n  - patch: |-\n      apiVersion: v1\n      kind: ConfigMap\n      metadata:\n        name: settings\n        namespace: lifecycle\n      data:\n        component: enabled\n";

/// `spec.components` adds a kustomize Component of the repository to the build; a missing one
/// fails the build unless `ignoreMissingComponents` drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_are_added_and_missing_ones_ignored_on_request() {
    let settings = config_map("settings", "a: b");
    let extra = config_map("from-component", "c: d");
    let (tb, _repo, _controllers, revision) = source_only(
        &[
            ("apps/comp/base/kustomization.yaml", Some(BASE_KUSTOMIZATION)),
            ("apps/comp/base/settings.yaml", Some(&settings)),
            ("apps/comp/components/extra/kustomization.yaml", Some(COMPONENT)),
            ("apps/comp/components/extra/extra.yaml", Some(&extra)),
        ],
        "1h",
    )
    .await;
    let client = tb.client();
    kubectl_apply(
        &tb,
        &kustomization(
            "with-component",
            "./apps/comp/base",
            true,
            "  components:\n  - ../components/extra\n",
        ),
    );
    kubectl_apply(
        &tb,
        &kustomization(
            "ignore-missing",
            "./apps/comp/base",
            true,
            "  namePrefix: ignored-\n  ignoreMissingComponents: true\n  components:\n  - ../components/extra\n  - ../components/absent\n",
        ),
    );
    kubectl_apply(
        &tb,
        &kustomization(
            "missing",
            "./apps/comp/base",
            true,
            "  namePrefix: missing-\n  components:\n  - ../components/absent\n",
        ),
    );

    // The component's resource is applied and its patch changed the base's ConfigMap.
    let ks = wait_applied(&client, "with-component", &revision, DEADLINE).await;
    let data = config_map_data(&client, "settings").await.expect("settings");
    assert_eq!(data.get("component").map(String::as_str), Some("enabled"));
    assert!(config_map_data(&client, "from-component").await.is_some());
    let ids: Vec<String> = ks
        .status
        .and_then(|s| s.inventory)
        .map(|i| i.entries.into_iter().map(|e| e.id).collect())
        .unwrap_or_default();
    assert_eq!(
        ids,
        [
            "lifecycle_from-component__ConfigMap",
            "lifecycle_settings__ConfigMap"
        ]
    );

    // The missing component is dropped, the present one still applies.
    wait_applied(&client, "ignore-missing", &revision, DEADLINE).await;
    let data = config_map_data(&client, "ignored-settings")
        .await
        .expect("ignored-settings");
    assert_eq!(data.get("component").map(String::as_str), Some("enabled"));
    assert!(config_map_data(&client, "ignored-from-component").await.is_some());

    // Without ignoreMissingComponents the build fails with kustomize's error naming the
    // component, and applies nothing.
    let message = wait_failed(&client, "missing", "BuildFailed").await;
    assert!(
        message.starts_with("kustomize build failed: accumulating components: "),
        "{message}"
    );
    assert!(message.contains("components/absent"), "{message}");
    assert!(config_map_data(&client, "missing-settings").await.is_none());
}

/// Sets the GitRepository's `spec.suspend` as `serin-sync suspend|resume source git` does.
async fn set_source_suspend(client: &Client, suspend: bool) {
    let api: Api<GitRepository> = Api::namespaced(client.clone(), "flux-system");
    let params = PatchParams {
        field_manager: Some("serin-sync".into()),
        ..Default::default()
    };
    api.patch(
        "flux-system",
        &params,
        &Patch::Merge(serde_json::json!({"spec": {"suspend": suspend}})),
    )
    .await
    .expect("suspend set");
}

/// A suspended GitRepository fetches nothing, even on request: its artifact stays at the
/// revision it had; resumed, it fetches the new commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_source_fetches_nothing_until_resumed() {
    // An hour's interval: the only reconciles are the ones the test causes and counts.
    let (tb, repo, controllers, revision) = source_only(&[], "1h").await;
    let client = tb.client();
    let (kind, name) = ("GitRepository", "flux-system");

    set_source_suspend(&client, true).await;
    // The suspend gauge is set when a reconcile that saw `suspend: true` ends; no reconcile of
    // the unsuspended object is under way after it.
    eventually(DEADLINE, "a reconcile of the suspended source", || async {
        controllers.suspended(kind, name).then_some(())
    })
    .await;

    let new = format!(
        "main@sha1:{}",
        repo.commit(&[("apps/late.yaml", Some(&config_map("late", "a: b")))], "Late")
    );
    let before = controllers.reconciles(kind, name);
    let api: Api<GitRepository> = Api::namespaced(client.clone(), "flux-system");
    let token = jiff::Timestamp::now().to_string();
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(
            serde_json::json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": token}}}),
        ),
    )
    .await
    .expect("annotated");
    eventually(DEADLINE, "the requested reconcile", || async {
        (controllers.reconciles(kind, name) > before).then_some(())
    })
    .await;
    let st = source(&client).await.expect("source").status.expect("status");
    assert_eq!(
        st.artifact.map(|a| a.revision).as_deref(),
        Some(revision.as_str()),
        "suspended: the new commit is not fetched"
    );
    assert_ne!(
        st.last_handled_reconcile_at.as_deref(),
        Some(token.as_str()),
        "suspended: the request is not handled"
    );

    set_source_suspend(&client, false).await;
    wait_artifact(&client, &new).await;
    assert!(!controllers.suspended(kind, name));
}
