//! The controller: watches Canaries, the Deployments they target, the ConfigMaps and Secrets
//! those use, and the VirtualServices serin writes, and reconciles each Canary as
//! `observe` (caches) -> `decide` (pure, with the checks it asks for) -> `act` -> `report`.

pub mod act;
pub mod alerts;
pub mod checks;
pub mod finalize;
pub mod metrics;
pub mod observe;
pub mod report;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Secret},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::DeserializeGuard,
    runtime::{
        Controller, WatchStreamExt,
        controller::Action as RequeueAction,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};

use crate::{
    api::{Canary, istio::VirtualService},
    engine::{self, Decision, Input, build::configs},
    validate,
};

/// How the controller runs (the `serin run` flags).
#[derive(Clone, Debug)]
pub struct Config {
    pub mesh_provider: String,
    pub metrics_server: String,
    pub selector_labels: Vec<String>,
    pub include_label_prefixes: Vec<String>,
    pub config_tracking: bool,
    pub namespace: Option<String>,
    /// Where events go when a Canary has no `event` webhooks (`--event-webhook`).
    pub event_webhook: Option<String>,
    /// Where alerts go when a Canary lists no alerts (`--slack-url`, `--msteams-url`).
    pub notifier: Option<alerts::Notifier>,
    /// Added to alert fields (`--cluster-name`).
    pub cluster_name: Option<String>,
}

/// The caches reconciles read from.
#[derive(Clone, Debug)]
pub struct Stores {
    pub deployments: Store<Deployment>,
    pub configmaps: Store<ConfigMap>,
    pub secrets: Store<Secret>,
    pub virtual_services: Store<VirtualService>,
}

/// What a reconcile needs.
pub struct Context {
    pub client: Client,
    /// The Canaries, for `flagger_canary_total`.
    pub canaries: Store<DeserializeGuard<Canary>>,
    pub config: Config,
    pub stores: Stores,
    pub metrics: metrics::Metrics,
    pub http: reqwest::Client,
    /// Set once the Deployment, ConfigMap, Secret and VirtualService caches hold their first list.
    pub caches_filled: Arc<std::sync::atomic::AtomicBool>,
    /// The status serin last wrote for each Canary (by UID) and when: a cached Canary that does
    /// not show it yet is stale.
    pub written: std::sync::Mutex<std::collections::HashMap<String, (serde_json::Value, std::time::Instant)>>,
    /// The generation of each Deployment serin last wrote (`namespace/name` -> UID and
    /// generation): readiness is never read from a cached copy older than serin's own write.
    pub deployment_generations: std::sync::Mutex<std::collections::HashMap<String, (String, i64)>>,
    /// Retry delays of the Canaries whose last reconcile failed (by UID).
    pub backoffs: serin_runtime::backoff::Backoffs,
    pub insecure_http: reqwest::Client,
    /// Test hooks on (`SERIN_TEST_HOOKS`; never in production).
    pub test_hooks: bool,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Errors a reconcile ends with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Act(String),
    #[error("writing the status failed: {0}")]
    Status(#[source] kube::Error),
    /// The reconcile panicked; caught for this Canary alone.
    #[error("reconcile panicked: {0}")]
    Panicked(String),
}

impl Error {
    /// Bounded name for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Act(_) => "Act",
            Self::Status(_) => "Status",
            Self::Panicked(_) => "Panicked",
        }
    }
}

pub use serin_runtime::hooks::{TEST_HOOKS_ENV, TEST_PANIC_ANNOTATION};

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until `shutdown` completes.
pub async fn run(
    client: Client,
    config: Config,
    metrics: metrics::Metrics,
    ready: impl Fn() + Send + Sync + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = config.namespace.clone();
    let wc = watcher::Config::default();
    let (deployments, dep_writer) = reflector::store();
    let (configmaps, cm_writer) = reflector::store();
    let (secrets, secret_writer) = reflector::store();
    let (virtual_services, vs_writer) = reflector::store();
    let dep_stream = reflector::reflector(
        dep_writer,
        watcher(api::<Deployment>(&client, ns.as_deref()), wc.clone()),
    )
    .default_backoff()
    .touched_objects();
    let cm_stream = reflector::reflector(
        cm_writer,
        watcher(api::<ConfigMap>(&client, ns.as_deref()), wc.clone()),
    )
    .default_backoff()
    .touched_objects();
    let secret_stream = reflector::reflector(
        secret_writer,
        watcher(api::<Secret>(&client, ns.as_deref()), wc.clone()),
    )
    .default_backoff()
    .touched_objects();
    let vs_stream = reflector::reflector(
        vs_writer,
        watcher(api::<VirtualService>(&client, ns.as_deref()), wc.clone()),
    )
    .default_backoff()
    .touched_objects();

    // Canaries, with their deletions passed on: a Canary deleted without the finalizer gets its
    // target scaled back up.
    let canaries: Api<DeserializeGuard<Canary>> = api(&client, ns.as_deref());
    let (canary_store, canary_writer) = reflector::store();
    let (deleted_tx, mut deleted_rx) = tokio::sync::mpsc::unbounded_channel::<Canary>();
    // Set once the Canary cache holds its first list. The Controller itself awaits this store's
    // readiness, so nothing else may (kube's `wait_until_ready` wakes only one waiter): the
    // reflector has applied the list when `InitDone` passes here.
    let canaries_listed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listed = canaries_listed.clone();
    let canary_stream = reflector::reflector(canary_writer, watcher(canaries, wc.clone()))
        .default_backoff()
        .inspect(move |event| match event {
            Ok(watcher::Event::Delete(guard)) => {
                if let Ok(c) = &guard.0 {
                    let _ = deleted_tx.send(c.clone());
                }
            }
            Ok(watcher::Event::InitDone) => listed.store(true, std::sync::atomic::Ordering::Release),
            _ => {}
        })
        .applied_objects();
    let controller = Controller::for_stream(canary_stream, canary_store.clone());
    let http = reqwest::Client::builder().build().unwrap_or_default();
    let insecure_http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap_or_default();
    let ctx = Arc::new(Context {
        client: client.clone(),
        canaries: canary_store.clone(),
        config,
        stores: Stores {
            deployments: deployments.clone(),
            configmaps,
            secrets,
            virtual_services,
        },
        metrics,
        http,
        insecure_http,
        caches_filled: Arc::default(),
        written: Default::default(),
        deployment_generations: Default::default(),
        backoffs: Default::default(),
        test_hooks: serin_runtime::hooks::enabled_by_env(),
    });

    // Which Canaries a change concerns.
    let by_target = {
        let store = canary_store.clone();
        move |d: Deployment| {
            let name = d.name_any();
            let ns = d.namespace();
            let base = name.strip_suffix("-primary").map(str::to_owned);
            canaries_where(&store, ns.as_deref(), |c| {
                c.spec.target_ref.name == name || base.as_deref() == Some(c.spec.target_ref.name.as_str())
            })
        }
    };
    let by_config = |kind: &'static str,
                     store: Store<DeserializeGuard<Canary>>,
                     deployments: Store<Deployment>| {
        move |name: String, ns: Option<String>| {
            canaries_where(&store, ns.as_deref(), |c| {
                deployments
                    .get(&ObjectRef::new(&c.spec.target_ref.name).within(ns.as_deref().unwrap_or_default()))
                    .and_then(|d| serde_json::to_value(&d.spec.as_ref()?.template.spec).ok())
                    .is_some_and(|spec| {
                        configs::references(&spec)
                            .iter()
                            .any(|r| r.kind == kind && r.name == name)
                    })
            })
        }
    };
    let cm_map = by_config("configmap", canary_store.clone(), deployments.clone());
    let secret_map = by_config("secret", canary_store.clone(), deployments.clone());
    let by_vs = {
        let store = canary_store.clone();
        move |vs: VirtualService| {
            let name = vs.name_any();
            canaries_where(&store, vs.namespace().as_deref(), |c| {
                c.service_names().apex == name
            })
        }
    };
    let deletions = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            while let Some(canary) = deleted_rx.recv().await {
                finalize::deleted(&ctx, &canary).await;
            }
        })
    };
    ready();
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    // One task waits for the other caches to fill and says so. Reconciles never wait on a cache
    // themselves: kube's `Store::wait_until_ready` wakes only the last of several concurrent
    // waiters, so concurrent reconciles waiting on it could hang for ever. Once the caches (the
    // Canaries' too) are filled, the same task looks for targets left at 0 by a Canary that was
    // deleted while serin was not watching, then again every minute.
    let filling = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let stores = &ctx.stores;
            let result = async {
                stores.deployments.wait_until_ready().await?;
                stores.configmaps.wait_until_ready().await?;
                stores.secrets.wait_until_ready().await?;
                stores.virtual_services.wait_until_ready().await
            }
            .await;
            if let Err(err) = result {
                tracing::warn!(error = %err, "the caches did not fill");
                return;
            }
            ctx.caches_filled
                .store(true, std::sync::atomic::Ordering::Release);
            while !canaries_listed.load(std::sync::atomic::Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            loop {
                finalize::sweep(&ctx).await;
                tokio::time::sleep(finalize::SWEEP_INTERVAL).await;
            }
        })
    };
    let running = controller
        .watches_stream(dep_stream, by_target)
        .watches_stream(cm_stream, move |cm: ConfigMap| {
            cm_map(cm.name_any(), cm.namespace())
        })
        .watches_stream(secret_stream, move |s: Secret| {
            secret_map(s.name_any(), s.namespace())
        })
        .watches_stream(vs_stream, by_vs)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |guard, ctx| async move {
                use futures::FutureExt;
                let key = guard_key(&guard);
                // A panic is caught for this Canary alone: the others keep reconciling.
                let result = std::panic::AssertUnwindSafe(reconcile(guard, ctx.clone()))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| Err(Error::Panicked(serin_runtime::panic_message(&*panic))));
                if result.is_ok() {
                    ctx.backoffs.reset(&key);
                }
                result
            },
            error_policy,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "reconcile did not complete");
            }
        });
    // In-flight reconciles get a grace period after the shutdown signal, then the process goes.
    tokio::select! {
        () = running => {}
        () = async {
            shutdown.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!("reconciles still running after {SHUTDOWN_GRACE:?}; stopping anyway"),
    }
    deletions.abort();
    filling.abort();
}

/// How soon to look again at a Canary whose cached status is older than serin's last write.
const STALE_RETRY: Duration = Duration::from_millis(100);
/// How long serin trusts its own last status write over the cache (someone else may write the
/// status too).
const STALE_WINDOW: Duration = Duration::from_secs(5);

/// Whether the cached Canary does not show the status serin wrote last (within the window).
fn stale_status(ctx: &Context, canary: &Canary) -> bool {
    let Some(uid) = canary.metadata.uid.as_deref() else {
        return false;
    };
    let written = ctx.written.lock().unwrap_or_else(|p| p.into_inner());
    written.get(uid).is_some_and(|(status, at)| {
        at.elapsed() < STALE_WINDOW
            && canary
                .status
                .as_ref()
                .map(|s| serde_json::to_value(s).unwrap_or_default())
                .as_ref()
                != Some(status)
    })
}

/// How long in-flight reconciles may run after the shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn canaries_where(
    store: &Store<DeserializeGuard<Canary>>,
    namespace: Option<&str>,
    pred: impl Fn(&Canary) -> bool,
) -> Vec<ObjectRef<DeserializeGuard<Canary>>> {
    store
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|c| c.namespace().as_deref() == namespace && pred(c))
        .map(|c| ObjectRef::new(&c.name_any()).within(namespace.unwrap_or_default()))
        .collect()
}

fn error_policy(guard: Arc<DeserializeGuard<Canary>>, err: &Error, ctx: Arc<Context>) -> RequeueAction {
    // Per Canary, from 1 s doubling to 5 min with jitter; a success resets it.
    let delay = ctx.backoffs.next(&guard_key(&guard));
    tracing::warn!(category = err.category(), error = %err, retry_in = ?delay, "reconcile failed; retrying");
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

/// The key of a Canary's retry delays.
fn guard_key(guard: &DeserializeGuard<Canary>) -> String {
    match &guard.0 {
        Ok(c) => format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()),
        Err(invalid) => format!(
            "{}/{}",
            invalid.metadata.namespace.as_deref().unwrap_or_default(),
            invalid.metadata.name.as_deref().unwrap_or_default()
        ),
    }
}

async fn reconcile(guard: Arc<DeserializeGuard<Canary>>, ctx: Arc<Context>) -> Result<RequeueAction, Error> {
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
            return Ok(RequeueAction::requeue(Duration::from_millis(250)));
        }
        return finalize::finalize(&ctx, &canary).await;
    }
    if finalize::sync_finalizer(&ctx, &canary).await? {
        // The update arrives as a change and reconciles the Canary again.
        return Ok(RequeueAction::await_change());
    }
    let started = std::time::Instant::now();
    let now = jiff::Timestamp::now().as_second();
    let namespace = canary.namespace().unwrap_or_default();
    let in_namespace = ctx
        .canaries
        .state()
        .iter()
        .filter(|g| {
            g.0.as_ref()
                .is_ok_and(|c| c.namespace().as_deref() == Some(namespace.as_str()))
        })
        .count();
    ctx.metrics
        .total
        .get_or_create(&metrics::NamespaceLabels { namespace })
        .set(in_namespace as i64);
    let name = format!("{}.{}", canary.name_any(), canary.namespace().unwrap_or_default());

    // observe: invalid specs and unimplemented choices stop here with a Warning, until a change.
    let provider = canary
        .spec
        .provider
        .clone()
        .unwrap_or_else(|| ctx.config.mesh_provider.clone());
    let errors: Vec<String> = validate::canary(&canary.spec, &ctx.config.mesh_provider)
        .into_iter()
        .filter(validate::Finding::blocks_run)
        .map(|f| f.to_string())
        .collect();
    if !errors.is_empty() {
        report::events(
            &ctx,
            &canary,
            &[engine::Event::warning(format!(
                "invalid canary spec: {}",
                errors.join("; ")
            ))],
        )
        .await;
        return Ok(RequeueAction::await_change());
    }
    if provider != "istio" || canary.spec.target_ref.kind != "Deployment" {
        let message = format!(
            "{name}: provider {provider:?} with target kind {:?} is not implemented by serin (it implements istio with Deployment)",
            canary.spec.target_ref.kind
        );
        report::events(&ctx, &canary, &[engine::Event::warning(message)]).await;
        return Ok(RequeueAction::await_change());
    }
    // Two Canaries for one target would fight over it.
    let same_target: Vec<String> = ctx
        .canaries
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|c| {
            c.namespace() == canary.namespace() && c.spec.target_ref.name == canary.spec.target_ref.name
        })
        .map(|c| c.name_any())
        .collect();
    if let Some(first) =
        engine::target_owner(&canary.name_any(), &same_target).filter(|owner| *owner != canary.name_any())
    {
        let message = format!(
            "Canary {name} targets Deployment {}.{} like Canary {first}; only {first} manages it (delete one of them)",
            canary.spec.target_ref.name,
            canary.namespace().unwrap_or_default()
        );
        report::events(&ctx, &canary, &[engine::Event::warning(message)]).await;
        return Ok(RequeueAction::await_change());
    }
    // Decisions need complete caches: a VirtualService missing only from a cache still filling
    // after a restart would otherwise look deleted and be recreated at 100/0.
    if !ctx.caches_filled.load(std::sync::atomic::Ordering::Acquire) {
        return Ok(RequeueAction::requeue(Duration::from_millis(250)));
    }
    // A change to another object (the VirtualService serin just wrote) can arrive before the
    // Canary's own status update: deciding on the older status would take a step twice.
    if stale_status(&ctx, &canary) {
        return Ok(RequeueAction::requeue(STALE_RETRY));
    }
    let world = match observe::observe(&ctx, &canary, now) {
        Ok(w) => w,
        Err(message) => {
            report::events(&ctx, &canary, &[engine::Event::warning(message)]).await;
            return Ok(RequeueAction::requeue(serin_runtime::duration::requeue_delay(
                canary.spec.analysis_interval(),
            )));
        }
    };

    // decide (pure), running the checks it asks for.
    let status = canary.status.clone().unwrap_or_default();
    let mut results = BTreeMap::new();
    let decision: Decision = loop {
        let input = Input {
            name: canary.metadata.name.as_deref().unwrap_or_default(),
            namespace: canary.metadata.namespace.as_deref().unwrap_or_default(),
            spec: &canary.spec,
            status: &status,
            observed: &world.observed,
            checks: &results,
        };
        let d = engine::decide(&input);
        match d.need {
            Some(check) => {
                let result = checks::run(&ctx, &canary, check).await;
                results.insert(check, result);
            }
            None => break d,
        }
    };

    // act, with the status the decision leads to (session affinity cookies shape the routes).
    let mut acting = canary.clone();
    if let Some(update) = &decision.status {
        acting.status = Some(report::next_status(
            &status,
            update,
            &canary.spec.target_ref.kind,
            jiff::Timestamp::now(),
        ));
    }
    // The decision's events describe what it did ("Advance ... canary weight 20"): they are
    // recorded only once every action is carried out. A failed write records why, and the retry
    // decides again.
    let mut acted = Vec::new();
    for action in &decision.actions {
        match act::act(&ctx, &acting, &world, action).await {
            Ok(more) => acted.extend(more),
            Err(message) => {
                acted.push(engine::Event::warning(message.clone()));
                report::events(&ctx, &canary, &acted).await;
                return Err(Error::Act(message));
            }
        }
    }
    let mut events = decision.events.clone();
    events.extend(acted);

    // report
    let analysis_took = decision.analysis_tick.then(|| started.elapsed());
    report::report(&ctx, &canary, &world, &decision, events, analysis_took).await?;
    alerts::send(&ctx, &acting, &decision.alerts);
    Ok(match decision.requeue_after {
        Some(d) if d.is_zero() => RequeueAction::requeue(Duration::from_millis(200)),
        Some(d) => RequeueAction::requeue(serin_runtime::duration::requeue_delay(d)),
        None => RequeueAction::await_change(),
    })
}
