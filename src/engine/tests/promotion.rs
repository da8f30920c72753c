//! The promotion gate, the copy to the primary, the shift back and finalising.

use super::*;

#[test]
fn max_weight_promotes_behind_confirm_promotion() {
    let s = with_hooks(spec(), &["confirm-promotion"]);
    let o = observed("rev2", 70, 30);
    assert_eq!(
        run(&s, &progressing(30, 0), &o, &[(Check::Analysis, passed())]).need,
        Some(Check::ConfirmPromotion)
    );
    let d = run(
        &s,
        &progressing(30, 0),
        &o,
        &[
            (Check::Analysis, passed()),
            (
                Check::ConfirmPromotion,
                failed("Halt podinfo.test advancement waiting for promotion approval confirm-promotion-hook"),
            ),
        ],
    );
    assert_eq!(phase(&d), Some(CanaryPhase::WaitingPromotion));
    assert!(d.actions.is_empty());
    assert_eq!(
        d.status.as_ref().and_then(|s| s.iterations),
        None,
        "a weighted canary keeps its iterations (Flagger writes -1)"
    );
    let waiting = CanaryStatus {
        phase: CanaryPhase::WaitingPromotion,
        ..progressing(0, 0)
    };
    let d = run(
        &s,
        &waiting,
        &o,
        &[(Check::Analysis, passed()), (Check::ConfirmPromotion, passed())],
    );
    assert_eq!(phase(&d), Some(CanaryPhase::Promoting));
    assert_eq!(d.actions, [Action::Promote]);
    assert_eq!(
        messages(&d),
        ["Copying podinfo.test template spec to podinfo-primary.test"]
    );
}

#[test]
fn promotion_routes_back_to_the_primary_once_it_is_ready() {
    let mut o = observed("rev2", 70, 30);
    o.primary = Some(Readiness::Waiting("podinfo-primary.test not ready".into()));
    assert_eq!(
        run(&spec(), &promoting(30), &o, &[]).requeue_after,
        Some(READINESS_POLL)
    );
    let d = run(&spec(), &promoting(30), &observed("rev2", 70, 30), &[]);
    assert_eq!(phase(&d), Some(CanaryPhase::Finalising));
    assert_eq!(d.actions, [routes(100, 0)]);
    assert_eq!(messages(&d), ["Routing all traffic to primary"]);
    assert_eq!(
        d.requeue_after,
        Some(Duration::ZERO),
        "serin finalises as soon as it can"
    );
}

#[test]
fn step_weight_promotion_shifts_in_steps() {
    let mut s = spec();
    s.analysis.as_mut().expect("analysis").step_weight_promotion = Some(50);
    let d = run(&s, &promoting(100), &observed("rev2", 0, 100), &[]);
    assert_eq!(d.actions, [routes(50, 50)]);
    assert_eq!(messages(&d), ["Advance podinfo.test primary weight 50"]);
    assert_eq!(phase(&d), None);
    let d = run(&s, &promoting(50), &observed("rev2", 50, 50), &[]);
    assert_eq!(d.actions, [routes(100, 0)]);
    assert_eq!(phase(&d), Some(CanaryPhase::Finalising));
}

#[test]
fn finalising_succeeds_and_scales_the_target_down() {
    let st = CanaryStatus {
        phase: CanaryPhase::Finalising,
        ..progressing(0, 1)
    };
    let d = run(&spec(), &st, &observed("rev2", 100, 0), &[]);
    assert_eq!(phase(&d), Some(CanaryPhase::Succeeded));
    assert_eq!(
        d.actions,
        [
            Action::ScaleTarget(Scale::Zero),
            Action::PostRollout(CanaryPhase::Succeeded)
        ]
    );
    assert_eq!(messages(&d), ["Promotion completed! Scaling down podinfo.test"]);
    let s = d.status.expect("status");
    assert_eq!(s.last_promoted_spec.as_deref(), Some("rev2"));
    assert_eq!(
        s.failed_checks, None,
        "a success keeps its failed checks, as in Flagger"
    );
    assert_eq!(d.outcome, Some(Outcome::Succeeded { skipped: false }));
}

#[test]
fn a_primary_that_fails_after_promotion_keeps_traffic_on_the_canary() {
    let mut o = observed("rev2", 100, 0);
    o.primary = Some(Readiness::Failed(
        "podinfo-primary.test not ready: deployment \"podinfo-primary\" exceeded its progress deadline"
            .into(),
    ));
    for p in [CanaryPhase::Promoting, CanaryPhase::Finalising] {
        let st = CanaryStatus {
            phase: p,
            ..progressing(30, 0)
        };
        let d = run(&spec(), &st, &o, &[]);
        assert_eq!(phase(&d), Some(CanaryPhase::Failed), "{p}");
        assert_eq!(
            d.actions,
            [routes(0, 100), Action::PostRollout(CanaryPhase::Failed)]
        );
        assert_eq!(d.status.as_ref().and_then(|s| s.canary_weight), Some(100));
        assert!(messages(&d)[0].starts_with("Promotion of podinfo.test failed, primary not ready: "));
    }
    let d = run(&spec(), &progressing(10, 0), &o, &[]);
    assert_eq!(phase(&d), Some(CanaryPhase::Failed));
    assert_eq!(
        d.actions[0],
        routes(100, 0),
        "before promotion, a failed primary rolls back"
    );
}

#[test]
fn skip_analysis_promotes_at_once() {
    let mut s = spec();
    s.skip_analysis = Some(true);
    let mut o = observed("rev2", 100, 0);
    o.primary = None;
    let d = run(&s, &progressing(0, 0), &o, &[]);
    assert_eq!(phase(&d), Some(CanaryPhase::Succeeded));
    assert_eq!(
        d.actions,
        [
            routes(100, 0),
            Action::Promote,
            Action::ScaleTarget(Scale::Zero),
            Action::PostRollout(CanaryPhase::Succeeded)
        ]
    );
    assert_eq!(
        messages(&d),
        [
            "Copying podinfo.test template spec to podinfo-primary.test",
            "Promotion completed! Canary analysis was skipped for podinfo.test"
        ]
    );
    assert_eq!(d.outcome, Some(Outcome::Succeeded { skipped: true }));
}
