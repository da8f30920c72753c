//! Carrying out the engine's actions: server-side apply of the primary Deployment, config copies,
//! Services, DestinationRules and VirtualService under one field manager, target scaling, and the
//! post-rollout webhooks. Does I/O (Kubernetes API).

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        autoscaling::v2::HorizontalPodAutoscaler,
        core::v1::{ConfigMap, Secret, Service},
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams},
    core::{ApiResource, GroupVersionKind},
    runtime::reflector::ObjectRef,
};
use serde_json::{Value, json};
use serin_runtime::api_error::{Context as _, Failure};

use super::{Context, finalize, observe::World};
use crate::{
    api::{Canary, istio::VirtualService},
    engine::{
        Action, Event, Routes, Scale,
        build::{
            self, configs,
            primary::{self, PrimaryInput},
            routing,
        },
    },
};

/// The field manager of everything serin writes.
pub const FIELD_MANAGER: &str = "serin";

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// An Istio networking resource.
pub fn istio(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1beta1", kind),
        plural,
    )
}

/// The field managers whose Update-written fields serin takes over on the objects it applies:
/// Flagger's, so that a Canary switched from Flagger loses what Flagger set and serin does not.
pub const FOREIGN_MANAGERS: &[&str] = &["flagger"];

async fn apply_dynamic(
    ctx: &Context,
    resource: &ApiResource,
    ns: &str,
    object: &Value,
) -> Result<DynamicObject, Failure> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, resource);
    apply_owned(&api, &name, object)
        .await
        .doing(|| format!("{} {name}.{ns} apply failed", resource.kind))
}

/// Applies an object with serin's field manager.
async fn apply<K>(api: &Api<K>, name: &str, object: &Value) -> Result<(), Failure>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    apply_owned(api, name, object)
        .await
        .map(|_| ())
        .doing(|| format!("{name} apply failed"))
}

/// Applies an object; when fields of it were written with Update by a manager serin replaces
/// ([`FOREIGN_MANAGERS`]), takes them over and applies again, so that what serin no longer sets
/// is removed.
async fn apply_owned<K>(api: &Api<K>, name: &str, object: &Value) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let written = api.patch(name, &apply_params(), &Patch::Apply(object)).await?;
    let meta = written.meta();
    let Some(adopted) = meta.managed_fields.as_deref().and_then(|entries| {
        serin_runtime::ssa::adopt_foreign_fields(entries, FOREIGN_MANAGERS, FIELD_MANAGER)
    }) else {
        return Ok(written);
    };
    // A merge patch replaces the list; the resourceVersion makes it fail on a concurrent write.
    let patch = json!({"metadata": {"resourceVersion": meta.resource_version, "managedFields": adopted}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(object = name, managers = ?FOREIGN_MANAGERS, "took over fields written by another manager");
    api.patch(name, &apply_params(), &Patch::Apply(object)).await
}

/// Applies a Deployment and records the generation the write produced.
async fn apply_deployment(
    ctx: &Context,
    api: &Api<Deployment>,
    name: &str,
    object: &Value,
) -> Result<(), Failure> {
    let written = apply_owned(api, name, object)
        .await
        .doing(|| format!("{name} apply failed"))?;
    record_generation(ctx, &written);
    Ok(())
}

/// Remembers the generation of a Deployment serin wrote, so that readiness waits for the cache
/// to show that write.
fn record_generation(ctx: &Context, written: &Deployment) {
    let (Some(ns), Some(name), Some(uid), Some(generation)) = (
        written.metadata.namespace.as_ref(),
        written.metadata.name.as_ref(),
        written.metadata.uid.as_ref(),
        written.metadata.generation,
    ) else {
        return;
    };
    ctx.deployment_generations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            format!("{ns}/{name}"),
            (uid.clone(), generation, std::time::Instant::now()),
        );
}

/// Carries out one action. Returns events it produced.
pub async fn act(
    ctx: &Context,
    canary: &Canary,
    world: &World,
    action: &Action,
) -> Result<Vec<Event>, Failure> {
    let ns = canary.metadata.namespace.clone().unwrap_or_default();
    match action {
        Action::EnsurePrimary => {
            if world.primary.is_none() {
                write_primary(ctx, canary, world, false).await?;
                tracing::info!(canary = %format!("{}.{ns}", canary.metadata.name.as_deref().unwrap_or_default()), "Deployment {}-primary.{ns} created", canary.spec.target_ref.name);
            }
            ensure_primary_hpa(ctx, canary, false).await?;
            Ok(Vec::new())
        }
        Action::EnsureBackendServices => {
            ensure_services(ctx, canary, world, false).await?;
            Ok(Vec::new())
        }
        Action::EnsureRouting => {
            ensure_routing(ctx, canary, world, None).await?;
            Ok(Vec::new())
        }
        Action::SetRoutes(routes) => {
            ensure_routing(ctx, canary, world, Some(*routes)).await?;
            Ok(Vec::new())
        }
        Action::ScaleTarget(scale) => {
            let replicas = match scale {
                Scale::Zero => 0,
                Scale::FromZero => {
                    let hpa_min = match &canary.spec.autoscaler_ref {
                        Some(r) => {
                            let api: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &ns);
                            Some(
                                api.get_opt(&r.name)
                                    .await
                                    .ok()
                                    .flatten()
                                    .and_then(|h| h.spec.and_then(|s| s.min_replicas)),
                            )
                        }
                        None => None,
                    };
                    primary::scale_from_zero(
                        world.target.spec.as_ref().and_then(|s| s.replicas),
                        world
                            .primary
                            .as_ref()
                            .and_then(|p| p.spec.as_ref().and_then(|s| s.replicas)),
                        hpa_min,
                    )
                }
            };
            // The mark lets serin scale the target back up if its Canary disappears unseen.
            let mark = if replicas == 0 {
                canary.metadata.name.clone()
            } else {
                None
            };
            let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
            let written = api
                .patch(
                    &canary.spec.target_ref.name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({
                        "metadata": {"annotations": {finalize::SCALED_DOWN_BY: mark}},
                        "spec": {"replicas": replicas},
                    })),
                )
                .await
                .doing(|| {
                    format!(
                        "scaling {} {}.{ns} to {replicas} failed",
                        canary.spec.target_ref.kind, canary.spec.target_ref.name
                    )
                })?;
            record_generation(ctx, &written);
            Ok(Vec::new())
        }
        Action::Promote => {
            write_primary(ctx, canary, world, true).await?;
            ensure_primary_hpa(ctx, canary, true).await?;
            Ok(Vec::new())
        }
        Action::PostRollout(phase) => Ok(super::checks::post_rollout(ctx, canary, *phase).await),
    }
}

/// The config copies, then the `-primary` Deployment (created, or promoted with `promotion`).
async fn write_primary(
    ctx: &Context,
    canary: &Canary,
    world: &World,
    promotion: bool,
) -> Result<(), Failure> {
    sync_configs(ctx, canary, world).await?;
    let object = primary_object(ctx, canary, world, promotion);
    let ns = canary.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    apply_deployment(
        ctx,
        &api,
        &format!("{}-primary", canary.spec.target_ref.name),
        &object,
    )
    .await
}

fn primary_object(ctx: &Context, canary: &Canary, world: &World, promotion: bool) -> Value {
    primary::primary_deployment(
        PrimaryInput {
            canary,
            target: &world.target_json,
            label: (&world.label.0, &world.label.1),
            selector_labels: &ctx.config.selector_labels,
            include_label_prefixes: &ctx.config.include_label_prefixes,
            tracked: &world.tracked,
            flagger_id: &uuid_v4(rand::random()),
            primary_replicas: world
                .primary
                .as_ref()
                .and_then(|p| p.spec.as_ref())
                .and_then(|s| s.replicas),
        },
        promotion,
    )
}

/// A random (version 4, RFC 9562 variant) UUID from 128 random bits, as Flagger's `flagger-id`.
fn uuid_v4(random: u128) -> String {
    let id = format!("{random:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &id[..8],
        &id[8..12],
        &id[13..16],
        &id[17..20],
        &id[20..32]
    )
}

/// The `-primary` copies of the tracked ConfigMaps and Secrets. The caches keep no data
/// (`slim`): each tracked config is read from the API server to be copied.
async fn sync_configs(ctx: &Context, canary: &Canary, world: &World) -> Result<(), Failure> {
    let ns = canary.metadata.namespace.clone().unwrap_or_default();
    let owners = |existing: Option<Vec<OwnerReference>>| {
        configs::shared_owner_references(canary, &existing.unwrap_or_default())
    };
    let configmaps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    for cached in &world.configmaps {
        let source = cached.metadata.name.as_deref().unwrap_or_default();
        let cm = configmaps
            .get(source)
            .await
            .doing(|| format!("configmap {source}.{ns} get query error"))?;
        let name = format!("{source}-primary");
        let existing = ctx
            .stores
            .configmaps
            .get(&ObjectRef::new(&name).within(&ns))
            .and_then(|c| c.metadata.owner_references.clone());
        let object = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": build::include_by_prefix(cm.metadata.labels.as_ref(), &ctx.config.include_label_prefixes), "ownerReferences": owners(existing)},
            "data": cm.data.clone().unwrap_or_default(),
        });
        apply(&configmaps, &name, &object).await?;
    }
    for cached in &world.secrets {
        let source = cached.metadata.name.as_deref().unwrap_or_default();
        let secret = secrets
            .get(source)
            .await
            .doing(|| format!("secret {source}.{ns} get query error"))?;
        let name = format!("{source}-primary");
        let existing = ctx
            .stores
            .secrets
            .get(&ObjectRef::new(&name).within(&ns))
            .and_then(|s| s.metadata.owner_references.clone());
        let object = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": ns, "labels": build::include_by_prefix(secret.metadata.labels.as_ref(), &ctx.config.include_label_prefixes), "ownerReferences": owners(existing)},
            "type": secret.type_.clone().unwrap_or_else(|| "Opaque".into()),
            "data": secret.data.clone().unwrap_or_default(),
        });
        apply(&secrets, &name, &object).await?;
    }
    Ok(())
}

/// The primary HPA (`<hpa>-primary`): created when missing, updated at promotion.
async fn ensure_primary_hpa(ctx: &Context, canary: &Canary, update: bool) -> Result<(), Failure> {
    let Some(reference) = &canary.spec.autoscaler_ref else {
        return Ok(());
    };
    if reference.kind != "HorizontalPodAutoscaler" {
        return Err(Failure::other(format!(
            "autoscalerRef kind {} is not implemented by serin (HorizontalPodAutoscaler is)",
            reference.kind
        )));
    }
    let ns = canary.metadata.namespace.clone().unwrap_or_default();
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &ns);
    let name = format!("{}-primary", reference.name);
    if !update
        && api
            .get_opt(&name)
            .await
            .doing(|| format!("HorizontalPodAutoscaler {name}.{ns} get query error"))?
            .is_some()
    {
        return Ok(());
    }
    let hpa = api
        .get(&reference.name)
        .await
        .doing(|| format!("HorizontalPodAutoscaler {}.{ns} get query error", reference.name))?;
    let spec = hpa.spec.unwrap_or_default();
    let replicas = reference.primary_scaler_replicas.clone().unwrap_or_default();
    let mut object = json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": ns, "labels": build::without_flux(hpa.metadata.labels.as_ref()), "ownerReferences": [build::owner_reference(canary)]},
        "spec": {
            "scaleTargetRef": {"apiVersion": spec.scale_target_ref.api_version, "kind": spec.scale_target_ref.kind, "name": format!("{}-primary", canary.spec.target_ref.name)},
            "minReplicas": replicas.min_replicas.or(spec.min_replicas),
            "maxReplicas": replicas.max_replicas.unwrap_or(spec.max_replicas),
        },
    });
    if let Some(metrics) = spec.metrics {
        object["spec"]["metrics"] = serde_json::to_value(metrics).unwrap_or(Value::Null);
    }
    if let Some(behavior) = spec.behavior {
        object["spec"]["behavior"] = serde_json::to_value(behavior).unwrap_or(Value::Null);
    }
    apply(&api, &name, &object).await
}

/// The `-primary` and `-canary` Services, and the apex Service when `apex` is set. An apex
/// Service serin did not create is taken over as Flagger does: its ports and selector change,
/// nothing else (its type, load balancer, node ports and metadata stay, and it stays unowned, so
/// deleting the Canary does not delete it).
async fn ensure_services(ctx: &Context, canary: &Canary, world: &World, apex: bool) -> Result<(), Failure> {
    let ns = canary.metadata.namespace.clone().unwrap_or_default();
    let pod_spec = world
        .target_json
        .pointer("/spec/template/spec")
        .cloned()
        .unwrap_or(Value::Null);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let apex_name = canary.service_names().apex;
    let uid = canary.metadata.uid.as_deref().unwrap_or_default();
    for svc in routing::services(
        canary,
        routing::Target {
            label: (&world.label.0, &world.label.1),
            pod_spec: &pod_spec,
        },
    ) {
        let name = svc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if name == apex_name && !apex {
            continue;
        }
        let key = format!("Service/{ns}/{name}");
        if ctx.applied.current(&key, uid, &svc) {
            continue;
        }
        if name == apex_name {
            let existing = services
                .get_opt(&name)
                .await
                .doing(|| format!("Service {name}.{ns} get query error"))?;
            if let Some(existing) = existing.filter(|e| !finalize::owned_by(&e.metadata, canary)) {
                let existing = serde_json::to_value(&existing).unwrap_or(Value::Null);
                if let Some(patch) = routing::take_over_service(&existing, &svc) {
                    services
                        .patch(
                            &name,
                            &PatchParams {
                                field_manager: Some(FIELD_MANAGER.into()),
                                ..PatchParams::default()
                            },
                            &Patch::Merge(&patch),
                        )
                        .await
                        .doing(|| format!("service {name} update error"))?;
                    tracing::info!(canary = %format!("{}.{ns}", canary.metadata.name.as_deref().unwrap_or_default()), "Service {name} updated");
                }
                ctx.applied.record(key, uid, &svc);
                continue;
            }
        }
        apply(&services, &name, &svc).await?;
        ctx.applied.record(key, uid, &svc);
    }
    Ok(())
}

/// Services, DestinationRules and the VirtualService; `routes` sets new weights, `None` keeps
/// the current ones (100/0 for a new VirtualService).
async fn ensure_routing(
    ctx: &Context,
    canary: &Canary,
    world: &World,
    routes: Option<Routes>,
) -> Result<(), Failure> {
    let ns = canary.metadata.namespace.clone().unwrap_or_default();
    if let Some(err) = routing::virtual_service_error(canary) {
        return Err(Failure::other(err));
    }
    ensure_services(ctx, canary, world, true).await?;
    let uid = canary.metadata.uid.as_deref().unwrap_or_default();
    for dr in routing::destination_rules(canary) {
        let name = dr
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let key = format!("DestinationRule/{ns}/{name}");
        if ctx.applied.current(&key, uid, &dr) {
            continue;
        }
        apply_dynamic(ctx, &istio("DestinationRule", "destinationrules"), &ns, &dr).await?;
        ctx.applied.record(key, uid, &dr);
    }
    let routes = routes.or(world.observed.routes).unwrap_or(Routes {
        primary: 100,
        canary: 0,
        mirrored: false,
    });
    let mut vs = routing::virtual_service(canary, routes.primary, routes.canary, routes.mirrored);
    if let Some(existing) = &world.virtual_service {
        take_over(&mut vs, existing, canary);
    }
    let written = apply_dynamic(ctx, &istio("VirtualService", "virtualservices"), &ns, &vs).await?;
    if let (Some(name), Some(uid), Some(generation)) = (
        written.metadata.name.as_ref(),
        written.metadata.uid.as_ref(),
        written.metadata.generation,
    ) {
        let mut generations = ctx.route_generations.lock().unwrap_or_else(|p| p.into_inner());
        if generations.len() >= 64 {
            generations.retain(|_, (_, _, at)| at.elapsed() < super::context::Written::WINDOW);
        }
        generations.insert(
            format!("{ns}/{name}"),
            (uid.clone(), generation, std::time::Instant::now()),
        );
    }
    Ok(())
}

fn disown(object: &mut Value) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("ownerReferences");
    }
}

/// Taking over a VirtualService the user made (Flagger's rules): it stays unowned, and unless
/// kubectl's last-applied configuration records it, its original spec is kept in the
/// `flagger.kubernetes.io/original-configuration` annotation for the revert on deletion.
fn take_over(vs: &mut Value, existing: &VirtualService, canary: &Canary) {
    let annotations = existing.metadata.annotations.clone().unwrap_or_default();
    if let Some(original) = annotations.get(finalize::ORIGINAL_CONFIGURATION) {
        vs["metadata"]["annotations"][finalize::ORIGINAL_CONFIGURATION] = json!(original);
    }
    if finalize::owned_by(&existing.metadata, canary) {
        return;
    }
    disown(vs);
    if !annotations.contains_key(finalize::ORIGINAL_CONFIGURATION)
        && !annotations.contains_key(finalize::LAST_APPLIED)
        && let Ok(spec) = serde_json::to_string(&existing.spec)
    {
        vs["metadata"]["annotations"][finalize::ORIGINAL_CONFIGURATION] = json!(spec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flagger_ids_are_version_4_uuids() {
        let pattern =
            regex::Regex::new("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
                .expect("regex");
        for random in [0, u128::MAX, 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef] {
            let id = uuid_v4(random);
            assert!(pattern.is_match(&id), "{id}");
        }
        assert_eq!(
            uuid_v4(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            "01234567-89ab-4def-a123-456789abcdef"
        );
        assert_ne!(uuid_v4(rand::random()), uuid_v4(rand::random()));
    }
}
