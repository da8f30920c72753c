//! A malformed Kustomization (possible when an older or looser CRD lets it in) gets Ready=False
//! `InvalidObject` with the decoding error; one whose reconcile panics (through the test-only
//! hook) gets a Warning event and Ready=False `ReconciliationFailed` naming the panic; and every
//! other Kustomization keeps reconciling.

mod support;

use std::time::Duration;

use kube::Api;
use serin_testbed::Testbed;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_kustomization_does_not_stop_the_others() {
    let tb = Testbed::start().await.expect("test bed");
    let client = tb.client();
    let mut crds = Vec::new();
    for mut crd in serin_sync::api::crds() {
        if crd.spec.names.kind == "Kustomization" {
            // A loose schema: any spec is accepted.
            for version in &mut crd.spec.versions {
                let schema = serde_json::json!({"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}});
                version.schema = Some(serde_json::from_value(schema).expect("schema"));
            }
        }
        crds.push(crd);
    }
    for entry in std::fs::read_dir(repo_root().join("crds")).expect("crds/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let crd = serde_yaml::from_str(&std::fs::read_to_string(&path).expect("read")).expect("CRD");
            crds.push(crd);
        }
    }
    tb.install_crds(crds).await.expect("CRDs");
    create_namespace(&client, "flux-system").await;
    let repo = GitFixture::from_examples();
    let _controllers = start_controllers(&tb);
    kubectl_apply(
        &tb,
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: broken\n  namespace: flux-system\nspec:\n  prune: \"yes, please\"\n",
    );
    kubectl_apply(
        &tb,
        &format!(
            "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: panics\n  namespace: flux-system\n  annotations:\n    {}: \"true\"\nspec:\n  interval: 1m\n  path: ./clusters/dev\n  prune: false\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n",
            serin_runtime::hooks::TEST_PANIC_ANNOTATION
        ),
    );
    kubectl_apply(&tb, &bootstrap_yaml(&repo.url(), "./clusters/dev", "1m"));
    let gvk = kube::api::GroupVersionKind::gvk("kustomize.toolkit.fluxcd.io", "v1", "Kustomization");
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        "flux-system",
        &kube::api::ApiResource::from_gvk(&gvk),
    );
    let ready = |name: &'static str, reason: &'static str| {
        let raw = raw.clone();
        async move {
            let obj = raw.get_opt(name).await.ok()??;
            let ready = obj.data["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?
                .clone();
            (ready["status"] == "False" && ready["reason"] == reason)
                .then(|| ready["message"].as_str().unwrap_or_default().to_owned())
        }
    };
    let message = eventually(
        Duration::from_secs(30),
        "the malformed Kustomization reported",
        || ready("broken", "InvalidObject"),
    )
    .await;
    assert!(message.starts_with("invalid Kustomization: "), "{message}");
    let message = eventually(Duration::from_secs(30), "the panic reported", || {
        ready("panics", "ReconciliationFailed")
    })
    .await;
    assert_eq!(
        message,
        "reconcile panicked: test hook test.serin.dev/panic on Kustomization panics"
    );
    let events = kubectl(
        &tb,
        &[
            "-n",
            "flux-system",
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=panics",
            "-o",
            "jsonpath={range .items[*]}{.type} {.reason}: {.message}{\"\\n\"}{end}",
        ],
    );
    assert!(
        events.contains("Warning ReconcilePanicked: reconcile panicked: test hook"),
        "{events}"
    );
    mark_canary(&client, "podinfo", "podinfo", "Initialized").await;
    wait_applied(
        &client,
        "apps",
        &format!("main@sha1:{}", repo.head()),
        Duration::from_secs(60),
    )
    .await;
}
