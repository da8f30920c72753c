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
}

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
