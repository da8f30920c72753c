//! The two reconcilers (GitRepository in `source`, Kustomization in `kustomization`), their
//! shared context and the watches that drive them: a Kustomization is reconciled when its spec
//! or `reconcile.fluxcd.io/requestedAt` changes, when its source's artifact changes, and on its
//! interval. Status-only updates do not retrigger. Does I/O.

pub mod events;
pub mod finalizer;
pub mod helm_release;
pub mod helm_source;
pub mod kustomization;
pub mod metrics;
pub mod source;
pub mod status;

use std::{
    hash::{Hash, Hasher},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::{DeserializeGuard, PartialObjectMeta},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        predicates, reflector,
        reflector::ObjectRef,
        watcher::{self, watcher},
    },
};

use crate::api::{
    GitRepository, HelmChart, HelmRelease, HelmRepository, Kustomization, REQUESTED_AT_ANNOTATION, Receiver,
};
use status::{ConditionStatus, Progress};

/// Settings of the controllers.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where fetched revisions are stored.
    pub storage_dir: PathBuf,
    /// Requeue after a dependency or artifact is not ready (Flux's `--requeue-dependency`).
    pub requeue_dependency: Duration,
    /// How long apply stages wait for CRDs and Namespaces.
    pub stage_timeout: Duration,
    /// Poll interval of stage waits.
    pub poll_interval: Duration,
    /// Poll interval of health checks.
    pub health_interval: Duration,
    /// Longest retry of a failed Git fetch.
    pub retry_cap: Duration,
    /// Watch only this namespace.
    pub namespace: Option<String>,
    /// How many objects of each kind reconcile at once (Flux's `--concurrent`).
    pub concurrency: u16,
    /// Test hooks on (`SERIN_TEST_HOOKS`; never in production).
    pub test_hooks: bool,
    /// The `helm` program HelmReleases are released with, and its kubeconfig.
    pub helm: crate::helm::Helm,
    /// The serin-sync program Helm runs as its post-renderer (postRenderers, serin's objects
    /// and replicas); none: charts are released as rendered.
    pub post_renderer: Option<PathBuf>,
    /// Where the Receivers' webhooks are served; none: not served.
    pub receiver_addr: Option<std::net::SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            storage_dir: std::env::temp_dir().join("serin-sync"),
            requeue_dependency: Duration::from_secs(30),
            stage_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_secs(2),
            health_interval: Duration::from_secs(5),
            retry_cap: Duration::from_secs(30),
            namespace: None,
            concurrency: 4,
            test_hooks: false,
            helm: crate::helm::Helm {
                program: "helm".into(),
                kubeconfig: None,
            },
            post_renderer: None,
            receiver_addr: None,
        }
    }
}

/// What the reconcilers share.
pub struct Context {
    pub client: Client,
    /// The client's configuration, for impersonating a Kustomization's service account.
    pub kube_config: Option<kube::Config>,
    pub config: Config,
    /// Flux's reconcile metrics.
    pub metrics: metrics::Metrics,
    /// Retry delays of the objects whose last reconcile failed.
    pub backoffs: serin_runtime::backoff::Backoffs,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// The client to apply a Kustomization with: impersonating its `serviceAccountName`.
    pub fn client_for(&self, ks: &Kustomization) -> Result<Client, String> {
        self.client_as(
            &ks.namespace().unwrap_or_default(),
            ks.spec.service_account_name.as_deref(),
        )
    }

    /// The client impersonating the service account `namespace/sa` (serin-sync's own without
    /// one, or without a configuration to start from).
    pub fn client_as(&self, namespace: &str, sa: Option<&str>) -> Result<Client, String> {
        let (Some(sa), Some(config)) = (sa, self.kube_config.as_ref()) else {
            return Ok(self.client.clone());
        };
        let mut config = config.clone();
        config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{sa}"));
        Client::try_from(config).map_err(|e| format!("failed to build the impersonating client: {e}"))
    }
}

/// Errors that abort one reconcile (API errors); retried with a short delay.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[source] kube::Error),
    /// The reconcile panicked; caught for this object alone.
    #[error("reconcile panicked: {0}")]
    Panicked(String),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(_) => "Kube",
            Self::Panicked(_) => "Panicked",
        }
    }
}

/// The message of an API error.
pub fn api_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Flux's ±5 % interval jitter.
pub fn jitter(interval: Duration) -> Duration {
    let f: f64 = rand::random_range(0.95..1.05);
    interval.mul_f64(f)
}

fn error_policy<K: Resource<DynamicType = ()>>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    // Per object, from 1 s doubling to 5 min with jitter; a success resets it.
    let delay = ctx.backoffs.next(&backoff_key(&*obj));
    let kind = match err {
        Error::Kube(e) => Some(serin_runtime::api_error::Kind::of(e).as_str()),
        Error::Panicked(_) => None,
    };
    tracing::warn!(error = %err, category = err.category(), kind, retry_in = ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

fn backoff_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    ObjectRef::from_obj(obj).to_string()
}

/// Runs `reconcile`, catching a panic (reported as a Warning event and Ready=False
/// `ReconciliationFailed` on the object), and resets the object's retry delays when it succeeds.
async fn with_backoff_reset<K, F>(
    obj: Arc<K>,
    ctx: Arc<Context>,
    reconcile: fn(Arc<K>, Arc<Context>) -> F,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()>,
    F: std::future::Future<Output = Result<Action, Error>>,
{
    use futures::FutureExt;
    let key = backoff_key(&*obj);
    let reference = obj.object_ref(&());
    let kind = K::kind(&()).into_owned();
    let hooks = ctx.config.test_hooks;
    let meta = obj.meta().clone();
    let inner = ctx.clone();
    // A panic is caught for this object alone: the others keep reconciling.
    let result = std::panic::AssertUnwindSafe(async move {
        serin_runtime::hooks::panic_if_asked(hooks, &kind, &meta);
        reconcile(obj, inner).await
    })
    .catch_unwind()
    .await
    .unwrap_or_else(|panic| Err(Error::Panicked(serin_runtime::panic_message(&*panic))));
    if let Err(err @ Error::Panicked(_)) = &result {
        let message = err.to_string();
        events::record(
            &ctx.client,
            &reference,
            "serin-sync",
            true,
            "ReconcilePanicked",
            &message,
        )
        .await;
        record_panic::<K>(&ctx, &reference, &message).await;
    }
    if result.is_ok() {
        ctx.backoffs.reset(&key);
    }
    result
}

/// Says on the object's status that its reconcile panicked: Ready=False with Flux's
/// `ReconciliationFailed` and the panic's message, until a reconcile completes and writes Ready
/// again. A failure to write is logged.
async fn record_panic<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    message: &str,
) {
    let resource = kube::api::ApiResource::erase::<K>(&());
    let namespace = reference.namespace.clone().unwrap_or_default();
    let name = reference.name.clone().unwrap_or_default();
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &resource);
    let written = async {
        let live = api.get(&name).await?;
        let mut conditions: Vec<Condition> =
            serde_json::from_value(live.data["status"]["conditions"].clone()).unwrap_or_default();
        Progress::new(&mut conditions, live.metadata.generation, jiff::Timestamp::now()).set(
            status::READY,
            ConditionStatus::False,
            status::RECONCILIATION_FAILED_REASON,
            message,
        );
        let patch = serde_json::json!({"status": {"conditions": conditions}});
        api.patch_status(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(patch),
        )
        .await
    };
    if let Err(err) = written.await {
        tracing::warn!(error = %err, %namespace, %name, "recording the panic in the status failed");
    }
}

/// Generation and the requestedAt annotation: what makes a spec change worth a reconcile.
fn spec_or_request<K: Resource>(obj: &K) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    predicates::generation(obj).hash(&mut h);
    obj.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(REQUESTED_AT_ANNOTATION))
        .hash(&mut h);
    obj.meta().deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

/// Reconciles a GitRepository that deserialized; reports one that did not.
async fn reconcile_source(
    guard: Arc<DeserializeGuard<GitRepository>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    reconcile_guarded(
        guard,
        ctx,
        source::COMPONENT,
        |r: &GitRepository| r.spec.suspend == Some(true),
        source::reconcile,
    )
    .await
}

/// Reconciles a Kustomization that deserialized; reports one that did not.
async fn reconcile_kustomization(
    guard: Arc<DeserializeGuard<Kustomization>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    reconcile_guarded(
        guard,
        ctx,
        kustomization::COMPONENT,
        |k: &Kustomization| k.spec.suspend == Some(true),
        kustomization::reconcile,
    )
    .await
}

/// Reconciles an object that deserialized (timing it for Flux's metrics); reports one that did
/// not.
async fn reconcile_guarded<K, F>(
    guard: Arc<DeserializeGuard<K>>,
    ctx: Arc<Context>,
    component: &'static str,
    suspended: fn(&K) -> bool,
    reconcile: fn(Arc<K>, Arc<Context>) -> F,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    F: std::future::Future<Output = Result<Action, Error>>,
{
    match &guard.0 {
        Ok(obj) => {
            let started = std::time::Instant::now();
            let labels = metrics::ObjectLabels::new(
                &K::kind(&()),
                &obj.name_any(),
                &obj.namespace().unwrap_or_default(),
            );
            let result = reconcile(Arc::new(obj.clone()), ctx.clone()).await;
            ctx.metrics
                .observe(&labels, started.elapsed().as_secs_f64(), suspended(obj));
            result
        }
        Err(invalid) => report_invalid::<K>(&ctx, invalid, component).await,
    }
}

async fn reconcile_helm_repository(
    guard: Arc<DeserializeGuard<HelmRepository>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    reconcile_guarded(
        guard,
        ctx,
        helm_source::COMPONENT,
        |r: &HelmRepository| r.spec.suspend == Some(true),
        helm_source::reconcile_repository,
    )
    .await
}

async fn reconcile_helm_chart(
    guard: Arc<DeserializeGuard<HelmChart>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    reconcile_guarded(
        guard,
        ctx,
        helm_source::COMPONENT,
        |c: &HelmChart| c.spec.suspend == Some(true),
        helm_source::reconcile_chart,
    )
    .await
}

async fn reconcile_helm_release(
    guard: Arc<DeserializeGuard<HelmRelease>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    reconcile_guarded(
        guard,
        ctx,
        helm_release::COMPONENT,
        |h: &HelmRelease| h.spec.suspend == Some(true),
        helm_release::reconcile,
    )
    .await
}

/// A hash of a source's artifact (revision and digest): what makes its dependants reconcile.
fn artifact_hash(artifact: Option<&crate::api::Artifact>) -> Option<u64> {
    artifact.map(|a| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        a.revision.hash(&mut h);
        a.digest.hash(&mut h);
        h.finish()
    })
}

/// A malformed object: a Warning event and Ready=False `InvalidObject`, then nothing until it
/// changes. The other objects keep reconciling.
async fn report_invalid<K>(
    ctx: &Context,
    invalid: &kube::core::error_boundary::InvalidObject,
    component: &str,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let ns = invalid.metadata.namespace.clone().unwrap_or_default();
    let name = invalid.metadata.name.clone().unwrap_or_default();
    let message = format!("invalid {}: {}", K::kind(&()), invalid.error);
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: Some(name.clone()),
        namespace: Some(ns.clone()),
        uid: invalid.metadata.uid.clone(),
        ..Default::default()
    };
    events::record(
        &ctx.client,
        &reference,
        component,
        true,
        "InvalidObject",
        &message,
    )
    .await;
    let mut conditions = Vec::new();
    Progress::new(
        &mut conditions,
        invalid.metadata.generation,
        jiff::Timestamp::now(),
    )
    .stalled("InvalidObject", &message);
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let body = serde_json::json!({"status": {"conditions": conditions}});
    api.patch_status(
        &name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&body),
    )
    .await
    .map_err(Error::Kube)?;
    Ok(Action::await_change())
}

/// The label that makes a ConfigMap or Secret trigger the Kustomizations substituting from it.
pub const WATCH_LABEL: &str = "reconcile.fluxcd.io/watch";

/// Kustomizations of `namespace` whose `postBuild.substituteFrom` names this object.
fn substituting_from(
    store: &reflector::Store<DeserializeGuard<Kustomization>>,
    kind: &str,
    name: &str,
    namespace: &str,
) -> Vec<ObjectRef<DeserializeGuard<Kustomization>>> {
    store
        .state()
        .into_iter()
        .filter(|guard| {
            let Ok(k) = &guard.0 else { return false };
            k.namespace().as_deref() == Some(namespace)
                && k.spec.post_build.as_ref().is_some_and(|pb| {
                    pb.substitute_from
                        .iter()
                        .any(|f| f.kind == kind && f.name == name)
                })
        })
        .map(|k| ObjectRef::from_obj(&*k))
        .collect()
}

/// Runs both controllers until `shutdown` resolves. `ready` is called once they watch.
pub async fn run(
    ctx: Arc<Context>,
    ready: impl FnOnce(),
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = ctx.config.namespace.clone();
    use serin_runtime::scope::api;
    let wc = watcher::Config::default();
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));

    // GitRepositories.
    let (repo_store, repo_writer) = reflector::store();
    let repo_stream = reflector::reflector(
        repo_writer,
        watcher(
            api::<DeserializeGuard<GitRepository>>(&client, ns.as_deref()),
            wc.clone(),
        ),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(spec_or_request, Default::default());
    let limits = kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency);
    let sources = Controller::for_stream(repo_stream, repo_store)
        .with_config(limits.clone())
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |obj, ctx| with_backoff_reset(obj, ctx, reconcile_source),
            error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "GitRepository reconcile did not complete");
            }
        });

    // Kustomizations, and their sources' artifacts.
    let (ks_store, ks_writer) = reflector::store();
    let ks_stream = reflector::reflector(
        ks_writer,
        watcher(
            api::<DeserializeGuard<Kustomization>>(&client, ns.as_deref()),
            wc.clone(),
        ),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(spec_or_request, Default::default());
    let artifact_stream = watcher(api::<DeserializeGuard<GitRepository>>(&client, ns.as_deref()), wc)
        .default_backoff()
        .applied_objects()
        .predicate_filter(
            |r: &DeserializeGuard<GitRepository>| {
                r.0.as_ref()
                    .ok()?
                    .status
                    .as_ref()
                    .and_then(|s| s.artifact.as_ref())
                    .map(|a| {
                        let mut h = std::collections::hash_map::DefaultHasher::new();
                        a.revision.hash(&mut h);
                        a.digest.hash(&mut h);
                        h.finish()
                    })
            },
            Default::default(),
        );
    // ConfigMaps and Secrets labelled `reconcile.fluxcd.io/watch: Enabled` (metadata only)
    // trigger the Kustomizations that substitute from them.
    let watched = watcher::Config::default().labels(&format!("{WATCH_LABEL}=Enabled"));
    let config_maps = watcher(
        api::<PartialObjectMeta<ConfigMap>>(&client, ns.as_deref()),
        watched.clone(),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(predicates::resource_version, Default::default());
    let secrets = watcher(api::<PartialObjectMeta<Secret>>(&client, ns.as_deref()), watched)
        .default_backoff()
        .applied_objects()
        .predicate_filter(predicates::resource_version, Default::default());
    let controller = Controller::for_stream(ks_stream, ks_store).with_config(limits);
    let store = controller.store();
    let (cm_store, secret_store) = (store.clone(), store.clone());
    let kustomizations = controller
        .watches_stream(config_maps, move |cm: PartialObjectMeta<ConfigMap>| {
            substituting_from(
                &cm_store,
                "ConfigMap",
                &cm.name_any(),
                &cm.namespace().unwrap_or_default(),
            )
        })
        .watches_stream(secrets, move |s: PartialObjectMeta<Secret>| {
            substituting_from(
                &secret_store,
                "Secret",
                &s.name_any(),
                &s.namespace().unwrap_or_default(),
            )
        })
        .watches_stream(artifact_stream, move |repo: DeserializeGuard<GitRepository>| {
            let repo_ns = repo.namespace().unwrap_or_default();
            let repo_name = repo.name_any();
            store
                .state()
                .into_iter()
                .filter(|guard| {
                    let Ok(k) = &guard.0 else { return false };
                    let kns = k.namespace().unwrap_or_default();
                    k.spec.source_ref.kind == "GitRepository"
                        && k.spec.source_ref.name == repo_name
                        && k.spec.source_ref.namespace.clone().unwrap_or(kns) == repo_ns
                })
                .map(|k| ObjectRef::from_obj(&*k))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |obj, ctx| with_backoff_reset(obj, ctx, reconcile_kustomization),
            error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "Kustomization reconcile did not complete");
            }
        });
    let helm = run_helm(&ctx, &client, ns.as_deref(), shutdown.clone());
    let notifications = run_notifications(&ctx, &client, ns.as_deref(), shutdown.clone());
    ready();
    futures::join!(sources, kustomizations, helm, notifications);
}

/// The Helm controllers: HelmRepositories, HelmCharts (on their own spec and their sources'
/// artifacts) and HelmReleases (on their own spec and their HelmCharts' artifacts).
async fn run_helm<S>(ctx: &Arc<Context>, client: &Client, ns: Option<&str>, shutdown: S)
where
    S: std::future::Future<Output = ()> + Clone + Send + Sync + 'static,
{
    use serin_runtime::scope::api;
    let wc = watcher::Config::default();
    let limits = kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency);

    // HelmRepositories.
    let (repo_store, repo_writer) = reflector::store();
    let repo_stream = reflector::reflector(
        repo_writer,
        watcher(api::<DeserializeGuard<HelmRepository>>(client, ns), wc.clone()),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(spec_or_request, Default::default());
    let repositories = Controller::for_stream(repo_stream, repo_store)
        .with_config(limits.clone())
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |obj, ctx| with_backoff_reset(obj, ctx, reconcile_helm_repository),
            error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "HelmRepository reconcile did not complete");
            }
        });

    // HelmCharts, and their sources' artifacts.
    let (chart_store, chart_writer) = reflector::store();
    let chart_stream = reflector::reflector(
        chart_writer,
        watcher(api::<DeserializeGuard<HelmChart>>(client, ns), wc.clone()),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(spec_or_request, Default::default());
    let helm_repo_artifacts = watcher(api::<DeserializeGuard<HelmRepository>>(client, ns), wc.clone())
        .default_backoff()
        .applied_objects()
        .predicate_filter(
            |r: &DeserializeGuard<HelmRepository>| {
                artifact_hash(r.0.as_ref().ok()?.status.as_ref()?.artifact.as_ref())
            },
            Default::default(),
        );
    let git_artifacts = watcher(api::<DeserializeGuard<GitRepository>>(client, ns), wc.clone())
        .default_backoff()
        .applied_objects()
        .predicate_filter(
            |r: &DeserializeGuard<GitRepository>| {
                artifact_hash(r.0.as_ref().ok()?.status.as_ref()?.artifact.as_ref())
            },
            Default::default(),
        );
    let chart_controller = Controller::for_stream(chart_stream, chart_store).with_config(limits.clone());
    let store = chart_controller.store();
    let charts_of = move |kind: &'static str| {
        let store = store.clone();
        move |source_ns: String, source_name: String| {
            store
                .state()
                .into_iter()
                .filter(|guard| {
                    let Ok(c) = &guard.0 else { return false };
                    c.namespace().as_deref() == Some(source_ns.as_str())
                        && c.spec.source_ref.kind == kind
                        && c.spec.source_ref.name == source_name
                })
                .map(|c| ObjectRef::from_obj(&*c))
                .collect::<Vec<_>>()
        }
    };
    let (of_helm_repo, of_git_repo) = (charts_of("HelmRepository"), charts_of("GitRepository"));
    let charts = chart_controller
        .watches_stream(helm_repo_artifacts, move |r: DeserializeGuard<HelmRepository>| {
            of_helm_repo(r.namespace().unwrap_or_default(), r.name_any())
        })
        .watches_stream(git_artifacts, move |r: DeserializeGuard<GitRepository>| {
            of_git_repo(r.namespace().unwrap_or_default(), r.name_any())
        })
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |obj, ctx| with_backoff_reset(obj, ctx, reconcile_helm_chart),
            error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "HelmChart reconcile did not complete");
            }
        });

    // HelmReleases, and their charts' artifacts.
    let (hr_store, hr_writer) = reflector::store();
    let hr_stream = reflector::reflector(
        hr_writer,
        watcher(api::<DeserializeGuard<HelmRelease>>(client, ns), wc.clone()),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(spec_or_request, Default::default());
    let chart_artifacts = watcher(api::<DeserializeGuard<HelmChart>>(client, ns), wc)
        .default_backoff()
        .applied_objects()
        .predicate_filter(
            |c: &DeserializeGuard<HelmChart>| {
                artifact_hash(c.0.as_ref().ok()?.status.as_ref()?.artifact.as_ref())
            },
            Default::default(),
        );
    let hr_controller = Controller::for_stream(hr_stream, hr_store).with_config(limits);
    let store = hr_controller.store();
    let releases = hr_controller
        .watches_stream(chart_artifacts, move |c: DeserializeGuard<HelmChart>| {
            let (chart_ns, chart_name) = (c.namespace().unwrap_or_default(), c.name_any());
            store
                .state()
                .into_iter()
                .filter(|guard| {
                    let Ok(hr) = &guard.0 else { return false };
                    helm_release::uses_chart(hr, &chart_ns, &chart_name)
                })
                .map(|hr| ObjectRef::from_obj(&*hr))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(
            |obj, ctx| with_backoff_reset(obj, ctx, reconcile_helm_release),
            error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "HelmRelease reconcile did not complete");
            }
        });
    futures::join!(repositories, charts, releases);
}

/// Notifications: the Receiver reconciler, the Receivers' webhook server (when
/// `receiver_addr` is set) and the Alerts' dispatcher.
async fn run_notifications<S>(ctx: &Arc<Context>, client: &Client, ns: Option<&str>, shutdown: S)
where
    S: std::future::Future<Output = ()> + Clone + Send + Sync + 'static,
{
    use serin_runtime::scope::api;
    let wc = watcher::Config::default();
    let limits = kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency);
    let (receiver_store, receiver_writer) = reflector::store();
    let receiver_stream = reflector::reflector(
        receiver_writer,
        watcher(api::<DeserializeGuard<Receiver>>(client, ns), wc),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(spec_or_request, Default::default());
    let receivers = Controller::for_stream(receiver_stream, receiver_store.clone())
        .with_config(limits)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |obj, ctx| with_backoff_reset(obj, ctx, reconcile_receiver),
            error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "Receiver reconcile did not complete");
            }
        });
    let server = {
        let (addr, client, shutdown) = (ctx.config.receiver_addr, client.clone(), shutdown.clone());
        async move {
            let Some(addr) = addr else { return };
            tokio::select! {
                () = shutdown => {}
                served = crate::notify::receiver::serve(addr, client, receiver_store) => {
                    if let Err(e) = served {
                        tracing::error!(error = %e, address = %addr, "the Receivers' webhook server stopped");
                    }
                }
            }
        }
    };
    let dispatcher = crate::notify::dispatch::run(client.clone(), ns.map(str::to_owned), shutdown);
    futures::join!(receivers, server, dispatcher);
}

async fn reconcile_receiver(
    guard: Arc<DeserializeGuard<Receiver>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    reconcile_guarded(
        guard,
        ctx,
        crate::notify::receiver::COMPONENT,
        |r: &Receiver| r.spec.suspend == Some(true),
        crate::notify::receiver::reconcile,
    )
    .await
}
