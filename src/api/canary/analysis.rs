//! `spec.analysis`: schedule, steps, metrics, webhooks, alerts and session affinity. No I/O.

use super::*;

/// How a new revision is analysed: schedule, steps, checks, hooks and alerts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("oneOf" = [
    {"required": ["interval", "threshold", "iterations"]},
    {"required": ["interval", "threshold", "stepWeight"]},
    {"required": ["interval", "threshold", "stepWeights"]},
]))]
pub struct CanaryAnalysis {
    /// Schedule interval, such as `1m` or `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::duration")]
    pub interval: Option<String>,
    /// Number of checks for A/B testing and Blue/Green.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::number")]
    pub iterations: Option<i32>,
    /// Failed checks tolerated before rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::number")]
    pub threshold: Option<i32>,
    /// Highest canary weight before promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::number")]
    pub max_weight: Option<i32>,
    /// Weight added at each step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::number")]
    pub step_weight: Option<i32>,
    /// Explicit weight steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::number_array")]
    pub step_weights: Option<Vec<i32>>,
    /// Weight moved back to the primary at each promotion step (0: all at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::number")]
    pub step_weight_promotion: Option<i32>,
    /// Mirror traffic to the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<bool>,
    /// Percentage of traffic mirrored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::number")]
    pub mirror_weight: Option<i32>,
    /// Percent of the primary's updated replicas that must be available (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::number")]
    pub primary_ready_threshold: Option<i32>,
    /// Percent of the canary's updated replicas that must be available (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::number")]
    pub canary_ready_threshold: Option<i32>,
    /// A/B testing match conditions.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<Vec<AnalysisMatch>>,
    /// Checks run at every interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Vec<CanaryMetric>>,
    /// Where notifications go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Vec<CanaryAlert>>,
    /// Hooks called during the analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<Vec<CanaryWebhook>>,
    /// Cookie-based session affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,
}

/// An A/B testing match condition (Flagger accepts headers, query parameters and source labels).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, StringMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_params: Option<BTreeMap<String, StringMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_labels: Option<BTreeMap<String, String>>,
}

/// A metric check.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryMetric {
    pub name: String,
    /// Query window, such as `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::duration")]
    pub interval: Option<String>,
    /// Deprecated single threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Accepted range of the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_range: Option<ThresholdRange>,
    /// Deprecated inline PromQL query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The MetricTemplate to render.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<CrossNamespaceRef>,
    /// Values for `{{ variables.* }}` in the template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_variables: Option<BTreeMap<String, String>>,
    /// serin: judge the canary against the primary over the same traffic with an anytime-valid
    /// sequential test (builtin metrics; docs/analysis.md). With a `thresholdRange` too, both
    /// apply. Not in Flagger's schema: Flagger ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<MetricComparison>,
}

/// How a metric compares the canary with the primary (a serin extension).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricComparison {
    /// The probability of rolling back a canary no worse than the primary, over the whole
    /// analysis however often it is looked at (default 0.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// How many times the primary's error rate (or share of slow requests) the canary may
    /// reach before it counts as worse (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// Canary requests served before a verdict counts (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::number")]
    pub min_requests: Option<i64>,
    /// What a check without enough data does: `hold` (default: wait, within
    /// `progressDeadlineSeconds`), `fail` or `pass`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "no_data_enum")]
    pub no_data: Option<String>,
    /// `request-duration`: requests slower than this count as bad (a bucket bound of
    /// `istio_request_duration_milliseconds`, such as `250ms`); required for that metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::duration")]
    pub slower_than: Option<String>,
    /// A MetricTemplate: which of its values are worse, `higher` (default: error rates,
    /// latencies) or `lower` (throughput, a success rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "worse_enum")]
    pub worse: Option<String>,
}

/// The no-data policies.
pub const NO_DATA_POLICIES: [&str; 3] = ["hold", "fail", "pass"];

string_enum!(no_data_enum, NO_DATA_POLICIES);

/// Which values of a compared MetricTemplate are worse.
pub const WORSE_VALUES: [&str; 2] = ["higher", "lower"];

string_enum!(worse_enum, WORSE_VALUES);

/// Accepted range of a metric value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThresholdRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// A reference by name, in the Canary's namespace unless `namespace` is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CrossNamespaceRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// An alert routed to an AlertProvider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryAlert {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "severity_enum")]
    pub severity: Option<String>,
    pub provider_ref: CrossNamespaceRef,
}

/// A webhook called during the analysis.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryWebhook {
    pub name: String,
    /// When it is called; empty means `rollout`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "webhook_type_enum")]
    pub type_: Option<String>,
    /// Do not send alerts for this webhook's failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mute_alert: Option<bool>,
    #[schemars(schema_with = "schema::url")]
    pub url: String,
    /// Request timeout (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::duration")]
    pub timeout: Option<String>,
    /// Retries on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::number")]
    pub retries: Option<i32>,
    /// Skip TLS verification.
    #[serde(default, rename = "disableTLS", skip_serializing_if = "Option::is_none")]
    pub disable_tls: Option<bool>,
    /// Sent in the payload's `metadata`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Cookie-based session affinity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionAffinity {
    pub cookie_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_cookie_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "cookie_max_age")]
    pub max_age: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitioned: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "same_site_enum")]
    pub same_site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
}

fn cookie_max_age(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "number", "default": DEFAULT_COOKIE_MAX_AGE })
}

impl CanaryWebhook {
    /// The webhook type; empty means `rollout`.
    pub fn hook_type(&self) -> &str {
        match self.type_.as_deref() {
            None | Some("") => "rollout",
            Some(t) => t,
        }
    }

    /// The request timeout (default 10 s).
    pub fn timeout(&self) -> Duration {
        self.timeout
            .as_deref()
            .and_then(|text| parse_duration(text).ok())
            .unwrap_or(DEFAULT_WEBHOOK_TIMEOUT)
    }
}

impl SessionAffinity {
    /// Cookie `Max-Age` in seconds (default 86400).
    pub fn max_age(&self) -> i32 {
        self.max_age.filter(|a| *a > 0).unwrap_or(DEFAULT_COOKIE_MAX_AGE)
    }

    /// A `Set-Cookie` value as Flagger builds it:
    /// `<name=value>; Max-Age=<n>[; Domain=d][; HttpOnly][; Partitioned][; Path=p][; SameSite=s][; Secure]`.
    pub fn build_cookie(&self, name_value: &str, max_age: i32) -> String {
        let mut cookie = format!("{name_value}; Max-Age={max_age}");
        if let Some(domain) = self.domain.as_deref().filter(|d| !d.is_empty()) {
            cookie.push_str(&format!("; Domain={domain}"));
        }
        if self.http_only.unwrap_or(false) {
            cookie.push_str("; HttpOnly");
        }
        if self.partitioned.unwrap_or(false) {
            cookie.push_str("; Partitioned");
        }
        if let Some(path) = self.path.as_deref().filter(|p| !p.is_empty()) {
            cookie.push_str(&format!("; Path={path}"));
        }
        if let Some(same_site) = self.same_site.as_deref().filter(|s| !s.is_empty()) {
            cookie.push_str(&format!("; SameSite={same_site}"));
        }
        if self.secure.unwrap_or(false) {
            cookie.push_str("; Secure");
        }
        cookie
    }
}
