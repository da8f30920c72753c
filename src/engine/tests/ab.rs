//! A/B testing.

use super::*;

#[test]
fn ab_testing_routes_matching_requests_for_each_iteration_then_promotes() {
    let s = iterated(2, true, false);
    assert_eq!(s.deployment_strategy(), DeploymentStrategy::AbTesting);
    // The first step: no analysis yet (no traffic), matching traffic to the canary.
    let d = run(&s, &at_iteration(0), &observed("rev2", 100, 0), &[]);
    assert_eq!(d.actions, [routes(0, 100)]);
    assert_eq!(iterations(&d), Some(1));
    assert_eq!(
        messages(&d),
        [
            "Starting canary analysis for podinfo.test",
            "Advance podinfo.test canary iteration 1/2"
        ]
    );
    // Later steps run the analysis first.
    let d = run(&s, &at_iteration(1), &observed("rev2", 0, 100), &[]);
    assert_eq!(d.need, Some(Check::Analysis));
    let d = run(
        &s,
        &at_iteration(1),
        &observed("rev2", 0, 100),
        &[(Check::Analysis, passed())],
    );
    assert_eq!(
        (d.actions.clone(), iterations(&d)),
        (vec![routes(0, 100)], Some(2))
    );
    assert_eq!(messages(&d), ["Advance podinfo.test canary iteration 2/2"]);
    let d = run(
        &s,
        &at_iteration(2),
        &observed("rev2", 0, 100),
        &[(Check::Analysis, passed())],
    );
    assert_eq!(d.actions, [Action::Promote]);
    assert_eq!(phase(&d), Some(CanaryPhase::Promoting));
    // A failed analysis counts, as with the canary strategy.
    let d = run(
        &s,
        &at_iteration(1),
        &observed("rev2", 0, 100),
        &[(Check::Analysis, failed("Halt advancement"))],
    );
    assert_eq!(d.status.and_then(|s| s.failed_checks), Some(1));
}

#[test]
fn ab_testing_waits_for_promotion_approval_one_iteration_back() {
    let s = with_hooks(iterated(2, true, false), &["confirm-promotion"]);
    let d = run(
        &s,
        &at_iteration(2),
        &observed("rev2", 0, 100),
        &[
            (Check::Analysis, passed()),
            (
                Check::ConfirmPromotion,
                failed("Halt podinfo.test advancement waiting for promotion approval confirm-promotion-hook"),
            ),
        ],
    );
    assert_eq!(phase(&d), Some(CanaryPhase::WaitingPromotion));
    assert_eq!(
        iterations(&d),
        Some(1),
        "one more iteration runs after the approval"
    );
    assert_eq!(
        d.alerts,
        [Alert {
            severity: Severity::Warn,
            message: "Canary promotion is waiting for approval.".into(),
            metadata: false
        }]
    );
}
