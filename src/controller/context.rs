//! What every reconcile shares: the controller's configuration (the `serin run` flags), the
//! caches, the HTTP clients, serin's record of its own writes, and the error a reconcile ends
//! with. No I/O.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Client, core::DeserializeGuard, runtime::reflector::Store};

use super::{alerts, metrics, slim::PackedDeployment};
use crate::api::{Canary, CanaryAction, istio::VirtualService};

/// How the controller runs (the `serin run` flags).
#[derive(Clone, Debug)]
pub struct Config {
    pub mesh_provider: String,
    pub metrics_server: String,
    /// The windows comparisons with the primary count in (`--comparison-window`).
    pub comparison_window: std::time::Duration,
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
    pub deployments: Store<PackedDeployment>,
    pub configmaps: Store<ConfigMap>,
    pub secrets: Store<Secret>,
    pub virtual_services: Store<VirtualService>,
}

/// What a reconcile needs.
pub struct Context {
    pub client: Client,
    /// The Canaries, for `flagger_canary_total`.
    pub canaries: Store<DeserializeGuard<Canary>>,
    /// People's requests (`kubectl serin promote ...`).
    pub actions: Store<CanaryAction>,
    /// The answers to requests the cache does not show yet.
    pub answers: super::requests::Answers,
    /// The Canaries by namespace, target and apex Service.
    pub canary_index: Arc<super::index::Index<DeserializeGuard<Canary>>>,
    /// The Deployments by the ConfigMaps and Secrets they use.
    pub deployment_index: Arc<super::index::Index<PackedDeployment>>,
    /// The Deployments left out of the cache (shelved), and whole copies read of them.
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
    /// The generation of each Deployment serin last wrote and when (`namespace/name` -> UID,
    /// generation, time): readiness is never read from a cached copy older than serin's own
    /// write, and within the staleness window a `-primary` serin wrote is never taken for
    /// missing because the cache does not show it yet.
    pub deployment_generations: Writes,
    /// The generation of each VirtualService serin last wrote and when (`namespace/name` -> UID,
    /// generation, time): within the staleness window, routes are never read from a cached copy
    /// older than serin's own write.
    pub route_generations: Writes,
    /// The Services and DestinationRules serin applied recently: one unchanged is not applied
    /// again on every step.
    pub applied: Applied,
    /// The comparisons with the primary, by `uid/metric`.
    pub comparisons: super::compare::States,
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

/// Objects serin wrote, by `namespace/name`: the UID and generation its write produced, and when.
pub type Writes = std::sync::Mutex<std::collections::HashMap<String, (String, i64, std::time::Instant)>>;

/// serin's last write of `namespace/name`, if it recorded one.
pub fn last_write(writes: &Writes, key: &str) -> Option<(String, i64, std::time::Instant)> {
    writes.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
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

/// The Services and DestinationRules serin applied, by `kind/namespace/name`: the Canary (UID)
/// they were applied for, a digest of the object, and when. An object identical to the one
/// applied less than [`Applied::REAPPLY_AFTER`] ago is not applied again, so a step costs no
/// request for the routing objects it leaves as they are; after that, the next reconcile applies
/// it again and undoes what someone else changed in it.
#[derive(Debug, Default)]
pub struct Applied(std::sync::Mutex<AppliedInner>);

#[derive(Debug, Default)]
struct AppliedInner {
    objects: std::collections::HashMap<String, (String, u64, std::time::Instant)>,
    pruned: Option<std::time::Instant>,
}

impl Applied {
    /// How long serin trusts that an object it applied is still as it applied it.
    pub const REAPPLY_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

    fn digest(object: &serde_json::Value) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_vec(object).unwrap_or_default().hash(&mut hasher);
        hasher.finish()
    }

    /// Whether this very object was applied for this Canary within [`Self::REAPPLY_AFTER`].
    pub fn current(&self, key: &str, canary_uid: &str, object: &serde_json::Value) -> bool {
        let applied = self.0.lock().unwrap_or_else(|p| p.into_inner());
        applied.objects.get(key).is_some_and(|(uid, digest, at)| {
            uid == canary_uid && at.elapsed() < Self::REAPPLY_AFTER && *digest == Self::digest(object)
        })
    }

    /// Records an object applied for a Canary; forgets, once per period, what expired.
    pub fn record(&self, key: String, canary_uid: &str, object: &serde_json::Value) {
        let digest = Self::digest(object);
        let mut applied = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if applied
            .pruned
            .is_none_or(|at| now.duration_since(at) >= Self::REAPPLY_AFTER)
        {
            applied
                .objects
                .retain(|_, (_, _, at)| now.duration_since(*at) < Self::REAPPLY_AFTER);
            applied.pruned = Some(now);
        }
        applied.objects.insert(key, (canary_uid.to_owned(), digest, now));
    }

    /// Forgets everything applied for a Canary.
    pub fn forget_canary(&self, canary_uid: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .objects
            .retain(|_, (uid, _, _)| uid != canary_uid);
    }

    #[cfg(test)]
    fn age(&self, key: &str, by: std::time::Duration) {
        if let Some(entry) = self.0.lock().expect("lock").objects.get_mut(key) {
            entry.2 -= by;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().expect("lock").objects.len()
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

impl Context {
    /// The HTTP clients for Prometheus queries (the webhooks' clients, shared).
    pub fn prometheus(&self) -> crate::analysis::prometheus::Clients {
        crate::analysis::prometheus::Clients {
            verifying: self.http.clone(),
            insecure: self.insecure_http.clone(),
        }
    }
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

    /// How long the API server asked serin to wait, when the reconcile ended on a request it
    /// refused with a `retryAfterSeconds` (a 429).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Act(failure) => failure.retry_after,
            Self::Status(err) => serin_runtime::api_error::retry_after(err),
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

    #[test]
    fn an_applied_object_is_current_while_unchanged_for_the_same_canary_and_not_expired() {
        let applied = Applied::default();
        let svc = serde_json::json!({"metadata": {"name": "podinfo"}, "spec": {"ports": [{"port": 9898}]}});
        let changed = serde_json::json!({"metadata": {"name": "podinfo"}, "spec": {"ports": [{"port": 80}]}});
        assert!(
            !applied.current("Service/test/podinfo", "uid", &svc),
            "never applied"
        );
        applied.record("Service/test/podinfo".into(), "uid", &svc);
        assert!(applied.current("Service/test/podinfo", "uid", &svc));
        assert!(
            !applied.current("Service/test/podinfo", "uid", &changed),
            "the object changed"
        );
        assert!(
            !applied.current("Service/test/podinfo", "other-uid", &svc),
            "another Canary"
        );
        assert!(
            !applied.current("Service/test/other", "uid", &svc),
            "another object"
        );
        applied.age("Service/test/podinfo", Applied::REAPPLY_AFTER);
        assert!(
            !applied.current("Service/test/podinfo", "uid", &svc),
            "expired: applied again"
        );

        applied.record("Service/test/a".into(), "uid", &svc);
        applied.record("Service/test/b".into(), "other-uid", &svc);
        applied.forget_canary("uid");
        assert!(!applied.current("Service/test/a", "uid", &svc));
        assert!(applied.current("Service/test/b", "other-uid", &svc));

        // Expired entries are dropped once per period.
        applied.age("Service/test/b", Applied::REAPPLY_AFTER);
        applied.0.lock().expect("lock").pruned = None;
        applied.record("Service/test/c".into(), "uid", &svc);
        assert_eq!(applied.len(), 1, "only the fresh entry is kept");
    }
}
