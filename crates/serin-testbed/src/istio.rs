//! The Istio CRDs the data plane reads (`networking.istio.io`: VirtualService, DestinationRule,
//! Gateway), as an Istio install registers them: versions v1alpha3, v1beta1 (stored) and v1,
//! short names, categories and printer columns. No I/O.

use serde_json::{Value, json};

fn crd(kind: &str, plural: &str, short: &str, columns: Value) -> Value {
    let versions: Vec<Value> = ["v1alpha3", "v1beta1", "v1"]
        .iter()
        .map(|v| {
            json!({
                "name": v,
                "served": true,
                "storage": *v == "v1beta1",
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
            })
        })
        .collect();
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.networking.istio.io"), "labels": {"app": "istio-pilot", "release": "istio"}},
        "spec": {
            "group": "networking.istio.io",
            "scope": "Namespaced",
            "names": {"kind": kind, "listKind": format!("{kind}List"), "plural": plural, "singular": kind.to_lowercase(), "shortNames": [short], "categories": ["istio-io", "networking-istio-io"]},
            "versions": versions
        }
    })
}

/// The CRDs.
pub fn crds() -> Vec<Value> {
    let age = json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"});
    vec![
        crd(
            "VirtualService",
            "virtualservices",
            "vs",
            json!([
                {"name": "Gateways", "type": "string", "jsonPath": ".spec.gateways", "description": "The names of gateways and sidecars that should apply these routes"},
                {"name": "Hosts", "type": "string", "jsonPath": ".spec.hosts", "description": "The destination hosts to which traffic is being sent"},
                age
            ]),
        ),
        crd(
            "DestinationRule",
            "destinationrules",
            "dr",
            json!([{"name": "Host", "type": "string", "jsonPath": ".spec.host", "description": "The name of a service from the service registry"}, age]),
        ),
        crd("Gateway", "gateways", "gw", json!([age])),
    ]
}

/// Installs Istio's networking CRDs through `client` (those present are left alone) and waits
/// until the API server reports them Established.
pub async fn install_crds(client: &kube::Client) -> anyhow::Result<()> {
    let crds = crds()
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<Vec<_>, _>>()?;
    crate::install_crds(client, crds).await
}
