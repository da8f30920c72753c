//! `serin run`: connects to the cluster, checks that serin's CRDs are installed, starts the admin
//! server (and leader election when asked), and watches Canaries.
//!
//! This build observes Canaries and reports them (logs, `/metrics`, readiness); it does not act on
//! them yet: the canary engine is a separate component that plugs into this loop.

use std::time::Duration;

use clap::Args;
use futures::TryStreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Api, Client, Config,
    core::DeserializeGuard,
    runtime::{WatchStreamExt, reflector, watcher},
};
use prometheus_client::{metrics::gauge::Gauge, registry::Registry};
use serin_runtime::{
    admin::{self, AdminState},
    args::{RuntimeArgs, TelemetryArgs},
    leader::{LeaderElector, LeaseTiming},
    shutdown::Shutdown,
};

use crate::api::{self, Canary};

/// How long `serin run` waits for the API server before giving up at start-up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The Lease that replicas of serin elect a leader on.
pub const LEASE_NAME: &str = "serin-leader-election";

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "SERIN_NAMESPACE")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// Why `serin run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot load the Kubernetes client configuration (kubeconfig or in-cluster): {0}")]
    Config(#[source] kube::config::InferConfigError),
    #[error("cannot create the Kubernetes client for {server}: {source}")]
    Client { server: String, source: kube::Error },
    #[error("cannot reach the Kubernetes API server at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    #[error(
        "CRD {name} is not installed in the cluster at {server}; install serin's CRDs with `kubectl apply -f crds/` (or `serin crd | kubectl apply -f -`)"
    )]
    MissingCrd { name: String, server: String },
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[error("the Canary watch ended: {0}")]
    Watch(#[from] watcher::Error),
}

impl RunError {
    /// Bounded name for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Config(_) => "Config",
            Self::Client { .. } => "Client",
            Self::Unreachable { .. } => "Unreachable",
            Self::MissingCrd { .. } => "MissingCrd",
            Self::Admin(_) => "Admin",
            Self::Watch(_) => "Watch",
        }
    }
}

/// Connects, checks the CRDs, then serves until SIGTERM/SIGINT.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let client = connect().await?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signal();

    let mut registry = Registry::with_prefix("serin");
    let canaries_gauge = Gauge::<i64>::default();
    registry.register(
        "watched_canaries",
        "Canaries in the controller's cache",
        canaries_gauge.clone(),
    );
    let invalid_gauge = Gauge::<i64>::default();
    registry.register(
        "invalid_canaries",
        "Canaries that could not be read",
        invalid_gauge.clone(),
    );
    let state = AdminState::new(registry);
    let listener = admin::bind(args.runtime.admin_addr).await?;
    tracing::info!(addr = %listener.local_addr().map_or_else(|_| args.runtime.admin_addr.to_string(), |a| a.to_string()), "admin server listening");
    let admin_task = tokio::spawn(admin::serve(listener, state.clone(), shutdown.clone()));

    if args.runtime.leader_elect {
        let namespace = args
            .runtime
            .leader_election_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".to_owned());
        let identity = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| format!("serin-{}", std::process::id()));
        let elector = LeaderElector::new(
            client.clone(),
            &namespace,
            LEASE_NAME,
            &identity,
            LeaseTiming::default(),
        );
        let (mut leading, _) = elector.spawn(shutdown.clone());
        tracing::info!(%namespace, %identity, "waiting to become leader");
        tokio::select! {
            _ = leading.wait_for(|l| *l) => {}
            () = shutdown.wait() => return Ok(()),
        }
    }

    let canaries: Api<DeserializeGuard<Canary>> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (reader, writer) = reflector::store();
    tracing::info!(
        namespace = args.namespace.as_deref().unwrap_or("(all)"),
        "watching Canaries (observe only: this build does not run canary analyses)"
    );
    let watch = reflector(writer, watcher(canaries, watcher::Config::default()))
        .default_backoff()
        .try_for_each(|event| {
            let reader = reader.clone();
            let (canaries_gauge, invalid_gauge) = (canaries_gauge.clone(), invalid_gauge.clone());
            async move {
                match &event {
                    watcher::Event::Apply(guard) | watcher::Event::InitApply(guard) => log_observed(guard),
                    watcher::Event::Delete(guard) => {
                        tracing::info!(canary = %object_name(&guard_meta(guard)), "Canary deleted");
                    }
                    watcher::Event::Init | watcher::Event::InitDone => {}
                }
                // The store is updated before the event is passed on (after InitDone for a relist).
                let all = reader.state();
                canaries_gauge.set(all.len() as i64);
                invalid_gauge.set(all.iter().filter(|g| g.0.is_err()).count() as i64);
                Ok(())
            }
        });
    let ready = {
        let reader = reader.clone();
        let state = state.clone();
        async move {
            if reader.wait_until_ready().await.is_ok() {
                state.set_ready(true);
                tracing::info!("Canary cache synced; ready");
            }
        }
    };
    tokio::spawn(ready);
    let result = tokio::select! {
        r = watch => r.map_err(RunError::from),
        () = shutdown.wait() => Ok(()),
    };
    shutdown.trigger();
    state.set_ready(false);
    let _ = admin_task.await;
    result
}

/// Builds the client and proves the API server answers, then checks the CRDs.
async fn connect() -> Result<Client, RunError> {
    let mut config = Config::infer().await.map_err(RunError::Config)?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|source| RunError::Client {
        server: server.clone(),
        source,
    })?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in api::crds() {
        let name = crd.metadata.name.unwrap_or_default();
        let found = tokio::time::timeout(CONNECT_TIMEOUT, crds.get_opt(&name))
            .await
            .map_err(|_| RunError::Unreachable {
                server: server.clone(),
                reason: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
            })?
            .map_err(|err| match err {
                kube::Error::Api(status) => RunError::Unreachable {
                    server: server.clone(),
                    reason: format!("reading CRD {name} failed: {} ({})", status.message, status.code),
                },
                other => RunError::Unreachable {
                    server: server.clone(),
                    reason: error_chain(&other),
                },
            })?;
        if found.is_none() {
            return Err(RunError::MissingCrd {
                name,
                server: server.clone(),
            });
        }
    }
    tracing::info!(%server, "connected; serin's CRDs are installed");
    Ok(client)
}

/// An error with its causes, `outer: inner: innermost`, skipping causes that repeat their parent.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn guard_meta(guard: &DeserializeGuard<Canary>) -> ObjectMeta {
    match &guard.0 {
        Ok(canary) => canary.metadata.clone(),
        Err(invalid) => invalid.metadata.clone(),
    }
}

fn object_name(meta: &ObjectMeta) -> String {
    format!(
        "{}.{}",
        meta.name.as_deref().unwrap_or_default(),
        meta.namespace.as_deref().unwrap_or_default()
    )
}

fn log_observed(guard: &DeserializeGuard<Canary>) {
    match &guard.0 {
        Ok(canary) => tracing::info!(
            canary = %object_name(&canary.metadata),
            phase = %canary.status.as_ref().map(|s| s.phase.as_str()).unwrap_or(""),
            "observed Canary"
        ),
        Err(invalid) => tracing::warn!(
            canary = %object_name(&invalid.metadata),
            error = %invalid.error,
            "Canary cannot be read"
        ),
    }
}
