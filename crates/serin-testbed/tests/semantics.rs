//! Object semantics through kube-rs: generation, finalizers, deletion propagation, namespace
//! termination, paging, selectors, dry runs and no-op writes.

mod common;

use std::time::Duration;

use common::{create_namespace, eventually};
use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::ConfigMap},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, PropagationPolicy},
};
use serde_json::json;
use serin_testbed::{Testbed, TestbedOptions};

fn cm(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "app:1"}]}}
        }
    }))
    .expect("deployment")
}

async fn owned_by(client: &Client, name: &str, owner: &Deployment) -> ConfigMap {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "test");
    let mut c = cm(name);
    c.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: owner.name_any(),
        uid: owner.uid().expect("uid"),
        ..Default::default()
    }]);
    api.create(&PostParams::default(), &c)
        .await
        .expect("dependent created")
}

async fn setup() -> (Testbed, Client) {
    let tb = Testbed::start_with(TestbedOptions::emulator())
        .await
        .expect("test bed starts");
    let client = tb.client();
    create_namespace(&client, "test").await;
    (tb, client)
}

#[tokio::test]
async fn generation_follows_spec_changes_only() {
    let (_tb, client) = setup().await;
    let api: Api<Deployment> = Api::namespaced(client, "test");
    let d = api
        .create(&PostParams::default(), &deployment("web"))
        .await
        .expect("created");
    assert_eq!(d.metadata.generation, Some(1));
    // The simulated controller writes status: generation stays.
    let observed = eventually(Duration::from_secs(10), "status", || {
        let api = api.clone();
        async move {
            api.get("web")
                .await
                .ok()
                .filter(|d| d.status.as_ref().and_then(|s| s.observed_generation) == Some(1))
        }
    })
    .await;
    assert_eq!(observed.metadata.generation, Some(1));
    let labelled = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .expect("patched");
    assert_eq!(
        labelled.metadata.generation,
        Some(1),
        "metadata changes keep generation"
    );
    let scaled = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("patched");
    assert_eq!(scaled.metadata.generation, Some(2));
    // A write that changes nothing changes nothing, not even the resourceVersion.
    let again = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("patched");
    assert_eq!(again.resource_version(), scaled.resource_version());
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let (_tb, client) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "test");
    let mut c = cm("held");
    c.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &c).await.expect("created");
    api.delete("held", &DeleteParams::default())
        .await
        .expect("delete accepted");
    let marked = api.get("held").await.expect("still there");
    assert!(marked.metadata.deletion_timestamp.is_some());
    let adding = api
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}})),
        )
        .await;
    assert!(
        matches!(adding, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{adding:?}"
    );
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("finalizer removed");
    assert!(api.get_opt("held").await.expect("get").is_none());
}

#[tokio::test]
async fn deletion_propagation() {
    let (_tb, client) = setup().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "test");
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "test");

    // Background: the owner goes at once, its dependents right after.
    let owner = deployments
        .create(&PostParams::default(), &deployment("bg"))
        .await
        .expect("owner");
    owned_by(&client, "bg-dep", &owner).await;
    deployments
        .delete("bg", &DeleteParams::background())
        .await
        .expect("deleted");
    assert!(configmaps.get_opt("bg-dep").await.expect("get").is_none());

    // Foreground: with a dependent that has its own finalizer, the owner waits for it.
    let owner = deployments
        .create(&PostParams::default(), &deployment("fg"))
        .await
        .expect("owner");
    let mut dep = owned_by(&client, "fg-dep", &owner).await;
    dep.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    configmaps
        .replace("fg-dep", &PostParams::default(), &dep)
        .await
        .expect("finalizer added");
    deployments
        .delete("fg", &DeleteParams::foreground())
        .await
        .expect("delete accepted");
    let waiting = deployments.get("fg").await.expect("owner waits");
    assert!(waiting.finalizers().iter().any(|f| f == "foregroundDeletion"));
    assert!(
        configmaps
            .get("fg-dep")
            .await
            .expect("dependent")
            .metadata
            .deletion_timestamp
            .is_some()
    );
    configmaps
        .patch(
            "fg-dep",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("released");
    assert!(configmaps.get_opt("fg-dep").await.expect("get").is_none());
    assert!(
        deployments.get_opt("fg").await.expect("get").is_none(),
        "the owner goes once its dependents are gone"
    );

    // Orphan: the dependent stays, without the ownerReference.
    let owner = deployments
        .create(&PostParams::default(), &deployment("or"))
        .await
        .expect("owner");
    owned_by(&client, "or-dep", &owner).await;
    let orphan = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..Default::default()
    };
    deployments.delete("or", &orphan).await.expect("deleted");
    let kept = configmaps.get("or-dep").await.expect("orphan kept");
    assert!(kept.owner_references().is_empty());
    assert!(deployments.get_opt("or").await.expect("get").is_none());
}

#[tokio::test]
async fn namespace_deletion_removes_its_contents() {
    let (_tb, client) = setup().await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "test");
    configmaps
        .create(&PostParams::default(), &cm("inside"))
        .await
        .expect("created");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .delete("test", &DeleteParams::default())
        .await
        .expect("deleted");
    assert!(namespaces.get_opt("test").await.expect("get").is_none());
    let all: Api<ConfigMap> = Api::all(client);
    assert!(
        all.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .iter()
            .all(|c| c.namespace().as_deref() != Some("test"))
    );
}

#[tokio::test]
async fn paging_selectors_and_dry_run() {
    let (_tb, client) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "test");
    for i in 0..7 {
        let mut c = cm(&format!("page-{i}"));
        c.metadata.labels = Some(
            [(
                "parity".to_owned(),
                if i % 2 == 0 { "even" } else { "odd" }.to_owned(),
            )]
            .into(),
        );
        api.create(&PostParams::default(), &c).await.expect("created");
    }
    let mut names = Vec::new();
    let mut params = ListParams::default().limit(3);
    loop {
        let page = api.list(&params).await.expect("page");
        assert!(page.items.len() <= 3);
        names.extend(page.items.iter().map(|c| c.name_any()));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!(names.len(), 7, "{names:?}");
    let even = api
        .list(&ListParams::default().labels("parity=even"))
        .await
        .expect("list");
    assert_eq!(even.items.len(), 4);
    let named = api
        .list(&ListParams::default().fields("metadata.name=page-3"))
        .await
        .expect("list");
    assert_eq!(named.items.len(), 1);

    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let would = api.create(&dry, &cm("dry")).await.expect("dry run");
    assert_eq!(would.name_any(), "dry");
    assert!(
        api.get_opt("dry").await.expect("get").is_none(),
        "a dry run stores nothing"
    );
}

/// A patch that rewrites managedFields replaces them (Flux takes fields over from `kubectl`
/// this way); the new owner's next apply then drops a field it no longer applies.
#[tokio::test]
async fn managed_fields_can_be_rewritten_by_a_patch() {
    let tb = Testbed::start_with(TestbedOptions::emulator())
        .await
        .expect("test bed");
    let api: Api<ConfigMap> = Api::namespaced(tb.client(), "default");
    let applied =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owned"}, "data": {"a": "1"}});
    api.patch(
        "owned",
        &PatchParams::apply("flux").force(),
        &Patch::Apply(&applied),
    )
    .await
    .expect("applied");
    let edit = json!({"data": {"b": "2"}});
    api.patch(
        "owned",
        &PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        },
        &Patch::Merge(&edit),
    )
    .await
    .expect("edited");
    let live = api.get("owned").await.expect("get");
    let entries =
        serde_json::to_value(live.metadata.managed_fields.clone().unwrap_or_default()).expect("json");
    assert!(
        entries
            .as_array()
            .expect("array")
            .iter()
            .any(|e| e["manager"] == "kubectl-edit")
    );

    // Rewrite: flux's Apply entry now owns both keys; kubectl-edit owns nothing.
    let takeover = json!({"metadata": {"managedFields": [{
        "manager": "flux", "operation": "Apply", "apiVersion": "v1", "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:data": {"f:a": {}, "f:b": {}}}
    }]}});
    api.patch("owned", &PatchParams::default(), &Patch::Merge(&takeover))
        .await
        .expect("taken over");
    let live = api.get("owned").await.expect("get");
    let managers: Vec<String> = live
        .metadata
        .managed_fields
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["flux"]);

    api.patch(
        "owned",
        &PatchParams::apply("flux").force(),
        &Patch::Apply(&applied),
    )
    .await
    .expect("applied again");
    let data = api.get("owned").await.expect("get").data.unwrap_or_default();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["a"],
        "the field only the edit set is gone"
    );
}

/// A workload's selector cannot change (422 Invalid, "field is immutable"), dry run or not.
#[tokio::test]
async fn workload_selectors_are_immutable() {
    let tb = Testbed::start_with(TestbedOptions::emulator())
        .await
        .expect("test bed");
    let api: Api<Deployment> = Api::namespaced(tb.client(), "default");
    api.create(&PostParams::default(), &deployment("web"))
        .await
        .expect("created");
    let changed = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web-v2"}},
            "template": {"metadata": {"labels": {"app": "web-v2"}}, "spec": {"containers": [{"name": "app", "image": "app:1"}]}}
        }
    });
    for params in [
        PatchParams::apply("test").force().dry_run(),
        PatchParams::apply("test").force(),
    ] {
        let err = api
            .patch("web", &params, &Patch::Apply(&changed))
            .await
            .expect_err("refused");
        let kube::Error::Api(status) = err else {
            panic!("an API error: {err:?}")
        };
        assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
        assert!(
            status.message.contains("spec.selector: Invalid value: ")
                && status.message.ends_with("field is immutable"),
            "{}",
            status.message
        );
    }
    let same = api.get("web").await.expect("get");
    assert_eq!(
        same.spec
            .and_then(|s| s.selector.match_labels)
            .and_then(|l| l.get("app").cloned())
            .as_deref(),
        Some("web")
    );
}

/// A list read in pages is one snapshot: every page answers with the first page's resource
/// version, and a watch from it sees a change made between the pages (the emulator answered
/// each page with its own version, so a cache filled by a paged list missed such changes for
/// good). On both servers.
#[tokio::test]
async fn a_paged_list_is_one_snapshot_a_watch_continues_from() {
    use futures::{StreamExt, TryStreamExt};
    use kube::api::{WatchEvent, WatchParams};
    let tb = Testbed::start().await.expect("test bed starts");
    let client = tb.client();
    create_namespace(&client, "test").await;
    let api: Api<ConfigMap> = Api::namespaced(client, "test");
    for i in 0..6 {
        api.create(&PostParams::default(), &cm(&format!("snap-{i}")))
            .await
            .expect("created");
    }
    let first = api
        .list(&ListParams::default().limit(3))
        .await
        .expect("first page");
    let token = first.metadata.continue_.clone().expect("more pages");
    let changed = Patch::Merge(json!({"metadata": {"labels": {"changed": "between-pages"}}}));
    api.patch("snap-0", &PatchParams::default(), &changed)
        .await
        .expect("changed");
    let second = api
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .expect("second page");
    assert_eq!(
        second.metadata.resource_version, first.metadata.resource_version,
        "every page answers with the snapshot's version"
    );
    let from = second.metadata.resource_version.expect("version");
    let mut events = api
        .watch(&WatchParams::default().timeout(20), &from)
        .await
        .expect("watch")
        .boxed();
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = events.try_next().await.expect("watch event") {
            if let WatchEvent::Modified(c) = event
                && c.name_any() == "snap-0"
                && c.labels().contains_key("changed")
            {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(
        seen,
        "the watch from the list's version delivers the change made between its pages"
    );
}
