//! Bad requests get the API server's status codes and reasons, and disturb no other client.

mod common;

use std::time::Duration;

use common::{create_namespace, eventually, install_crds};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, ResourceExt,
    api::{ObjectMeta, PostParams},
    runtime::{reflector, watcher},
};
use serin_testbed::{Testbed, TestbedOptions};

async fn raw(
    client: &Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> Result<String, (u16, String)> {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(body.as_bytes().to_vec())
        .expect("request");
    client.request_text(request).await.map_err(|e| match e {
        kube::Error::Api(status) => (status.code, status.reason.clone()),
        other => panic!("unexpected client error: {other}"),
    })
}

#[tokio::test]
async fn bad_requests_get_real_status_codes_and_others_carry_on() {
    let tb = Testbed::start_with(TestbedOptions::emulator())
        .await
        .expect("test bed starts");
    let client = tb.client();
    install_crds(&client).await;
    create_namespace(&client, "test").await;

    // Another client watches throughout.
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "test");
    let (reader, writer) = reflector::store();
    let watch = tokio::spawn(
        reflector(writer, watcher(configmaps.clone(), watcher::Config::default())).for_each(|_| async {}),
    );
    reader.wait_until_ready().await.expect("initial list");

    let cm_path = "/api/v1/namespaces/test/configmaps";
    let cases: Vec<(&str, &str, &str, &str, u16, &str)> = vec![
        (
            "malformed JSON",
            "POST",
            cm_path,
            "{\"apiVersion\": \"v1\", \"kind\": ",
            400,
            "BadRequest",
        ),
        (
            "malformed YAML apply",
            "PATCH",
            "/api/v1/namespaces/test/configmaps/x?fieldManager=t",
            "data: [unclosed",
            400,
            "BadRequest",
        ),
        (
            "missing namespace",
            "POST",
            "/api/v1/namespaces/nope/configmaps",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}"#,
            404,
            "NotFound",
        ),
        (
            "unknown resource",
            "GET",
            "/apis/example.com/v1/widgets",
            "",
            404,
            "NotFound",
        ),
        (
            "unknown core resource",
            "GET",
            "/api/v1/namespaces/test/widgets",
            "",
            404,
            "NotFound",
        ),
        (
            "kind does not match the URL",
            "POST",
            cm_path,
            r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"a"}}"#,
            400,
            "BadRequest",
        ),
        (
            "invalid name",
            "POST",
            cm_path,
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Not_Valid"}}"#,
            422,
            "Invalid",
        ),
        (
            "custom resource failing its schema",
            "POST",
            "/apis/flagger.app/v1beta1/namespaces/test/canaries",
            r#"{"apiVersion":"flagger.app/v1beta1","kind":"Canary","metadata":{"name":"c"},"spec":{"targetRef":{"apiVersion":"apps/v1","kind":"Deployment","name":"x"},"service":{"port":80},"analysis":{"interval":"fast","threshold":1,"stepWeight":10}}}"#,
            422,
            "Invalid",
        ),
    ];
    for (name, method, path, body, code, reason) in cases {
        let content_type = if method == "PATCH" {
            "application/apply-patch+yaml"
        } else {
            "application/json"
        };
        let got = raw(&client, method, path, content_type, body).await;
        assert_eq!(got, Err((code, reason.to_owned())), "{name}");
    }

    // A stale update is a 409 Conflict.
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("stale".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let created = configmaps
        .create(&PostParams::default(), &cm)
        .await
        .expect("created");
    let mut fresh = created.clone();
    fresh.data = Some([("k".to_owned(), "1".to_owned())].into());
    configmaps
        .replace("stale", &PostParams::default(), &fresh)
        .await
        .expect("first update");
    let mut stale = created;
    stale.data = Some([("k".to_owned(), "2".to_owned())].into());
    match configmaps.replace("stale", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(status)) => assert_eq!((status.code, status.reason.as_str()), (409, "Conflict")),
        other => panic!("a stale update must conflict, got {other:?}"),
    }

    // The watcher saw every good change and none of the bad ones.
    let after = ConfigMap {
        metadata: ObjectMeta {
            name: Some("after".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    configmaps
        .create(&PostParams::default(), &after)
        .await
        .expect("created");
    eventually(
        Duration::from_secs(10),
        "the watcher to see later changes",
        || {
            let reader = reader.clone();
            async move {
                let names: Vec<String> = reader.state().iter().map(|c| c.name_any()).collect();
                (names.contains(&"after".to_owned()) && names.contains(&"stale".to_owned())).then_some(())
            }
        },
    )
    .await;
    assert_eq!(reader.state().len(), 2, "only the two good ConfigMaps exist");
    watch.abort();
}

/// A JSON patch that cannot be decoded is a 400; one that does not apply to the object (a
/// missing path, a failed test) is a 422; a merge patch that is not an object is a 400; on both
/// API servers.
#[tokio::test]
async fn json_patches_that_do_not_apply_are_invalid() {
    let tb = Testbed::start().await.expect("test bed starts");
    let client = tb.client();
    create_namespace(&client, "test").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "test");
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("p".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    configmaps
        .create(&PostParams::default(), &cm)
        .await
        .expect("created");
    let path = "/api/v1/namespaces/test/configmaps/p";
    let json = "application/json-patch+json";
    let cases = [
        ("not an array", r#"{"op":"remove"}"#, 400, "BadRequest"),
        (
            "a missing path",
            r#"[{"op":"remove","path":"/data/nope"}]"#,
            422,
            "Invalid",
        ),
        (
            "a failed test",
            r#"[{"op":"test","path":"/metadata/name","value":"q"}]"#,
            422,
            "Invalid",
        ),
    ];
    for (name, body, code, reason) in cases {
        let got = raw(&client, "PATCH", path, json, body).await;
        assert_eq!(got, Err((code, reason.to_owned())), "{name} on {:?}", tb.kind());
    }
    // A merge patch that is not an object (the emulator panicked on one).
    let got = raw(&client, "PATCH", path, "application/merge-patch+json", "[1]").await;
    assert_eq!(
        got,
        Err((400, "BadRequest".to_owned())),
        "merge patch on {:?}",
        tb.kind()
    );
    tb.stop().await;
}
