//! Flux's resource types, read unchanged: `source.toolkit.fluxcd.io/v1` GitRepository and
//! `kustomize.toolkit.fluxcd.io/v1` Kustomization, and the CRDs serin-sync installs. No I/O.

pub mod git_repository;
pub mod kustomization;
pub mod schema;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use git_repository::{Artifact, GitRepository, GitRepositoryRef, GitRepositorySpec, GitRepositoryStatus};
pub use kustomization::{Kustomization, KustomizationSpec, KustomizationStatus, ResourceRef};

/// The finalizer Flux puts on its objects.
pub const FINALIZER: &str = "finalizers.fluxcd.io";
/// The annotation that asks for an immediate reconcile.
pub const REQUESTED_AT_ANNOTATION: &str = "reconcile.fluxcd.io/requestedAt";

/// A reference to an object of the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct LocalObjectReference {
    pub name: String,
}

/// The two CRDs serin-sync serves.
pub fn crds() -> Vec<CustomResourceDefinition> {
    [GitRepository::crd(), Kustomization::crd()]
        .into_iter()
        .map(complete_crd)
        .collect()
}

/// Completes a derived CRD as Flux's are written: `listKind`, the root's `apiVersion`, `kind`
/// and `metadata` properties, and the status default `observedGeneration: -1`.
fn complete_crd(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    crd.spec
        .names
        .list_kind
        .get_or_insert_with(|| format!("{}List", crd.spec.names.kind));
    let string = |description: &str| JSONSchemaProps {
        type_: Some("string".to_owned()),
        description: Some(description.to_owned()),
        ..Default::default()
    };
    for version in &mut crd.spec.versions {
        let Some(root) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        root.required = None;
        let properties = root.properties.get_or_insert_with(Default::default);
        properties.insert(
            "apiVersion".to_owned(),
            string("APIVersion defines the versioned schema of this representation of an object."),
        );
        properties.insert(
            "kind".to_owned(),
            string("Kind is a string value representing the REST resource this object represents."),
        );
        properties.insert(
            "metadata".to_owned(),
            JSONSchemaProps {
                type_: Some("object".to_owned()),
                ..Default::default()
            },
        );
        if let Some(status) = properties.get_mut("status") {
            status.default = Some(
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON(
                    serde_json::json!({"observedGeneration": -1}),
                ),
            );
        }
    }
    crd
}

/// Each CRD as a file name in `crds/` (`<group>_<plural>.yaml`) and its YAML document, starting
/// with `---` so that the files concatenate into one stream.
pub fn crds_yaml() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    let mut files = crds()
        .into_iter()
        .map(|crd| {
            let file = format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural);
            serde_yaml::to_string(&crd).map(|yaml| (file, format!("---\n{yaml}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}
