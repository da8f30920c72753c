//! Table-driven tests of the state machine, one per transition of Flagger's phase table (and
//! serin's deliberate differences), beside what they test: one file per file of the engine.
//! This one holds the fixtures they share.

mod ab;
mod affinity;
mod blue_green;
mod canary;
mod lifecycle;
mod operate;
mod promotion;

pub(super) use std::{collections::BTreeMap, time::Duration};

pub(super) use super::*;
pub(super) use crate::api::canary::{
    CanaryAnalysis, CanaryService, CanaryWebhook, DeploymentStrategy, TargetRef,
};

pub(super) const NOW: i64 = 1_000_000;

pub(super) fn spec() -> CanarySpec {
    CanarySpec {
        target_ref: TargetRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "podinfo".into(),
        },
        service: CanaryService {
            port: 9898,
            ..Default::default()
        },
        analysis: Some(CanaryAnalysis {
            interval: Some("30s".into()),
            threshold: Some(2),
            max_weight: Some(30),
            step_weight: Some(10),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn with_hooks(mut s: CanarySpec, kinds: &[&str]) -> CanarySpec {
    let hooks = kinds
        .iter()
        .map(|k| CanaryWebhook {
            name: format!("{k}-hook"),
            type_: Some((*k).into()),
            url: "http://hook/".into(),
            ..Default::default()
        })
        .collect();
    s.analysis.as_mut().expect("analysis").webhooks = Some(hooks);
    s
}

pub(super) fn status(phase: CanaryPhase, weight: i32, failed: i32) -> CanaryStatus {
    CanaryStatus {
        phase,
        canary_weight: weight,
        failed_checks: failed,
        last_applied_spec: Some("rev1".into()),
        last_promoted_spec: Some("rev1".into()),
        tracked_configs: Some(BTreeMap::new()),
        ..Default::default()
    }
}

pub(super) fn observed(hash: &str, primary: i32, canary: i32) -> Observed {
    Observed {
        target_hash: hash.into(),
        configs: BTreeMap::new(),
        canary: Readiness::Ready,
        primary: Some(Readiness::Ready),
        routes: Some(Routes {
            primary,
            canary,
            mirrored: false,
        }),
        now: NOW,
        last_transition: Some(NOW - 60),
        random: "abcdefghijklmnopqrst".into(),
        routing_drift: false,
        primary_current: false,
        look_every: None,
    }
}

pub(super) fn run(
    spec: &CanarySpec,
    status: &CanaryStatus,
    observed: &Observed,
    checks: &[(Check, CheckResult)],
) -> Decision {
    let checks: BTreeMap<Check, CheckResult> = checks.iter().cloned().collect();
    decide(&Input {
        name: "podinfo",
        namespace: "test",
        spec,
        status,
        observed,
        checks: &checks,
        request: None,
        paused_by: None,
    })
}

pub(super) fn passed() -> CheckResult {
    CheckResult::Passed(Vec::new())
}

pub(super) fn failed(message: &str) -> CheckResult {
    CheckResult::Failed(vec![Event::warning(message)])
}

pub(super) fn messages(d: &Decision) -> Vec<&str> {
    d.events.iter().map(|e| e.message.as_str()).collect()
}

pub(super) fn phase(d: &Decision) -> Option<CanaryPhase> {
    d.status.as_ref().and_then(|s| s.phase)
}

pub(super) fn routes(primary: i32, canary: i32) -> Action {
    Action::SetRoutes(Routes {
        primary,
        canary,
        mirrored: false,
    })
}

pub(super) fn progressing(weight: i32, failed_checks: i32) -> CanaryStatus {
    CanaryStatus {
        last_applied_spec: Some("rev2".into()),
        ..status(CanaryPhase::Progressing, weight, failed_checks)
    }
}

pub(super) fn promoting(weight: i32) -> CanaryStatus {
    CanaryStatus {
        phase: CanaryPhase::Promoting,
        ..progressing(weight, 0)
    }
}

pub(super) fn iterated(iterations: i32, ab: bool, mirror: bool) -> CanarySpec {
    let mut s = spec();
    let a = s.analysis.as_mut().expect("analysis");
    (a.step_weight, a.max_weight, a.iterations) = (None, None, Some(iterations));
    a.mirror = Some(mirror);
    if ab {
        a.match_ = Some(vec![
            serde_json::from_value(
                serde_json::json!({"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}}),
            )
            .expect("match"),
        ]);
    }
    s
}

pub(super) fn at_iteration(done: i32) -> CanaryStatus {
    CanaryStatus {
        iterations: done,
        ..progressing(0, 0)
    }
}

pub(super) fn iterations(d: &Decision) -> Option<i32> {
    d.status.as_ref().and_then(|s| s.iterations)
}

pub(super) fn with_affinity(mut s: CanarySpec) -> CanarySpec {
    s.analysis.as_mut().expect("analysis").session_affinity = Some(crate::api::canary::SessionAffinity {
        cookie_name: "flagger-cookie".into(),
        primary_cookie_name: Some("primary-cookie".into()),
        ..Default::default()
    });
    s
}
