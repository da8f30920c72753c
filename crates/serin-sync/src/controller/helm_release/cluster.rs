//! What a release holds in the cluster: its objects (Helm's stored manifest), their drift from
//! it (`spec.driftDetection`: a server-side dry-run of each object, as Flux's helm-controller
//! does), its correction, and the health of the Canaries the release installed or whose
//! targets it installed. Objects serin generated and the replicas of Canary targets are never
//! drift. Does I/O (helm, the API).

use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams},
};
use serde_json::Value;
use serin_runtime::kstatus::Status;

use super::{FIELD_MANAGER, Target};
use crate::{
    api::helm::HelmReleaseSpec,
    apply::{
        manager::{Action, ApplyOptions, CanaryTargets, Change, ResourceManager},
        order::ObjectId,
    },
    build::objects,
    helm::Helm,
};

/// Objects labelled or annotated `helm.toolkit.fluxcd.io/driftDetection: disabled` are left out.
pub const DRIFT_KEY: &str = "helm.toolkit.fluxcd.io/driftDetection";

/// `spec.driftDetection.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriftMode {
    Disabled,
    /// Drift is corrected.
    Enabled,
    /// Drift is only reported.
    Warn,
}

/// The drift mode of a spec (`disabled` when unset).
pub fn drift_mode(spec: &HelmReleaseSpec) -> DriftMode {
    match spec.drift_detection.as_ref().and_then(|d| d.mode.as_deref()) {
        Some("enabled") => DriftMode::Enabled,
        Some("warn") => DriftMode::Warn,
        _ => DriftMode::Disabled,
    }
}

/// The release's objects from Helm's stored manifest (hooks excluded, as Helm keeps them
/// apart), each namespaced one in the release's namespace when it names none.
pub async fn release_objects(
    helm: &Helm,
    resources: &mut ResourceManager,
    t: &Target,
    impersonate: Option<&str>,
) -> Result<Vec<Value>, String> {
    let manifest = helm
        .manifest(&t.release, &t.namespace, impersonate)
        .await
        .map_err(|e| format!("failed to read the release manifest: {e}"))?;
    let mut objects = objects::read_objects(&manifest)?;
    for object in &mut objects {
        let id = ObjectId::of(object);
        if id.namespace.is_empty() && resources.is_namespaced(&id).await == Some(true) {
            object["metadata"]["namespace"] = Value::String(t.namespace.clone());
        }
    }
    Ok(objects)
}

/// The apply options of drift detection and correction: the ignore rules, serin's replicas,
/// helm-controller's field manager, other managers' fields left alone.
pub fn drift_options(spec: &HelmReleaseSpec, canary_targets: CanaryTargets) -> ApplyOptions {
    ApplyOptions {
        ignore: spec
            .drift_detection
            .as_ref()
            .map(|d| d.ignore.clone())
            .unwrap_or_default(),
        canary_targets,
        field_manager: Some(FIELD_MANAGER),
        keep_managed_fields: true,
        ..ApplyOptions::default()
    }
}

/// The objects that drifted (missing: `created`; changed: `configured`), with their desired
/// state.
pub async fn drifted(
    resources: &mut ResourceManager,
    objects: &[Value],
    options: &ApplyOptions,
) -> Result<Vec<(Value, Change)>, String> {
    let mut out = Vec::new();
    for object in objects {
        if objects::has_meta(object, DRIFT_KEY, "disabled") {
            continue;
        }
        let (change, _) = resources.diff_one(object.clone(), options).await?;
        if matches!(change.action, Action::Created | Action::Configured) {
            out.push((object.clone(), change));
        }
    }
    Ok(out)
}

/// Applies the drifted objects again: what was done to each.
pub async fn correct(
    resources: &mut ResourceManager,
    drifted: Vec<(Value, Change)>,
    options: &ApplyOptions,
) -> Result<Vec<Change>, (String, Vec<Change>)> {
    let mut done = Vec::new();
    for (object, _) in drifted {
        match resources.apply_one(object, options).await {
            Ok(change) => done.push(change),
            Err(e) => return Err((e, done)),
        }
    }
    Ok(done)
}

/// One line per change, Flux's change set text.
pub fn summary(changes: &[Change]) -> String {
    changes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// How the Canaries of a release are doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CanaryHealth {
    /// None, or all initialized or promoted.
    Healthy,
    /// One analyses (its reference and state).
    Progressing(String),
    /// One failed (its reference and why).
    Failed(String),
}

/// The Canaries in the release, or whose target Deployment is: the first that is not healthy.
pub async fn canary_health(
    client: &Client,
    resources: &mut ResourceManager,
    objects: &[Value],
) -> CanaryHealth {
    let gvk = GroupVersionKind::gvk("flagger.app", "v1beta1", "Canary");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "canaries");
    let in_release = |kind: &str, ns: &str, name: &str| {
        objects.iter().any(|o| {
            let id = ObjectId::of(o);
            id.kind == kind && id.namespace == ns && id.name == name
        })
    };
    let mut namespaces: Vec<String> = objects
        .iter()
        .map(|o| ObjectId::of(o).namespace)
        .filter(|ns| !ns.is_empty())
        .collect();
    namespaces.sort();
    namespaces.dedup();
    let mut related = Vec::new();
    for ns in namespaces {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
        let Ok(list) = api.list(&ListParams::default()).await else {
            // No Canary API (serin is not installed) or not readable: nothing to follow.
            continue;
        };
        for canary in list.items {
            let name = canary.name_any();
            let target = canary.data["spec"]["targetRef"]["name"]
                .as_str()
                .unwrap_or_default();
            let target_kind = canary.data["spec"]["targetRef"]["kind"]
                .as_str()
                .unwrap_or("Deployment");
            if in_release("Canary", &ns, &name) || in_release(target_kind, &ns, target) {
                related.push(ObjectId::of(&serde_json::json!({
                    "apiVersion": "flagger.app/v1beta1",
                    "kind": "Canary",
                    "metadata": {"name": name, "namespace": ns},
                })));
            }
        }
    }
    for (id, health) in resources.statuses(&related).await {
        let reference = format!("Canary '{}/{}'", id.namespace, id.name);
        match health.status {
            Status::Current => {}
            Status::Failed => return CanaryHealth::Failed(format!("{reference}: {}", health.message)),
            _ => return CanaryHealth::Progressing(format!("{reference}: {}", health.message)),
        }
    }
    CanaryHealth::Healthy
}
