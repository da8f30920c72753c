//! Reporting a decision: the status (through the status subresource, with Flagger's `Promoted`
//! condition), Events with Flagger's texts (reason `Synced`), and the `flagger_canary_*`
//! metrics. Does I/O (Kubernetes API).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::{Context, Error, metrics, observe::World};
use crate::{
    api::{
        Canary, CanaryStatus,
        canary::{CONDITION_PROMOTED, CanaryCondition, CanaryPhase},
    },
    engine::{Decision, Event, Outcome, StatusUpdate},
};

/// Records events on the Canary as Flagger does: core/v1 Events with reason `Synced` and source
/// component `flagger`, one per message (so every step shows in `kubectl describe`); a message
/// repeated within ten minutes raises the count and last timestamp of the Event it repeats, as
/// client-go's recorder does. Failures to record are logged, never fatal.
pub async fn events(ctx: &Context, canary: &Canary, events: &[Event]) {
    let ns = canary.namespace().unwrap_or_default();
    let reference = canary.object_ref(&());
    for e in events {
        tracing::info!(canary = %format!("{}.{ns}", canary.name_any()), warning = e.warning, "{}", e.message);
        serin_runtime::events::record(
            &ctx.client,
            serin_runtime::events::EventRecord {
                object: &reference,
                component: "flagger",
                reporting_component: "serin",
                warning: e.warning,
                reason: "Synced",
                message: &e.message,
            },
        )
        .await;
        send_event_webhooks(ctx, canary, e);
    }
}

/// Posts an event to the Canary's `event` webhooks, or to `--event-webhook` when it has none, in
/// the background: a slow or failing receiver never holds up a rollout.
fn send_event_webhooks(ctx: &Context, canary: &Canary, event: &Event) {
    let mut hooks: Vec<crate::api::canary::CanaryWebhook> = canary
        .spec
        .analysis
        .as_ref()
        .and_then(|a| a.webhooks.as_ref())
        .map(|hs| hs.iter().filter(|h| h.hook_type() == "event").cloned().collect())
        .unwrap_or_default();
    if hooks.is_empty()
        && let Some(url) = &ctx.config.event_webhook
    {
        hooks.push(crate::api::canary::CanaryWebhook {
            name: "event-webhook".into(),
            url: url.clone(),
            ..Default::default()
        });
    }
    if hooks.is_empty() {
        return;
    }
    let phase = event
        .phase
        .or_else(|| canary.status.as_ref().map(|s| s.phase))
        .unwrap_or_default();
    let checksum = super::checks::checksum(canary);
    for hook in hooks {
        let mut metadata = hook.metadata.clone().unwrap_or_default();
        metadata.insert("eventMessage".into(), event.message.clone());
        metadata.insert(
            "eventType".into(),
            if event.warning { "Warning" } else { "Normal" }.into(),
        );
        metadata.insert(
            "timestamp".into(),
            jiff::Timestamp::now().as_millisecond().to_string(),
        );
        let payload = json!({
            "name": canary.metadata.name,
            "namespace": canary.metadata.namespace,
            "phase": phase.as_str(),
            "checksum": checksum,
            "metadata": metadata,
        });
        let client = if hook.disable_tls.unwrap_or(false) {
            ctx.insecure_http.clone()
        } else {
            ctx.http.clone()
        };
        tokio::spawn(async move {
            if let Err(err) = super::checks::post(
                &client,
                &hook.url,
                hook.timeout(),
                hook.retries.unwrap_or(0),
                &payload,
            )
            .await
            {
                tracing::warn!(webhook = %hook.name, error = %err, "sending an event webhook failed");
            }
        });
    }
}

/// The status after an update: counters and phase from the decision, `lastTransitionTime` now,
/// and the `Promoted` condition replaced only when its status or reason changes.
pub fn next_status(
    old: &CanaryStatus,
    update: &StatusUpdate,
    kind: &str,
    now: jiff::Timestamp,
) -> CanaryStatus {
    let mut s = old.clone();
    if let Some(p) = update.phase {
        s.phase = p;
    }
    if let Some(w) = update.canary_weight {
        s.canary_weight = w;
    }
    if let Some(f) = update.failed_checks {
        s.failed_checks = f;
    }
    if let Some(i) = update.iterations {
        s.iterations = i;
    }
    if let Some(a) = &update.last_applied_spec {
        s.last_applied_spec = Some(a.clone());
    }
    if let Some(p) = &update.last_promoted_spec {
        s.last_promoted_spec = Some(p.clone());
    }
    if let Some(t) = &update.tracked_configs {
        s.tracked_configs = Some(t.clone());
    }
    for (field, value) in [
        (&mut s.session_affinity_cookie, &update.session_affinity_cookie),
        (
            &mut s.primary_session_affinity_cookie,
            &update.primary_session_affinity_cookie,
        ),
        (
            &mut s.previous_session_affinity_cookie,
            &update.previous_session_affinity_cookie,
        ),
    ] {
        if let Some(v) = value {
            *field = Some(v.clone());
        }
    }
    if let Some(c) = &update.comparisons {
        s.comparisons = Some(c.clone());
    }
    if let Some(c) = &update.checks {
        s.checks = Some(c.clone());
    }
    let time = Time(now);
    s.last_transition_time = Some(time.clone());
    // A decision carried out: a failed reconcile is behind.
    if let Some(conditions) = s.conditions.as_mut() {
        conditions.retain(|c| c.type_ != CONDITION_RECONCILED);
    }
    if let Some((status, message)) = s.phase.promoted_condition(kind) {
        let mut conditions = s.conditions.clone().unwrap_or_default();
        let reason = s.phase.as_str().to_owned();
        match conditions.iter_mut().find(|c| c.type_ == CONDITION_PROMOTED) {
            Some(c) if c.status == status && c.reason == reason => {}
            Some(c) => {
                *c = CanaryCondition {
                    type_: CONDITION_PROMOTED.into(),
                    status: status.into(),
                    reason,
                    message: Some(message),
                    last_update_time: Some(time.clone()),
                    last_transition_time: if c.status == status {
                        c.last_transition_time.clone()
                    } else {
                        Some(time.clone())
                    },
                };
            }
            None => conditions.push(CanaryCondition {
                type_: CONDITION_PROMOTED.into(),
                status: status.into(),
                reason,
                message: Some(message),
                last_update_time: Some(time.clone()),
                last_transition_time: Some(time),
            }),
        }
        s.conditions = Some(conditions);
    }
    s
}

/// serin's condition on a Canary whose reconcile failed unexpectedly (a panic): `False` with the
/// error until a later decision is carried out.
pub const CONDITION_RECONCILED: &str = "Reconciled";

/// Records on the Canary's status that its reconcile failed with `message`. Failures to write
/// are logged.
pub async fn reconcile_failed(ctx: &Context, canary: &Canary, message: &str) {
    let mut next = canary.status.clone().unwrap_or_default();
    let mut conditions = next.conditions.take().unwrap_or_default();
    conditions.retain(|c| c.type_ != CONDITION_RECONCILED);
    let now = Time(jiff::Timestamp::now());
    conditions.push(CanaryCondition {
        type_: CONDITION_RECONCILED.into(),
        status: "False".into(),
        reason: "Panicked".into(),
        message: Some(message.chars().take(1000).collect()),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    });
    next.conditions = Some(conditions);
    let api: Api<Canary> = Api::namespaced(ctx.client.clone(), &canary.namespace().unwrap_or_default());
    match api
        .patch_status(
            &canary.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": next})),
        )
        .await
    {
        Ok(_) => {
            if let Some(uid) = canary.metadata.uid.clone() {
                ctx.written.insert(uid, &next);
            }
        }
        Err(err) => tracing::warn!(error = %err, "recording the failed reconcile in the status failed"),
    }
}

/// The longest a status write waits for the API server before trying again itself.
const STATUS_RETRY_WAIT_MAX: Duration = Duration::from_secs(5);

/// Writes the status an update leads to through the status subresource; returns it.
pub async fn write_status(
    ctx: &Context,
    canary: &Canary,
    update: &StatusUpdate,
) -> Result<CanaryStatus, Error> {
    let old = canary.status.clone().unwrap_or_default();
    let next = next_status(&old, update, &canary.spec.target_ref.kind, jiff::Timestamp::now());
    let api: Api<Canary> = Api::namespaced(ctx.client.clone(), &canary.namespace().unwrap_or_default());
    // The decision's actions are already carried out: a transient failure is retried at once
    // (three attempts), so that the status does not fall behind what was done.
    let patch = Patch::Merge(json!({"status": next}));
    let mut attempt = 0;
    loop {
        match api
            .patch_status(&canary.name_any(), &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => break,
            // Gone, refused or invalid: sending it again would fail the same way.
            Err(e) if !serin_runtime::api_error::Kind::of(&e).retriable() => {
                return Err(Error::Status(e));
            }
            Err(e) if attempt >= 2 => return Err(Error::Status(e)),
            Err(e) => {
                // As long as the API server asked (a 429); a wait longer than 5 s goes through
                // the reconcile's retry instead, which honours it whole.
                let asked = serin_runtime::api_error::retry_after(&e);
                if asked.is_some_and(|a| a > STATUS_RETRY_WAIT_MAX) {
                    return Err(Error::Status(e));
                }
                attempt += 1;
                let wait = asked.unwrap_or(Duration::from_millis(200 * attempt));
                tracing::debug!(error = %e, attempt, ?wait, "writing the status failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
    if let Some(uid) = canary.metadata.uid.clone() {
        ctx.written.insert(uid, &next);
    }
    Ok(next)
}

/// Writes the status, records events and updates metrics. `analysis_took` is the duration of an
/// analysis tick (one that ran the pre-rollout hooks or the analysis), observed as
/// `flagger_canary_duration_seconds` as Flagger does; `None` for every other reconcile.
pub async fn report(
    ctx: &Context,
    canary: &Canary,
    world: &World,
    decision: &Decision,
    mut evs: Vec<Event>,
    analysis_took: Option<Duration>,
) -> Result<(), Error> {
    let ns = canary.namespace().unwrap_or_default();
    let target = canary.spec.target_ref.name.clone();
    let old = canary.status.clone().unwrap_or_default();
    let status = match &decision.status {
        Some(update) => write_status(ctx, canary, update).await?,
        None => old,
    };
    events(ctx, canary, &std::mem::take(&mut evs)).await;

    let labels = metrics::CanaryLabels {
        name: target.clone(),
        namespace: ns.clone(),
    };
    let code = match status.phase {
        CanaryPhase::Progressing => 0,
        CanaryPhase::Failed => 2,
        _ => 1,
    };
    ctx.metrics.status.get_or_create(&labels).set(code);
    let routes = decision
        .actions
        .iter()
        .rev()
        .find_map(|a| match a {
            crate::engine::Action::SetRoutes(r) => Some(*r),
            _ => None,
        })
        .or(world.observed.routes);
    if let Some(r) = routes {
        ctx.metrics
            .weight
            .get_or_create(&metrics::WeightLabels {
                workload: format!("{target}-primary"),
                namespace: ns.clone(),
            })
            .set(i64::from(r.primary));
        ctx.metrics
            .weight
            .get_or_create(&metrics::WeightLabels {
                workload: target.clone(),
                namespace: ns.clone(),
            })
            .set(i64::from(r.canary));
    }
    if let Some(took) = analysis_took {
        ctx.metrics
            .duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }
    if let Some(outcome) = decision.outcome {
        let (counter, analysis_status) = match outcome {
            Outcome::Succeeded { skipped } => (
                &ctx.metrics.successes,
                if skipped { "skipped" } else { "completed" },
            ),
            Outcome::Failed => (&ctx.metrics.failures, "completed"),
        };
        counter
            .get_or_create(&metrics::OutcomeLabels {
                name: target,
                namespace: ns,
                deployment_strategy: canary.spec.deployment_strategy().as_str().into(),
                analysis_status: analysis_status.into(),
            })
            .inc();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promoted_condition_changes_only_with_status_or_reason() {
        let t0 = jiff::Timestamp::from_second(1000).expect("t0");
        let t1 = jiff::Timestamp::from_second(2000).expect("t1");
        let s = next_status(
            &CanaryStatus::default(),
            &StatusUpdate {
                phase: Some(CanaryPhase::Initialized),
                ..Default::default()
            },
            "Deployment",
            t0,
        );
        let c = &s.conditions.as_ref().expect("conditions")[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.message.as_deref()),
            (
                "True",
                "Initialized",
                Some("Deployment initialization completed.")
            )
        );
        let s2 = next_status(
            &s,
            &StatusUpdate {
                canary_weight: Some(10),
                ..Default::default()
            },
            "Deployment",
            t1,
        );
        assert_eq!(s2.conditions, s.conditions, "same phase, same condition");
        assert_eq!(
            s2.last_transition_time,
            Some(Time(t1)),
            "every status write moves lastTransitionTime"
        );
        let s3 = next_status(
            &s2,
            &StatusUpdate {
                phase: Some(CanaryPhase::Progressing),
                ..Default::default()
            },
            "Deployment",
            t1,
        );
        let c = &s3.conditions.as_ref().expect("conditions")[0];
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("Unknown", "Progressing"));
        assert_eq!(c.last_transition_time, Some(Time(t1)));
    }
}
