//! The `Canary` resource (`canaries.flagger.app/v1beta1`): spec and status with every field of
//! Flagger's CRD, and the defaults Flagger derives from them (service names, interval, threshold,
//! max weight, progress deadline, strategy). No I/O.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::apimachinery::pkg::{apis::meta::v1::Time, util::intstr::IntOrString};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::{
    istio::{CorsPolicy, Headers, HttpMatchRequest, HttpRetry, HttpRewrite, StringMatch, TrafficPolicy},
    schema::{self, string_enum},
};

mod analysis;
mod service;
mod status;

pub use analysis::*;
pub use service::*;
pub use status::*;

/// Builtin metric: the share of non-5xx requests to the canary, in percent.
pub const METRIC_REQUEST_SUCCESS_RATE: &str = "request-success-rate";
/// Builtin metric: the P99 request duration of the canary, in milliseconds.
pub const METRIC_REQUEST_DURATION: &str = "request-duration";
/// Default analysis interval when none (or an unparsable one) is given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// The shortest analysis interval; shorter ones are clamped to it.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// Default `progressDeadlineSeconds`.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;
/// Default `maxWeight`.
pub const DEFAULT_MAX_WEIGHT: i32 = 100;
/// Default session affinity cookie `Max-Age`.
pub const DEFAULT_COOKIE_MAX_AGE: i32 = 86400;
/// Default webhook timeout.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default interval of builtin metrics.
pub const DEFAULT_METRIC_INTERVAL: &str = "1m";
/// The condition type Flagger writes.
pub const CONDITION_PROMOTED: &str = "Promoted";

/// Every mesh or ingress provider Flagger's CRD accepts in `spec.provider`.
pub const PROVIDERS: &[&str] = &[
    "apisix",
    "appmesh",
    "appmesh:v1beta2",
    "contour",
    "gatewayapi:v1",
    "gatewayapi:v1beta1",
    "gloo",
    "istio",
    "knative",
    "kubernetes",
    "kuma",
    "linkerd",
    "nginx",
    "osm",
    "skipper",
    "smi:v1alpha1",
    "smi:v1alpha2",
    "smi:v1alpha3",
    "traefik",
];

string_enum!(provider_enum, PROVIDERS);
string_enum!(target_kind_enum, ["DaemonSet", "Deployment", "Service"]);
string_enum!(autoscaler_kind_enum, ["HorizontalPodAutoscaler", "ScaledObject"]);
string_enum!(ingress_kind_enum, ["Ingress"]);
string_enum!(route_kind_enum, ["ApisixRoute"]);
string_enum!(upstream_kind_enum, ["Upstream"]);
string_enum!(
    traffic_distribution_enum,
    ["PreferClose", "PreferSameZone", "PreferSameNode"]
);
string_enum!(severity_enum, ["", "info", "warn", "error"]);
string_enum!(
    webhook_type_enum,
    [
        "",
        "confirm-rollout",
        "pre-rollout",
        "rollout",
        "confirm-promotion",
        "post-rollout",
        "event",
        "rollback",
        "confirm-traffic-increase"
    ]
);
string_enum!(same_site_enum, ["Strict", "Lax", "None"]);

/// A Canary: progressive delivery of a target workload.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "flagger.app",
    version = "v1beta1",
    kind = "Canary",
    namespaced,
    status = "CanaryStatus",
    category = "all",
    doc = "Canary is the Schema for the Canary API.",
    annotation("helm.sh/resource-policy", "keep"),
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Weight","type":"string","jsonPath":".status.canaryWeight"}"#,
    printcolumn = r#"{"name":"Suspended","type":"boolean","jsonPath":".spec.suspend","priority":1}"#,
    printcolumn = r#"{"name":"FailedChecks","type":"string","jsonPath":".status.failedChecks","priority":1}"#,
    printcolumn = r#"{"name":"Interval","type":"string","jsonPath":".spec.analysis.interval","priority":1}"#,
    printcolumn = r#"{"name":"Mirror","type":"boolean","jsonPath":".spec.analysis.mirror","priority":1}"#,
    printcolumn = r#"{"name":"StepWeight","type":"string","jsonPath":".spec.analysis.stepWeight","priority":1}"#,
    printcolumn = r#"{"name":"StepWeights","type":"string","jsonPath":".spec.analysis.stepWeights","priority":1}"#,
    printcolumn = r#"{"name":"MaxWeight","type":"string","jsonPath":".spec.analysis.maxWeight","priority":1}"#,
    printcolumn = r#"{"name":"LastTransitionTime","type":"string","jsonPath":".status.lastTransitionTime"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("required" = ["targetRef", "analysis"]))]
pub struct CanarySpec {
    /// Traffic management provider; overrides `--mesh-provider`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "provider_enum")]
    pub provider: Option<String>,
    /// Prometheus URL for builtin metrics and inline queries; overrides `--metrics-server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_server: Option<String>,
    /// Seconds the canary may take to make progress before it is rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::number")]
    pub progress_deadline_seconds: Option<i32>,
    /// The workload to canary.
    pub target_ref: TargetRef,
    /// The workload's autoscaler, copied for the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler_ref: Option<AutoscalerRef>,
    /// Ingress reference (nginx provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_ref: Option<IngressRef>,
    /// ApisixRoute reference (apisix provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_ref: Option<RouteRef>,
    /// Upstream reference (gloo provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ref: Option<UpstreamRef>,
    /// The Services and routing serin generates.
    #[serde(default)]
    pub service: CanaryService,
    /// Promote without analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_analysis: Option<bool>,
    /// Restore the target and routing when the Canary is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_on_deletion: Option<bool>,
    /// Pause all work on this Canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// How a new revision is analysed (required by the CRD; a Canary read without one skips
    /// analysis, as Flagger does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<CanaryAnalysis>,
}

/// Reference to the target workload.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    pub api_version: String,
    #[schemars(schema_with = "target_kind_enum")]
    pub kind: String,
    pub name: String,
}

/// Reference to the target's autoscaler.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerRef {
    pub api_version: String,
    #[schemars(schema_with = "autoscaler_kind_enum")]
    pub kind: String,
    pub name: String,
    /// KEDA queries for the primary ScaledObject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_scaler_queries: Option<BTreeMap<String, String>>,
    /// Replica bounds for the primary's autoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_scaler_replicas: Option<ScalerReplicas>,
}

/// Replica bounds for the primary's autoscaler.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalerReplicas {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 1))]
    pub min_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 1))]
    pub max_replicas: Option<i32>,
}

/// Reference to an Ingress (nginx provider).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressRef {
    pub api_version: String,
    #[schemars(schema_with = "ingress_kind_enum")]
    pub kind: String,
    pub name: String,
}

/// Reference to an ApisixRoute (apisix provider).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteRef {
    pub api_version: String,
    #[schemars(schema_with = "route_kind_enum")]
    pub kind: String,
    pub name: String,
}

/// Reference to a Gloo Upstream (gloo provider).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamRef {
    pub api_version: String,
    #[schemars(schema_with = "upstream_kind_enum")]
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The traffic strategy a Canary's analysis follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeploymentStrategy {
    /// Weighted traffic shifting.
    Canary,
    /// Header/cookie matched traffic for a number of iterations.
    AbTesting,
    /// Analysis without traffic, then a switch.
    BlueGreen,
}

impl DeploymentStrategy {
    /// The name Flagger uses (`canary`, `ab-testing`, `blue-green`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Canary => "canary",
            Self::AbTesting => "ab-testing",
            Self::BlueGreen => "blue-green",
        }
    }
}

/// The apex, primary and canary Service names of a Canary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceNames {
    pub apex: String,
    pub primary: String,
    pub canary: String,
}

/// Parses a Flagger duration (Go's `time.ParseDuration`: `30s`, `1m30s`, `1.5m`, `500ms`); an
/// error says what is wrong, including a value too large for Go.
pub fn parse_duration(text: &str) -> Result<Duration, serin_runtime::duration::DurationError> {
    serin_runtime::duration::parse(text)
}

impl Canary {
    /// Apex, primary and canary Service names (`GetServiceNames`).
    pub fn service_names(&self) -> ServiceNames {
        let apex = self
            .spec
            .service
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| self.spec.target_ref.name.clone());
        ServiceNames {
            primary: format!("{apex}-primary"),
            canary: format!("{apex}-canary"),
            apex,
        }
    }
}

impl CanarySpec {
    fn analysis(&self) -> Option<&CanaryAnalysis> {
        self.analysis.as_ref()
    }

    /// The analysis interval: 60 s when unset or unparsable, at least 10 s.
    pub fn analysis_interval(&self) -> Duration {
        self.analysis()
            .and_then(|a| a.interval.as_deref())
            .and_then(|text| parse_duration(text).ok())
            .map_or(DEFAULT_INTERVAL, |d| d.max(MIN_INTERVAL))
    }

    /// Analysis rounds of A/B testing and Blue/Green (`analysis.iterations`, 0 when unset).
    pub fn iterations(&self) -> i32 {
        self.analysis().and_then(|a| a.iterations).unwrap_or(0)
    }

    /// Failed checks tolerated before rollback; 0 or unset means 1.
    pub fn analysis_threshold(&self) -> i32 {
        match self.analysis().and_then(|a| a.threshold) {
            Some(t) if t > 0 => t,
            _ => 1,
        }
    }

    /// The highest canary weight, as Flagger's `GetMaxWeight`: the last of `stepWeights` (capped
    /// at 100) when set, else `maxWeight`, else 100.
    pub fn max_weight(&self) -> i32 {
        let analysis = self.analysis();
        if let Some(last) = analysis
            .and_then(|a| a.step_weights.as_ref())
            .and_then(|s| s.last())
        {
            return (*last).min(DEFAULT_MAX_WEIGHT);
        }
        if let Some(w) = analysis.and_then(|a| a.max_weight).filter(|w| *w > 0) {
            return w;
        }
        DEFAULT_MAX_WEIGHT
    }

    /// Seconds the canary may take to make progress (default 600).
    pub fn progress_deadline_seconds(&self) -> i32 {
        self.progress_deadline_seconds
            .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS)
    }

    /// The strategy: A/B testing with match and iterations, Blue/Green with iterations only,
    /// canary otherwise.
    pub fn deployment_strategy(&self) -> DeploymentStrategy {
        let Some(analysis) = self.analysis() else {
            return DeploymentStrategy::Canary;
        };
        let iterations = analysis.iterations.unwrap_or(0);
        let has_match = analysis.match_.as_ref().is_some_and(|m| !m.is_empty());
        if has_match && iterations > 0 {
            DeploymentStrategy::AbTesting
        } else if iterations > 0 {
            DeploymentStrategy::BlueGreen
        } else {
            DeploymentStrategy::Canary
        }
    }

    /// Analysis is skipped when there is none or `skipAnalysis` is set.
    pub fn skip_analysis(&self) -> bool {
        self.analysis.is_none() || self.skip_analysis.unwrap_or(false)
    }

    /// `suspend` is set.
    pub fn is_suspended(&self) -> bool {
        self.suspend.unwrap_or(false)
    }

    /// `revertOnDeletion` is set.
    pub fn reverts_on_deletion(&self) -> bool {
        self.revert_on_deletion.unwrap_or(false)
    }

    /// Percent of the primary's updated replicas that must be available (default 100).
    pub fn primary_ready_threshold(&self) -> i32 {
        self.analysis()
            .and_then(|a| a.primary_ready_threshold)
            .unwrap_or(100)
    }

    /// Percent of the canary's updated replicas that must be available (default 100).
    pub fn canary_ready_threshold(&self) -> i32 {
        self.analysis()
            .and_then(|a| a.canary_ready_threshold)
            .unwrap_or(100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(analysis: Option<CanaryAnalysis>) -> Canary {
        Canary::new(
            "podinfo",
            CanarySpec {
                target_ref: TargetRef {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: "podinfo".into(),
                },
                analysis,
                ..Default::default()
            },
        )
    }

    fn analysis() -> CanaryAnalysis {
        CanaryAnalysis::default()
    }

    #[test]
    fn service_names_default_to_target_name() {
        let mut c = canary(None);
        assert_eq!(
            c.service_names(),
            ServiceNames {
                apex: "podinfo".into(),
                primary: "podinfo-primary".into(),
                canary: "podinfo-canary".into()
            }
        );
        c.spec.service.name = Some("frontend".into());
        assert_eq!(c.service_names().apex, "frontend");
        assert_eq!(c.service_names().primary, "frontend-primary");
        assert_eq!(c.service_names().canary, "frontend-canary");
        c.spec.service.name = Some(String::new());
        assert_eq!(c.service_names().apex, "podinfo");
    }

    #[test]
    fn interval_defaults_and_clamps() {
        let cases: &[(Option<&str>, u64)] = &[
            (None, 60),
            (Some("1m"), 60),
            (Some("30s"), 30),
            (Some("5s"), 10),
            (Some("10s"), 10),
            (Some("2m"), 120),
            (Some("1m30s"), 90),
            (Some("nonsense"), 60),
            (Some(""), 60),
        ];
        for (interval, want) in cases {
            let c = canary(Some(CanaryAnalysis {
                interval: interval.map(str::to_owned),
                ..analysis()
            }));
            assert_eq!(
                c.spec.analysis_interval(),
                Duration::from_secs(*want),
                "interval {interval:?}"
            );
        }
        assert_eq!(canary(None).spec.analysis_interval(), DEFAULT_INTERVAL);
    }

    #[test]
    fn threshold_zero_means_one() {
        for (threshold, want) in [(None, 1), (Some(0), 1), (Some(-3), 1), (Some(1), 1), (Some(5), 5)] {
            let c = canary(Some(CanaryAnalysis {
                threshold,
                ..analysis()
            }));
            assert_eq!(c.spec.analysis_threshold(), want, "threshold {threshold:?}");
        }
    }

    #[test]
    fn max_weight_defaults() {
        type Case = (Option<i32>, Option<Vec<i32>>, i32);
        let cases: &[Case] = &[
            (None, None, 100),
            (Some(50), None, 50),
            (Some(0), None, 100),
            (None, Some(vec![1, 5, 30]), 30),
            (None, Some(vec![10, 120]), 100),
            (Some(40), Some(vec![10, 20]), 20),
            (Some(100), Some(vec![10, 20]), 20),
            (None, Some(vec![]), 100),
        ];
        for (max_weight, step_weights, want) in cases {
            let c = canary(Some(CanaryAnalysis {
                max_weight: *max_weight,
                step_weights: step_weights.clone(),
                ..analysis()
            }));
            assert_eq!(
                c.spec.max_weight(),
                *want,
                "maxWeight {max_weight:?} stepWeights {step_weights:?}"
            );
        }
    }

    #[test]
    fn progress_deadline_defaults_to_600() {
        let mut c = canary(None);
        assert_eq!(c.spec.progress_deadline_seconds(), 600);
        c.spec.progress_deadline_seconds = Some(60);
        assert_eq!(c.spec.progress_deadline_seconds(), 60);
    }

    #[test]
    fn strategy_from_iterations_and_match() {
        let with_match = Some(vec![AnalysisMatch {
            headers: Some(BTreeMap::from([(
                "x-canary".to_owned(),
                StringMatch {
                    exact: Some("insider".into()),
                    ..Default::default()
                },
            )])),
            ..Default::default()
        }]);
        let cases = [
            (None, None, DeploymentStrategy::Canary),
            (Some(0), with_match.clone(), DeploymentStrategy::Canary),
            (Some(5), None, DeploymentStrategy::BlueGreen),
            (Some(5), Some(vec![]), DeploymentStrategy::BlueGreen),
            (Some(5), with_match.clone(), DeploymentStrategy::AbTesting),
            (None, with_match, DeploymentStrategy::Canary),
        ];
        for (iterations, match_, want) in cases {
            let c = canary(Some(CanaryAnalysis {
                iterations,
                match_: match_.clone(),
                ..analysis()
            }));
            assert_eq!(
                c.spec.deployment_strategy(),
                want,
                "iterations {iterations:?} match {match_:?}"
            );
        }
        assert_eq!(
            canary(None).spec.deployment_strategy(),
            DeploymentStrategy::Canary
        );
        assert_eq!(DeploymentStrategy::AbTesting.as_str(), "ab-testing");
        assert_eq!(DeploymentStrategy::BlueGreen.as_str(), "blue-green");
    }

    #[test]
    fn skip_analysis_without_analysis() {
        let mut c = canary(None);
        assert!(c.spec.skip_analysis());
        c.spec.analysis = Some(analysis());
        assert!(!c.spec.skip_analysis());
        c.spec.skip_analysis = Some(true);
        assert!(c.spec.skip_analysis());
    }

    #[test]
    fn promoted_condition_texts() {
        let cases = [
            (
                CanaryPhase::Initializing,
                "Unknown",
                "New Deployment detected, starting initialization.",
            ),
            (
                CanaryPhase::Initialized,
                "True",
                "Deployment initialization completed.",
            ),
            (CanaryPhase::Waiting, "Unknown", "Waiting for approval."),
            (CanaryPhase::WaitingPromotion, "Unknown", "Waiting for approval."),
            (
                CanaryPhase::Progressing,
                "Unknown",
                "New revision detected, progressing canary analysis.",
            ),
            (
                CanaryPhase::Promoting,
                "Unknown",
                "Canary analysis completed, starting primary rolling update.",
            ),
            (
                CanaryPhase::Finalising,
                "Unknown",
                "Canary analysis completed, routing all traffic to primary.",
            ),
            (
                CanaryPhase::Succeeded,
                "True",
                "Canary analysis completed successfully, promotion finished.",
            ),
            (
                CanaryPhase::Failed,
                "False",
                "Canary analysis failed, Deployment scaled to zero.",
            ),
        ];
        for (phase, status, message) in cases {
            assert_eq!(
                phase.promoted_condition("Deployment"),
                Some((status, message.to_owned())),
                "{phase}"
            );
        }
        assert_eq!(CanaryPhase::Terminating.promoted_condition("Deployment"), None);
    }

    #[test]
    fn phase_names_round_trip() {
        for phase in CanaryPhase::ALL {
            let json = serde_json::to_value(phase).expect("serializes");
            assert_eq!(json, serde_json::Value::String(phase.as_str().to_owned()));
            let back: CanaryPhase = serde_json::from_value(json).expect("parses");
            assert_eq!(back, phase);
        }
    }

    #[test]
    fn status_always_writes_counters() {
        let json = serde_json::to_value(CanaryStatus::default()).expect("serializes");
        for key in ["phase", "failedChecks", "canaryWeight", "iterations"] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
        assert_eq!(json["phase"], "");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "m", "1", "1x", "-1m", "1m x", "99999999999999999999m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_interval_too_large_for_go_falls_back_to_the_default() {
        let mut c: Canary = serde_yaml::from_str(
            "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: a}\nspec:\n  targetRef: {apiVersion: apps/v1, kind: Deployment, name: a}\n  service: {port: 80}\n  analysis: {interval: 99999999999999999999m}\n",
        )
        .expect("canary");
        assert_eq!(c.spec.analysis_interval(), DEFAULT_INTERVAL);
        c.spec.analysis.as_mut().expect("analysis").interval = Some("2562047h".into());
        assert_eq!(c.spec.analysis_interval(), Duration::from_secs(2_562_047 * 3600));
    }

    #[test]
    fn webhook_defaults() {
        let hook = CanaryWebhook {
            name: "a".into(),
            url: "http://x/".into(),
            ..Default::default()
        };
        assert_eq!(hook.hook_type(), "rollout");
        assert_eq!(hook.timeout(), Duration::from_secs(10));
        let hook = CanaryWebhook {
            type_: Some("pre-rollout".into()),
            timeout: Some("30s".into()),
            ..hook
        };
        assert_eq!(hook.hook_type(), "pre-rollout");
        assert_eq!(hook.timeout(), Duration::from_secs(30));
        let hook = CanaryWebhook {
            timeout: Some("30 s".into()),
            ..hook
        };
        assert_eq!(
            hook.timeout(),
            Duration::from_secs(10),
            "an unparsable timeout is the default"
        );
    }

    #[test]
    fn cookies_as_flagger_builds_them() {
        let mut affinity = SessionAffinity {
            cookie_name: "flagger-cookie".into(),
            ..Default::default()
        };
        assert_eq!(affinity.max_age(), 86400);
        assert_eq!(
            affinity.build_cookie("flagger-cookie=abc", 86400),
            "flagger-cookie=abc; Max-Age=86400"
        );
        affinity.domain = Some("example.com".into());
        affinity.http_only = Some(true);
        affinity.partitioned = Some(true);
        affinity.path = Some("/".into());
        affinity.same_site = Some("Strict".into());
        affinity.secure = Some(true);
        affinity.max_age = Some(60);
        assert_eq!(affinity.max_age(), 60);
        assert_eq!(
            affinity.build_cookie("c=v", -1),
            "c=v; Max-Age=-1; Domain=example.com; HttpOnly; Partitioned; Path=/; SameSite=Strict; Secure"
        );
    }
}
