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
    pub written: Written,
    /// The generation of each Deployment serin last wrote (`namespace/name` -> UID and
    /// generation): readiness is never read from a cached copy older than serin's own write.
    pub deployment_generations: std::sync::Mutex<std::collections::HashMap<String, (String, i64)>>,
    /// The generation of each VirtualService serin last wrote and when (`namespace/name` -> UID,
    /// generation, time): within the staleness window, routes are never read from a cached copy
    /// older than serin's own write.
    pub route_generations:
        std::sync::Mutex<std::collections::HashMap<String, (String, i64, std::time::Instant)>>,
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

/// The status serin last wrote for each Canary (by UID), as a digest, and when.
#[derive(Debug, Default)]
pub struct Written(std::sync::Mutex<std::collections::HashMap<String, (u64, std::time::Instant)>>);

impl Written {
    /// How long serin trusts its own last status write over the cache (someone else may write
    /// the status too).
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(5);

    /// A digest of a status.
    pub fn digest(status: Option<&crate::api::CanaryStatus>) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_vec(&serde_json::to_value(status).unwrap_or_default())
            .unwrap_or_default()
            .hash(&mut hasher);
        hasher.finish()
    }

    /// Records a status serin wrote; forgets the writes older than the window.
    pub fn insert(&self, uid: String, status: &crate::api::CanaryStatus) {
        let mut written = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if written.len() >= 64 {
            written.retain(|_, (_, at)| at.elapsed() < Self::WINDOW);
        }
        written.insert(uid, (Self::digest(Some(status)), std::time::Instant::now()));
    }

    /// Whether a cached status differs from the one serin wrote within the window.
    pub fn differs(&self, uid: &str, cached: Option<&crate::api::CanaryStatus>) -> bool {
        let written = self.0.lock().unwrap_or_else(|p| p.into_inner());
        written
            .get(uid)
            .is_some_and(|(digest, at)| at.elapsed() < Self::WINDOW && *digest != Self::digest(cached))
    }

    pub fn remove(&self, uid: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(uid);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CanaryPhase, CanaryStatus};

    #[test]
    fn a_cached_status_differs_from_serins_write_only_within_the_window() {
        let written = Written::default();
        let mine = CanaryStatus {
            phase: CanaryPhase::Progressing,
            canary_weight: 50,
            ..Default::default()
        };
        let older = CanaryStatus {
            phase: CanaryPhase::Progressing,
            canary_weight: 0,
            ..Default::default()
        };
        assert!(
            !written.differs("uid", Some(&older)),
            "nothing written: nothing to wait for"
        );
        written.insert("uid".into(), &mine);
        assert!(written.differs("uid", Some(&older)));
        assert!(written.differs("uid", None));
        assert!(!written.differs("uid", Some(&mine)));
        assert!(!written.differs("other", Some(&older)));
        // An old write is trusted no longer.
        written.0.lock().expect("lock").get_mut("uid").expect("written").1 -= Written::WINDOW;
        assert!(!written.differs("uid", Some(&older)));
        written.remove("uid");
        assert!(written.0.lock().expect("lock").is_empty());
    }
}
