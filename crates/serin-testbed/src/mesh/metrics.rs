//! Istio's standard metrics, as Envoy sidecars report them: `istio_requests_total` and the
//! `istio_request_duration_milliseconds` histogram (Istio's default buckets), with Istio's label
//! names, exported in Prometheus text format. No I/O.

use std::{collections::BTreeMap, fmt::Write, sync::Mutex};

/// Istio's default duration buckets, in milliseconds.
pub const BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0,
    300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// The labels of one series.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Labels {
    pub reporter: &'static str,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_service: String,
    pub destination_service_name: String,
    pub destination_service_namespace: String,
    pub response_code: u16,
    pub response_flags: &'static str,
}

impl Labels {
    fn render(&self) -> String {
        format!(
            "reporter=\"{}\",source_workload=\"{}\",source_workload_namespace=\"{}\",source_app=\"{}\",destination_workload=\"{}\",destination_workload_namespace=\"{}\",destination_app=\"{}\",destination_service=\"{}\",destination_service_name=\"{}\",destination_service_namespace=\"{}\",destination_canonical_service=\"{}\",request_protocol=\"http\",response_code=\"{}\",response_flags=\"{}\",connection_security_policy=\"{}\"",
            self.reporter,
            self.source_workload,
            self.source_workload_namespace,
            self.source_workload,
            self.destination_workload,
            self.destination_workload_namespace,
            self.destination_workload,
            self.destination_service,
            self.destination_service_name,
            self.destination_service_namespace,
            self.destination_workload,
            self.response_code,
            self.response_flags,
            if self.reporter == "destination" {
                "mutual_tls"
            } else {
                "unknown"
            },
        )
    }
}

#[derive(Clone, Debug, Default)]
struct Series {
    count: u64,
    sum_ms: f64,
    buckets: [u64; BUCKETS_MS.len()],
}

/// The collected series.
#[derive(Debug, Default)]
pub struct IstioMetrics {
    series: Mutex<BTreeMap<Labels, Series>>,
}

impl IstioMetrics {
    /// Records one request.
    pub fn record(&self, labels: Labels, duration_ms: f64) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let s = series.entry(labels).or_default();
        s.count += 1;
        s.sum_ms += duration_ms;
        if let Some(i) = BUCKETS_MS.iter().position(|b| duration_ms <= *b) {
            s.buckets[i] += 1;
        }
    }

    /// Requests recorded for a destination workload, by reporter (for tests and benchmarks).
    pub fn count(&self, reporter: &str, destination_workload: &str) -> u64 {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        series
            .iter()
            .filter(|(l, _)| l.reporter == reporter && l.destination_workload == destination_workload)
            .map(|(_, s)| s.count)
            .sum()
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        out.push_str("# HELP istio_requests_total Requests served, as reported by Envoy.\n# TYPE istio_requests_total counter\n");
        for (labels, s) in series.iter() {
            let _ = writeln!(out, "istio_requests_total{{{}}} {}", labels.render(), s.count);
        }
        out.push_str("# HELP istio_request_duration_milliseconds Request duration.\n# TYPE istio_request_duration_milliseconds histogram\n");
        for (labels, s) in series.iter() {
            let l = labels.render();
            let mut cumulative = 0;
            for (bound, n) in BUCKETS_MS.iter().zip(s.buckets.iter()) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "istio_request_duration_milliseconds_bucket{{{l},le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "istio_request_duration_milliseconds_bucket{{{l},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(out, "istio_request_duration_milliseconds_sum{{{l}}} {}", s.sum_ms);
            let _ = writeln!(
                out,
                "istio_request_duration_milliseconds_count{{{l}}} {}",
                s.count
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(code: u16) -> Labels {
        Labels {
            reporter: "destination",
            source_workload: "loadtester".into(),
            source_workload_namespace: "test".into(),
            destination_workload: "podinfo".into(),
            destination_workload_namespace: "test".into(),
            destination_service: "podinfo-canary.test.svc.cluster.local".into(),
            destination_service_name: "podinfo-canary".into(),
            destination_service_namespace: "test".into(),
            response_code: code,
            response_flags: "-",
        }
    }

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = IstioMetrics::default();
        m.record(labels(200), 7.0);
        m.record(labels(200), 700.0);
        m.record(labels(500), 3.0);
        let text = m.render();
        assert!(
            text.contains(
                "response_code=\"200\",response_flags=\"-\",connection_security_policy=\"mutual_tls\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains("le=\"10\"} 1\n"), "{text}");
        assert!(text.contains("le=\"1000\"} 2\n"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 2\n"));
        assert!(
            text.contains("istio_request_duration_milliseconds_sum{") && text.contains("} 707\n"),
            "{text}"
        );
        assert_eq!(m.count("destination", "podinfo"), 3);
    }
}
