//! The engine's vocabulary: what it reads ([`Input`], [`Observed`], [`Routes`], check results)
//! and what it decides ([`Decision`]: actions, status, events, alerts, the check it needs).
//! Pure.

use super::*;

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
    /// How often the Canary's comparisons with the primary (`metrics[].compare`) look between
    /// analysis ticks (`--comparison-window`); `None` when it has none.
    pub look_every: Option<Duration>,
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
    /// The comparisons with the primary alone, between analysis ticks: is the canary already
    /// shown worse? Anything but [`CheckResult::Worse`] waits for the next tick.
    Comparisons,
}

/// A check's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Passed; the events to record (`Pre-rollout check <hook> passed`).
    Passed(Vec<Event>),
    /// Failed; the events that say why (Flagger's `Halt ...` texts).
    Failed(Vec<Event>),
    /// The analysis waits for data (a comparison with the primary under the `hold` policy):
    /// no step and no failed check.
    Held(Vec<Event>),
    /// A comparison with the primary showed the canary worse: roll back now, whatever the
    /// failed checks.
    Worse(Vec<Event>),
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
    pub(super) fn in_phase(mut self, phase: CanaryPhase) -> Self {
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
    /// The comparisons with the primary after this reconcile's look (set by the controller).
    pub comparisons: Option<BTreeMap<String, crate::api::canary::MetricComparisonStatus>>,
    /// The checks of this reconcile's analysis tick, explained (set by the controller).
    pub checks: Option<Vec<crate::api::canary::CheckStatus>>,
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
    /// The answer to [`Input::request`], once the decision is complete.
    pub answer: Option<Answer>,
}

impl Decision {
    pub(super) fn need(check: Check) -> Self {
        Self {
            need: Some(check),
            ..Self::default()
        }
    }
    pub(super) fn event(mut self, event: Event) -> Self {
        self.events.push(event);
        self
    }
    pub(super) fn events(mut self, events: &[Event]) -> Self {
        self.events.extend_from_slice(events);
        self
    }
    pub(super) fn alert(mut self, severity: Severity, message: impl Into<String>, metadata: bool) -> Self {
        self.alerts.push(Alert {
            severity,
            message: message.into(),
            metadata,
        });
        self
    }
    pub(super) fn action(mut self, action: Action) -> Self {
        self.actions.push(action);
        self
    }
    pub(super) fn status(mut self, status: StatusUpdate) -> Self {
        self.status = Some(status);
        self
    }
    pub(super) fn requeue(mut self, after: Duration) -> Self {
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
    /// A person's request to answer in this decision instead of the Canary's own step.
    pub request: Option<&'a Request>,
    /// Who paused the current revision's run, while a pause holds it.
    pub paused_by: Option<&'a str>,
}

impl Input<'_> {
    pub(super) fn canary(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }
    pub(super) fn target(&self) -> String {
        format!("{}.{}", self.spec.target_ref.name, self.namespace)
    }
    pub(super) fn has_metrics(&self) -> bool {
        self.spec
            .analysis
            .as_ref()
            .and_then(|a| a.metrics.as_ref())
            .is_some_and(|m| !m.is_empty())
    }
    pub(super) fn has_hooks(&self, kind: &str) -> bool {
        self.spec
            .analysis
            .as_ref()
            .and_then(|a| a.webhooks.as_ref())
            .is_some_and(|hooks| hooks.iter().any(|h| h.hook_type() == kind))
    }
    /// Whether the hook whose failure ended a gate check asked for no alerts (`muteAlert`). A gate
    /// runs its hooks in order, one event per hook, and stops at the first failure.
    pub(super) fn muted(&self, kind: &str, events: &[Event]) -> bool {
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
    pub(super) fn check(&self, check: Check, hook_type: Option<&str>) -> Option<&CheckResult> {
        const PASSED: &CheckResult = &CheckResult::Passed(Vec::new());
        if hook_type.is_some_and(|t| !self.has_hooks(t)) {
            return Some(PASSED);
        }
        self.checks.get(&check)
    }
    pub(super) fn changed(&self) -> bool {
        let status = self.status;
        revision::has_spec_changed(
            status.last_applied_spec.as_deref(),
            status.last_promoted_spec.as_deref(),
            &self.observed.target_hash,
        ) || revision::have_configs_changed(status.tracked_configs.as_ref(), &self.observed.configs)
    }
    pub(super) fn interval(&self) -> Duration {
        self.spec.analysis_interval()
    }
    /// Time until the next analysis step is due (zero when due).
    pub(super) fn until_next_step(&self) -> Duration {
        let Some(last) = self.observed.last_transition else {
            return Duration::ZERO;
        };
        let due = last + self.interval().as_secs() as i64;
        Duration::from_secs(due.saturating_sub(self.observed.now).max(0) as u64)
    }
    /// A status that starts a run (Flagger's `SyncStatus`): counters reset, revision recorded.
    pub(super) fn sync_status(&self, phase: CanaryPhase, canary_weight: i32) -> StatusUpdate {
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

impl Decision {
    pub(super) fn with_outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = Some(outcome);
        self
    }
}
