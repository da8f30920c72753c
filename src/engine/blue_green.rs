//! Blue/Green (Flagger's `runBlueGreen`). Pure.

use super::*;

/// Blue/Green (Flagger's `runBlueGreen`): `iterations` analysis rounds against the canary
/// Service with the traffic on the primary (mirrored to the canary with `mirror`), then all
/// traffic to the canary for one more round, then promotion.
pub(super) fn blue_green_step(input: &Input, routes: Routes, mirror: bool, mut d: Decision) -> Decision {
    let iterations = input.spec.iterations();
    let done = input.status.iterations;
    if iterations > done {
        if mirror && !routes.mirrored {
            d = d.action(Action::SetRoutes(Routes {
                primary: 100,
                canary: 0,
                mirrored: true,
            }));
        }
        return d
            .event(iteration_event(input, done + 1))
            .status(StatusUpdate {
                iterations: Some(done + 1),
                ..StatusUpdate::default()
            })
            .requeue(input.interval());
    }
    if iterations == done {
        return match confirm_promotion(input, d) {
            Gate::Open(d) => d
                .event(Event::normal(if mirror {
                    "Stop traffic mirroring and route all traffic to canary"
                } else {
                    "Routing all traffic to canary"
                }))
                .action(Action::SetRoutes(Routes {
                    primary: 0,
                    canary: 100,
                    mirrored: false,
                }))
                // Flagger's Blue/Green never writes the status weight: it stays 0.
                .status(StatusUpdate {
                    iterations: Some(done + 1),
                    ..StatusUpdate::default()
                })
                .requeue(input.interval()),
            Gate::Closed(d) => d,
        };
    }
    // After the all-traffic round Flagger asks the promotion gate again.
    match confirm_promotion(input, d) {
        Gate::Open(d) => promote(input, d, input.status.canary_weight),
        Gate::Closed(d) => d,
    }
}
