//! What every reconcile shares: the controller's configuration (the `serin run` flags), the
//! caches, the HTTP clients, serin's record of its own writes, and the error a reconcile ends
//! with. No I/O.

use std::sync::Arc;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Secret},
};
use kube::{Client, core::DeserializeGuard, runtime::reflector::Store};

use super::{alerts, metrics};
use crate::api::{Canary, istio::VirtualService};

/// How the controller runs (the `serin run` flags).
#[derive(Clone, Debug)]
pub struct Config {
    pub mesh_provider: String,
    pub metrics_server: String,
    pub selector_labels: Vec<String>,
    pub include_label_prefixes: Vec<String>,
    pub config_tracking: bool,
    pub namespace: Option<String>,
    /// Where events go when a Canary has no `event` webhooks (`--event-webhook`).
    pub event_webhook: Option<String>,
    /// Where alerts go when a Canary lists no alerts (`--slack-url`, `--msteams-url`).
    pub notifier: Option<alerts::Notifier>,
    /// Added to alert fields (`--cluster-name`).
    pub cluster_name: Option<String>,
    /// How many Canaries reconcile at once (0: no limit; `--max-concurrent-reconciles`).
    pub concurrency: u16,
}

/// Reconciles at once by default: enough that a few slow webhooks do not hold up the others,
/// few enough that ten thousand Canaries starting at once queue instead of all holding memory
/// and requests in flight.
pub const DEFAULT_CONCURRENCY: u16 = 64;

/// The caches reconciles read from.
#[derive(Clone, Debug)]
pub struct Stores {
    pub deployments: Store<Deployment>,
    pub configmaps: Store<ConfigMap>,
    pub secrets: Store<Secret>,
    pub virtual_services: Store<VirtualService>,
}

/// What a reconcile needs.
pub struct Context {
    pub client: Client,
    /// The Canaries, for `flagger_canary_total`.
    pub canaries: Store<DeserializeGuard<Canary>>,
    /// The Canaries by namespace, target and apex Service.
    pub canary_index: Arc<super::index::Index<DeserializeGuard<Canary>>>,
    /// The Deployments by the ConfigMaps and Secrets they use.
    pub deployment_index: Arc<super::index::Index<Deployment>>,
    /// Whole copies of the Deployments the cache holds as metadata only.
    pub shelf: Arc<super::shelf::Shelf>,
    pub config: Config,
    pub stores: Stores,
    pub metrics: metrics::Metrics,
    pub http: reqwest::Client,
    /// Set once the Deployment, ConfigMap, Secret and VirtualService caches hold their first list.
    pub caches_filled: Arc<std::sync::atomic::AtomicBool>,
    /// The status serin last wrote for each Canary (by UID) and when: a cached Canary that does
    /// not show it yet is stale.
    pub written: std::sync::Mutex<std::collections::HashMap<String, (serde_json::Value, std::time::Instant)>>,
    /// The generation of each Deployment serin last wrote (`namespace/name` -> UID and
    /// generation): readiness is never read from a cached copy older than serin's own write.
    pub deployment_generations: std::sync::Mutex<std::collections::HashMap<String, (String, i64)>>,
    /// Retry delays of the Canaries whose last reconcile failed (by UID).
    pub backoffs: serin_runtime::backoff::Backoffs,
    pub insecure_http: reqwest::Client,
    /// Test hooks on (`SERIN_TEST_HOOKS`; never in production).
    pub test_hooks: bool,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Errors a reconcile ends with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An action failed; the kind tells a conflict from a refusal.
    #[error("{0}")]
    Act(serin_runtime::api_error::Failure),
    /// The engine broke one of its own rules (a bug): reported, and retried with backoff.
    #[error("{0}")]
    Decide(String),
    #[error("writing the status failed: {0}")]
    Status(#[source] kube::Error),
    /// The reconcile panicked; caught for this Canary alone.
    #[error("reconcile panicked: {0}")]
    Panicked(String),
}

impl Error {
    /// Bounded name for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Act(_) => "Act",
            Self::Decide(_) => "Decide",
            Self::Status(_) => "Status",
            Self::Panicked(_) => "Panicked",
        }
    }

    /// The kind of API failure, when the reconcile ended on one.
    pub fn api_kind(&self) -> Option<serin_runtime::api_error::Kind> {
        match self {
            Self::Act(failure) => Some(failure.kind),
            Self::Status(err) => Some(serin_runtime::api_error::Kind::of(err)),
            Self::Decide(_) | Self::Panicked(_) => None,
        }
    }
}
