//! The entry points that read untrusted input, each taking the raw text as it arrives: Canary,
//! MetricTemplate and AlertProvider documents (through validation, the builders and
//! `engine::decide` in every phase), metric template rendering, durations and Prometheus
//! responses. `fuzz/` feeds them to libFuzzer and `tests/inputs.rs` drives them with generated
//! cases; both check that no input panics. Pure.

use std::collections::BTreeMap;

use serde_json::json;

use crate::{
    analysis::{self, prometheus, render},
    api::{AlertProvider, Canary, CanaryPhase, CanaryStatus, MetricTemplate},
    engine::{self, CheckResult, Event, Input, Observed, Readiness, Routes, build},
    validate::{self, Finding},
};

/// A Canary document: decoded, validated, and when it would run, built and decided in every
/// phase with every check result. `Err` is the decoding error; `Ok` the findings.
pub fn canary_document(text: &str) -> Result<Vec<Finding>, String> {
    let canary: Canary = serin_runtime::yaml::from_str(text)?;
    let findings = validate::canary(&canary.spec, "istio");
    if findings.iter().any(Finding::blocks_run) {
        return Ok(findings);
    }
    exercise(&canary);
    Ok(findings)
}

fn exercise(canary: &Canary) {
    let spec = &canary.spec;
    let _ = (
        spec.analysis_interval(),
        spec.max_weight(),
        spec.iterations(),
        spec.deployment_strategy(),
        spec.progress_deadline_seconds(),
        canary.service_names(),
    );
    let pod_spec = json!({"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 9898, "name": "http"}, {"containerPort": 8080}]}]});
    let _ = build::routing::services(
        canary,
        build::routing::Target {
            label: ("app", "podinfo"),
            pod_spec: &pod_spec,
        },
    );
    let _ = build::routing::destination_rules(canary);
    let _ = build::routing::virtual_service_error(canary);
    for (primary, canary_weight, mirrored) in [(100, 0, false), (50, 50, true), (0, 100, false)] {
        let vs = build::routing::virtual_service(canary, primary, canary_weight, mirrored);
        let _ = build::routing::read_routes(canary, &vs["spec"]);
    }
    let target = json!({
        "metadata": {"name": spec.target_ref.name, "namespace": "test", "labels": {"app": "podinfo"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "podinfo"}}, "template": {"metadata": {"labels": {"app": "podinfo"}}, "spec": pod_spec}},
    });
    let selector_labels = vec!["app".to_owned()];
    for promotion in [false, true] {
        let _ = build::primary::primary_deployment(
            build::primary::PrimaryInput {
                canary,
                target: &target,
                label: ("app", "podinfo"),
                selector_labels: &selector_labels,
                include_label_prefixes: &[],
                tracked: &Default::default(),
                flagger_id: "id",
                primary_replicas: Some(3),
            },
            promotion,
        );
    }
    for metric in spec.analysis.iter().flat_map(|a| a.metrics.iter().flatten()) {
        let _ = analysis::metric_interval(metric);
        for value in [0.0, 99.5, 1e308, -1.0, f64::MIN_POSITIVE] {
            let _ = analysis::verdict("podinfo.test", metric, value);
        }
    }
    decide_everywhere(canary);
}

/// `engine::decide` from every phase, with ready and unready workloads, and every check passed
/// or failed, following each requested check until the decision needs none.
fn decide_everywhere(canary: &Canary) {
    let phases = [
        CanaryPhase::Unset,
        CanaryPhase::Initializing,
        CanaryPhase::Initialized,
        CanaryPhase::Waiting,
        CanaryPhase::Progressing,
        CanaryPhase::WaitingPromotion,
        CanaryPhase::Promoting,
        CanaryPhase::Finalising,
        CanaryPhase::Succeeded,
        CanaryPhase::Failed,
    ];
    for phase in phases {
        for (weight, iterations, failed) in [(0, 0, 0), (10, 1, 1), (100, 3, i32::MAX)] {
            let status = CanaryStatus {
                phase,
                canary_weight: weight,
                iterations,
                failed_checks: failed,
                last_applied_spec: Some("rev1".into()),
                last_promoted_spec: Some("rev1".into()),
                tracked_configs: Some(BTreeMap::new()),
                ..Default::default()
            };
            for (ready, pass) in [(true, true), (false, false), (true, false)] {
                let observed = Observed {
                    target_hash: "rev2".into(),
                    configs: BTreeMap::new(),
                    canary: if ready {
                        Readiness::Ready
                    } else {
                        Readiness::Waiting("w".into())
                    },
                    primary: Some(if ready {
                        Readiness::Ready
                    } else {
                        Readiness::Failed("f".into())
                    }),
                    routes: Some(Routes {
                        primary: 100 - weight,
                        canary: weight,
                        mirrored: !ready,
                    }),
                    now: 1_000_000,
                    last_transition: Some(if ready { 0 } else { i64::MIN / 2 }),
                    random: "abcdefghijklmnopqrst".into(),
                    routing_drift: !pass,
                    primary_current: false,
                    look_every: (!pass).then_some(std::time::Duration::from_secs(5)),
                };
                // The Canary's own decision, then each request people may make of it (for
                // its revision, and an unknown action), paused or not.
                let requests: Vec<Option<engine::Request>> = std::iter::once(None)
                    .chain(
                        [
                            ("promote", false),
                            ("promote", true),
                            ("abort", false),
                            ("retry", false),
                            ("pause", false),
                            ("resume", false),
                            ("rewind", false),
                        ]
                        .into_iter()
                        .map(|(action, full)| {
                            Some(engine::Request {
                                name: format!("podinfo-{action}"),
                                action: action.into(),
                                operation: engine::Operation::parse(action, full),
                                revision: "rev1".into(),
                                by: "alice".into(),
                                created: 0,
                                answer: None,
                            })
                        }),
                    )
                    .collect();
                for request in &requests {
                    let mut checks = BTreeMap::new();
                    for _ in 0..8 {
                        let d = engine::decide(&Input {
                            name: "podinfo",
                            namespace: "test",
                            spec: &canary.spec,
                            status: &status,
                            observed: &observed,
                            checks: &checks,
                            request: request.as_ref(),
                            paused_by: (!pass).then_some("bob"),
                        });
                        let Some(check) = d.need else { break };
                        let events = vec![Event::normal("check")];
                        checks.insert(
                            check,
                            if pass {
                                CheckResult::Passed(events)
                            } else {
                                CheckResult::Failed(events)
                            },
                        );
                    }
                }
            }
        }
    }
}

/// A MetricTemplate document, decoded and validated; its query rendered with a model.
pub fn metric_template_document(text: &str) -> Result<Vec<Finding>, String> {
    let template: MetricTemplate = serin_runtime::yaml::from_str(text)?;
    let _ = template_query(&template.spec.query);
    Ok(validate::metric_template(&template.spec))
}

/// An AlertProvider document, decoded and validated.
pub fn alert_provider_document(text: &str) -> Result<Vec<Finding>, String> {
    let provider: AlertProvider = serin_runtime::yaml::from_str(text)?;
    Ok(validate::alert_provider(&provider.spec))
}

/// A metric template query rendered with a model that has one variable.
pub fn template_query(text: &str) -> Result<String, String> {
    let model = render::Model {
        name: "podinfo".into(),
        namespace: "test".into(),
        target: "podinfo".into(),
        service: "podinfo".into(),
        ingress: "podinfo".into(),
        route: "podinfo".into(),
        interval: "1m".into(),
        variables: BTreeMap::from([("reporter".to_owned(), "destination".to_owned())]),
    };
    let rendered = render::render(text, &model)?;
    Ok(render::collapse_whitespace(&rendered))
}

/// A Go duration: parsed, and a parsed value formats to text that parses back to it.
pub fn duration(text: &str) -> Result<std::time::Duration, String> {
    let d = serin_runtime::duration::parse(text).map_err(|e| e.to_string())?;
    let again = serin_runtime::duration::parse(&serin_runtime::duration::format(d));
    assert_eq!(again, Ok(d), "{text:?} formats to text that parses back");
    Ok(d)
}

/// A Prometheus query response (`data` of the HTTP API's JSON), read as a check reads it.
pub fn prometheus_response(text: &str) -> Result<f64, String> {
    let data: prometheus_http_query::response::Data =
        serde_json::from_str(text).map_err(|e| e.to_string())?;
    prometheus::value_of(&data).map_err(|e| e.to_string())
}

/// Whether a rejection names where the problem is: the field (serde's path, or the field in
/// backquotes), the position in the document, or the document itself when it is not an object.
pub fn names_its_place(message: &str) -> bool {
    message.contains(" at line ")
        || message.contains("expected struct ")
        || message.contains(" at position ")
        || message.contains('`')
        || message.starts_with("spec")
        || message.starts_with("metadata")
}
