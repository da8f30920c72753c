//! Flux's controller metrics, with Flux's names and labels, so dashboards written for Flux keep
//! working: `gotk_reconcile_duration_seconds` (histogram) and `gotk_suspend_status` (gauge), per
//! object `kind`, `name` and `namespace`. No I/O.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

impl ObjectLabels {
    pub fn new(kind: &str, name: &str, namespace: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        }
    }
}

fn duration_histogram() -> Histogram {
    // controller-runtime's reconcile buckets, as Flux's.
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0,
        60.0,
    ])
}

/// The metrics serin-sync exports.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub reconcile_duration: Family<ObjectLabels, Histogram, fn() -> Histogram>,
    pub suspend_status: Family<ObjectLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconcile_duration: Family::new_with_constructor(duration_histogram),
            suspend_status: Family::default(),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them (with the `gotk_` prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let gotk = registry.sub_registry_with_prefix("gotk");
        gotk.register(
            "reconcile_duration_seconds",
            "The duration in seconds of a GitOps Toolkit resource reconciliation.",
            metrics.reconcile_duration.clone(),
        );
        gotk.register(
            "suspend_status",
            "The current suspend status of a GitOps Toolkit resource.",
            metrics.suspend_status.clone(),
        );
        metrics
    }

    /// Records one reconcile.
    pub fn observe(&self, labels: &ObjectLabels, seconds: f64, suspended: bool) {
        self.reconcile_duration.get_or_create(labels).observe(seconds);
        self.suspend_status
            .get_or_create(labels)
            .set(i64::from(suspended));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_are_flux_ones() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.observe(
            &ObjectLabels::new("Kustomization", "apps", "flux-system"),
            0.2,
            true,
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(text.contains("gotk_reconcile_duration_seconds_count{kind=\"Kustomization\",name=\"apps\",namespace=\"flux-system\"} 1"), "{text}");
        assert!(
            text.contains(
                "gotk_suspend_status{kind=\"Kustomization\",name=\"apps\",namespace=\"flux-system\"} 1"
            ),
            "{text}"
        );
    }
}
