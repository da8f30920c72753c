//! Alerts: the engine's [`Alert`]s sent to the Canary's AlertProviders (Slack, Microsoft Teams,
//! Discord, Rocket.Chat, Google Chat, with the payloads Flagger sends), filtered by severity, or
//! to the global notifier (`--slack-url`, `--msteams-url`) when the Canary lists no alerts.
//! Delivery runs in the background: a slow or failing receiver is logged and counted, never
//! waited for.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use super::{Context, metrics};
use crate::{
    api::{AlertProvider, Canary},
    engine::{Alert, Severity},
};

/// How long one delivery may take (Flagger's notifier uses 5 s).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The global notifier (`serin run --slack-url/--msteams-url`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notifier {
    /// `slack` or `msteams` (Teams wins when both URLs are given, as in Flagger).
    pub kind: String,
    pub url: String,
    pub channel: String,
    pub username: String,
    pub proxy: Option<String>,
    /// Slack only: sent as a bearer token.
    pub token: Option<String>,
}

/// A resolved destination for one alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    pub kind: String,
    pub url: String,
    pub channel: String,
    pub username: String,
    pub proxy: Option<String>,
    /// Sent as a bearer token (the secret's `token`).
    pub token: Option<String>,
}

/// Whether an alert of `severity` goes to a Canary alert declared with `wanted`: `info` (or no
/// severity) gets everything, `warn` gets warnings and errors, `error` only errors.
pub fn wanted(wanted: Option<&str>, severity: Severity) -> bool {
    let floor = match wanted.unwrap_or_default() {
        "warn" => Severity::Warn,
        "error" => Severity::Error,
        _ => Severity::Info,
    };
    severity >= floor
}

/// The fields Flagger attaches to an alert: `Cluster` on every alert when `--cluster-name` is
/// set, then, with `metadata`, the target, threshold, deadline and routing.
pub fn fields(canary: &Canary, cluster: Option<&str>, metadata: bool) -> Vec<(String, String)> {
    let spec = &canary.spec;
    let ns = canary.namespace().unwrap_or_default();
    let mut out = Vec::new();
    if let Some(cluster) = cluster.filter(|c| !c.is_empty()) {
        out.push(("Cluster".to_owned(), cluster.to_owned()));
    }
    if !metadata {
        return out;
    }
    out.push((
        "Target".to_owned(),
        format!("{}/{}.{ns}", spec.target_ref.kind, spec.target_ref.name),
    ));
    out.push((
        "Failed checks threshold".to_owned(),
        spec.analysis_threshold().to_string(),
    ));
    out.push((
        "Progress deadline".to_owned(),
        format!("{}s", spec.progress_deadline_seconds()),
    ));
    let analysis = spec.analysis.clone().unwrap_or_default();
    let max = analysis.max_weight.unwrap_or(0);
    let routing = if analysis.step_weight.unwrap_or(0) > 0 {
        Some(format!(
            "Weight step: {} max: {max}",
            analysis.step_weight.unwrap_or(0)
        ))
    } else if let Some(steps) = analysis.step_weights.as_ref().filter(|s| !s.is_empty()) {
        let steps: Vec<String> = steps.iter().map(i32::to_string).collect();
        Some(format!("Weight steps: {} max: {max}", steps.join(",")))
    } else if analysis.match_.as_ref().is_some_and(|m| !m.is_empty()) {
        Some("A/B Testing".to_owned())
    } else if analysis.iterations.unwrap_or(0) > 0 {
        Some("Blue/Green".to_owned())
    } else {
        None
    };
    if let Some(routing) = routing {
        out.push(("Traffic routing".to_owned(), routing));
    }
    out
}

/// The request body for a provider type, and the URL to post it to (Discord's Slack-compatible
/// endpoint gets `/slack` appended).
pub fn payload(
    dest: &Destination,
    workload: &str,
    message: &str,
    fields: &[(String, String)],
    severity: Severity,
) -> Result<(String, Value), String> {
    let error = severity == Severity::Error;
    let slack_like = |color: &str| {
        let fields: Vec<Value> = fields
            .iter()
            .map(|(t, v)| json!({"title": t, "value": v, "short": false}))
            .collect();
        json!({
            "channel": dest.channel,
            "username": dest.username,
            "icon_url": "",
            "icon_emoji": ":rocket:",
            "attachments": [{
                "color": color,
                "author_name": workload,
                "text": message,
                "mrkdwn_in": ["text"],
                "fields": fields,
            }],
        })
    };
    match dest.kind.as_str() {
        "slack" => Ok((
            dest.url.clone(),
            slack_like(if error { "danger" } else { "good" }),
        )),
        "rocket" => Ok((
            dest.url.clone(),
            slack_like(if error { "#FF0000" } else { "#0076D7" }),
        )),
        "discord" => {
            let url = if dest.url.trim_end_matches('/').ends_with("/slack") {
                dest.url.clone()
            } else {
                format!("{}/slack", dest.url.trim_end_matches('/'))
            };
            // Flagger marks Discord messages red for warnings as well as errors.
            Ok((
                url,
                slack_like(if severity >= Severity::Warn {
                    "danger"
                } else {
                    "good"
                }),
            ))
        }
        "msteams" => {
            let facts: Vec<Value> = fields
                .iter()
                .map(|(n, v)| json!({"name": n, "value": v}))
                .collect();
            Ok((
                dest.url.clone(),
                json!({
                    "@type": "MessageCard",
                    "@context": "http://schema.org/extensions",
                    "themeColor": if error { "FF0000" } else { "0076D7" },
                    "summary": workload,
                    "sections": [{"activityTitle": message, "activitySubtitle": workload, "facts": facts}],
                }),
            ))
        }
        "gchat" => {
            let mut sections = vec![
                json!({"widgets": [{"textParagraph": {"text": format!("<font color=#848484><strong>{message}</strong></font>")}}]}),
            ];
            sections.extend(fields.iter().map(|(n, v)| {
                json!({"widgets": [{"textParagraph": {"text": format!("{n}<br><font color=#848484><strong>{v}</strong></font>")}}]})
            }));
            Ok((
                dest.url.clone(),
                json!({"cards": [{"header": {"title": "Flagger", "subtitle": workload, "imageUrl": "https://flagger.app/favicon.png"}, "sections": sections}]}),
            ))
        }
        other => Err(format!("alert provider type {other:?} is not supported")),
    }
}

/// Resolves a Canary alert's provider (and its secret) into a destination.
async fn destination(ctx: &Context, provider_ns: &str, name: &str) -> Result<Destination, String> {
    let api: Api<AlertProvider> = Api::namespaced(ctx.client.clone(), provider_ns);
    let provider = api
        .get(name)
        .await
        .map_err(|e| format!("alert provider {name}.{provider_ns} error: {e}"))?;
    let spec = provider.spec;
    let mut url = spec.address.clone().unwrap_or_default();
    let mut token = None;
    if let Some(secret_ref) = &spec.secret_ref {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), provider_ns);
        let secret = secrets
            .get(&secret_ref.name)
            .await
            .map_err(|e| format!("alert provider {name}.{provider_ns} secretRef error: {e}"))?;
        let data = secret.data.unwrap_or_default();
        let text = |key: &str| {
            data.get(key)
                .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
        };
        match text("address") {
            Some(address) => url = address,
            None => {
                return Err(format!(
                    "alert provider {name}.{provider_ns} secret {} does not contain an address",
                    secret_ref.name
                ));
            }
        }
        token = text("token").filter(|t| !t.is_empty());
    }
    if url.is_empty() {
        return Err(format!("alert provider {name}.{provider_ns} has no address"));
    }
    Ok(Destination {
        kind: spec.type_.clone(),
        url,
        channel: spec.channel().to_owned(),
        username: spec.username().to_owned(),
        proxy: spec.proxy.clone().filter(|p| !p.is_empty()),
        token,
    })
}

async fn post(dest: &Destination, body: &(String, Value)) -> Result<(), String> {
    let mut builder = reqwest::Client::builder().timeout(SEND_TIMEOUT);
    if let Some(proxy) = &dest.proxy {
        let proxy = reqwest::Proxy::all(proxy.as_str())
            .map_err(|e| format!("unable to parse proxy URL '{proxy}': {e}"))?;
        builder = builder.proxy(proxy);
    }
    let client = builder.build().map_err(|e| e.to_string())?;
    let mut request = client.post(&body.0).json(&body.1);
    if let Some(token) = &dest.token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("sending notification failed: {e}"))?;
    if response.status().is_success() {
        return Ok(());
    }
    let code = response.status();
    let text = response.text().await.unwrap_or_default();
    Err(format!(
        "sending notification failed: {code} {}",
        text.chars().take(200).collect::<String>()
    ))
}

/// Sends alerts in the background.
pub fn send(ctx: &std::sync::Arc<Context>, canary: &Canary, alerts: &[Alert]) {
    if alerts.is_empty() {
        return;
    }
    let ctx = ctx.clone();
    let canary = canary.clone();
    let alerts = alerts.to_vec();
    tokio::spawn(async move {
        for alert in &alerts {
            deliver(&ctx, &canary, alert).await;
        }
    });
}

async fn deliver(ctx: &Context, canary: &Canary, alert: &Alert) {
    let name = canary.name_any();
    let ns = canary.namespace().unwrap_or_default();
    let workload = format!("{name}.{ns}");
    let fields = fields(canary, ctx.config.cluster_name.as_deref(), alert.metadata);
    let declared = canary
        .spec
        .analysis
        .as_ref()
        .and_then(|a| a.alerts.clone())
        .unwrap_or_default();
    let mut destinations: Vec<(String, Result<Destination, String>)> = Vec::new();
    if declared.is_empty() {
        if let Some(n) = &ctx.config.notifier {
            destinations.push((
                n.kind.clone(),
                Ok(Destination {
                    kind: n.kind.clone(),
                    url: n.url.clone(),
                    channel: n.channel.clone(),
                    username: n.username.clone(),
                    proxy: n.proxy.clone(),
                    token: n.token.clone(),
                }),
            ));
        }
    } else {
        for a in declared
            .iter()
            .filter(|a| wanted(a.severity.as_deref(), alert.severity))
        {
            let provider_ns = a.provider_ref.namespace.clone().unwrap_or_else(|| ns.clone());
            destinations.push((
                a.name.clone(),
                destination(ctx, &provider_ns, &a.provider_ref.name).await,
            ));
        }
    }
    for (label, dest) in destinations {
        let result = match dest {
            Ok(dest) => match payload(&dest, &workload, &alert.message, &fields, alert.severity) {
                Ok(body) => post(&dest, &body).await.map(|()| dest.kind),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let labels = metrics::AlertLabels {
            name: name.clone(),
            namespace: ns.clone(),
            alert: label.clone(),
        };
        match result {
            Ok(kind) => {
                tracing::debug!(canary = %workload, alert = %label, provider = %kind, "alert sent");
                ctx.metrics.alerts_sent.get_or_create(&labels).inc();
            }
            Err(err) => {
                tracing::warn!(canary = %workload, alert = %label, error = %err, "alert can't be sent");
                ctx.metrics.alert_failures.get_or_create(&labels).inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CanarySpec;

    fn dest(kind: &str) -> Destination {
        Destination {
            kind: kind.into(),
            url: "http://hooks.example/x".into(),
            channel: "general".into(),
            username: "flagger".into(),
            proxy: None,
            token: None,
        }
    }

    #[test]
    fn severity_floors() {
        use Severity::*;
        let cases = [
            (None, [true, true, true]),
            (Some(""), [true, true, true]),
            (Some("info"), [true, true, true]),
            (Some("warn"), [false, true, true]),
            (Some("error"), [false, false, true]),
        ];
        for (declared, want) in cases {
            let got = [Info, Warn, Error].map(|s| wanted(declared, s));
            assert_eq!(got, want, "{declared:?}");
        }
    }

    #[test]
    fn payload_shapes_are_flaggers() {
        let fields = vec![("Target".to_owned(), "Deployment/podinfo.test".to_owned())];
        let (url, slack) =
            payload(&dest("slack"), "podinfo.test", "done", &fields, Severity::Error).expect("slack");
        assert_eq!(url, "http://hooks.example/x");
        assert_eq!(slack["attachments"][0]["color"], "danger");
        assert_eq!(slack["attachments"][0]["author_name"], "podinfo.test");
        assert_eq!(slack["attachments"][0]["fields"][0]["title"], "Target");
        assert_eq!(
            (slack["channel"].as_str(), slack["username"].as_str()),
            (Some("general"), Some("flagger"))
        );
        let (url, discord) =
            payload(&dest("discord"), "podinfo.test", "wait", &[], Severity::Warn).expect("discord");
        assert_eq!(url, "http://hooks.example/x/slack");
        assert_eq!(discord["attachments"][0]["color"], "danger");
        let (_, teams) =
            payload(&dest("msteams"), "podinfo.test", "done", &fields, Severity::Info).expect("teams");
        assert_eq!(teams["@type"], "MessageCard");
        assert_eq!(teams["themeColor"], "0076D7");
        assert_eq!(teams["sections"][0]["facts"][0]["name"], "Target");
        let (_, rocket) =
            payload(&dest("rocket"), "podinfo.test", "done", &[], Severity::Error).expect("rocket");
        assert_eq!(rocket["attachments"][0]["color"], "#FF0000");
        let (_, gchat) =
            payload(&dest("gchat"), "podinfo.test", "done", &fields, Severity::Info).expect("gchat");
        assert_eq!(gchat["cards"][0]["header"]["subtitle"], "podinfo.test");
        assert_eq!(gchat["cards"][0]["sections"].as_array().map(Vec::len), Some(2));
        assert!(payload(&dest("pagerduty"), "x", "y", &[], Severity::Info).is_err());
    }

    #[test]
    fn metadata_fields_describe_the_routing() {
        let spec: CanarySpec = serde_json::from_value(json!({
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 80},
            "progressDeadlineSeconds": 60,
            "analysis": {"interval": "10s", "threshold": 5, "stepWeights": [1, 10, 50]}
        }))
        .expect("spec");
        let mut canary = Canary::new("podinfo", spec);
        canary.metadata.namespace = Some("test".into());
        assert_eq!(
            fields(&canary, Some("prod-eu"), true),
            [
                ("Cluster", "prod-eu"),
                ("Target", "Deployment/podinfo.test"),
                ("Failed checks threshold", "5"),
                ("Progress deadline", "60s"),
                ("Traffic routing", "Weight steps: 1,10,50 max: 0"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert_eq!(
            fields(&canary, Some("prod-eu"), false),
            [("Cluster".to_owned(), "prod-eu".to_owned())],
            "every alert names the cluster"
        );
        assert!(fields(&canary, None, false).is_empty());
    }
}
