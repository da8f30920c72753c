//! The replay of `serin simulate`: the engine's decisions for a Canary over a past time range,
//! its metric checks answered from recorded range-query results, each analysis tick as a step
//! (time, phase, weight, check values, decision). Webhooks and gates are taken as passing, and
//! the comparisons with the primary (`metrics[].compare`) are not replayed: the threshold checks
//! alone judge. Pure: the same recording gives the same replay.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    analysis,
    api::{Canary, CanaryPhase, CanaryStatus, canary::CanaryMetric},
    controller::report::next_status,
    engine::{self, Action, Check, CheckResult, Event, Input, Observed, Outcome, Readiness, Routes},
};

/// Range-query results: what a replay reads (`--record` writes it, `--recorded` reads it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recording {
    /// `name.namespace` of the Canary recorded.
    pub canary: String,
    /// The range, in Unix seconds, and the step of its samples.
    pub from: i64,
    pub to: i64,
    pub step: i64,
    pub series: Vec<Series>,
}

/// One metric's query and its value at each step (`null`: no value).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub metric: String,
    pub query: String,
    pub values: Vec<(i64, Option<f64>)>,
}

impl Series {
    /// The last sample at or before `t` (`None` when it has no value, or none is that old).
    fn at(&self, t: i64) -> Option<f64> {
        self.values
            .iter()
            .take_while(|(time, _)| *time <= t)
            .last()
            .and_then(|(_, v)| *v)
    }
}

/// A metric's value at a step, against its bound.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Checked {
    pub metric: String,
    pub value: Option<f64>,
    pub bound: String,
    /// `pass`, `fail` or `no data`.
    pub verdict: String,
}

/// One decision of the replay.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Unix seconds.
    pub time: i64,
    pub phase: String,
    pub weight: i32,
    pub failed_checks: i32,
    /// The metric checks of this step (an analysis tick), in the controller's order.
    pub checks: Vec<Checked>,
    /// The decision, as the controller's events say it.
    pub events: Vec<String>,
}

/// A replay: its steps and how the run ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Replay {
    pub canary: String,
    pub from: i64,
    pub to: i64,
    pub interval_seconds: i64,
    pub steps: Vec<Step>,
    /// `promoted`, `rolled back` or `undecided` (the range ended first).
    pub outcome: String,
    /// When the outcome was reached (the end of the range when undecided).
    pub decided_at: i64,
    /// What the replay took as given.
    pub assumptions: Vec<String>,
}

/// The metrics a replay checks against their bounds, in the controller's order (inline and
/// builtin metrics first, then template metrics); a comparison alone (`compare` without a
/// bound) is not replayed.
pub fn threshold_metrics(canary: &Canary) -> Vec<&CanaryMetric> {
    let metrics: Vec<&CanaryMetric> = canary
        .spec
        .analysis
        .as_ref()
        .and_then(|a| a.metrics.as_ref())
        .map(|m| m.iter().collect())
        .unwrap_or_default();
    let bounded =
        |m: &&CanaryMetric| m.compare.is_none() || m.threshold_range.is_some() || m.threshold.is_some();
    let (templated, direct): (Vec<&CanaryMetric>, Vec<&CanaryMetric>) = metrics
        .into_iter()
        .filter(bounded)
        .partition(|m| m.template_ref.is_some());
    direct.into_iter().chain(templated).collect()
}

/// Replays the Canary's analysis from `from` to `to` (Unix seconds): a new revision arrives at
/// `from`, and the engine decides at each wake-up, its metric checks answered from `series` (by
/// metric name).
pub fn replay(canary: &Canary, series: &[Series], from: i64, to: i64) -> Replay {
    let name = canary.metadata.name.clone().unwrap_or_default();
    let namespace = canary.metadata.namespace.clone().unwrap_or_default();
    let canary_name = format!("{name}.{namespace}");
    let target = canary.spec.target_ref.name.clone();
    let interval = canary.spec.analysis_interval().as_secs().max(1) as i64;
    let by_metric: BTreeMap<&str, &Series> = series.iter().map(|s| (s.metric.as_str(), s)).collect();
    let metrics = threshold_metrics(canary);
    let mut assumptions = vec!["webhooks and gates pass".to_owned()];
    if canary
        .spec
        .analysis
        .as_ref()
        .and_then(|a| a.metrics.as_ref())
        .is_some_and(|m| m.iter().any(|m| m.compare.is_some()))
    {
        assumptions.push("comparisons with the primary (compare) are not replayed".to_owned());
    }
    let at = |t: i64| jiff::Timestamp::from_second(t).unwrap_or_default();
    // Idle with a promoted revision; a new one arrives at `from`.
    let mut status = CanaryStatus {
        phase: CanaryPhase::Succeeded,
        last_applied_spec: Some("promoted".into()),
        last_promoted_spec: Some("promoted".into()),
        tracked_configs: Some(BTreeMap::new()),
        last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(from))),
        ..CanaryStatus::default()
    };
    let mut routes = Routes {
        primary: 100,
        canary: 0,
        mirrored: false,
    };
    let mut steps = Vec::new();
    let mut t = from;
    let mut outcome = None;
    let mut zero_in_a_row = 0;
    while t <= to && outcome.is_none() {
        let observed = Observed {
            target_hash: "replayed".into(),
            configs: BTreeMap::new(),
            canary: Readiness::Ready,
            primary: Some(Readiness::Ready),
            routes: Some(routes),
            now: t,
            last_transition: status.last_transition_time.as_ref().map(|t| t.0.as_second()),
            random: "abcdefghijklmnopqrst".into(),
            routing_drift: false,
            primary_current: false,
            look_every: None,
        };
        let mut results = BTreeMap::new();
        let mut checked = Vec::new();
        let decision = loop {
            let d = engine::decide(&Input {
                name: &name,
                namespace: &namespace,
                spec: &canary.spec,
                status: &status,
                observed: &observed,
                checks: &results,
                request: None,
                paused_by: None,
            });
            let Some(check) = d.need else { break d };
            if results.contains_key(&check) {
                break d;
            }
            let result = match check {
                Check::Analysis => {
                    let (result, values) =
                        analyse(&canary_name, &target, &namespace, &metrics, &by_metric, t);
                    checked = values;
                    result
                }
                _ => CheckResult::Passed(Vec::new()),
            };
            results.insert(check, result);
        };
        // A failed check that ends the run resets the counter: the step shows the count it made.
        let failed_now = matches!(results.get(&Check::Analysis), Some(CheckResult::Failed(_)));
        let failed_before = status.failed_checks;
        if let Some(update) = &decision.status {
            status = next_status(&status, update, &canary.spec.target_ref.kind, at(t));
        }
        let failed_checks = if failed_now {
            failed_before + 1
        } else {
            status.failed_checks
        };
        for action in &decision.actions {
            if let Action::SetRoutes(r) = action {
                routes = *r;
            }
        }
        if !decision.events.is_empty() || decision.analysis_tick {
            steps.push(Step {
                time: t,
                phase: status.phase.as_str().to_owned(),
                weight: status.canary_weight,
                failed_checks,
                checks: checked,
                events: decision
                    .events
                    .iter()
                    .map(|e: &Event| e.message.clone())
                    .collect(),
            });
        }
        outcome = decision.outcome.map(|o| (o, t));
        match decision.requeue_after {
            Some(d) if d.is_zero() && zero_in_a_row < 20 => zero_in_a_row += 1,
            Some(d) => {
                zero_in_a_row = 0;
                t += (d.as_secs() as i64).max(1);
            }
            // Waiting for a change that a replay never brings.
            None => break,
        }
    }
    let (outcome, decided_at) = match outcome {
        Some((Outcome::Succeeded { .. }, t)) => ("promoted", t),
        Some((Outcome::Failed, t)) => ("rolled back", t),
        None => ("undecided", to),
    };
    Replay {
        canary: canary_name,
        from,
        to,
        interval_seconds: interval,
        steps,
        outcome: outcome.to_owned(),
        decided_at,
        assumptions,
    }
}

/// One analysis tick at `t`: every metric's value against its bound; the check fails at the
/// first metric that fails, with the controller's message.
fn analyse(
    canary: &str,
    target: &str,
    namespace: &str,
    metrics: &[&CanaryMetric],
    series: &BTreeMap<&str, &Series>,
    t: i64,
) -> (CheckResult, Vec<Checked>) {
    let mut checked = Vec::new();
    let mut failure = None;
    for metric in metrics {
        let value = series.get(metric.name.as_str()).and_then(|s| s.at(t));
        let halt = match value {
            None => Some(analysis::no_values(metric, target, namespace)),
            Some(v) => analysis::verdict(canary, metric, v),
        };
        checked.push(Checked {
            metric: metric.name.clone(),
            value,
            bound: analysis::bound(metric),
            verdict: match (&halt, value) {
                (_, None) => "no data",
                (Some(_), _) => "fail",
                (None, _) => "pass",
            }
            .to_owned(),
        });
        if failure.is_none() {
            failure = halt;
        }
    }
    let result = match failure {
        Some(message) => CheckResult::Failed(vec![Event::warning(message)]),
        None => CheckResult::Passed(Vec::new()),
    };
    (result, checked)
}

/// The replay as a table, then how it ended.
pub fn text(replay: &Replay) -> String {
    let at = |t: i64| jiff::Timestamp::from_second(t).map_or_else(|_| t.to_string(), |ts| ts.to_string());
    let mut out = format!(
        "Replaying {} from {} to {}, an analysis tick every {}s ({}).\n\n",
        replay.canary,
        at(replay.from),
        at(replay.to),
        replay.interval_seconds,
        replay.assumptions.join("; ")
    );
    let mut lines = vec![vec![
        "TIME".to_owned(),
        "PHASE".to_owned(),
        "WEIGHT".to_owned(),
        "FAILED".to_owned(),
        "CHECKS".to_owned(),
        "DECISION".to_owned(),
    ]];
    for step in &replay.steps {
        let checks = if step.checks.is_empty() {
            "-".to_owned()
        } else {
            step.checks
                .iter()
                .map(|c| {
                    let value = c.value.map_or_else(|| "-".to_owned(), analysis::number);
                    format!("{} {value} [{}] {}", c.metric, c.bound, c.verdict)
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        lines.push(vec![
            format!("+{}s", step.time - replay.from),
            step.phase.clone(),
            format!("{}%", step.weight),
            step.failed_checks.to_string(),
            checks,
            step.events.join("; "),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| lines.iter().map(|l| l[c].chars().count()).max().unwrap_or(0))
        .collect();
    for line in &lines {
        let mut text = String::new();
        for (c, cell) in line.iter().enumerate() {
            if c == 5 {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}   ", width = widths[c]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    let when = format!(
        "{} (+{}s)",
        at(replay.decided_at),
        replay.decided_at - replay.from
    );
    out.push_str(&match replay.outcome.as_str() {
        "promoted" => format!("\nWould have promoted at {when}.\n"),
        "rolled back" => format!("\nWould have rolled back at {when}.\n"),
        _ => format!(
            "\nNo decision by {when}: still {} at {}%.\n",
            replay.steps.last().map_or("Succeeded", |s| s.phase.as_str()),
            replay.steps.last().map_or(0, |s| s.weight)
        ),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary() -> Canary {
        serde_yaml::from_str(
            r"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: podinfo, namespace: test}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service: {port: 9898}
  analysis:
    interval: 10s
    threshold: 2
    maxWeight: 30
    stepWeight: 10
    metrics:
      - {name: request-success-rate, interval: 30s, thresholdRange: {min: 99}}
",
        )
        .expect("canary")
    }

    fn series(values: &[Option<f64>]) -> Vec<Series> {
        vec![Series {
            metric: "request-success-rate".into(),
            query: String::new(),
            values: values
                .iter()
                .enumerate()
                .map(|(i, v)| (i as i64 * 10, *v))
                .collect(),
        }]
    }

    fn weights(r: &Replay) -> Vec<i32> {
        let mut out: Vec<i32> = r.steps.iter().map(|s| s.weight).collect();
        out.dedup();
        out
    }

    #[test]
    fn passing_checks_step_up_to_the_maximum_then_promote() {
        let r = replay(&canary(), &series(&[Some(100.0); 10]), 0, 90);
        assert_eq!(r.outcome, "promoted");
        assert_eq!(weights(&r), [0, 10, 20, 30, 0]);
        assert_eq!(r.decided_at, 30, "promoted at the tick after the last step");
        let last = r.steps.last().expect("steps");
        assert!(
            last.events.iter().any(|e| e.starts_with("Promotion completed!")),
            "{last:?}"
        );
    }

    #[test]
    fn no_data_and_low_values_fail_checks_until_the_threshold_rolls_back() {
        let r = replay(&canary(), &series(&[Some(100.0), None, Some(97.5)]), 0, 90);
        assert_eq!(r.outcome, "rolled back");
        assert_eq!(r.decided_at, 20);
        let ticks: Vec<(&str, i32)> = r
            .steps
            .iter()
            .filter(|s| !s.checks.is_empty())
            .map(|s| (s.checks[0].verdict.as_str(), s.failed_checks))
            .collect();
        assert_eq!(ticks, [("no data", 1), ("fail", 2)]);
        assert!(
            r.steps
                .last()
                .expect("steps")
                .events
                .iter()
                .any(|e| e == "Rolling back podinfo.test failed checks threshold reached 2")
        );
    }

    #[test]
    fn a_range_too_short_is_undecided() {
        let r = replay(&canary(), &series(&[Some(100.0); 10]), 0, 15);
        assert_eq!(r.outcome, "undecided");
        assert!(text(&r).contains("No decision by"));
    }
}
