//! The Kustomization reconciler, step by step as Flux's kustomize-controller: source and
//! dependencies, build, staged server-side apply, inventory and prune, health checks, then the
//! status (Ready / Reconciling / Stalled / Healthy, revisions, history) and events. Deletion
//! garbage-collects per `deletionPolicy`. Does I/O; the decisions it takes are in pure modules
//! (`build`, `apply::order`, `apply::drift`, `status`).

mod phases;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::Value;

use super::{
    Context, Error, events, finalizer,
    status::{self, ConditionStatus, Progress},
};
use crate::{
    api::{Kustomization, KustomizationStatus, REQUESTED_AT_ANNOTATION},
    apply::{
        manager::{self, CanaryTargets, Change, ResourceManager},
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
    let suspended = ks.spec.suspend == Some(true);
    if let Some(action) = finalizer::preamble(&*ks, &api, suspended, || finalize(&ks, &ctx)).await? {
        return Ok(action);
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
    // A reconcile request counts as handled only with the run's final status (the statuses
    // written while it runs keep the previous one), which is what `reconcile kustomization`
    // waits for.
    let handled = ks
        .annotations()
        .get(REQUESTED_AT_ANNOTATION)
        .cloned()
        .or_else(|| st.last_handled_reconcile_at.clone());

    if let Some(message) = status::unsupported_kustomization_field(&ks.spec) {
        Progress::new(&mut st.conditions, generation, jiff::Timestamp::now())
            .stalled(status::UNSUPPORTED_REASON, &message)
            .remove(status::RECONCILING);
        st.observed_generation = generation;
        st.last_handled_reconcile_at = handled;
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

    let outcome = phases::run(&ks, &ctx, &api, &mut st).await;
    st.last_handled_reconcile_at = handled;
    let mut progress = Progress::new(&mut st.conditions, generation, jiff::Timestamp::now());
    match outcome {
        Ok(revision) => {
            progress
                .set(
                    status::READY,
                    ConditionStatus::True,
                    "ReconciliationSucceeded",
                    &format!("Applied revision: {revision}"),
                )
                .remove(status::RECONCILING);
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
            progress
                .set(
                    status::READY,
                    ConditionStatus::False,
                    failure.reason,
                    &failure.message,
                )
                .retrying();
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
