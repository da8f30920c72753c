//! Metric analysis: Flagger's builtin Istio queries, MetricTemplate rendering, verdicts with
//! Flagger's messages (pure), and the Prometheus provider (I/O).

pub mod paired;
pub mod prometheus;
pub mod render;
pub mod sequential;

use crate::api::canary::{CanaryMetric, METRIC_REQUEST_DURATION, METRIC_REQUEST_SUCCESS_RATE};

/// Default query window of builtin and inline metrics.
pub const DEFAULT_INTERVAL: &str = "1m";

/// The `{{ interval }}` of a metric: its own, else `1m`. (Flagger renders an empty string for a
/// template metric without an interval, which makes the query fail; serin uses the default.)
pub fn metric_interval(metric: &CanaryMetric) -> String {
    metric
        .interval
        .clone()
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| DEFAULT_INTERVAL.to_owned())
}

/// Flagger's builtin `request-success-rate` query for Istio.
pub fn success_rate_query(namespace: &str, target: &str, interval: &str) -> String {
    format!(
        r#"sum(rate(istio_requests_total{{reporter="destination",destination_workload_namespace="{namespace}",destination_workload=~"{target}",response_code!~"5.*"}}[{interval}])) / sum(rate(istio_requests_total{{reporter="destination",destination_workload_namespace="{namespace}",destination_workload=~"{target}"}}[{interval}])) * 100"#
    )
}

/// Flagger's builtin `request-duration` query for Istio (P99 in milliseconds).
pub fn duration_query(namespace: &str, target: &str, interval: &str) -> String {
    format!(
        r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{{reporter="destination",destination_workload_namespace="{namespace}",destination_workload=~"{target}"}}[{interval}])) by (le))"#
    )
}

/// The four counts a comparison with the primary reads per window of `window` seconds, in order:
/// canary requests, canary bad requests, primary requests, primary bad requests. Bad requests
/// are 5xx responses for `request-success-rate`, and for `request-duration` those slower than
/// `slower_than_ms` (a bucket bound of `istio_request_duration_milliseconds`). `None` for other
/// metrics.
pub fn comparison_queries(
    metric: &str,
    namespace: &str,
    target: &str,
    window: i64,
    slower_than_ms: Option<f64>,
) -> Option<[String; 4]> {
    let side = |workload: &str| -> Option<(String, String)> {
        let labels = format!(
            r#"reporter="destination",destination_workload_namespace="{namespace}",destination_workload="{workload}""#
        );
        match metric {
            METRIC_REQUEST_SUCCESS_RATE => Some((
                format!("sum(increase(istio_requests_total{{{labels}}}[{window}s]))"),
                format!(r#"sum(increase(istio_requests_total{{{labels},response_code=~"5.*"}}[{window}s]))"#),
            )),
            METRIC_REQUEST_DURATION => {
                let le = slower_than_ms?;
                let all = format!(
                    "sum(increase(istio_request_duration_milliseconds_count{{{labels}}}[{window}s]))"
                );
                Some((
                    all.clone(),
                    format!(
                        r#"{all} - sum(increase(istio_request_duration_milliseconds_bucket{{{labels},le="{le}"}}[{window}s]))"#
                    ),
                ))
            }
            _ => None,
        }
    };
    let (canary, canary_bad) = side(target)?;
    let (primary, primary_bad) = side(&format!("{target}-primary"))?;
    Some([canary, canary_bad, primary, primary_bad])
}

/// The verdict on one metric value: `None` passes, `Some(message)` halts with Flagger's text.
///
/// As in Flagger, a `thresholdRange` decides alone; without one the legacy `threshold` (0 when
/// unset) does: the success rate fails below it, the duration (in ms) and any other metric above.
pub fn verdict(canary: &str, metric: &CanaryMetric, value: f64) -> Option<String> {
    let builtin = metric.template_ref.is_none() && metric.query.as_deref().is_none_or(str::is_empty);
    let threshold = metric.threshold.unwrap_or(0.0);
    let (min, max) = match &metric.threshold_range {
        Some(range) => (range.min, range.max),
        None => (None, None),
    };
    let legacy = metric.threshold_range.is_none();
    match metric.name.as_str() {
        METRIC_REQUEST_SUCCESS_RATE if builtin => {
            if let Some(min) = min.filter(|min| value < *min) {
                return Some(format!(
                    "Halt {canary} advancement success rate {value:.2}% < {min}%"
                ));
            }
            if let Some(max) = max.filter(|max| value > *max) {
                return Some(format!(
                    "Halt {canary} advancement success rate {value:.2}% > {max}%"
                ));
            }
            (legacy && threshold > value)
                .then(|| format!("Halt {canary} advancement success rate {value:.2}% < {threshold}%"))
        }
        METRIC_REQUEST_DURATION if builtin => {
            // Flagger truncates to whole milliseconds and prints Go durations.
            let ms = value.trunc();
            if let Some(min) = min.filter(|min| ms < min.trunc()) {
                return Some(format!(
                    "Halt {canary} advancement request duration {} < {}",
                    go_duration(ms),
                    go_duration(min)
                ));
            }
            if let Some(max) = max.filter(|max| ms > max.trunc()) {
                return Some(format!(
                    "Halt {canary} advancement request duration {} > {}",
                    go_duration(ms),
                    go_duration(max)
                ));
            }
            (legacy && ms > threshold.trunc()).then(|| {
                format!(
                    "Halt {canary} advancement request duration {} > {}",
                    go_duration(ms),
                    go_duration(threshold)
                )
            })
        }
        name => {
            if let Some(min) = min.filter(|min| value < *min) {
                return Some(format!("Halt {canary} advancement {name} {value:.2} < {min}"));
            }
            if let Some(max) = max.filter(|max| value > *max) {
                return Some(format!("Halt {canary} advancement {name} {value:.2} > {max}"));
            }
            (legacy && value > threshold)
                .then(|| format!("Halt {canary} advancement {name} {value:.2} > {threshold}"))
        }
    }
}

/// Flagger's halt message for a metric query that found no values (`target` and `namespace`
/// are the Canary's).
pub fn no_values(metric: &CanaryMetric, target: &str, namespace: &str) -> String {
    let builtin = metric.template_ref.is_none()
        && metric.query.is_none()
        && [METRIC_REQUEST_SUCCESS_RATE, METRIC_REQUEST_DURATION].contains(&metric.name.as_str());
    if builtin {
        // Flagger adds the query error to the success rate's text only.
        let suffix = if metric.name == METRIC_REQUEST_DURATION {
            ""
        } else {
            ": running query failed: no values found"
        };
        format!(
            "Halt advancement no values found for istio metric {} probably {target}.{namespace} is not receiving traffic{suffix}",
            metric.name
        )
    } else if metric.template_ref.is_some() {
        format!(
            "Halt advancement no values found for custom metric: {}: no values found",
            metric.name
        )
    } else {
        format!("Halt advancement no values found for metric: {}", metric.name)
    }
}

/// The bound a metric's value is held to, as the checks in [`verdict`] apply it: `>= 99`,
/// `<= 500`, `>= 1, <= 5` (empty when the metric has none).
pub fn bound(metric: &CanaryMetric) -> String {
    let builtin = metric.template_ref.is_none() && metric.query.as_deref().is_none_or(str::is_empty);
    match &metric.threshold_range {
        Some(range) => [
            range.min.map(|m| format!(">= {m}")),
            range.max.map(|m| format!("<= {m}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", "),
        None => {
            let threshold = metric.threshold.unwrap_or(0.0);
            if builtin && metric.name == METRIC_REQUEST_SUCCESS_RATE {
                format!(">= {threshold}")
            } else {
                format!("<= {threshold}")
            }
        }
    }
}

/// A number as people read it: up to two decimals, no trailing zeros.
pub fn number(x: f64) -> String {
    if x != 0.0 && x.abs() < 0.01 {
        return format!("{x:.2e}");
    }
    let text = format!("{x:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Milliseconds as Go prints a `time.Duration` (`1.515s`, `500ms`).
pub fn go_duration(ms: f64) -> String {
    if ms >= 1000.0 {
        let s = format!("{:.3}", ms / 1000.0);
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    } else {
        format!("{}ms", ms as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::canary::ThresholdRange;

    #[test]
    fn bounds_read_as_the_checks_apply_them() {
        assert_eq!(
            bound(&metric(METRIC_REQUEST_SUCCESS_RATE, Some(99.0), None)),
            ">= 99"
        );
        assert_eq!(bound(&metric("latency", Some(1.0), Some(5.5))), ">= 1, <= 5.5");
        let legacy = |name: &str| CanaryMetric {
            name: name.into(),
            threshold: Some(500.0),
            ..Default::default()
        };
        assert_eq!(bound(&legacy(METRIC_REQUEST_SUCCESS_RATE)), ">= 500");
        assert_eq!(bound(&legacy(METRIC_REQUEST_DURATION)), "<= 500");
        assert_eq!(bound(&legacy("errors")), "<= 500");
    }

    fn metric(name: &str, min: Option<f64>, max: Option<f64>) -> CanaryMetric {
        CanaryMetric {
            name: name.into(),
            threshold_range: Some(ThresholdRange { min, max }),
            ..Default::default()
        }
    }

    #[test]
    fn verdicts_use_flaggers_texts() {
        let c = "podinfo.test";
        assert_eq!(
            verdict(c, &metric("request-success-rate", Some(99.0), None), 99.5),
            None
        );
        assert_eq!(
            verdict(c, &metric("request-success-rate", Some(99.0), None), 98.5).as_deref(),
            Some("Halt podinfo.test advancement success rate 98.50% < 99%")
        );
        assert_eq!(
            verdict(c, &metric("request-duration", None, Some(500.0)), 1515.7).as_deref(),
            Some("Halt podinfo.test advancement request duration 1.515s > 500ms")
        );
        assert_eq!(
            verdict(c, &metric("request-duration", None, Some(500.0)), 499.9),
            None
        );
        assert_eq!(
            verdict(c, &metric("latency", None, Some(500.0)), 812.25).as_deref(),
            Some("Halt podinfo.test advancement latency 812.25 > 500")
        );
        assert_eq!(
            verdict(c, &metric("errors", Some(1.0), None), 0.5).as_deref(),
            Some("Halt podinfo.test advancement errors 0.50 < 1")
        );
    }

    #[test]
    fn without_a_range_the_legacy_threshold_decides() {
        let c = "podinfo.test";
        let legacy = |name: &str, threshold: Option<f64>| CanaryMetric {
            name: name.into(),
            threshold,
            ..Default::default()
        };
        let template = |threshold: Option<f64>| CanaryMetric {
            template_ref: Some(Default::default()),
            ..legacy("error-rate", threshold)
        };
        let cases: [(CanaryMetric, f64, Option<&str>); 10] = [
            (
                legacy("request-success-rate", Some(99.0)),
                98.0,
                Some("Halt podinfo.test advancement success rate 98.00% < 99%"),
            ),
            (legacy("request-success-rate", Some(99.0)), 99.5, None),
            (legacy("request-success-rate", None), 0.0, None),
            (
                legacy("request-duration", Some(500.0)),
                812.0,
                Some("Halt podinfo.test advancement request duration 812ms > 500ms"),
            ),
            (legacy("request-duration", Some(500.0)), 500.9, None),
            // Flagger's threshold defaults to 0: a duration check without bounds fails.
            (
                legacy("request-duration", None),
                3.0,
                Some("Halt podinfo.test advancement request duration 3ms > 0ms"),
            ),
            (
                template(Some(5.0)),
                7.5,
                Some("Halt podinfo.test advancement error-rate 7.50 > 5"),
            ),
            (template(Some(5.0)), 5.0, None),
            (
                template(None),
                1e9,
                Some("Halt podinfo.test advancement error-rate 1000000000.00 > 0"),
            ),
            (
                CanaryMetric {
                    query: Some("sum(x)".into()),
                    ..legacy("request-success-rate", Some(1.0))
                },
                2.0,
                Some("Halt podinfo.test advancement request-success-rate 2.00 > 1"),
            ),
        ];
        for (metric, value, want) in cases {
            assert_eq!(
                verdict(c, &metric, value).as_deref(),
                want,
                "{metric:?} at {value}"
            );
        }
        // With a range, the threshold is not read (as in Flagger).
        let ranged = CanaryMetric {
            threshold: Some(1.0),
            ..metric("latency", None, Some(500.0))
        };
        assert_eq!(verdict(c, &ranged, 400.0), None);
    }

    #[test]
    fn a_template_metric_without_interval_renders_one_minute() {
        let m = CanaryMetric {
            name: "latency".into(),
            template_ref: Some(Default::default()),
            ..Default::default()
        };
        assert_eq!(metric_interval(&m), "1m");
        assert_eq!(
            metric_interval(&CanaryMetric {
                interval: Some("30s".into()),
                ..m
            }),
            "30s"
        );
    }

    #[test]
    fn builtin_queries_match_flagger() {
        let q = success_rate_query("test", "podinfo", "1m");
        assert!(q.starts_with(r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="test",destination_workload=~"podinfo",response_code!~"5.*"}[1m]))"#));
        assert!(q.ends_with("* 100"));
        assert!(
            duration_query("test", "podinfo", "30s").contains("istio_request_duration_milliseconds_bucket")
        );
        assert_eq!(go_duration(1500.0), "1.5s");
        assert_eq!(go_duration(2000.0), "2s");
    }
}
