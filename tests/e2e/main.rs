//! End-to-end tests of the canary controller on the test bed, with a real Prometheus.

mod chaos;
mod operate;
mod simulate;
mod strategies;
mod support;

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
use kube::Api;
use serin::api::{Canary, CanaryPhase};
use support::{NS, Scenario, phase, repo};

async fn initialized() -> Scenario {
    let mut s = Scenario::start().await;
    s.apply(&repo().join("examples/canary"));
    s.start_serin();
    s.wait_canary("Initialized", Duration::from_secs(60), |c| {
        phase(c) == CanaryPhase::Initialized
    })
    .await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialization_creates_the_primary_services_and_routing() {
    let s = initialized().await;
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), NS);
    let primary = deployments.get("podinfo-primary").await.expect("primary");
    let spec = primary.spec.clone().expect("spec");
    assert_eq!(
        spec.selector
            .match_labels
            .as_ref()
            .and_then(|m| m.get("app"))
            .map(String::as_str),
        Some("podinfo-primary")
    );
    let env = serde_json::to_value(&spec.template.spec).expect("json");
    assert_eq!(
        env.pointer("/containers/0/env/0/valueFrom/secretKeyRef/name"),
        Some(&serde_json::json!("podinfo-secret-primary"))
    );
    let target = deployments.get("podinfo").await.expect("target");
    assert_eq!(
        target.spec.and_then(|s| s.replicas),
        Some(0),
        "the target is scaled to zero"
    );
    let services: Api<Service> = Api::namespaced(s.client.clone(), NS);
    let selector = |name: &str| {
        let services = services.clone();
        let name = name.to_owned();
        async move {
            services
                .get(&name)
                .await
                .expect("service")
                .spec
                .and_then(|s| s.selector)
                .and_then(|s| s.get("app").cloned())
        }
    };
    assert_eq!(selector("podinfo").await.as_deref(), Some("podinfo-primary"));
    assert_eq!(
        selector("podinfo-primary").await.as_deref(),
        Some("podinfo-primary")
    );
    assert_eq!(selector("podinfo-canary").await.as_deref(), Some("podinfo"));
    let apex = services.get("podinfo").await.expect("apex");
    assert_eq!(
        apex.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/part-of"))
            .map(String::as_str),
        Some("podinfo")
    );
    let vs: serde_json::Value =
        serde_json::from_str(&s.kubectl(&["-n", NS, "get", "virtualservice", "podinfo", "-o", "json"]))
            .expect("vs");
    assert_eq!(vs["spec"]["http"][0]["route"][0]["weight"], 100);
    assert_eq!(vs["spec"]["http"][0]["route"][1]["weight"], 0);
    assert_eq!(
        vs["spec"]["http"][0]["headers"]["request"]["add"]["x-envoy-upstream-rq-timeout-ms"],
        "15000"
    );
    s.kubectl(&[
        "-n",
        NS,
        "get",
        "destinationrule",
        "podinfo-primary",
        "podinfo-canary",
    ]);
    s.kubectl(&["-n", NS, "get", "secret", "podinfo-secret-primary"]);
    s.kubectl(&["-n", NS, "get", "hpa", "podinfo-primary"]);
    assert!(
        s.events()
            .iter()
            .any(|e| e == "Initialization done! podinfo.test"),
        "{:?}",
        s.events()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_image_is_analysed_and_promoted() {
    let s = initialized().await;
    s.set_image("6.0.1");
    let mut weights = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    loop {
        let c = s.canaries().get("podinfo").await.expect("canary");
        let st = c.status.clone().unwrap_or_default();
        if weights.last() != Some(&st.canary_weight) && st.phase == CanaryPhase::Progressing {
            weights.push(st.canary_weight);
        }
        if st.phase == CanaryPhase::Succeeded {
            break;
        }
        assert!(
            st.phase != CanaryPhase::Failed,
            "the rollout failed: {st:?}\n{}",
            support::tail(&s.log(), 60)
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no promotion in time: {st:?}\n{}",
            support::tail(&s.log(), 60)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        weights.windows(2).all(|w| w[0] <= w[1]),
        "weights only grow: {weights:?}"
    );
    for w in [10, 20, 30] {
        assert!(weights.contains(&w), "weight {w} seen: {weights:?}");
    }
    // kubectl serin, through real kubectl: the table, the explanation, the JSON for scripts.
    let table = s.kubectl_serin(&["get", "-A"]);
    let mut lines = table.lines();
    assert!(
        lines
            .next()
            .is_some_and(|h| h.split_whitespace().collect::<Vec<_>>()
                == [
                    "NAMESPACE",
                    "NAME",
                    "PHASE",
                    "WEIGHT",
                    "STEP",
                    "FAILED",
                    "NEXT",
                    "LAST",
                    "CHECKS"
                ]),
        "{table}"
    );
    assert!(
        lines.any(|l| l.split_whitespace().take(6).collect::<Vec<_>>()
            == [NS, "podinfo", "Succeeded", "0%", "0/3", "0/2"]),
        "{table}"
    );
    let explanation = s.kubectl_serin(&["explain", "canary/podinfo", "-n", NS]);
    for expected in [
        "podinfo.test is Succeeded: its last revision was promoted; it waits for a new one.",
        "Checks of the last analysis tick:",
        "  request-success-rate: pass [>= 99]",
        "  latency: pass [<= 500]",
        "Recent events:",
        ": Promotion completed! Scaling down podinfo.test",
    ] {
        assert!(explanation.contains(expected), "{expected:?} in\n{explanation}");
    }
    let rows: serde_json::Value =
        serde_json::from_str(&s.kubectl_serin(&["get", "canaries", "podinfo", "-n", NS, "-o", "json"]))
            .expect("json");
    assert_eq!(
        (rows[0]["name"].as_str(), rows[0]["phase"].as_str()),
        (Some("podinfo"), Some("Succeeded")),
        "{rows}"
    );

    // --watch: the list, then a row for each change of a Canary.
    let mut watching = s
        .kubectl_serin_command(&["get", "-w", "-n", NS])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl serin get -w runs");
    let (lines, received) = std::sync::mpsc::channel::<String>();
    let stdout = watching.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let next_line = |what: &str| {
        received
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("kubectl serin get -w printed no {what}"))
    };
    assert!(next_line("header").starts_with("NAME"));
    assert!(next_line("first row").starts_with("podinfo"));
    s.kubectl(&["-n", NS, "annotate", "canary", "podinfo", "serin.test/touched=1"]);
    assert!(next_line("row for the change").starts_with("podinfo"));
    let _ = watching.kill();
    let _ = watching.wait();

    // The last analysis tick, explained: the load test, then each metric against its bound.
    let promoted = s.canaries().get("podinfo").await.expect("canary");
    assert_eq!(
        explained(&promoted),
        [
            ("webhook/load-test", "webhook", "pass", String::new()),
            ("request-success-rate", "threshold", "pass", ">= 99".into()),
            ("latency", "threshold", "pass", "<= 500".into()),
        ]
        .map(|(n, c, v, b)| (n.to_owned(), c.to_owned(), v.to_owned(), b)),
        "{:#?}",
        promoted.status
    );
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), NS);
    let primary = deployments.get("podinfo-primary").await.expect("primary");
    let image = primary
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.first().and_then(|c| c.image.clone()));
    assert_eq!(image.as_deref(), Some("ghcr.io/stefanprodan/podinfo:6.0.1"));
    let target = deployments.get("podinfo").await.expect("target");
    assert_eq!(target.spec.and_then(|s| s.replicas), Some(0));
    let vs: serde_json::Value =
        serde_json::from_str(&s.kubectl(&["-n", NS, "get", "virtualservice", "podinfo", "-o", "json"]))
            .expect("vs");
    assert_eq!(
        (
            vs["spec"]["http"][0]["route"][0]["weight"].clone(),
            vs["spec"]["http"][0]["route"][1]["weight"].clone()
        ),
        (serde_json::json!(100), serde_json::json!(0))
    );
    let events = s.events();
    let expected = [
        "New revision detected! Scaling up podinfo.test",
        "Starting canary analysis for podinfo.test",
        "Advance podinfo.test canary weight 10",
        "Advance podinfo.test canary weight 20",
        "Advance podinfo.test canary weight 30",
        "Copying podinfo.test template spec to podinfo-primary.test",
        "Routing all traffic to primary",
        "Promotion completed! Scaling down podinfo.test",
    ];
    let mut at = 0;
    for e in &events {
        if at < expected.len() && e == expected[at] {
            at += 1;
        }
    }
    assert_eq!(
        at,
        expected.len(),
        "Flagger's event sequence, in order; got {events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_revision_is_rolled_back() {
    let s = initialized().await;
    s.push_failing_revision();
    let c = s.wait_failed(Duration::from_secs(150)).await;
    assert_eq!(c.status.as_ref().map(|s| s.canary_weight), Some(0));
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), NS);
    let primary = deployments.get("podinfo-primary").await.expect("primary");
    let image = primary
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.first().and_then(|c| c.image.clone()));
    assert_eq!(
        image.as_deref(),
        Some("ghcr.io/stefanprodan/podinfo:6.0.0"),
        "the primary is untouched"
    );
    let target = deployments.get("podinfo").await.expect("target");
    assert_eq!(target.spec.and_then(|s| s.replicas), Some(0));
    let events = s.events();
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("Halt podinfo.test advancement success rate")),
        "{events:#?}"
    );
    support::assert_event(
        &events,
        "Rolling back podinfo.test failed checks threshold reached 2",
    );
    support::assert_event(&events, "Canary failed! Scaling down podinfo.test");
    // The tick that failed, explained: the success rate below its bound, with its value.
    let checks = c
        .status
        .as_ref()
        .and_then(|st| st.checks.clone())
        .unwrap_or_default();
    let failed = checks
        .iter()
        .find(|check| check.name == "request-success-rate")
        .unwrap_or_else(|| panic!("no success rate check in {checks:#?}"));
    assert_eq!(
        (failed.verdict.as_str(), failed.bound.as_str()),
        ("fail", ">= 99"),
        "{failed:?}"
    );
    assert!(
        failed.canary.is_some_and(|v| v < 99.0) && failed.time.is_some(),
        "{failed:?}"
    );
    assert!(
        failed
            .message
            .starts_with("Halt podinfo.test advancement success rate"),
        "{failed:?}"
    );
}

/// A Canary's last analysis tick as (name, check, verdict, bound), in order.
fn explained(canary: &Canary) -> Vec<(String, String, String, String)> {
    canary
        .status
        .as_ref()
        .and_then(|st| st.checks.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.name, c.check, c.verdict, c.bound))
        .collect()
}

/// A patch of the target's pod template: a test bed annotation (`error-rate`, `latency-ms`) and
/// the image, so each value is a new revision.
fn revision(annotation: &str, value: &str, image: &str) -> String {
    format!(
        r#"{{"spec":{{"template":{{"metadata":{{"annotations":{{"testbed.serin.dev/{annotation}":"{value}"}}}},"spec":{{"containers":[{{"name":"podinfod","image":"{image}"}}]}}}}}}}}"#
    )
}

/// The example Canary with `canary_patch`, serin comparing in 5 s windows, Initialized.
async fn comparing(target_patch: Option<&str>, canary_patch: &str) -> Scenario {
    let mut s = Scenario::start().await;
    s.apply(&repo().join("examples/canary"));
    if let Some(patch) = target_patch {
        s.patch_target(patch);
    }
    s.patch_canary(canary_patch);
    s.start_serin_with(&["--comparison-window", "5s"]);
    s.wait_canary("Initialized", Duration::from_secs(60), |c| {
        phase(c) == CanaryPhase::Initialized
    })
    .await;
    s
}

/// Waits for a revision as good as the primary to be promoted (never rolled back); the
/// comparison of `metric` it ended with.
async fn promoted_with(
    s: &Scenario,
    metric: &str,
    deadline: Duration,
) -> serin::api::canary::MetricComparisonStatus {
    let promoted = s
        .wait_canary("Succeeded", deadline, |c| {
            assert!(
                phase(c) != CanaryPhase::Failed,
                "an identical canary was rolled back: {:?}",
                c.status
            );
            phase(c) == CanaryPhase::Succeeded
        })
        .await;
    promoted
        .status
        .as_ref()
        .and_then(|st| st.comparisons.as_ref())
        .and_then(|c| c.get(metric))
        .cloned()
        .expect("the comparison is in the status")
}

/// `metrics[].compare`: the canary judged against the primary serving the same traffic. The
/// primary fails 10 % of its requests: a revision failing as many is promoted, one failing three
/// times as many is rolled back at once, before `threshold: 10` failed checks could.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_is_compared_with_the_primary_and_rolled_back_when_worse() {
    let error_rate = |rate: &str, image: &str| revision("error-rate", rate, image);
    // Only the comparison judges (no bound of its own); α low enough that an identical canary
    // is not rolled back by chance in this test.
    let s = comparing(
        Some(&error_rate("0.1", "ghcr.io/stefanprodan/podinfo:6.0.0")),
        r#"{"spec":{"analysis":{"threshold":10,"metrics":[{"name":"request-success-rate","interval":"30s","compare":{"alpha":0.001,"minRequests":50}}]}}}"#,
    )
    .await;

    // As bad as the primary: promoted.
    s.patch_target(&error_rate("0.1", "ghcr.io/stefanprodan/podinfo:6.0.1"));
    let comparison = promoted_with(&s, "request-success-rate", Duration::from_secs(150)).await;
    assert_eq!(comparison.verdict, "pass", "{comparison:?}");
    assert!(
        comparison.evidence.totals.canary_requests >= 50.0 && comparison.evidence.totals.primary_bad > 0.0,
        "{comparison:?}"
    );
    assert!(
        comparison
            .message
            .starts_with("request-success-rate of podinfo.test compared with the primary: canary "),
        "{comparison:?}"
    );

    // Three times as bad: rolled back on the evidence, not on failed checks, and between ticks:
    // with a two-minute interval the first analysis tick after the first step is two minutes
    // away, while the comparison looks every window.
    s.patch_canary(r#"{"spec":{"analysis":{"interval":"2m"}}}"#);
    s.patch_target(&error_rate("0.3", "ghcr.io/stefanprodan/podinfo:6.0.2"));
    let started = std::time::Instant::now();
    let failed = s.wait_failed(Duration::from_secs(150)).await;
    let status = failed.status.clone().unwrap_or_default();
    assert!(
        status.failed_checks < 10,
        "rolled back before the threshold: {status:?}"
    );
    let events = s.events();
    let worse = events
        .iter()
        .find(|e| e.starts_with("Rolling back podinfo.test: request-success-rate of the canary is worse than the primary's: canary "))
        .unwrap_or_else(|| panic!("no comparison event in {events:#?}"));
    assert!(worse.contains("evidence "), "{worse}");
    assert!(
        !events
            .iter()
            .any(|e| e.starts_with("Rolling back podinfo.test failed checks threshold reached")),
        "{events:#?}"
    );
    let comparison = status
        .comparisons
        .as_ref()
        .and_then(|c| c.get("request-success-rate"))
        .cloned()
        .expect("the comparison is in the status");
    assert_eq!(comparison.verdict, "worse", "{comparison:?}");
    // The rollback came between ticks: the comparison alone explains it.
    let checks = status.checks.clone().unwrap_or_default();
    let [check] = checks.as_slice() else {
        panic!("one check, the comparison: {checks:#?}");
    };
    assert_eq!(
        (check.name.as_str(), check.check.as_str(), check.verdict.as_str()),
        ("request-success-rate", "comparison", "worse"),
        "{check:?}"
    );
    assert!(
        check.canary.unwrap_or_default() > check.primary.unwrap_or(1.0)
            && check.evidence.is_some_and(|e| e >= 1000.0)
            && check.canary_requests.is_some_and(|n| n >= 50.0),
        "the canary's share of errors above the primary's, with evidence past 1/alpha: {check:?}"
    );
    let metrics = s.controller_metrics().await;
    let evidence = metrics
        .lines()
        .find(|l| {
            l.starts_with(r#"serin_canary_comparison_evidence{name="podinfo",namespace="test",metric="request-success-rate"}"#)
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no evidence gauge in\n{metrics}"));
    assert!(
        evidence >= 1000.0,
        "the gauge holds the e-value that rolled back: {evidence}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "before the first analysis tick, two minutes after the first step: {:?}",
        started.elapsed()
    );
}

/// `metrics[].compare` on a MetricTemplate: the example's P99 latency query rendered for the
/// canary and for its primary over the same windows, judged by the sign test. An identical
/// revision is promoted after enough windows that a worse one would have been caught; one six
/// times slower is rolled back on the evidence alone, between ticks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metric_template_is_compared_with_the_primary() {
    let latency = |ms: &str, image: &str| revision("latency-ms", ms, image);
    let s = comparing(
        None,
        r#"{"spec":{"analysis":{"interval":"30s","threshold":10,"metrics":[{"name":"latency","templateRef":{"name":"latency"},"interval":"30s","compare":{"alpha":0.001}}]}}}"#,
    )
    .await;

    // As fast as the primary: promoted, three steps 30 s apart.
    s.patch_target(&latency("10", "ghcr.io/stefanprodan/podinfo:6.0.1"));
    let comparison = promoted_with(&s, "latency", Duration::from_secs(240)).await;
    let paired = comparison.paired.clone().expect("a template compares windows");
    assert!(
        paired.windows >= serin::analysis::paired::windows_needed(0.001) && comparison.verdict == "pass",
        "enough windows to have rolled back a worse canary: {comparison:?}"
    );

    // Six times slower: rolled back on the windows, not on failed checks, before the first
    // analysis tick three minutes after the first step.
    s.patch_canary(r#"{"spec":{"analysis":{"interval":"3m"}}}"#);
    s.patch_target(&latency("60", "ghcr.io/stefanprodan/podinfo:6.0.2"));
    // Within 175 s of the new revision, so before that tick.
    let failed = s.wait_failed(Duration::from_secs(175)).await;
    let status = failed.status.clone().unwrap_or_default();
    assert!(status.failed_checks < 10, "{status:?}");
    let events = s.events();
    assert!(
        events.iter().any(|e| e.starts_with(
            "Rolling back podinfo.test: latency of the canary is worse than the primary's: the canary higher in "
        )),
        "{events:#?}"
    );
    let check = status
        .checks
        .clone()
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.name == "latency")
        .expect("the comparison is explained");
    assert_eq!(
        (check.check.as_str(), check.verdict.as_str()),
        ("comparison", "worse")
    );
    assert!(
        check.canary.unwrap_or_default() > check.primary.unwrap_or(f64::MAX)
            && check.evidence.is_some_and(|e| e >= 1000.0),
        "the canary's P99 above the primary's, with evidence past 1/alpha: {check:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_continues_the_rollout() {
    let mut s = initialized().await;
    s.set_image("6.0.3");
    let c = s
        .wait_canary("weight 20", Duration::from_secs(90), |c| {
            c.status
                .as_ref()
                .is_some_and(|st| st.phase == CanaryPhase::Progressing && st.canary_weight >= 20)
        })
        .await;
    s.kill_serin();
    let at = c.status.map(|st| st.canary_weight).unwrap_or_default();
    s.start_serin();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let c = s.canaries().get("podinfo").await.expect("canary");
        let st = c.status.unwrap_or_default();
        if st.phase == CanaryPhase::Succeeded {
            break;
        }
        assert!(
            st.phase != CanaryPhase::Failed,
            "the rollout failed after the restart: {st:?}\n{}",
            support::tail(&s.log(), 40)
        );
        if st.phase == CanaryPhase::Progressing {
            assert!(
                st.canary_weight >= at,
                "the weight went back from {at} to {} after the restart",
                st.canary_weight
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no promotion after the restart: {st:?}\n{}",
            support::tail(&s.log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let restarts = s
        .events()
        .iter()
        .filter(|e| e.starts_with("Starting canary analysis"))
        .count();
    assert_eq!(restarts, 1, "the analysis was not restarted");
}

fn primary_image(v: &serde_json::Value) -> String {
    v["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_revision_during_the_analysis_restarts_it() {
    let s = initialized().await;
    s.set_image("6.0.1");
    s.wait_canary("weight 10", Duration::from_secs(90), |c| {
        c.status.as_ref().is_some_and(|st| st.canary_weight >= 10)
    })
    .await;
    s.set_image("6.0.2");
    s.wait_canary("Succeeded", Duration::from_secs(150), |c| {
        phase(c) == CanaryPhase::Succeeded
    })
    .await;
    assert!(
        s.events()
            .iter()
            .any(|e| e == "New revision detected! Restarting analysis for podinfo.test"),
        "{:#?}",
        s.events()
    );
    let primary: serde_json::Value =
        serde_json::from_str(&s.kubectl(&["-n", NS, "get", "deploy", "podinfo-primary", "-o", "json"]))
            .expect("json");
    assert_eq!(
        primary_image(&primary),
        "ghcr.io/stefanprodan/podinfo:6.0.2",
        "the newest revision is promoted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_tracked_secret_alone_is_analysed_and_promoted() {
    let s = initialized().await;
    s.kubectl(&[
        "-n",
        NS,
        "patch",
        "secret",
        "podinfo-secret",
        "--type=merge",
        "-p",
        r#"{"stringData":{"value":"second-secret"}}"#,
    ]);
    s.wait_canary("Progressing", Duration::from_secs(30), |c| {
        phase(c) == CanaryPhase::Progressing
    })
    .await;
    let c = s
        .wait_canary("Succeeded", Duration::from_secs(150), |c| {
            phase(c) == CanaryPhase::Succeeded
        })
        .await;
    let copy: serde_json::Value = serde_json::from_str(&s.kubectl(&[
        "-n",
        NS,
        "get",
        "secret",
        "podinfo-secret-primary",
        "-o",
        "json",
    ]))
    .expect("json");
    use base64::Engine;
    assert_eq!(
        copy["data"]["value"],
        base64::engine::general_purpose::STANDARD.encode("second-secret")
    );
    assert!(
        c.status
            .and_then(|st| st.tracked_configs)
            .is_some_and(|t| t.contains_key("secret/podinfo-secret"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_hold_the_rollout_until_opened_and_kubectl_follows_it() {
    let s = initialized().await;
    let gates = r#"{"spec":{"analysis":{"webhooks":[
        {"name":"ask-rollout","type":"confirm-rollout","url":"http://flagger-loadtester.test/gate/check"},
        {"name":"ask-promotion","type":"confirm-promotion","url":"http://flagger-loadtester.test/gate/check"}]}}}"#;
    s.patch_canary(gates);
    s.set_image("6.0.1");
    s.wait_canary("Waiting", Duration::from_secs(30), |c| {
        phase(c) == CanaryPhase::Waiting
    })
    .await;
    let proxy = s.tb.proxy_url().expect("proxy").to_owned();
    let gate = |action: &str| {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-x",
                &proxy,
                "-d",
                r#"{"name":"podinfo","namespace":"test"}"#,
                &format!("http://flagger-loadtester.test/gate/{action}"),
            ])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(gate("open"), "202");
    s.wait_canary("Progressing", Duration::from_secs(30), |c| {
        phase(c) == CanaryPhase::Progressing
    })
    .await;
    assert_eq!(gate("close"), "202");
    s.wait_canary("weight 10", Duration::from_secs(60), |c| {
        c.status.as_ref().is_some_and(|st| st.canary_weight >= 10)
    })
    .await;
    let table = s.kubectl(&["-n", NS, "get", "canaries"]);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row.get(1).copied(), Some("Progressing"), "{table}");
    assert!(
        row.get(2)
            .is_some_and(|w| w.parse::<i32>().is_ok_and(|w| w >= 10)),
        "{table}"
    );
    s.wait_canary("WaitingPromotion", Duration::from_secs(90), |c| {
        phase(c) == CanaryPhase::WaitingPromotion
    })
    .await;
    let mut waiter =
        s.tb.kubectl()
            .args([
                "-n",
                NS,
                "wait",
                "--for=condition=promoted",
                "canary/podinfo",
                "--timeout=90s",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("kubectl wait");
    assert_eq!(gate("open"), "202");
    s.wait_canary("Succeeded", Duration::from_secs(90), |c| {
        phase(c) == CanaryPhase::Succeeded
    })
    .await;
    let status = tokio::task::spawn_blocking(move || waiter.wait())
        .await
        .expect("join")
        .expect("wait exits");
    assert!(
        status.success(),
        "kubectl wait --for=condition=promoted returned {status}"
    );
    let events = s.events();
    support::assert_event(
        &events,
        "Halt podinfo.test advancement waiting for approval ask-rollout",
    );
    support::assert_event(
        &events,
        "Halt podinfo.test advancement waiting for promotion approval ask-promotion",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_that_never_gets_ready_fails_at_its_deadline() {
    let s = initialized().await;
    s.patch_target(r#"{"spec":{"progressDeadlineSeconds":10,"template":{"metadata":{"annotations":{"testbed.serin.dev/never-ready":"true"}}}}}"#);
    // The Canary's progressDeadlineSeconds is 60.
    s.wait_failed(Duration::from_secs(150)).await;
    let events = s.events();
    // The target was scaled up from 0, a scaling event: the deployment controller leaves its
    // Progressing condition alone, so it never reports ProgressDeadlineExceeded, and the canary
    // fails by Flagger's other rule, MinimumReplicasUnavailable for longer than the Canary's
    // progressDeadlineSeconds, with the last readiness message (FIDELITY.md, row 9).
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("canary deployment podinfo.test not ready: ")
                && (e.contains("updated replicas are available")
                    || e.contains("exceeded its progress deadline"))),
        "{events:#?}"
    );
    support::assert_event(&events, "Canary failed! Scaling down podinfo.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_canaries_do_not_stall_a_healthy_one() {
    let s = initialized().await;
    let broken = repo().join("tests/e2e/fixtures/broken-canaries.yaml");
    s.apply(&broken);
    s.set_image("6.0.1");
    s.wait_canary("Succeeded", Duration::from_secs(150), |c| {
        phase(c) == CanaryPhase::Succeeded
    })
    .await;
    let out = s.kubectl(&["-n", NS, "get", "events", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let for_canary = |name: &str| -> Vec<String> {
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["involvedObject"]["name"] == name && e["type"] == "Warning")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert!(
        for_canary("missing-target")
            .iter()
            .any(|m| m.contains("deployments.apps \"does-not-exist\" not found")),
        "{:?}",
        for_canary("missing-target")
    );
    assert!(
        for_canary("no-selector-label")
            .iter()
            .any(|m| m.contains("spec.selector.matchLabels must contain one of")),
        "{:?}",
        for_canary("no-selector-label")
    );
    assert!(
        for_canary("unimplemented-provider")
            .iter()
            .any(|m| m.contains("not implemented by serin")),
        "{:?}",
        for_canary("unimplemented-provider")
    );
    // A reconcile that panics is caught for its Canary and said on it.
    assert!(
        for_canary("panics")
            .iter()
            .any(|m| m == "reconcile panicked: test hook test.serin.dev/panic on Canary panics"),
        "{:?}",
        for_canary("panics")
    );
    let panics = s.canaries().get("panics").await.expect("canary");
    let condition = panics
        .status
        .and_then(|st| st.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Reconciled")
        .expect("a condition names the error");
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", "Panicked")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_canary_costs_no_api_requests() {
    let s = initialized().await;
    // Let the initialization's own writes settle: the status, then one quiet reconcile.
    s.wait_canary("a settled status", Duration::from_secs(10), |c| {
        c.status
            .as_ref()
            .is_some_and(|st| st.phase == CanaryPhase::Initialized)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.tb.reset_requests().await.expect("reset");
    // This measures an absence over time: a window longer than the analysis interval (10 s).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let requests = s.tb.requests().await.expect("requests");
    let by_serin: Vec<_> = requests
        .iter()
        .filter(|r| !r.user_agent.starts_with("kubectl") && r.verb != "watch")
        .collect();
    assert!(by_serin.is_empty(), "an idle Canary made requests: {by_serin:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagger_examples_run_unchanged() {
    let shared = repo().join("../shared/fixtures/flagger");
    if !shared.is_dir() {
        eprintln!(
            "SKIP: Flagger fixtures not found at {} (the compatibility suite needs ../shared)",
            shared.display()
        );
        return;
    }
    let mut s = Scenario::start().await;
    s.kubectl(&[
        "-n",
        "istio-system",
        "apply",
        "-f",
        shared
            .join("canaries/metrictemplate-latency.yaml")
            .to_str()
            .expect("utf8"),
    ]);
    s.apply(&shared.join("workloads"));
    s.apply(&shared.join("canaries/canary-progressive.yaml"));
    s.start_serin();
    s.wait_canary("Initialized", Duration::from_secs(60), |c| {
        phase(c) == CanaryPhase::Initialized
    })
    .await;
    let services: Api<Service> = Api::namespaced(s.client.clone(), NS);
    let apex = services.get("podinfo").await.expect("apex");
    assert_eq!(
        apex.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("test"))
            .map(String::as_str),
        Some("labels-test")
    );
    assert_eq!(
        apex.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("test"))
            .map(String::as_str),
        Some("annotations-test")
    );
    let vs: serde_json::Value =
        serde_json::from_str(&s.kubectl(&["-n", NS, "get", "virtualservice", "podinfo", "-o", "json"]))
            .expect("vs");
    assert_eq!(
        vs["spec"]["http"][0]["headers"]["request"]["add"]["x-envoy-max-retries"],
        "10"
    );
    s.kubectl(&["-n", NS, "get", "secret", "podinfo-secret-primary"]);
    s.set_image("6.0.1");
    s.wait_canary("Succeeded", Duration::from_secs(180), |c| {
        phase(c) == CanaryPhase::Succeeded
    })
    .await;
    let primary: serde_json::Value =
        serde_json::from_str(&s.kubectl(&["-n", NS, "get", "deploy", "podinfo-primary", "-o", "json"]))
            .expect("json");
    assert_eq!(primary_image(&primary), "ghcr.io/stefanprodan/podinfo:6.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_regression_is_caught_by_the_latency_template() {
    let s = initialized().await;
    s.patch_target(r#"{"spec":{"template":{"metadata":{"annotations":{"testbed.serin.dev/latency-ms":"300","testbed.serin.dev/latency-p99-ms":"900"}}}}}"#);
    s.wait_failed(Duration::from_secs(120)).await;
    let events = s.events();
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("Halt podinfo.test advancement latency ") && e.ends_with(" > 500")),
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_outage_fails_checks_and_the_rollout_completes_after_it() {
    // First Prometheus answers 500, then it is unreachable, then it is back.
    let s = initialized().await;
    // Three failed checks are tolerated through the outage.
    s.patch_canary(r#"{"spec":{"analysis":{"threshold":3}}}"#);
    s.set_image("6.0.1");
    s.wait_canary("weight 10", Duration::from_secs(60), |c| {
        c.status.as_ref().is_some_and(|st| st.canary_weight >= 10)
    })
    .await;
    s.tb.set_prometheus_reachable(false);
    s.wait_canary("a failed check", Duration::from_secs(60), |c| {
        c.status.as_ref().is_some_and(|st| st.failed_checks >= 1)
    })
    .await;
    s.tb.set_prometheus_reachable(true);
    let c = s
        .wait_canary("Succeeded", Duration::from_secs(120), |c| {
            matches!(phase(c), CanaryPhase::Succeeded | CanaryPhase::Failed)
        })
        .await;
    assert_eq!(phase(&c), CanaryPhase::Succeeded, "{:#?}", s.events());
    assert!(
        s.events()
            .iter()
            .any(|e| e.starts_with("Prometheus query failed: ")),
        "{:#?}",
        s.events()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_that_does_not_render_fails_checks_with_its_error() {
    let s = initialized().await;
    let bad = r#"{"spec":{"query":"sum(rate(x{reporter=\"{{ variables.reporter }}\"}[{{ interval }}]))"}}"#;
    s.kubectl(&[
        "-n",
        NS,
        "patch",
        "metrictemplate",
        "latency",
        "--type=merge",
        "-p",
        bad,
    ]);
    s.set_image("6.0.1");
    s.wait_failed(Duration::from_secs(120)).await;
    let events = s.events();
    assert!(
        events.iter().any(
            |e| e.starts_with("Metric template latency.test query render error: ")
                && e.contains("\"reporter\"")
        ),
        "{events:#?}"
    );
}

/// A local HTTP receiver: every POSTed JSON body, answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_webhooks_receive_every_event() {
    let s = initialized().await;
    let (url, seen) = support::receiver(200).await;
    let hooks = format!(
        r#"{{"spec":{{"analysis":{{"webhooks":[{{"name":"events","type":"event","url":"{url}","metadata":{{"team":"web"}}}}]}}}}}}"#
    );
    s.patch_canary(&hooks);
    s.set_image("6.0.1");
    s.wait_canary("Succeeded", Duration::from_secs(150), |c| {
        phase(c) == CanaryPhase::Succeeded
    })
    .await;
    let payloads = eventually_payloads(&seen, "Promotion completed! Scaling down podinfo.test").await;
    let scaling = payloads
        .iter()
        .find(|p| p["metadata"]["eventMessage"] == "New revision detected! Scaling up podinfo.test")
        .expect("the new revision event");
    assert_eq!(
        (scaling["name"].clone(), scaling["namespace"].clone()),
        (serde_json::json!("podinfo"), serde_json::json!(NS))
    );
    assert_eq!(scaling["metadata"]["eventType"], "Normal");
    assert_eq!(
        scaling["phase"], "Progressing",
        "as Flagger reports the new revision"
    );
    assert_eq!(
        scaling["metadata"]["team"], "web",
        "the hook's own metadata comes along"
    );
    assert!(
        scaling["metadata"]["timestamp"]
            .as_str()
            .is_some_and(|t| t.parse::<u64>().is_ok())
    );
}

async fn eventually_payloads(seen: &support::Received, message: &str) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let payloads: Vec<serde_json::Value> = seen
            .lock()
            .expect("lock")
            .iter()
            .map(|d| d.body.clone())
            .collect();
        if payloads.iter().any(|p| p["metadata"]["eventMessage"] == message) {
            return payloads;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no event {message:?} received; got {payloads:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_analysis_promotes_without_analysing() {
    let mut s = Scenario::start().await;
    s.apply(&repo().join("examples/canary"));
    s.patch_canary(r#"{"spec":{"skipAnalysis":true}}"#);
    s.start_serin();
    s.wait_canary("Initialized", Duration::from_secs(60), |c| {
        phase(c) == CanaryPhase::Initialized
    })
    .await;
    s.set_image("6.0.1");
    s.wait_canary("Succeeded", Duration::from_secs(60), |c| {
        phase(c) == CanaryPhase::Succeeded
    })
    .await;
    let events = s.events();
    support::assert_event(
        &events,
        "Promotion completed! Canary analysis was skipped for podinfo.test",
    );
    assert!(
        !events.iter().any(|e| e.starts_with("Advance ")),
        "no traffic steps: {events:#?}"
    );
    let primary: serde_json::Value =
        serde_json::from_str(&s.kubectl(&["-n", NS, "get", "deploy", "podinfo-primary", "-o", "json"]))
            .expect("json");
    assert_eq!(primary_image(&primary), "ghcr.io/stefanprodan/podinfo:6.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_times_out_fails_checks_and_rolls_back() {
    let s = initialized().await;
    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let url = format!("http://{}/", silent.local_addr().expect("addr"));
    let hooks = format!(
        r#"{{"spec":{{"analysis":{{"webhooks":[{{"name":"slow-check","type":"rollout","url":"{url}","timeout":"1s"}}]}}}}}}"#
    );
    s.patch_canary(&hooks);
    s.set_image("6.0.1");
    s.wait_failed(Duration::from_secs(90)).await;
    let events = s.events();
    assert!(
        events.iter().any(|e| e
            .starts_with("Halt podinfo.test advancement external check slow-check failed")
            && e.contains("timed out")),
        "{events:#?}"
    );
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaries_that_exist_before_the_controller_starts_are_all_initialized() {
    // Many reconciles start at once while the caches fill; none may be lost or stuck.
    let mut s = Scenario::start().await;
    let mut manifests = String::new();
    for i in 0..12 {
        manifests.push_str(&format!(
            r#"---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: app-{i}, labels: {{app: app-{i}}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: app-{i}}}}}
  template:
    metadata: {{labels: {{app: app-{i}}}}}
    spec: {{containers: [{{name: app, image: "ghcr.io/stefanprodan/podinfo:6.0.0"}}]}}
---
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {{name: app-{i}}}
spec:
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: app-{i}}}
  service: {{port: 9898}}
  analysis: {{interval: 10s, threshold: 1, maxWeight: 50, stepWeight: 50}}
"#
        ));
    }
    let file = std::env::temp_dir().join(format!("serin-many-{}.yaml", std::process::id()));
    std::fs::write(&file, manifests).expect("write");
    s.apply(&file);
    s.start_serin();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let list = s.canaries().list(&Default::default()).await.expect("list");
        let waiting: Vec<String> = list
            .items
            .iter()
            .filter(|c| phase(c) != CanaryPhase::Initialized)
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        if waiting.is_empty() && list.items.len() == 12 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not initialized: {waiting:?}\n{}",
            support::tail(&s.log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_flagger_wrote_on_the_primary_are_taken_over_and_removed_at_promotion() {
    let mut s = Scenario::start().await;
    s.apply(&repo().join("examples/canary"));
    s.patch_canary(r#"{"spec":{"skipAnalysis":true}}"#);
    s.start_serin();
    s.wait_canary("Initialized", Duration::from_secs(60), |c| {
        phase(c) == CanaryPhase::Initialized
    })
    .await;
    // Flagger wrote the primary with Update: an env var the target no longer has is Flagger's.
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), NS);
    let mut primary = deployments.get("podinfo-primary").await.expect("primary");
    let containers = &mut primary
        .spec
        .as_mut()
        .expect("spec")
        .template
        .spec
        .as_mut()
        .expect("pod spec")
        .containers;
    containers[0]
        .env
        .get_or_insert_with(Vec::new)
        .push(k8s_openapi::api::core::v1::EnvVar {
            name: "LEGACY".into(),
            value: Some("1".into()),
            ..Default::default()
        });
    primary.metadata.managed_fields = None;
    let as_flagger = kube::api::PostParams {
        field_manager: Some("flagger".into()),
        ..Default::default()
    };
    deployments
        .replace("podinfo-primary", &as_flagger, &primary)
        .await
        .expect("Flagger's update");
    s.set_image("6.0.1");
    s.wait_canary("Succeeded", Duration::from_secs(60), |c| {
        phase(c) == CanaryPhase::Succeeded
    })
    .await;
    let primary = deployments.get("podinfo-primary").await.expect("primary");
    let env: Vec<String> = primary
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].env.clone().unwrap_or_default())
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(
        !env.contains(&"LEGACY".to_owned()),
        "serin removed what only Flagger set: {env:?}"
    );
    let managers: Vec<String> = primary
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(!managers.contains(&"flagger".to_owned()), "{managers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_switched_from_flagger_does_not_roll_out_again() {
    let mut s = initialized().await;
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), NS);
    let flagger_id = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.clone())
            .and_then(|a| a.get("flagger-id").cloned())
    };
    let before = flagger_id(&deployments.get("podinfo-primary").await.expect("primary"));
    // The status as Flagger left it: Succeeded, with Flagger's own revision hashes.
    s.kill_serin();
    s.kubectl(&[
        "-n",
        NS,
        "patch",
        "canary",
        "podinfo",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Succeeded","lastAppliedSpec":"5d8f7c9b6","lastPromotedSpec":"5d8f7c9b6"}}"#,
    ]);
    s.start_serin();
    s.wait_canary("the revision adopted", Duration::from_secs(60), |c| {
        c.status
            .as_ref()
            .and_then(|st| st.last_applied_spec.as_deref())
            .is_some_and(|h| h != "5d8f7c9b6")
    })
    .await;
    let c = s.canaries().get("podinfo").await.expect("canary");
    assert_eq!(phase(&c), CanaryPhase::Succeeded);
    let events = s.events();
    assert!(
        !events.iter().any(|e| e.starts_with("New revision detected")),
        "no rollout: {events:#?}"
    );
    let target = deployments.get("podinfo").await.expect("target");
    assert_eq!(
        target.spec.and_then(|s| s.replicas),
        Some(0),
        "the target stays scaled down"
    );
    let primary = deployments.get("podinfo-primary").await.expect("primary");
    assert_eq!(flagger_id(&primary), before, "the primary is not rolled");
}
