//! Notifications and Receivers on the test bed: an Alert sends the GitRepository's events and a
//! Canary's (as serin records them) to a Slack-compatible endpoint with Slack's payload; a
//! Receiver gets its path, a call signed with its token asks the GitRepository to reconcile
//! (handled at once), and a call with a bad signature gets 401 and changes nothing.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use serin_sync::{
    api::{GitRepository, Receiver},
    notify,
};
use serin_testbed::Testbed;
use support::*;

const NOTIFICATIONS: &str = r#"
apiVersion: v1
kind: Secret
metadata:
  name: slack-url
  namespace: flux-system
stringData:
  address: ADDRESS
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Provider
metadata:
  name: slack
  namespace: flux-system
spec:
  type: slack
  channel: deploys
  secretRef:
    name: slack-url
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Alert
metadata:
  name: everything
  namespace: flux-system
spec:
  summary: dev cluster
  providerRef:
    name: slack
  eventSeverity: info
  eventSources:
    - kind: GitRepository
      name: '*'
    - kind: Canary
      name: '*'
      namespace: apps
  exclusionList:
    - "^ignore"
---
apiVersion: v1
kind: Secret
metadata:
  name: webhook-token
  namespace: flux-system
stringData:
  token: s3cr3t
---
apiVersion: notification.toolkit.fluxcd.io/v1
kind: Receiver
metadata:
  name: git-push
  namespace: flux-system
spec:
  type: generic-hmac
  secretRef:
    name: webhook-token
  resources:
    - kind: GitRepository
      name: flux-system
"#;

/// Records an event on a Canary as serin does.
async fn canary_event(client: &kube::Client, warning: bool, message: &str) {
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some("podinfo.".into()),
            namespace: Some("apps".into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("flagger.app/v1beta1".into()),
            kind: Some("Canary".into()),
            name: Some("podinfo".into()),
            namespace: Some("apps".into()),
            ..Default::default()
        },
        reason: Some("Synced".into()),
        message: Some(message.into()),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some("serin".into()),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some("flagger".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<Event>::namespaced(client.clone(), "apps")
        .create(&PostParams::default(), &event)
        .await
        .expect("event");
}

async fn post(url: &str, body: &str, signature: Option<String>) -> u16 {
    let mut call = reqwest::Client::new().post(url).body(body.to_owned());
    if let Some(s) = signature {
        call = call.header("X-Signature", s);
    }
    call.send().await.expect("the webhook answers").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_slack_and_receivers_ask_for_reconciles() {
    let tb = Testbed::start().await.expect("test bed");
    install_crds(&tb).await;
    let client = tb.client();
    create_namespace(&client, "flux-system").await;
    create_namespace(&client, "apps").await;
    let (slack_url, received, _sink) = slack_sink().await;
    let git = GitFixture::from_examples();
    let controllers = start_controllers(&tb);
    kubectl_apply(&tb, &NOTIFICATIONS.replace("ADDRESS", &slack_url));
    kubectl_apply(&tb, &git_repository_yaml(&git.url(), "1h"));

    // The GitRepository's event, as Slack gets it.
    let message = eventually(
        Duration::from_secs(60),
        "Slack got the GitRepository's event",
        || async { attachment_by(&received, "gitrepository/flux-system.flux-system") },
    )
    .await;
    assert_eq!(message["channel"], "deploys");
    assert_eq!(message["username"], "source-controller");
    let attachment = &message["attachments"][0];
    assert_eq!(attachment["color"], "good");
    assert!(
        attachment["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("stored artifact for commit"),
        "{attachment}"
    );
    assert_eq!(
        attachment["fields"],
        serde_json::json!([{"title": "summary", "value": "dev cluster", "short": false}])
    );

    // A Canary's events (serin's), a failure in red; an excluded message is not sent.
    canary_event(&client, false, "ignore this one").await;
    canary_event(
        &client,
        true,
        "Rolling back podinfo.apps failed checks threshold reached 5",
    )
    .await;
    let message = eventually(
        Duration::from_secs(30),
        "Slack got the Canary's event",
        || async { attachment_by(&received, "canary/podinfo.apps") },
    )
    .await;
    assert_eq!(message["username"], "serin");
    assert_eq!(message["attachments"][0]["color"], "danger");
    assert_eq!(
        message["attachments"][0]["text"],
        "Rolling back podinfo.apps failed checks threshold reached 5"
    );
    let canary_messages = received
        .lock()
        .expect("lock")
        .iter()
        .filter(|m| m["attachments"][0]["author_name"] == "canary/podinfo.apps")
        .count();
    assert_eq!(canary_messages, 1, "the excluded message is not sent");

    // The Receiver's path.
    let receivers: Api<Receiver> = Api::namespaced(client.clone(), "flux-system");
    let path = notify::webhook_path("s3cr3t", "git-push", "flux-system");
    eventually(Duration::from_secs(30), "the Receiver ready", || async {
        let r = receivers.get("git-push").await.ok()?;
        let st = r.status?;
        let ready = st.conditions.iter().find(|c| c.type_ == "Ready")?;
        (ready.status == "True" && st.webhook_path.as_deref() == Some(path.as_str())).then(|| {
            assert_eq!(ready.message, format!("Receiver initialized for path: {path}"));
        })
    })
    .await;
    let url = format!("{}{path}", controllers.receiver_url);
    let body = r#"{"ref":"refs/heads/main"}"#;
    let repos: Api<GitRepository> = Api::namespaced(client.clone(), "flux-system");
    let requested = |repo: &GitRepository| {
        repo.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("reconcile.fluxcd.io/requestedAt"))
            .cloned()
    };

    // A bad signature: 401, nothing asked.
    assert_eq!(post(&url, body, Some("sha256=0000".into())).await, 401);
    assert_eq!(post(&url, body, None).await, 401);
    assert_eq!(requested(&repos.get("flux-system").await.expect("repo")), None);
    // An unknown path: 404.
    assert_eq!(
        post(&format!("{}/hook/0123", controllers.receiver_url), body, None).await,
        404
    );

    // A good one: the GitRepository reconciles at once.
    let signature = format!("sha256={}", notify::hmac_sha256("s3cr3t", body.as_bytes()));
    let called = Instant::now();
    assert_eq!(post(&url, body, Some(signature)).await, 200);
    let token = requested(&repos.get("flux-system").await.expect("repo")).expect("reconcile requested");
    eventually(
        Duration::from_secs(10),
        "the requested reconcile handled",
        || async {
            let repo = repos.get("flux-system").await.ok()?;
            (repo.status?.last_handled_reconcile_at.as_deref() == Some(token.as_str())).then_some(())
        },
    )
    .await;
    eprintln!("receiver call to handled reconcile: {:?}", called.elapsed());

    // The CLI's tables.
    let out = cli(&tb, &["get", "receivers"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "NAME    \tSUSPENDED\tREADY\tMESSAGE{pad}\t\ngit-push\tFalse    \tTrue \tReceiver initialized for path: {path}\t\n",
            pad = " ".repeat("Receiver initialized for path: ".len() + path.len() - "MESSAGE".len())
        )
    );
    let out = cli(&tb, &["get", "alerts"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "NAME      \tSUSPENDED\tREADY\tMESSAGE       \t\neverything\tFalse    \tTrue \tAlert is Ready\t\n"
    );
    let out = cli(&tb, &["get", "alert-providers", "-A"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "NAMESPACE  \tNAME \tREADY\tMESSAGE          \t\nflux-system\tslack\tTrue \tProvider is Ready\t\n"
    );
}
