//! The `CanaryAction` resource (`canaryactions.serin.dev/v1alpha1`): one person's request to
//! promote, abort, retry, pause or resume one revision of a Canary (`kubectl serin promote ...`).
//! Never part of the Canary's spec, so a GitOps sync of the Canary can neither undo nor repeat
//! it; serin answers each request once in its status. No I/O.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::schema::{self, string_enum};

/// The actions, as `spec.action` spells them.
pub const ACTIONS: &[&str] = &["promote", "abort", "retry", "pause", "resume"];

string_enum!(action_enum, ACTIONS);
string_enum!(result_enum, ["Done", "Ignored"]);

/// A request to act on one revision of a Canary.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "serin.dev",
    version = "v1alpha1",
    kind = "CanaryAction",
    namespaced,
    status = "CanaryActionStatus",
    doc = "CanaryAction asks serin to promote, abort, retry, pause or resume one revision of a Canary.",
    printcolumn = r#"{"name":"Canary","type":"string","jsonPath":".spec.canary"}"#,
    printcolumn = r#"{"name":"Action","type":"string","jsonPath":".spec.action"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".spec.revision"}"#,
    printcolumn = r#"{"name":"By","type":"string","jsonPath":".spec.requestedBy"}"#,
    printcolumn = r#"{"name":"Result","type":"string","jsonPath":".status.result"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CanaryActionSpec {
    /// The Canary's name, in the action's namespace.
    pub canary: String,
    /// `promote`, `abort`, `retry`, `pause` or `resume`.
    #[schemars(schema_with = "action_enum")]
    pub action: String,
    /// `promote` only: skip the analysis too (promote without checking the metrics).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full: bool,
    /// The revision the action applies to: the Canary's `status.lastAppliedSpec` when it was
    /// asked. An action for a revision that is no longer current is ignored.
    pub revision: String,
    /// Who asked (the user name of the request that created the action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

/// serin's answer, written once.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryActionStatus {
    /// `Done` or `Ignored`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "result_enum")]
    pub result: Option<String>,
    /// What serin did, or why it did nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When serin answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::date_time")]
    pub handled_at: Option<String>,
}

impl CanaryAction {
    /// Who asked, for messages.
    pub fn requester(&self) -> &str {
        match self.spec.requested_by.as_deref() {
            Some(by) if !by.is_empty() => by,
            _ => "an unnamed user",
        }
    }
    /// Whether serin answered it.
    pub fn handled(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.result.is_some())
    }
}
