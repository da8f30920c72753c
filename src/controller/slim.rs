//! What serin keeps of a watched object in its caches: everything it reads, nothing else. A
//! ConfigMap's or Secret's data is replaced by two digests (Flagger's checksum of `data`, which
//! revision detection compares, and a digest of all the content, which tells whether a
//! `-primary` copy is current), so a cluster full of Helm release Secrets and large ConfigMaps
//! costs serin their identity and the digests (their labels and other annotations are dropped
//! too); the data of a tracked config is read from the API server when serin copies it.
//! `managedFields` are dropped from every cached object. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Secret},
};
use kube::{api::ObjectMeta, core::DeserializeGuard};

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
}
