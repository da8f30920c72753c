//! One Canary's reconcile, as a pipeline: admit (`engine::admit`, pure) -> observe (the caches)
//! -> decide (`engine::decide`, pure, with the checks it asks for) -> act -> report. A reconcile
//! that fails is retried with the Canary's backoff; one that panics is reported on the Canary.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use kube::{ResourceExt, core::DeserializeGuard, runtime::controller::Action as RequeueAction};

use super::{
    Context, Error, act, alerts, checks, finalize, index, metrics, observe, report, requests, shelf,
};
use crate::{
    api::Canary,
    engine::{self, Decision, Input},
};

/// Whether the cached Canary does not show the status serin wrote last (within the window).
fn stale_status(ctx: &Context, canary: &Canary) -> bool {
    canary
        .metadata
        .uid
        .as_deref()
        .is_some_and(|uid| ctx.written.differs(uid, canary.status.as_ref()))
}

/// Whether the cached VirtualService is older than the one serin wrote last (or not cached yet),
/// within the staleness window: after it, the cache is trusted (someone may have deleted it).
fn routes_behind(ctx: &Context, canary: &Canary) -> bool {
    let ns = canary.metadata.namespace.as_deref().unwrap_or_default();
    let apex = canary.service_names().apex;
    let written = super::context::last_write(&ctx.route_generations, &format!("{ns}/{apex}"));
    let cached = ctx
        .stores
        .virtual_services
        .get(&kube::runtime::reflector::ObjectRef::new(&apex).within(ns));
    behind(written.as_ref(), cached.as_ref().map(|c| &c.metadata))
}

/// Whether the cached `-primary` Deployment is older than the one serin wrote last (or not
/// cached yet), within the staleness window: a primary serin just created is not created again
/// (with a new `flagger-id`, which would restart its rollout) because the watch lags.
fn primary_behind(ctx: &Context, canary: &Canary) -> bool {
    let ns = canary.metadata.namespace.as_deref().unwrap_or_default();
    let primary = format!("{}-primary", canary.spec.target_ref.name);
    let written = super::context::last_write(&ctx.deployment_generations, &format!("{ns}/{primary}"));
    let cached = super::shelf::cached(ctx, ns, &primary);
    behind(written.as_ref(), cached.as_ref().map(|d| &d.metadata))
}

/// Whether a cached object (`None`: not cached) is older than serin's write of it (UID,
/// generation, when), within the staleness window. Pure.
fn behind(
    written: Option<&(String, i64, std::time::Instant)>,
    cached: Option<&kube::api::ObjectMeta>,
) -> bool {
    let Some((uid, generation, at)) = written else {
        return false;
    };
    if at.elapsed() >= super::context::Written::WINDOW {
        return false;
    }
    match cached {
        Some(meta) if meta.uid.as_deref() == Some(uid.as_str()) => {
            meta.generation.unwrap_or_default() < *generation
        }
        // Not the object serin wrote (deleted and made again): nothing to wait for.
        Some(_) => false,
        None => true,
    }
}

pub(super) fn error_policy(
    guard: Arc<DeserializeGuard<Canary>>,
    err: &Error,
    ctx: Arc<Context>,
) -> RequeueAction {
    // Per Canary, from 1 s doubling to 5 min with jitter; a success resets it. Never sooner
    // than the API server asked (a 429's `retryAfterSeconds`).
    let delay = retry_delay(ctx.backoffs.next(&guard_key(&guard)), err);
    let kind = err.api_kind().map(serin_runtime::api_error::Kind::as_str);
    tracing::warn!(category = err.category(), kind, error = %err, retry_in = ?delay, "reconcile failed; retrying");
    if let (Error::Panicked(_), Ok(canary)) = (err, &guard.0) {
        // Said on the Canary: a Warning event and a condition naming the error.
        let (canary, message) = (canary.clone(), err.to_string());
        tokio::spawn(async move {
            report::events(&ctx, &canary, &[engine::Event::warning(message.clone())]).await;
            report::reconcile_failed(&ctx, &canary, &message).await;
        });
    }
    RequeueAction::requeue(delay)
}

/// The delay before a failed reconcile runs again: the backoff, or what the API server asked
/// for when that is longer. Pure.
fn retry_delay(backoff: Duration, err: &Error) -> Duration {
    err.retry_after().map_or(backoff, |asked| backoff.max(asked))
}

/// The key of a Canary's retry delays.
pub(super) fn guard_key(guard: &DeserializeGuard<Canary>) -> String {
    match &guard.0 {
        Ok(c) => format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()),
        Err(invalid) => format!(
            "{}/{}",
            invalid.metadata.namespace.as_deref().unwrap_or_default(),
            invalid.metadata.name.as_deref().unwrap_or_default()
        ),
    }
}

pub(super) async fn reconcile(
    guard: Arc<DeserializeGuard<Canary>>,
    ctx: Arc<Context>,
) -> Result<RequeueAction, Error> {
    let canary = match &guard.0 {
        Ok(c) => c.clone(),
        Err(invalid) => {
            tracing::warn!(canary = ?invalid.metadata.name, namespace = ?invalid.metadata.namespace, error = %invalid.error, "Canary cannot be read");
            return Ok(RequeueAction::await_change());
        }
    };
    serin_runtime::hooks::panic_if_asked(ctx.test_hooks, "Canary", &canary.metadata);
    if canary.metadata.deletion_timestamp.is_some() {
        // Finalizing reads the target from the caches: never decide it is gone before they fill.
        if !ctx.caches_filled.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(RequeueAction::requeue(engine::CACHES_RETRY));
        }
        return finalize::finalize(&ctx, &canary).await;
    }
    if finalize::sync_finalizer(&ctx, &canary).await? {
        // The update arrives as a change and reconciles the Canary again.
        return Ok(RequeueAction::await_change());
    }
    let started = std::time::Instant::now();
    count_in_namespace(&ctx, &canary);

    // admit (pure): invalid specs, unimplemented choices and a target managed by another Canary
    // stop here with a Warning until a change; caches still filling and a stale status wait.
    match engine::admit(&admission(&ctx, &canary, &same_target(&ctx, &canary))) {
        engine::Admit::Decide => {}
        engine::Admit::Refuse(message) => {
            report::events(&ctx, &canary, &[engine::Event::warning(message)]).await;
            return Ok(RequeueAction::await_change());
        }
        engine::Admit::Retry(after) => return Ok(RequeueAction::requeue(after)),
    }
    // observe (the caches; a shelved target or primary is read once first).
    let ns = canary.metadata.namespace.as_deref().unwrap_or_default();
    let target = canary.spec.target_ref.name.as_str();
    shelf::unshelve(&ctx, ns, &[target, &format!("{target}-primary")])
        .await
        .map_err(Error::Act)?;
    let world = match observe::observe(&ctx, &canary, jiff::Timestamp::now().as_second()) {
        Ok(w) => w,
        Err(message) => {
            report::events(&ctx, &canary, &[engine::Event::warning(message)]).await;
            return Ok(RequeueAction::requeue(serin_runtime::duration::requeue_delay(
                canary.spec.analysis_interval(),
            )));
        }
    };
    // People's requests: the oldest one not answered is answered in this decision.
    let asked = requests::of(&ctx, &canary);
    let listed: Vec<engine::Request> = asked.iter().map(|(_, r)| r.clone()).collect();
    let revision = canary
        .status
        .as_ref()
        .and_then(|s| s.last_applied_spec.as_deref());
    let people = engine::requests(&listed, revision);
    // decide (pure), running the checks it asks for.
    let mut decision = decide(&ctx, &canary, &world.observed, people).await?;
    // The comparisons with the primary looked at go into the status with a status write (an
    // analysis tick, a rollback): a look between ticks alone writes nothing, since a status
    // write would move the next tick.
    if (decision.analysis_tick || decision.status.is_some())
        && let Some(compared) = ctx.comparisons.take_changed(&canary)
    {
        decision.status.get_or_insert_with(Default::default).comparisons = Some(compared);
    }
    // act, then report.
    let (acting, events) = act_on(&ctx, &canary, &world, &decision).await?;
    let analysis_took = decision.analysis_tick.then(|| started.elapsed());
    report::report(&ctx, &canary, &world, &decision, events, analysis_took).await?;
    alerts::send(&ctx, &acting, &decision.alerts);
    if let (Some(answer), Some(request)) = (&decision.answer, people.pending)
        && let Some((action, _)) = asked.iter().find(|(_, r)| r.name == request.name)
    {
        requests::answer(&ctx, action, answer).await?;
    }
    requests::tidy(&ctx, &asked).await?;
    Ok(match decision.requeue_after {
        Some(d) if d.is_zero() => RequeueAction::requeue(Duration::from_millis(200)),
        Some(d) => RequeueAction::requeue(serin_runtime::duration::requeue_delay(d)),
        None => RequeueAction::await_change(),
    })
}

/// `flagger_canary_total` for the Canary's namespace.
fn count_in_namespace(ctx: &Context, canary: &Canary) {
    let namespace = canary.namespace().unwrap_or_default();
    let in_namespace = ctx.canary_index.count(&index::in_namespace(&namespace));
    ctx.metrics
        .total
        .get_or_create(&metrics::NamespaceLabels { namespace })
        .set(in_namespace as i64);
}

/// The names of the Canaries of the namespace that target the same workload.
fn same_target(ctx: &Context, canary: &Canary) -> Vec<String> {
    let ns = canary.metadata.namespace.as_deref().unwrap_or_default();
    ctx.canary_index
        .get(&index::targeting(ns, &canary.spec.target_ref.name))
        .iter()
        .map(|c| index::name_of(c).to_owned())
        .collect()
}

/// The facts `engine::admit` reads.
fn admission<'a>(ctx: &'a Context, canary: &'a Canary, same_target: &'a [String]) -> engine::Admission<'a> {
    engine::Admission {
        name: canary.metadata.name.as_deref().unwrap_or_default(),
        namespace: canary.metadata.namespace.as_deref().unwrap_or_default(),
        spec: &canary.spec,
        default_provider: &ctx.config.mesh_provider,
        same_target,
        caches_filled: ctx.caches_filled.load(std::sync::atomic::Ordering::Acquire),
        status_stale: stale_status(ctx, canary) || routes_behind(ctx, canary) || primary_behind(ctx, canary),
    }
}

/// Calls `engine::decide` until it needs no more checks, running each check it asks for once
/// (a second request for the same check would loop forever: it is an error).
async fn decide(
    ctx: &Context,
    canary: &Canary,
    observed: &engine::Observed,
    people: engine::Requests<'_>,
) -> Result<Decision, Error> {
    let status = canary.status.clone().unwrap_or_default();
    let mut results = BTreeMap::new();
    let mut explained = None;
    loop {
        let input = Input {
            name: canary.metadata.name.as_deref().unwrap_or_default(),
            namespace: canary.metadata.namespace.as_deref().unwrap_or_default(),
            spec: &canary.spec,
            status: &status,
            observed,
            checks: &results,
            request: people.pending,
            paused_by: people.paused_by,
        };
        let d = engine::decide(&input);
        match d.need {
            None => {
                let mut d = d;
                // Checks run to answer a request (a promotion) go into the status only with the
                // status write that answer makes.
                if let Some(checks) = explained
                    && (d.analysis_tick || d.status.is_some())
                {
                    d.status.get_or_insert_with(Default::default).checks = Some(checks);
                }
                return Ok(d);
            }
            Some(check) if results.contains_key(&check) => {
                return Err(Error::Decide(format!(
                    "the engine asked for the {check:?} check twice in one reconcile"
                )));
            }
            Some(engine::Check::Analysis) => {
                let (result, checks) = checks::analysis(ctx, canary).await;
                explained = Some(checks);
                results.insert(engine::Check::Analysis, result);
            }
            Some(engine::Check::Comparisons) => {
                // Only a rollback between ticks is explained: the last tick's checks stand.
                let (result, checks) = checks::comparisons(ctx, canary).await;
                if matches!(result, engine::CheckResult::Worse(_)) {
                    explained = Some(checks);
                }
                results.insert(engine::Check::Comparisons, result);
            }
            Some(check) => {
                let result = checks::run(ctx, canary, check).await;
                results.insert(check, result);
            }
        }
    }
}

/// Carries out the decision's actions in order, with the status it leads to (session affinity
/// cookies shape the routes). Returns that Canary and the events to record: the decision's own
/// ("Advance ... canary weight 20") and the actions', recorded only once every action is carried
/// out. A failed action records why at once, and the retry decides again.
async fn act_on(
    ctx: &Context,
    canary: &Canary,
    world: &observe::World,
    decision: &Decision,
) -> Result<(Canary, Vec<engine::Event>), Error> {
    let mut acting = canary.clone();
    if let Some(update) = &decision.status {
        acting.status = Some(report::next_status(
            &canary.status.clone().unwrap_or_default(),
            update,
            &canary.spec.target_ref.kind,
            jiff::Timestamp::now(),
        ));
    }
    let mut acted = Vec::new();
    for action in &decision.actions {
        match act::act(ctx, &acting, world, action).await {
            Ok(more) => acted.extend(more),
            Err(failure) => {
                acted.push(engine::Event::warning(failure.message.clone()));
                report::events(ctx, canary, &acted).await;
                return Err(Error::Act(failure));
            }
        }
    }
    let mut events = decision.events.clone();
    events.extend(acted);
    Ok((acting, events))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use kube::api::ObjectMeta;

    use super::*;

    #[test]
    fn a_throttled_reconcile_waits_as_long_as_the_api_server_asked() {
        let throttled = |asked: Option<u64>| {
            Error::Act(serin_runtime::api_error::Failure {
                kind: serin_runtime::api_error::Kind::Throttled,
                message: "patching the status: too many requests".into(),
                retry_after: asked.map(Duration::from_secs),
            })
        };
        let backoff = Duration::from_secs(2);
        assert_eq!(retry_delay(backoff, &throttled(Some(9))), Duration::from_secs(9));
        assert_eq!(
            retry_delay(backoff, &throttled(Some(1))),
            backoff,
            "the longer wins"
        );
        assert_eq!(retry_delay(backoff, &throttled(None)), backoff);
        assert_eq!(
            retry_delay(backoff, &Error::Decide("twice".into())),
            backoff,
            "no API error"
        );
    }

    #[test]
    fn routes_wait_for_the_cache_to_show_serins_own_write() {
        let meta = |uid: &str, generation: i64| ObjectMeta {
            uid: Some(uid.into()),
            generation: Some(generation),
            ..Default::default()
        };
        let now = ("u1".to_owned(), 3, Instant::now());
        assert!(!behind(None, Some(&meta("u1", 1))), "nothing written");
        assert!(behind(Some(&now), Some(&meta("u1", 2))), "an older copy");
        assert!(behind(Some(&now), None), "not cached yet");
        assert!(!behind(Some(&now), Some(&meta("u1", 3))), "the write itself");
        assert!(
            !behind(Some(&now), Some(&meta("u1", 4))),
            "someone wrote after serin"
        );
        assert!(
            !behind(Some(&now), Some(&meta("u2", 1))),
            "another object of that name"
        );
        let old = (
            "u1".to_owned(),
            3,
            Instant::now() - super::super::context::Written::WINDOW,
        );
        assert!(!behind(Some(&old), None), "after the window the cache is trusted");
    }
}
