//! Blue/Green.

use super::*;

#[test]
fn blue_green_analyses_without_traffic_then_switches_for_one_round_then_promotes() {
    let s = iterated(2, false, false);
    assert_eq!(s.deployment_strategy(), DeploymentStrategy::BlueGreen);
    let d = run(&s, &at_iteration(0), &observed("rev2", 100, 0), &[]);
    assert!(d.actions.is_empty(), "no user traffic reaches the canary: {d:?}");
    assert_eq!(iterations(&d), Some(1));
    assert_eq!(
        messages(&d),
        [
            "Starting canary analysis for podinfo.test",
            "Advance podinfo.test canary iteration 1/2"
        ]
    );
    let d = run(
        &s,
        &at_iteration(1),
        &observed("rev2", 100, 0),
        &[(Check::Analysis, passed())],
    );
    assert!(d.actions.is_empty());
    assert_eq!(iterations(&d), Some(2));
    let d = run(
        &s,
        &at_iteration(2),
        &observed("rev2", 100, 0),
        &[(Check::Analysis, passed())],
    );
    assert_eq!(d.actions, [routes(0, 100)]);
    assert_eq!(messages(&d), ["Routing all traffic to canary"]);
    assert_eq!(iterations(&d), Some(3));
    assert_eq!(
        d.status.as_ref().and_then(|s| s.canary_weight),
        None,
        "Flagger leaves status.canaryWeight at 0 in Blue/Green"
    );
    let d = run(
        &s,
        &at_iteration(3),
        &observed("rev2", 0, 100),
        &[(Check::Analysis, passed())],
    );
    assert_eq!(d.actions, [Action::Promote]);
    assert_eq!(phase(&d), Some(CanaryPhase::Promoting));
    assert_eq!(d.status.as_ref().and_then(|s| s.canary_weight), Some(0));
}

#[test]
fn blue_green_asks_the_promotion_gate_again_after_the_all_traffic_round() {
    let s = with_hooks(iterated(2, false, false), &["confirm-promotion"]);
    let all_traffic = observed("rev2", 0, 100);
    let d = run(&s, &at_iteration(3), &all_traffic, &[(Check::Analysis, passed())]);
    assert_eq!(
        d.need,
        Some(Check::ConfirmPromotion),
        "not promoted without asking"
    );
    let d = run(
        &s,
        &at_iteration(3),
        &all_traffic,
        &[
            (Check::Analysis, passed()),
            (
                Check::ConfirmPromotion,
                failed("Halt podinfo.test advancement waiting for promotion approval confirm-promotion-hook"),
            ),
        ],
    );
    assert!(d.actions.is_empty());
    assert_eq!(phase(&d), Some(CanaryPhase::WaitingPromotion));
    assert_eq!(iterations(&d), Some(1), "Flagger's iterations - 1");
    // Waiting on: asked again each interval, the status left alone (no extra analysis round).
    let waiting = CanaryStatus {
        phase: CanaryPhase::WaitingPromotion,
        ..at_iteration(2)
    };
    let d = run(
        &s,
        &waiting,
        &observed("rev2", 100, 0),
        &[
            (Check::Analysis, passed()),
            (
                Check::ConfirmPromotion,
                failed("Halt podinfo.test advancement waiting for promotion approval confirm-promotion-hook"),
            ),
        ],
    );
    assert_eq!(d.status, None, "{d:?}");
}

#[test]
fn blue_green_with_mirroring_mirrors_until_the_switch() {
    let s = iterated(1, false, true);
    let d = run(&s, &at_iteration(0), &observed("rev2", 100, 0), &[]);
    assert_eq!(
        d.actions,
        [Action::SetRoutes(Routes {
            primary: 100,
            canary: 0,
            mirrored: true
        })]
    );
    let mut o = observed("rev2", 100, 0);
    o.routes = Some(Routes {
        primary: 100,
        canary: 0,
        mirrored: true,
    });
    let d = run(&s, &at_iteration(1), &o, &[(Check::Analysis, passed())]);
    assert_eq!(d.actions, [routes(0, 100)]);
    assert_eq!(
        messages(&d),
        ["Stop traffic mirroring and route all traffic to canary"]
    );
}
