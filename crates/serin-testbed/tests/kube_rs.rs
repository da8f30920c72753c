//! kube-rs against the emulator: reflectors, watch resumption after 410 Gone, and the
//! `Controller` runtime, with serin's own CRDs.

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{create_namespace, eventually, install_crds};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
    runtime::{Controller, controller::Action, reflector, watcher},
};
use serde_json::json;
use serin::api::{Canary, CanarySpec, canary::TargetRef};
use serin_testbed::{Testbed, TestbedOptions, apiserver::server::Fault};

fn canary(name: &str) -> Canary {
    let mut c = Canary::new(
        name,
        CanarySpec {
            target_ref: TargetRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: name.into(),
            },
            analysis: Some(
                serde_json::from_value(json!({"interval": "10s", "threshold": 1, "stepWeight": 10}))
                    .expect("analysis"),
            ),
            ..Default::default()
        },
    );
    c.spec.service.port = 9898;
    c
}

#[tokio::test]
async fn reflector_sees_changes_in_order() {
    let tb = Testbed::start().await.expect("test bed starts");
    let client = tb.client();
    install_crds(&client).await;
    create_namespace(&client, "test").await;
    let api: Api<Canary> = Api::namespaced(client, "test");
    let (reader, writer) = reflector::store();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stream = reflector(writer, watcher(api.clone(), watcher::Config::default()));
    let recorder = seen.clone();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(Ok(event)) = stream.next().await {
            let entry = match event {
                watcher::Event::Apply(c) => format!(
                    "apply {} threshold={:?}",
                    c.name_any(),
                    c.spec.analysis.and_then(|a| a.threshold)
                ),
                watcher::Event::Delete(c) => format!("delete {}", c.name_any()),
                _ => continue,
            };
            recorder.lock().expect("lock").push(entry);
        }
    });
    reader.wait_until_ready().await.expect("initial list");

    api.create(&PostParams::default(), &canary("podinfo"))
        .await
        .expect("created");
    api.patch(
        "podinfo",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"analysis": {"threshold": 2}}})),
    )
    .await
    .expect("patched");
    api.delete("podinfo", &DeleteParams::default())
        .await
        .expect("deleted");

    let events = eventually(Duration::from_secs(10), "the delete event", || {
        let seen = seen.clone();
        async move {
            let events = seen.lock().expect("lock").clone();
            events.iter().any(|e| e.starts_with("delete")).then_some(events)
        }
    })
    .await;
    assert_eq!(
        events,
        vec![
            "apply podinfo threshold=Some(1)",
            "apply podinfo threshold=Some(2)",
            "delete podinfo"
        ]
    );
    assert!(
        reader
            .get(&reflector::ObjectRef::new("podinfo").within("test"))
            .is_none()
    );
    task.abort();
}

#[tokio::test]
async fn watch_from_an_expired_version_gets_410_and_the_watcher_recovers() {
    let tb = Testbed::start_with(TestbedOptions {
        event_log: 16,
        ..TestbedOptions::emulator()
    })
    .await
    .expect("test bed starts");
    let client = tb.client();
    install_crds(&client).await;
    create_namespace(&client, "test").await;
    let canaries: Api<Canary> = Api::namespaced(client.clone(), "test");
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "test");
    canaries
        .create(&PostParams::default(), &canary("first"))
        .await
        .expect("created");
    let churn = |prefix: &'static str| {
        let configmaps = configmaps.clone();
        async move {
            for i in 0..40 {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(format!("{prefix}-{i}")),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                configmaps
                    .create(&PostParams::default(), &cm)
                    .await
                    .expect("configmap created");
            }
        }
    };
    churn("before").await;

    // A raw watch from a version the log no longer holds: the stream carries a 410.
    let mut raw = canaries
        .watch(&WatchParams::default(), "2")
        .await
        .expect("watch starts")
        .boxed();
    match raw.try_next().await.expect("stream item") {
        Some(WatchEvent::Error(status)) => assert_eq!(status.code, 410, "{status:?}"),
        other => panic!("expected a 410 error event, got {other:?}"),
    }

    // A running watcher whose resume lands on an expired version relists and loses nothing.
    let (reader, writer) = reflector::store();
    let task = tokio::spawn(
        reflector(writer, watcher(canaries.clone(), watcher::Config::default())).for_each(|_| async {}),
    );
    reader.wait_until_ready().await.expect("initial list");
    tb.reset_requests().await.expect("reset");
    tb.inject_fault(&Fault {
        verb: "watch".into(),
        resource: "canaries".into(),
        count: 1,
        status: 0,
        delay_ms: 1500,
    })
    .await
    .expect("fault");
    tb.close_watches().await.expect("closed");
    canaries
        .create(&PostParams::default(), &canary("during"))
        .await
        .expect("created");
    churn("during").await;

    eventually(
        Duration::from_secs(20),
        "the watcher to see the canary created while it was away",
        || {
            let reader = reader.clone();
            async move {
                reader
                    .get(&reflector::ObjectRef::new("during").within("test"))
                    .map(|_| ())
            }
        },
    )
    .await;
    let relists: u64 = tb
        .requests()
        .await
        .expect("requests")
        .iter()
        .filter(|r| r.verb == "list" && r.resource == "canaries")
        .map(|r| r.count)
        .sum();
    assert!(relists >= 1, "the watcher did not relist after the 410");
    assert_eq!(reader.state().len(), 2);
    task.abort();
}

#[tokio::test]
async fn controller_reconciles_each_change() {
    let tb = Testbed::start().await.expect("test bed starts");
    let client = tb.client();
    install_crds(&client).await;
    create_namespace(&client, "test").await;
    let api: Api<Canary> = Api::namespaced(client, "test");
    let counts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    struct Never;

    let controller = Controller::new(api.clone(), watcher::Config::default())
        .run(
            |canary: Arc<Canary>, counts: Arc<Arc<Mutex<HashMap<String, u32>>>>| async move {
                *counts.lock().expect("lock").entry(canary.name_any()).or_default() += 1;
                Ok::<_, Never>(Action::await_change())
            },
            |_, _: &Never, _| Action::await_change(),
            Arc::new(counts.clone()),
        )
        .for_each(|_| async {});
    let task = tokio::spawn(controller);

    api.create(&PostParams::default(), &canary("a"))
        .await
        .expect("created");
    api.create(&PostParams::default(), &canary("b"))
        .await
        .expect("created");
    eventually(Duration::from_secs(10), "both canaries reconciled", || {
        let counts = counts.clone();
        async move { (counts.lock().expect("lock").len() == 2).then_some(()) }
    })
    .await;
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": true}})),
    )
    .await
    .expect("patched");
    eventually(Duration::from_secs(10), "the change to a reconciled", || {
        let counts = counts.clone();
        async move { (counts.lock().expect("lock").get("a").copied().unwrap_or(0) >= 2).then_some(()) }
    })
    .await;
    task.abort();
}

/// Requests are counted as the API server's audit log names them: a status write under
/// `canaries/status`, a dry run apart (on both servers).
#[tokio::test]
async fn requests_are_counted_by_subresource_with_dry_runs_apart() {
    let tb = Testbed::start().await.expect("test bed starts");
    let client = tb.client();
    install_crds(&client).await;
    create_namespace(&client, "test").await;
    let api: Api<Canary> = Api::namespaced(client, "test");
    api.create(&PostParams::default(), &canary("counted"))
        .await
        .expect("created");
    tb.reset_requests().await.expect("reset");
    let status = Patch::Merge(json!({"status": {"phase": "Initializing"}}));
    api.patch_status("counted", &PatchParams::default(), &status)
        .await
        .expect("status");
    let dry = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    api.patch(
        "counted",
        &dry,
        &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
    )
    .await
    .expect("dry run");
    let requests = tb.requests().await.expect("requests");
    let patches: Vec<&str> = requests
        .iter()
        .filter(|r| r.verb == "patch")
        .map(|r| r.resource.as_str())
        .collect();
    assert_eq!(
        patches,
        ["canaries (dry run)", "canaries/status"],
        "{requests:#?}"
    );
}
