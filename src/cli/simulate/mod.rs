//! `serin simulate CANARY`: replays a Canary's analysis over a past time range and prints each
//! step (time, weight, check values, decision) and where it would have promoted or rolled back.
//! The metric values come from Prometheus (range queries over the time range, `--record FILE`
//! keeps them) or from such a recording (`--recorded FILE`: deterministic, no cluster and no
//! Prometheus needed). The Canary and its MetricTemplates come from manifest files or from the
//! cluster (`canary/NAME`). Does I/O (files, Kubernetes API, Prometheus); the replay is
//! [`replay`]'s.

pub mod replay;

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use kube::{Api, Client};
use serde::Deserialize;

use crate::{
    analysis::{self, prometheus},
    api::{
        Canary, MetricTemplate,
        canary::{CanaryMetric, METRIC_REQUEST_DURATION, METRIC_REQUEST_SUCCESS_RATE},
    },
};
use replay::{Recording, Series};

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// The Canary: a manifest file or directory (holding the MetricTemplates it uses too), or
    /// `canary/NAME` to read it and its MetricTemplates from the cluster.
    pub canary: String,
    /// The Canary's namespace (default: the manifest's, else the kubeconfig context's, else
    /// `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The Prometheus of the builtin metrics and inline queries (default: the Canary's
    /// `metricsServer`). MetricTemplates use their own address.
    #[arg(long, conflicts_with = "recorded")]
    pub prometheus: Option<String>,
    /// Replay a recording made with `--record` instead of asking Prometheus.
    #[arg(long)]
    pub recorded: Option<PathBuf>,
    /// Write the values read from Prometheus to this file, for a deterministic replay later.
    #[arg(long, conflicts_with = "recorded")]
    pub record: Option<PathBuf>,
    /// When the new revision arrived: the start of the replay (RFC 3339 or Unix seconds; with a
    /// recording, default: the recording's).
    #[arg(long)]
    pub from: Option<String>,
    /// The end of the replay (default: now, or the recording's end).
    #[arg(long)]
    pub to: Option<String>,
    /// Print the replay as `json` or `yaml` instead of a table.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Json,
    Yaml,
}

/// A Canary with the MetricTemplates it may use.
struct Loaded {
    canary: Canary,
    templates: Vec<MetricTemplate>,
}

/// Runs `serin simulate`; `Err` is the message to print before exiting with 1.
pub async fn run(args: &SimulateArgs) -> Result<(), String> {
    let loaded = match args
        .canary
        .strip_prefix("canary/")
        .or_else(|| args.canary.strip_prefix("canaries/"))
    {
        Some(name) => from_cluster(name, args.namespace.as_deref()).await?,
        None => from_files(&PathBuf::from(&args.canary), args.namespace.as_deref())?,
    };
    let canary = &loaded.canary;
    let interval = canary.spec.analysis_interval().as_secs().max(1) as i64;
    let queries = queries(&loaded, args.prometheus.as_deref(), args.recorded.is_some())?;
    let (from, to, series) = match &args.recorded {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            let recording: Recording = serde_yaml::from_str(&text)
                .map_err(|e| format!("{}: not a recording: {e}", path.display()))?;
            check_recording(&recording, &queries, path)?;
            let from = args
                .from
                .as_deref()
                .map(time)
                .transpose()?
                .unwrap_or(recording.from);
            let to = args.to.as_deref().map(time).transpose()?.unwrap_or(recording.to);
            (from, to, recording.series)
        }
        None => {
            let from = time(
                args.from
                    .as_deref()
                    .ok_or("--from is needed (when the new revision arrived), or --recorded FILE")?,
            )?;
            let to = match args.to.as_deref() {
                Some(t) => time(t)?,
                None => jiff::Timestamp::now().as_second(),
            };
            if to < from {
                return Err(format!("--to ({to}) is before --from ({from})"));
            }
            let series = fetch(&queries, (from, to, interval)).await?;
            if let Some(path) = &args.record {
                let recording = Recording {
                    canary: replay_name(canary),
                    from,
                    to,
                    step: interval,
                    series: series.clone(),
                };
                let text = serde_yaml::to_string(&recording).map_err(|e| e.to_string())?;
                std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
            }
            (from, to, series)
        }
    };
    let replayed = replay::replay(canary, &series, from, to);
    match args.output {
        Some(Output::Json) => println!(
            "{}",
            serde_json::to_string_pretty(&replayed).map_err(|e| e.to_string())?
        ),
        Some(Output::Yaml) => print!("{}", serde_yaml::to_string(&replayed).map_err(|e| e.to_string())?),
        None => print!("{}", replay::text(&replayed)),
    }
    Ok(())
}

fn replay_name(canary: &Canary) -> String {
    format!(
        "{}.{}",
        canary.metadata.name.as_deref().unwrap_or_default(),
        canary.metadata.namespace.as_deref().unwrap_or_default()
    )
}

/// RFC 3339 or Unix seconds.
fn time(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(seconds);
    }
    text.parse::<jiff::Timestamp>()
        .map(|t| t.as_second())
        .map_err(|e| format!("{text:?} is neither RFC 3339 nor Unix seconds: {e}"))
}

/// The Canary (exactly one) and the MetricTemplates of the manifests under `path`.
fn from_files(path: &std::path::Path, namespace: Option<&str>) -> Result<Loaded, String> {
    let mut canaries = Vec::new();
    let mut templates = Vec::new();
    for file in super::lint::yaml_files(path).map_err(|e| format!("{}: {e}", path.display()))? {
        let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let value = serde_yaml::Value::deserialize(doc)
                .map_err(|e| format!("{} document {}: {e}", file.display(), i + 1))?;
            let kind = value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
                .to_owned();
            let named = |e: serde_yaml::Error| format!("{} document {} ({kind}): {e}", file.display(), i + 1);
            match kind.as_str() {
                "Canary" => canaries.push(serde_yaml::from_value::<Canary>(value).map_err(named)?),
                "MetricTemplate" => {
                    templates.push(serde_yaml::from_value::<MetricTemplate>(value).map_err(named)?)
                }
                _ => {}
            }
        }
    }
    let mut canary = match canaries.len() {
        1 => canaries.remove(0),
        0 => return Err(format!("no Canary in {}", path.display())),
        n => {
            let names: Vec<String> = canaries.iter().filter_map(|c| c.metadata.name.clone()).collect();
            return Err(format!(
                "{n} Canaries in {} ({}): give the file of one",
                path.display(),
                names.join(", ")
            ));
        }
    };
    let ns = namespace
        .map(str::to_owned)
        .or_else(|| canary.metadata.namespace.clone())
        .unwrap_or_else(|| "default".to_owned());
    canary.metadata.namespace = Some(ns);
    Ok(Loaded { canary, templates })
}

/// The Canary `name` and the MetricTemplates its metrics use, from the cluster.
async fn from_cluster(name: &str, namespace: Option<&str>) -> Result<Loaded, String> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| format!("no cluster configuration: {e}"))?;
    let ns = namespace
        .map(str::to_owned)
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| format!("cannot build a client: {e}"))?;
    let canary = Api::<Canary>::namespaced(client.clone(), &ns)
        .get_opt(name)
        .await
        .map_err(|e| format!("reading canary {name}: {e}"))?
        .ok_or_else(|| format!("canary {name:?} not found in namespace {ns:?}"))?;
    let mut templates = Vec::new();
    for metric in canary
        .spec
        .analysis
        .iter()
        .flat_map(|a| a.metrics.iter().flatten())
    {
        let Some(r) = &metric.template_ref else { continue };
        let template_ns = r.namespace.clone().unwrap_or_else(|| ns.clone());
        let template = Api::<MetricTemplate>::namespaced(client.clone(), &template_ns)
            .get(&r.name)
            .await
            .map_err(|e| format!("reading MetricTemplate {}.{template_ns}: {e}", r.name))?;
        templates.push(template);
    }
    Ok(Loaded { canary, templates })
}

/// A metric's Prometheus query, rendered as the controller renders it.
struct Query {
    metric: String,
    address: String,
    query: String,
    insecure: bool,
}

/// The queries of the metrics a replay checks (`recorded`: to compare with a recording, no
/// Prometheus needed).
fn queries(loaded: &Loaded, prometheus: Option<&str>, recorded: bool) -> Result<Vec<Query>, String> {
    let canary = &loaded.canary;
    let namespace = canary.metadata.namespace.clone().unwrap_or_default();
    let target = canary.spec.target_ref.name.clone();
    let server = prometheus
        .map(str::to_owned)
        .or_else(|| canary.spec.metrics_server.clone());
    let need_server = |metric: &CanaryMetric| {
        if recorded {
            return Ok(String::new());
        }
        server.clone().ok_or_else(|| {
            format!(
                "metric {}: no Prometheus to ask: give --prometheus URL (or set the Canary's metricsServer)",
                metric.name
            )
        })
    };
    let mut out = Vec::new();
    for metric in replay::threshold_metrics(canary) {
        let interval = analysis::metric_interval(metric);
        let (address, query, insecure) = if let Some(r) = &metric.template_ref {
            let template = loaded
                .templates
                .iter()
                .find(|t| t.metadata.name.as_deref() == Some(r.name.as_str()))
                .ok_or_else(|| format!("metric {}: MetricTemplate {} not found", metric.name, r.name))?;
            let provider = &template.spec.provider;
            if provider.type_ != "prometheus" {
                return Err(format!(
                    "metric {}: MetricTemplate {} uses provider {:?}; serin simulate replays prometheus",
                    metric.name, r.name, provider.type_
                ));
            }
            if provider.secret_ref.is_some() {
                return Err(format!(
                    "metric {}: MetricTemplate {} needs credentials (provider.secretRef), which serin simulate does not read",
                    metric.name, r.name
                ));
            }
            let model = analysis::render::Model::of(canary, metric, &target, &interval);
            let query = analysis::render::render(&template.spec.query, &model).map_err(|e| {
                format!(
                    "metric {}: MetricTemplate {} query render error: {e}",
                    metric.name, r.name
                )
            })?;
            let address = crate::controller::checks::template_address(template)
                .map_err(|e| format!("metric {}: MetricTemplate {}: {e}", metric.name, r.name))?;
            (address, query, provider.insecure_skip_verify.unwrap_or(false))
        } else if let Some(query) = &metric.query {
            (need_server(metric)?, query.clone(), false)
        } else if metric.name == METRIC_REQUEST_SUCCESS_RATE {
            (
                need_server(metric)?,
                analysis::success_rate_query(&namespace, &target, &interval),
                false,
            )
        } else if metric.name == METRIC_REQUEST_DURATION {
            (
                need_server(metric)?,
                analysis::duration_query(&namespace, &target, &interval),
                false,
            )
        } else {
            return Err(format!(
                "metric {}: no usable metrics template and query were configured",
                metric.name
            ));
        };
        out.push(Query {
            metric: metric.name.clone(),
            address,
            query: analysis::render::collapse_whitespace(&query),
            insecure,
        });
    }
    Ok(out)
}

/// A recording must hold every metric's series, recorded with the query the Canary asks now.
fn check_recording(recording: &Recording, queries: &[Query], path: &std::path::Path) -> Result<(), String> {
    for q in queries {
        match recording.series.iter().find(|s| s.metric == q.metric) {
            None => {
                return Err(format!(
                    "{} holds no values of metric {}: record again with --record",
                    path.display(),
                    q.metric
                ));
            }
            Some(s) if s.query != q.query => {
                return Err(format!(
                    "{} recorded metric {} with the query {:?}; the Canary asks {:?} now: record again with --record",
                    path.display(),
                    q.metric,
                    s.query,
                    q.query
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Each metric's values over the range, one per step.
async fn fetch(queries: &[Query], (from, to, step): (i64, i64, i64)) -> Result<Vec<Series>, String> {
    let clients = prometheus::Clients {
        verifying: reqwest::Client::new(),
        insecure: reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| e.to_string())?,
    };
    let mut out = Vec::new();
    for q in queries {
        let auth = prometheus::Auth {
            insecure_skip_verify: q.insecure,
            ..Default::default()
        };
        let values = prometheus::query_range(&clients, &q.address, &q.query, &auth, (from, to, step))
            .await
            .map_err(|e| format!("metric {}: asking {} for {:?}: {e}", q.metric, q.address, q.query))?;
        let times = (0..).map(|i| from + i * step);
        out.push(Series {
            metric: q.metric.clone(),
            query: q.query.clone(),
            values: times.zip(values).collect(),
        });
    }
    Ok(out)
}
