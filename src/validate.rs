//! Semantic validation of Flagger resources: the mistakes the CRD schema lets through and Flagger
//! only finds at run time (or never). Used by `serin lint` and by the controller before it acts on
//! a spec. Pure: specs in, findings out.

use std::fmt;

use crate::api::{
    AlertProviderSpec, CanarySpec, MetricTemplateSpec,
    canary::{
        CanaryAnalysis, CanaryMetric, DeploymentStrategy, METRIC_REQUEST_DURATION,
        METRIC_REQUEST_SUCCESS_RATE, MetricComparison, NO_DATA_POLICIES, PROVIDERS, WORSE_VALUES,
        parse_duration,
    },
};

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// serin will accept the object but something about it deserves attention.
    Warning,
    /// The object cannot work as written.
    Error,
}

/// One finding about one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// Field path, such as `spec.analysis.stepWeights`.
    pub path: String,
    pub message: String,
    /// An error `serin lint` reports, but that the controller runs the way Flagger does (a
    /// builtin metric without bounds, stepWeights that do not increase): stopping there would
    /// freeze a rollout Flagger would carry on.
    pub runs: bool,
}

impl Finding {
    /// An error that keeps the controller from acting on the object.
    pub fn blocks_run(&self) -> bool {
        self.severity == Severity::Error && !self.runs
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The mesh providers serin implements.
pub const IMPLEMENTED_PROVIDERS: &[&str] = &["istio"];
/// The target kinds serin implements.
pub const IMPLEMENTED_TARGET_KINDS: &[&str] = &["Deployment"];
/// The metric providers serin implements.
pub const IMPLEMENTED_METRIC_PROVIDERS: &[&str] = &["prometheus"];

#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Error, path.into(), message.into(), false);
    }
    /// An error for `serin lint` that the controller runs all the same, as Flagger does.
    fn lint_error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Error, path.into(), message.into(), true);
    }
    fn warning(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Warning, path.into(), message.into(), true);
    }
    fn push(&mut self, severity: Severity, path: String, message: String, runs: bool) {
        self.0.push(Finding {
            severity,
            path,
            message,
            runs,
        });
    }
}

fn check_duration(out: &mut Findings, path: &str, value: Option<&str>) {
    // Flagger (and serin) run an unparsable interval or timeout with its default.
    if let Some(Err(e)) = value.map(parse_duration) {
        out.lint_error(path, e.to_string());
    }
}

fn check_url(out: &mut Findings, path: &str, value: &str) {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()) => {}
        Ok(u) => out.error(
            path,
            format!("{value:?} is not an http(s) URL (scheme {:?})", u.scheme()),
        ),
        Err(err) => out.error(path, format!("{value:?} is not a URL: {err}")),
    }
}

/// Validates a Canary spec. `mesh_provider` is the controller's default (`--mesh-provider`).
pub fn canary(spec: &CanarySpec, mesh_provider: &str) -> Vec<Finding> {
    let mut out = Findings::default();
    let provider = spec.provider.as_deref().unwrap_or(mesh_provider);
    if !PROVIDERS.contains(&provider) {
        out.error(
            "spec.provider",
            format!(
                "unknown provider {provider:?}; Flagger's providers are: {}",
                PROVIDERS.join(", ")
            ),
        );
    } else if !IMPLEMENTED_PROVIDERS.contains(&provider) {
        out.warning(
            "spec.provider",
            format!(
                "provider {provider:?} is not implemented by serin (implemented: {})",
                IMPLEMENTED_PROVIDERS.join(", ")
            ),
        );
    }
    if !IMPLEMENTED_TARGET_KINDS.contains(&spec.target_ref.kind.as_str()) {
        out.warning(
            "spec.targetRef.kind",
            format!(
                "target kind {:?} is not implemented by serin (implemented: {})",
                spec.target_ref.kind,
                IMPLEMENTED_TARGET_KINDS.join(", ")
            ),
        );
    }
    if let Some(seconds) = spec.progress_deadline_seconds
        && seconds <= 0
    {
        out.error(
            "spec.progressDeadlineSeconds",
            format!("must be positive, got {seconds}"),
        );
    }
    if spec.service.port <= 0 || spec.service.port > 65535 {
        out.error(
            "spec.service.port",
            format!("must be a port number from 1 to 65535, got {}", spec.service.port),
        );
    }
    if spec.service.delegation.unwrap_or(false) {
        if spec.service.hosts.as_ref().is_some_and(|h| !h.is_empty()) {
            out.error(
                "spec.service.hosts",
                "must be empty when service.delegation is set (a delegate VirtualService has no hosts)",
            );
        }
        if spec.service.gateways.as_ref().is_some_and(|g| !g.is_empty()) {
            out.error(
                "spec.service.gateways",
                "must be empty when service.delegation is set (a delegate VirtualService has no gateways)",
            );
        }
    }
    if let Some(metrics_server) = &spec.metrics_server {
        check_url(&mut out, "spec.metricsServer", metrics_server);
    }
    match &spec.analysis {
        Some(analysis) => check_analysis(&mut out, spec, analysis),
        None => out.error("spec.analysis", "Required value"),
    }
    out.0
}

fn check_analysis(out: &mut Findings, spec: &CanarySpec, analysis: &CanaryAnalysis) {
    const P: &str = "spec.analysis";
    let iterations = analysis.iterations.is_some();
    let step_weight = analysis.step_weight.is_some();
    let step_weights = analysis.step_weights.is_some();
    let strategies = [iterations, step_weight, step_weights]
        .iter()
        .filter(|s| **s)
        .count();
    if strategies > 1 {
        let mut set = Vec::new();
        if iterations {
            set.push("iterations");
        }
        if step_weight {
            set.push("stepWeight");
        }
        if step_weights {
            set.push("stepWeights");
        }
        out.lint_error(
            P,
            format!(
                "sets {}; exactly one of iterations, stepWeight or stepWeights is allowed",
                set.join(" and ")
            ),
        );
    } else if strategies == 0 {
        out.error(
            P,
            "sets none of iterations, stepWeight or stepWeights; exactly one is required",
        );
    }
    if analysis.interval.is_none() {
        out.error(format!("{P}.interval"), "Required value");
    }
    if analysis.threshold.is_none() {
        out.error(format!("{P}.threshold"), "Required value");
    }
    check_duration(out, &format!("{P}.interval"), analysis.interval.as_deref());
    if let Some(threshold) = analysis.threshold
        && threshold < 0
    {
        out.error(
            format!("{P}.threshold"),
            format!("must not be negative, got {threshold}"),
        );
    }
    if let Some(n) = analysis.iterations
        && n <= 0
    {
        out.error(format!("{P}.iterations"), format!("must be positive, got {n}"));
    }
    if let Some(max) = analysis.max_weight
        && !(1..=100).contains(&max)
    {
        out.error(
            format!("{P}.maxWeight"),
            format!("must be from 1 to 100, got {max}"),
        );
    }
    if let Some(step) = analysis.step_weight {
        if !(1..=100).contains(&step) {
            out.error(
                format!("{P}.stepWeight"),
                format!("must be from 1 to 100, got {step}"),
            );
        } else if step > spec.max_weight() {
            out.warning(
                format!("{P}.stepWeight"),
                format!(
                    "{step} is above maxWeight {}: the first step goes straight to promotion",
                    spec.max_weight()
                ),
            );
        }
    }
    if let Some(steps) = &analysis.step_weights {
        if let (Some(max), Some(last)) = (analysis.max_weight, steps.last())
            && max != *last
        {
            out.warning(
                format!("{P}.maxWeight"),
                format!("ignored: with stepWeights the last entry ({last}) is the maximum weight"),
            );
        }
        if steps.is_empty() {
            out.error(format!("{P}.stepWeights"), "must list at least one weight");
        }
        for (i, w) in steps.iter().enumerate() {
            if !(1..=100).contains(w) {
                out.error(
                    format!("{P}.stepWeights[{i}]"),
                    format!("must be from 1 to 100, got {w}"),
                );
            }
        }
        if let Some(i) = steps.windows(2).position(|w| w[1] <= w[0]) {
            out.lint_error(
                format!("{P}.stepWeights"),
                format!(
                    "must be strictly increasing: {} at index {} follows {}",
                    steps[i + 1],
                    i + 1,
                    steps[i]
                ),
            );
        }
    }
    if let Some(promotion) = analysis.step_weight_promotion
        && !(0..=100).contains(&promotion)
    {
        out.error(
            format!("{P}.stepWeightPromotion"),
            format!("must be from 0 to 100, got {promotion}"),
        );
    }
    if let Some(mirror_weight) = analysis.mirror_weight
        && !(0..=100).contains(&mirror_weight)
    {
        out.error(
            format!("{P}.mirrorWeight"),
            format!("must be from 0 to 100, got {mirror_weight}"),
        );
    }
    for (name, value) in [
        ("primaryReadyThreshold", analysis.primary_ready_threshold),
        ("canaryReadyThreshold", analysis.canary_ready_threshold),
    ] {
        if let Some(v) = value
            && !(0..=100).contains(&v)
        {
            out.error(
                format!("{P}.{name}"),
                format!("must be a percentage from 0 to 100, got {v}"),
            );
        }
    }
    if analysis.match_.as_ref().is_some_and(|m| !m.is_empty())
        && spec.deployment_strategy() == DeploymentStrategy::Canary
    {
        out.warning(
            format!("{P}.match"),
            "match conditions are used only with iterations (A/B testing); with weights they are ignored",
        );
    }
    for (i, m) in analysis.match_.iter().flatten().enumerate() {
        for (kind, map) in [("headers", &m.headers), ("queryParams", &m.query_params)] {
            for (key, sm) in map.iter().flatten() {
                if sm.set_count() != 1 {
                    out.error(
                        format!("{P}.match[{i}].{kind}.{key}"),
                        "must set exactly one of exact, prefix, suffix or regex",
                    );
                }
                if let Some(re) = &sm.regex
                    && let Err(err) = regex::Regex::new(re)
                {
                    out.error(
                        format!("{P}.match[{i}].{kind}.{key}.regex"),
                        format!("invalid regex: {err}"),
                    );
                }
            }
        }
    }
    for (i, metric) in analysis.metrics.iter().flatten().enumerate() {
        let mp = format!("{P}.metrics[{i}]");
        check_duration(out, &format!("{mp}.interval"), metric.interval.as_deref());
        let builtin = matches!(
            metric.name.as_str(),
            METRIC_REQUEST_SUCCESS_RATE | METRIC_REQUEST_DURATION
        );
        let has_range = metric
            .threshold_range
            .as_ref()
            .is_some_and(|r| r.min.is_some() || r.max.is_some());
        if metric.template_ref.is_none() && metric.query.is_none() && !builtin {
            out.lint_error(
                &mp,
                format!(
                    "metric {:?} is not builtin ({METRIC_REQUEST_SUCCESS_RATE}, {METRIC_REQUEST_DURATION}) and has neither templateRef nor query",
                    metric.name
                ),
            );
        }
        if let Some(compare) = &metric.compare {
            check_comparison(out, &mp, metric, compare);
        }
        // A comparison with the primary judges a metric without a bound of its own.
        let bounded = has_range || metric.threshold.is_some() || metric.compare.is_some();
        if !bounded && builtin && metric.template_ref.is_none() {
            let runs_as = if metric.name == METRIC_REQUEST_SUCCESS_RATE {
                "the check passes whatever the rate"
            } else {
                "the check fails whenever the duration is above 0ms"
            };
            out.lint_error(
                format!("{mp}.thresholdRange"),
                format!(
                    "builtin metric {:?} needs a thresholdRange (without one nor threshold, {runs_as}, as in Flagger)",
                    metric.name
                ),
            );
        } else if !bounded {
            out.warning(
                format!("{mp}.thresholdRange"),
                "neither thresholdRange nor threshold: the check fails whenever the value is above 0 (Flagger's default threshold)",
            );
        } else if has_range && metric.threshold.is_some() {
            out.warning(
                format!("{mp}.threshold"),
                "ignored: thresholdRange is set and decides alone",
            );
        }
        if let Some(range) = &metric.threshold_range
            && let (Some(min), Some(max)) = (range.min, range.max)
            && min > max
        {
            out.lint_error(
                format!("{mp}.thresholdRange"),
                format!("min {min} is above max {max}: no value can pass"),
            );
        }
        if let Some(template) = &metric.template_ref
            && template.name.is_empty()
        {
            out.error(format!("{mp}.templateRef.name"), "must name a MetricTemplate");
        }
    }
    for (i, hook) in analysis.webhooks.iter().flatten().enumerate() {
        let hp = format!("{P}.webhooks[{i}]");
        check_url(out, &format!("{hp}.url"), &hook.url);
        check_duration(out, &format!("{hp}.timeout"), hook.timeout.as_deref());
        if let Some(retries) = hook.retries
            && retries < 0
        {
            out.error(
                format!("{hp}.retries"),
                format!("must not be negative, got {retries}"),
            );
        }
    }
    for (i, alert) in analysis.alerts.iter().flatten().enumerate() {
        if alert.provider_ref.name.is_empty() {
            out.error(
                format!("{P}.alerts[{i}].providerRef.name"),
                "must name an AlertProvider",
            );
        }
    }
    let strategy = spec.deployment_strategy();
    if analysis.session_affinity.is_some() && strategy == DeploymentStrategy::AbTesting {
        out.warning(
            format!("{P}.sessionAffinity"),
            "ignored with A/B testing: the match conditions decide who reaches the canary",
        );
    }
    if analysis.mirror.unwrap_or(false) && strategy == DeploymentStrategy::AbTesting {
        out.warning(
            format!("{P}.mirror"),
            "ignored with A/B testing (mirroring works with weights or Blue/Green)",
        );
    }
    if analysis.mirror_weight.is_some() && !analysis.mirror.unwrap_or(false) {
        out.warning(format!("{P}.mirrorWeight"), "ignored without mirror: true");
    }
    let tcp = spec
        .service
        .app_protocol
        .as_deref()
        .is_some_and(|p| p.eq_ignore_ascii_case("tcp"));
    if tcp && strategy == DeploymentStrategy::AbTesting {
        out.warning(
            format!("{P}.match"),
            "a TCP service (appProtocol: tcp) has no HTTP routes to match on: all traffic follows the weights",
        );
    }
    if tcp && analysis.session_affinity.is_some() {
        out.warning(
            format!("{P}.sessionAffinity"),
            "cookies need HTTP routes; a TCP service (appProtocol: tcp) ignores it",
        );
    }
    if let Some(affinity) = &analysis.session_affinity {
        if affinity.cookie_name.is_empty() {
            out.error(format!("{P}.sessionAffinity.cookieName"), "must not be empty");
        }
        if affinity.primary_cookie_name.as_deref() == Some(affinity.cookie_name.as_str()) {
            out.error(
                format!("{P}.sessionAffinity.primaryCookieName"),
                format!(
                    "can't use the same cookie name ({:?}) for both primary and canary",
                    affinity.cookie_name
                ),
            );
        }
    }
}

/// `metrics[].compare` (serin's comparison with the primary).
fn check_comparison(out: &mut Findings, mp: &str, metric: &CanaryMetric, compare: &MetricComparison) {
    let cp = format!("{mp}.compare");
    let templated = metric.template_ref.is_some();
    let builtin = !templated
        && metric.query.as_deref().is_none_or(str::is_empty)
        && matches!(
            metric.name.as_str(),
            METRIC_REQUEST_SUCCESS_RATE | METRIC_REQUEST_DURATION
        );
    if !builtin && !templated {
        out.error(
            &cp,
            format!(
                "comparison with the primary is available for the builtin metrics {METRIC_REQUEST_SUCCESS_RATE} and {METRIC_REQUEST_DURATION} and for metrics with a templateRef (not for an inline query)"
            ),
        );
    }
    if let Some(worse) = compare.worse.as_deref() {
        if !WORSE_VALUES.contains(&worse) {
            out.error(
                format!("{cp}.worse"),
                format!("{worse:?} is not one of {}", WORSE_VALUES.join(", ")),
            );
        } else if !templated {
            out.warning(
                format!("{cp}.worse"),
                "ignored: only a MetricTemplate's values need a direction (errors and slow requests are worse)",
            );
        }
    }
    if templated && compare.min_requests.is_some() {
        out.warning(
            format!("{cp}.minRequests"),
            "ignored for a MetricTemplate: its comparison counts windows with a value on both sides, not requests",
        );
    }
    if let Some(alpha) = compare.alpha
        && !(alpha > 0.0 && alpha < 1.0)
    {
        out.error(format!("{cp}.alpha"), format!("{alpha} is not between 0 and 1"));
    }
    if let Some(tolerance) = compare.tolerance
        && !(tolerance.is_finite() && tolerance >= 1.0)
    {
        out.error(
            format!("{cp}.tolerance"),
            format!("{tolerance} is below 1 (1: the canary may not be worse than the primary)"),
        );
    }
    if let Some(min) = compare.min_requests
        && min < 0
    {
        out.error(format!("{cp}.minRequests"), format!("{min} is negative"));
    }
    if let Some(policy) = compare.no_data.as_deref()
        && !NO_DATA_POLICIES.contains(&policy)
    {
        out.error(
            format!("{cp}.noData"),
            format!("{policy:?} is not one of {}", NO_DATA_POLICIES.join(", ")),
        );
    }
    check_duration(out, &format!("{cp}.slowerThan"), compare.slower_than.as_deref());
    match (metric.name.as_str(), compare.slower_than.as_deref()) {
        (METRIC_REQUEST_DURATION, None) => out.error(
            format!("{cp}.slowerThan"),
            "required for request-duration: the latency above which a request counts as slow (a bucket bound, such as 250ms)",
        ),
        (METRIC_REQUEST_SUCCESS_RATE, Some(_)) => out.warning(
            format!("{cp}.slowerThan"),
            "ignored: request-success-rate compares 5xx responses",
        ),
        _ => {}
    }
}

/// Validates a MetricTemplate spec.
pub fn metric_template(spec: &MetricTemplateSpec) -> Vec<Finding> {
    let mut out = Findings::default();
    let provider = spec.provider.type_.as_str();
    if !IMPLEMENTED_METRIC_PROVIDERS.contains(&provider) {
        out.warning(
            "spec.provider.type",
            format!(
                "metric provider {provider:?} is not implemented by serin (implemented: {})",
                IMPLEMENTED_METRIC_PROVIDERS.join(", ")
            ),
        );
    }
    match spec.provider.address.as_deref() {
        Some(address) => check_url(&mut out, "spec.provider.address", address),
        None if provider == "prometheus" => out.error(
            "spec.provider.address",
            "Required value for a prometheus provider",
        ),
        None => {}
    }
    if spec.query.trim().is_empty() {
        out.error("spec.query", "must not be empty");
    }
    if spec.query.matches("{{").count() != spec.query.matches("}}").count() {
        out.error("spec.query", "unbalanced template braces: every {{ needs a }}");
    }
    out.0
}

/// Validates an AlertProvider spec.
pub fn alert_provider(spec: &AlertProviderSpec) -> Vec<Finding> {
    let mut out = Findings::default();
    if let Some(address) = &spec.address {
        check_url(&mut out, "spec.address", address);
    }
    if let Some(proxy) = &spec.proxy {
        check_url(&mut out, "spec.proxy", proxy);
    }
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::canary::{
        CanaryMetric, CanaryService, CanaryWebhook, CrossNamespaceRef, MetricComparison, SessionAffinity,
        TargetRef, ThresholdRange,
    };

    fn spec(analysis: CanaryAnalysis) -> CanarySpec {
        CanarySpec {
            target_ref: TargetRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "podinfo".into(),
            },
            service: CanaryService {
                port: 9898,
                ..Default::default()
            },
            analysis: Some(analysis),
            ..Default::default()
        }
    }

    fn progressive() -> CanaryAnalysis {
        CanaryAnalysis {
            interval: Some("15s".into()),
            threshold: Some(5),
            max_weight: Some(50),
            step_weight: Some(10),
            metrics: Some(vec![CanaryMetric {
                name: METRIC_REQUEST_SUCCESS_RATE.into(),
                threshold_range: Some(ThresholdRange {
                    min: Some(99.0),
                    max: None,
                }),
                interval: Some("1m".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn errors(spec: &CanarySpec) -> Vec<String> {
        canary(spec, "istio")
            .into_iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| f.to_string())
            .collect()
    }

    #[test]
    fn specs_flagger_runs_are_lint_errors_that_do_not_stop_the_controller() {
        type Mutate = fn(&mut CanaryAnalysis);
        let runnable: [(&str, Mutate); 6] = [
            ("builtin metric without bounds", |a| {
                a.metrics.as_mut().unwrap()[0].threshold_range = None
            }),
            ("stepWeights not increasing", |a| {
                (a.step_weight, a.max_weight, a.step_weights) = (None, None, Some(vec![20, 10, 50]))
            }),
            ("two strategies", |a| a.iterations = Some(3)),
            ("range that nothing passes", |a| {
                a.metrics.as_mut().unwrap()[0].threshold_range = Some(ThresholdRange {
                    min: Some(2.0),
                    max: Some(1.0),
                })
            }),
            ("unparsable interval", |a| a.interval = Some("10x".into())),
            ("metric without query", |a| {
                a.metrics.as_mut().unwrap()[0].name = "errors".into()
            }),
        ];
        for (name, mutate) in runnable {
            let mut a = progressive();
            mutate(&mut a);
            let findings = canary(&spec(a), "istio");
            assert!(
                findings.iter().any(|f| f.severity == Severity::Error),
                "{name}: serin lint reports it: {findings:#?}"
            );
            assert!(
                !findings.iter().any(Finding::blocks_run),
                "{name}: the controller runs it: {findings:#?}"
            );
        }
        let mut s = spec(progressive());
        s.service.port = 0;
        assert!(
            canary(&s, "istio").iter().any(Finding::blocks_run),
            "a Service without a port cannot be built"
        );
    }

    #[test]
    fn settings_a_strategy_ignores_are_warned_about() {
        let mut s = spec(progressive());
        let a = s.analysis.as_mut().expect("analysis");
        (a.step_weight, a.max_weight, a.iterations) = (None, None, Some(3));
        a.match_ = Some(vec![Default::default()]);
        a.mirror = Some(true);
        a.session_affinity = Some(SessionAffinity {
            cookie_name: "c".into(),
            ..Default::default()
        });
        let warnings: Vec<String> = canary(&s, "istio")
            .into_iter()
            .filter(|f| f.severity == Severity::Warning)
            .map(|f| f.to_string())
            .collect();
        for want in [
            "spec.analysis.sessionAffinity: ignored with A/B testing",
            "spec.analysis.mirror: ignored with A/B testing",
        ] {
            assert!(
                warnings.iter().any(|w| w.starts_with(want)),
                "{want} in {warnings:#?}"
            );
        }
        assert_eq!(errors(&s), Vec::<String>::new(), "warnings only");
    }

    #[test]
    fn valid_progressive_canary_has_no_errors() {
        assert_eq!(errors(&spec(progressive())), Vec::<String>::new());
    }

    #[test]
    fn each_mistake_is_reported_at_its_field() {
        type Mutate = fn(&mut CanarySpec);
        let cases: Vec<(&str, Mutate, &str)> = vec![
            (
                "iterations with stepWeight",
                |s| s.analysis.as_mut().unwrap().iterations = Some(5),
                "spec.analysis: sets iterations and stepWeight",
            ),
            (
                "no strategy",
                |s| s.analysis.as_mut().unwrap().step_weight = None,
                "spec.analysis: sets none",
            ),
            (
                "stepWeights decreasing",
                |s| {
                    let a = s.analysis.as_mut().unwrap();
                    a.step_weight = None;
                    a.step_weights = Some(vec![10, 5]);
                },
                "spec.analysis.stepWeights: must be strictly increasing: 5 at index 1 follows 10",
            ),
            (
                "stepWeights above 100",
                |s| {
                    let a = s.analysis.as_mut().unwrap();
                    a.step_weight = None;
                    a.step_weights = Some(vec![10, 150]);
                },
                "spec.analysis.stepWeights[1]: must be from 1 to 100",
            ),
            (
                "maxWeight above 100",
                |s| s.analysis.as_mut().unwrap().max_weight = Some(120),
                "spec.analysis.maxWeight: must be from 1 to 100",
            ),
            (
                "bad interval",
                |s| s.analysis.as_mut().unwrap().interval = Some("10sx".into()),
                "spec.analysis.interval: unknown unit \"sx\" in duration \"10sx\"",
            ),
            (
                "interval too large for Go",
                |s| s.analysis.as_mut().unwrap().interval = Some("99999999999999999999m".into()),
                "spec.analysis.interval: duration \"99999999999999999999m\" is too large",
            ),
            (
                "builtin without range",
                |s| s.analysis.as_mut().unwrap().metrics.as_mut().unwrap()[0].threshold_range = None,
                "spec.analysis.metrics[0].thresholdRange: builtin metric",
            ),
            (
                "custom metric without template",
                |s| s.analysis.as_mut().unwrap().metrics.as_mut().unwrap()[0].name = "errors".into(),
                "spec.analysis.metrics[0]: metric \"errors\" is not builtin",
            ),
            (
                "templateRef without name",
                |s| {
                    s.analysis.as_mut().unwrap().metrics.as_mut().unwrap()[0].template_ref =
                        Some(CrossNamespaceRef::default())
                },
                "spec.analysis.metrics[0].templateRef.name",
            ),
            (
                "range min above max",
                |s| {
                    s.analysis.as_mut().unwrap().metrics.as_mut().unwrap()[0].threshold_range =
                        Some(ThresholdRange {
                            min: Some(5.0),
                            max: Some(1.0),
                        })
                },
                "spec.analysis.metrics[0].thresholdRange: min 5 is above max 1",
            ),
            (
                "same cookie names",
                |s| {
                    s.analysis.as_mut().unwrap().session_affinity = Some(SessionAffinity {
                        cookie_name: "c".into(),
                        primary_cookie_name: Some("c".into()),
                        ..Default::default()
                    })
                },
                "spec.analysis.sessionAffinity.primaryCookieName: can't use the same cookie name",
            ),
            (
                "webhook url",
                |s| {
                    s.analysis.as_mut().unwrap().webhooks = Some(vec![CanaryWebhook {
                        name: "w".into(),
                        url: "not a url".into(),
                        ..Default::default()
                    }])
                },
                "spec.analysis.webhooks[0].url: \"not a url\" is not a URL",
            ),
            (
                "webhook scheme",
                |s| {
                    s.analysis.as_mut().unwrap().webhooks = Some(vec![CanaryWebhook {
                        name: "w".into(),
                        url: "ftp://x/".into(),
                        ..Default::default()
                    }])
                },
                "spec.analysis.webhooks[0].url: \"ftp://x/\" is not an http(s) URL",
            ),
            (
                "webhook timeout",
                |s| {
                    s.analysis.as_mut().unwrap().webhooks = Some(vec![CanaryWebhook {
                        name: "w".into(),
                        url: "http://x/".into(),
                        timeout: Some("5 s".into()),
                        ..Default::default()
                    }])
                },
                "spec.analysis.webhooks[0].timeout: unknown unit \" s\" in duration \"5 s\"",
            ),
            (
                "unknown provider",
                |s| s.provider = Some("envoy".into()),
                "spec.provider: unknown provider \"envoy\"",
            ),
            (
                "bad port",
                |s| s.service.port = 0,
                "spec.service.port: must be a port number",
            ),
            (
                "delegation with hosts",
                |s| {
                    s.service.delegation = Some(true);
                    s.service.hosts = Some(vec!["app.example.com".into()]);
                },
                "spec.service.hosts: must be empty when service.delegation is set",
            ),
            (
                "no analysis",
                |s| s.analysis = None,
                "spec.analysis: Required value",
            ),
        ];
        for (name, mutate, want) in cases {
            let mut s = spec(progressive());
            mutate(&mut s);
            let got = errors(&s);
            assert!(
                got.iter().any(|g| g.starts_with(want)),
                "{name}: want {want:?}, got {got:#?}"
            );
        }
    }

    #[test]
    fn comparisons_with_the_primary_are_checked_field_by_field() {
        let with = |metric: &str, compare: MetricComparison| {
            let mut a = progressive();
            a.metrics = Some(vec![CanaryMetric {
                name: metric.into(),
                compare: Some(compare),
                ..Default::default()
            }]);
            spec(a)
        };
        let good = MetricComparison {
            alpha: Some(0.01),
            tolerance: Some(1.5),
            min_requests: Some(200),
            no_data: Some("hold".into()),
            ..Default::default()
        };
        assert_eq!(
            errors(&with(METRIC_REQUEST_SUCCESS_RATE, good.clone())),
            Vec::<String>::new(),
            "a comparison judges a builtin metric without a thresholdRange"
        );
        let slow = MetricComparison {
            slower_than: Some("250ms".into()),
            ..Default::default()
        };
        assert_eq!(errors(&with(METRIC_REQUEST_DURATION, slow)), Vec::<String>::new());

        let p = "spec.analysis.metrics[0].compare";
        let cases: Vec<(&str, MetricComparison, String)> = vec![
            (
                METRIC_REQUEST_SUCCESS_RATE,
                MetricComparison {
                    alpha: Some(1.0),
                    ..good.clone()
                },
                format!("{p}.alpha: 1 is not between 0 and 1"),
            ),
            (
                METRIC_REQUEST_SUCCESS_RATE,
                MetricComparison {
                    tolerance: Some(0.5),
                    ..good.clone()
                },
                format!("{p}.tolerance: 0.5 is below 1"),
            ),
            (
                METRIC_REQUEST_SUCCESS_RATE,
                MetricComparison {
                    min_requests: Some(-1),
                    ..good.clone()
                },
                format!("{p}.minRequests: -1 is negative"),
            ),
            (
                METRIC_REQUEST_SUCCESS_RATE,
                MetricComparison {
                    no_data: Some("wait".into()),
                    ..good.clone()
                },
                format!("{p}.noData: \"wait\" is not one of hold, fail, pass"),
            ),
            (
                METRIC_REQUEST_DURATION,
                good.clone(),
                format!("{p}.slowerThan: required for request-duration"),
            ),
            (
                METRIC_REQUEST_DURATION,
                MetricComparison {
                    slower_than: Some("soon".into()),
                    ..good.clone()
                },
                format!("{p}.slowerThan:"),
            ),
            (
                "error-rate",
                good.clone(),
                format!("{p}: comparison with the primary is available for the builtin metrics"),
            ),
        ];
        for (metric, compare, want) in cases {
            let got = errors(&with(metric, compare.clone()));
            assert!(
                got.iter().any(|g| g.starts_with(&want)),
                "{compare:?}: want {want:?}, got {got:#?}"
            );
        }

        // A MetricTemplate compares by its values, in the direction `worse` says.
        let templated = |compare: MetricComparison| {
            let mut s = with("latency", compare);
            let metric = &mut s.analysis.as_mut().unwrap().metrics.as_mut().unwrap()[0];
            metric.template_ref = Some(crate::api::canary::CrossNamespaceRef {
                name: "latency".into(),
                namespace: None,
            });
            s
        };
        let lower = MetricComparison {
            worse: Some("lower".into()),
            ..Default::default()
        };
        assert_eq!(errors(&templated(lower.clone())), Vec::<String>::new());
        let sideways = MetricComparison {
            worse: Some("sideways".into()),
            ..Default::default()
        };
        assert_eq!(
            errors(&templated(sideways)),
            [format!("{p}.worse: \"sideways\" is not one of higher, lower")]
        );
        let warnings = |spec: &CanarySpec| -> Vec<String> {
            canary(spec, "istio")
                .into_iter()
                .filter(|f| f.severity == Severity::Warning)
                .map(|f| f.to_string())
                .collect()
        };
        let counted = MetricComparison {
            min_requests: Some(10),
            ..Default::default()
        };
        assert!(
            warnings(&templated(counted))
                .iter()
                .any(|w| w.starts_with(&format!("{p}.minRequests: ignored for a MetricTemplate"))),
            "minRequests counts requests of the builtin metrics only"
        );
        assert!(
            warnings(&with(METRIC_REQUEST_SUCCESS_RATE, lower))
                .iter()
                .any(|w| w.starts_with(&format!("{p}.worse: ignored"))),
            "errors are always worse when higher"
        );
    }

    #[test]
    fn unimplemented_choices_are_warnings() {
        let mut s = spec(progressive());
        s.provider = Some("linkerd".into());
        s.target_ref.kind = "DaemonSet".into();
        let findings = canary(&s, "istio");
        assert!(
            findings.iter().all(|f| f.severity == Severity::Warning),
            "{findings:#?}"
        );
        assert!(findings.iter().any(|f| f.path == "spec.provider"));
        assert!(findings.iter().any(|f| f.path == "spec.targetRef.kind"));
    }

    #[test]
    fn metric_template_rules() {
        use crate::api::metric_template::MetricTemplateProvider;
        let mut t = MetricTemplateSpec {
            provider: MetricTemplateProvider {
                type_: "prometheus".into(),
                ..Default::default()
            },
            query: "sum(rate(x{ns=\"{{ namespace }}\"}[{{ interval }}]))".into(),
        };
        let paths = |t: &MetricTemplateSpec| {
            metric_template(t)
                .into_iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
        };
        assert!(
            paths(&t)
                .iter()
                .any(|p| p.starts_with("spec.provider.address: Required"))
        );
        t.provider.address = Some("http://prometheus.istio-system:9090".into());
        assert_eq!(paths(&t), Vec::<String>::new());
        t.query = "x{{ namespace }".into();
        assert!(paths(&t).iter().any(|p| p.starts_with("spec.query: unbalanced")));
    }
}
