//! End-to-end tests of the other strategies and features (A/B testing, Blue/Green, mirroring,
//! session affinity, delegation, deletion, alerts), each with an example from `examples/`, real
//! Prometheus and the test bed's simulated traffic.

use std::time::{Duration, Instant};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
use kube::Api;
use serde_json::{Value, json};
use serin::api::CanaryPhase;

use crate::support::{self, NS, Scenario, phase};

const ROLLOUT: Duration = Duration::from_secs(150);

async fn example_initialized(example: &str) -> Scenario {
    let s = Scenario::example(example).await;
    s.wait_canary("Initialized", Duration::from_secs(60), |c| {
        phase(c) == CanaryPhase::Initialized
    })
    .await;
    s
}

fn new_image(s: &Scenario) {
    s.set_image("6.0.1");
}

fn virtual_service(s: &Scenario, name: &str) -> Value {
    serde_json::from_str(&s.kubectl(&["-n", NS, "get", "virtualservice", name, "-o", "json"])).expect("json")
}

/// The workload that answered a simulated request.
fn answered_by(r: &serin_testbed::mesh::dataplane::Response) -> String {
    r.workload.clone().map(|(_, n)| n).unwrap_or_default()
}

fn succeeded(c: &serin::api::Canary) -> bool {
    let p = phase(c);
    assert_ne!(p, CanaryPhase::Failed, "the rollout failed: {:?}", c.status);
    p == CanaryPhase::Succeeded
}

/// Waits until Prometheus has seen requests at `workload` from `source`.
async fn eventually_requests(s: &Scenario, workload: &str, source: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = s.requests_at(workload, source).await;
        if n > 0.0 {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus saw no requests from {source} at {workload}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ab_testing_sends_only_matching_requests_to_the_canary_then_promotes() {
    let s = example_initialized("ab-testing").await;
    new_image(&s);
    s.wait_canary("the second iteration", ROLLOUT, |c| {
        c.status.as_ref().is_some_and(|st| st.iterations >= 2)
    })
    .await;
    let vs = virtual_service(&s, "podinfo");
    let http = vs["spec"]["http"].as_array().expect("http routes");
    assert_eq!(http.len(), 2, "the matched route and the default one: {vs:#}");
    assert_eq!(
        http[0]["match"][1]["headers"]["x-canary"]["exact"], "insider",
        "{vs:#}"
    );
    for _ in 0..20 {
        assert_eq!(answered_by(&s.request("podinfo.test", &[])), "podinfo-primary");
        assert_eq!(
            answered_by(&s.request("podinfo.test", &[("x-canary", "insider")])),
            "podinfo"
        );
        assert_eq!(
            answered_by(&s.request("podinfo.test", &[("cookie", "canary=always")])),
            "podinfo"
        );
    }
    s.wait_canary("Succeeded", ROLLOUT, succeeded).await;
    // Prometheus: the load test's cookie requests reached the canary, the cookie-less background
    // traffic never did.
    assert!(eventually_requests(&s, "podinfo", "flagger-loadtester").await > 0.0);
    assert!(eventually_requests(&s, "podinfo-primary", "testbed-load").await > 0.0);
    assert_eq!(s.requests_at("podinfo", "testbed-load").await, 0.0);
    for i in 1..=3 {
        let e = format!("Advance podinfo.test canary iteration {i}/3");
        assert!(s.has_event(&e), "{e} missing: {:#?}", s.events());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_switches_all_traffic_for_one_round_then_promotes() {
    let s = example_initialized("blue-green").await;
    new_image(&s);
    s.wait_canary("the last analysis round", ROLLOUT, |c| {
        c.status.as_ref().is_some_and(|st| st.iterations == 2)
    })
    .await;
    for _ in 0..20 {
        assert_eq!(
            answered_by(&s.request("podinfo.test", &[])),
            "podinfo-primary",
            "no user traffic reaches the canary before the switch"
        );
    }
    assert_eq!(s.requests_at("podinfo", "testbed-load").await, 0.0);
    // The analysis ran against the canary Service, driven by the load test.
    assert!(eventually_requests(&s, "podinfo", "flagger-loadtester").await > 0.0);
    // The switch: all traffic on the canary for one analysis round (10 s), then promotion, and
    // the primary is answering again only once promoted and ready. Requests sent right after the
    // switch is seen all reach the canary.
    let deadline = Instant::now() + ROLLOUT;
    while virtual_service(&s, "podinfo")["spec"]["http"][0]["route"][1]["weight"] != 100 {
        assert!(
            Instant::now() < deadline,
            "the traffic never switched to the canary"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..20 {
        assert_eq!(
            answered_by(&s.request("podinfo.test", &[])),
            "podinfo",
            "all user traffic reaches the canary after the switch"
        );
    }
    s.wait_canary("Succeeded", ROLLOUT, succeeded).await;
    assert!(
        eventually_requests(&s, "podinfo", "testbed-load").await > 0.0,
        "one analysis round with all traffic on the canary"
    );
    assert!(s.has_event("Routing all traffic to canary"), "{:#?}", s.events());
}

/// Sends requests while the VirtualService mirrors: every client is answered by the primary, and
/// Prometheus counts the mirrored copies at the canary.
async fn mirrored_requests_reach_the_canary(s: &Scenario) {
    let deadline = Instant::now() + ROLLOUT;
    while virtual_service(s, "podinfo")["spec"]["http"][0]["mirror"]["host"] != "podinfo-canary" {
        assert!(Instant::now() < deadline, "the VirtualService never mirrored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The mirrored round lasts one analysis interval (10 s): requests sent right after the mirror
    // is seen are all answered by the primary.
    let answers: Vec<String> = (0..30)
        .map(|_| answered_by(&s.request("podinfo.test", &[])))
        .collect();
    assert!(
        answers.iter().all(|a| a == "podinfo-primary"),
        "clients are answered by the primary while mirrored: {answers:?}"
    );
    assert!(eventually_requests(s, "podinfo", "e2e-client").await > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_with_mirroring_copies_requests_to_the_canary() {
    let s = example_initialized("blue-green-mirroring").await;
    new_image(&s);
    mirrored_requests_reach_the_canary(&s).await;
    s.wait_canary("Succeeded", ROLLOUT, succeeded).await;
    assert!(
        s.has_event("Stop traffic mirroring and route all traffic to canary"),
        "{:#?}",
        s.events()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_with_mirroring_mirrors_one_round_before_shifting() {
    let s = example_initialized("canary-mirroring").await;
    new_image(&s);
    mirrored_requests_reach_the_canary(&s).await;
    s.wait_canary("Succeeded", ROLLOUT, succeeded).await;
    assert!(s.has_event("Advance podinfo.test canary weight 10"));
}

fn set_cookie(r: &serin_testbed::mesh::dataplane::Response, name: &str) -> Option<String> {
    r.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.clone())
        .find(|v| v.starts_with(&format!("{name}=")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_affinity_keeps_clients_on_their_version_and_expires_the_cookie() {
    let s = example_initialized("session-affinity").await;
    new_image(&s);
    s.wait_canary("traffic on the canary", ROLLOUT, |c| {
        c.status.as_ref().is_some_and(|st| {
            st.canary_weight >= 10
                && st
                    .session_affinity_cookie
                    .as_deref()
                    .is_some_and(|c| !c.is_empty())
        })
    })
    .await;
    // Fresh clients until one lands on each version and gets its cookie.
    let (mut canary_cookie, mut primary_cookie) = (None, None);
    for _ in 0..2000 {
        let r = s.request("podinfo.test", &[]);
        match answered_by(&r).as_str() {
            "podinfo" if canary_cookie.is_none() => canary_cookie = set_cookie(&r, "flagger-cookie"),
            "podinfo-primary" if primary_cookie.is_none() => {
                primary_cookie = set_cookie(&r, "primary-cookie")
            }
            _ => {}
        }
        if canary_cookie.is_some() && primary_cookie.is_some() {
            break;
        }
    }
    let canary_cookie = canary_cookie.expect("a client reached the canary and got its cookie");
    let primary_cookie = primary_cookie.expect("a client reached the primary and got its cookie");
    assert!(canary_cookie.contains("Max-Age=21600"), "{canary_cookie}");
    let canary_pair = canary_cookie.split(';').next().expect("name=value").to_owned();
    let primary_pair = primary_cookie.split(';').next().expect("name=value").to_owned();
    for _ in 0..30 {
        assert_eq!(
            answered_by(&s.request("podinfo.test", &[("cookie", &canary_pair)])),
            "podinfo",
            "the canary cookie sticks"
        );
        assert_eq!(
            answered_by(&s.request("podinfo.test", &[("cookie", &primary_pair)])),
            "podinfo-primary",
            "the primary cookie sticks"
        );
    }
    s.wait_canary("Succeeded", ROLLOUT, succeeded).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = s.request("podinfo.test", &[("cookie", &canary_pair)]);
        let expiry = set_cookie(&r, "flagger-cookie");
        if expiry.as_deref() == Some(&format!("{canary_pair}; Max-Age=-1")) {
            assert_eq!(answered_by(&r), "podinfo-primary");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old cookie is not expired: {expiry:?}, {:#}",
            virtual_service(&s, "podinfo")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegation_routes_through_the_root_virtual_service() {
    let s = example_initialized("delegation").await;
    let vs = virtual_service(&s, "podinfo");
    assert_eq!(vs["spec"]["hosts"], json!([]), "{vs:#}");
    assert!(vs["spec"].get("gateways").is_none(), "{vs:#}");
    let gateway = Some("istio-system/public-gateway");
    assert_eq!(
        answered_by(&s.request_via(gateway, "app.example.com", &[])),
        "podinfo-primary"
    );
    new_image(&s);
    s.wait_canary("weight 20", ROLLOUT, |c| {
        c.status.as_ref().is_some_and(|st| st.canary_weight >= 20)
    })
    .await;
    let answers: Vec<String> = (0..200)
        .map(|_| answered_by(&s.request_via(gateway, "app.example.com", &[])))
        .collect();
    assert!(answers.iter().any(|a| a == "podinfo"), "{answers:?}");
    assert!(answers.iter().any(|a| a == "podinfo-primary"), "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revert_on_deletion_restores_the_users_service_and_virtual_service() {
    let s = example_initialized("revert-on-deletion").await;
    let c = s.canaries().get("podinfo").await.expect("canary");
    assert!(
        c.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "finalizer.flagger.app")
    );
    let services: Api<Service> = Api::namespaced(s.client.clone(), NS);
    let apex = services.get("podinfo").await.expect("apex");
    assert_eq!(
        apex.spec.as_ref().and_then(|s| s.selector.clone()),
        Some([("app".to_owned(), "podinfo-primary".to_owned())].into()),
        "taken over"
    );
    assert!(
        apex.metadata.owner_references.is_none(),
        "the user's Service stays unowned"
    );
    let vs = virtual_service(&s, "podinfo");
    assert_eq!(
        vs["spec"]["http"][0]["route"][0]["destination"]["host"],
        "podinfo-primary"
    );
    assert!(vs["metadata"].get("ownerReferences").is_none(), "{vs:#}");
    assert_eq!(
        vs["spec"]["exportTo"],
        json!(["*"]),
        "the user's other fields stay: {vs:#}"
    );

    new_image(&s);
    s.wait_canary("weight 10", ROLLOUT, |c| {
        c.status.as_ref().is_some_and(|st| st.canary_weight >= 10)
    })
    .await;
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), NS);
    let primary_replicas = deployments
        .get("podinfo-primary")
        .await
        .expect("primary")
        .spec
        .and_then(|s| s.replicas);
    s.kubectl(&["-n", NS, "delete", "canary", "podinfo", "--wait=false"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.canaries().get_opt("podinfo").await.expect("get").is_some() {
        assert!(
            Instant::now() < deadline,
            "the Canary was not finalized\n{}",
            support::tail(&s.log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let target = deployments.get("podinfo").await.expect("target");
    assert_eq!(target.spec.as_ref().and_then(|s| s.replicas), primary_replicas);
    assert!(primary_replicas.unwrap_or(0) > 0);
    assert_eq!(
        target.status.as_ref().and_then(|s| s.available_replicas),
        primary_replicas,
        "the finalizer waited for the target"
    );
    let apex = services.get("podinfo").await.expect("apex stays");
    assert_eq!(
        apex.spec.and_then(|s| s.selector),
        Some([("app".to_owned(), "podinfo".to_owned())].into())
    );
    let vs = virtual_service(&s, "podinfo");
    assert_eq!(
        vs["spec"]["http"],
        json!([{"route": [{"destination": {"host": "podinfo"}}]}]),
        "the user's VirtualService is back"
    );
    assert_eq!(vs["spec"]["exportTo"], json!(["*"]), "{vs:#}");
    let events = s.events();
    for e in [
        "Terminating canary podinfo.test",
        "Terminated canary podinfo.test",
    ] {
        assert!(events.iter().any(|x| x == e), "{e}: {events:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_without_revert_collects_generated_objects_and_scales_the_target_up() {
    let s = example_initialized("canary").await;
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), NS);
    assert_eq!(
        deployments
            .get("podinfo")
            .await
            .expect("target")
            .spec
            .and_then(|s| s.replicas),
        Some(0)
    );
    s.kubectl(&["-n", NS, "delete", "canary", "podinfo"]);
    let services: Api<Service> = Api::namespaced(s.client.clone(), NS);
    // A real garbage collector learns a custom resource kind installed moments ago at its next
    // discovery resync (30 s), then collects (FIDELITY.md, row 4).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let replicas = deployments
            .get("podinfo")
            .await
            .expect("target")
            .spec
            .and_then(|s| s.replicas);
        let primary = deployments.get_opt("podinfo-primary").await.expect("get");
        let canary_svc = services.get_opt("podinfo-canary").await.expect("get");
        let vs =
            s.tb.kubectl()
                .args(["-n", NS, "get", "virtualservice", "podinfo"])
                .output()
                .expect("kubectl");
        if replicas.unwrap_or(0) > 0 && primary.is_none() && canary_svc.is_none() && !vs.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "target replicas {replicas:?}, primary left: {}, canary Service left: {}\n{}",
            primary.is_some(),
            canary_svc.is_some(),
            support::tail(&s.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_deleted_while_serin_is_down_does_not_leave_its_target_at_zero() {
    let mut s = example_initialized("canary").await;
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), NS);
    let target = deployments.get("podinfo").await.expect("target");
    assert_eq!(target.spec.and_then(|s| s.replicas), Some(0));
    assert_eq!(
        target
            .metadata
            .annotations
            .unwrap_or_default()
            .get("serin.dev/scaled-down-by"),
        Some(&"podinfo".to_owned()),
        "serin marks the target it scaled to 0"
    );
    // serin is down while the Canary goes: it never sees the deletion.
    s.kill_serin();
    s.kubectl(&["-n", NS, "delete", "canary", "podinfo", "--wait=true"]);
    s.start_serin();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let target = deployments.get("podinfo").await.expect("target");
        let replicas = target.spec.and_then(|s| s.replicas).unwrap_or(0);
        let marked = target
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("serin.dev/scaled-down-by");
        if replicas > 0 && !marked {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "target at {replicas} replicas, still marked: {marked}\n{}",
            support::tail(&s.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        s.log().contains("Canary podinfo.test is gone; Deployment podinfo.test, which it had scaled to 0, scaled back to 1 replicas"),
        "{}",
        support::tail(&s.log(), 30)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_providers_by_severity_and_a_failing_one_does_not_hold_the_rollout() {
    let s = example_initialized("canary").await;
    let (slack, slack_seen) = support::receiver(200).await;
    let (teams, teams_seen) = support::receiver(200).await;
    let (discord, discord_seen) = support::receiver(200).await;
    let (broken, broken_seen) = support::receiver(500).await;
    let (proxy, proxy_seen) = support::receiver(200).await;
    let providers = format!(
        r#"
apiVersion: flagger.app/v1beta1
kind: AlertProvider
metadata: {{name: slack}}
spec: {{type: slack, channel: releases, secretRef: {{name: slack-url}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: slack-url}}
stringData: {{address: "{slack}"}}
---
apiVersion: flagger.app/v1beta1
kind: AlertProvider
metadata: {{name: teams}}
spec: {{type: msteams, address: "{teams}"}}
---
apiVersion: flagger.app/v1beta1
kind: AlertProvider
metadata: {{name: discord}}
spec: {{type: discord, address: "{discord}hooks/1"}}
---
apiVersion: flagger.app/v1beta1
kind: AlertProvider
metadata: {{name: broken}}
spec: {{type: rocket, address: "{broken}"}}
---
apiVersion: flagger.app/v1beta1
kind: AlertProvider
metadata: {{name: proxied}}
spec: {{type: gchat, address: "http://chat.example.invalid/v1/spaces/x", proxy: "{proxy}"}}
"#
    );
    let file = std::env::temp_dir().join(format!("serin-alerts-{}.yaml", std::process::id()));
    std::fs::write(&file, providers).expect("write");
    s.apply(&file);
    let alerts = r#"{"spec":{"analysis":{"alerts":[
        {"name":"releases","severity":"info","providerRef":{"name":"slack"}},
        {"name":"on-call","severity":"error","providerRef":{"name":"teams"}},
        {"name":"chat","severity":"warn","providerRef":{"name":"discord"}},
        {"name":"broken","providerRef":{"name":"broken"}},
        {"name":"proxied","severity":"error","providerRef":{"name":"proxied"}}]}}}"#;
    s.patch_canary(alerts);
    // A failing revision: an info alert when it starts, an error alert at the rollback.
    s.push_failing_revision();
    s.wait_failed(ROLLOUT).await;

    let texts = |seen: &support::Received| -> Vec<String> {
        seen.lock()
            .expect("lock")
            .iter()
            .map(|d| {
                let b = &d.body;
                b["attachments"][0]["text"]
                    .as_str()
                    .or(b["sections"][0]["activityTitle"].as_str())
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    let started = "New revision detected, progressing canary analysis.";
    let failed = "Failed checks threshold reached 2";
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(texts(&slack_seen).contains(&failed.to_owned())
        && texts(&teams_seen).contains(&failed.to_owned())
        && texts(&discord_seen).contains(&failed.to_owned())
        && !broken_seen.lock().expect("lock").is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "alerts missing: slack {:?} teams {:?} discord {:?}",
            texts(&slack_seen),
            texts(&teams_seen),
            texts(&discord_seen)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        texts(&slack_seen).contains(&started.to_owned()),
        "info gets everything"
    );
    assert!(
        !texts(&teams_seen).contains(&started.to_owned()),
        "error gets errors only"
    );
    assert!(
        !texts(&discord_seen).contains(&started.to_owned()),
        "warn gets no info"
    );
    let slack_started = slack_seen
        .lock()
        .expect("lock")
        .iter()
        .find(|d| d.body["attachments"][0]["text"] == started)
        .map(|d| d.body.clone())
        .expect("slack payload");
    assert_eq!(slack_started["channel"], "releases");
    assert_eq!(slack_started["attachments"][0]["author_name"], "podinfo.test");
    assert_eq!(
        slack_started["attachments"][0]["fields"][0]["value"],
        "Deployment/podinfo.test"
    );
    let teams_failed = teams_seen.lock().expect("lock")[0].body.clone();
    assert_eq!(
        (
            teams_failed["@type"].as_str(),
            teams_failed["themeColor"].as_str()
        ),
        (Some("MessageCard"), Some("FF0000"))
    );
    assert!(
        discord_seen
            .lock()
            .expect("lock")
            .iter()
            .all(|d| d.path == "/hooks/1/slack"),
        "Discord's Slack-compatible endpoint"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy_seen.lock().expect("lock").is_empty() {
        assert!(
            Instant::now() < deadline,
            "nothing went through the provider's proxy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gchat = proxy_seen.lock().expect("lock")[0].clone();
    assert_eq!(
        gchat.path, "http://chat.example.invalid/v1/spaces/x",
        "sent through the proxy"
    );
    assert_eq!(gchat.body["cards"][0]["header"]["subtitle"], "podinfo.test");

    // The controller's metrics: Flagger's names, and the failed deliveries counted.
    let metrics = s.controller_metrics().await;
    for line in [
        r#"flagger_canary_status{name="podinfo",namespace="test"} 2"#,
        r#"flagger_canary_failures_total{name="podinfo",namespace="test",deployment_strategy="canary",analysis_status="completed"} 1"#,
        r#"flagger_canary_weight{workload="podinfo-primary",namespace="test"} 100"#,
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
    assert!(metrics.contains("flagger_info{"), "{metrics}");
    // One observation per analysis tick (as Flagger), not per reconcile: each tick leaves one
    // `Advance` or `Halt` event (the start's tick advances to the first weight).
    let ticks: usize = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"flagger_canary_duration_seconds_count{name="podinfo",namespace="test"} "#)
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no duration count in\n{metrics}"));
    let events = s.events();
    let steps = events
        .iter()
        .filter(|e| e.starts_with("Halt") || e.starts_with("Advance"))
        .count();
    assert_eq!(
        ticks, steps,
        "analysis ticks observed vs steps taken: {events:#?}"
    );
    assert!(
        metrics.lines().any(|l| l
            .starts_with(r#"serin_alert_failures_total{name="podinfo",namespace="test",alert="broken"}"#)),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edited_virtual_service_is_put_back_with_its_weights() {
    let s = example_initialized("canary").await;
    new_image(&s);
    s.wait_canary("weight 10", ROLLOUT, |c| {
        c.status.as_ref().is_some_and(|st| st.canary_weight >= 10)
    })
    .await;
    s.kubectl(&[
        "-n",
        NS,
        "patch",
        "virtualservice",
        "podinfo",
        "--type=merge",
        "-p",
        r#"{"spec":{"hosts":["podinfo","hijack.example.com"]}}"#,
    ]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let vs = virtual_service(&s, "podinfo");
        if vs["spec"]["hosts"] == json!(["podinfo"]) {
            let canary_weight = vs["spec"]["http"][0]["route"][1]["weight"].as_i64().unwrap_or(0);
            assert!(canary_weight >= 10, "the weights are kept: {vs:#}");
            break;
        }
        assert!(Instant::now() < deadline, "the edit was not put back: {vs:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.wait_canary("Succeeded", ROLLOUT, succeeded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_notifier_gets_the_alerts_of_canaries_without_alerts() {
    let (url, seen) = support::receiver(200).await;
    let mut s = Scenario::start().await;
    s.apply(&support::repo().join("examples/canary"));
    s.start_serin_with(&[
        "--slack-url",
        &url,
        "--slack-channel",
        "deploys",
        "--cluster-name",
        "e2e-cluster",
        "--slack-token",
        "xoxb-e2e",
    ]);
    s.wait_canary("Initialized", Duration::from_secs(60), |c| {
        phase(c) == CanaryPhase::Initialized
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let message = loop {
        let found = seen
            .lock()
            .expect("lock")
            .iter()
            .find(|d| {
                d.body["attachments"][0]["text"] == "New Deployment detected, initialization completed."
            })
            .cloned();
        if let Some(m) = found {
            break m;
        }
        assert!(Instant::now() < deadline, "no alert at the global notifier");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        message.authorization.as_deref(),
        Some("Bearer xoxb-e2e"),
        "--slack-token is sent as a bearer token"
    );
    let message = message.body;
    assert_eq!(message["channel"], "deploys");
    assert_eq!(message["username"], "flagger");
    assert_eq!(
        message["attachments"][0]["fields"][0],
        json!({"title": "Cluster", "value": "e2e-cluster", "short": false})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taking_over_a_live_service_and_virtual_service_fails_no_request() {
    let mut s = Scenario::start().await;
    for file in [
        "deployment.yaml",
        "secret.yaml",
        "hpa.yaml",
        "metrictemplate.yaml",
    ] {
        s.apply(&support::repo().join("examples/canary").join(file));
    }
    s.apply(&support::repo().join("examples/revert-on-deletion/service.yaml"));
    // Pods of this template (and so of its primary copy) take 3 s to become ready, as real
    // applications do: long enough to see a Service switched to pods still starting.
    s.kubectl(&[
        "-n",
        NS,
        "patch",
        "deploy",
        "podinfo",
        "--type=merge",
        "-p",
        r#"{"spec":{"template":{"metadata":{"annotations":{"testbed.serin.dev/ready-after":"3s"}}}}}"#,
    ]);
    s.kubectl(&["-n", NS, "rollout", "status", "deploy/podinfo", "--timeout=60s"]);
    // The team exposes it on a node port too.
    s.kubectl(&[
        "-n",
        NS,
        "patch",
        "svc",
        "podinfo",
        "-p",
        r#"{"spec":{"type":"NodePort"}}"#,
    ]);
    let services: Api<Service> = Api::namespaced(s.client.clone(), NS);
    let node_port = |svc: &Service| {
        let spec = svc.spec.clone().unwrap_or_default();
        let port = spec.ports.unwrap_or_default().first().and_then(|p| p.node_port);
        (spec.type_, port)
    };
    let before = node_port(&services.get("podinfo").await.expect("apex"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.request("podinfo.test", &[]).status != 200 {
        assert!(
            Instant::now() < deadline,
            "the application never served before the Canary: {:?}",
            s.request("podinfo.test", &[])
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The Canary arrives while clients use the Service: until serin reports Initialized, every
    // request must be answered (by the target, then by the primary once it is ready).
    s.apply(&support::repo().join("examples/revert-on-deletion/canary.yaml"));
    s.start_serin();
    let mut answers: std::collections::BTreeMap<(u16, String), usize> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = s.request("podinfo.test", &[]);
        *answers.entry((r.status, answered_by(&r))).or_default() += 1;
        let c = s.canaries().get("podinfo").await.expect("canary");
        if phase(&c) == CanaryPhase::Initialized {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not Initialized: {:?}\n{}",
            c.status,
            support::tail(&s.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let total: usize = answers.values().sum();
    assert!(total >= 20, "too few requests to tell: {answers:?}");
    assert!(
        answers.keys().all(|(status, _)| *status == 200),
        "requests failed while serin took the Service over: {answers:?}"
    );
    let apex = services.get("podinfo").await.expect("apex");
    assert_eq!(
        node_port(&apex),
        before,
        "the Service keeps its type and node port"
    );
    assert_eq!(
        apex.spec.and_then(|s| s.selector),
        Some([("app".to_owned(), "podinfo-primary".to_owned())].into())
    );
    // The data plane follows the cluster through watches: the switch shows shortly after.
    let deadline = Instant::now() + Duration::from_secs(10);
    while answered_by(&s.request("podinfo.test", &[])) != "podinfo-primary" {
        assert!(Instant::now() < deadline, "{:?}", s.request("podinfo.test", &[]));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
