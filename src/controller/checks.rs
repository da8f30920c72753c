//! Running the checks the engine asks for: webhooks of each type (Flagger's payload, any 2xx
//! passes) and the analysis (rollout webhooks, builtin and template metrics against Prometheus),
//! turned into [`CheckResult`]s with Flagger's event texts. Does I/O (HTTP).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::json;

use super::Context;
use crate::{
    analysis::{self, prometheus},
    api::{
        Canary, MetricTemplate,
        canary::{
            CanaryMetric, CanaryPhase, CanaryWebhook, CheckStatus, METRIC_REQUEST_DURATION,
            METRIC_REQUEST_SUCCESS_RATE,
        },
    },
    engine::{Check, CheckResult, Event, revision},
};

/// The payload's checksum of what the Canary is analysing.
pub fn checksum(canary: &Canary) -> String {
    let status = canary.status.clone().unwrap_or_default();
    revision::template_hash(
        &json!({"trackedConfigs": status.tracked_configs, "lastAppliedSpec": status.last_applied_spec}),
    )
}

/// Calls one webhook: `Ok` on any 2xx, else the reason.
pub async fn call(
    ctx: &Context,
    canary: &Canary,
    hook: &CanaryWebhook,
    phase: CanaryPhase,
) -> Result<(), String> {
    let payload = json!({
        "name": canary.metadata.name,
        "namespace": canary.metadata.namespace,
        "phase": phase.as_str(),
        "checksum": checksum(canary),
        "metadata": hook.metadata.clone().unwrap_or_default(),
    });
    let client = if hook.disable_tls.unwrap_or(false) {
        &ctx.insecure_http
    } else {
        &ctx.http
    };
    post(
        client,
        &hook.url,
        hook.timeout(),
        hook.retries.unwrap_or(0),
        &payload,
    )
    .await
}

/// The first wait before retrying a webhook; each further retry waits twice as long.
const RETRY_WAIT_MIN: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest wait between two webhook attempts.
const RETRY_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(30);
/// The longest `Retry-After` serin honours (a hook cannot hold a Canary for longer per retry).
const RETRY_AFTER_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// The wait before retry number `retry` (0 for the first), as Flagger's HTTP client
/// (go-retryablehttp) computes it: a 429 or 503 answer's `Retry-After` seconds, else 1 s doubling
/// up to 30 s.
pub fn retry_wait(retry: u32, status: Option<u16>, retry_after: Option<&str>) -> std::time::Duration {
    if matches!(status, Some(429 | 503))
        && let Some(seconds) = retry_after.and_then(|v| v.trim().parse::<u64>().ok())
    {
        return std::time::Duration::from_secs(seconds).min(RETRY_AFTER_MAX);
    }
    RETRY_WAIT_MIN
        .saturating_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX))
        .min(RETRY_WAIT_MAX)
}

/// Whether an answer is worth another attempt (go-retryablehttp's policy): 429 and 5xx, but not
/// 501 Not Implemented.
fn retried(code: u16) -> bool {
    code == 429 || (500..600).contains(&code) && code != 501
}

/// POSTs a webhook payload: `Ok` on any 2xx status (Flagger accepts only 200-202), else the
/// response body or the transport error. Transport errors, 429 and 5xx answers (but 501) are
/// retried `retries` times, with Flagger's backoff; when none is left the error says
/// `POST <url> giving up after N attempt(s)` and what the last one got.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    timeout: std::time::Duration,
    retries: i32,
    payload: &serde_json::Value,
) -> Result<(), String> {
    let attempts = u32::try_from(retries.max(0)).unwrap_or(0).saturating_add(1);
    let mut last = String::new();
    let mut wait = RETRY_WAIT_MIN;
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(wait).await;
        }
        match client.post(url).timeout(timeout).json(payload).send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => {
                let code = response.status();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = response.text().await.unwrap_or_default();
                if !retried(code.as_u16()) {
                    return Err(if body.trim().is_empty() {
                        format!("{code}")
                    } else {
                        body.trim().to_owned()
                    });
                }
                last = if body.trim().is_empty() {
                    format!("{code}")
                } else {
                    format!("{code}: {}", body.trim())
                };
                wait = retry_wait(attempt, Some(code.as_u16()), retry_after.as_deref());
            }
            Err(err) => {
                last = if err.is_timeout() {
                    format!("timed out after {timeout:?}")
                } else {
                    err.to_string()
                };
                wait = retry_wait(attempt, None, None);
            }
        }
    }
    Err(format!(
        "POST {url} giving up after {attempts} attempt(s): {last}"
    ))
}

fn hooks<'a>(canary: &'a Canary, kind: &str) -> Vec<&'a CanaryWebhook> {
    canary
        .spec
        .analysis
        .as_ref()
        .and_then(|a| a.webhooks.as_ref())
        .map(|hs| hs.iter().filter(|h| h.hook_type() == kind).collect())
        .unwrap_or_default()
}

/// A gate's webhook type and the words of its events.
fn gate(check: Check) -> (&'static str, &'static str) {
    match check {
        Check::ConfirmRollout => ("confirm-rollout", "Confirm-rollout"),
        Check::PreRollout => ("pre-rollout", "Pre-rollout"),
        Check::ConfirmTrafficIncrease => ("confirm-traffic-increase", "Confirm-traffic-increase"),
        _ => ("confirm-promotion", "Confirm-promotion"),
    }
}

/// Flagger's halt text for a failed gate.
fn halt(check: Check, canary: &str, hook: &str, err: &str) -> String {
    match check {
        Check::ConfirmRollout => format!("Halt {canary} advancement waiting for approval {hook}"),
        Check::PreRollout => format!("Halt {canary} advancement pre-rollout check {hook} failed {err}"),
        Check::ConfirmTrafficIncrease => {
            format!("Halt {canary} advancement waiting for traffic increase approval {hook}")
        }
        _ => format!("Halt {canary} advancement waiting for promotion approval {hook}"),
    }
}

/// Runs a check.
pub async fn run(ctx: &Context, canary: &Canary, check: Check) -> CheckResult {
    let name = format!(
        "{}.{}",
        canary.metadata.name.as_deref().unwrap_or_default(),
        canary.metadata.namespace.as_deref().unwrap_or_default()
    );
    let phase = canary.status.as_ref().map(|s| s.phase).unwrap_or_default();
    match check {
        Check::Rollback => return rollback_hooks(ctx, canary, phase).await,
        Check::Analysis => return analysis(ctx, canary).await.0,
        Check::Comparisons => return comparisons(ctx, canary).await.0,
        Check::MetricProviders => {
            return match metric_providers(ctx, canary).await {
                Ok(()) => {
                    CheckResult::Passed(vec![Event::normal("all the metrics providers are available!")])
                }
                Err(err) => CheckResult::Failed(vec![Event::warning(format!(
                    "Error checking metric providers: {err}"
                ))]),
            };
        }
        _ => {}
    }
    let (kind, label) = gate(check);
    let payload_phase = if check == Check::ConfirmRollout {
        phase
    } else {
        CanaryPhase::Progressing
    };
    let mut events = Vec::new();
    for hook in hooks(canary, kind) {
        match call(ctx, canary, hook, payload_phase).await {
            Ok(()) => events.push(Event::normal(format!("{label} check {} passed", hook.name))),
            Err(err) => {
                events.push(Event::warning(halt(check, &name, &hook.name, &err)));
                return CheckResult::Failed(events);
            }
        }
    }
    CheckResult::Passed(events)
}

/// A rollback hook that answers 2xx asks for a rollback ("passes").
async fn rollback_hooks(ctx: &Context, canary: &Canary, phase: CanaryPhase) -> CheckResult {
    let mut events = Vec::new();
    for hook in hooks(canary, "rollback") {
        if call(ctx, canary, hook, phase).await.is_ok() {
            events.push(Event::warning(format!("Rollback check {} passed", hook.name)));
            return CheckResult::Passed(events);
        }
        events.push(Event::normal(format!(
            "Rollback hook {} not signaling a rollback",
            hook.name
        )));
    }
    CheckResult::Failed(events)
}

/// The comparisons with the primary alone, between analysis ticks: `Worse` (with the check
/// explained) as soon as one shows the canary worse; anything else, a hold or a failed query
/// included, waits for the next tick, which judges it.
pub async fn comparisons(ctx: &Context, canary: &Canary) -> (CheckResult, Vec<CheckStatus>) {
    let now = jiff::Timestamp::now().as_second();
    for (metric, compare) in super::compare::compared(canary) {
        match super::compare::look(ctx, canary, metric, compare, now).await {
            Ok((super::compare::Outcome::Worse(message), looked)) => {
                return (CheckResult::Worse(vec![Event::warning(message)]), vec![looked]);
            }
            Ok(_) => {}
            Err(message) => {
                tracing::debug!(canary = %canary.metadata.name.as_deref().unwrap_or_default(), %message, "a comparison between ticks failed; the next tick retries it");
            }
        }
    }
    (CheckResult::Passed(Vec::new()), Vec::new())
}

/// Rollout webhooks, then builtin and inline metrics, then template metrics; the first failure
/// decides. Each check that ran is explained for the status, in order.
pub async fn analysis(ctx: &Context, canary: &Canary) -> (CheckResult, Vec<CheckStatus>) {
    let name = format!(
        "{}.{}",
        canary.metadata.name.as_deref().unwrap_or_default(),
        canary.metadata.namespace.as_deref().unwrap_or_default()
    );
    let now = jiff::Timestamp::now();
    let time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
    let mut explained = Vec::new();
    let record = |name: String, check: &str, verdict: &str, message: String| CheckStatus {
        name,
        check: check.into(),
        verdict: verdict.into(),
        message,
        time: time.clone(),
        ..Default::default()
    };
    for hook in hooks(canary, "rollout") {
        let called = call(ctx, canary, hook, CanaryPhase::Progressing).await;
        let hook_name = format!("webhook/{}", hook.name);
        if let Err(err) = called {
            let message = format!(
                "Halt {name} advancement external check {} failed {err}",
                hook.name
            );
            explained.push(record(hook_name, "webhook", "fail", message.clone()));
            return (CheckResult::Failed(vec![Event::warning(message)]), explained);
        }
        let message = format!("External check {} passed", hook.name);
        explained.push(record(hook_name, "webhook", "pass", message));
    }
    let metrics = canary
        .spec
        .analysis
        .as_ref()
        .and_then(|a| a.metrics.clone())
        .unwrap_or_default();
    let (templated, direct): (Vec<&CanaryMetric>, Vec<&CanaryMetric>) =
        metrics.iter().partition(|m| m.template_ref.is_some());
    let mut held = Vec::new();
    for metric in direct.into_iter().chain(templated) {
        if let Some(compare) = &metric.compare {
            match super::compare::look(ctx, canary, metric, compare, now.as_second()).await {
                Ok((outcome, looked)) => {
                    explained.push(looked);
                    match outcome {
                        super::compare::Outcome::Pass(_) => {}
                        super::compare::Outcome::Hold(message) => held.push(Event::normal(message)),
                        super::compare::Outcome::Worse(message) => {
                            return (CheckResult::Worse(vec![Event::warning(message)]), explained);
                        }
                        super::compare::Outcome::Fail(message) => {
                            return (CheckResult::Failed(vec![Event::warning(message)]), explained);
                        }
                    }
                }
                Err(message) => {
                    let mut failed = record(metric.name.clone(), "comparison", "error", message.clone());
                    failed.bound = "the primary".into();
                    explained.push(failed);
                    return (CheckResult::Failed(vec![Event::warning(message)]), explained);
                }
            }
            // Without a bound of its own, the comparison alone judges the metric.
            let bounded = metric.threshold_range.is_some() || metric.threshold.is_some();
            if !bounded {
                continue;
            }
        }
        let mut explanation = record(metric.name.clone(), "threshold", "pass", String::new());
        explanation.bound = analysis::bound(metric);
        let value = match measure(ctx, canary, metric).await {
            Ok(value) => value,
            Err(event) => {
                explanation.verdict = "error".into();
                explanation.message = event.message.clone();
                explained.push(explanation);
                return (CheckResult::Failed(vec![event]), explained);
            }
        };
        explanation.canary = Some(value).filter(|v| v.is_finite());
        if let Some(halt) = analysis::verdict(&name, metric, value) {
            explanation.verdict = "fail".into();
            explanation.message = halt.clone();
            explained.push(explanation);
            return (CheckResult::Failed(vec![Event::warning(halt)]), explained);
        }
        explanation.message = format!("{} of {name} is {value:.2} ({})", metric.name, explanation.bound);
        explained.push(explanation);
    }
    let result = if held.is_empty() {
        CheckResult::Passed(Vec::new())
    } else {
        CheckResult::Held(held)
    };
    (result, explained)
}

/// A metric's value from its Prometheus (recorded in `flagger_canary_metric_analysis`), or the
/// event saying why there is none, in Flagger's words.
async fn measure(ctx: &Context, canary: &Canary, metric: &CanaryMetric) -> Result<f64, Event> {
    let namespace = canary.metadata.namespace.clone().unwrap_or_default();
    let target = canary.spec.target_ref.name.clone();
    let server = canary
        .spec
        .metrics_server
        .clone()
        .unwrap_or_else(|| ctx.config.metrics_server.clone());
    let interval = metric
        .interval
        .clone()
        .unwrap_or_else(|| analysis::DEFAULT_INTERVAL.to_owned());
    let (address, query, auth, builtin) = if let Some(template_ref) = &metric.template_ref {
        let (address, query, auth) = template_query(ctx, canary, metric, template_ref, &target, &interval)
            .await
            .map_err(Event::warning)?;
        (address, query, auth, false)
    } else if let Some(query) = &metric.query {
        (server.clone(), query.clone(), prometheus::Auth::default(), false)
    } else {
        match metric.name.as_str() {
            METRIC_REQUEST_SUCCESS_RATE => (
                server.clone(),
                analysis::success_rate_query(&namespace, &target, &interval),
                prometheus::Auth::default(),
                true,
            ),
            METRIC_REQUEST_DURATION => (
                server.clone(),
                analysis::duration_query(&namespace, &target, &interval),
                prometheus::Auth::default(),
                true,
            ),
            _ => {
                return Err(Event::warning(
                    "Metric query failed for no usable metrics template and query were configured",
                ));
            }
        }
    };
    let query = analysis::render::collapse_whitespace(&query);
    let value = match prometheus::query(&ctx.prometheus(), &address, &query, &auth).await {
        Ok(v) => v,
        Err(prometheus::QueryError::NoValues) => {
            return Err(Event::warning(analysis::no_values(metric, &target, &namespace)));
        }
        Err(err) if builtin => return Err(Event::warning(format!("Prometheus query failed: {err}"))),
        Err(err) => {
            return Err(Event::warning(format!(
                "Metric query failed for {}: {err}",
                metric.name
            )));
        }
    };
    let recorded = if metric.name == METRIC_REQUEST_DURATION && builtin {
        value / 1000.0
    } else {
        value
    };
    ctx.metrics
        .analysis
        .get_or_create(&super::metrics::MetricLabels {
            name: target.clone(),
            namespace: namespace.clone(),
            metric: metric.name.clone(),
        })
        .set(recorded);
    Ok(value)
}

/// A MetricTemplate's query rendered for `target` (the Canary's target, or its `-primary` for a
/// comparison) over `interval`, with the Prometheus to ask and its credentials; `Err` is the
/// event's text, in Flagger's words.
pub(super) async fn template_query(
    ctx: &Context,
    canary: &Canary,
    metric: &CanaryMetric,
    template_ref: &crate::api::canary::CrossNamespaceRef,
    target: &str,
    interval: &str,
) -> Result<(String, String, prometheus::Auth), String> {
    let namespace = canary.metadata.namespace.clone().unwrap_or_default();
    let template_ns = template_ref
        .namespace
        .clone()
        .unwrap_or_else(|| namespace.clone());
    let named = format!("Metric template {}.{template_ns}", template_ref.name);
    let api: Api<MetricTemplate> = Api::namespaced(ctx.client.clone(), &template_ns);
    let template = api
        .get(&template_ref.name)
        .await
        .map_err(|e| format!("{named} error: {e}"))?;
    let provider = &template.spec.provider.type_;
    if provider != "prometheus" {
        return Err(format!(
            "{named} uses provider {provider:?}, which serin does not implement (it implements prometheus)"
        ));
    }
    let model = analysis::render::Model::of(canary, metric, target, interval);
    let query = analysis::render::render(&template.spec.query, &model)
        .map_err(|e| format!("{named} query render error: {e}"))?;
    let auth = template_auth(ctx, &template, &template_ns)
        .await
        .map_err(|e| format!("{named} secret error: {e}"))?;
    let address =
        template_address(&template).map_err(|e| format!("{named} provider {provider} error: {e}"))?;
    Ok((address, query, auth))
}

async fn template_auth(
    ctx: &Context,
    template: &MetricTemplate,
    namespace: &str,
) -> Result<prometheus::Auth, String> {
    let provider = &template.spec.provider;
    let mut auth = prometheus::Auth {
        insecure_skip_verify: provider.insecure_skip_verify.unwrap_or(false),
        headers: provider
            .headers
            .clone()
            .unwrap_or_default()
            .into_iter()
            .flat_map(|(k, vs)| vs.into_iter().map(move |v| (k.clone(), v)))
            .collect(),
        ..Default::default()
    };
    let Some(secret_ref) = &provider.secret_ref else {
        return Ok(auth);
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = api.get(&secret_ref.name).await.map_err(|e| e.to_string())?;
    let data: BTreeMap<String, String> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    if let Some(token) = data.get("token") {
        auth.bearer = Some(token.clone());
    } else if let (Some(u), Some(p)) = (data.get("username"), data.get("password")) {
        auth.basic = Some((u.clone(), p.clone()));
    } else {
        return Err(format!(
            "secret {}.{namespace} has neither a token nor a username and password",
            secret_ref.name
        ));
    }
    Ok(auth)
}

/// Flagger's `checkMetricProviderAvailability`: every Prometheus the metrics use answers
/// `vector(1)` with 1 (the Canary's or `--metrics-server` for builtin metrics, the template's for
/// template metrics).
async fn metric_providers(ctx: &Context, canary: &Canary) -> Result<(), String> {
    const ONLINE_QUERY: &str = "vector(1)";
    let online = |address: String, auth: prometheus::Auth| async move {
        match prometheus::query(&ctx.prometheus(), &address, ONLINE_QUERY, &auth).await {
            Ok(1.0) => Ok(()),
            Ok(_) => Err(format!("value is not 1 for query: {ONLINE_QUERY}")),
            Err(e) => Err(format!("running query failed: {e}")),
        }
    };
    let namespace = canary.metadata.namespace.clone().unwrap_or_default();
    let metrics = canary
        .spec
        .analysis
        .as_ref()
        .and_then(|a| a.metrics.clone())
        .unwrap_or_default();
    for metric in &metrics {
        if metric.template_ref.is_none()
            && matches!(
                metric.name.as_str(),
                METRIC_REQUEST_SUCCESS_RATE | METRIC_REQUEST_DURATION
            )
        {
            let server = canary
                .spec
                .metrics_server
                .clone()
                .unwrap_or_else(|| ctx.config.metrics_server.clone());
            online(server, prometheus::Auth::default())
                .await
                .map_err(|e| format!("prometheus not avaiable: {e}"))?;
            continue;
        }
        let Some(template_ref) = &metric.template_ref else {
            continue;
        };
        let template_ns = template_ref
            .namespace
            .clone()
            .unwrap_or_else(|| namespace.clone());
        let api: Api<MetricTemplate> = Api::namespaced(ctx.client.clone(), &template_ns);
        let template = api
            .get(&template_ref.name)
            .await
            .map_err(|e| format!("metric template {}.{template_ns} error: {e}", template_ref.name))?;
        let provider = &template.spec.provider.type_;
        if provider != "prometheus" {
            continue;
        }
        let address = template_address(&template).map_err(|e| {
            format!(
                "metric template {}.{template_ns} provider {provider} error: {e}",
                template_ref.name
            )
        })?;
        let auth = template_auth(ctx, &template, &template_ns).await.map_err(|e| {
            format!(
                "metric template {}.{template_ns} secret error: {e}",
                template_ref.name
            )
        })?;
        online(address, auth).await.map_err(|e| {
            format!(
                "{provider} in metric template {}.{template_ns} not avaiable: {e}",
                template_ref.name
            )
        })?;
    }
    Ok(())
}

/// The Prometheus a MetricTemplate names. As in Flagger, a template must name one:
/// `--metrics-server` serves builtin and inline metrics only.
pub fn template_address(template: &MetricTemplate) -> Result<String, String> {
    let provider = &template.spec.provider;
    let address = provider.address.as_deref().unwrap_or_default();
    match url::Url::parse(address) {
        Ok(_) => Ok(address.to_owned()),
        Err(_) => Err(format!("{} address {address} is not a valid URL", provider.type_)),
    }
}

/// Runs the post-rollout webhooks; events say how they went (the first failure stops the rest).
pub async fn post_rollout(ctx: &Context, canary: &Canary, phase: CanaryPhase) -> Vec<Event> {
    let mut events = Vec::new();
    for hook in hooks(canary, "post-rollout") {
        match call(ctx, canary, hook, phase).await {
            Ok(()) => events.push(Event::normal(format!("Post-rollout check {} passed", hook.name))),
            Err(err) => {
                events.push(Event::warning(format!(
                    "Post-rollout hook {} failed {err}",
                    hook.name
                )));
                break;
            }
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A one-shot HTTP server answering every request with `status` and `body`.
    async fn server(status: &'static str, body: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = vec![0u8; 8192];
                let _ = stream.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        format!("http://{addr}/")
    }

    #[tokio::test]
    async fn any_2xx_passes_and_failures_carry_the_body() {
        serin_runtime::tls::install_crypto_provider();
        let client = reqwest::Client::builder().no_proxy().build().expect("client");
        let payload = json!({"name": "podinfo"});
        for status in [
            "200 OK",
            "202 Accepted",
            "203 Non-Authoritative Information",
            "204 No Content",
        ] {
            let url = server(status, "").await;
            assert_eq!(
                post(&client, &url, Duration::from_secs(5), 0, &payload).await,
                Ok(()),
                "{status}"
            );
        }
        let url = server("403 Forbidden", "Forbidden").await;
        assert_eq!(
            post(&client, &url, Duration::from_secs(5), 0, &payload).await,
            Err("Forbidden".into())
        );
        let url = server("500 Internal Server Error", "").await;
        assert_eq!(
            post(&client, &url, Duration::from_secs(5), 1, &payload).await,
            Err(format!(
                "POST {url} giving up after 2 attempt(s): 500 Internal Server Error"
            ))
        );
        // 501 is not retried, and its body is the reason.
        let url = server("501 Not Implemented", "no such gate").await;
        let started = std::time::Instant::now();
        assert_eq!(
            post(&client, &url, Duration::from_secs(5), 3, &payload).await,
            Err("no such gate".into())
        );
        assert!(started.elapsed() < Duration::from_secs(1), "no retry wait");
    }

    #[test]
    fn a_template_without_an_address_fails_as_in_flagger() {
        let template = |address: Option<&str>| -> MetricTemplate {
            serde_json::from_value(json!({
                "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
                "metadata": {"name": "latency"},
                "spec": {"provider": {"type": "prometheus", "address": address}, "query": "up"},
            }))
            .expect("template")
        };
        assert_eq!(
            template_address(&template(Some("http://prom:9090"))),
            Ok("http://prom:9090".into())
        );
        assert_eq!(
            template_address(&template(None)),
            Err("prometheus address  is not a valid URL".into())
        );
        assert!(template_address(&template(Some("not a url"))).is_err());
    }

    #[test]
    fn retries_back_off_as_flaggers_client_does() {
        let waits: Vec<u64> = (0..7).map(|r| retry_wait(r, Some(500), None).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(retry_wait(40, None, None), Duration::from_secs(30), "no overflow");
        assert_eq!(retry_wait(0, Some(429), Some("7")), Duration::from_secs(7));
        assert_eq!(retry_wait(3, Some(503), Some(" 2 ")), Duration::from_secs(2));
        assert_eq!(
            retry_wait(0, Some(503), Some("86400")),
            Duration::from_secs(60),
            "capped"
        );
        assert_eq!(
            retry_wait(1, Some(500), Some("7")),
            Duration::from_secs(2),
            "only 429 and 503"
        );
        assert_eq!(retry_wait(1, Some(429), Some("soon")), Duration::from_secs(2));
        assert!(retried(502) && retried(429) && !retried(501) && !retried(404));
    }
}
