//! Builders of the objects serin generates for a Canary: the `-primary` Deployment and config
//! copies, the apex/primary/canary Services, the two DestinationRules and the VirtualService.
//! Pure: inputs in, objects out.

pub mod configs;
pub mod primary;
pub mod routing;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::api::Canary;

/// Annotations that keep Flux from reverting what serin manages.
pub const FLUX_ANNOTATIONS: [(&str, &str); 2] = [
    ("kustomize.toolkit.fluxcd.io/reconcile", "disabled"),
    ("helm.toolkit.fluxcd.io/driftDetection", "disabled"),
];

/// The controller ownerReference to the Canary that generated an object.
pub fn owner_reference(canary: &Canary) -> OwnerReference {
    OwnerReference {
        api_version: "flagger.app/v1beta1".into(),
        kind: "Canary".into(),
        name: canary.metadata.name.clone().unwrap_or_default(),
        uid: canary.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Keys of Flux's own metadata, which copies never carry.
pub fn is_flux_key(key: &str) -> bool {
    key.contains("toolkit.fluxcd.io")
}

/// Keeps the keys with one of the prefixes (`*` keeps all), never Flux's (`includeLabelsByPrefix`).
pub fn include_by_prefix(
    map: Option<&BTreeMap<String, String>>,
    prefixes: &[String],
) -> BTreeMap<String, String> {
    map.into_iter()
        .flatten()
        .filter(|(k, _)| !is_flux_key(k))
        .filter(|(k, _)| {
            prefixes
                .iter()
                .any(|p| p == "*" || (!p.is_empty() && k.starts_with(p.as_str())))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Drops Flux's keys.
pub fn without_flux(map: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
    map.into_iter()
        .flatten()
        .filter(|(k, _)| !is_flux_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let labels = BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), "podinfo".to_owned()),
            ("team".to_owned(), "a".to_owned()),
            ("kustomize.toolkit.fluxcd.io/name".to_owned(), "apps".to_owned()),
        ]);
        assert!(
            include_by_prefix(Some(&labels), &[String::new()]).is_empty(),
            "no prefix copies nothing"
        );
        assert_eq!(
            include_by_prefix(Some(&labels), &["app.kubernetes.io".into()]).len(),
            1
        );
        assert_eq!(
            include_by_prefix(Some(&labels), &["*".into()]).len(),
            2,
            "never Flux's keys"
        );
        assert_eq!(without_flux(Some(&labels)).len(), 2);
    }
}
