//! Initialisation, starting a run, the run in progress, failed checks and rollback.

use super::*;

#[test]
fn unset_becomes_initializing_and_creates_objects() {
    let d = run(&spec(), &CanaryStatus::default(), &observed("rev1", 100, 0), &[]);
    assert_eq!(phase(&d), Some(CanaryPhase::Initializing));
    assert_eq!(d.actions, [Action::EnsurePrimary, Action::EnsureBackendServices]);
    assert_eq!(d.requeue_after, Some(Duration::ZERO));
}

#[test]
fn initialisation_reports_whether_the_metric_providers_answer() {
    let mut s = spec();
    s.analysis.as_mut().expect("analysis").metrics = Some(vec![crate::api::canary::CanaryMetric {
        name: "request-success-rate".into(),
        threshold: Some(99.0),
        ..Default::default()
    }]);
    let d = run(&s, &CanaryStatus::default(), &observed("rev1", 100, 0), &[]);
    assert_eq!(d.need, Some(Check::MetricProviders));
    for (result, want) in [
        (
            CheckResult::Passed(vec![Event::normal("all the metrics providers are available!")]),
            "all the metrics providers are available!",
        ),
        (
            failed("Error checking metric providers: prometheus not avaiable: running query failed"),
            "Error checking metric providers: prometheus not avaiable: running query failed",
        ),
    ] {
        let d = run(
            &s,
            &CanaryStatus::default(),
            &observed("rev1", 100, 0),
            &[(Check::MetricProviders, result)],
        );
        assert_eq!(messages(&d), [want]);
        assert_eq!(
            phase(&d),
            Some(CanaryPhase::Initializing),
            "it never holds the initialisation"
        );
    }
}

#[test]
fn initializing_waits_for_the_primary_then_initializes() {
    let st = status(CanaryPhase::Initializing, 0, 0);
    let mut o = observed("rev1", 100, 0);
    o.primary = Some(Readiness::Waiting(
        "podinfo-primary.test not ready: waiting for rollout to finish".into(),
    ));
    let d = run(&spec(), &st, &o, &[]);
    assert_eq!(phase(&d), None);
    assert_eq!(d.requeue_after, Some(READINESS_POLL));
    assert!(d.events[0].warning);
    // The apex Service and the VirtualService (perhaps the user's, carrying traffic) switch to
    // the primary only once it is ready: never while its pods are starting.
    assert_eq!(d.actions, [Action::EnsurePrimary, Action::EnsureBackendServices]);
    let mut drifted = o.clone();
    drifted.routing_drift = true;
    let d = run(&spec(), &st, &drifted, &[]);
    assert_eq!(
        d.actions,
        [Action::EnsurePrimary, Action::EnsureBackendServices],
        "a user's VirtualService is not drift yet"
    );

    let d = run(&spec(), &st, &observed("rev2", 100, 0), &[]);
    assert_eq!(phase(&d), Some(CanaryPhase::Initialized));
    assert_eq!(
        d.actions,
        [
            Action::EnsurePrimary,
            Action::EnsureRouting,
            Action::ScaleTarget(Scale::Zero)
        ]
    );
    assert_eq!(messages(&d), ["Initialization done! podinfo.test"]);
    let s = d.status.expect("status");
    assert_eq!(
        (s.last_applied_spec.as_deref(), s.last_promoted_spec.as_deref()),
        (Some("rev2"), Some("rev2"))
    );
}

#[test]
fn skip_analysis_initializes_without_waiting_for_the_primary() {
    let mut s = spec();
    s.skip_analysis = Some(true);
    let mut o = observed("rev1", 100, 0);
    o.primary = None;
    let d = run(&s, &status(CanaryPhase::Initializing, 0, 0), &o, &[]);
    assert_eq!(phase(&d), Some(CanaryPhase::Initialized));
}

#[test]
fn a_failed_revision_applied_again_after_a_revert_is_analysed_again() {
    // rev2 failed; the team reverts the target to rev1 (the promoted revision) by hand.
    let failed = CanaryStatus {
        last_applied_spec: Some("rev2".into()),
        ..status(CanaryPhase::Failed, 0, 0)
    };
    let d = run(&spec(), &failed, &observed("rev1", 100, 0), &[]);
    assert!(d.actions.is_empty(), "a manual rollback starts nothing");
    let update = d.status.expect("the running revision is recorded");
    assert_eq!(
        (update.phase, update.last_applied_spec.as_deref()),
        (None, Some("rev1"))
    );
    let reverted = CanaryStatus {
        last_applied_spec: Some("rev1".into()),
        ..failed
    };
    assert_eq!(
        run(&spec(), &reverted, &observed("rev1", 100, 0), &[]),
        Decision::default(),
        "recorded once"
    );
    // rev2 again (a fix elsewhere, a retry): a new run.
    let d = run(
        &spec(),
        &reverted,
        &observed("rev2", 100, 0),
        &[(Check::ConfirmRollout, passed())],
    );
    assert_eq!(phase(&d), Some(CanaryPhase::Progressing));
    assert_eq!(d.actions, [Action::ScaleTarget(Scale::FromZero)]);
}

#[test]
fn a_canary_switched_from_flagger_adopts_the_revision_its_primary_runs() {
    // Flagger's hashes in the status: the target looks new to serin.
    let flaggers = CanaryStatus {
        last_applied_spec: Some("5d8f7c9b6".into()),
        last_promoted_spec: Some("5d8f7c9b6".into()),
        ..status(CanaryPhase::Succeeded, 0, 0)
    };
    let mut o = observed("rev1", 100, 0);
    o.primary_current = true;
    let d = run(&with_hooks(spec(), &["confirm-rollout"]), &flaggers, &o, &[]);
    assert!(
        d.actions.is_empty() && d.events.is_empty() && d.need.is_none(),
        "no run: {d:?}"
    );
    let update = d.status.expect("hashes recorded");
    assert_eq!(update.phase, None);
    assert_eq!(
        (
            update.last_applied_spec.as_deref(),
            update.last_promoted_spec.as_deref()
        ),
        (Some("rev1"), Some("rev1"))
    );
    o.primary_current = false;
    let d = run(&spec(), &flaggers, &o, &[]);
    assert_eq!(
        phase(&d),
        Some(CanaryPhase::Progressing),
        "a primary behind the target rolls out"
    );
}

#[test]
fn idle_phases_do_nothing_without_a_new_revision() {
    for p in [
        CanaryPhase::Initialized,
        CanaryPhase::Succeeded,
        CanaryPhase::Failed,
    ] {
        let d = run(&spec(), &status(p, 0, 0), &observed("rev1", 100, 0), &[]);
        assert_eq!(d, Decision::default(), "{p}");
    }
}

#[test]
fn a_new_revision_scales_up_and_progresses_at_once() {
    for p in [
        CanaryPhase::Initialized,
        CanaryPhase::Succeeded,
        CanaryPhase::Failed,
    ] {
        let d = run(&spec(), &status(p, 0, 0), &observed("rev2", 100, 0), &[]);
        assert_eq!(phase(&d), Some(CanaryPhase::Progressing), "{p}");
        assert_eq!(d.actions, [Action::ScaleTarget(Scale::FromZero)]);
        assert_eq!(messages(&d), ["New revision detected! Scaling up podinfo.test"]);
        assert_eq!(
            d.events[0].phase,
            Some(CanaryPhase::Progressing),
            "event webhooks see the new revision as Progressing, as Flagger's copy"
        );
        assert_eq!(
            d.requeue_after,
            Some(Duration::ZERO),
            "serin does not wait a tick"
        );
        let s = d.status.expect("status");
        assert_eq!(
            (
                s.canary_weight,
                s.failed_checks,
                s.iterations,
                s.last_applied_spec.as_deref()
            ),
            (Some(0), Some(0), Some(0), Some("rev2"))
        );
    }
}

#[test]
fn a_changed_tracked_config_is_a_new_revision() {
    let mut o = observed("rev1", 100, 0);
    o.configs.insert("secret/podinfo-secret".into(), "abc".into());
    let d = run(&spec(), &status(CanaryPhase::Succeeded, 0, 0), &o, &[]);
    assert_eq!(phase(&d), Some(CanaryPhase::Progressing));
    assert_eq!(
        d.status
            .and_then(|s| s.tracked_configs)
            .and_then(|t| t.get("secret/podinfo-secret").cloned())
            .as_deref(),
        Some("abc")
    );
}

#[test]
fn confirm_rollout_gates_in_waiting() {
    let s = with_hooks(spec(), &["confirm-rollout"]);
    let o = observed("rev2", 100, 0);
    let d = run(&s, &status(CanaryPhase::Initialized, 0, 0), &o, &[]);
    assert_eq!(d.need, Some(Check::ConfirmRollout));
    let d = run(
        &s,
        &status(CanaryPhase::Initialized, 0, 0),
        &o,
        &[(
            Check::ConfirmRollout,
            failed("Halt podinfo.test advancement waiting for approval confirm-rollout-hook"),
        )],
    );
    assert_eq!(phase(&d), Some(CanaryPhase::Waiting));
    assert_eq!(
        messages(&d),
        ["Halt podinfo.test advancement waiting for approval confirm-rollout-hook"]
    );
    // Still waiting: no status write.
    let d = run(
        &s,
        &status(CanaryPhase::Waiting, 0, 0),
        &o,
        &[(Check::ConfirmRollout, failed("Halt ..."))],
    );
    assert_eq!(d.status, None);
    // Waiting resumes even though the status already recorded nothing new.
    let waiting = CanaryStatus {
        last_applied_spec: Some("rev2".into()),
        ..status(CanaryPhase::Waiting, 0, 0)
    };
    let d = run(
        &s,
        &waiting,
        &o,
        &[(
            Check::ConfirmRollout,
            CheckResult::Passed(vec![Event::normal(
                "Confirm-rollout check confirm-rollout-hook passed",
            )]),
        )],
    );
    assert_eq!(phase(&d), Some(CanaryPhase::Progressing));
    assert_eq!(
        messages(&d)[0],
        "Confirm-rollout check confirm-rollout-hook passed"
    );
}

#[test]
fn a_revision_during_the_analysis_restarts_it() {
    for p in [CanaryPhase::Progressing, CanaryPhase::WaitingPromotion] {
        let st = CanaryStatus {
            phase: p,
            ..progressing(20, 1)
        };
        let d = run(&spec(), &st, &observed("rev3", 80, 20), &[]);
        assert_eq!(
            messages(&d),
            ["New revision detected! Restarting analysis for podinfo.test"],
            "{p}"
        );
        assert_eq!(d.actions, [routes(100, 0)]);
        let s = d.status.expect("status");
        assert_eq!(
            (
                s.phase,
                s.canary_weight,
                s.failed_checks,
                s.last_applied_spec.as_deref()
            ),
            (Some(CanaryPhase::Progressing), Some(0), Some(0), Some("rev3"))
        );
    }
}

#[test]
fn readiness_halts_without_failing_checks() {
    let mut o = observed("rev2", 100, 0);
    o.canary =
        Readiness::Waiting("canary deployment podinfo.test not ready: waiting for rollout to finish".into());
    let d = run(&spec(), &progressing(0, 0), &o, &[]);
    assert_eq!((d.status.clone(), d.requeue_after), (None, Some(READINESS_POLL)));
    let mut o = observed("rev2", 100, 0);
    o.primary = Some(Readiness::Waiting("not ready".into()));
    assert_eq!(run(&spec(), &progressing(0, 0), &o, &[]).status, None);
}

#[test]
fn a_canary_past_its_deadline_is_rolled_back() {
    let mut o = observed("rev2", 90, 10);
    o.canary = Readiness::Failed(
        "canary deployment podinfo.test not ready: deployment \"podinfo\" exceeded its progress deadline"
            .into(),
    );
    let d = run(&spec(), &progressing(10, 0), &o, &[]);
    assert_eq!(phase(&d), Some(CanaryPhase::Failed));
    assert_eq!(
        d.actions,
        [
            routes(100, 0),
            Action::ScaleTarget(Scale::Zero),
            Action::PostRollout(CanaryPhase::Failed)
        ]
    );
    assert_eq!(
        messages(&d),
        [
            "canary deployment podinfo.test not ready: deployment \"podinfo\" exceeded its progress deadline",
            "Canary failed! Scaling down podinfo.test"
        ]
    );
    assert_eq!(d.outcome, Some(Outcome::Failed));
}

#[test]
fn the_first_step_runs_pre_rollout_hooks_then_sends_traffic() {
    let s = with_hooks(spec(), &["pre-rollout"]);
    let o = Observed {
        last_transition: Some(NOW),
        ..observed("rev2", 100, 0)
    };
    let d = run(&s, &progressing(0, 0), &o, &[]);
    assert_eq!(
        d.need,
        Some(Check::PreRollout),
        "the first step does not wait for the interval"
    );
    let d = run(
        &s,
        &progressing(0, 0),
        &o,
        &[(
            Check::PreRollout,
            CheckResult::Passed(vec![Event::normal("Pre-rollout check pre-rollout-hook passed")]),
        )],
    );
    assert_eq!(
        messages(&d),
        [
            "Starting canary analysis for podinfo.test",
            "Pre-rollout check pre-rollout-hook passed",
            "Advance podinfo.test canary weight 10"
        ]
    );
    assert_eq!(d.actions, [routes(90, 10)]);
    assert_eq!(d.status.and_then(|s| s.canary_weight), Some(10));
    assert_eq!(d.requeue_after, Some(Duration::from_secs(30)));
    let d = run(
        &s,
        &progressing(0, 0),
        &o,
        &[(
            Check::PreRollout,
            failed("Halt podinfo.test advancement pre-rollout check pre-rollout-hook failed boom"),
        )],
    );
    assert_eq!(d.status.as_ref().and_then(|s| s.failed_checks), Some(1));
    assert!(d.actions.is_empty());
    assert_eq!(
        messages(&d),
        [
            "Starting canary analysis for podinfo.test",
            "Halt podinfo.test advancement pre-rollout check pre-rollout-hook failed boom"
        ],
        "Flagger records the start before the hooks answer"
    );
}

#[test]
fn analysis_ticks_are_the_start_and_each_checked_step_whatever_the_result() {
    let start = Observed {
        last_transition: Some(NOW),
        ..observed("rev2", 100, 0)
    };
    let d = run(&spec(), &progressing(0, 0), &start, &[]);
    assert!(d.analysis_tick, "the start, without pre-rollout hooks: {d:?}");
    let step = observed("rev2", 90, 10);
    let halt = "Halt podinfo.test advancement success rate 48.00% < 99%";
    for (what, results) in [
        ("a passed step", [(Check::Analysis, passed())]),
        ("a failed step", [(Check::Analysis, failed(halt))]),
    ] {
        assert!(
            run(&spec(), &progressing(10, 0), &step, &results).analysis_tick,
            "{what}"
        );
    }
    assert!(
        run(
            &spec(),
            &progressing(10, 1),
            &step,
            &[(Check::Analysis, failed(halt))]
        )
        .analysis_tick,
        "the step whose failure rolls back"
    );
    let waiting = Observed {
        last_transition: Some(NOW - 10),
        ..observed("rev2", 90, 10)
    };
    let d = run(&spec(), &progressing(10, 0), &waiting, &[]);
    assert!(!d.analysis_tick, "waiting for the interval: {d:?}");
    assert!(
        !run(&spec(), &progressing(10, 0), &step, &[]).analysis_tick,
        "a decision that still needs its checks"
    );
}

#[test]
fn comparisons_look_between_ticks_and_roll_back_at_once_when_worse() {
    let between = Observed {
        last_transition: Some(NOW - 10),
        look_every: Some(Duration::from_secs(5)),
        ..observed("rev2", 90, 10)
    };
    let d = run(&spec(), &progressing(10, 0), &between, &[]);
    assert_eq!(d.need, Some(Check::Comparisons), "{d:?}");
    // No evidence yet: the next look after one window, no status written, no event.
    let d = run(
        &spec(),
        &progressing(10, 0),
        &between,
        &[(Check::Comparisons, passed())],
    );
    assert_eq!(
        (d.status.clone(), d.events.len(), d.requeue_after),
        (None, 0, Some(Duration::from_secs(5)))
    );
    // A failure between ticks is the next tick's to judge.
    let d = run(
        &spec(),
        &progressing(10, 0),
        &between,
        &[(Check::Comparisons, failed("Prometheus query failed"))],
    );
    assert_eq!(
        (d.status.clone(), d.requeue_after),
        (None, Some(Duration::from_secs(5)))
    );
    // Shown worse: rolled back now, whatever the failed checks.
    let worse = CheckResult::Worse(vec![Event::warning("Rolling back podinfo.test: worse")]);
    let d = run(
        &spec(),
        &progressing(10, 0),
        &between,
        &[(Check::Comparisons, worse)],
    );
    assert_eq!(phase(&d), Some(CanaryPhase::Failed), "{d:?}");
    assert!(
        messages(&d).contains(&"Rolling back podinfo.test: worse"),
        "{d:?}"
    );
    assert!(d.actions.contains(&routes(100, 0)), "{d:?}");
    // The next tick sooner than a window: it waits for the tick alone.
    let close = Observed {
        last_transition: Some(NOW - 28),
        ..between.clone()
    };
    let d = run(
        &spec(),
        &progressing(10, 0),
        &close,
        &[(Check::Comparisons, passed())],
    );
    assert_eq!(d.requeue_after, Some(Duration::from_secs(2)));
    // Without comparisons nothing is looked at between ticks (Flagger's behaviour).
    let plain = Observed {
        look_every: None,
        ..between
    };
    let d = run(&spec(), &progressing(10, 0), &plain, &[]);
    assert_eq!((d.need, d.requeue_after), (None, Some(Duration::from_secs(20))));
}

#[test]
fn steps_wait_for_the_interval_then_run_the_analysis() {
    let o = Observed {
        last_transition: Some(NOW - 10),
        ..observed("rev2", 90, 10)
    };
    let d = run(&spec(), &progressing(10, 0), &o, &[]);
    assert_eq!((d.need, d.requeue_after), (None, Some(Duration::from_secs(20))));
    let o = observed("rev2", 90, 10);
    assert_eq!(
        run(&spec(), &progressing(10, 0), &o, &[]).need,
        Some(Check::Analysis)
    );
    let d = run(&spec(), &progressing(10, 0), &o, &[(Check::Analysis, passed())]);
    assert_eq!(d.actions, [routes(80, 20)]);
    assert_eq!(messages(&d), ["Advance podinfo.test canary weight 20"]);
}

#[test]
fn a_failed_check_counts_and_the_threshold_rolls_back_in_the_same_reconcile() {
    let o = observed("rev2", 90, 10);
    let halt = "Halt podinfo.test advancement success rate 48.00% < 99%";
    let d = run(
        &spec(),
        &progressing(10, 0),
        &o,
        &[(Check::Analysis, failed(halt))],
    );
    assert_eq!(d.status.as_ref().and_then(|s| s.failed_checks), Some(1));
    assert_eq!(phase(&d), None);
    assert_eq!(messages(&d), [halt]);
    let d = run(
        &spec(),
        &progressing(10, 1),
        &o,
        &[(Check::Analysis, failed(halt))],
    );
    assert_eq!(phase(&d), Some(CanaryPhase::Failed));
    assert_eq!(
        messages(&d),
        [
            halt,
            "Rolling back podinfo.test failed checks threshold reached 2",
            "Canary failed! Scaling down podinfo.test"
        ]
    );
    assert_eq!(
        d.actions,
        [
            routes(100, 0),
            Action::ScaleTarget(Scale::Zero),
            Action::PostRollout(CanaryPhase::Failed)
        ]
    );
    assert_eq!(
        d.status.and_then(|s| s.failed_checks),
        Some(0),
        "a rollback resets the counters, as Flagger's SyncStatus"
    );
}

#[test]
fn a_threshold_already_reached_rolls_back() {
    let d = run(&spec(), &progressing(20, 2), &observed("rev2", 80, 20), &[]);
    assert_eq!(phase(&d), Some(CanaryPhase::Failed));
    assert_eq!(
        messages(&d)[0],
        "Rolling back podinfo.test failed checks threshold reached 2"
    );
}

#[test]
fn a_rollback_webhook_rolls_back() {
    let s = with_hooks(spec(), &["rollback"]);
    let o = observed("rev2", 90, 10);
    assert_eq!(run(&s, &progressing(10, 0), &o, &[]).need, Some(Check::Rollback));
    let d = run(
        &s,
        &progressing(10, 0),
        &o,
        &[(
            Check::Rollback,
            CheckResult::Passed(vec![Event::warning("Rollback check rollback-hook passed")]),
        )],
    );
    assert_eq!(phase(&d), Some(CanaryPhase::Failed));
    assert_eq!(
        messages(&d)[..2],
        [
            "Rollback check rollback-hook passed",
            "Rolling back podinfo.test manual webhook invoked"
        ]
    );
    let d = run(
        &s,
        &progressing(10, 0),
        &o,
        &[
            (
                Check::Rollback,
                CheckResult::Failed(vec![Event::normal(
                    "Rollback hook rollback-hook not signaling a rollback",
                )]),
            ),
            (Check::Analysis, passed()),
        ],
    );
    assert_eq!(d.actions, [routes(80, 20)]);
    assert_eq!(
        messages(&d),
        [
            "Rollback hook rollback-hook not signaling a rollback",
            "Advance podinfo.test canary weight 20"
        ],
        "once per analysis tick, as Flagger"
    );
    let waiting = Observed {
        last_transition: Some(NOW - 10),
        ..o.clone()
    };
    let d = run(
        &s,
        &progressing(10, 0),
        &waiting,
        &[(
            Check::Rollback,
            CheckResult::Failed(vec![Event::normal(
                "Rollback hook rollback-hook not signaling a rollback",
            )]),
        )],
    );
    assert!(d.events.is_empty(), "not between ticks: {:?}", d.events);
    // Between two ticks the hooks are not called at all (Flagger calls them once per tick).
    let d = run(&s, &progressing(10, 0), &waiting, &[]);
    assert_eq!(d.need, None, "no rollback hook call between ticks");
    assert_eq!(d.requeue_after, Some(Duration::from_secs(20)));
}

#[test]
fn routing_back_on_the_primary_mid_run_finishes_as_a_rollback() {
    // A rollback set 100/0 and scaled the target down, but its status write was lost: the status
    // still says Progressing at 10%.
    let d = run(&spec(), &progressing(10, 1), &observed("rev2", 100, 0), &[]);
    assert_eq!(phase(&d), Some(CanaryPhase::Failed));
    assert_eq!(
        messages(&d)[0],
        "Traffic of podinfo.test is back on the primary while the canary had 10%: rolling back"
    );
    assert!(
        !d.actions
            .iter()
            .any(|a| matches!(a, Action::SetRoutes(r) if r.canary > 0)),
        "no step again"
    );
    // A run that has not taken a step yet starts as usual.
    let d = run(
        &spec(),
        &progressing(0, 0),
        &observed("rev2", 100, 0),
        &[(Check::Analysis, passed())],
    );
    assert_eq!(d.actions, [routes(90, 10)]);
}

#[test]
fn suspended_and_terminating_canaries_do_nothing() {
    let mut s = spec();
    s.suspend = Some(true);
    let d = run(&s, &progressing(10, 0), &observed("rev3", 90, 10), &[]);
    assert!(d.actions.is_empty() && d.status.is_none());
    assert_eq!(messages(&d), ["skipping canary run as object is suspended"]);
    let d = run(
        &spec(),
        &status(CanaryPhase::Terminating, 0, 0),
        &observed("rev3", 100, 0),
        &[],
    );
    assert_eq!(d, Decision::default());
}

#[test]
fn alerts_follow_flaggers_notifications_and_mute_alert() {
    let st = status(CanaryPhase::Initializing, 0, 0);
    let d = run(&spec(), &st, &observed("rev1", 100, 0), &[]);
    assert_eq!(
        d.alerts,
        [Alert {
            severity: Severity::Info,
            message: "New Deployment detected, initialization completed.".into(),
            metadata: true
        }]
    );
    let d = run(
        &spec(),
        &progressing(10, 1),
        &observed("rev2", 90, 10),
        &[(Check::Analysis, failed("Halt"))],
    );
    assert_eq!(
        d.alerts,
        [Alert {
            severity: Severity::Error,
            message: "Failed checks threshold reached 2".into(),
            metadata: false
        }]
    );
    let mut s = with_hooks(spec(), &["confirm-rollout"]);
    let idle = status(CanaryPhase::Succeeded, 0, 0);
    let gate = [(
        Check::ConfirmRollout,
        failed("Halt podinfo.test advancement waiting for approval confirm-rollout-hook"),
    )];
    let d = run(&s, &idle, &observed("rev2", 100, 0), &gate);
    assert_eq!(phase(&d), Some(CanaryPhase::Waiting));
    assert_eq!(d.alerts.len(), 1);
    s.analysis
        .as_mut()
        .expect("analysis")
        .webhooks
        .as_mut()
        .expect("hooks")[0]
        .mute_alert = Some(true);
    let d = run(&s, &idle, &observed("rev2", 100, 0), &gate);
    assert_eq!(phase(&d), Some(CanaryPhase::Waiting));
    assert!(d.alerts.is_empty(), "muteAlert silences the gate's alert");
}

#[test]
fn missing_routing_is_recreated() {
    let mut o = observed("rev2", 100, 0);
    o.routes = None;
    let d = run(&spec(), &progressing(0, 0), &o, &[]);
    assert_eq!(d.actions, [Action::EnsureRouting]);
}

#[test]
fn drift_in_the_routing_is_corrected_with_the_weights_kept() {
    let mut o = observed("rev1", 100, 0);
    o.routing_drift = true;
    let d = run(&spec(), &status(CanaryPhase::Succeeded, 0, 0), &o, &[]);
    assert_eq!(d.actions, [Action::EnsureRouting]);
    let mut o = observed("rev2", 90, 10);
    o.routing_drift = true;
    let d = run(&spec(), &progressing(10, 0), &o, &[(Check::Analysis, passed())]);
    assert_eq!(
        d.actions,
        [routes(80, 20)],
        "a weight change rewrites the routes anyway"
    );
}
