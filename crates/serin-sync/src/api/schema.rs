//! Schema helpers for fields whose OpenAPI shape follows Flux's CRDs. No I/O.

use schemars::{Schema, SchemaGenerator, json_schema};

/// Flux's duration pattern (`1m`, `30s`, `1h30m`, `500ms`).
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// A required duration string.
pub fn duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": DURATION_PATTERN })
}

/// An optional duration string.
pub fn optional_duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": DURATION_PATTERN, "nullable": true })
}

/// A Git URL: Flux's schemes plus `file://` for local repositories.
pub fn git_url(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": "^(http|https|ssh|file)://.*$" })
}

/// Any object, kept as it was written.
pub fn any_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true, "nullable": true })
}

/// Any array, kept as it was written.
pub fn any_array(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "array", "items": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }, "nullable": true })
}

/// Flux's source kinds.
pub fn source_kind(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "enum": ["OCIRepository", "GitRepository", "Bucket", "ExternalArtifact"] })
}

/// `ConfigMap` or `Secret`.
pub fn substitute_kind(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "enum": ["Secret", "ConfigMap"] })
}

/// Flux's deletion policies.
pub fn deletion_policy(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "enum": ["MirrorPrune", "Delete", "WaitForTermination", "Orphan"], "nullable": true })
}

/// A Helm repository URL: `http(s)://` (an index) or `oci://`.
pub fn helm_url(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": "^(http|https|oci)://.*$" })
}

/// `default` or `oci`.
pub fn helm_repository_type(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "enum": ["default", "oci"], "nullable": true })
}

/// A HelmChart's `reconcileStrategy`.
pub fn reconcile_strategy(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "enum": ["ChartVersion", "Revision"], "nullable": true })
}

/// The sources a HelmChart is made from.
pub fn helm_chart_source_kind(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "enum": ["HelmRepository", "GitRepository", "Bucket"] })
}

/// A HelmRelease's drift detection mode.
pub fn drift_mode(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "enum": ["enabled", "warn", "disabled"], "nullable": true })
}

/// What a failed upgrade is remediated with.
pub fn remediation_strategy(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "enum": ["rollback", "uninstall"], "nullable": true })
}

/// What Helm does with a chart's `crds/`.
pub fn crds_policy(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "enum": ["Skip", "Create", "CreateReplace"], "nullable": true })
}

/// A notification Provider's type (every type Flux accepts; serin-sync sends to the ones
/// docs/sync.md lists).
pub fn provider_type(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "enum": [
        "slack", "discord", "msteams", "rocket", "generic", "generic-hmac", "github", "gitlab",
        "gitea", "giteapullrequestcomment", "bitbucketserver", "bitbucket", "azuredevops",
        "googlechat", "googlepubsub", "webex", "sentry", "azureeventhub", "telegram", "lark",
        "matrix", "opsgenie", "alertmanager", "grafana", "githubdispatch",
        "githubpullrequestcomment", "gitlabmergerequestcomment", "pagerduty", "datadog", "nats",
        "zulip", "otel", "zoom", "incident.io"
    ] })
}

/// A Receiver's type (every type Flux accepts).
pub fn receiver_type(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "enum": [
        "generic", "generic-hmac", "generic-oidc", "github", "gitlab", "bitbucket", "harbor",
        "dockerhub", "quay", "gcr", "nexus", "acr", "cdevents"
    ] })
}

/// An Alert's severity.
pub fn event_severity(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "enum": ["info", "error"], "nullable": true })
}
