//! People's requests: which one is answered, what a pause holds, and what each action decides
//! in each phase.

use super::*;

fn request(operation: &str, revision: &str) -> Request {
    Request {
        name: format!("podinfo-{operation}"),
        action: operation.into(),
        operation: Operation::parse(operation, false),
        revision: revision.into(),
        by: "alice".into(),
        created: NOW,
        answer: None,
    }
}

fn ask(
    status: &CanaryStatus,
    observed: &Observed,
    request: &Request,
    paused_by: Option<&str>,
    checks: &[(Check, CheckResult)],
) -> Decision {
    ask_spec(&spec(), status, observed, request, paused_by, checks)
}

fn ask_spec(
    spec: &CanarySpec,
    status: &CanaryStatus,
    observed: &Observed,
    request: &Request,
    paused_by: Option<&str>,
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
        request: Some(request),
        paused_by,
    })
}

fn ignored(d: &Decision) -> &str {
    match &d.answer {
        Some(Answer::Ignored(m)) => m,
        other => panic!("not ignored: {other:?}"),
    }
}

fn done(d: &Decision) -> &str {
    match &d.answer {
        Some(Answer::Done(m)) => m,
        other => panic!("not done: {other:?}"),
    }
}

#[test]
fn the_oldest_unanswered_request_is_next_and_a_pause_holds_its_revision_until_another_action() {
    let at = |mut r: Request, created: i64, answer: Option<Answer>| {
        r.created = created;
        r.name = format!("{}-{created}", r.name);
        r.answer = answer;
        r
    };
    let done = || Some(Answer::Done("done".into()));
    let all = [
        at(request("resume", "rev2"), 3, None),
        at(request("pause", "rev2"), 1, done()),
        at(request("abort", "rev2"), 2, None),
    ];
    let r = requests(&all, Some("rev2"));
    assert_eq!(
        r.pending.map(|p| p.action.as_str()),
        Some("abort"),
        "oldest first"
    );
    assert_eq!(r.paused_by, Some("alice"));
    assert_eq!(
        requests(&all, Some("rev3")).paused_by,
        None,
        "a pause holds its revision only"
    );
    let resumed = [
        at(request("pause", "rev2"), 1, done()),
        at(request("resume", "rev2"), 2, done()),
    ];
    assert_eq!(requests(&resumed, Some("rev2")).paused_by, None);
    assert_eq!(requests(&resumed, Some("rev2")).pending, None);
    let ignored_resume = [
        at(request("pause", "rev2"), 1, done()),
        at(
            request("resume", "rev1"),
            2,
            Some(Answer::Ignored("stale".into())),
        ),
    ];
    assert_eq!(
        requests(&ignored_resume, Some("rev2")).paused_by,
        Some("alice"),
        "an ignored request changes nothing"
    );
}

#[test]
fn a_request_for_another_revision_is_ignored_with_an_event_naming_who_asked() {
    let d = ask(
        &progressing(10, 0),
        &observed("rev2", 90, 10),
        &request("abort", "rev1"),
        None,
        &[],
    );
    assert_eq!(
        ignored(&d),
        "Ignored abort of podinfo.test asked by alice: revision rev1 is no longer current; the Canary's revision is rev2"
    );
    assert!(d.events[0].warning);
    assert_eq!(messages(&d), [ignored(&d)]);
    assert!(d.actions.is_empty() && d.status.is_none());
    assert_eq!(
        d.requeue_after,
        Some(Duration::ZERO),
        "the Canary's own step follows"
    );
}

#[test]
fn unknown_actions_and_suspended_canaries_are_ignored() {
    let mut unknown = request("rewind", "rev2");
    unknown.operation = None;
    let d = ask(
        &progressing(10, 0),
        &observed("rev2", 90, 10),
        &unknown,
        None,
        &[],
    );
    assert!(ignored(&d).contains("serin knows no action \"rewind\""), "{d:?}");
    let mut s = spec();
    s.suspend = Some(true);
    let d = ask_spec(
        &s,
        &progressing(10, 0),
        &observed("rev2", 90, 10),
        &request("abort", "rev2"),
        None,
        &[],
    );
    assert!(ignored(&d).ends_with("the Canary is suspended (spec.suspend)"));
    assert!(d.actions.is_empty());
}

#[test]
fn promote_skips_the_remaining_steps_once_the_analysis_passes_now() {
    let (st, o) = (progressing(10, 1), observed("rev2", 90, 10));
    let promote = request("promote", "rev2");
    let d = ask(&st, &o, &promote, None, &[]);
    assert_eq!(d.need, Some(Check::Analysis), "checked now, not at the next tick");
    assert_eq!(d.answer, None);
    let d = ask(&st, &o, &promote, None, &[(Check::Analysis, passed())]);
    assert_eq!(phase(&d), Some(CanaryPhase::Promoting));
    assert!(d.actions.contains(&Action::Promote));
    assert_eq!(
        done(&d),
        "Promoting podinfo.test as asked by alice: the analysis passed, the remaining steps are skipped"
    );
    assert!(!d.analysis_tick, "not a tick of the analysis");

    let d = ask(
        &st,
        &o,
        &promote,
        None,
        &[(
            Check::Analysis,
            failed("Halt advancement podinfo-primary.test error-rate 5 > 1"),
        )],
    );
    assert_eq!(
        messages(&d),
        [
            "Halt advancement podinfo-primary.test error-rate 5 > 1",
            "Ignored promote of podinfo.test asked by alice: the analysis did not pass now"
        ]
    );
    assert!(d.status.is_none(), "no failed check counted: it was not a tick");
    assert!(d.actions.is_empty());

    let d = ask(
        &st,
        &o,
        &promote,
        None,
        &[(Check::Analysis, CheckResult::Worse(vec![Event::warning("worse")]))],
    );
    assert_eq!(phase(&d), Some(CanaryPhase::Failed), "shown worse: rolled back");
    assert!(ignored(&d).contains("shows the canary worse"));
}

#[test]
fn promote_full_skips_the_analysis_and_promote_outside_a_run_is_ignored() {
    let mut full = request("promote", "rev2");
    full.operation = Some(Operation::Promote { full: true });
    let d = ask(&progressing(10, 0), &observed("rev2", 90, 10), &full, None, &[]);
    assert_eq!(d.need, None);
    assert_eq!(phase(&d), Some(CanaryPhase::Promoting));
    assert_eq!(
        done(&d),
        "Promoting podinfo.test as asked by alice, without the analysis"
    );
    // From WaitingPromotion too: the person is the approval.
    let waiting = CanaryStatus {
        phase: CanaryPhase::WaitingPromotion,
        ..progressing(0, 0)
    };
    let d = ask(&waiting, &observed("rev2", 100, 0), &full, None, &[]);
    assert_eq!(phase(&d), Some(CanaryPhase::Promoting));

    let succeeded = CanaryStatus {
        phase: CanaryPhase::Succeeded,
        ..progressing(0, 0)
    };
    let d = ask(&succeeded, &observed("rev2", 100, 0), &full, None, &[]);
    assert!(ignored(&d).ends_with("no analysis is running (phase Succeeded)"));
    let d = ask(&promoting(100), &observed("rev2", 0, 100), &full, None, &[]);
    assert!(ignored(&d).ends_with("its promotion has already started"));
    let mut o = observed("rev2", 90, 10);
    o.canary = Readiness::Waiting("podinfo.test not ready: waiting for rollout to finish".into());
    let d = ask(&progressing(10, 0), &o, &full, None, &[]);
    assert!(ignored(&d).contains("the canary is not ready"));
}

#[test]
fn abort_rolls_back_now_and_names_who_asked() {
    let d = ask(
        &progressing(20, 0),
        &observed("rev2", 80, 20),
        &request("abort", "rev2"),
        None,
        &[],
    );
    assert_eq!(phase(&d), Some(CanaryPhase::Failed));
    assert!(d.actions.contains(&routes(100, 0)));
    assert!(d.actions.contains(&Action::ScaleTarget(Scale::Zero)));
    assert_eq!(d.outcome, Some(Outcome::Failed));
    assert_eq!(done(&d), "Rolling back podinfo.test as asked by alice");
    assert_eq!(
        messages(&d),
        [
            "Rolling back podinfo.test as asked by alice",
            "Canary failed! Scaling down podinfo.test"
        ]
    );
    let d = ask(
        &promoting(100),
        &observed("rev2", 0, 100),
        &request("abort", "rev2"),
        None,
        &[],
    );
    assert!(ignored(&d).ends_with("its promotion has already started"));
}

#[test]
fn retry_runs_the_failed_revision_again() {
    let failed_run = CanaryStatus {
        phase: CanaryPhase::Failed,
        ..progressing(0, 0)
    };
    let o = observed("rev2", 100, 0);
    let d = ask(&failed_run, &o, &request("retry", "rev2"), None, &[]);
    assert_eq!(phase(&d), Some(CanaryPhase::Progressing));
    assert!(d.actions.contains(&Action::ScaleTarget(Scale::FromZero)));
    assert_eq!(
        done(&d),
        "Retrying revision rev2 of podinfo.test as asked by alice"
    );
    assert_eq!(
        messages(&d)[0],
        "Retrying revision rev2 of podinfo.test as asked by alice"
    );
    // The confirm-rollout gate still has its say.
    let gated = with_hooks(spec(), &["confirm-rollout"]);
    let d = ask_spec(&gated, &failed_run, &o, &request("retry", "rev2"), None, &[]);
    assert_eq!(d.need, Some(Check::ConfirmRollout));
    assert_eq!(d.answer, None);

    let d = ask(
        &progressing(10, 0),
        &observed("rev2", 90, 10),
        &request("retry", "rev2"),
        None,
        &[],
    );
    assert!(ignored(&d).ends_with("only a failed revision is retried; the Canary is Progressing"));
    let reverted = CanaryStatus {
        phase: CanaryPhase::Failed,
        ..status(CanaryPhase::Failed, 0, 0)
    };
    let d = ask(
        &reverted,
        &observed("rev1", 100, 0),
        &request("retry", "rev1"),
        None,
        &[],
    );
    assert!(ignored(&d).ends_with("revision rev1 is the promoted one"));
}

#[test]
fn a_pause_holds_the_run_until_resumed_and_a_new_revision_starts_over() {
    let (st, o) = (progressing(10, 0), observed("rev2", 90, 10));
    let d = ask(&st, &o, &request("pause", "rev2"), None, &[]);
    assert_eq!(
        done(&d),
        "Paused podinfo.test as asked by alice: no step and no analysis until it is resumed"
    );
    assert!(d.actions.is_empty() && d.status.is_none() && d.requeue_after.is_none());
    let d = ask(&st, &o, &request("pause", "rev2"), Some("bob"), &[]);
    assert!(ignored(&d).ends_with("it is already paused (by bob)"));

    // Held: the tick is due, yet nothing is checked and nothing moves.
    let checks = BTreeMap::new();
    let held = |status: &CanaryStatus, observed: &Observed| {
        decide(&Input {
            name: "podinfo",
            namespace: "test",
            spec: &spec(),
            status,
            observed,
            checks: &checks,
            request: None,
            paused_by: Some("alice"),
        })
    };
    assert_eq!(held(&st, &o), Decision::default());
    let new_revision = held(&st, &observed("rev3", 90, 10));
    assert_eq!(phase(&new_revision), Some(CanaryPhase::Progressing));
    assert_eq!(
        messages(&new_revision),
        ["New revision detected! Restarting analysis for podinfo.test"]
    );

    let d = ask(&st, &o, &request("resume", "rev2"), Some("bob"), &[]);
    assert_eq!(done(&d), "Resumed podinfo.test as asked by alice");
    assert_eq!(d.requeue_after, Some(Duration::ZERO));
    let d = ask(&st, &o, &request("resume", "rev2"), None, &[]);
    assert!(ignored(&d).ends_with("it is not paused"));
}
