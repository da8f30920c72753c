//! Kubernetes Events with Flux's texts and source components (`source-controller`,
//! `kustomize-controller`). Failures to record are logged, never fatal. Does I/O.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;

/// Records one event on `object` (a repeat within ten minutes raises the count of the Event it
/// repeats, as client-go's recorder does).
pub async fn record(
    client: &Client,
    object: &ObjectReference,
    component: &str,
    warning: bool,
    reason: &str,
    message: &str,
) {
    let ns = object.namespace.clone().unwrap_or_else(|| "default".into());
    let name = object.name.clone().unwrap_or_default();
    if warning {
        tracing::warn!(object = %format!("{}/{ns}/{name}", object.kind.as_deref().unwrap_or_default()), reason, "{message}");
    } else {
        tracing::info!(object = %format!("{}/{ns}/{name}", object.kind.as_deref().unwrap_or_default()), reason, "{message}");
    }
    serin_runtime::events::record(
        client,
        serin_runtime::events::EventRecord {
            object,
            component,
            reporting_component: component,
            warning,
            reason,
            message,
        },
    )
    .await;
}
