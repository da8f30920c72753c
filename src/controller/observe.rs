//! Observing a Canary's world from the reflector caches: the target and primary Deployments,
//! their readiness, the tracked configs' checksums and the VirtualService's weights. Reads
//! caches only; no API requests (a shelved Deployment is read by `shelf::unshelve` before).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Secret},
};
use kube::runtime::reflector::ObjectRef;
use serde_json::Value;

use super::{Context, shelf, slim};
use crate::{
    api::{Canary, istio::VirtualService},
    engine::{
        Observed, Routes,
        build::{
            configs::{self, CONFIG_TRACKING_ANNOTATION, TRACKED_SECRET_TYPES},
            primary, routing,
        },
        readiness::{self, deployment_readiness},
        revision,
    },
};

/// What observing found, beyond what the engine needs.
#[derive(Debug)]
pub struct World {
    pub observed: Observed,
    pub target: Deployment,
    pub target_json: Value,
    pub primary: Option<Deployment>,
    /// The selector label key and value.
    pub label: (String, String),
    /// `(kind, name)` of the tracked configs.
    pub tracked: BTreeSet<(String, String)>,
    pub configmaps: Vec<ConfigMap>,
    pub secrets: Vec<Secret>,
    pub virtual_service: Option<VirtualService>,
}

/// Observes a Canary. Errors are Flagger-style messages for a Warning event.
pub fn observe(ctx: &Context, canary: &Canary, now: i64) -> Result<World, String> {
    let ns = canary.metadata.namespace.clone().unwrap_or_default();
    let target_name = &canary.spec.target_ref.name;
    let target = shelf::cached(ctx, &ns, target_name)
        .map(|d| (*d).clone())
        .ok_or_else(|| {
            format!(
                "deployment {target_name}.{ns} get query error: deployments.apps \"{target_name}\" not found"
            )
        })?;
    let target_json = serde_json::to_value(&target).map_err(|e| e.to_string())?;
    let label = primary::selector_label(&target_json, &ctx.config.selector_labels)?;
    let primary = shelf::cached(ctx, &ns, &format!("{target_name}-primary")).map(|d| (*d).clone());

    let mut checksums = BTreeMap::new();
    let mut tracked = BTreeSet::new();
    let (mut configmaps, mut secrets) = (Vec::new(), Vec::new());
    if ctx.config.config_tracking {
        let pod_spec = target_json
            .pointer("/spec/template/spec")
            .cloned()
            .unwrap_or(Value::Null);
        for r in configs::references(&pod_spec) {
            let opted_out = |annotations: Option<&BTreeMap<String, String>>| {
                annotations
                    .and_then(|a| a.get(CONFIG_TRACKING_ANNOTATION))
                    .is_some_and(|v| v.starts_with("disable"))
            };
            match r.kind {
                "configmap" => match ctx.stores.configmaps.get(&ObjectRef::new(&r.name).within(&ns)) {
                    Some(cm) if !opted_out(cm.metadata.annotations.as_ref()) => {
                        let sum = slim::checksum(&cm.metadata)
                            .map_or_else(|| slim::configmap_checksum(&cm), str::to_owned);
                        checksums.insert(r.key(), sum);
                        tracked.insert(("configmap".to_owned(), r.name.clone()));
                        configmaps.push((*cm).clone());
                    }
                    Some(_) => {}
                    None if r.optional => {}
                    None => {
                        return Err(format!(
                            "configmap {}.{ns} get query error: configmaps \"{}\" not found",
                            r.name, r.name
                        ));
                    }
                },
                _ => match ctx.stores.secrets.get(&ObjectRef::new(&r.name).within(&ns)) {
                    Some(s)
                        if !opted_out(s.metadata.annotations.as_ref())
                            && TRACKED_SECRET_TYPES.contains(&s.type_.as_deref().unwrap_or("Opaque")) =>
                    {
                        let sum = slim::checksum(&s.metadata)
                            .map_or_else(|| slim::secret_checksum(&s), str::to_owned);
                        checksums.insert(r.key(), sum);
                        tracked.insert(("secret".to_owned(), r.name.clone()));
                        secrets.push((*s).clone());
                    }
                    Some(_) => {}
                    None if r.optional => {}
                    None => {
                        return Err(format!(
                            "secret {}.{ns} get query error: secrets \"{}\" not found",
                            r.name, r.name
                        ));
                    }
                },
            }
        }
    }

    let deadline = Duration::from_secs(canary.spec.progress_deadline_seconds().max(0) as u64);
    // Readiness is read from the cache, which may not show serin's last write yet.
    let written = |name: &str| {
        super::context::last_write(&ctx.deployment_generations, &format!("{ns}/{name}"))
            .map(|(uid, generation, _)| (uid, generation))
    };
    let canary_readiness = readiness::behind_write(&target, written(target_name).as_ref())
        .unwrap_or_else(|| deployment_readiness(&target, deadline, canary.spec.canary_ready_threshold(), now))
        .wrap(&format!("canary deployment {target_name}.{ns} not ready"));
    let primary_readiness = primary.as_ref().map(|p| {
        readiness::behind_write(p, written(&format!("{target_name}-primary")).as_ref())
            .unwrap_or_else(|| deployment_readiness(p, deadline, canary.spec.primary_ready_threshold(), now))
            .wrap(&format!("{target_name}-primary.{ns} not ready"))
    });
    let apex = canary.service_names().apex;
    let virtual_service = ctx
        .stores
        .virtual_services
        .get(&ObjectRef::new(&apex).within(&ns))
        .map(|v| (*v).clone());
    let routes = virtual_service.as_ref().and_then(|vs| {
        let spec = serde_json::to_value(&vs.spec).ok()?;
        routing::read_routes(canary, &spec).map(|(primary, canary, mirrored)| Routes {
            primary,
            canary,
            mirrored,
        })
    });
    let routing_drift = match (&virtual_service, routes) {
        (Some(vs), Some(r)) => {
            let desired = routing::virtual_service(canary, r.primary, r.canary, r.mirrored);
            let actual = serde_json::to_value(&vs.spec).unwrap_or(Value::Null);
            !routing::subset_eq(&desired["spec"], &actual)
        }
        _ => false,
    };
    let status = canary.status.clone().unwrap_or_default();
    let primary_current = primary.as_ref().is_some_and(|live| {
        let built = primary::primary_deployment(
            primary::PrimaryInput {
                canary,
                target: &target_json,
                label: (&label.0, &label.1),
                selector_labels: &ctx.config.selector_labels,
                include_label_prefixes: &ctx.config.include_label_prefixes,
                tracked: &tracked,
                flagger_id: "",
                primary_replicas: None,
            },
            true,
        );
        let copies_current = configmaps.iter().all(|cm| {
            ctx.stores
                .configmaps
                .get(
                    &ObjectRef::new(&format!(
                        "{}-primary",
                        cm.metadata.name.as_deref().unwrap_or_default()
                    ))
                    .within(&ns),
                )
                .is_some_and(|copy| slim::same_content(&copy.metadata, &cm.metadata))
        }) && secrets.iter().all(|secret| {
            ctx.stores
                .secrets
                .get(
                    &ObjectRef::new(&format!(
                        "{}-primary",
                        secret.metadata.name.as_deref().unwrap_or_default()
                    ))
                    .within(&ns),
                )
                .is_some_and(|copy| slim::same_content(&copy.metadata, &secret.metadata))
        });
        copies_current && primary::runs_target(&built, &serde_json::to_value(live).unwrap_or(Value::Null))
    });
    Ok(World {
        observed: Observed {
            target_hash: revision::template_hash(
                target_json.pointer("/spec/template").unwrap_or(&Value::Null),
            ),
            configs: checksums,
            canary: canary_readiness,
            primary: primary_readiness,
            routes,
            now,
            last_transition: status.last_transition_time.map(|t| t.0.as_second()),
            routing_drift,
            primary_current,
            look_every: super::compare::compared(canary)
                .next()
                .map(|_| ctx.config.comparison_window),
            random: (0..20)
                .map(|_| char::from(b'a' + rand::random::<u8>() % 26))
                .collect(),
        },
        target,
        target_json,
        primary,
        label,
        tracked,
        configmaps,
        secrets,
        virtual_service,
    })
}
