//! The canary strategy (Flagger's `runCanary`): traffic shifted to the canary step by step
//! (`stepWeight`, `stepWeights`, up to `maxWeight`), mirrored while its weight is 0 with
//! `mirror`, then promotion. Pure.

use super::*;

pub(super) fn canary_step(input: &Input, routes: Routes, mirror: bool, mut d: Decision) -> Decision {
    let analysis = input.spec.analysis.clone().unwrap_or_default();
    let max_weight = input.spec.max_weight();
    let cw = routes.canary;
    // Flagger asks before every step it takes without mirrored traffic: before turning mirroring
    // on, before each weight increase and before promotion at the maximum weight.
    if !routes.mirrored && input.status.phase != CanaryPhase::WaitingPromotion {
        match input.check(Check::ConfirmTrafficIncrease, Some("confirm-traffic-increase")) {
            None => return Decision::need(Check::ConfirmTrafficIncrease),
            // A gate (webhooks): anything but a pass keeps it shut.
            Some(CheckResult::Failed(events) | CheckResult::Held(events) | CheckResult::Worse(events)) => {
                let d = d.events(events).requeue(input.interval());
                return if input.muted("confirm-traffic-increase", events) {
                    d
                } else {
                    d.alert(
                        Severity::Warn,
                        "Canary traffic increase is waiting for approval.",
                        false,
                    )
                };
            }
            Some(CheckResult::Passed(events)) => d = d.events(events),
        }
    }
    if cw < max_weight {
        if mirror && cw == 0 && !routes.mirrored {
            return d
                .action(Action::SetRoutes(Routes {
                    primary: 100,
                    canary: 0,
                    mirrored: true,
                }))
                .event(Event::normal(format!(
                    "Advance {} canary weight 0",
                    input.canary()
                )))
                .status(StatusUpdate {
                    canary_weight: Some(0),
                    ..StatusUpdate::default()
                })
                .requeue(input.interval());
        }
        let step = weights::next_step_weight(&analysis, cw);
        let canary = (cw + step).clamp(0, 100);
        return d
            .action(Action::SetRoutes(Routes {
                primary: 100 - canary,
                canary,
                mirrored: false,
            }))
            .event(Event::normal(format!(
                "Advance {} canary weight {canary}",
                input.canary()
            )))
            .status(StatusUpdate {
                canary_weight: Some(canary),
                ..StatusUpdate::default()
            })
            .requeue(input.interval());
    }
    match confirm_promotion(input, d) {
        Gate::Open(d) => promote(input, d, cw),
        Gate::Closed(d) => d,
    }
}
