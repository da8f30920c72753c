//! The Kustomization reconciler, step by step as Flux's kustomize-controller: source and
//! dependencies, build, staged server-side apply, inventory and prune, health checks, then the
//! status (Ready / Reconciling / Stalled / Healthy, revisions, history) and events. Deletion
//! garbage-collects per `deletionPolicy`. Does I/O; the decisions it takes are in pure modules
//! (`build`, `apply::order`, `apply::drift`, `status`).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::Value;

use super::{Context, Error, events, finalizer, status};
use crate::{
    api::{
        FINALIZER, GitRepository, Kustomization, KustomizationStatus, REQUESTED_AT_ANNOTATION,
        kustomization::ResourceInventory,
    },
    apply::{
        manager::{self, ApplyOptions, CanaryTargets, Change, ResourceManager},
        order::{self, ObjectId},
    },
    build::{self, PostBuildVars, objects},
};

/// The component name of the events, Flux's.
pub const COMPONENT: &str = "kustomize-controller";
/// serin's condition on a Kustomization whose apply could not tell which Deployments Canaries
/// target (absent when it could).
pub const CANARY_TARGETS_CONDITION: &str = "CanaryTargetsKnown";

/// Why one run did not reach Ready=True: Flux's reason and message.
struct Failure {
    reason: &'static str,
    message: String,
    requeue: Option<Duration>,
}

impl Failure {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            requeue: None,
        }
    }
}

/// Reconciles one Kustomization.
pub async fn reconcile(ks: Arc<Kustomization>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let ns = ks.namespace().unwrap_or_default();
    let name = ks.name_any();
    let api: Api<Kustomization> = Api::namespaced(ctx.client.clone(), &ns);
    if ks.meta().deletion_timestamp.is_some() {
        finalize(&ks, &ctx).await;
        finalizer::remove(&api, &name, ks.finalizers(), FINALIZER).await?;
        return Ok(Action::await_change());
    }
    if !ks.finalizers().iter().any(|f| f == FINALIZER) {
        finalizer::add(&api, &name, ks.finalizers(), FINALIZER).await?;
    }
    if ks.spec.suspend == Some(true) {
        tracing::info!(kustomization = %format!("{ns}/{name}"), "Reconciliation is suspended for this object");
        return Ok(Action::await_change());
    }
    let interval = status::parse_duration(&ks.spec.interval).unwrap_or(Duration::from_secs(600));
    let retry = ks
        .spec
        .retry_interval
        .as_deref()
        .and_then(|text| status::parse_duration(text).ok())
        .unwrap_or(interval);
    let generation = ks.meta().generation;
    let reference = ks.object_ref(&());
    let mut st = ks.status.clone().unwrap_or_default();
    st.last_handled_reconcile_at = ks
        .annotations()
        .get(REQUESTED_AT_ANNOTATION)
        .cloned()
        .or(st.last_handled_reconcile_at);

    if let Some(message) = status::unsupported_kustomization_field(&ks.spec) {
        let now = jiff::Timestamp::now();
        status::set_condition(
            &mut st.conditions,
            status::READY,
            "False",
            status::UNSUPPORTED_REASON,
            &message,
            generation,
            now,
        );
        status::set_condition(
            &mut st.conditions,
            status::STALLED,
            "True",
            status::UNSUPPORTED_REASON,
            &message,
            generation,
            now,
        );
        status::remove_condition(&mut st.conditions, status::RECONCILING);
        st.observed_generation = generation;
        patch_status(&api, &name, &st).await?;
        events::record(
            &ctx.client,
            &reference,
            COMPONENT,
            true,
            status::UNSUPPORTED_REASON,
            &message,
        )
        .await;
        return Ok(Action::await_change());
    }
    status::remove_condition(&mut st.conditions, status::STALLED);

    let outcome = run(&ks, &ctx, &api, &mut st).await;
    let now = jiff::Timestamp::now();
    match outcome {
        Ok(revision) => {
            status::set_condition(
                &mut st.conditions,
                status::READY,
                "True",
                "ReconciliationSucceeded",
                &format!("Applied revision: {revision}"),
                generation,
                now,
            );
            status::remove_condition(&mut st.conditions, status::RECONCILING);
            st.observed_generation = generation;
            patch_status(&api, &name, &st).await?;
            let next = super::jitter(interval);
            let message = format!(
                "Reconciliation finished in {}, next run in {}",
                status::format_duration(started.elapsed()),
                status::format_duration(interval)
            );
            events::record(
                &ctx.client,
                &reference,
                COMPONENT,
                false,
                "ReconciliationSucceeded",
                &message,
            )
            .await;
            Ok(Action::requeue(serin_runtime::duration::requeue_delay(next)))
        }
        Err(failure) => {
            status::set_condition(
                &mut st.conditions,
                status::READY,
                "False",
                failure.reason,
                &failure.message,
                generation,
                now,
            );
            if let Some(c) = st.conditions.iter_mut().find(|c| c.type_ == status::RECONCILING) {
                c.reason = "ProgressingWithRetry".into();
            }
            patch_status(&api, &name, &st).await?;
            if failure.reason == "DependencyNotReady" {
                let message = format!(
                    "Dependencies do not meet ready condition, retrying in {}",
                    status::format_duration(ctx.config.requeue_dependency)
                );
                events::record(
                    &ctx.client,
                    &reference,
                    COMPONENT,
                    false,
                    failure.reason,
                    &message,
                )
                .await;
            } else {
                events::record(
                    &ctx.client,
                    &reference,
                    COMPONENT,
                    true,
                    failure.reason,
                    &failure.message,
                )
                .await;
            }
            Ok(Action::requeue(serin_runtime::duration::requeue_delay(
                failure.requeue.unwrap_or(retry),
            )))
        }
    }
}

/// One run up to Ready=True; returns the applied revision.
async fn run(
    ks: &Kustomization,
    ctx: &Context,
    api: &Api<Kustomization>,
    st: &mut KustomizationStatus,
) -> Result<String, Failure> {
    let started = std::time::Instant::now();
    let ns = ks.namespace().unwrap_or_default();
    let name = ks.name_any();
    let generation = ks.meta().generation;
    let timeout = status::kustomization_timeout(&ks.spec);
    let dependency_wait = Some(ctx.config.requeue_dependency);

    // Source.
    let source_ns = ks.spec.source_ref.namespace.clone().unwrap_or_else(|| ns.clone());
    let sources: Api<GitRepository> = Api::namespaced(ctx.client.clone(), &source_ns);
    let source = match sources.get_opt(&ks.spec.source_ref.name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(Failure::new(
                "ArtifactFailed",
                format!(
                    "Source '{}/{}/{}' not found",
                    ks.spec.source_ref.kind, source_ns, ks.spec.source_ref.name
                ),
            ));
        }
        Err(e) => return Err(Failure::new("ArtifactFailed", super::api_message(&e))),
    };
    let Some(artifact) = source.status.as_ref().and_then(|s| s.artifact.clone()) else {
        return Err(Failure {
            requeue: dependency_wait,
            ..Failure::new("ArtifactFailed", "Source artifact not found, retrying in 30s")
        });
    };
    let revision = artifact.revision.clone();

    // Dependencies.
    for dep in &ks.spec.depends_on {
        let dep_ns = dep.namespace.clone().unwrap_or_else(|| ns.clone());
        let deps: Api<Kustomization> = Api::namespaced(ctx.client.clone(), &dep_ns);
        let not_ready = |m: String| Failure {
            requeue: dependency_wait,
            ..Failure::new("DependencyNotReady", m)
        };
        let d = match deps.get_opt(&dep.name).await {
            Ok(Some(d)) => d,
            Ok(None) => return Err(not_ready(format!("dependency '{dep_ns}/{}' not found", dep.name))),
            Err(e) => {
                return Err(not_ready(format!(
                    "dependency '{dep_ns}/{}' not found: {}",
                    dep.name,
                    super::api_message(&e)
                )));
            }
        };
        let ds = d.status.clone().unwrap_or_default();
        let ready = d.meta().generation == ds.observed_generation
            && status::condition(&ds.conditions, status::READY).is_some_and(|c| c.status == "True");
        if !ready {
            return Err(not_ready(format!(
                "dependency '{dep_ns}/{}' is not ready",
                dep.name
            )));
        }
        let same_source = d.spec.source_ref.kind == ks.spec.source_ref.kind
            && d.spec.source_ref.name == ks.spec.source_ref.name
            && d.spec
                .source_ref
                .namespace
                .clone()
                .unwrap_or_else(|| dep_ns.clone())
                == source_ns;
        if same_source && ds.last_applied_revision.as_deref() != Some(revision.as_str()) {
            return Err(not_ready(format!(
                "dependency '{dep_ns}/{}' revision is not up to date",
                dep.name
            )));
        }
    }

    // Progress.
    let now = jiff::Timestamp::now();
    let t = status::format_duration(timeout);
    status::set_condition(
        &mut st.conditions,
        status::READY,
        "Unknown",
        "Progressing",
        "Reconciliation in progress",
        generation,
        now,
    );
    status::set_condition(
        &mut st.conditions,
        status::RECONCILING,
        "True",
        "Progressing",
        &format!("Fetching manifests for revision {revision} with a timeout of {t}"),
        generation,
        now,
    );
    let _ = patch_status(api, &name, st).await;

    // Build.
    let artifact_dir = ctx.config.storage_dir.join(&artifact.path);
    if !artifact_dir.is_dir() {
        return Err(Failure {
            requeue: dependency_wait,
            ..Failure::new(
                "ArtifactFailed",
                "Source is not ready, artifact not found, retrying in 30s",
            )
        });
    }
    let path_ok = artifact_dir
        .join(ks.spec.path.as_deref().unwrap_or("").trim_start_matches("./"))
        .is_dir();
    if path_ok {
        st.last_attempted_revision = Some(revision.clone());
    }
    status::set_condition(
        &mut st.conditions,
        status::RECONCILING,
        "True",
        "Progressing",
        &format!("Building manifests for revision {revision} with a timeout of {t}"),
        generation,
        now,
    );
    let _ = patch_status(api, &name, st).await;
    let client = ctx
        .client_for(ks)
        .map_err(|e| Failure::new("ReconciliationFailed", e))?;
    let vars = post_build_vars(ks, &client).await?;
    let built = build::build(&artifact_dir, &ks.spec, vars.as_ref())
        .await
        .map_err(|e| Failure::new(e.reason(), e.to_string()))?;
    let record_history = |st: &mut KustomizationStatus, reason: &str| {
        status::upsert_history(
            &mut st.history,
            &built.digest,
            reason,
            &revision,
            started.elapsed(),
            &jiff::Timestamp::now().to_string(),
        );
    };

    let desired = desired_objects(ks, built.objects.clone());

    // Apply.
    status::set_condition(
        &mut st.conditions,
        status::RECONCILING,
        "True",
        "Progressing",
        &format!("Detecting drift for revision {revision} with a timeout of {t}"),
        generation,
        now,
    );
    let _ = patch_status(api, &name, st).await;
    let mut rm = ResourceManager::new(client.clone());
    let targets = canary_targets(&client).await;
    let reference = ks.object_ref(&());
    match &targets {
        CanaryTargets::Unknown(reason) => {
            let message = format!(
                "cannot list Canaries ({reason}): the replicas of every Deployment are left as they are"
            );
            status::set_condition(
                &mut st.conditions,
                CANARY_TARGETS_CONDITION,
                "False",
                "ListFailed",
                &message,
                generation,
                now,
            );
            events::record(
                &ctx.client,
                &reference,
                COMPONENT,
                true,
                "CanaryTargetsUnknown",
                &message,
            )
            .await;
        }
        CanaryTargets::Known(_) => st.conditions.retain(|c| c.type_ != CANARY_TARGETS_CONDITION),
    }
    let options = ApplyOptions {
        force: ks.spec.force == Some(true),
        ignore: ks.spec.ignore.clone(),
        canary_targets: targets,
        stage_timeout: ctx.config.stage_timeout,
        poll_interval: ctx.config.poll_interval,
    };
    let changes = match rm.apply_all_staged(desired, &options).await {
        Ok(changes) => changes,
        Err(err) => {
            report_changes(ctx, &reference, &err.changes).await;
            record_history(st, "ReconciliationFailed");
            return Err(Failure::new("ReconciliationFailed", err.message));
        }
    };
    report_changes(ctx, &reference, &changes).await;

    // Inventory and prune.
    let old = st
        .inventory
        .as_ref()
        .map(|i| i.entries.clone())
        .unwrap_or_default();
    let new = order::inventory(&changes.iter().map(|c| c.id.clone()).collect::<Vec<_>>());
    st.inventory = Some(ResourceInventory { entries: new.clone() });
    if ks.spec.prune {
        let stale = order::stale(&old, &new);
        if !stale.is_empty() {
            let (deleted, errors) = rm.delete_all(&stale, &manager::owner(&name, &ns)).await;
            let lines: Vec<String> = deleted
                .iter()
                .filter(|c| c.action == manager::Action::Deleted)
                .map(ToString::to_string)
                .collect();
            if !lines.is_empty() {
                events::record(
                    &ctx.client,
                    &reference,
                    COMPONENT,
                    false,
                    "Progressing",
                    &lines.join("\n"),
                )
                .await;
            }
            if !errors.is_empty() {
                // Objects whose deletion failed stay in the inventory, to be retried.
                let mut entries = new.clone();
                let failed: Vec<ObjectId> = stale
                    .iter()
                    .filter(|id| !deleted.iter().any(|c| &c.id == *id))
                    .cloned()
                    .collect();
                entries.extend(order::inventory(&failed));
                entries.sort();
                st.inventory = Some(ResourceInventory { entries });
                record_history(st, "PruneFailed");
                return Err(Failure::new(
                    "PruneFailed",
                    format!("delete failed, errors: {};", errors.join(";")),
                ));
            }
        }
    }

    // Health.
    let checks: Vec<ObjectId> = if ks.spec.wait == Some(true) {
        changes
            .iter()
            .filter(|c| c.action != manager::Action::Skipped)
            .map(|c| c.id.clone())
            .collect()
    } else {
        ks.spec
            .health_checks
            .iter()
            .map(|h| {
                let api_version = h.api_version.clone().unwrap_or_else(|| "apps/v1".into());
                let (group, version) = api_version
                    .rsplit_once('/')
                    .map_or((String::new(), api_version.clone()), |(g, v)| {
                        (g.to_owned(), v.to_owned())
                    });
                ObjectId {
                    group,
                    version,
                    kind: h.kind.clone(),
                    namespace: h.namespace.clone().unwrap_or_else(|| ns.clone()),
                    name: h.name.clone(),
                }
            })
            .collect()
    };
    let checks: Vec<ObjectId> = checks
        .into_iter()
        .filter(|id| {
            !(id.kind == "Kustomization"
                && id.group == crate::api::kustomization::GROUP
                && id.name == name
                && id.namespace == ns)
        })
        .collect();
    if checks.is_empty() {
        status::remove_condition(&mut st.conditions, status::HEALTHY);
    } else {
        let now = jiff::Timestamp::now();
        let was_healthy =
            status::condition(&st.conditions, status::HEALTHY).is_some_and(|c| c.status == "True");
        let message = format!("Running health checks for revision {revision} with a timeout of {t}");
        status::set_condition(
            &mut st.conditions,
            status::RECONCILING,
            "True",
            "Progressing",
            &message,
            generation,
            now,
        );
        status::set_condition(
            &mut st.conditions,
            status::HEALTHY,
            "Unknown",
            "Progressing",
            &message,
            generation,
            now,
        );
        let _ = patch_status(api, &name, st).await;
        let started = std::time::Instant::now();
        if let Err(e) = rm.wait_for(&checks, timeout, ctx.config.health_interval).await {
            let message = format!(
                "health check failed after {}: {e}",
                status::format_duration(started.elapsed())
            );
            status::set_condition(
                &mut st.conditions,
                status::HEALTHY,
                "False",
                "HealthCheckFailed",
                &message,
                generation,
                jiff::Timestamp::now(),
            );
            record_history(st, "HealthCheckFailed");
            return Err(Failure::new("HealthCheckFailed", message));
        }
        let message = format!(
            "Health check passed in {}",
            status::format_duration(started.elapsed())
        );
        status::set_condition(
            &mut st.conditions,
            status::HEALTHY,
            "True",
            "Succeeded",
            &message,
            generation,
            jiff::Timestamp::now(),
        );
        let drifted = changes
            .iter()
            .any(|c| matches!(c.action, manager::Action::Created | manager::Action::Configured));
        if !was_healthy || drifted {
            events::record(&ctx.client, &reference, COMPONENT, false, "Progressing", &message).await;
        }
    }

    st.last_applied_revision = Some(revision.clone());
    record_history(st, "ReconciliationSucceeded");
    Ok(revision)
}

/// The built objects with the common metadata and the ownership labels set.
pub fn desired_objects(ks: &Kustomization, mut built: Vec<Value>) -> Vec<Value> {
    let owner = objects::owner_labels(&ks.name_any(), &ks.namespace().unwrap_or_default());
    let common = ks.spec.common_metadata.clone().unwrap_or_default();
    for o in &mut built {
        objects::set_metadata(o, &common.labels, &common.annotations);
        objects::set_metadata(o, &owner, &BTreeMap::new());
    }
    built
}

/// Emits the change set's created/configured lines as one Normal event.
async fn report_changes(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    changes: &[Change],
) {
    let lines: Vec<String> = changes
        .iter()
        .filter(|c| matches!(c.action, manager::Action::Created | manager::Action::Configured))
        .map(ToString::to_string)
        .collect();
    if !lines.is_empty() {
        events::record(
            &ctx.client,
            reference,
            COMPONENT,
            false,
            "Progressing",
            &lines.join("\n"),
        )
        .await;
    }
}

/// The substitution variables: `substituteFrom` in order, then `substitute`.
pub async fn substitution_vars(ks: &Kustomization, client: &Client) -> Result<Option<PostBuildVars>, String> {
    post_build_vars(ks, client).await.map_err(|f| f.message)
}

async fn post_build_vars(ks: &Kustomization, client: &Client) -> Result<Option<PostBuildVars>, Failure> {
    let Some(pb) = &ks.spec.post_build else {
        return Ok(None);
    };
    let ns = ks.namespace().unwrap_or_default();
    let mut vars = BTreeMap::new();
    for from in &pb.substitute_from {
        let optional = from.optional == Some(true);
        let data: Option<BTreeMap<String, String>> = if from.kind == "Secret" {
            let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
            api.get_opt(&from.name).await.ok().flatten().map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .chain(s.string_data.unwrap_or_default())
                    .collect()
            })
        } else {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            api.get_opt(&from.name)
                .await
                .ok()
                .flatten()
                .map(|c| c.data.unwrap_or_default())
        };
        match data {
            Some(d) => vars.extend(d),
            None if optional => {}
            None => {
                return Err(Failure::new(
                    "BuildFailed",
                    format!(
                        "substitute from '{}/{}' failed: {} \"{}\" not found",
                        from.kind,
                        from.name,
                        from.kind.to_lowercase(),
                        from.name
                    ),
                ));
            }
        }
    }
    vars.extend(pb.substitute.clone());
    let vars =
        build::substitute::prepare_vars(vars).map_err(|e| Failure::new("BuildFailed", e.to_string()))?;
    Ok(Some(PostBuildVars {
        vars,
        always: pb.substitute_strategy.as_deref() == Some("Always"),
        strict: true,
    }))
}

/// The Deployments Canaries target: none when serin is not installed (no Canary API), unknown
/// when the Canaries cannot be listed (a forbidden list, an unreachable server), so that the
/// apply fails closed.
pub async fn canary_targets(client: &Client) -> CanaryTargets {
    let gvk = GroupVersionKind::gvk("flagger.app", "v1beta1", "Canary");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "canaries");
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let list = match api.list(&ListParams::default()).await {
        Ok(list) => list,
        // No Canary API: serin is not installed, so no Deployment is a Canary's target.
        Err(e) if serin_runtime::api_error::Kind::of(&e) == serin_runtime::api_error::Kind::NotFound => {
            return CanaryTargets::Known(Vec::new());
        }
        Err(e) => return CanaryTargets::Unknown(super::api_message(&e)),
    };
    CanaryTargets::Known(
        list.items
            .into_iter()
            .filter_map(|c| {
                let target = &c.data["spec"]["targetRef"];
                let kind = target["kind"].as_str().unwrap_or("Deployment");
                (kind == "Deployment").then(|| {
                    (
                        c.namespace().unwrap_or_default(),
                        target["name"].as_str().unwrap_or_default().to_owned(),
                    )
                })
            })
            .collect(),
    )
}

/// Garbage collection on deletion, per `deletionPolicy`.
async fn finalize(ks: &Kustomization, ctx: &Context) {
    let st = ks.status.clone().unwrap_or_default();
    let entries = st.inventory.map(|i| i.entries).unwrap_or_default();
    let policy = ks.spec.deletion_policy.as_deref().unwrap_or("MirrorPrune");
    let delete = match policy {
        "Delete" | "WaitForTermination" => true,
        "Orphan" => false,
        _ => ks.spec.prune,
    };
    if ks.spec.suspend == Some(true) || entries.is_empty() || !delete {
        return;
    }
    let reference = ks.object_ref(&());
    let Ok(client) = ctx.client_for(ks) else {
        events::record(
            &ctx.client,
            &reference,
            COMPONENT,
            true,
            "PruneFailed",
            "unable to prune objects: cannot impersonate the service account",
        )
        .await;
        return;
    };
    let mut rm = ResourceManager::new(client);
    let stale = order::stale(&entries, &[]);
    let (deleted, errors) = rm
        .delete_all(
            &stale,
            &manager::owner(&ks.name_any(), &ks.namespace().unwrap_or_default()),
        )
        .await;
    if !errors.is_empty() {
        events::record(
            &ctx.client,
            &reference,
            COMPONENT,
            true,
            "PruneFailed",
            "pruning for deleted resource failed",
        )
        .await;
    }
    if policy == "WaitForTermination" {
        let ids: Vec<ObjectId> = deleted
            .iter()
            .filter(|c| c.action == manager::Action::Deleted)
            .map(|c| c.id.clone())
            .collect();
        let deadline = tokio::time::Instant::now() + status::kustomization_timeout(&ks.spec);
        for id in ids {
            while matches!(rm.get(&id).await, Ok(Some(_))) {
                if tokio::time::Instant::now() >= deadline {
                    events::record(
                        &ctx.client,
                        &reference,
                        COMPONENT,
                        true,
                        "PruneFailed",
                        "failed to wait for resources termination",
                    )
                    .await;
                    return;
                }
                tokio::time::sleep(ctx.config.poll_interval).await;
            }
        }
    }
}

async fn patch_status(api: &Api<Kustomization>, name: &str, st: &KustomizationStatus) -> Result<(), Error> {
    let mut body = serde_json::json!({ "status": st });
    // Conditions and history are replaced whole; removed optional fields are cleared.
    for field in ["inventory", "lastAppliedRevision", "lastAttemptedRevision"] {
        if body["status"][field].is_null() {
            body["status"][field] = Value::Null;
        }
    }
    if st.history.is_empty() {
        body["status"]["history"] = Value::Array(Vec::new());
    }
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map(|_| ())
        .map_err(Error::Kube)
}
