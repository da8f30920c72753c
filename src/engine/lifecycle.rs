//! A Canary's life outside and around the analysis: initialisation, starting a run when a new
//! revision arrives, the run in progress (gates, drift, deadlines, the analysis tick), failed
//! checks, rollback and skipping the analysis. The strategies take the step itself. Pure.

use super::*;

/// Creating the primary and its Services, then (once the primary is ready, so that a Service
/// or VirtualService taken over never points at pods still starting) the apex Service and the
/// routing, then scaling the target to zero.
pub(super) fn initialize(input: &Input) -> Decision {
    let waiting = Decision::default()
        .action(Action::EnsurePrimary)
        .action(Action::EnsureBackendServices);
    if input.status.phase == CanaryPhase::Unset {
        let update = StatusUpdate {
            phase: Some(CanaryPhase::Initializing),
            ..StatusUpdate::default()
        };
        // Flagger checks that the metric providers answer while it initialises; serin asks once.
        let waiting = if input.spec.skip_analysis() || !input.has_metrics() {
            waiting
        } else {
            match input.checks.get(&Check::MetricProviders) {
                None => return Decision::need(Check::MetricProviders),
                Some(
                    CheckResult::Passed(events)
                    | CheckResult::Failed(events)
                    | CheckResult::Held(events)
                    | CheckResult::Worse(events),
                ) => waiting.events(events),
            }
        };
        return waiting.status(update).requeue(Duration::ZERO);
    }
    if !input.spec.skip_analysis() {
        match &input.observed.primary {
            None => return waiting.requeue(READINESS_POLL),
            Some(Readiness::Ready) => {}
            Some(Readiness::Waiting(m)) => {
                return waiting.event(Event::warning(m.clone())).requeue(READINESS_POLL);
            }
            Some(Readiness::Failed(m)) => {
                return waiting.event(Event::warning(m.clone())).requeue(input.interval());
            }
        }
    }
    let base = Decision::default()
        .action(Action::EnsurePrimary)
        .action(Action::EnsureRouting);
    base.action(Action::ScaleTarget(Scale::Zero))
        .status(input.sync_status(CanaryPhase::Initialized, 0))
        .event(Event::normal(format!("Initialization done! {}", input.canary())))
        .alert(
            Severity::Info,
            format!(
                "New {} detected, initialization completed.",
                input.spec.target_ref.kind
            ),
            true,
        )
}

/// Idle or waiting for approval: start a run when a new revision arrives (or, `again`, the
/// current one once more: a retry).
pub(super) fn start_run(input: &Input, again: bool) -> Decision {
    let phase = input.status.phase;
    if phase != CanaryPhase::Waiting && !input.changed() && !again {
        // As Flagger's `shouldAdvance`, a Failed Canary records the revision it runs now (the
        // target reverted to the promoted one by hand), so re-applying the revision that failed
        // starts a new analysis.
        let status = input.status;
        let recorded = status.last_applied_spec.as_deref() == Some(input.observed.target_hash.as_str())
            && status.tracked_configs.as_ref() == Some(&input.observed.configs);
        if phase == CanaryPhase::Failed && !recorded {
            return Decision::default().status(StatusUpdate {
                last_applied_spec: Some(input.observed.target_hash.clone()),
                tracked_configs: Some(input.observed.configs.clone()),
                ..StatusUpdate::default()
            });
        }
        return Decision::default();
    }
    // A Canary switched from Flagger: its stored hashes are Flagger's, so the target looks new,
    // but the primary already runs it. The revision is adopted without a run (no scale-up, no
    // analysis, no rolling of the primary).
    if input.observed.primary_current && matches!(phase, CanaryPhase::Initialized | CanaryPhase::Succeeded) {
        return Decision::default().status(StatusUpdate {
            last_applied_spec: Some(input.observed.target_hash.clone()),
            last_promoted_spec: Some(input.observed.target_hash.clone()),
            tracked_configs: Some(input.observed.configs.clone()),
            ..StatusUpdate::default()
        });
    }
    match input.check(Check::ConfirmRollout, Some("confirm-rollout")) {
        None => Decision::need(Check::ConfirmRollout),
        Some(CheckResult::Failed(events) | CheckResult::Held(events) | CheckResult::Worse(events)) => {
            let d = Decision::default().events(events).requeue(input.interval());
            if phase == CanaryPhase::Waiting {
                d
            } else {
                let d = d.status(StatusUpdate {
                    phase: Some(CanaryPhase::Waiting),
                    ..StatusUpdate::default()
                });
                if input.muted("confirm-rollout", events) {
                    d
                } else {
                    d.alert(Severity::Warn, "Canary is waiting for approval.", false)
                }
            }
        }
        Some(CheckResult::Passed(events)) => {
            Decision::default()
                .events(events)
                // Flagger records it on a copy already Progressing: event webhooks see that.
                .event(
                    Event::normal(format!("New revision detected! Scaling up {}", input.target()))
                        .in_phase(CanaryPhase::Progressing),
                )
                .alert(
                    Severity::Info,
                    "New revision detected, progressing canary analysis.",
                    true,
                )
                .action(Action::ScaleTarget(Scale::FromZero))
                .status(input.sync_status(CanaryPhase::Progressing, 0))
                // serin starts the analysis as soon as the canary is ready, not a tick later.
                .requeue(Duration::ZERO)
        }
    }
}

/// Rolls back: traffic to the primary, target to zero, Failed.
pub(super) fn rollback(input: &Input, mut d: Decision, threshold_reached: bool) -> Decision {
    if threshold_reached {
        let threshold = input.spec.analysis_threshold();
        d = d
            .event(Event::warning(format!(
                "Rolling back {} failed checks threshold reached {threshold}",
                input.canary(),
            )))
            .alert(
                Severity::Error,
                format!("Failed checks threshold reached {threshold}"),
                false,
            );
    }
    d.action(Action::SetRoutes(Routes {
        primary: 100,
        canary: 0,
        mirrored: false,
    }))
    .event(Event::warning(format!(
        "Canary failed! Scaling down {}",
        input.canary()
    )))
    .action(Action::ScaleTarget(Scale::Zero))
    .action(Action::PostRollout(CanaryPhase::Failed))
    .status(input.sync_status(CanaryPhase::Failed, 0))
    .with_outcome(Outcome::Failed)
}

/// A run in progress.
pub(super) fn advance(input: &Input) -> Decision {
    let phase = input.status.phase;
    let Some(routes) = input.observed.routes else {
        // The routing is gone (deleted by hand): put it back and look again.
        return Decision::default()
            .action(Action::EnsureRouting)
            .requeue(READINESS_POLL);
    };
    if matches!(phase, CanaryPhase::Progressing | CanaryPhase::WaitingPromotion) && input.changed() {
        return Decision::default()
            .event(Event::normal(format!(
                "New revision detected! Restarting analysis for {}",
                input.target()
            )))
            .action(Action::SetRoutes(Routes {
                primary: 100,
                canary: 0,
                mirrored: false,
            }))
            .status(input.sync_status(CanaryPhase::Progressing, 0))
            .requeue(Duration::ZERO);
    }
    let skip = input.spec.skip_analysis();
    if !skip {
        match &input.observed.primary {
            Some(Readiness::Ready) => {}
            None => {
                return Decision::default()
                    .action(Action::EnsurePrimary)
                    .requeue(READINESS_POLL);
            }
            Some(Readiness::Waiting(m)) => {
                return Decision::default()
                    .event(Event::warning(m.clone()))
                    .requeue(READINESS_POLL);
            }
            Some(Readiness::Failed(m)) => {
                if matches!(phase, CanaryPhase::Promoting | CanaryPhase::Finalising) {
                    return failed_promotion(input, m);
                }
                let d = Decision::default().event(Event::warning(m.clone()));
                return rollback(input, d, false);
            }
        }
    }
    match &input.observed.canary {
        Readiness::Ready => {}
        Readiness::Waiting(m) => {
            return Decision::default()
                .event(Event::warning(m.clone()))
                .requeue(READINESS_POLL);
        }
        Readiness::Failed(m) => {
            let d = Decision::default().event(Event::warning(m.clone())).alert(
                Severity::Error,
                format!("Progress deadline exceeded {m}"),
                false,
            );
            return rollback(input, d, false);
        }
    }
    if skip {
        return skip_analysis(input);
    }
    let mut not_signaling = Vec::new();
    // Asked once per analysis tick, as Flagger does, not at every wake-up between two steps.
    if matches!(phase, CanaryPhase::Progressing | CanaryPhase::WaitingPromotion) && tick_due(input, routes) {
        match input.check(Check::Rollback, Some("rollback")) {
            None => return Decision::need(Check::Rollback),
            Some(CheckResult::Passed(events)) if input.has_hooks("rollback") => {
                let d = Decision::default()
                    .events(events)
                    .event(Event::warning(format!(
                        "Rolling back {} manual webhook invoked",
                        input.canary()
                    )))
                    .alert(Severity::Warn, "Rolling back manual webhook invoked", false);
                return rollback(input, d, false);
            }
            Some(CheckResult::Failed(events)) => not_signaling = events.clone(),
            Some(_) => {}
        }
    }
    let mut d = progress(input, phase, routes);
    // Flagger records "Rollback hook <name> not signaling a rollback" once per tick.
    if d.analysis_tick {
        d.events.splice(0..0, not_signaling);
    }
    d
}

pub(super) fn mirrored_analysis(input: &Input) -> bool {
    input
        .spec
        .analysis
        .as_ref()
        .and_then(|a| a.mirror)
        .unwrap_or(false)
}

/// No step taken yet: no traffic, no iteration, no mirroring.
pub(super) fn is_first_step(input: &Input, routes: Routes) -> bool {
    routes.canary == 0 && input.status.iterations == 0 && !(mirrored_analysis(input) && routes.mirrored)
}

/// Whether an analysis tick is due: the first step as soon as the canary is ready, later ones one
/// interval after the last status change.
pub(super) fn tick_due(input: &Input, routes: Routes) -> bool {
    is_first_step(input, routes) || input.until_next_step().is_zero()
}

/// What follows the gates: promotion, finalising, rollback at the threshold, or the next
/// analysis tick when it is due.
pub(super) fn progress(input: &Input, phase: CanaryPhase, routes: Routes) -> Decision {
    match phase {
        CanaryPhase::Promoting => return promotion_shift(input, routes),
        CanaryPhase::Finalising => return finalise(input),
        _ => {}
    }
    let threshold = input.spec.analysis_threshold();
    if input.status.failed_checks >= threshold {
        return rollback(input, Decision::default(), true);
    }
    // The routing is back on the primary while the status says the canary had traffic: a
    // rollback whose status write was lost (a fault, a crash), or traffic taken back by hand.
    // Finish it as a rollback; starting over would take the first step a second time.
    if phase == CanaryPhase::Progressing
        && input.spec.deployment_strategy() == DeploymentStrategy::Canary
        && routes.canary == 0
        && !routes.mirrored
        && input.status.canary_weight > 0
    {
        let d = Decision::default().event(Event::warning(format!(
            "Traffic of {} is back on the primary while the canary had {}%: rolling back",
            input.canary(),
            input.status.canary_weight
        )));
        return rollback(input, d, false);
    }
    let mirror = mirrored_analysis(input);
    let first_step = is_first_step(input, routes);
    // serin takes the first step as soon as the canary is ready; later ones one interval apart.
    if !tick_due(input, routes) {
        let wait = input.until_next_step();
        // Comparisons with the primary look between ticks too, and roll back as soon as the
        // evidence says so.
        if let Some(every) = input.observed.look_every
            && phase == CanaryPhase::Progressing
        {
            return match input.check(Check::Comparisons, None) {
                None => Decision::need(Check::Comparisons),
                Some(CheckResult::Worse(events)) => {
                    rollback(input, Decision::default().events(events), false)
                }
                Some(_) => Decision::default().requeue(wait.min(every)),
            };
        }
        return Decision::default().requeue(wait);
    }
    let mut d = analysis_tick(input, routes, mirror, first_step);
    d.analysis_tick = d.need.is_none();
    d
}

/// One analysis tick: the pre-rollout hooks at the start, else the step's checks; then the
/// strategy's next step.
pub(super) fn analysis_tick(input: &Input, routes: Routes, mirror: bool, first_step: bool) -> Decision {
    let mut d = Decision::default();
    if first_step {
        // Flagger records the start before it runs the pre-rollout hooks, whatever they answer.
        let starting = Event::normal(format!("Starting canary analysis for {}", input.target()));
        match input.check(Check::PreRollout, Some("pre-rollout")) {
            None => return Decision::need(Check::PreRollout),
            Some(CheckResult::Failed(events) | CheckResult::Held(events) | CheckResult::Worse(events)) => {
                let mut events = events.clone();
                events.insert(0, starting);
                return failed_check(input, &events);
            }
            Some(CheckResult::Passed(events)) => {
                d = d.event(starting).events(events);
            }
        }
    } else {
        match input.check(Check::Analysis, None) {
            None => return Decision::need(Check::Analysis),
            Some(CheckResult::Failed(events)) => return failed_check(input, events),
            Some(CheckResult::Worse(events)) => {
                return rollback(input, Decision::default().events(events), false);
            }
            Some(CheckResult::Held(events)) => {
                return Decision::default().events(events).requeue(input.interval());
            }
            Some(CheckResult::Passed(events)) => d = d.events(events),
        }
    }
    match input.spec.deployment_strategy() {
        DeploymentStrategy::Canary => canary_step(input, routes, mirror, d),
        DeploymentStrategy::AbTesting => ab_step(input, d),
        DeploymentStrategy::BlueGreen => blue_green_step(input, routes, mirror, d),
    }
}

/// A failed check: one more failed check, and a rollback at once when that reaches the threshold.
pub(super) fn failed_check(input: &Input, events: &[Event]) -> Decision {
    let failed = input.status.failed_checks + 1;
    let d = Decision::default().events(events);
    if failed >= input.spec.analysis_threshold() {
        return rollback(input, d, true);
    }
    d.status(StatusUpdate {
        failed_checks: Some(failed),
        ..StatusUpdate::default()
    })
    .requeue(input.interval())
}

pub(super) fn iteration_event(input: &Input, iteration: i32) -> Event {
    Event::normal(format!(
        "Advance {} canary iteration {iteration}/{}",
        input.canary(),
        input.spec.iterations()
    ))
}

pub(super) fn skip_analysis(input: &Input) -> Decision {
    Decision::default()
        .action(Action::SetRoutes(Routes {
            primary: 100,
            canary: 0,
            mirrored: false,
        }))
        .event(Event::normal(format!(
            "Copying {} template spec to {}-primary.{}",
            input.target(),
            input.spec.target_ref.name,
            input.namespace
        )))
        .action(Action::Promote)
        .action(Action::ScaleTarget(Scale::Zero))
        .status(succeeded(input))
        .action(Action::PostRollout(CanaryPhase::Succeeded))
        .event(Event::normal(format!(
            "Promotion completed! Canary analysis was skipped for {}",
            input.target()
        )))
        .alert(
            Severity::Info,
            "Canary analysis was skipped, promotion finished.",
            false,
        )
        .with_outcome(Outcome::Succeeded { skipped: true })
}
