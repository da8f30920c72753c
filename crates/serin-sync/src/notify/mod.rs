//! Notifications as Flux's notification-controller sends them, and its Receiver webhooks: the
//! event model (Flux's JSON, made from a Kubernetes Event of serin-sync's objects or of serin's
//! Canaries), which Alerts an event matches, each Provider's payload, HMAC signatures and the
//! Receiver checks. Pure; [`dispatch`] and [`receiver`] do the I/O.

pub mod dispatch;
pub mod receiver;

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::Event as KubeEvent;
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha512};

use crate::api::notification::{Alert, CrossNamespaceObjectReference, ProviderSpec};

/// The object an event is about.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InvolvedObject {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
}

/// An event, as Flux's controllers post it to the notification-controller and as the generic
/// providers receive it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub involved_object: InvolvedObject,
    /// `info` or `error`.
    pub severity: String,
    pub timestamp: String,
    pub message: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    pub reporting_controller: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reporting_instance: String,
}

impl Event {
    /// The event of a Kubernetes Event (Warning: `error`, else `info`), with its last time.
    pub fn from_kube(e: &KubeEvent) -> Option<Self> {
        let object = &e.involved_object;
        let timestamp = e
            .last_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
            .or_else(|| e.first_timestamp.as_ref().map(|t| t.0.to_string()))
            .unwrap_or_default();
        Some(Self {
            involved_object: InvolvedObject {
                kind: object.kind.clone()?,
                namespace: object.namespace.clone().unwrap_or_default(),
                name: object.name.clone()?,
                uid: object.uid.clone().unwrap_or_default(),
                api_version: object.api_version.clone().unwrap_or_default(),
            },
            severity: if e.type_.as_deref() == Some("Warning") {
                "error".into()
            } else {
                "info".into()
            },
            timestamp,
            message: e.message.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            metadata: BTreeMap::new(),
            reporting_controller: e
                .reporting_component
                .clone()
                .filter(|c| !c.is_empty())
                .or_else(|| e.source.as_ref().and_then(|s| s.component.clone()))
                .unwrap_or_default(),
            reporting_instance: e.reporting_instance.clone().unwrap_or_default(),
        })
    }

    /// `kind/name.namespace`, lower-case kind, as Flux's providers title an event.
    pub fn subject(&self) -> String {
        format!(
            "{}/{}.{}",
            self.involved_object.kind.to_lowercase(),
            self.involved_object.name,
            self.involved_object.namespace
        )
    }
}

/// Whether an event source reference selects the object (`labels`: the object's, needed only
/// with `matchLabels`).
pub fn selects(
    reference: &CrossNamespaceObjectReference,
    default_namespace: &str,
    object: &InvolvedObject,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let namespace = reference.namespace.as_deref().unwrap_or(default_namespace);
    let name_matches = reference.name == "*" || reference.name == object.name;
    let labels_match = reference.match_labels.is_empty()
        || labels.is_some_and(|l| reference.match_labels.iter().all(|(k, v)| l.get(k) == Some(v)));
    reference.kind == object.kind
        && (namespace == "*" || namespace == object.namespace)
        && name_matches
        && labels_match
}

/// Why an Alert does not take an event, `None` when it does. `labels` as for [`selects`].
pub fn alert_rejects(
    alert: &Alert,
    event: &Event,
    labels: Option<&BTreeMap<String, String>>,
) -> Option<String> {
    let ns = alert.metadata.namespace.clone().unwrap_or_default();
    if alert.spec.suspend == Some(true) {
        return Some("the Alert is suspended".into());
    }
    if !alert
        .spec
        .event_sources
        .iter()
        .any(|r| selects(r, &ns, &event.involved_object, labels))
    {
        return Some("no event source selects the object".into());
    }
    let severity = alert.spec.event_severity.as_deref().unwrap_or("info");
    if severity != "info" && severity != event.severity {
        return Some(format!("severity {} is not {severity}", event.severity));
    }
    let matches = |patterns: &[String]| {
        patterns
            .iter()
            .any(|p| Regex::new(p).is_ok_and(|re| re.is_match(&event.message)))
    };
    if !alert.spec.inclusion_list.is_empty() && !matches(&alert.spec.inclusion_list) {
        return Some("the message matches no inclusionList entry".into());
    }
    if matches(&alert.spec.exclusion_list) {
        return Some("the message matches an exclusionList entry".into());
    }
    None
}

/// Whether an Alert's event sources need the object's labels (some have `matchLabels`).
pub fn needs_labels(alert: &Alert) -> bool {
    alert
        .spec
        .event_sources
        .iter()
        .any(|r| !r.match_labels.is_empty())
}

/// The event as an Alert sends it: `eventMetadata` and `summary` added, and the API-group
/// prefixes of metadata keys removed (`helm.toolkit.fluxcd.io/revision` is `revision`).
pub fn for_alert(alert: &Alert, event: &Event) -> Event {
    let mut out = event.clone();
    let mut metadata = BTreeMap::new();
    for (k, v) in &event.metadata {
        let key = k.rsplit_once('/').map_or(k.as_str(), |(_, k)| k);
        metadata.insert(key.to_owned(), v.clone());
    }
    for (k, v) in &alert.spec.event_metadata {
        metadata.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if let Some(summary) = alert.spec.summary.as_ref().filter(|s| !s.is_empty()) {
        metadata.insert("summary".into(), summary.clone());
    }
    out.metadata = metadata;
    out
}

/// What a Provider sends for an event.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub url: String,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// The Provider types serin-sync sends to.
pub const SUPPORTED_PROVIDERS: [&str; 6] = [
    "slack",
    "discord",
    "msteams",
    "googlechat",
    "generic",
    "generic-hmac",
];

/// The request a Provider makes for an event. `address` and `token` come from the spec or the
/// Provider's Secret; `headers` from the Secret's `headers`.
pub fn request(
    spec: &ProviderSpec,
    address: &str,
    token: Option<&str>,
    headers: &BTreeMap<String, String>,
    event: &Event,
) -> Result<Request, String> {
    if address.is_empty() {
        return Err("no address: set spec.address or the Secret's address".into());
    }
    let mut out = Request {
        url: address.to_owned(),
        body: Vec::new(),
        headers: vec![("Content-Type".into(), "application/json".into())],
    };
    let body = match spec.type_.as_str() {
        "generic" | "generic-hmac" => {
            out.headers
                .push(("Gotk-Component".into(), event.reporting_controller.clone()));
            serde_json::to_vec(event).map_err(|e| e.to_string())?
        }
        "slack" | "discord" => {
            if spec.type_ == "discord" && !out.url.ends_with("/slack") {
                out.url = format!("{}/slack", out.url.trim_end_matches('/'));
            }
            if spec.type_ == "slack"
                && let Some(token) = token
            {
                out.headers
                    .push(("Authorization".into(), format!("Bearer {token}")));
            }
            serde_json::to_vec(&slack(spec, event)).map_err(|e| e.to_string())?
        }
        "msteams" => serde_json::to_vec(&msteams(event)).map_err(|e| e.to_string())?,
        "googlechat" => serde_json::to_vec(&google_chat(event)).map_err(|e| e.to_string())?,
        other => {
            return Err(format!(
                "spec.type {other:?} is not supported by serin-sync ({})",
                SUPPORTED_PROVIDERS.join(", ")
            ));
        }
    };
    if spec.type_ == "generic-hmac" {
        let token = token.ok_or("generic-hmac needs the Secret's token")?;
        out.headers.push((
            "X-Signature".into(),
            format!("sha256={}", hmac_sha256(token, &body)),
        ));
    }
    for (k, v) in headers {
        out.headers.push((k.clone(), v.clone()));
    }
    out.body = body;
    Ok(out)
}

/// Slack's message (also Discord's Slack-compatible endpoint).
fn slack(spec: &ProviderSpec, event: &Event) -> Value {
    let username = spec
        .username
        .clone()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| event.reporting_controller.clone());
    let fields: Vec<Value> = event
        .metadata
        .iter()
        .map(|(k, v)| json!({"title": k, "value": v, "short": false}))
        .collect();
    let mut payload = json!({
        "username": username,
        "attachments": [{
            "color": if event.severity == "error" { "danger" } else { "good" },
            "author_name": event.subject(),
            "text": event.message,
            "mrkdwn_in": ["text"],
            "fields": fields,
        }],
    });
    if let Some(channel) = spec.channel.as_ref().filter(|c| !c.is_empty()) {
        payload["channel"] = json!(channel);
    }
    payload
}

/// A Microsoft Teams connector card.
fn msteams(event: &Event) -> Value {
    let facts: Vec<Value> = event
        .metadata
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    json!({
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "themeColor": if event.severity == "error" { "FF0000" } else { "0076D7" },
        "summary": event.subject(),
        "sections": [{
            "activityTitle": event.subject(),
            "activitySubtitle": event.message,
            "facts": facts,
        }],
    })
}

/// A Google Chat card.
fn google_chat(event: &Event) -> Value {
    let mut sections = vec![json!({"widgets": [{"textParagraph": {"text": event.message}}]})];
    if !event.metadata.is_empty() {
        let widgets: Vec<Value> = event
            .metadata
            .iter()
            .map(|(k, v)| json!({"keyValue": {"topLabel": k, "content": v}}))
            .collect();
        sections.push(json!({ "widgets": widgets }));
    }
    json!({"cards": [{"header": {"title": event.subject()}, "sections": sections}]})
}

/// Hex HMAC-SHA256 of `body` with `key`.
pub fn hmac_sha256(key: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A Receiver's path: `/hook/` and the hex SHA-256 of token, name and namespace.
pub fn webhook_path(token: &str, name: &str, namespace: &str) -> String {
    let digest = Sha256::digest(format!("{token}{name}{namespace}").as_bytes());
    format!("/hook/{}", hex(&digest))
}

/// A Receiver call's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: reconcile the resources.
    Reconcile,
    /// Valid, but nothing to do (a GitHub `ping`).
    Nothing,
    /// Refused: the HTTP status and why.
    Refuse(u16, String),
}

/// Checks a call to a Receiver of `type_` with `token` (the headers as lower-case names).
pub fn verify(
    type_: &str,
    events: &[String],
    token: &str,
    headers: &BTreeMap<String, String>,
    body: &[u8],
) -> Verdict {
    match type_ {
        "generic" => Verdict::Reconcile,
        "generic-hmac" => match headers.get("x-signature") {
            Some(signature) if signature_valid(signature, token, body) => Verdict::Reconcile,
            Some(_) => Verdict::Refuse(401, "the X-Signature header does not match the body".into()),
            None => Verdict::Refuse(401, "the X-Signature header is missing".into()),
        },
        "github" => {
            let signature = headers
                .get("x-hub-signature-256")
                .or_else(|| headers.get("x-hub-signature"));
            match signature {
                Some(s) if signature_valid(s, token, body) => {}
                Some(_) => {
                    return Verdict::Refuse(401, "the GitHub signature does not match the body".into());
                }
                None => return Verdict::Refuse(401, "the X-Hub-Signature-256 header is missing".into()),
            }
            let event = headers
                .get("x-github-event")
                .map(String::as_str)
                .unwrap_or_default();
            if event == "ping" {
                return Verdict::Nothing;
            }
            if !events.is_empty() && !events.iter().any(|e| e.eq_ignore_ascii_case(event)) {
                return Verdict::Refuse(400, format!("GitHub event '{event}' is not allowed"));
            }
            Verdict::Reconcile
        }
        "gitlab" => match headers.get("x-gitlab-token") {
            Some(t) if constant_time_eq(t.as_bytes(), token.as_bytes()) => {
                let event = headers
                    .get("x-gitlab-event")
                    .map(String::as_str)
                    .unwrap_or_default();
                if !events.is_empty() && !events.iter().any(|e| e.eq_ignore_ascii_case(event)) {
                    return Verdict::Refuse(400, format!("GitLab event '{event}' is not allowed"));
                }
                Verdict::Reconcile
            }
            _ => Verdict::Refuse(401, "the X-Gitlab-Token header does not match".into()),
        },
        other => Verdict::Refuse(
            501,
            format!(
                "Receiver type {other:?} is not supported by serin-sync (generic, generic-hmac, github, gitlab)"
            ),
        ),
    }
}

/// `<algorithm>=<hex>` (sha1, sha256, sha512) checked against the body's HMAC.
fn signature_valid(signature: &str, token: &str, body: &[u8]) -> bool {
    let Some((algorithm, given)) = signature.split_once('=') else {
        return false;
    };
    let key = token.as_bytes();
    let expected = match algorithm {
        "sha1" => {
            let Ok(mut mac) = <Hmac<sha1::Sha1> as Mac>::new_from_slice(key) else {
                return false;
            };
            mac.update(body);
            hex(&mac.finalize().into_bytes())
        }
        "sha256" => hmac_sha256(token, body),
        "sha512" => {
            let Ok(mut mac) = <Hmac<Sha512> as Mac>::new_from_slice(key) else {
                return false;
            };
            mac.update(body);
            hex(&mac.finalize().into_bytes())
        }
        _ => return false,
    };
    constant_time_eq(expected.as_bytes(), given.trim().to_ascii_lowercase().as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::notification::AlertSpec;

    fn event(kind: &str, severity: &str, message: &str) -> Event {
        Event {
            involved_object: InvolvedObject {
                kind: kind.into(),
                namespace: "apps".into(),
                name: "podinfo".into(),
                ..Default::default()
            },
            severity: severity.into(),
            timestamp: "2026-12-06T10:00:00Z".into(),
            message: message.into(),
            reason: "Synced".into(),
            metadata: BTreeMap::from([("helm.toolkit.fluxcd.io/revision".into(), "6.6.1".into())]),
            reporting_controller: "helm-controller".into(),
            reporting_instance: String::new(),
        }
    }

    fn alert(spec: AlertSpec) -> Alert {
        let mut a = Alert::new("slack", spec);
        a.metadata.namespace = Some("apps".into());
        a
    }

    fn source(kind: &str, name: &str) -> CrossNamespaceObjectReference {
        CrossNamespaceObjectReference {
            kind: kind.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn alerts_match_by_source_severity_and_lists() {
        let all = alert(AlertSpec {
            event_sources: vec![source("HelmRelease", "*"), source("Canary", "podinfo")],
            ..Default::default()
        });
        assert_eq!(
            alert_rejects(&all, &event("HelmRelease", "info", "ok"), None),
            None
        );
        assert_eq!(
            alert_rejects(&all, &event("Canary", "error", "failed"), None),
            None
        );
        assert!(alert_rejects(&all, &event("Kustomization", "info", "ok"), None).is_some());
        let mut other_ns = event("HelmRelease", "info", "ok");
        other_ns.involved_object.namespace = "other".into();
        assert!(
            alert_rejects(&all, &other_ns, None).is_some(),
            "the Alert's namespace by default"
        );
        let errors = alert(AlertSpec {
            event_severity: Some("error".into()),
            event_sources: vec![source("HelmRelease", "*")],
            exclusion_list: vec!["^ignore".into()],
            ..Default::default()
        });
        assert!(alert_rejects(&errors, &event("HelmRelease", "info", "ok"), None).is_some());
        assert_eq!(
            alert_rejects(&errors, &event("HelmRelease", "error", "bad"), None),
            None
        );
        assert!(alert_rejects(&errors, &event("HelmRelease", "error", "ignore me"), None).is_some());
        let included = alert(AlertSpec {
            event_sources: vec![source("HelmRelease", "*")],
            inclusion_list: vec!["succeeded".into()],
            ..Default::default()
        });
        assert!(alert_rejects(&included, &event("HelmRelease", "info", "failed"), None).is_some());
        assert_eq!(
            alert_rejects(
                &included,
                &event("HelmRelease", "info", "upgrade succeeded"),
                None
            ),
            None
        );
        let labelled = alert(AlertSpec {
            event_sources: vec![CrossNamespaceObjectReference {
                match_labels: BTreeMap::from([("team".into(), "web".into())]),
                ..source("HelmRelease", "*")
            }],
            ..Default::default()
        });
        assert!(needs_labels(&labelled));
        let web = BTreeMap::from([("team".into(), "web".into())]);
        assert_eq!(
            alert_rejects(&labelled, &event("HelmRelease", "info", "ok"), Some(&web)),
            None
        );
        assert!(
            alert_rejects(
                &labelled,
                &event("HelmRelease", "info", "ok"),
                Some(&BTreeMap::new())
            )
            .is_some()
        );
    }

    #[test]
    fn slack_payload_is_fluxs() {
        let a = alert(AlertSpec {
            summary: Some("prod".into()),
            event_metadata: BTreeMap::from([("cluster".into(), "dev".into())]),
            ..Default::default()
        });
        let e = for_alert(&a, &event("HelmRelease", "error", "Helm upgrade failed"));
        let spec = ProviderSpec {
            type_: "slack".into(),
            channel: Some("general".into()),
            ..Default::default()
        };
        let r = request(&spec, "http://hooks/x", Some("t0k"), &BTreeMap::new(), &e).expect("request");
        let body: Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(
            body,
            json!({
                "channel": "general",
                "username": "helm-controller",
                "attachments": [{
                    "color": "danger",
                    "author_name": "helmrelease/podinfo.apps",
                    "text": "Helm upgrade failed",
                    "mrkdwn_in": ["text"],
                    "fields": [
                        {"title": "cluster", "value": "dev", "short": false},
                        {"title": "revision", "value": "6.6.1", "short": false},
                        {"title": "summary", "value": "prod", "short": false},
                    ],
                }],
            })
        );
        assert!(r.headers.contains(&("Authorization".into(), "Bearer t0k".into())));
        let discord = ProviderSpec {
            type_: "discord".into(),
            ..Default::default()
        };
        assert_eq!(
            request(
                &discord,
                "https://discord/api/webhooks/1/x",
                None,
                &BTreeMap::new(),
                &e
            )
            .expect("request")
            .url,
            "https://discord/api/webhooks/1/x/slack"
        );
    }

    #[test]
    fn generic_hmac_signs_the_body() {
        let spec = ProviderSpec {
            type_: "generic-hmac".into(),
            ..Default::default()
        };
        let e = event("Kustomization", "info", "applied");
        let r = request(&spec, "http://x", Some("secret"), &BTreeMap::new(), &e).expect("request");
        let signature = r
            .headers
            .iter()
            .find(|(k, _)| k == "X-Signature")
            .map(|(_, v)| v.clone())
            .expect("signed");
        assert_eq!(signature, format!("sha256={}", hmac_sha256("secret", &r.body)));
        assert_eq!(
            serde_json::from_slice::<Event>(&r.body).expect("the event"),
            e,
            "generic sends the event as it is"
        );
        assert!(request(&spec, "http://x", None, &BTreeMap::new(), &e).is_err());
        let unsupported = ProviderSpec {
            type_: "opsgenie".into(),
            ..Default::default()
        };
        assert!(
            request(&unsupported, "http://x", None, &BTreeMap::new(), &e)
                .expect_err("unsupported")
                .contains("spec.type \"opsgenie\"")
        );
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test case 2.
        assert_eq!(
            hmac_sha256("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn receivers_check_signatures() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let headers = |pairs: &[(&str, String)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
        };
        let good = format!("sha256={}", hmac_sha256("token", body));
        assert_eq!(
            verify(
                "generic-hmac",
                &[],
                "token",
                &headers(&[("x-signature", good.clone())]),
                body
            ),
            Verdict::Reconcile
        );
        assert!(matches!(
            verify(
                "generic-hmac",
                &[],
                "token",
                &headers(&[("x-signature", "sha256=00".into())]),
                body
            ),
            Verdict::Refuse(401, _)
        ));
        assert!(matches!(
            verify("generic-hmac", &[], "token", &BTreeMap::new(), body),
            Verdict::Refuse(401, _)
        ));
        let push = headers(&[
            ("x-hub-signature-256", good.clone()),
            ("x-github-event", "push".into()),
        ]);
        assert_eq!(
            verify("github", &["push".into()], "token", &push, body),
            Verdict::Reconcile
        );
        assert!(matches!(
            verify("github", &["release".into()], "token", &push, body),
            Verdict::Refuse(400, _)
        ));
        let ping = headers(&[("x-hub-signature-256", good), ("x-github-event", "ping".into())]);
        assert_eq!(verify("github", &[], "token", &ping, body), Verdict::Nothing);
        let forged = headers(&[
            (
                "x-hub-signature-256",
                format!("sha256={}", hmac_sha256("other", body)),
            ),
            ("x-github-event", "push".into()),
        ]);
        assert!(matches!(
            verify("github", &[], "token", &forged, body),
            Verdict::Refuse(401, _)
        ));
        assert_eq!(
            verify("generic", &[], "token", &BTreeMap::new(), body),
            Verdict::Reconcile
        );
        assert_eq!(
            webhook_path("token", "flux-system", "flux-system"),
            format!("/hook/{}", hex(&Sha256::digest(b"tokenflux-systemflux-system")))
        );
    }
}
