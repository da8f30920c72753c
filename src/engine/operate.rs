//! People's requests (`kubectl serin promote|abort|retry|pause|resume`, one `CanaryAction` each):
//! which one to answer next and whether a pause holds the Canary ([`requests`]), and what
//! answering one decides ([`operate`]). A request names the revision it applies to; one for a
//! revision that is no longer current is ignored, and every answer is an event naming who asked.
//! Pure.

use super::*;

/// What a person may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Skip the remaining steps once the analysis passes now; `full`: skip the analysis too.
    Promote { full: bool },
    /// Roll back now.
    Abort,
    /// Run the failed revision again.
    Retry,
    /// Hold the run where it is: no step, no analysis.
    Pause,
    /// Go on after a pause.
    Resume,
}

impl Operation {
    /// From `spec.action` (and `spec.full`); `None` for an action serin does not know.
    pub fn parse(action: &str, full: bool) -> Option<Self> {
        Some(match action {
            "promote" => Self::Promote { full },
            "abort" => Self::Abort,
            "retry" => Self::Retry,
            "pause" => Self::Pause,
            "resume" => Self::Resume,
            _ => return None,
        })
    }
}

/// A request, as the controller read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The object's name (`podinfo-promote-x7k2p`).
    pub name: String,
    /// `spec.action` as written.
    pub action: String,
    pub operation: Option<Operation>,
    /// The revision it applies to (`status.lastAppliedSpec` when it was asked).
    pub revision: String,
    /// Who asked.
    pub by: String,
    /// Seconds since the Unix epoch it was created: requests are answered in this order.
    pub created: i64,
    /// serin's answer, once given.
    pub answer: Option<Answer>,
}

/// serin's answer to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Carried out; what was done.
    Done(String),
    /// Not carried out; why.
    Ignored(String),
}

impl Request {
    /// A `CanaryAction` as a request, with the answer its status holds.
    pub fn of(action: &crate::api::CanaryAction) -> Self {
        let answer = action.status.as_ref().and_then(|s| {
            let message = s.message.clone().unwrap_or_default();
            match s.result.as_deref()? {
                "Done" => Some(Answer::Done(message)),
                _ => Some(Answer::Ignored(message)),
            }
        });
        Self {
            name: action.metadata.name.clone().unwrap_or_default(),
            action: action.spec.action.clone(),
            operation: Operation::parse(&action.spec.action, action.spec.full),
            revision: action.spec.revision.clone(),
            by: action.requester().to_owned(),
            created: action
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second()),
            answer,
        }
    }
}

impl Answer {
    pub fn result(&self) -> &'static str {
        match self {
            Self::Done(_) => "Done",
            Self::Ignored(_) => "Ignored",
        }
    }
    pub fn message(&self) -> &str {
        match self {
            Self::Done(m) | Self::Ignored(m) => m,
        }
    }
}

/// The requests of one Canary, in the order they were made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requests<'a> {
    /// The oldest request not answered yet: the one to answer now.
    pub pending: Option<&'a Request>,
    /// Who paused the current revision, when a pause holds it: the last request carried out for
    /// it was a pause.
    pub paused_by: Option<&'a str>,
}

/// Which request to answer now and whether a pause holds `revision` (the Canary's
/// `status.lastAppliedSpec`), from the Canary's requests in any order.
pub fn requests<'a>(all: &'a [Request], revision: Option<&str>) -> Requests<'a> {
    let mut sorted: Vec<&Request> = all.iter().collect();
    sorted.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    let pending = sorted.iter().find(|r| r.answer.is_none()).copied();
    let paused_by = sorted
        .iter()
        .rev()
        .find(|r| Some(r.revision.as_str()) == revision && matches!(r.answer, Some(Answer::Done(_))))
        .filter(|r| r.operation == Some(Operation::Pause))
        .map(|r| r.by.as_str());
    Requests { pending, paused_by }
}

impl Decision {
    fn answered(mut self, answer: Answer) -> Self {
        self.answer = Some(answer);
        self
    }
}

/// Answers a request: what to do, with the answer in [`Decision::answer`] (unless the decision
/// needs a check first).
pub(super) fn operate(input: &Input, request: &Request) -> Decision {
    let canary = input.canary();
    let by = request.by.as_str();
    let ignore = |reason: String| {
        let message = format!("Ignored {} of {canary} asked by {by}: {reason}", request.action);
        Decision::default()
            .event(Event::warning(message.clone()))
            .answered(Answer::Ignored(message))
            // Answering took this reconcile: the Canary's own decision follows at once.
            .requeue(Duration::ZERO)
    };
    let Some(operation) = request.operation else {
        return ignore(format!(
            "serin knows no action {:?} (promote, abort, retry, pause, resume)",
            request.action
        ));
    };
    if input.spec.is_suspended() {
        return ignore("the Canary is suspended (spec.suspend)".into());
    }
    let status = input.status;
    let current = status.last_applied_spec.as_deref().unwrap_or_default();
    if request.revision != current {
        return ignore(format!(
            "revision {} is no longer current; the Canary's revision is {}",
            request.revision,
            if current.is_empty() {
                "not recorded yet"
            } else {
                current
            }
        ));
    }
    let phase = status.phase;
    let running = matches!(phase, CanaryPhase::Progressing | CanaryPhase::WaitingPromotion);
    let promoting = matches!(phase, CanaryPhase::Promoting | CanaryPhase::Finalising);
    let not_running = || {
        if promoting {
            "its promotion has already started".to_owned()
        } else {
            format!("no analysis is running (phase {})", phase_name(phase))
        }
    };
    match operation {
        Operation::Promote { full } => {
            if !running {
                return ignore(not_running());
            }
            promote_now(input, request, full, ignore)
        }
        Operation::Abort => {
            if !running {
                return ignore(not_running());
            }
            let message = format!("Rolling back {canary} as asked by {by}");
            let d = Decision::default().event(Event::warning(message.clone())).alert(
                Severity::Warn,
                format!("Rolling back as asked by {by}"),
                false,
            );
            rollback(input, d, false).answered(Answer::Done(message))
        }
        Operation::Retry => {
            if phase != CanaryPhase::Failed {
                return ignore(format!(
                    "only a failed revision is retried; the Canary is {}",
                    phase_name(phase)
                ));
            }
            if input.changed() {
                return ignore("a new revision is about to start".into());
            }
            if status.last_promoted_spec.as_deref() == Some(current) {
                return ignore(format!("revision {current} is the promoted one"));
            }
            let message = format!("Retrying revision {current} of {canary} as asked by {by}");
            let d = start_run(input, true);
            if d.need.is_some() {
                return d;
            }
            let mut d = d.answered(Answer::Done(message.clone()));
            d.events.insert(0, Event::normal(message));
            d
        }
        Operation::Pause => {
            if !running {
                return ignore(not_running());
            }
            if let Some(paused_by) = input.paused_by {
                return ignore(format!("it is already paused (by {paused_by})"));
            }
            let message =
                format!("Paused {canary} as asked by {by}: no step and no analysis until it is resumed");
            Decision::default()
                .event(Event::normal(message.clone()))
                .answered(Answer::Done(message))
        }
        Operation::Resume => {
            if input.paused_by.is_none() {
                return ignore("it is not paused".into());
            }
            let message = format!("Resumed {canary} as asked by {by}");
            Decision::default()
                .event(Event::normal(message.clone()))
                .answered(Answer::Done(message))
                .requeue(Duration::ZERO)
        }
    }
}

/// Promotion asked for during a run: once the analysis passes now (at once with `full`), the
/// remaining steps and gates are skipped.
fn promote_now(
    input: &Input,
    request: &Request,
    full: bool,
    ignore: impl Fn(String) -> Decision,
) -> Decision {
    let Some(routes) = input.observed.routes else {
        return ignore("its routing is not in place yet".into());
    };
    if let Readiness::Waiting(m) | Readiness::Failed(m) = &input.observed.canary {
        return ignore(format!("the canary is not ready: {m}"));
    }
    match &input.observed.primary {
        Some(Readiness::Ready) => {}
        None => return ignore("the primary does not exist yet".into()),
        Some(Readiness::Waiting(m) | Readiness::Failed(m)) => {
            return ignore(format!("the primary is not ready: {m}"));
        }
    }
    let (canary, by) = (input.canary(), request.by.as_str());
    let mut d = Decision::default();
    let message = if full || input.spec.skip_analysis() {
        format!("Promoting {canary} as asked by {by}, without the analysis")
    } else {
        match input.check(Check::Analysis, None) {
            None => return Decision::need(Check::Analysis),
            Some(CheckResult::Passed(events)) => d = d.events(events),
            Some(CheckResult::Failed(events) | CheckResult::Held(events)) => {
                let mut refused = ignore("the analysis did not pass now".into());
                refused.events.splice(0..0, events.iter().cloned());
                return refused;
            }
            Some(CheckResult::Worse(events)) => {
                let message = format!(
                    "Ignored promote of {canary} asked by {by}: the comparison with the primary shows the canary worse; rolled back"
                );
                return rollback(input, Decision::default().events(events), false)
                    .event(Event::warning(message.clone()))
                    .answered(Answer::Ignored(message));
            }
        }
        format!("Promoting {canary} as asked by {by}: the analysis passed, the remaining steps are skipped")
    };
    promote(input, d.event(Event::normal(message.clone())), routes.canary).answered(Answer::Done(message))
}

fn phase_name(phase: CanaryPhase) -> &'static str {
    match phase {
        CanaryPhase::Unset => "not initialised",
        other => other.as_str(),
    }
}
