//! Deleting a Canary. With `revertOnDeletion` the `finalizer.flagger.app` finalizer holds the
//! deletion until the target runs again with the primary's replicas, the apex Service selects the
//! target's pods and the user's original VirtualService is back (Flagger's `finalize`). Without
//! it the generated objects are garbage-collected through their ownerReferences, and serin scales
//! the target back up when it sees the deletion, so the workload is never left at 0 replicas. A
//! target serin scaled to 0 carries the `serin.dev/scaled-down-by` annotation: when that Canary is
//! gone without serin seeing it go (deleted while serin was down), the sweep at start-up and every
//! minute scales the target back up. Does I/O (Kubernetes API).

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
use kube::{
    Api, Resource, ResourceExt,
    api::{DynamicObject, Patch, PatchParams, PostParams},
    runtime::controller::Action as RequeueAction,
};
use serde_json::{Value, json};
use serin_runtime::api_error::Context as _;

use super::{Context, Error, report, slim::PackedDeployment};
use crate::{
    api::{Canary, canary::CanaryPhase},
    engine::{self, build::primary, readiness::deployment_readiness},
};

/// Flagger's finalizer name, so Canaries moved between Flagger and serin keep working.
pub const FINALIZER: &str = "finalizer.flagger.app";
/// Where serin (like Flagger) keeps the spec of a VirtualService it took over.
pub const ORIGINAL_CONFIGURATION: &str = "flagger.kubernetes.io/original-configuration";
/// kubectl's record of what was applied.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// How often to look at a target that is scaling back up.
const WAIT: Duration = Duration::from_secs(2);
/// On a target serin scaled to 0: the name of the Canary that did it.
pub const SCALED_DOWN_BY: &str = "serin.dev/scaled-down-by";
/// How often serin looks for targets whose Canary is gone (from its caches: no API requests).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Adds the finalizer when `revertOnDeletion` is set and removes it when unset. Returns whether
/// the Canary changed (the change triggers the next reconcile).
pub async fn sync_finalizer(ctx: &Context, canary: &Canary) -> Result<bool, Error> {
    let has = canary.finalizers().iter().any(|f| f == FINALIZER);
    let want = canary.spec.reverts_on_deletion();
    if has == want {
        return Ok(false);
    }
    let mut finalizers: Vec<String> = canary
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if want {
        finalizers.push(FINALIZER.to_owned());
    }
    patch_finalizers(ctx, canary, finalizers).await?;
    Ok(true)
}

async fn patch_finalizers(ctx: &Context, canary: &Canary, finalizers: Vec<String>) -> Result<(), Error> {
    let api: Api<Canary> = Api::namespaced(ctx.client.clone(), &canary.namespace().unwrap_or_default());
    api.patch(
        &canary.name_any(),
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"finalizers": finalizers, "resourceVersion": canary.resource_version()}}),
        ),
    )
    .await
    .map(|_| ())
    .doing(|| format!("updating the finalizers of {} failed", canary.name_any()))
    .map_err(Error::Act)
}

/// The replicas the target gets back: the primary's, or (without a primary, or a primary at 0)
/// what scaling up from zero gives; never 0.
fn restore_replicas(target: &Deployment, primary: Option<&Deployment>) -> i32 {
    let primary_replicas = primary.and_then(|p| p.spec.as_ref()?.replicas).filter(|r| *r > 0);
    primary_replicas.unwrap_or_else(|| {
        primary::scale_from_zero(target.spec.as_ref().and_then(|s| s.replicas), None, None)
    })
}

async fn deployment(ctx: &Context, ns: &str, name: &str) -> Result<Option<Deployment>, Error> {
    super::shelf::deployment(ctx, ns, name)
        .await
        .map(|d| d.map(|d| (*d).clone()))
        .map_err(Error::Act)
}

/// Sets the target's replicas and drops serin's scaled-down mark.
async fn scale_up(ctx: &Context, ns: &str, name: &str, replicas: i32) -> Result<(), Error> {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({
            "metadata": {"annotations": {SCALED_DOWN_BY: null}},
            "spec": {"replicas": replicas},
        })),
    )
    .await
    .map(|_| ())
    .doing(|| format!("scaling Deployment {name}.{ns} to {replicas} failed"))
    .map_err(Error::Act)
}

/// Targets at 0 replicas that serin scaled down for a Canary that no longer exists, as
/// `(namespace, name, canary)`. `canary_exists` answers for `(namespace, name)`.
pub fn orphaned_targets<'a>(
    deployments: impl IntoIterator<Item = &'a PackedDeployment>,
    canary_exists: impl Fn(&str, &str) -> bool,
) -> Vec<(String, String, String)> {
    deployments
        .into_iter()
        .filter_map(|d| {
            let canary = d.annotations().get(SCALED_DOWN_BY)?;
            if d.replicas() != Some(0) {
                return None;
            }
            let ns = d.namespace().unwrap_or_default();
            (!canary_exists(&ns, canary)).then(|| (ns, d.name_any(), canary.clone()))
        })
        .collect()
}

/// Scales back up every target whose Canary is gone (see `orphaned_targets`). Runs only once the
/// Canary and Deployment caches are filled: an unfilled Canary cache would make every Canary look
/// gone.
pub async fn sweep(ctx: &Context) {
    let deployments = ctx.stores.deployments.state();
    let canaries: std::collections::HashSet<(String, String)> = ctx
        .canaries
        .state()
        .iter()
        .map(|c| {
            let meta = c.meta();
            (
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
            )
        })
        .collect();
    let exists = |ns: &str, name: &str| canaries.contains(&(ns.to_owned(), name.to_owned()));
    for (ns, name, canary) in orphaned_targets(deployments.iter().map(|d| d.as_ref()), exists) {
        let found = async {
            Ok::<_, Error>((
                deployment(ctx, &ns, &name).await?,
                deployment(ctx, &ns, &format!("{name}-primary")).await?,
            ))
        };
        let (target, primary) = match found.await {
            Ok((Some(target), primary)) => (target, primary),
            Ok((None, _)) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "reading the target of the deleted Canary {canary}.{ns} failed");
                continue;
            }
        };
        let want = restore_replicas(&target, primary.as_ref());
        match scale_up(ctx, &ns, &name, want).await {
            Ok(()) => tracing::info!(
                "Canary {canary}.{ns} is gone; Deployment {name}.{ns}, which it had scaled to 0, scaled back to {want} replicas"
            ),
            Err(err) => {
                tracing::warn!(error = %err, "scaling back the target of the deleted Canary {canary}.{ns} failed")
            }
        }
    }
}

/// Scales the target back up when it is at 0. Returns the target's readiness message while it
/// is not ready yet.
async fn scale_back(ctx: &Context, canary: &Canary) -> Result<Option<String>, Error> {
    let ns = canary.namespace().unwrap_or_default();
    let name = &canary.spec.target_ref.name;
    let Some(target) = deployment(ctx, &ns, name).await? else {
        return Ok(None);
    };
    let primary = deployment(ctx, &ns, &format!("{name}-primary")).await?;
    let replicas = target.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let want = restore_replicas(&target, primary.as_ref());
    if replicas == 0 || (primary.is_some() && replicas != want) {
        scale_up(ctx, &ns, name, want).await?;
        tracing::info!(canary = %format!("{}.{ns}", canary.name_any()), "Deployment {name}.{ns} scaled back to {want} replicas");
        return Ok(Some(format!(
            "Deployment {name}.{ns} is scaling back to {want} replicas"
        )));
    }
    let deadline = Duration::from_secs(canary.spec.progress_deadline_seconds().max(0) as u64);
    match deployment_readiness(&target, deadline, 100, jiff::Timestamp::now().as_second()) {
        engine::Readiness::Ready => Ok(None),
        engine::Readiness::Waiting(m) | engine::Readiness::Failed(m) => Ok(Some(m)),
    }
}

/// The apex Service selector back on the target's pods, when the Service is the user's (not
/// owned by the Canary): from kubectl's last-applied configuration, else the selector label.
async fn revert_service(ctx: &Context, canary: &Canary) -> Result<(), Error> {
    let ns = canary.namespace().unwrap_or_default();
    let apex = canary.service_names().apex;
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(svc) = api
        .get_opt(&apex)
        .await
        .doing(|| format!("Service {apex}.{ns} get query error"))
        .map_err(Error::Act)?
    else {
        return Ok(());
    };
    if owned_by(&svc.metadata, canary) {
        return Ok(());
    }
    let from_last_applied = svc
        .annotations()
        .get(LAST_APPLIED)
        .and_then(|a| serde_json::from_str::<Value>(a).ok())
        .and_then(|v| v.pointer("/spec/selector").cloned());
    let selector = match from_last_applied {
        Some(s) => s,
        None => {
            let Some(target) = deployment(ctx, &ns, &canary.spec.target_ref.name).await? else {
                return Ok(());
            };
            let target = serde_json::to_value(&target).unwrap_or(Value::Null);
            match primary::selector_label(&target, &ctx.config.selector_labels) {
                Ok((k, v)) => json!({k: v}),
                Err(_) => return Ok(()),
            }
        }
    };
    let mut svc = svc;
    if let Some(spec) = svc.spec.as_mut() {
        spec.selector = serde_json::from_value(selector).ok();
    }
    svc.metadata.managed_fields = None;
    api.replace(&apex, &PostParams::default(), &svc)
        .await
        .map(|_| ())
        .doing(|| format!("Service {apex}.{ns} revert failed"))
        .map_err(Error::Act)
}

/// The VirtualService's spec back as the user had it (kubectl's last-applied configuration, else
/// the saved original). Returns a warning when there is nothing to restore.
async fn revert_virtual_service(ctx: &Context, canary: &Canary) -> Result<Option<String>, Error> {
    let ns = canary.namespace().unwrap_or_default();
    let apex = canary.service_names().apex;
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &ns,
        &super::act::istio("VirtualService", "virtualservices"),
    );
    let Some(mut vs) = api
        .get_opt(&apex)
        .await
        .doing(|| format!("VirtualService {apex}.{ns} get query error"))
        .map_err(Error::Act)?
    else {
        return Ok(None);
    };
    let annotations = vs.annotations();
    let original = annotations
        .get(LAST_APPLIED)
        .and_then(|a| serde_json::from_str::<Value>(a).ok())
        .and_then(|v| v.get("spec").cloned())
        .or_else(|| {
            annotations
                .get(ORIGINAL_CONFIGURATION)
                .and_then(|a| serde_json::from_str::<Value>(a).ok())
        });
    let Some(original) = original else {
        return Ok(Some(format!(
            "VirtualService {apex}.{ns} original configuration not found, unable to revert"
        )));
    };
    vs.data["spec"] = original;
    vs.metadata.managed_fields = None;
    api.replace(&apex, &PostParams::default(), &vs)
        .await
        .doing(|| format!("VirtualService {apex}.{ns} revert failed"))
        .map_err(Error::Act)?;
    Ok(None)
}

/// Whether an object carries an ownerReference to this Canary.
pub fn owned_by(meta: &kube::api::ObjectMeta, canary: &Canary) -> bool {
    let uid = canary.metadata.uid.as_deref();
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Canary" && Some(o.uid.as_str()) == uid)
}

/// Finalizes a Canary being deleted with the finalizer: Terminating, the target back up and
/// ready, the Service and VirtualService reverted, then the finalizer removed.
pub async fn finalize(ctx: &Context, canary: &Canary) -> Result<RequeueAction, Error> {
    if !canary.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(RequeueAction::await_change());
    }
    let name = format!("{}.{}", canary.name_any(), canary.namespace().unwrap_or_default());
    let phase = canary.status.as_ref().map(|s| s.phase).unwrap_or_default();
    if phase != CanaryPhase::Terminating {
        let update = engine::StatusUpdate {
            phase: Some(CanaryPhase::Terminating),
            ..Default::default()
        };
        report::write_status(ctx, canary, &update).await?;
        report::events(
            ctx,
            canary,
            &[engine::Event::normal(format!("Terminating canary {name}"))],
        )
        .await;
    }
    if let Some(waiting) = scale_back(ctx, canary).await? {
        tracing::info!(canary = %name, "waiting for the target before finalizing: {waiting}");
        return Ok(RequeueAction::requeue(WAIT));
    }
    if let Some(uid) = canary.metadata.uid.as_deref() {
        ctx.applied.forget_canary(uid);
        ctx.comparisons.forget(uid);
    }
    revert_service(ctx, canary).await?;
    if let Some(warning) = revert_virtual_service(ctx, canary).await? {
        report::events(ctx, canary, &[engine::Event::warning(warning)]).await;
    }
    let finalizers = canary
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    patch_finalizers(ctx, canary, finalizers).await?;
    report::events(
        ctx,
        canary,
        &[engine::Event::normal(format!("Terminated canary {name}"))],
    )
    .await;
    Ok(RequeueAction::await_change())
}

/// A Canary deleted without the finalizer: its target back up from 0 (its generated objects go
/// by garbage collection).
pub async fn deleted(ctx: &Context, canary: &Canary) {
    if let Some(uid) = canary.metadata.uid.as_deref() {
        ctx.written.remove(uid);
        ctx.applied.forget_canary(uid);
        ctx.comparisons.forget(uid);
    }
    if canary.spec.reverts_on_deletion() {
        return;
    }
    match scale_back(ctx, canary).await {
        Ok(_) => {}
        Err(err) => {
            tracing::warn!(canary = %canary.name_any(), error = %err, "scaling the target back up after the Canary's deletion failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment_with(replicas: Option<i32>) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "d"}, "spec": {"replicas": replicas, "selector": {}, "template": {}}})).expect("deployment")
    }

    #[test]
    fn targets_are_orphaned_when_the_canary_that_scaled_them_down_is_gone() {
        let deployment = |name: &str, replicas: i32, mark: Option<&str>| -> PackedDeployment {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "test", "annotations": mark.map(|m| json!({SCALED_DOWN_BY: m}))},
                "spec": {"replicas": replicas, "selector": {}, "template": {}},
            }))
            .expect("deployment")
        };
        let deployments = [
            deployment("gone", 0, Some("gone")),
            deployment("live", 0, Some("live")),
            deployment("scaled-up-since", 2, Some("gone")),
            deployment("users-own-zero", 0, None),
        ];
        let exists = |ns: &str, name: &str| ns == "test" && name == "live";
        assert_eq!(
            orphaned_targets(&deployments, exists),
            [("test".to_owned(), "gone".to_owned(), "gone".to_owned())]
        );
    }

    #[test]
    fn the_target_never_goes_back_to_zero() {
        let target = deployment_with(Some(0));
        assert_eq!(restore_replicas(&target, Some(&deployment_with(Some(3)))), 3);
        assert_eq!(restore_replicas(&target, Some(&deployment_with(Some(0)))), 1);
        assert_eq!(restore_replicas(&target, None), 1);
    }
}
