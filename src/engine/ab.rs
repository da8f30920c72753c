//! A/B testing (Flagger's `runAB`). Pure.

use super::*;

/// A/B testing (Flagger's `runAB`): requests matching `analysis.match` go to the canary for
/// `iterations` analysis rounds, then promotion.
pub(super) fn ab_step(input: &Input, d: Decision) -> Decision {
    let iterations = input.spec.iterations();
    let done = input.status.iterations;
    if iterations > done {
        return d
            .action(Action::SetRoutes(Routes {
                primary: 0,
                canary: 100,
                mirrored: false,
            }))
            .event(iteration_event(input, done + 1))
            .status(StatusUpdate {
                iterations: Some(done + 1),
                ..StatusUpdate::default()
            })
            .requeue(input.interval());
    }
    match confirm_promotion(input, d) {
        Gate::Open(d) => promote(input, d, 0),
        Gate::Closed(d) => d,
    }
}
