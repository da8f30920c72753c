//! What serin keeps of a watched object in its caches: everything it reads, nothing else. A
//! ConfigMap's or Secret's data is replaced by two digests (Flagger's checksum of `data`, which
//! revision detection compares, and a digest of all the content, which tells whether a
//! `-primary` copy is current), so a cluster full of Helm release Secrets and large ConfigMaps
//! costs serin their identity and the digests (their labels and other annotations are dropped
//! too); the data of a tracked config is read from the API server when serin copies it.
//! `managedFields` are dropped from every cached object. A Deployment is kept packed
//! ([`PackedDeployment`]): its metadata, and its spec and status as JSON text. Pure.

use std::collections::BTreeMap;

use std::borrow::Cow;

use k8s_openapi::api::{
    apps::v1::{Deployment, DeploymentSpec, DeploymentStatus},
    core::v1::{ConfigMap, Secret},
};
use kube::{api::ObjectMeta, core::DeserializeGuard};
use serde::{Deserialize, Serialize};

use crate::{
    api::{Canary, istio::VirtualService},
    engine::{build::configs, revision},
};

/// Annotation of a cached ConfigMap or Secret holding Flagger's checksum of its data.
const CHECKSUM: &str = "cache.serin.dev/checksum";
/// Annotation of a cached ConfigMap or Secret holding a digest of its whole content.
const CONTENT: &str = "cache.serin.dev/content";

/// Flagger's checksum of a ConfigMap's data.
pub fn configmap_checksum(cm: &ConfigMap) -> String {
    revision::config_checksum(&cm.data.clone().unwrap_or_default())
}

/// Flagger's checksum of a Secret's data (its values base64-encoded, as Flagger sees them).
pub fn secret_checksum(secret: &Secret) -> String {
    use base64::Engine;
    let data: BTreeMap<String, String> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), base64::engine::general_purpose::STANDARD.encode(&v.0)))
        .collect();
    revision::config_checksum(&data)
}

/// Keeps of a ConfigMap's or Secret's metadata what serin reads: its identity, its owners (of a
/// `-primary` copy), Flagger's opt-out of config tracking, and the two digests.
fn set(meta: &mut ObjectMeta, checksum: String, content: String) {
    let mut annotations: BTreeMap<String, String> = meta
        .annotations
        .take()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k == configs::CONFIG_TRACKING_ANNOTATION)
        .collect();
    annotations.insert(CHECKSUM.to_owned(), checksum);
    annotations.insert(CONTENT.to_owned(), content);
    *meta = ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        uid: meta.uid.take(),
        resource_version: meta.resource_version.take(),
        owner_references: meta.owner_references.take(),
        annotations: Some(annotations),
        ..ObjectMeta::default()
    };
}

/// A ConfigMap as the cache keeps it.
pub fn configmap(cm: &mut ConfigMap) {
    let checksum = configmap_checksum(cm);
    let binary: BTreeMap<String, String> = cm
        .binary_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), format!("{:?}", v.0)))
        .collect();
    let content = format!("{checksum}/{}", revision::config_checksum(&binary));
    cm.data = None;
    cm.binary_data = None;
    set(&mut cm.metadata, checksum, content);
}

/// A Secret as the cache keeps it.
pub fn secret(secret: &mut Secret) {
    let checksum = secret_checksum(secret);
    let content = format!("{checksum}/{}", secret.type_.as_deref().unwrap_or("Opaque"));
    secret.data = None;
    secret.string_data = None;
    set(&mut secret.metadata, checksum, content);
}

/// A Deployment as the cache keeps it.
pub fn deployment(d: &mut Deployment) {
    d.metadata.managed_fields = None;
}

/// A Deployment as the cache keeps it: its metadata (without `managedFields`) as is, its spec
/// and status as JSON text. A `k8s-openapi` Deployment with one container takes about 8 KiB in
/// memory, most of it optional fields that are absent (the `Deployment` struct alone is
/// 2.4 KB, a `Container` 1.5 KB); as text it takes what it says, about 1 KiB for that
/// Deployment. serin caches two per Canary (the target and its `-primary`), so this is the
/// largest part of its memory at size. A reader unpacks a copy ([`PackedDeployment::unpack`],
/// a few microseconds). Read from the API server as a Deployment.
#[derive(Clone, Debug)]
pub struct PackedDeployment {
    pub metadata: ObjectMeta,
    body: Box<str>,
}

/// A Deployment's spec and status, as packed.
#[derive(Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    spec: Option<&'a DeploymentSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a DeploymentStatus>,
}

/// A Deployment's spec and status, unpacked.
#[derive(Deserialize)]
struct Unpacked {
    spec: Option<DeploymentSpec>,
    status: Option<DeploymentStatus>,
}

impl PackedDeployment {
    pub fn pack(mut d: Deployment) -> Self {
        deployment(&mut d);
        let body = serde_json::to_string(&Body {
            spec: d.spec.as_ref(),
            status: d.status.as_ref(),
        })
        // Serializing a typed Deployment does not fail (string keys, no non-finite floats).
        .unwrap_or_else(|_| "{}".to_owned());
        Self {
            metadata: d.metadata,
            body: body.into_boxed_str(),
        }
    }

    /// The Deployment, whole.
    pub fn unpack(&self) -> Deployment {
        // What `pack` wrote from a typed Deployment reads back as one.
        let Unpacked { spec, status } = serde_json::from_str(&self.body).unwrap_or(Unpacked {
            spec: None,
            status: None,
        });
        Deployment {
            metadata: self.metadata.clone(),
            spec,
            status,
        }
    }

    /// `spec.replicas`, read without unpacking the rest.
    pub fn replicas(&self) -> Option<i32> {
        #[derive(Deserialize)]
        struct Replicas {
            spec: Option<SpecReplicas>,
        }
        #[derive(Deserialize)]
        struct SpecReplicas {
            replicas: Option<i32>,
        }
        serde_json::from_str::<Replicas>(&self.body).ok()?.spec?.replicas
    }
}

impl<'de> Deserialize<'de> for PackedDeployment {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Deployment::deserialize(deserializer).map(Self::pack)
    }
}

impl kube::Resource for PackedDeployment {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Deployment::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        Deployment::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        Deployment::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        Deployment::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A VirtualService as the cache keeps it.
pub fn virtual_service(vs: &mut VirtualService) {
    vs.metadata.managed_fields = None;
}

/// A Canary as the cache keeps it (readable or not).
pub fn canary(guard: &mut DeserializeGuard<Canary>) {
    match &mut guard.0 {
        Ok(c) => c.metadata.managed_fields = None,
        Err(invalid) => invalid.metadata.managed_fields = None,
    }
}

/// Flagger's checksum of a cached ConfigMap's or Secret's data.
pub fn checksum(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations.as_ref()?.get(CHECKSUM).map(String::as_str)
}

/// Whether two cached ConfigMaps or Secrets hold the same content.
pub fn same_content(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    let content = |m: &ObjectMeta| m.annotations.as_ref().and_then(|a| a.get(CONTENT)).cloned();
    content(a).is_some() && content(a) == content(b)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use serde_json::json;

    use super::*;

    #[test]
    fn the_cache_keeps_digests_instead_of_data() {
        let mut cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("settings".into()),
                labels: Some([("owner".to_owned(), "helm".to_owned())].into()),
                annotations: Some(
                    [
                        ("meta.helm.sh/release-name".to_owned(), "web".to_owned()),
                        (
                            configs::CONFIG_TRACKING_ANNOTATION.to_owned(),
                            "disabled".to_owned(),
                        ),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            data: Some([("a".to_owned(), "x".repeat(8192))].into()),
            ..Default::default()
        };
        let expected = configmap_checksum(&cm);
        let mut copy = cm.clone();
        configmap(&mut cm);
        assert_eq!(cm.data, None);
        assert_eq!(checksum(&cm.metadata), Some(expected.as_str()));
        assert_eq!(cm.metadata.name.as_deref(), Some("settings"));
        assert_eq!(cm.metadata.labels, None, "labels are not read from the cache");
        let kept: Vec<&str> = cm
            .metadata
            .annotations
            .iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(
            kept,
            [CHECKSUM, CONTENT, configs::CONFIG_TRACKING_ANNOTATION],
            "of the annotations, the digests and the opt-out of tracking"
        );
        copy.binary_data = Some([("b".to_owned(), ByteString(vec![1, 2]))].into());
        configmap(&mut copy);
        assert_eq!(
            checksum(&copy.metadata),
            checksum(&cm.metadata),
            "Flagger's checksum covers data"
        );
        assert!(
            !same_content(&copy.metadata, &cm.metadata),
            "the content digest covers binaryData"
        );

        let mut s = Secret {
            data: Some([("token".to_owned(), ByteString(b"s3cr3t".to_vec()))].into()),
            ..Default::default()
        };
        let expected = secret_checksum(&s);
        let mut other = s.clone();
        secret(&mut s);
        assert_eq!(s.data, None);
        assert_eq!(checksum(&s.metadata), Some(expected.as_str()));
        secret(&mut other);
        assert!(same_content(&s.metadata, &other.metadata));
    }

    #[test]
    fn a_packed_deployment_unpacks_as_it_was_read() {
        let live = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "test", "uid": "u1", "generation": 3,
                         "labels": {"app": "web"}, "annotations": {"a": "b"},
                         "managedFields": [{"manager": "kubectl", "operation": "Update"}]},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "app", "image": "podinfo:6.0.0",
                                                           "env": [{"name": "A", "value": "1"}]}]}}},
            "status": {"observedGeneration": 3, "replicas": 2, "readyReplicas": 1,
                       "conditions": [{"type": "Available", "status": "False"}]}
        });
        let packed: PackedDeployment = serde_json::from_value(live.clone()).expect("packs");
        let mut expected: Deployment = serde_json::from_value(live).expect("deployment");
        expected.metadata.managed_fields = None;
        assert_eq!(packed.unpack(), expected);
        assert_eq!(packed.replicas(), Some(2));
        assert_eq!(packed.metadata.managed_fields, None);
        type Packed = PackedDeployment;
        assert_eq!(
            <Packed as kube::Resource>::api_version(&()),
            "apps/v1",
            "read and watched as Deployments"
        );
        assert_eq!(<Packed as kube::Resource>::kind(&()), "Deployment");
        assert_eq!(<Packed as kube::Resource>::plural(&()), "deployments");

        let bare: PackedDeployment =
            serde_json::from_value(json!({"metadata": {"name": "bare"}})).expect("packs");
        assert_eq!(bare.unpack().spec, None);
        assert_eq!(bare.replicas(), None);
    }
}
