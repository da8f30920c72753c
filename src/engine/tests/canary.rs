//! The canary strategy's weight steps.

use super::*;

#[test]
fn confirm_traffic_increase_holds_the_weight() {
    let s = with_hooks(spec(), &["confirm-traffic-increase"]);
    let o = observed("rev2", 90, 10);
    let d = run(
        &s,
        &progressing(10, 0),
        &o,
        &[
            (Check::Analysis, passed()),
            (
                Check::ConfirmTrafficIncrease,
                failed(
                    "Halt podinfo.test advancement waiting for traffic increase approval confirm-traffic-increase-hook",
                ),
            ),
        ],
    );
    assert!(d.actions.is_empty());
    assert_eq!(d.status, None);
    assert_eq!(
        messages(&d),
        ["Halt podinfo.test advancement waiting for traffic increase approval confirm-traffic-increase-hook"]
    );
    // At the maximum weight the closed gate holds the promotion too, as in Flagger.
    let d = run(
        &s,
        &progressing(30, 0),
        &observed("rev2", 70, 30),
        &[
            (Check::Analysis, passed()),
            (
                Check::ConfirmTrafficIncrease,
                failed(
                    "Halt podinfo.test advancement waiting for traffic increase approval confirm-traffic-increase-hook",
                ),
            ),
        ],
    );
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(d.need, None);
    assert_eq!(d.status, None);
}

#[test]
fn mirroring_takes_one_round_before_the_first_weight() {
    let mut s = spec();
    s.analysis.as_mut().expect("analysis").mirror = Some(true);
    let d = run(&s, &progressing(0, 0), &observed("rev2", 100, 0), &[]);
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
    let d = run(&s, &progressing(0, 0), &o, &[(Check::Analysis, passed())]);
    assert_eq!(d.actions, [routes(90, 10)]);
}

#[test]
fn step_weights_follow_the_list() {
    let mut s = spec();
    let a = s.analysis.as_mut().expect("analysis");
    (a.step_weight, a.max_weight, a.step_weights) = (None, None, Some(vec![5, 25, 50]));
    let d = run(
        &s,
        &progressing(5, 0),
        &observed("rev2", 95, 5),
        &[(Check::Analysis, passed())],
    );
    assert_eq!(d.actions, [routes(75, 25)]);
    let d = run(
        &s,
        &progressing(50, 0),
        &observed("rev2", 50, 50),
        &[(Check::Analysis, passed())],
    );
    assert_eq!(d.actions, [Action::Promote]);
}

#[test]
fn the_last_step_weight_wins_over_max_weight() {
    // Flagger promotes after the last stepWeights entry, whatever maxWeight says.
    let mut s = spec();
    let a = s.analysis.as_mut().expect("analysis");
    (a.step_weight, a.max_weight, a.step_weights) = (None, Some(100), Some(vec![10, 20]));
    let d = run(
        &s,
        &progressing(20, 0),
        &observed("rev2", 80, 20),
        &[(Check::Analysis, passed())],
    );
    assert_eq!(d.actions, [Action::Promote]);
}
