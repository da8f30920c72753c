//! serin-sync as Helm's post-renderer (`helm install|upgrade --post-renderer serin-sync
//! --post-renderer-args post-render ...`): the HelmRelease's `postRenderers` (kustomize patches
//! and images, in order), its `commonMetadata` (labels and annotations on every object), then
//! serin's share of the objects: an object serin generated (a
//! Canary owns the live one) is dropped from the release, and a Deployment that a Canary
//! targets keeps its live `spec.replicas` (serin scales it), as a Kustomization does.
//! [`adjust`] is pure; [`render`] does I/O (kustomize, the API).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    api::{helm::KustomizePostRenderer, kustomization::CommonMetadata},
    apply::{
        manager::{CanaryTargets, REPLICAS_POINTER, ResourceManager, owned_by_canary},
        order::ObjectId,
    },
    build::{kustomize::Kustomize, objects},
};

/// What the reconciler asks the post-renderer to do, written to a file it names.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The release's namespace: objects without one are looked up there.
    pub namespace: String,
    /// `spec.postRenderers[*].kustomize`, in order.
    #[serde(default)]
    pub kustomize: Vec<KustomizePostRenderer>,
    /// `spec.commonMetadata`.
    #[serde(default)]
    pub common_metadata: Option<CommonMetadata>,
}

/// What the cluster holds of one rendered object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Live {
    /// serin generated it (a Canary owns it): the release leaves it alone.
    pub owned_by_canary: bool,
    /// A Canary targets it: its replicas are serin's. `Some(None)` when the live object has
    /// no `spec.replicas`.
    pub replicas: Option<Option<Value>>,
}

/// Drops the objects serin owns and gives Canary targets their live replicas; `None` when
/// nothing changes (the input is then passed on as it is).
pub fn adjust(objects: &[Value], live: &[Live]) -> Option<Vec<Value>> {
    let mut changed = false;
    let mut out = Vec::with_capacity(objects.len());
    for (object, live) in objects.iter().zip(live) {
        if live.owned_by_canary {
            changed = true;
            continue;
        }
        let mut object = object.clone();
        if let Some(replicas) = &live.replicas {
            let before = object.pointer(REPLICAS_POINTER).cloned();
            match replicas {
                Some(v) => crate::apply::drift::set_pointer(&mut object, REPLICAS_POINTER, v.clone()),
                None => crate::apply::drift::remove_pointer(&mut object, REPLICAS_POINTER),
            }
            changed |= object.pointer(REPLICAS_POINTER).cloned() != before;
        }
        out.push(object);
    }
    changed.then_some(out)
}

/// Multi-document YAML of the objects.
pub fn to_yaml(objects: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(object).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// Post-renders Helm's manifest (`input`) per the plan.
pub async fn render(plan: &Plan, input: &str, client: kube::Client, work: &Path) -> Result<String, String> {
    let mut text = input.to_owned();
    for (n, renderer) in plan.kustomize.iter().enumerate() {
        text = kustomize(renderer, &text, &work.join(format!("kustomize-{n}")))
            .await
            .map_err(|e| format!("spec.postRenderers[{n}].kustomize: {e}"))?;
    }
    let mut objects = objects::read_objects(&text)?;
    let labelled = plan
        .common_metadata
        .as_ref()
        .is_some_and(|m| !m.labels.is_empty() || !m.annotations.is_empty());
    if let Some(metadata) = plan.common_metadata.as_ref().filter(|_| labelled) {
        for object in &mut objects {
            objects::set_metadata(object, &metadata.labels, &metadata.annotations);
        }
    }
    let targets = crate::controller::kustomization::canary_targets(&client).await;
    if let CanaryTargets::Unknown(why) = &targets {
        return Err(format!(
            "cannot tell which Deployments Canaries target, so their replicas could be reset: {why}"
        ));
    }
    let mut resources = ResourceManager::new(client);
    let mut live = Vec::with_capacity(objects.len());
    for object in &objects {
        let mut id = ObjectId::of(object);
        if id.namespace.is_empty() && resources.is_namespaced(&id).await.unwrap_or(false) {
            id.namespace.clone_from(&plan.namespace);
        }
        let found = resources.live(&id).await?;
        let is_target =
            id.group == "apps" && id.kind == "Deployment" && targets.keeps_replicas(&id.namespace, &id.name);
        live.push(Live {
            owned_by_canary: found.as_ref().is_some_and(owned_by_canary),
            replicas: match &found {
                Some(f) if is_target => Some(f.pointer(REPLICAS_POINTER).cloned()),
                _ => None,
            },
        });
    }
    match adjust(&objects, &live) {
        Some(adjusted) => to_yaml(&adjusted),
        None if labelled => to_yaml(&objects),
        None => Ok(text),
    }
}

/// One kustomize post-renderer: the manifest as the only resource, the patches and images.
async fn kustomize(renderer: &KustomizePostRenderer, input: &str, dir: &Path) -> Result<String, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("resources.yaml"), input).map_err(|e| e.to_string())?;
    let kustomization = serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["resources.yaml"],
        "patches": renderer.patches,
        "images": renderer.images,
    });
    let text = serde_yaml::to_string(&kustomization).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("kustomization.yaml"), text).map_err(|e| e.to_string())?;
    Kustomize::detect().build(dir).await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn canary_objects_are_dropped_and_targets_keep_live_replicas() {
        let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "podinfo"}, "spec": {"replicas": 2}});
        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "podinfo"}});
        let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let objects = [deploy.clone(), service.clone(), config.clone()];
        assert_eq!(
            adjust(&objects, &[Live::default(), Live::default(), Live::default()]),
            None
        );
        let out = adjust(
            &objects,
            &[
                Live {
                    replicas: Some(Some(json!(0))),
                    ..Live::default()
                },
                Live {
                    owned_by_canary: true,
                    ..Live::default()
                },
                Live::default(),
            ],
        )
        .expect("changed");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["spec"]["replicas"], 0);
        assert_eq!(out[1], config);
        // A live target without replicas: the rendered ones are dropped.
        let out = adjust(
            &objects[..1],
            &[Live {
                replicas: Some(None),
                ..Live::default()
            }],
        )
        .expect("changed");
        assert!(out[0]["spec"].get("replicas").is_none());
        // Live replicas equal to the rendered ones change nothing.
        let same = Live {
            replicas: Some(Some(json!(2))),
            ..Live::default()
        };
        assert_eq!(adjust(&objects[..1], &[same]), None);
    }

    #[test]
    fn yaml_round_trips() {
        let objects = vec![
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}}),
        ];
        let text = to_yaml(&objects).expect("yaml");
        assert_eq!(objects::read_objects(&text).expect("read"), objects);
    }
}
