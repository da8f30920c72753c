//! Resource types: Flagger's `flagger.app/v1beta1` CRDs (Canary, MetricTemplate, AlertProvider),
//! serin's own `CanaryAction` (`serin.dev/v1alpha1`) and the Istio objects serin writes. No I/O.

pub mod action;
pub mod alert_provider;
pub mod canary;
pub mod istio;
pub mod metric_template;
pub mod schema;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use action::{CanaryAction, CanaryActionSpec, CanaryActionStatus};
pub use alert_provider::{AlertProvider, AlertProviderSpec};
pub use canary::{Canary, CanaryPhase, CanarySpec, CanaryStatus};
pub use metric_template::{MetricTemplate, MetricTemplateSpec};

/// The CRDs serin serves, in the order `serin crd` prints them.
pub fn crds() -> Vec<CustomResourceDefinition> {
    [
        Canary::crd(),
        MetricTemplate::crd(),
        AlertProvider::crd(),
        CanaryAction::crd(),
    ]
    .into_iter()
    .map(serin_runtime::crd::complete)
    .collect()
}

/// Each CRD as a file name in `crds/` (`<group>_<plural>.yaml`) and its YAML document.
pub fn crds_yaml() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    serin_runtime::crd::files(crds())
}
