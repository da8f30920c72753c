//! The canary state machine: every phase transition, weight step, threshold and verdict, as a
//! pure function of the Canary, what was observed and the results of the checks run so far.
//!
//! The controller calls [`decide`] with no check results; when the decision needs a check (a
//! webhook gate, the analysis), it says which in [`Decision::need`], the controller runs it and
//! calls [`decide`] again with the result. Nothing here does I/O.
//!
//! Before it, [`admit`] says whether a Canary may be decided at all. The files, by concern:
//! `model` (what `decide` reads and returns), `lifecycle` (initialising, starting a run, the run
//! in progress, failed checks, rollback, skipping the analysis), one file per strategy taking the
//! step (`canary`, `ab`, `blue_green`), `promotion` (the gate, the copy, the shift back,
//! finalising) and `affinity` (session cookies). `weights`, `readiness` and `revision` hold the
//! rules those use; `build` the objects the actions write.

mod ab;
mod admit;
mod affinity;
mod blue_green;
pub mod build;
mod canary;
mod lifecycle;
mod model;
mod operate;
mod promotion;
pub mod readiness;
pub mod revision;
pub mod weights;

use std::{collections::BTreeMap, time::Duration};

use crate::api::canary::{CanaryPhase, CanarySpec, CanaryStatus, DeploymentStrategy};
pub use readiness::Readiness;

use ab::*;
pub use admit::{Admission, Admit, CACHES_RETRY, STALE_RETRY, admit, target_owner};
use affinity::*;
use blue_green::*;
use canary::*;
use lifecycle::*;
pub use model::*;
pub use operate::{Answer, Operation, Request, Requests, requests};
use promotion::*;

/// Decides the next step for a Canary.
pub fn decide(input: &Input) -> Decision {
    let decided = match input.request {
        Some(request) => operate::operate(input, request),
        None => decide_phase(input),
    };
    let mut d = with_session_affinity(input, decided);
    // Drift is corrected with the weights kept, whatever the phase.
    let routes_written = d
        .actions
        .iter()
        .any(|a| matches!(a, Action::EnsureRouting | Action::SetRoutes(_)));
    if input.observed.routing_drift
        && !routes_written
        && d.need.is_none()
        && !input.spec.is_suspended()
        && !matches!(
            input.status.phase,
            // Before the primary is ready the routing is not serin's yet.
            CanaryPhase::Unset
                | CanaryPhase::Initializing
                | CanaryPhase::Terminating
                | CanaryPhase::Terminated
        )
    {
        d.actions.insert(0, Action::EnsureRouting);
    }
    d
}

fn decide_phase(input: &Input) -> Decision {
    let status = input.status;
    let phase = status.phase;
    if input.spec.is_suspended() {
        return Decision::default().event(Event::normal("skipping canary run as object is suspended"));
    }
    // A pause holds a run of its revision: no step, no analysis, no deadline; a new revision
    // starts over unpaused. A resume (or any other request) wakes it.
    if input.paused_by.is_some()
        && matches!(phase, CanaryPhase::Progressing | CanaryPhase::WaitingPromotion)
        && !input.changed()
    {
        return Decision::default();
    }
    match phase {
        CanaryPhase::Unset | CanaryPhase::Initializing => initialize(input),
        CanaryPhase::Initialized | CanaryPhase::Succeeded | CanaryPhase::Failed | CanaryPhase::Waiting => {
            start_run(input, false)
        }
        CanaryPhase::Progressing
        | CanaryPhase::WaitingPromotion
        | CanaryPhase::Promoting
        | CanaryPhase::Finalising => advance(input),
        CanaryPhase::Terminating | CanaryPhase::Terminated => Decision::default(),
    }
}

#[cfg(test)]
mod tests;
