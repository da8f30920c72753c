//! The Canary's status: phase, counters, revisions and conditions, as Flagger writes them. No
//! I/O.

use super::*;

/// The phase of a Canary, as Flagger names it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum CanaryPhase {
    /// No phase written yet.
    #[default]
    #[serde(rename = "")]
    Unset,
    Initializing,
    Initialized,
    Waiting,
    Progressing,
    WaitingPromotion,
    Promoting,
    Finalising,
    Succeeded,
    Failed,
    Terminating,
    Terminated,
}

impl CanaryPhase {
    /// Every phase, in the order Flagger declares them.
    pub const ALL: [CanaryPhase; 12] = [
        Self::Unset,
        Self::Initializing,
        Self::Initialized,
        Self::Waiting,
        Self::Progressing,
        Self::WaitingPromotion,
        Self::Promoting,
        Self::Finalising,
        Self::Succeeded,
        Self::Failed,
        Self::Terminating,
        Self::Terminated,
    ];

    /// The name written to `status.phase`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "",
            Self::Initializing => "Initializing",
            Self::Initialized => "Initialized",
            Self::Waiting => "Waiting",
            Self::Progressing => "Progressing",
            Self::WaitingPromotion => "WaitingPromotion",
            Self::Promoting => "Promoting",
            Self::Finalising => "Finalising",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Terminating => "Terminating",
            Self::Terminated => "Terminated",
        }
    }

    /// An analysis or promotion is under way.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Self::Waiting | Self::Progressing | Self::WaitingPromotion | Self::Promoting | Self::Finalising
        )
    }

    /// The `Promoted` condition for this phase: status and message, Flagger's texts.
    /// `kind` is the target's kind. `None` for phases Flagger writes no condition for.
    pub fn promoted_condition(self, kind: &str) -> Option<(&'static str, String)> {
        let (status, message) = match self {
            Self::Initializing => (
                "Unknown",
                format!("New {kind} detected, starting initialization."),
            ),
            Self::Initialized => ("True", format!("{kind} initialization completed.")),
            Self::Waiting | Self::WaitingPromotion => ("Unknown", "Waiting for approval.".to_owned()),
            Self::Progressing => (
                "Unknown",
                "New revision detected, progressing canary analysis.".to_owned(),
            ),
            Self::Promoting => (
                "Unknown",
                "Canary analysis completed, starting primary rolling update.".to_owned(),
            ),
            Self::Finalising => (
                "Unknown",
                "Canary analysis completed, routing all traffic to primary.".to_owned(),
            ),
            Self::Succeeded => (
                "True",
                "Canary analysis completed successfully, promotion finished.".to_owned(),
            ),
            Self::Failed => ("False", format!("Canary analysis failed, {kind} scaled to zero.")),
            Self::Unset | Self::Terminating | Self::Terminated => return None,
        };
        Some((status, message))
    }
}

impl std::fmt::Display for CanaryPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The observed state of a Canary. `phase`, `failedChecks`, `canaryWeight` and `iterations` are
/// always written, as Flagger writes them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    #[serde(default)]
    pub phase: CanaryPhase,
    #[serde(default)]
    #[schemars(schema_with = "schema::number")]
    pub failed_checks: i32,
    #[serde(default)]
    #[schemars(schema_with = "schema::number")]
    pub canary_weight: i32,
    #[serde(default)]
    #[schemars(schema_with = "schema::number")]
    pub iterations: i32,
    /// `configmap/<name>` or `secret/<name>` to the checksum of its data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracked_configs: Option<BTreeMap<String, String>>,
    /// Hash of the target's pod template last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_spec: Option<String>,
    /// Hash of the target's pod template last promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promoted_spec: Option<String>,
    /// Time of the last status write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::date_time")]
    pub last_transition_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_session_affinity_cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_session_affinity_cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<CanaryCondition>>,
    /// serin: the metrics compared with the primary (`metrics[].compare`), by metric name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparisons: Option<BTreeMap<String, MetricComparisonStatus>>,
    /// serin: every check of the last analysis tick, in the order they ran, with its numbers and
    /// verdict (a check after a failed one does not run, as in Flagger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Vec<CheckStatus>>,
}

/// serin: one check of an analysis tick, explained: what was measured on each side, against
/// what, on how many requests, with what evidence, and the verdict in one sentence.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckStatus {
    /// The metric's name, or `webhook/<name>` for a rollout webhook.
    pub name: String,
    /// `threshold` (a value against a bound), `comparison` (the canary against the primary) or
    /// `webhook`.
    pub check: String,
    /// The canary's value: the metric's value, or for a comparison the canary's share of bad
    /// requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<f64>,
    /// For a comparison, the primary's share of bad requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<f64>,
    /// The bound or the test the value is held to, such as `>= 99` or `canary/primary <= 1 (alpha 0.05)`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bound: String,
    /// For a comparison, the requests counted on the canary and on the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_requests: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_requests: Option<f64>,
    /// For a comparison, the e-value against the canary (it rolls back at `1/alpha`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<f64>,
    /// `pass`, `fail`, `hold`, `worse` or `error` (the check could not be made).
    pub verdict: String,
    /// The verdict in one sentence, with its numbers.
    pub message: String,
    /// When the check ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::date_time")]
    pub time: Option<Time>,
}

// A check's numbers are finite (Prometheus's NaN and infinities are errors before a record).
impl Eq for CheckStatus {}

/// A status condition. Flagger writes one type, `Promoted`, with `reason` set to the phase.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::date_time")]
    pub last_update_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::date_time")]
    pub last_transition_time: Option<Time>,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The counts of a comparison with the primary (serin): one interval's, or totals: requests and bad events on each side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub canary_requests: f64,
    pub canary_bad: f64,
    pub primary_requests: f64,
    pub primary_bad: f64,
}

/// The evidence gathered so far: one log likelihood ratio per grid alternative (at dispersion
/// 1), the largest evidence a look has seen, and every counted interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// `ℓj` for each alternative of the grid of alternatives (`analysis::sequential::GRID`), from the raw counts.
    pub log_ratios: Vec<f64>,
    /// The largest `ln E` a look has seen once verdicts were allowed (the anytime p-value is
    /// `exp(−max)`).
    pub max_log_evidence: f64,
    /// The intervals counted.
    pub intervals: Vec<Scrape>,
    /// Raw totals over the counted intervals.
    pub totals: Counts,
    /// Intervals skipped because one side served no request.
    pub skipped: u32,
}

/// One counted interval: the canary's share of the requests and the requests and bad events
/// of each side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Scrape {
    /// The canary's share of the requests (`q`).
    pub q: f64,
    /// Canary requests and bad events (`m`, `a`).
    pub m: f64,
    pub a: f64,
    /// Primary requests and bad events (`k`, `b`).
    pub k: f64,
    pub b: f64,
}

/// The windows of a MetricTemplate compared with the primary: how many had a value on both
/// sides, in how many the canary was worse, the last values, and the largest evidence seen.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Paired {
    #[schemars(schema_with = "schema::number")]
    pub windows: u32,
    #[schemars(schema_with = "schema::number")]
    pub worse: u32,
    /// Windows in which a side had no value.
    #[schemars(schema_with = "schema::number")]
    pub skipped: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<f64>,
    /// The largest `ln E` seen.
    pub max_log_evidence: f64,
}

/// serin: a metric compared with the primary (`metrics[].compare`) in the current revision's
/// analysis: the test's state and what its last look said.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricComparisonStatus {
    /// The revision (`lastAppliedSpec`) the evidence is about.
    pub revision: String,
    /// Unix time in seconds up to which the windows are counted.
    #[schemars(schema_with = "schema::number")]
    pub counted_until: i64,
    /// Unix time in seconds since the check holds for lack of data. Written as `null` when it
    /// does not hold, so that the status's merge patch removes it.
    #[serde(default)]
    #[schemars(schema_with = "schema::number")]
    pub held_since: Option<i64>,
    pub evidence: Evidence,
    /// A MetricTemplate's comparison: the sign test on paired windows (`analysis::paired`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paired: Option<Paired>,
    /// The last look, in one sentence with its numbers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The last look's verdict: `pass`, `worse`, `hold` or `no data`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verdict: String,
}

// The comparison's numbers are finite: counts are checked before they are added.
impl Eq for MetricComparisonStatus {}
