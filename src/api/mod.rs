//! Resource types: Flagger's `flagger.app/v1beta1` CRDs (Canary, MetricTemplate, AlertProvider)
//! and the Istio objects serin writes. No I/O.

pub mod alert_provider;
pub mod canary;
pub mod istio;
pub mod metric_template;
pub mod schema;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use alert_provider::{AlertProvider, AlertProviderSpec};
pub use canary::{Canary, CanaryPhase, CanarySpec, CanaryStatus};
pub use metric_template::{MetricTemplate, MetricTemplateSpec};

/// The three CRDs serin serves, in the order `serin crd` prints them.
pub fn crds() -> Vec<CustomResourceDefinition> {
    [Canary::crd(), MetricTemplate::crd(), AlertProvider::crd()]
        .into_iter()
        .map(complete_crd)
        .collect()
}

/// Completes a derived CRD the way Flagger's is written: `listKind`, and the root schema's
/// `apiVersion`, `kind` and `metadata` properties without requiring `spec`.
fn complete_crd(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;

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
    }
    crd
}

/// Each CRD as a file name in `crds/` (`<group>_<plural>.yaml`) and its YAML document, which
/// starts with `---` so that the files concatenate into one valid stream.
pub fn crds_yaml() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    crds()
        .into_iter()
        .map(|crd| {
            let file = format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural);
            serde_yaml::to_string(&crd).map(|yaml| (file, format!("---\n{yaml}")))
        })
        .collect()
}
