//! Flagger's metrics (`flagger_info`, `flagger_canary_*`), with Flagger's names and labels, so
//! dashboards and alerts written for Flagger keep working. No I/O.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    pub version: String,
    pub mesh_provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CanaryLabels {
    pub name: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WeightLabels {
    pub workload: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MetricLabels {
    pub name: String,
    pub namespace: String,
    pub metric: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub name: String,
    pub namespace: String,
    pub deployment_strategy: String,
    pub analysis_status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub name: String,
    pub namespace: String,
    /// The Canary's alert name (or the global notifier's type).
    pub alert: String,
}

fn duration_histogram() -> Histogram {
    // Prometheus' default buckets (Flagger uses DefBuckets).
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

/// The metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub info: Family<InfoLabels, Gauge>,
    pub total: Family<NamespaceLabels, Gauge>,
    pub status: Family<CanaryLabels, Gauge>,
    pub weight: Family<WeightLabels, Gauge>,
    pub duration: Family<CanaryLabels, Histogram, fn() -> Histogram>,
    pub analysis: Family<MetricLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// serin: a comparison with the primary's e-value against the canary (it rolls back at
    /// `1/alpha`).
    pub evidence: Family<MetricLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub successes: Family<OutcomeLabels, Counter>,
    pub failures: Family<OutcomeLabels, Counter>,
    pub alerts_sent: Family<AlertLabels, Counter>,
    pub alert_failures: Family<AlertLabels, Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them (without a prefix: the names are Flagger's).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            info: Family::default(),
            total: Family::default(),
            status: Family::default(),
            weight: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            analysis: Family::default(),
            evidence: Family::default(),
            successes: Family::default(),
            failures: Family::default(),
            alerts_sent: Family::default(),
            alert_failures: Family::default(),
        };
        registry.register(
            "flagger_info",
            "Flagger (serin) version and mesh provider information",
            m.info.clone(),
        );
        registry.register(
            "flagger_canary_total",
            "Total number of canary object",
            m.total.clone(),
        );
        registry.register(
            "flagger_canary_status",
            "Last canary analysis result (0 progressing, 1 other, 2 failed)",
            m.status.clone(),
        );
        registry.register(
            "flagger_canary_weight",
            "The virtual service destination weight current value",
            m.weight.clone(),
        );
        registry.register(
            "flagger_canary_duration_seconds",
            "Seconds spent performing canary analysis",
            m.duration.clone(),
        );
        registry.register(
            "flagger_canary_metric_analysis",
            "Last canary analysis result per metric",
            m.analysis.clone(),
        );
        registry.register(
            "serin_canary_comparison_evidence",
            "Evidence (e-value) that the canary is worse than the primary, per compared metric; the canary is rolled back at 1/alpha",
            m.evidence.clone(),
        );
        registry.register(
            "flagger_canary_successes",
            "Total number of canary successes",
            m.successes.clone(),
        );
        registry.register(
            "flagger_canary_failures",
            "Total number of canary failures",
            m.failures.clone(),
        );
        registry.register(
            "serin_alerts_sent",
            "Alerts delivered to alert providers or the global notifier",
            m.alerts_sent.clone(),
        );
        registry.register(
            "serin_alert_failures",
            "Alerts that could not be delivered (the rollout goes on)",
            m.alert_failures.clone(),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn names_are_flaggers() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.info
            .get_or_create(&InfoLabels {
                version: "0.1.0".into(),
                mesh_provider: "istio".into(),
            })
            .set(1);
        m.status
            .get_or_create(&CanaryLabels {
                name: "podinfo".into(),
                namespace: "test".into(),
            })
            .set(0);
        m.weight
            .get_or_create(&WeightLabels {
                workload: "podinfo-primary".into(),
                namespace: "test".into(),
            })
            .set(90);
        m.successes
            .get_or_create(&OutcomeLabels {
                name: "podinfo".into(),
                namespace: "test".into(),
                deployment_strategy: "canary".into(),
                analysis_status: "completed".into(),
            })
            .inc();
        m.analysis
            .get_or_create(&MetricLabels {
                name: "podinfo".into(),
                namespace: "test".into(),
                metric: "request-success-rate".into(),
            })
            .set(99.5);
        m.evidence
            .get_or_create(&MetricLabels {
                name: "podinfo".into(),
                namespace: "test".into(),
                metric: "request-success-rate".into(),
            })
            .set(2.5);
        let mut text = String::new();
        encode(&mut text, &registry).expect("encodes");
        for line in [
            r#"flagger_info{version="0.1.0",mesh_provider="istio"} 1"#,
            r#"flagger_canary_status{name="podinfo",namespace="test"} 0"#,
            r#"flagger_canary_weight{workload="podinfo-primary",namespace="test"} 90"#,
            r#"flagger_canary_successes_total{name="podinfo",namespace="test",deployment_strategy="canary",analysis_status="completed"} 1"#,
            r#"flagger_canary_metric_analysis{name="podinfo",namespace="test",metric="request-success-rate"} 99.5"#,
            r#"serin_canary_comparison_evidence{name="podinfo",namespace="test",metric="request-success-rate"} 2.5"#,
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
