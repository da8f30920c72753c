//! What `kubectl serin get` and `kubectl serin explain` print, from Canaries (and their events)
//! already read: a row per Canary, the table, and the explanation in sentences. Pure: the time
//! is given, so the outputs are golden-tested.

use serde::Serialize;

use crate::{
    api::{
        Canary,
        canary::{CanaryPhase, CheckStatus, DeploymentStrategy},
    },
    engine::{Answer, Request, requests, weights::next_step_weight},
};

/// One Canary in `get`: what the table shows, and what `--output json|yaml` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    pub name: String,
    pub phase: String,
    pub weight: i32,
    /// The current step and the number of steps (canary: weights; A/B and Blue/Green:
    /// iterations), as `3/5`.
    pub step: String,
    pub failed_checks: i32,
    pub threshold: i32,
    /// Seconds until the next analysis tick while the analysis runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_step_in: Option<i64>,
    /// The last analysis tick's checks, `name value verdict`.
    pub last_checks: Vec<String>,
    /// Who paused the rollout, while a pause holds it (`kubectl serin pause`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_by: Option<String>,
}

/// The canary strategy's weights, step by step, up to the highest (Flagger's steps).
pub fn weights(canary: &Canary) -> Vec<i32> {
    let Some(analysis) = canary.spec.analysis.as_ref() else {
        return Vec::new();
    };
    let max = canary.spec.max_weight();
    let mut out = Vec::new();
    let mut weight = 0;
    while weight < max && out.len() < 100 {
        let step = next_step_weight(analysis, weight);
        if step <= 0 {
            break;
        }
        weight = (weight + step).min(max);
        out.push(weight);
    }
    out
}

/// `3/5`: where the analysis is, in steps of its strategy.
fn step(canary: &Canary) -> String {
    let status = canary.status.clone().unwrap_or_default();
    match canary.spec.deployment_strategy() {
        DeploymentStrategy::Canary => {
            let weights = weights(canary);
            let at = weights
                .iter()
                .position(|w| *w == status.canary_weight)
                .map_or(0, |i| i + 1);
            format!("{at}/{}", weights.len())
        }
        _ => format!("{}/{}", status.iterations, canary.spec.iterations()),
    }
}

fn running(phase: CanaryPhase) -> bool {
    matches!(
        phase,
        CanaryPhase::Progressing | CanaryPhase::Waiting | CanaryPhase::WaitingPromotion
    )
}

/// Seconds until the next analysis tick (`lastTransitionTime` plus the interval), while the
/// analysis runs.
fn next_step_in(canary: &Canary, now: i64) -> Option<i64> {
    let status = canary.status.as_ref()?;
    if !running(status.phase) {
        return None;
    }
    let last = status.last_transition_time.as_ref()?.0.as_second();
    let interval = canary.spec.analysis_interval().as_secs() as i64;
    Some((last + interval - now).max(0))
}

/// A check in a few words: `request-success-rate 99.52 pass`.
fn short(check: &CheckStatus) -> String {
    // A comparison of counts holds shares of bad requests: percentages read better.
    let shown = |v: f64| {
        if check.canary_requests.is_some() {
            format!("{}%", number(v * 100.0))
        } else {
            number(v)
        }
    };
    let value = match (check.canary, check.primary) {
        (Some(c), Some(p)) => format!(" {}/{}", shown(c), shown(p)),
        (Some(c), None) => format!(" {}", shown(c)),
        _ => String::new(),
    };
    format!("{}{value} {}", check.name, check.verdict)
}

pub use crate::analysis::number;

/// Who paused the Canary's run, while a pause holds it, from its requests (`CanaryAction`s).
pub fn paused_by(canary: &Canary, asked: &[Request]) -> Option<String> {
    let status = canary.status.as_ref()?;
    if !matches!(
        status.phase,
        CanaryPhase::Progressing | CanaryPhase::WaitingPromotion
    ) {
        return None;
    }
    requests(asked, status.last_applied_spec.as_deref())
        .paused_by
        .map(str::to_owned)
}

/// A Canary's row; `asked`: its requests.
pub fn row(canary: &Canary, asked: &[Request], now: i64) -> Row {
    let status = canary.status.clone().unwrap_or_default();
    let paused_by = paused_by(canary, asked);
    Row {
        namespace: canary.metadata.namespace.clone().unwrap_or_default(),
        name: canary.metadata.name.clone().unwrap_or_default(),
        phase: status.phase.as_str().to_owned(),
        weight: status.canary_weight,
        step: step(canary),
        failed_checks: status.failed_checks,
        threshold: canary.spec.analysis_threshold(),
        next_step_in: next_step_in(canary, now).filter(|_| paused_by.is_none()),
        last_checks: status.checks.iter().flatten().map(short).collect(),
        paused_by,
    }
}

/// Seconds as kubectl prints ages: `45s`, `3m20s`, `2h5m`.
pub fn duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 if s % 60 == 0 => format!("{}m", s / 60),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ if s % 3600 / 60 == 0 => format!("{}h", s / 3600),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

/// The table of `get`, columns aligned as kubectl aligns them (three spaces apart); with
/// `namespaces` a NAMESPACE column first. `header` false prints the rows only (`--watch`
/// after the first).
pub fn table(rows: &[Row], namespaces: bool, header: bool) -> String {
    let mut lines: Vec<Vec<String>> = Vec::new();
    if header {
        let mut h = vec!["NAME", "PHASE", "WEIGHT", "STEP", "FAILED", "NEXT", "LAST CHECKS"];
        if namespaces {
            h.insert(0, "NAMESPACE");
        }
        lines.push(h.into_iter().map(str::to_owned).collect());
    }
    for r in rows {
        let mut cells = vec![
            r.name.clone(),
            if r.paused_by.is_some() {
                format!("{} (paused)", r.phase)
            } else {
                r.phase.clone()
            },
            format!("{}%", r.weight),
            r.step.clone(),
            format!("{}/{}", r.failed_checks, r.threshold),
            r.next_step_in
                .map_or_else(|| "-".to_owned(), |s| format!("in {}", duration(s))),
            if r.last_checks.is_empty() {
                "-".to_owned()
            } else {
                r.last_checks.join(", ")
            },
        ];
        if namespaces {
            cells.insert(0, r.namespace.clone());
        }
        lines.push(cells);
    }
    let columns = lines.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| lines.iter().map(|l| l[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (c, cell) in line.iter().enumerate() {
            if c + 1 == columns {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}   ", width = widths[c]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// serin's answer to a request as an action prints it: `Ok` with what serin did, `Err` with why
/// it did nothing; `None` before serin answers.
pub fn answer(action: &crate::api::CanaryAction) -> Option<Result<String, String>> {
    let status = action.status.as_ref()?;
    let message = status.message.clone().unwrap_or_default();
    match status.result.as_deref()? {
        "Done" => Some(Ok(message)),
        _ => Some(Err(message)),
    }
}

/// An event of the Canary, for the history in `explain`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Happened {
    /// Unix seconds of its last occurrence.
    pub at: i64,
    pub warning: bool,
    pub message: String,
    pub count: i32,
}

/// What `explain` says, as data (`--output json|yaml`) and as sentences.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    pub canary: String,
    pub phase: String,
    pub state: String,
    pub gates: Vec<String>,
    pub checks: Vec<String>,
    pub comparisons: Vec<String>,
    pub next: String,
    /// Who paused the rollout, while a pause holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_by: Option<String>,
    /// People's requests (`kubectl serin promote ...`) and serin's answers, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<String>,
    pub history: Vec<String>,
}

/// The webhook types that hold a rollout until they answer 2xx.
const GATES: [(&str, &str); 4] = [
    ("confirm-rollout", "before a new revision starts"),
    ("pre-rollout", "before the first traffic"),
    ("confirm-traffic-increase", "before each weight increase"),
    ("confirm-promotion", "before promotion"),
];

/// Explains a Canary: its state, gates, checks of the last tick, comparisons, what comes next,
/// people's requests (`asked`) and its recent events (newest last).
pub fn explain(canary: &Canary, asked: &[Request], events: &[Happened], now: i64) -> Explanation {
    let name = format!(
        "{}.{}",
        canary.metadata.name.as_deref().unwrap_or_default(),
        canary.metadata.namespace.as_deref().unwrap_or_default()
    );
    let status = canary.status.clone().unwrap_or_default();
    let row = row(canary, asked, now);
    let threshold = canary.spec.analysis_threshold();
    let interval = duration(canary.spec.analysis_interval().as_secs() as i64);
    let strategy = canary.spec.deployment_strategy();
    let state = match status.phase {
        CanaryPhase::Progressing | CanaryPhase::Waiting | CanaryPhase::WaitingPromotion => format!(
            "{name} is {}: the canary has {}% of the traffic ({} {}), {} of {threshold} failed checks.",
            status.phase.as_str(),
            status.canary_weight,
            match strategy {
                DeploymentStrategy::Canary => "step",
                _ => "iteration",
            },
            row.step.replace('/', " of "),
            status.failed_checks,
        ),
        CanaryPhase::Promoting | CanaryPhase::Finalising => format!(
            "{name} is {}: the analysis passed and the primary takes the canary's revision.",
            status.phase.as_str()
        ),
        CanaryPhase::Succeeded => {
            format!("{name} is Succeeded: its last revision was promoted; it waits for a new one.")
        }
        CanaryPhase::Failed => format!(
            "{name} is Failed: its last revision was rolled back and the primary kept serving; it waits for a new revision."
        ),
        CanaryPhase::Initialized => format!("{name} is Initialized: it waits for a new revision."),
        phase => format!("{name} is {}.", phase.as_str()),
    };
    let hooks = canary
        .spec
        .analysis
        .as_ref()
        .and_then(|a| a.webhooks.clone())
        .unwrap_or_default();
    let gates = GATES
        .iter()
        .flat_map(|(kind, when)| {
            hooks
                .iter()
                .filter(move |h| h.hook_type() == *kind)
                .map(move |h| format!("{kind} gate {} ({}) must answer 2xx {when}.", h.name, h.url))
        })
        .collect();
    let checks = status
        .checks
        .iter()
        .flatten()
        .map(|c| {
            let at = c
                .time
                .as_ref()
                .map(|t| format!(" ({} ago)", duration(now - t.0.as_second())))
                .unwrap_or_default();
            let bound = if c.bound.is_empty() {
                String::new()
            } else {
                format!(" [{}]", c.bound)
            };
            format!("{}: {}{bound}{at}: {}", c.name, c.verdict, c.message)
        })
        .collect();
    let comparisons = status
        .comparisons
        .iter()
        .flatten()
        .map(|(metric, c)| {
            let held = c
                .held_since
                .map(|since| format!(", holding for lack of data for {}", duration(now - since)))
                .unwrap_or_default();
            let t = &c.evidence.totals;
            let counted = match &c.paired {
                Some(p) => format!("{} windows compared, the canary worse in {}", p.windows, p.worse),
                None => format!(
                    "{} canary and {} primary requests counted",
                    number(t.canary_requests),
                    number(t.primary_requests)
                ),
            };
            format!(
                "{metric}: {} at the last look; {counted}, up to {} ago{held}.",
                c.verdict,
                duration(now - c.counted_until)
            )
        })
        .collect();
    let short_name = canary.metadata.name.as_deref().unwrap_or_default();
    let next = match status.phase {
        _ if row.paused_by.is_some() => format!(
            "Paused by {}: no step and no analysis until `kubectl serin resume {short_name}` (or a new revision, which starts over).",
            row.paused_by.as_deref().unwrap_or_default()
        ),
        CanaryPhase::Progressing | CanaryPhase::Waiting | CanaryPhase::WaitingPromotion => {
            let when = row
                .next_step_in
                .map_or_else(String::new, |s| format!(" in {}", duration(s)));
            let after = match strategy {
                DeploymentStrategy::Canary => {
                    let next = weights(canary).into_iter().find(|w| *w > status.canary_weight);
                    match next {
                        Some(w) => format!("the canary goes to {w}%"),
                        None => "the canary is promoted".to_owned(),
                    }
                }
                _ if status.iterations + 1 >= canary.spec.iterations() => "the canary is promoted".to_owned(),
                _ => format!(
                    "iteration {} of {} runs",
                    status.iterations + 1,
                    canary.spec.iterations()
                ),
            };
            format!(
                "The next analysis tick is{when} (interval {interval}): if its checks pass, {after}; a failed check makes {} of {threshold}, and at {threshold} the canary is rolled back.",
                status.failed_checks + 1
            )
        }
        CanaryPhase::Promoting | CanaryPhase::Finalising => {
            "The primary becomes ready with the new revision, then the canary is scaled to zero.".to_owned()
        }
        _ => {
            "A change of the target's pod template or of a tracked ConfigMap or Secret starts a new analysis."
                .to_owned()
        }
    };
    let history = events
        .iter()
        .map(|e| {
            let times = if e.count > 1 {
                format!(" (x{})", e.count)
            } else {
                String::new()
            };
            format!(
                "{} ago{}: {}{times}",
                duration(now - e.at),
                if e.warning { " Warning" } else { "" },
                e.message
            )
        })
        .collect();
    let mut sorted: Vec<&Request> = asked.iter().collect();
    sorted.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    let requests = sorted
        .into_iter()
        .map(|r| {
            let action = match r.operation {
                Some(crate::engine::Operation::Promote { full: true }) => "promote --full".to_owned(),
                _ => r.action.clone(),
            };
            let ago = duration(now - r.created);
            match &r.answer {
                // serin's answers name who asked.
                Some(Answer::Done(m) | Answer::Ignored(m)) => {
                    format!("{ago} ago, {action} for revision {}: {m}", r.revision)
                }
                None => format!(
                    "{ago} ago, {action} by {} for revision {}: not answered yet",
                    r.by, r.revision
                ),
            }
        })
        .collect();
    Explanation {
        canary: name,
        phase: status.phase.as_str().to_owned(),
        state,
        gates,
        checks,
        comparisons,
        next,
        paused_by: row.paused_by.clone(),
        requests,
        history,
    }
}

/// The explanation as text: sections with a title each, empty ones left out.
pub fn explanation_text(e: &Explanation) -> String {
    let mut out = format!("{}\n{}\n", e.state, e.next);
    for (title, lines) in [
        ("Gates", &e.gates),
        ("Checks of the last analysis tick", &e.checks),
        ("Comparisons with the primary", &e.comparisons),
        ("Requests", &e.requests),
        ("Recent events", &e.history),
    ] {
        if lines.is_empty() {
            continue;
        }
        out.push_str(&format!("\n{title}:\n"));
        for line in lines {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_kubectl_prints_them() {
        assert_eq!(duration(-3), "0s");
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(120), "2m");
        assert_eq!(duration(200), "3m20s");
        assert_eq!(duration(7200), "2h");
        assert_eq!(duration(7500), "2h5m");
    }

    #[test]
    fn numbers_drop_trailing_zeros() {
        assert_eq!(number(99.5), "99.5");
        assert_eq!(number(100.0), "100");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(0.0012), "1.20e-3");
    }
}
