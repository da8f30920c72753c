//! The watches: the Canaries and the Deployments, ConfigMaps, Secrets and VirtualServices they
//! concern, in caches (reflectors); the mappers from a change to the Canaries it concerns; the
//! sweep that finalizes Canaries whose finalizer outlived them; and the controller loop that
//! runs `reconcile::reconcile` per Canary. Does I/O.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, Client, ResourceExt,
    core::DeserializeGuard,
    runtime::{
        Controller, WatchStreamExt,
        reflector::{self, ObjectRef},
        watcher,
    },
};

use crate::api::{Canary, CanaryAction, istio::VirtualService};

use super::{
    index,
    reconcile::{error_policy, guard_key, reconcile},
    shelf, slim, *,
};
use serin_runtime::scope::api;

/// Objects per page when listing ConfigMaps and Secrets (the default page is 500 objects).
const CONFIG_PAGE_SIZE: u32 = 50;

/// How long in-flight reconciles may run after the shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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
    // ConfigMaps and Secrets are listed in small pages: a page of large objects is held whole
    // while it is read, and the memory it took stays with the process afterwards.
    let small_pages = wc.clone().page_size(CONFIG_PAGE_SIZE);
    let (deployments, dep_writer) = reflector::store();
    let (configmaps, cm_writer) = reflector::store();
    let (secrets, secret_writer) = reflector::store();
    let (virtual_services, vs_writer) = reflector::store();
    let canary_index = Arc::new(index::canaries());
    let deployment_index = Arc::new(index::deployments());
    let shelf = Arc::new(shelf::Shelf::default());
    // Set once the Canary cache holds its first list. The Controller itself awaits the Canary
    // store's readiness, so nothing else may (kube's `wait_until_ready` wakes only one waiter):
    // the reflector has applied the list when `InitDone` passes the Canary stream. The
    // Deployments are watched from then on, so that the ones no Canary uses can be shelved
    // (left out of the cache) from the start.
    let (listed_tx, listed_rx) = tokio::sync::watch::channel(false);
    let mut canaries_listed = listed_rx.clone();
    let dep_stream = {
        let (deployment_index, shelf, canary_index, cache) = (
            deployment_index.clone(),
            shelf.clone(),
            canary_index.clone(),
            deployments.clone(),
        );
        let deployments = api::<slim::PackedDeployment>(&client, ns.as_deref());
        let wc = wc.clone();
        let mut listed_rx = listed_rx;
        futures::stream::once(async move {
            let _ = listed_rx.wait_for(|listed| *listed).await;
            let sorted = watcher(deployments, wc).filter_map(move |event| {
                let event = match event {
                    Ok(event) => shelf
                        .sort(
                            event,
                            |d| shelf::wanted(&canary_index, d),
                            |d| cache.get(&ObjectRef::from_obj(d)).is_some(),
                        )
                        .map(Ok),
                    Err(err) => Some(Err(err)),
                };
                futures::future::ready(event)
            });
            reflector::reflector(dep_writer, sorted)
        })
        .flatten()
        .default_backoff()
        .inspect(move |event| {
            if let Ok(event) = event {
                deployment_index.apply(event);
            }
        })
        .touched_objects()
    };
    let cm_stream = reflector::reflector(
        cm_writer,
        watcher(api::<ConfigMap>(&client, ns.as_deref()), small_pages.clone()).modify(slim::configmap),
    )
    .default_backoff()
    .touched_objects();
    let secret_stream = reflector::reflector(
        secret_writer,
        watcher(api::<Secret>(&client, ns.as_deref()), small_pages).modify(slim::secret),
    )
    .default_backoff()
    .touched_objects();
    let vs_stream = reflector::reflector(
        vs_writer,
        watcher(api::<VirtualService>(&client, ns.as_deref()), wc.clone()).modify(slim::virtual_service),
    )
    .default_backoff()
    .touched_objects();
    // People's requests: a new one (or one deleted) wakes its Canary.
    let (actions, action_writer) = reflector::store();
    let action_stream = reflector::reflector(
        action_writer,
        watcher(api::<CanaryAction>(&client, ns.as_deref()), wc.clone()),
    )
    .default_backoff()
    .touched_objects();

    // Canaries, with their deletions passed on: a Canary deleted without the finalizer gets its
    // target scaled back up.
    let canaries: Api<DeserializeGuard<Canary>> = api(&client, ns.as_deref());
    let (canary_store, canary_writer) = reflector::store();
    let (deleted_tx, mut deleted_rx) = tokio::sync::mpsc::unbounded_channel::<Canary>();
    let indexing = canary_index.clone();
    let canary_stream =
        reflector::reflector(canary_writer, watcher(canaries, wc.clone()).modify(slim::canary))
            .default_backoff()
            .inspect(move |event| {
                if let Ok(event) = event {
                    indexing.apply(event);
                }
            })
            .inspect(move |event| match event {
                Ok(watcher::Event::Delete(guard)) => {
                    if let Ok(c) = &guard.0 {
                        let _ = deleted_tx.send(c.clone());
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    listed_tx.send_replace(true);
                }
                _ => {}
            })
            .applied_objects();
    let controller = Controller::for_stream(canary_stream, canary_store.clone())
        .with_config(kube::runtime::controller::Config::default().concurrency(config.concurrency));
    let http = reqwest::Client::builder().build().unwrap_or_default();
    let insecure_http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap_or_default();
    let ctx = Arc::new(Context {
        client: client.clone(),
        canaries: canary_store.clone(),
        actions: actions.clone(),
        answers: Default::default(),
        canary_index: canary_index.clone(),
        deployment_index: deployment_index.clone(),
        shelf,
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
        route_generations: Default::default(),
        applied: Default::default(),
        comparisons: Default::default(),
        backoffs: Default::default(),
        test_hooks: serin_runtime::hooks::enabled_by_env(),
    });

    // Which Canaries a change concerns: index lookups, no scan of the Canaries.
    let by_target = {
        let index = canary_index.clone();
        move |d: slim::PackedDeployment| {
            let name = d.name_any();
            let ns = d.namespace().unwrap_or_default();
            let mut found = canaries_in(&index, &ns, &index::targeting(&ns, &name));
            if let Some(base) = name.strip_suffix("-primary") {
                found.extend(canaries_in(&index, &ns, &index::targeting(&ns, base)));
            }
            found
        }
    };
    let by_config = |kind: &'static str| {
        let (canaries, deployments) = (canary_index.clone(), deployment_index.clone());
        move |name: String, ns: Option<String>| {
            let ns = ns.unwrap_or_default();
            deployments
                .get(&index::using(kind, &ns, &name))
                .iter()
                .flat_map(|d| canaries_in(&canaries, &ns, &index::targeting(&ns, index::name_of(d))))
                .collect::<Vec<_>>()
        }
    };
    let cm_map = by_config("configmap");
    let secret_map = by_config("secret");
    let by_vs = {
        let index = canary_index.clone();
        move |vs: VirtualService| {
            let ns = vs.namespace().unwrap_or_default();
            canaries_in(&index, &ns, &index::with_apex(&ns, &vs.name_any()))
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
                stores.virtual_services.wait_until_ready().await?;
                actions.wait_until_ready().await
            }
            .await;
            if let Err(err) = result {
                tracing::warn!(error = %err, "the caches did not fill");
                return;
            }
            ctx.caches_filled
                .store(true, std::sync::atomic::Ordering::Release);
            if canaries_listed.wait_for(|listed| *listed).await.is_err() {
                return;
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
        .watches_stream(action_stream, |a: CanaryAction| {
            let ns = a.namespace().unwrap_or_default();
            Some(ObjectRef::new(&a.spec.canary).within(&ns))
        })
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

/// The Canaries filed under `key`, as references for the controller.
fn canaries_in(
    index: &index::Index<DeserializeGuard<Canary>>,
    namespace: &str,
    key: &str,
) -> Vec<ObjectRef<DeserializeGuard<Canary>>> {
    index
        .get(key)
        .iter()
        .map(|c| ObjectRef::new(index::name_of(c)).within(namespace))
        .collect()
}
