//! Flux's resource types, read unchanged: `source.toolkit.fluxcd.io/v1` GitRepository,
//! HelmRepository and HelmChart, `kustomize.toolkit.fluxcd.io/v1` Kustomization and
//! `helm.toolkit.fluxcd.io/v2` HelmRelease, `notification.toolkit.fluxcd.io` Provider, Alert and
//! Receiver, and the CRDs serin-sync installs. No I/O.

pub mod git_repository;
pub mod helm;
pub mod kustomization;
pub mod notification;
pub mod schema;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{CustomResourceDefinition, JSON};
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use git_repository::{Artifact, GitRepository, GitRepositoryRef, GitRepositorySpec, GitRepositoryStatus};
pub use helm::{HelmChart, HelmRelease, HelmRepository};
pub use kustomization::{Kustomization, KustomizationSpec, KustomizationStatus, ResourceRef};
pub use notification::{Alert, Provider, Receiver};

/// The finalizer Flux puts on its objects.
pub const FINALIZER: &str = "finalizers.fluxcd.io";
/// The annotation that asks for an immediate reconcile.
pub const REQUESTED_AT_ANNOTATION: &str = "reconcile.fluxcd.io/requestedAt";

/// A reference to an object of the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct LocalObjectReference {
    pub name: String,
}

/// The CRDs serin-sync serves.
pub fn crds() -> Vec<CustomResourceDefinition> {
    [
        GitRepository::crd(),
        Kustomization::crd(),
        HelmRepository::crd(),
        HelmChart::crd(),
        HelmRelease::crd(),
        Provider::crd(),
        Alert::crd(),
        Receiver::crd(),
    ]
    .into_iter()
    .map(|crd| with_status_default(serin_runtime::crd::complete(crd)))
    .collect()
}

/// Flux's CRDs default the status to `observedGeneration: -1`.
fn with_status_default(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        let status = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|root| root.properties.as_mut())
            .and_then(|properties| properties.get_mut("status"));
        if let Some(status) = status {
            status.default = Some(JSON(serde_json::json!({"observedGeneration": -1})));
        }
    }
    crd
}

/// Each CRD as a file name in `crds/` (`<group>_<plural>.yaml`) and its YAML document, sorted by
/// file name.
pub fn crds_yaml() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    let mut files = serin_runtime::crd::files(crds())?;
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}
