//! People's requests on a Canary (`CanaryAction` objects, made by `kubectl serin promote ...`):
//! reading a Canary's requests from the cache, writing serin's answer into each one's status
//! (once), and keeping the last [`KEEP`] answered ones per Canary. What a request decides is the
//! engine's (`engine::operate`). Does I/O (Kubernetes API).

use std::{collections::HashMap, sync::Mutex, time::Instant};

use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;

use super::{Context, Error};
use crate::{
    api::{Canary, CanaryAction},
    engine::{Answer, Request},
};

/// Answered requests kept per Canary (the history `kubectl serin explain` shows); older ones are
/// deleted.
pub const KEEP: usize = 20;

/// How long an answer written but not shown by the cache yet is trusted before it is written
/// again (the write may have been lost).
const RESEND_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// The answers serin gave, by the request's UID, until the cache shows them: a request answered
/// a moment ago is never answered a second time because the watch lags.
#[derive(Debug, Default)]
pub struct Answers(Mutex<HashMap<String, (Answer, Instant)>>);

impl Answers {
    fn get(&self, uid: &str) -> Option<(Answer, Instant)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(uid).cloned()
    }
    fn insert(&self, uid: &str, answer: Answer) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.to_owned(), (answer, Instant::now()));
    }
    fn forget(&self, uid: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(uid);
    }
}

/// The Canary's requests from the cache, with the answers serin gave that the cache does not
/// show yet.
pub fn of(ctx: &Context, canary: &Canary) -> Vec<(CanaryAction, Request)> {
    let ns = canary.namespace().unwrap_or_default();
    let name = canary.name_any();
    let mut out = Vec::new();
    for action in ctx.actions.state() {
        if action.namespace().as_deref() != Some(ns.as_str()) || action.spec.canary != name {
            continue;
        }
        let uid = action.uid().unwrap_or_default();
        let mut request = Request::of(&action);
        if request.answer.is_some() {
            ctx.answers.forget(&uid);
        } else {
            request.answer = ctx.answers.get(&uid).map(|(a, _)| a);
        }
        out.push(((*action).clone(), request));
    }
    out
}

/// Writes serin's answer into the request's status.
pub async fn answer(ctx: &Context, action: &CanaryAction, answer: &Answer) -> Result<(), Error> {
    let uid = action.uid().unwrap_or_default();
    ctx.answers.insert(&uid, answer.clone());
    write(ctx, action, answer).await
}

async fn write(ctx: &Context, action: &CanaryAction, answer: &Answer) -> Result<(), Error> {
    let api: Api<CanaryAction> = Api::namespaced(ctx.client.clone(), &action.namespace().unwrap_or_default());
    let status = json!({
        "status": {
            "result": answer.result(),
            "message": answer.message(),
            "handledAt": jiff::Timestamp::now().to_string(),
        }
    });
    match api
        .patch_status(
            &action.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Deleted meanwhile: nothing to answer.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(err) => Err(Error::Status(err)),
    }
}

/// Writes again the answers the cache still does not show after [`RESEND_AFTER`], and deletes
/// the answered requests beyond the last [`KEEP`].
pub async fn tidy(ctx: &Context, requests: &[(CanaryAction, Request)]) -> Result<(), Error> {
    for (action, _) in requests {
        if action.handled() {
            continue;
        }
        if let Some((answer, at)) = ctx.answers.get(&action.uid().unwrap_or_default())
            && at.elapsed() >= RESEND_AFTER
        {
            ctx.answers
                .insert(&action.uid().unwrap_or_default(), answer.clone());
            write(ctx, action, &answer).await?;
        }
    }
    for (action, _) in beyond_keep(requests) {
        let api: Api<CanaryAction> =
            Api::namespaced(ctx.client.clone(), &action.namespace().unwrap_or_default());
        match api.delete(&action.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(err) => {
                tracing::warn!(action = %action.name_any(), error = %err, "deleting an old CanaryAction failed")
            }
        }
    }
    Ok(())
}

/// The answered requests older than the last [`KEEP`] answered ones. Pure.
fn beyond_keep(requests: &[(CanaryAction, Request)]) -> Vec<&(CanaryAction, Request)> {
    let mut answered: Vec<&(CanaryAction, Request)> =
        requests.iter().filter(|(_, r)| r.answer.is_some()).collect();
    answered.sort_by(|(_, a), (_, b)| (b.created, &b.name).cmp(&(a.created, &a.name)));
    answered.into_iter().skip(KEEP).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Operation;

    fn request(name: &str, created: i64, answered: bool) -> (CanaryAction, Request) {
        let action = CanaryAction::new(name, Default::default());
        let request = Request {
            name: name.into(),
            action: "pause".into(),
            operation: Some(Operation::Pause),
            revision: "r".into(),
            by: "alice".into(),
            created,
            answer: answered.then(|| Answer::Done("done".into())),
        };
        (action, request)
    }

    #[test]
    fn the_last_answered_requests_are_kept_and_pending_ones_never_deleted() {
        let mut requests: Vec<_> = (0..KEEP as i64 + 3)
            .map(|i| request(&format!("a{i:02}"), i, true))
            .collect();
        requests.push(request("pending", 0, false));
        let old: Vec<&str> = beyond_keep(&requests)
            .iter()
            .map(|(_, r)| r.name.as_str())
            .collect();
        assert_eq!(old, ["a02", "a01", "a00"]);
        assert!(beyond_keep(&requests[..KEEP]).is_empty());
    }
}
