//! A metric compared with the primary (`metrics[].compare`, docs/analysis.md): at each analysis
//! tick, the requests and the bad ones of each side in the windows (`--comparison-window`)
//! counted since the last look, fed to the sequential test (`analysis::sequential`), and the
//! verdict with its numbers. The test's state lives in memory and in the Canary's status
//! (`status.comparisons`), so that it survives a restart where the CRD keeps that field. Does I/O
//! (Prometheus).

use std::collections::HashMap;

use kube::ResourceExt;

use super::Context;
use crate::{
    analysis::{
        self,
        paired::Worse,
        prometheus,
        sequential::{Counts, Settings},
    },
    api::{
        Canary,
        canary::{
            CanaryMetric, CheckStatus, METRIC_REQUEST_DURATION, MetricComparison, MetricComparisonStatus,
            parse_duration,
        },
    },
};

/// The test's state by `uid/metric`, for the life of the process, each with whether a look
/// changed it since the status last took it.
#[derive(Debug, Default)]
pub struct States(std::sync::Mutex<HashMap<String, (MetricComparisonStatus, bool)>>);

impl States {
    fn get(&self, key: &str) -> Option<MetricComparisonStatus> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map(|(s, _)| s.clone())
    }

    fn put(&self, key: String, state: MetricComparisonStatus) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (state, true));
    }

    /// Forgets a Canary's comparisons (it is deleted).
    pub fn forget(&self, uid: &str) {
        let prefix = format!("{uid}/");
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| !k.starts_with(&prefix));
    }

    /// The current revision's comparisons of a Canary, by metric name, when a look changed one
    /// since the last call (for the status); marks them taken.
    pub fn take_changed(
        &self,
        canary: &Canary,
    ) -> Option<std::collections::BTreeMap<String, MetricComparisonStatus>> {
        let uid = canary.uid().unwrap_or_default();
        let revision = revision(canary);
        let mut states = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed = false;
        let current: std::collections::BTreeMap<String, MetricComparisonStatus> = compared(canary)
            .filter_map(|(metric, _)| {
                let (state, dirty) = states.get_mut(&format!("{uid}/{}", metric.name))?;
                (state.revision == revision).then(|| {
                    changed |= std::mem::take(dirty);
                    (metric.name.clone(), state.clone())
                })
            })
            .collect();
        changed.then_some(current)
    }
}

/// What a look concluded.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// No evidence against the canary (yet).
    Pass(String),
    /// Not enough data, under the `hold` policy: no step.
    Hold(String),
    /// The canary is shown worse: roll back now.
    Worse(String),
    /// A failed check (the `fail` policy, or holding beyond the progress deadline).
    Fail(String),
}

/// The revision under analysis.
fn revision(canary: &Canary) -> String {
    canary
        .status
        .as_ref()
        .and_then(|s| s.last_applied_spec.clone())
        .unwrap_or_default()
}

/// When the current revision started progressing (the `Promoted` condition's transition).
fn progressing_since(canary: &Canary) -> Option<i64> {
    canary
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Promoted" && c.reason == "Progressing")?
        .last_transition_time
        .as_ref()
        .map(|t| t.0.as_second())
}

/// The Canary's metrics that compare with the primary.
pub fn compared(canary: &Canary) -> impl Iterator<Item = (&CanaryMetric, &MetricComparison)> {
    canary
        .spec
        .analysis
        .iter()
        .flat_map(|a| a.metrics.iter().flatten())
        .filter_map(|m| m.compare.as_ref().map(|c| (m, c)))
}

/// The metric's settings.
fn settings(compare: &MetricComparison) -> Settings {
    Settings {
        alpha: compare.alpha.filter(|a| *a > 0.0 && *a < 1.0).unwrap_or(0.05),
        tolerance: compare.tolerance.filter(|t| *t >= 1.0).unwrap_or(1.0),
    }
}

/// Looks at a compared metric: counts the windows since the last look, adds them to the
/// evidence and judges, with the check explained for the status. `Err` is a query failure, said
/// as a failed check.
pub async fn look(
    ctx: &Context,
    canary: &Canary,
    metric: &CanaryMetric,
    compare: &MetricComparison,
    now: i64,
) -> Result<(Outcome, CheckStatus), String> {
    let ns = canary.namespace().unwrap_or_default();
    let name = format!("{}.{ns}", canary.name_any());
    let target = canary.spec.target_ref.name.clone();
    let key = format!("{}/{}", canary.uid().unwrap_or_default(), metric.name);
    let revision = revision(canary);
    let window = ctx.config.comparison_window.as_secs().max(1) as i64;
    // The last state of this revision: serin's own, else the status's (after a restart).
    let mut state = ctx
        .comparisons
        .get(&key)
        .filter(|s| s.revision == revision)
        .or_else(|| {
            canary
                .status
                .as_ref()
                .and_then(|s| s.comparisons.as_ref())
                .and_then(|c| c.get(&metric.name))
                .filter(|s| s.revision == revision)
                .cloned()
        })
        .unwrap_or_else(|| MetricComparisonStatus {
            // A new analysis counts from when the revision started progressing: what came
            // before was another revision's.
            revision: revision.clone(),
            counted_until: progressing_since(canary).unwrap_or(now).min(now),
            ..MetricComparisonStatus::default()
        });

    let settings = settings(compare);
    let windows = (now - state.counted_until) / window;
    tracing::debug!(canary = %name, windows, counted_until = state.counted_until, "comparison look");
    if windows > 0 {
        let range = (
            state.counted_until + window,
            state.counted_until + windows * window,
            window,
        );
        if let Some(template_ref) = &metric.template_ref {
            // Each side's query over exactly one window, evaluated at the end of each.
            let interval = format!("{window}s");
            let mut sides = Vec::new();
            for side in [target.clone(), format!("{target}-primary")] {
                let (address, query, auth) =
                    super::checks::template_query(ctx, canary, metric, template_ref, &side, &interval)
                        .await?;
                let query = analysis::render::collapse_whitespace(&query);
                let values = prometheus::query_range(&ctx.prometheus(), &address, &query, &auth, range)
                    .await
                    .map_err(|e| format!("Metric query failed for {}: {e}", metric.name))?;
                sides.push(values);
            }
            let worse = Worse::parse(compare.worse.as_deref());
            let paired = state.paired.get_or_insert_with(Default::default);
            for i in 0..windows as usize {
                let at = |s: usize| sides[s].get(i).copied().flatten();
                paired.add(at(0), at(1), worse, settings.tolerance);
            }
        } else {
            let slower_than = compare
                .slower_than
                .as_deref()
                .and_then(|d| parse_duration(d).ok())
                .map(|d| d.as_secs_f64() * 1000.0);
            let queries = analysis::comparison_queries(&metric.name, &ns, &target, window, slower_than)
                .ok_or_else(|| format!("Metric {} cannot be compared with the primary", metric.name))?;
            let server = canary
                .spec
                .metrics_server
                .clone()
                .unwrap_or_else(|| ctx.config.metrics_server.clone());
            let mut series = Vec::new();
            for query in &queries {
                let values = prometheus::query_range(
                    &ctx.prometheus(),
                    &server,
                    query,
                    &prometheus::Auth::default(),
                    range,
                )
                .await
                .map_err(|e| format!("Prometheus query failed for {}: {e}", metric.name))?;
                series.push(values);
            }
            for i in 0..windows as usize {
                let at = |s: usize| series[s].get(i).copied().flatten().unwrap_or(0.0).max(0.0);
                let (canary_requests, primary_requests) = (at(0), at(2));
                let counts = Counts {
                    canary_requests,
                    canary_bad: at(1).min(canary_requests),
                    primary_requests,
                    primary_bad: at(3).min(primary_requests),
                };
                state.evidence.add(&settings, &counts);
            }
        }
        state.counted_until = range.1;
    }

    let deadline = i64::from(canary.spec.progress_deadline_seconds());
    let outcome = if metric.template_ref.is_some() {
        judge_paired(&name, metric, compare, &mut state, deadline, now)
    } else {
        judge(&name, metric, compare, &mut state, deadline, now)
    };
    let (verdict, message) = match &outcome {
        Outcome::Pass(m) => ("pass", m),
        Outcome::Hold(m) => ("hold", m),
        Outcome::Worse(m) => ("worse", m),
        Outcome::Fail(m) => ("no data", m),
    };
    state.verdict = verdict.to_owned();
    state.message = message.clone();
    let record = explain(metric, compare, &state, now);
    if let Some(evidence) = record.evidence {
        ctx.metrics
            .evidence
            .get_or_create(&super::metrics::MetricLabels {
                name: target.clone(),
                namespace: ns.clone(),
                metric: metric.name.clone(),
            })
            .set(evidence);
    }
    ctx.comparisons.put(key, state);
    Ok((outcome, record))
}

/// A comparison's look as a check of the tick: each side's share of bad requests, the test, the
/// counts, the e-value and the verdict. Pure.
fn explain(
    metric: &CanaryMetric,
    compare: &MetricComparison,
    state: &MetricComparisonStatus,
    now: i64,
) -> CheckStatus {
    let settings = settings(compare);
    let verdict = match state.verdict.as_str() {
        "no data" => "fail".to_owned(),
        v => v.to_owned(),
    };
    let time = jiff::Timestamp::from_second(now)
        .ok()
        .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time);
    if let Some(paired) = &state.paired {
        return CheckStatus {
            name: metric.name.clone(),
            check: "comparison".into(),
            canary: paired.canary,
            primary: paired.primary,
            bound: format!(
                "sign test on windows, {} is worse, tolerance {} (alpha {})",
                compare.worse.as_deref().unwrap_or("higher"),
                settings.tolerance,
                settings.alpha
            ),
            evidence: Some(paired.log_evidence().exp()).filter(|e| e.is_finite()),
            verdict,
            message: state.message.clone(),
            time,
            ..CheckStatus::default()
        };
    }
    let t = &state.evidence.totals;
    let share = |bad: f64, requests: f64| (requests > 0.0).then(|| bad / requests);
    CheckStatus {
        name: metric.name.clone(),
        check: "comparison".into(),
        canary: share(t.canary_bad, t.canary_requests),
        primary: share(t.primary_bad, t.primary_requests),
        bound: format!(
            "canary/primary <= {} (alpha {})",
            settings.tolerance, settings.alpha
        ),
        canary_requests: Some(t.canary_requests),
        primary_requests: Some(t.primary_requests),
        evidence: Some(state.evidence.judge(&settings).log_evidence.exp()).filter(|e| e.is_finite()),
        verdict,
        message: state.message.clone(),
        time,
    }
}

/// A number for a sentence: 3 significant digits, in powers of ten when very large or small.
fn readable(x: f64) -> String {
    if x != 0.0 && !(1e-3..1e4).contains(&x.abs()) {
        format!("{x:.2e}")
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

/// What too little data means under the metric's `noData` policy; `hold` fails once it has held
/// beyond the progress deadline.
fn no_data(
    canary: &str,
    compare: &MetricComparison,
    state: &mut MetricComparisonStatus,
    waiting: &str,
    progress_deadline_seconds: i64,
    now: i64,
) -> Outcome {
    match compare.no_data.as_deref().unwrap_or("hold") {
        "fail" => Outcome::Fail(format!("Halt {canary} advancement: {waiting}")),
        "pass" => Outcome::Pass(format!("{waiting}; passing (noData: pass)")),
        _ => {
            let since = *state.held_since.get_or_insert(now);
            if now - since > progress_deadline_seconds {
                Outcome::Fail(format!(
                    "Halt {canary} advancement: {waiting} for {} s, beyond progressDeadlineSeconds",
                    now - since
                ))
            } else {
                Outcome::Hold(format!("Holding {canary}: {waiting}"))
            }
        }
    }
}

/// The verdict of a MetricTemplate's sign test on the windows so far, with its numbers. Pure.
fn judge_paired(
    canary: &str,
    metric: &CanaryMetric,
    compare: &MetricComparison,
    state: &mut MetricComparisonStatus,
    progress_deadline_seconds: i64,
    now: i64,
) -> Outcome {
    let alpha = settings(compare).alpha;
    let paired = state.paired.clone().unwrap_or_default();
    if paired.windows == 0 {
        let waiting = format!(
            "{} of {canary} has no window with a value on both sides yet ({} without)",
            metric.name, paired.skipped
        );
        return no_data(canary, compare, state, &waiting, progress_deadline_seconds, now);
    }
    state.held_since = None;
    let last = |v: Option<f64>| v.map_or_else(|| "none".to_owned(), readable);
    let numbers = format!(
        "the canary {} in {} of {} windows (last: canary {}, primary {}); evidence {} against {:.0} to roll back (p {})",
        match Worse::parse(compare.worse.as_deref()) {
            Worse::Higher => "higher",
            Worse::Lower => "lower",
        },
        paired.worse,
        paired.windows,
        last(paired.canary),
        last(paired.primary),
        readable(paired.log_evidence().exp()),
        1.0 / alpha,
        readable((-paired.max_log_evidence.max(0.0)).exp()),
    );
    if paired.shown_worse(alpha) {
        Outcome::Worse(format!(
            "Rolling back {canary}: {} of the canary is worse than the primary's: {numbers}",
            metric.name
        ))
    } else {
        Outcome::Pass(format!(
            "{} of {canary} compared with the primary: {numbers}",
            metric.name
        ))
    }
}

/// The verdict on the evidence so far, with its numbers in one sentence. Pure.
fn judge(
    canary: &str,
    metric: &CanaryMetric,
    compare: &MetricComparison,
    state: &mut MetricComparisonStatus,
    progress_deadline_seconds: i64,
    now: i64,
) -> Outcome {
    let settings = settings(compare);
    let j = state.evidence.judge(&settings);
    let t = &state.evidence.totals;
    let bad = if metric.name == METRIC_REQUEST_DURATION {
        format!(
            "slower than {}",
            compare.slower_than.as_deref().unwrap_or_default()
        )
    } else {
        "errors".to_owned()
    };
    let numbers = format!(
        "canary {:.0} {bad} in {:.0} requests, primary {:.0} in {:.0}; ratio {}, {}% confidence {:.2} to {:.2}; evidence {} against {:.0} to roll back (p {}, dispersion {:.1})",
        t.canary_bad,
        t.canary_requests,
        t.primary_bad,
        t.primary_requests,
        j.ratio
            .map_or_else(|| "unknown".to_owned(), |r| format!("{r:.2}")),
        ((1.0 - settings.alpha) * 1000.0).round() / 10.0,
        j.interval.0,
        j.interval.1,
        readable(j.log_evidence.exp()),
        1.0 / settings.alpha,
        readable(j.p_value),
        j.dispersion,
    );
    let min_requests = compare.min_requests.unwrap_or(100).max(0) as f64;
    if j.worse && t.canary_requests >= min_requests {
        state.held_since = None;
        return Outcome::Worse(format!(
            "Rolling back {canary}: {} of the canary is worse than the primary's: {numbers}",
            metric.name
        ));
    }
    if t.canary_requests < min_requests {
        let waiting = format!(
            "{} of {canary} has too little data to compare with the primary ({:.0} of {min_requests:.0} canary requests)",
            metric.name, t.canary_requests
        );
        return no_data(canary, compare, state, &waiting, progress_deadline_seconds, now);
    }
    state.held_since = None;
    Outcome::Pass(format!(
        "{} of {canary} compared with the primary: {numbers}",
        metric.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(compare: MetricComparison) -> CanaryMetric {
        CanaryMetric {
            name: "request-success-rate".into(),
            compare: Some(compare),
            ..Default::default()
        }
    }

    fn counts(m: f64, a: f64, k: f64, b: f64) -> Counts {
        Counts::new(m, a, k, b)
    }

    /// Six intervals of the canary failing three times as often as the primary.
    fn three_times_worse(compare: &MetricComparison) -> MetricComparisonStatus {
        let mut state = MetricComparisonStatus::default();
        for _ in 0..6 {
            state
                .evidence
                .add(&settings(compare), &counts(100.0, 6.0, 900.0, 18.0));
        }
        state
    }

    #[test]
    fn verdicts_say_why_with_their_numbers() {
        let compare = MetricComparison::default();
        let m = metric(compare.clone());
        let mut state = three_times_worse(&compare);
        match judge("web.test", &m, &compare, &mut state, 600, 1_000) {
            Outcome::Worse(message) => {
                assert!(
                    message.starts_with("Rolling back web.test: request-success-rate of the canary is worse than the primary's: canary 36 errors in 600 requests, primary 108 in 5400; ratio 3.00"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }

        let mut same = MetricComparisonStatus::default();
        for _ in 0..6 {
            same.evidence
                .add(&settings(&compare), &counts(100.0, 2.0, 900.0, 18.0));
        }
        assert!(matches!(
            judge("web.test", &m, &compare, &mut same, 600, 1_000),
            Outcome::Pass(_)
        ));
    }

    #[test]
    fn a_look_is_explained_with_both_sides_and_the_evidence() {
        let compare = MetricComparison::default();
        let m = metric(compare.clone());
        let mut state = three_times_worse(&compare);
        let Outcome::Worse(message) = judge("web.test", &m, &compare, &mut state, 600, 1_000) else {
            panic!("worse: {state:?}");
        };
        state.verdict = "worse".into();
        state.message = message.clone();
        let check = explain(&m, &compare, &state, 1_000);
        assert_eq!(
            (check.name.as_str(), check.check.as_str(), check.verdict.as_str()),
            ("request-success-rate", "comparison", "worse")
        );
        assert_eq!((check.canary, check.primary), (Some(0.06), Some(0.02)));
        assert_eq!(
            (check.canary_requests, check.primary_requests),
            (Some(600.0), Some(5400.0))
        );
        assert_eq!(check.bound, "canary/primary <= 1 (alpha 0.05)");
        assert!(check.evidence.is_some_and(|e| e >= 20.0), "{check:?}");
        assert_eq!(check.message, message);
        assert_eq!(check.time.map(|t| t.0.as_second()), Some(1_000));

        state.verdict = "no data".into();
        assert_eq!(explain(&m, &compare, &state, 1_000).verdict, "fail");
    }

    #[test]
    fn a_template_comparison_rolls_back_on_worse_windows_and_holds_without_values() {
        let compare = MetricComparison {
            alpha: Some(0.05),
            ..Default::default()
        };
        let m = CanaryMetric {
            name: "latency".into(),
            compare: Some(compare.clone()),
            template_ref: Some(crate::api::canary::CrossNamespaceRef {
                name: "latency".into(),
                namespace: None,
            }),
            ..Default::default()
        };
        let mut state = MetricComparisonStatus::default();
        let paired = state.paired.get_or_insert_with(Default::default);
        paired.add(None, Some(90.0), Worse::Higher, 1.0);
        assert_eq!(
            judge_paired("web.test", &m, &compare, &mut state, 600, 1_000),
            Outcome::Hold(
                "Holding web.test: latency of web.test has no window with a value on both sides yet (1 without)"
                    .into()
            )
        );
        let paired = state.paired.get_or_insert_with(Default::default);
        for _ in 0..5 {
            paired.add(Some(180.0), Some(90.0), Worse::Higher, 1.0);
        }
        match judge_paired("web.test", &m, &compare, &mut state, 600, 1_010) {
            Outcome::Pass(message) => assert!(
                message.starts_with("latency of web.test compared with the primary: the canary higher in 5 of 5 windows (last: canary 180, primary 90.0); evidence "),
                "{message}"
            ),
            other => panic!("five windows cannot reach 20: {other:?}"),
        }
        assert_eq!(state.held_since, None);
        state
            .paired
            .get_or_insert_with(Default::default)
            .add(Some(181.0), Some(90.0), Worse::Higher, 1.0);
        let Outcome::Worse(message) = judge_paired("web.test", &m, &compare, &mut state, 600, 1_020) else {
            panic!("six worse windows of six reach 1/alpha: {state:?}");
        };
        assert!(
            message.starts_with("Rolling back web.test: latency of the canary is worse than the primary's: the canary higher in 6 of 6 windows"),
            "{message}"
        );
        state.verdict = "worse".into();
        state.message = message;
        let check = explain(&m, &compare, &state, 1_020);
        assert_eq!((check.canary, check.primary), (Some(181.0), Some(90.0)));
        assert_eq!(check.canary_requests, None);
        assert!(check.evidence.is_some_and(|e| e >= 20.0), "{check:?}");
        assert_eq!(
            check.bound,
            "sign test on windows, higher is worse, tolerance 1 (alpha 0.05)"
        );
    }

    #[test]
    fn numbers_read_well_in_a_sentence() {
        assert_eq!(readable(182_790_027_128.5), "1.83e11");
        assert_eq!(readable(0.000_012), "1.20e-5");
        assert_eq!(readable(0.024), "0.024");
        assert_eq!(readable(42.1), "42.1");
        assert_eq!(readable(1000.0), "1000");
        assert_eq!(readable(0.0), "0.000");
    }

    #[test]
    fn too_little_data_holds_until_the_deadline_or_follows_the_policy() {
        let compare = MetricComparison::default();
        let m = metric(compare.clone());
        let mut state = MetricComparisonStatus::default();
        state
            .evidence
            .add(&settings(&compare), &counts(10.0, 5.0, 90.0, 0.0));
        let held = judge("web.test", &m, &compare, &mut state, 600, 1_000);
        assert_eq!(
            held,
            Outcome::Hold("Holding web.test: request-success-rate of web.test has too little data to compare with the primary (10 of 100 canary requests)".into())
        );
        assert_eq!(state.held_since, Some(1_000));
        assert!(matches!(
            judge("web.test", &m, &compare, &mut state, 600, 1_500),
            Outcome::Hold(_)
        ));
        match judge("web.test", &m, &compare, &mut state, 600, 1_601) {
            Outcome::Fail(message) => assert!(
                message.contains("for 601 s, beyond progressDeadlineSeconds"),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
        for (policy, pass) in [("fail", false), ("pass", true)] {
            let compare = MetricComparison {
                no_data: Some(policy.into()),
                ..Default::default()
            };
            let outcome = judge(
                "web.test",
                &metric(compare.clone()),
                &compare,
                &mut state,
                600,
                1_000,
            );
            assert_eq!(matches!(outcome, Outcome::Pass(_)), pass, "{policy}: {outcome:?}");
        }
    }
}
