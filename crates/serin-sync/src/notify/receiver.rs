//! Receivers: the reconciler that gives each its webhook path (`status.webhookPath`, Ready), and
//! the HTTP server (`--receiver-addr`, default `:9292`) that checks a call's signature and, when
//! it is valid, asks each of the Receiver's resources to reconcile now (the
//! `reconcile.fluxcd.io/requestedAt` annotation). Unknown path: 404; suspended or not Ready: 503;
//! a bad or missing signature: 401, and nothing changes. Does I/O.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
    runtime::{controller::Action, reflector::Store},
};
use serde_json::json;

use super::{Verdict, verify, webhook_path};
use crate::{
    api::{
        REQUESTED_AT_ANNOTATION,
        notification::{CrossNamespaceObjectReference, Receiver},
    },
    controller::{
        Context, Error, api_message, events,
        status::{self, ConditionStatus, Progress},
    },
};

/// The events' component, Flux's.
pub const COMPONENT: &str = "notification-controller";

/// Reconciles one Receiver: its path from the token, or why it has none.
pub async fn reconcile(receiver: Arc<Receiver>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = receiver.namespace().unwrap_or_default();
    let name = receiver.name_any();
    let api: Api<Receiver> = Api::namespaced(ctx.client.clone(), &ns);
    let generation = receiver.meta().generation;
    let mut st = receiver.status.clone().unwrap_or_default();
    st.last_handled_reconcile_at = receiver
        .annotations()
        .get(REQUESTED_AT_ANNOTATION)
        .cloned()
        .or(st.last_handled_reconcile_at.take());
    let interval = receiver
        .spec
        .interval
        .as_deref()
        .and_then(|i| status::parse_duration(i).ok())
        .unwrap_or(Duration::from_secs(600));
    let outcome = match token(&ctx.client, &ns, &receiver.spec.secret_ref.name).await {
        Ok(token) => {
            let path = webhook_path(&token, &name, &ns);
            let message = format!("Receiver initialized for path: {path}");
            st.webhook_path = Some(path);
            Ok(message)
        }
        Err(message) => Err(message),
    };
    let was = status::condition(&st.conditions, status::READY).map(|c| (c.status.clone(), c.message.clone()));
    let mut progress = Progress::new(&mut st.conditions, generation, jiff::Timestamp::now());
    match &outcome {
        Ok(message) => {
            progress.set(status::READY, ConditionStatus::True, "Succeeded", message);
        }
        Err(message) => {
            progress.set(status::READY, ConditionStatus::False, "TokenNotFound", message);
        }
    }
    st.observed_generation = generation;
    let body = json!({ "status": st });
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map_err(Error::Kube)?;
    let now = status::condition(&st.conditions, status::READY).map(|c| (c.status.clone(), c.message.clone()));
    if was != now {
        let (warning, reason, message) = match &outcome {
            Ok(m) => (false, "Succeeded", m.clone()),
            Err(m) => (true, "TokenNotFound", m.clone()),
        };
        events::record(
            &ctx.client,
            &receiver.object_ref(&()),
            COMPONENT,
            warning,
            reason,
            &message,
        )
        .await;
    }
    Ok(Action::requeue(if outcome.is_ok() {
        interval
    } else {
        ctx.config.retry_cap
    }))
}

/// The `token` of the Receiver's Secret.
async fn token(client: &Client, namespace: &str, secret: &str) -> Result<String, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let found = secrets
        .get_opt(secret)
        .await
        .map_err(|e| {
            format!(
                "spec.secretRef: reading Secret '{namespace}/{secret}': {}",
                api_message(&e)
            )
        })?
        .ok_or_else(|| format!("spec.secretRef: Secret '{namespace}/{secret}' not found"))?;
    found
        .data
        .unwrap_or_default()
        .get("token")
        .map(|t| String::from_utf8_lossy(&t.0).trim().to_owned())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("spec.secretRef: Secret '{namespace}/{secret}' has no 'token'"))
}

/// What the server needs.
#[derive(Clone)]
struct Server {
    client: Client,
    receivers: Store<kube::core::DeserializeGuard<Receiver>>,
}

/// Serves the Receivers' webhooks on `addr` until the future is dropped.
pub async fn serve(
    addr: SocketAddr,
    client: Client,
    receivers: Store<kube::core::DeserializeGuard<Receiver>>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(address = %listener.local_addr()?, "serving the Receivers' webhooks");
    let app = Router::new()
        .route("/hook/{digest}", post(hook))
        .with_state(Server { client, receivers });
    axum::serve(listener, app).await
}

async fn hook(
    State(server): State<Server>,
    Path(digest): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let path = format!("/hook/{digest}");
    let found = server.receivers.state().into_iter().find_map(|g| {
        let r = g.0.as_ref().ok()?;
        (r.status.as_ref()?.webhook_path.as_deref() == Some(path.as_str())).then(|| r.clone())
    });
    let Some(receiver) = found else {
        return (StatusCode::NOT_FOUND, "no Receiver has this path\n".into());
    };
    let ns = receiver.namespace().unwrap_or_default();
    let name = receiver.name_any();
    let ready = receiver
        .status
        .as_ref()
        .and_then(|s| status::condition(&s.conditions, status::READY))
        .is_some_and(|c| c.status == "True");
    if receiver.spec.suspend == Some(true) || !ready {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Receiver '{ns}/{name}' is suspended or not ready\n"),
        );
    }
    let token = match token(&server.client, &ns, &receiver.spec.secret_ref.name).await {
        Ok(t) => t,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    };
    // The token may have changed since the path was made.
    if webhook_path(&token, &name, &ns) != path {
        return (StatusCode::NOT_FOUND, "no Receiver has this path\n".into());
    }
    let headers: BTreeMap<String, String> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), v.to_str().ok()?.to_owned())))
        .collect();
    match verify(
        &receiver.spec.type_,
        &receiver.spec.events,
        &token,
        &headers,
        &body,
    ) {
        Verdict::Refuse(code, why) => {
            tracing::warn!(receiver = %format!("{ns}/{name}"), "refused a call: {why}");
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
            (status, format!("{why}\n"))
        }
        Verdict::Nothing => (StatusCode::OK, "nothing to do\n".into()),
        Verdict::Reconcile => {
            let now = jiff::Timestamp::now().to_string();
            let mut failed = Vec::new();
            for resource in &receiver.spec.resources {
                if let Err(e) = request_reconcile(&server.client, &ns, resource, &now).await {
                    failed.push(e);
                }
            }
            if failed.is_empty() {
                tracing::info!(receiver = %format!("{ns}/{name}"), "reconcile requested");
                (StatusCode::OK, "reconcile requested\n".into())
            } else {
                let message = failed.join("; ");
                tracing::warn!(receiver = %format!("{ns}/{name}"), "{message}");
                (StatusCode::INTERNAL_SERVER_ERROR, format!("{message}\n"))
            }
        }
    }
}

/// The API version of a kind when a resource names none (Flux's current versions).
pub fn default_api_version(kind: &str) -> Option<&'static str> {
    match kind {
        "GitRepository" | "HelmRepository" | "HelmChart" | "OCIRepository" | "Bucket" => {
            Some("source.toolkit.fluxcd.io/v1")
        }
        "Kustomization" => Some("kustomize.toolkit.fluxcd.io/v1"),
        "HelmRelease" => Some("helm.toolkit.fluxcd.io/v2"),
        "ImageRepository" => Some("image.toolkit.fluxcd.io/v1beta2"),
        _ => None,
    }
}

/// Annotates the resource (or, with name `*`, each one with the labels) to reconcile now.
async fn request_reconcile(
    client: &Client,
    receiver_ns: &str,
    resource: &CrossNamespaceObjectReference,
    now: &str,
) -> Result<(), String> {
    let api_version = resource
        .api_version
        .clone()
        .or_else(|| default_api_version(&resource.kind).map(str::to_owned))
        .ok_or_else(|| format!("resources: {} needs an apiVersion", resource.kind))?;
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), api_version.clone()),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, &resource.kind);
    let (ar, _): (ApiResource, _) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| format!("resources: {} {api_version}: {e}", resource.kind))?;
    let ns = resource
        .namespace
        .clone()
        .unwrap_or_else(|| receiver_ns.to_owned());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    let names: Vec<String> = if resource.name == "*" {
        let selector = resource
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        api.list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| format!("listing {} in {ns}: {}", resource.kind, api_message(&e)))?
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect()
    } else {
        vec![resource.name.clone()]
    };
    let patch = json!({"metadata": {"annotations": {REQUESTED_AT_ANNOTATION: now}}});
    for name in names {
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| format!("annotating {} '{ns}/{name}': {}", resource.kind, api_message(&e)))?;
    }
    Ok(())
}
