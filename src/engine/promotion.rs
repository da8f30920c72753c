//! Promotion: the `confirm-promotion` gate, copying the canary to the primary, shifting the
//! traffic back once the primary is ready, finalising, and a promotion whose primary never gets
//! ready. Pure.

use super::*;

/// The outcome of the `confirm-promotion` gate.
pub(super) enum Gate {
    /// Promotion may go ahead; the decision so far with the gate's events.
    Open(Decision),
    /// The decision that waits (or asks for the check).
    Closed(Decision),
}

/// The `confirm-promotion` gate. While closed: WaitingPromotion, and A/B testing and Blue/Green
/// step back one iteration so that one more runs after the approval, as Flagger does.
pub(super) fn confirm_promotion(input: &Input, d: Decision) -> Gate {
    match input.check(Check::ConfirmPromotion, Some("confirm-promotion")) {
        None => Gate::Closed(Decision::need(Check::ConfirmPromotion)),
        Some(CheckResult::Failed(events) | CheckResult::Held(events) | CheckResult::Worse(events)) => {
            let d = d.events(events).requeue(input.interval());
            let iterations = match input.spec.deployment_strategy() {
                DeploymentStrategy::Canary => None,
                _ => Some(input.spec.iterations() - 1),
            };
            // As Flagger, the status changes only when the gate first closes: waiting on, the
            // Canary asks again each interval without running another analysis round.
            Gate::Closed(if input.status.phase == CanaryPhase::WaitingPromotion {
                d
            } else {
                let d = d.status(StatusUpdate {
                    phase: Some(CanaryPhase::WaitingPromotion),
                    canary_weight: Some(0),
                    iterations,
                    ..StatusUpdate::default()
                });
                if input.muted("confirm-promotion", events) {
                    d
                } else {
                    d.alert(Severity::Warn, "Canary promotion is waiting for approval.", false)
                }
            })
        }
        Some(CheckResult::Passed(events)) => Gate::Open(d.events(events)),
    }
}

/// Copies the canary to the primary and enters Promoting.
pub(super) fn promote(input: &Input, d: Decision, canary_weight: i32) -> Decision {
    d.event(Event::normal(format!(
        "Copying {} template spec to {}-primary.{}",
        input.target(),
        input.spec.target_ref.name,
        input.namespace
    )))
    .action(Action::Promote)
    .status(StatusUpdate {
        phase: Some(CanaryPhase::Promoting),
        canary_weight: Some(canary_weight),
        ..StatusUpdate::default()
    })
    // serin moves on as soon as the primary is ready.
    .requeue(Duration::ZERO)
}

pub(super) fn promotion_shift(input: &Input, routes: Routes) -> Decision {
    let step = input
        .spec
        .analysis
        .as_ref()
        .and_then(|a| a.step_weight_promotion)
        .unwrap_or(0);
    if step <= 0 {
        return Decision::default()
            .event(Event::normal("Routing all traffic to primary"))
            .action(Action::SetRoutes(Routes {
                primary: 100,
                canary: 0,
                mirrored: false,
            }))
            .status(StatusUpdate {
                phase: Some(CanaryPhase::Finalising),
                canary_weight: Some(0),
                ..StatusUpdate::default()
            })
            .requeue(Duration::ZERO);
    }
    let wait = input.until_next_step();
    if !wait.is_zero() && routes.primary > 0 {
        return Decision::default().requeue(wait);
    }
    let (primary, canary) = weights::promotion_step(routes.primary, step);
    let d = Decision::default()
        .action(Action::SetRoutes(Routes {
            primary,
            canary,
            mirrored: false,
        }))
        .event(Event::normal(format!(
            "Advance {} primary weight {primary}",
            input.canary()
        )));
    if primary >= 100 {
        d.status(StatusUpdate {
            phase: Some(CanaryPhase::Finalising),
            canary_weight: Some(0),
            ..StatusUpdate::default()
        })
        .requeue(Duration::ZERO)
    } else {
        d.status(StatusUpdate {
            canary_weight: Some(canary),
            ..StatusUpdate::default()
        })
        .requeue(input.interval())
    }
}

/// The status of a promotion that finished: the applied revision is now the promoted one.
pub(super) fn succeeded(input: &Input) -> StatusUpdate {
    StatusUpdate {
        phase: Some(CanaryPhase::Succeeded),
        canary_weight: Some(0),
        iterations: Some(0),
        last_promoted_spec: input.status.last_applied_spec.clone(),
        ..StatusUpdate::default()
    }
}

pub(super) fn finalise(input: &Input) -> Decision {
    Decision::default()
        .action(Action::ScaleTarget(Scale::Zero))
        .status(succeeded(input))
        .action(Action::PostRollout(CanaryPhase::Succeeded))
        .event(Event::normal(format!(
            "Promotion completed! Scaling down {}",
            input.target()
        )))
        .alert(
            Severity::Info,
            "Canary analysis completed successfully, promotion finished.",
            false,
        )
        .with_outcome(Outcome::Succeeded { skipped: false })
}

/// The primary did not become ready after promotion: traffic stays on the canary (Flagger's
/// `handleFailedPromotion`), the canary is not scaled down.
pub(super) fn failed_promotion(input: &Input, message: &str) -> Decision {
    Decision::default()
        .event(Event::warning(format!(
            "Promotion of {} failed, primary not ready: {message}",
            input.target()
        )))
        .alert(
            Severity::Error,
            format!("Promotion failed, primary not ready: {message}"),
            false,
        )
        .action(Action::SetRoutes(Routes {
            primary: 0,
            canary: 100,
            mirrored: false,
        }))
        .action(Action::PostRollout(CanaryPhase::Failed))
        .status(input.sync_status(CanaryPhase::Failed, 100))
        .with_outcome(Outcome::Failed)
}
