//! Kubernetes Events with Flux's texts and source components (`source-controller`,
//! `kustomize-controller`). Failures to record are logged, never fatal. Does I/O.

use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

/// Records one event on `object`.
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
    let now = Time(jiff::Timestamp::now());
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{name}.{:x}",
                jiff::Timestamp::now().as_nanosecond() as u128 + u128::from(rand::random::<u16>())
            )),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: object.clone(),
        reason: Some(reason.to_owned()),
        message: Some(message.chars().take(1024).collect()),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        source: Some(EventSource {
            component: Some(component.to_owned()),
            host: None,
        }),
        reporting_component: Some(component.to_owned()),
        reporting_instance: Some(std::env::var("POD_NAME").unwrap_or_else(|_| "serin-sync".into())),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    if let Err(err) = api.create(&PostParams::default(), &event).await {
        tracing::warn!(error = %err, "recording an event failed");
    }
}
