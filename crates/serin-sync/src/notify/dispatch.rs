//! Sends events to the Alerts' Providers: every Kubernetes Event recorded since serin-sync
//! started (its second; on its own objects, on serin's Canaries, on anything an Alert selects) is matched
//! against the Alerts and posted to each matching Alert's Provider, once per occurrence (a
//! watch that lists again does not send an Event twice). The same object, reason and message
//! within five minutes is sent once (Flux's duplicate rule). A send that fails is logged;
//! it never holds up the others. Does I/O.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event as KubeEvent, Secret};
use kube::{
    Api, Client, ResourceExt,
    core::DeserializeGuard,
    runtime::{
        WatchStreamExt, reflector,
        watcher::{self, watcher},
    },
};

use super::{Event, alert_rejects, for_alert, needs_labels, request};
use crate::{
    api::notification::{Alert, Provider},
    apply::{manager::ResourceManager, order::ObjectId},
};

/// How long a repeat of an event is dropped.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(300);
/// Default timeout of a send.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Watches Events and sends them until `shutdown`.
pub async fn run<S>(client: Client, namespace: Option<String>, shutdown: S)
where
    S: std::future::Future<Output = ()> + Send + 'static,
{
    // Event times have whole seconds: an event of this second counts as recent.
    let started = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap_or_default();
    let ns = namespace.as_deref();
    let (alerts, writer) = reflector::store();
    let alert_stream = reflector::reflector(
        writer,
        watcher(
            serin_runtime::scope::api::<DeserializeGuard<Alert>>(&client, ns),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .applied_objects()
    .for_each(|_| async {});
    let http = match reqwest::Client::builder().build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "notifications are off: no HTTP client");
            return;
        }
    };
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let handled: Arc<Mutex<HashMap<String, (i32, Instant)>>> = Arc::default();
    let events = watcher(
        serin_runtime::scope::api::<KubeEvent>(&client, ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .applied_objects()
    .for_each(|e| {
        let (client, alerts, http, sent, handled) = (
            client.clone(),
            alerts.clone(),
            http.clone(),
            sent.clone(),
            handled.clone(),
        );
        async move {
            let Ok(e) = e else { return };
            // A watch that lists again (after a disconnect) replays every Event: only a new one,
            // or one whose count rose, is an occurrence.
            if !new_occurrence(&handled, &e) {
                return;
            }
            let Some(event) = Event::from_kube(&e) else { return };
            let recent = event
                .timestamp
                .parse::<jiff::Timestamp>()
                .is_ok_and(|t| t >= started);
            if !recent || !first_in_window(&sent, &event) {
                return;
            }
            let alerts: Vec<Alert> = alerts
                .state()
                .iter()
                .filter_map(|g| g.0.as_ref().ok().cloned())
                .collect();
            dispatch(&client, &http, &alerts, &event).await;
        }
    });
    tokio::select! {
        () = shutdown => {}
        _ = futures::future::join(alert_stream, events) => {}
    }
}

/// How long an Event's count is remembered (the API server keeps Events an hour).
const HANDLED_TTL: Duration = Duration::from_secs(2 * 3600);

/// Whether the Event is new, or repeats (its count rose), since it was last handled; records it.
fn new_occurrence(handled: &Mutex<HashMap<String, (i32, Instant)>>, e: &KubeEvent) -> bool {
    let Some(uid) = e.metadata.uid.clone() else {
        return true;
    };
    let count = e.series.as_ref().and_then(|s| s.count).or(e.count).unwrap_or(1);
    let now = Instant::now();
    let mut handled = handled.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    handled.retain(|_, (_, at)| now.duration_since(*at) < HANDLED_TTL);
    match handled.get(&uid) {
        Some((seen, _)) if *seen >= count => false,
        _ => {
            handled.insert(uid, (count, now));
            true
        }
    }
}

/// Whether the event was not sent within the window (and records it as sent now).
fn first_in_window(sent: &Mutex<HashMap<String, Instant>>, event: &Event) -> bool {
    let key = format!(
        "{}/{}/{}\n{}\n{}",
        event.involved_object.kind,
        event.involved_object.namespace,
        event.involved_object.name,
        event.reason,
        event.message
    );
    let now = Instant::now();
    let mut sent = sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    sent.retain(|_, at| now.duration_since(*at) < DUPLICATE_WINDOW);
    if sent.contains_key(&key) {
        return false;
    }
    sent.insert(key, now);
    true
}

/// Sends the event to the Provider of each Alert that takes it.
pub async fn dispatch(client: &Client, http: &reqwest::Client, alerts: &[Alert], event: &Event) {
    let mut labels: Option<BTreeMap<String, String>> = None;
    for alert in alerts {
        if needs_labels(alert) && labels.is_none() {
            labels = Some(object_labels(client, event).await);
        }
        if let Some(why) = alert_rejects(alert, event, labels.as_ref()) {
            tracing::trace!(alert = %alert.name_any(), "{why}");
            continue;
        }
        let ns = alert.namespace().unwrap_or_default();
        let reference = format!("{ns}/{}", alert.name_any());
        let event = for_alert(alert, event);
        let (client, http) = (client.clone(), http.clone());
        let provider = alert.spec.provider_ref.name.clone();
        tokio::spawn(async move {
            if let Err(e) = send(&client, &http, &ns, &provider, &event).await {
                tracing::warn!(alert = %reference, provider = %provider, error = %e, "the notification was not sent");
            }
        });
    }
}

/// The labels of the event's object (none when it cannot be read).
async fn object_labels(client: &Client, event: &Event) -> BTreeMap<String, String> {
    let o = &event.involved_object;
    let object = serde_json::json!({
        "apiVersion": o.api_version,
        "kind": o.kind,
        "metadata": {"name": o.name, "namespace": o.namespace},
    });
    let mut resources = ResourceManager::new(client.clone());
    match resources.live(&ObjectId::of(&object)).await {
        Ok(Some(live)) => serde_json::from_value(live["metadata"]["labels"].clone()).unwrap_or_default(),
        _ => BTreeMap::new(),
    }
}

/// Posts the event through the Provider `namespace/name`.
async fn send(
    client: &Client,
    http: &reqwest::Client,
    namespace: &str,
    name: &str,
    event: &Event,
) -> Result<(), String> {
    let providers: Api<Provider> = Api::namespaced(client.clone(), namespace);
    let provider = providers
        .get_opt(name)
        .await
        .map_err(|e| format!("reading the Provider: {}", crate::controller::api_message(&e)))?
        .ok_or_else(|| format!("Provider '{namespace}/{name}' not found"))?;
    if provider.spec.suspend == Some(true) {
        return Ok(());
    }
    let mut address = provider.spec.address.clone().unwrap_or_default();
    let mut token = None;
    let mut headers = BTreeMap::new();
    if let Some(secret_ref) = &provider.spec.secret_ref {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let secret = secrets
            .get_opt(&secret_ref.name)
            .await
            .map_err(|e| format!("reading the Secret: {}", crate::controller::api_message(&e)))?
            .ok_or_else(|| {
                format!(
                    "spec.secretRef: Secret '{namespace}/{}' not found",
                    secret_ref.name
                )
            })?;
        let data = secret.data.unwrap_or_default();
        let text = |key: &str| {
            data.get(key)
                .map(|v| String::from_utf8_lossy(&v.0).trim().to_owned())
        };
        if let Some(a) = text("address").filter(|a| !a.is_empty()) {
            address = a;
        }
        token = text("token");
        if let Some(h) = text("headers") {
            headers = serde_yaml::from_str(&h)
                .map_err(|e| format!("spec.secretRef: the Secret's headers are not a map of strings: {e}"))?;
        }
    }
    let r = request(&provider.spec, &address, token.as_deref(), &headers, event)?;
    let timeout = provider
        .spec
        .timeout
        .as_deref()
        .and_then(|t| crate::controller::status::parse_duration(t).ok())
        .unwrap_or(DEFAULT_TIMEOUT);
    let mut call = http.post(&r.url).timeout(timeout).body(r.body);
    for (k, v) in &r.headers {
        call = call.header(k, v);
    }
    let response = call
        .send()
        .await
        .map_err(|e| format!("posting to {}: {e}", redact(&r.url)))?;
    if !response.status().is_success() {
        return Err(format!("posting to {}: {}", redact(&r.url), response.status()));
    }
    Ok(())
}

/// A URL without its path and query (webhook URLs carry their secret there).
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or_default()),
        Err(_) => "the provider's address".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_again_event_is_not_a_new_occurrence() {
        let handled = Mutex::default();
        let mut e = KubeEvent::default();
        e.metadata.uid = Some("u1".into());
        e.count = Some(1);
        assert!(new_occurrence(&handled, &e), "first seen");
        assert!(!new_occurrence(&handled, &e), "the same Event listed again");
        e.count = Some(2);
        assert!(new_occurrence(&handled, &e), "it repeated");
        let mut other = e.clone();
        other.metadata.uid = Some("u2".into());
        assert!(new_occurrence(&handled, &other));
    }

    #[test]
    fn a_repeat_within_the_window_is_sent_once() {
        let sent = Mutex::default();
        let event = Event {
            message: "applied".into(),
            ..Default::default()
        };
        assert!(first_in_window(&sent, &event));
        assert!(!first_in_window(&sent, &event));
        let other = Event {
            message: "failed".into(),
            ..Default::default()
        };
        assert!(first_in_window(&sent, &other));
    }
}
