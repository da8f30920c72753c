//! The canary state machine: every phase transition, weight step, threshold and verdict, as a
//! pure function of the Canary, what was observed and the results of the checks run so far.
//!
//! The controller calls [`decide`] with no check results; when the decision needs a check (a
//! webhook gate, the analysis), it says which in [`Decision::need`], the controller runs it and
//! calls [`decide`] again with the result. Nothing here does I/O.

pub mod build;
pub mod readiness;
pub mod revision;
pub mod weights;

use std::{collections::BTreeMap, time::Duration};

use crate::api::canary::{CanaryPhase, CanarySpec, CanaryStatus, DeploymentStrategy};
pub use readiness::Readiness;

/// How soon to look again while waiting for a Deployment to become ready. The controller also
/// reacts to Deployment changes at once; this is the safety net.
pub const READINESS_POLL: Duration = Duration::from_secs(2);

/// The weights read back from the VirtualService.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Routes {
    pub primary: i32,
    pub canary: i32,
    pub mirrored: bool,
}

/// What the controller observed for one Canary.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// Hash of the target's pod template.
    pub target_hash: String,
    /// Checksums of the tracked ConfigMaps and Secrets (`configmap/<name>` -> checksum).
    pub configs: BTreeMap<String, String>,
    /// Readiness of the target (canary) Deployment.
    pub canary: Readiness,
    /// Readiness of the `-primary` Deployment (`None` when it does not exist yet).
    pub primary: Option<Readiness>,
    /// The VirtualService's weights (`None` when it does not exist yet).
    pub routes: Option<Routes>,
    /// Seconds since the Unix epoch.
    pub now: i64,
    /// Seconds since the Unix epoch of the last status write (`status.lastTransitionTime`).
    pub last_transition: Option<i64>,
    /// Twenty random letters: the values of new session affinity cookies (canary, then primary).
    pub random: String,
    /// The VirtualService differs from what serin generates for its current weights (edited by
    /// hand, or the Canary's service settings changed).
    pub routing_drift: bool,
    /// The primary already runs the target's template and its config copies hold the target's
    /// configs: a promotion would change nothing.
    pub primary_current: bool,
}

/// The checks the controller runs on request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    /// Whether the metric providers answer (Flagger's check at initialisation); reported only,
    /// it never holds the initialisation.
    MetricProviders,
    /// `confirm-rollout` webhooks: may a new revision start?
    ConfirmRollout,
    /// `pre-rollout` webhooks, before the first traffic.
    PreRollout,
    /// `rollout` webhooks and metric checks, at every analysis step.
    Analysis,
    /// `confirm-traffic-increase` webhooks, before each weight increase.
    ConfirmTrafficIncrease,
    /// `confirm-promotion` webhooks, before promotion.
    ConfirmPromotion,
    /// `rollback` webhooks: does someone ask for a rollback?
    Rollback,
}

/// A check's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Passed; the events to record (`Pre-rollout check <hook> passed`).
    Passed(Vec<Event>),
    /// Failed; the events that say why (Flagger's `Halt ...` texts).
    Failed(Vec<Event>),
}

/// An event to record (reason `Synced`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub warning: bool,
    pub message: String,
    /// The phase event webhooks are told; `None`: the Canary's phase when the event is recorded.
    pub phase: Option<CanaryPhase>,
}

impl Event {
    pub fn normal(message: impl Into<String>) -> Self {
        Self {
            warning: false,
            message: message.into(),
            phase: None,
        }
    }
    pub fn warning(message: impl Into<String>) -> Self {
        Self {
            warning: true,
            message: message.into(),
            phase: None,
        }
    }
    /// Reported to event webhooks with this phase.
    fn in_phase(mut self, phase: CanaryPhase) -> Self {
        self.phase = Some(phase);
        self
    }
}

/// How serious an alert is (Flagger's `AlertSeverity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Info,
    Warn,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// A notification for the Canary's alert providers (or the global notifier), with Flagger's
/// texts. `metadata` adds the Canary's target, threshold, deadline and routing as fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub severity: Severity,
    pub message: String,
    pub metadata: bool,
}

/// Target replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Zero,
    /// Back up from zero (the controller picks the count, as Flagger's `ScaleFromZero`).
    FromZero,
}

/// An effect on the cluster, in the order the controller must carry them out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create the `-primary` Deployment (and config copies, primary HPA) if missing.
    EnsurePrimary,
    /// Apply the `-primary` and `-canary` Services only (Flagger's `KubernetesRouter.Initialize`):
    /// what may exist before the primary is ready, since no client reaches them yet.
    EnsureBackendServices,
    /// Apply the Services, DestinationRules and VirtualService (weights kept). The apex Service
    /// and the VirtualService carry live traffic: they switch to the primary only once it is
    /// ready.
    EnsureRouting,
    /// Scale the target.
    ScaleTarget(Scale),
    /// Write the VirtualService weights.
    SetRoutes(Routes),
    /// Copy the target's template (and configs) to the primary.
    Promote,
    /// Call the `post-rollout` webhooks with this phase.
    PostRollout(CanaryPhase),
}

/// How a run ended, for the success and failure counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded { skipped: bool },
    Failed,
}

/// The status fields a decision writes; the rest of the status is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusUpdate {
    pub phase: Option<CanaryPhase>,
    pub canary_weight: Option<i32>,
    pub failed_checks: Option<i32>,
    pub iterations: Option<i32>,
    pub last_applied_spec: Option<String>,
    pub last_promoted_spec: Option<String>,
    pub tracked_configs: Option<BTreeMap<String, String>>,
    /// Session affinity cookies (`name=value`; an empty string clears one).
    pub session_affinity_cookie: Option<String>,
    pub primary_session_affinity_cookie: Option<String>,
    pub previous_session_affinity_cookie: Option<String>,
}

/// What to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// A check to run before deciding; call [`decide`] again with its result.
    pub need: Option<Check>,
    pub actions: Vec<Action>,
    /// `None` when the status stays as it is.
    pub status: Option<StatusUpdate>,
    pub events: Vec<Event>,
    /// Alerts to send (never waited for).
    pub alerts: Vec<Alert>,
    pub outcome: Option<Outcome>,
    /// When to look again; `None` waits for a change.
    pub requeue_after: Option<Duration>,
    /// This was an analysis tick (the start of the analysis or a check of a step, whatever its
    /// result): what `flagger_canary_duration_seconds` measures.
    pub analysis_tick: bool,
}

impl Decision {
    fn need(check: Check) -> Self {
        Self {
            need: Some(check),
            ..Self::default()
        }
    }
    fn event(mut self, event: Event) -> Self {
        self.events.push(event);
        self
    }
    fn events(mut self, events: &[Event]) -> Self {
        self.events.extend_from_slice(events);
        self
    }
    fn alert(mut self, severity: Severity, message: impl Into<String>, metadata: bool) -> Self {
        self.alerts.push(Alert {
            severity,
            message: message.into(),
            metadata,
        });
        self
    }
    fn action(mut self, action: Action) -> Self {
        self.actions.push(action);
        self
    }
    fn status(mut self, status: StatusUpdate) -> Self {
        self.status = Some(status);
        self
    }
    fn requeue(mut self, after: Duration) -> Self {
        self.requeue_after = Some(after);
        self
    }
}

/// Everything [`decide`] reads.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub spec: &'a CanarySpec,
    pub status: &'a CanaryStatus,
    pub observed: &'a Observed,
    pub checks: &'a BTreeMap<Check, CheckResult>,
}

impl Input<'_> {
    fn canary(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }
    fn target(&self) -> String {
        format!("{}.{}", self.spec.target_ref.name, self.namespace)
    }
    fn has_metrics(&self) -> bool {
        self.spec
            .analysis
            .as_ref()
            .and_then(|a| a.metrics.as_ref())
            .is_some_and(|m| !m.is_empty())
    }
    fn has_hooks(&self, kind: &str) -> bool {
        self.spec
            .analysis
            .as_ref()
            .and_then(|a| a.webhooks.as_ref())
            .is_some_and(|hooks| hooks.iter().any(|h| h.hook_type() == kind))
    }
    /// Whether the hook whose failure ended a gate check asked for no alerts (`muteAlert`). A gate
    /// runs its hooks in order, one event per hook, and stops at the first failure.
    fn muted(&self, kind: &str, events: &[Event]) -> bool {
        let hooks: Vec<_> = self
            .spec
            .analysis
            .as_ref()
            .and_then(|a| a.webhooks.as_ref())
            .map(|hs| hs.iter().filter(|h| h.hook_type() == kind).collect())
            .unwrap_or_default();
        events
            .len()
            .checked_sub(1)
            .and_then(|i| hooks.get(i))
            .is_some_and(|h| h.mute_alert.unwrap_or(false))
    }
    /// The result of a check, or `None` when it must run first. Checks without hooks pass.
    fn check(&self, check: Check, hook_type: Option<&str>) -> Option<&CheckResult> {
        const PASSED: &CheckResult = &CheckResult::Passed(Vec::new());
        if hook_type.is_some_and(|t| !self.has_hooks(t)) {
            return Some(PASSED);
        }
        self.checks.get(&check)
    }
    fn changed(&self) -> bool {
        let status = self.status;
        revision::has_spec_changed(
            status.last_applied_spec.as_deref(),
            status.last_promoted_spec.as_deref(),
            &self.observed.target_hash,
        ) || revision::have_configs_changed(status.tracked_configs.as_ref(), &self.observed.configs)
    }
    fn interval(&self) -> Duration {
        self.spec.analysis_interval()
    }
    /// Time until the next analysis step is due (zero when due).
    fn until_next_step(&self) -> Duration {
        let Some(last) = self.observed.last_transition else {
            return Duration::ZERO;
        };
        let due = last + self.interval().as_secs() as i64;
        Duration::from_secs(due.saturating_sub(self.observed.now).max(0) as u64)
    }
    /// A status that starts a run (Flagger's `SyncStatus`): counters reset, revision recorded.
    fn sync_status(&self, phase: CanaryPhase, canary_weight: i32) -> StatusUpdate {
        StatusUpdate {
            phase: Some(phase),
            canary_weight: Some(canary_weight),
            failed_checks: Some(0),
            iterations: Some(0),
            last_applied_spec: Some(self.observed.target_hash.clone()),
            last_promoted_spec: (phase == CanaryPhase::Initialized)
                .then(|| self.observed.target_hash.clone()),
            tracked_configs: Some(self.observed.configs.clone()),
            ..StatusUpdate::default()
        }
    }
}

/// Which of the Canaries that target one workload manages it: the first by name (the others
/// are reported and left alone, so they never fight over the target).
pub fn target_owner<'a>(this: &'a str, same_target: &'a [String]) -> Option<&'a str> {
    same_target
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(this))
        .min()
}

/// Decides the next step for a Canary.
pub fn decide(input: &Input) -> Decision {
    let mut d = with_session_affinity(input, decide_phase(input));
    // Drift is corrected with the weights kept, whatever the phase.
    let routes_written = d
        .actions
        .iter()
        .any(|a| matches!(a, Action::EnsureRouting | Action::SetRoutes(_)));
    if input.observed.routing_drift
        && !routes_written
        && d.need.is_none()
        && !input.spec.is_suspended()
        && !matches!(
            input.status.phase,
            // Before the primary is ready the routing is not serin's yet.
            CanaryPhase::Unset
                | CanaryPhase::Initializing
                | CanaryPhase::Terminating
                | CanaryPhase::Terminated
        )
    {
        d.actions.insert(0, Action::EnsureRouting);
    }
    d
}

fn decide_phase(input: &Input) -> Decision {
    let status = input.status;
    let phase = status.phase;
    if input.spec.is_suspended() {
        return Decision::default().event(Event::normal("skipping canary run as object is suspended"));
    }
    match phase {
        CanaryPhase::Unset | CanaryPhase::Initializing => initialize(input),
        CanaryPhase::Initialized | CanaryPhase::Succeeded | CanaryPhase::Failed | CanaryPhase::Waiting => {
            start(input)
        }
        CanaryPhase::Progressing
        | CanaryPhase::WaitingPromotion
        | CanaryPhase::Promoting
        | CanaryPhase::Finalising => advance(input),
        CanaryPhase::Terminating | CanaryPhase::Terminated => Decision::default(),
    }
}

/// Creating the primary and its Services, then (once the primary is ready, so that a Service
/// or VirtualService taken over never points at pods still starting) the apex Service and the
/// routing, then scaling the target to zero.
fn initialize(input: &Input) -> Decision {
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
                Some(CheckResult::Passed(events) | CheckResult::Failed(events)) => waiting.events(events),
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

/// Idle or waiting for approval: start a run when a new revision arrives.
fn start(input: &Input) -> Decision {
    let phase = input.status.phase;
    if phase != CanaryPhase::Waiting && !input.changed() {
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
        Some(CheckResult::Failed(events)) => {
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
fn rollback(input: &Input, mut d: Decision, threshold_reached: bool) -> Decision {
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

impl Decision {
    fn with_outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = Some(outcome);
        self
    }
}

/// A run in progress.
fn advance(input: &Input) -> Decision {
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

fn mirrored_analysis(input: &Input) -> bool {
    input
        .spec
        .analysis
        .as_ref()
        .and_then(|a| a.mirror)
        .unwrap_or(false)
}

/// No step taken yet: no traffic, no iteration, no mirroring.
fn is_first_step(input: &Input, routes: Routes) -> bool {
    routes.canary == 0 && input.status.iterations == 0 && !(mirrored_analysis(input) && routes.mirrored)
}

/// Whether an analysis tick is due: the first step as soon as the canary is ready, later ones one
/// interval after the last status change.
fn tick_due(input: &Input, routes: Routes) -> bool {
    is_first_step(input, routes) || input.until_next_step().is_zero()
}

/// What follows the gates: promotion, finalising, rollback at the threshold, or the next
/// analysis tick when it is due.
fn progress(input: &Input, phase: CanaryPhase, routes: Routes) -> Decision {
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
        return Decision::default().requeue(input.until_next_step());
    }
    let mut d = analysis_tick(input, routes, mirror, first_step);
    d.analysis_tick = d.need.is_none();
    d
}

/// One analysis tick: the pre-rollout hooks at the start, else the step's checks; then the
/// strategy's next step.
fn analysis_tick(input: &Input, routes: Routes, mirror: bool, first_step: bool) -> Decision {
    let mut d = Decision::default();
    if first_step {
        // Flagger records the start before it runs the pre-rollout hooks, whatever they answer.
        let starting = Event::normal(format!("Starting canary analysis for {}", input.target()));
        match input.check(Check::PreRollout, Some("pre-rollout")) {
            None => return Decision::need(Check::PreRollout),
            Some(CheckResult::Failed(events)) => {
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
fn failed_check(input: &Input, events: &[Event]) -> Decision {
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

fn canary_step(input: &Input, routes: Routes, mirror: bool, mut d: Decision) -> Decision {
    let analysis = input.spec.analysis.clone().unwrap_or_default();
    let max_weight = input.spec.max_weight();
    let cw = routes.canary;
    // Flagger asks before every step it takes without mirrored traffic: before turning mirroring
    // on, before each weight increase and before promotion at the maximum weight.
    if !routes.mirrored && input.status.phase != CanaryPhase::WaitingPromotion {
        match input.check(Check::ConfirmTrafficIncrease, Some("confirm-traffic-increase")) {
            None => return Decision::need(Check::ConfirmTrafficIncrease),
            Some(CheckResult::Failed(events)) => {
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

/// The outcome of the `confirm-promotion` gate.
enum Gate {
    /// Promotion may go ahead; the decision so far with the gate's events.
    Open(Decision),
    /// The decision that waits (or asks for the check).
    Closed(Decision),
}

/// The `confirm-promotion` gate. While closed: WaitingPromotion, and A/B testing and Blue/Green
/// step back one iteration so that one more runs after the approval, as Flagger does.
fn confirm_promotion(input: &Input, d: Decision) -> Gate {
    match input.check(Check::ConfirmPromotion, Some("confirm-promotion")) {
        None => Gate::Closed(Decision::need(Check::ConfirmPromotion)),
        Some(CheckResult::Failed(events)) => {
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
fn promote(input: &Input, d: Decision, canary_weight: i32) -> Decision {
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

fn iteration_event(input: &Input, iteration: i32) -> Event {
    Event::normal(format!(
        "Advance {} canary iteration {iteration}/{}",
        input.canary(),
        input.spec.iterations()
    ))
}

/// A/B testing (Flagger's `runAB`): requests matching `analysis.match` go to the canary for
/// `iterations` analysis rounds, then promotion.
fn ab_step(input: &Input, d: Decision) -> Decision {
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

/// Blue/Green (Flagger's `runBlueGreen`): `iterations` analysis rounds against the canary
/// Service with the traffic on the primary (mirrored to the canary with `mirror`), then all
/// traffic to the canary for one more round, then promotion.
fn blue_green_step(input: &Input, routes: Routes, mirror: bool, mut d: Decision) -> Decision {
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

/// Session affinity (Flagger's `getSessionAffinityRouteRules`): a canary cookie (and a primary
/// one with `primaryCookieName`) is chosen when traffic first reaches the canary and kept in the
/// status; when the canary weight returns to 0 the cookie becomes the previous one, which the
/// VirtualService then expires.
fn with_session_affinity(input: &Input, mut d: Decision) -> Decision {
    let Some(affinity) = input
        .spec
        .analysis
        .as_ref()
        .and_then(|a| a.session_affinity.as_ref())
    else {
        return d;
    };
    if input.spec.deployment_strategy() == DeploymentStrategy::AbTesting {
        return d;
    }
    let Some(routes) = d.actions.iter().rev().find_map(|a| match a {
        Action::SetRoutes(r) => Some(*r),
        _ => None,
    }) else {
        return d;
    };
    let status = input.status;
    let current = status
        .session_affinity_cookie
        .as_deref()
        .filter(|c| !c.is_empty());
    let had_status = d.status.is_some();
    let mut update = d.status.take().unwrap_or_default();
    let letters = |i: usize| {
        input
            .observed
            .random
            .get(i * 10..(i + 1) * 10)
            .unwrap_or("serinserin")
            .to_owned()
    };
    if routes.canary != 0 {
        if current.is_none() {
            update.session_affinity_cookie = Some(format!("{}={}", affinity.cookie_name, letters(0)));
        }
        if let Some(name) = affinity.primary_cookie_name.as_deref().filter(|n| !n.is_empty())
            && status
                .primary_session_affinity_cookie
                .as_deref()
                .is_none_or(str::is_empty)
        {
            update.primary_session_affinity_cookie = Some(format!("{name}={}", letters(1)));
        }
    } else if let Some(cookie) = current {
        update.previous_session_affinity_cookie = Some(cookie.to_owned());
        update.session_affinity_cookie = Some(String::new());
    }
    d.status = (had_status || update != StatusUpdate::default()).then_some(update);
    d
}

fn promotion_shift(input: &Input, routes: Routes) -> Decision {
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
fn succeeded(input: &Input) -> StatusUpdate {
    StatusUpdate {
        phase: Some(CanaryPhase::Succeeded),
        canary_weight: Some(0),
        iterations: Some(0),
        last_promoted_spec: input.status.last_applied_spec.clone(),
        ..StatusUpdate::default()
    }
}

fn finalise(input: &Input) -> Decision {
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

fn skip_analysis(input: &Input) -> Decision {
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

/// The primary did not become ready after promotion: traffic stays on the canary (Flagger's
/// `handleFailedPromotion`), the canary is not scaled down.
fn failed_promotion(input: &Input, message: &str) -> Decision {
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

#[cfg(test)]
mod tests;
