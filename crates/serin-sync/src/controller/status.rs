//! Status bookkeeping shared by both reconcilers: Go-style durations (`10m0s`), conditions with
//! stable transition times, the progress of a GitRepository run, the Kustomization history, and
//! the unsupported-field check. Pure.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{GitRepositorySpec, KustomizationSpec, kustomization::Snapshot};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const HEALTHY: &str = "Healthy";
pub const ARTIFACT_IN_STORAGE: &str = "ArtifactInStorage";
pub const FETCH_FAILED: &str = "FetchFailed";
pub const ARTIFACT_OUTDATED: &str = "ArtifactOutdated";
/// Reason of Reconciling (and Ready=Unknown) while a run is under way.
pub const PROGRESSING: &str = "Progressing";
/// Reason Reconciling takes when the run it describes failed and will be retried.
pub const PROGRESSING_WITH_RETRY: &str = "ProgressingWithRetry";
/// Reason of ArtifactOutdated when the remote has a revision the artifact does not hold.
pub const NEW_REVISION_REASON: &str = "NewRevision";
/// Reason of Ready and ArtifactInStorage once the artifact is stored.
pub const SUCCEEDED_REASON: &str = "Succeeded";
/// Reason of Ready=False when a reconcile failed unexpectedly (Flux's generic failure reason).
pub const RECONCILIATION_FAILED_REASON: &str = "ReconciliationFailed";
/// Reason of the Ready=False condition for fields serin-sync does not implement.
pub const UNSUPPORTED_REASON: &str = "UnsupportedField";

/// Parses a Flux/Go duration such as `10m`, `1h30m`, `30s`, `500ms` or `1.5h`.
pub fn parse_duration(text: &str) -> Result<Duration, serin_runtime::duration::DurationError> {
    serin_runtime::duration::parse(text)
}

/// Formats a duration as Go prints it, rounded to milliseconds (`10m0s`, `1.5s`, `176ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    serin_runtime::duration::format(ms)
}

/// A condition's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// The one writer of conditions in both reconcilers: the conditions of one object, written at
/// its generation and one instant. Short-lived: made where a step writes, so that the rest of
/// the status stays free to read and patch.
#[derive(Debug)]
pub struct Progress<'a> {
    conditions: &'a mut Vec<Condition>,
    generation: Option<i64>,
    now: jiff::Timestamp,
}

impl<'a> Progress<'a> {
    pub fn new(conditions: &'a mut Vec<Condition>, generation: Option<i64>, now: jiff::Timestamp) -> Self {
        Self {
            conditions,
            generation,
            now,
        }
    }

    /// Sets a condition; the transition time changes only when the status does.
    pub fn set(&mut self, type_: &str, status: ConditionStatus, reason: &str, message: &str) -> &mut Self {
        let (status, generation, now) = (status.as_str(), self.generation, self.now);
        let message: String = message.chars().take(32_000).collect();
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = Time(now);
                }
                c.status = status.to_owned();
                c.reason = reason.to_owned();
                c.message = message;
                c.observed_generation = generation;
            }
            None => self.conditions.push(Condition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                reason: reason.to_owned(),
                message,
                observed_generation: generation,
                last_transition_time: Time(now),
            }),
        }
        self
    }

    /// Removes a condition.
    pub fn remove(&mut self, type_: &str) -> &mut Self {
        remove_condition(self.conditions, type_);
        self
    }

    /// Reconciling=True, `Progressing`, with what the run is doing.
    pub fn reconciling(&mut self, message: &str) -> &mut Self {
        self.set(RECONCILING, ConditionStatus::True, PROGRESSING, message)
    }

    /// Ready=False and Stalled=True with `reason`: nothing happens until the object changes.
    pub fn stalled(&mut self, reason: &str, message: &str) -> &mut Self {
        self.set(READY, ConditionStatus::False, reason, message).set(
            STALLED,
            ConditionStatus::True,
            reason,
            message,
        )
    }

    /// Flux's progressive status: Reconciling=True with `message`, and Ready=Unknown with the
    /// same when `drift`, or when Ready is absent or Unknown (else the last run's Ready stays).
    pub fn mark_progressing(&mut self, drift: bool, message: &str) -> &mut Self {
        self.reconciling(message);
        let ready_open = condition(self.conditions, READY).is_none_or(|c| c.status == "Unknown");
        if drift || ready_open {
            self.set(READY, ConditionStatus::Unknown, PROGRESSING, message);
        }
        self
    }

    /// The start of a GitRepository run, before anything is fetched, as Flux's
    /// source-controller reports it. Returns whether this progress is worth a status write at
    /// once: a new generation, a reconcile request not handled yet, or no artifact yet.
    pub fn source_run_started(
        &mut self,
        observed_generation: Option<i64>,
        new_request: bool,
        has_artifact: bool,
    ) -> bool {
        self.mark_progressing(false, "reconciliation in progress");
        let mut persist = new_request;
        if self.generation != observed_generation {
            // A status never written reads as Flux's default observedGeneration, -1.
            let message = format!(
                "processing object: new generation {} -> {}",
                observed_generation.unwrap_or(-1),
                self.generation.unwrap_or_default()
            );
            self.mark_progressing(false, &message);
            persist = true;
        }
        if !has_artifact {
            self.mark_progressing(true, "building artifact")
                .remove(ARTIFACT_IN_STORAGE);
            persist = true;
        }
        persist
    }

    /// A checkout found `revision`, which the current artifact does not hold: the artifact is
    /// outdated (when there is one) and a new one is being built.
    pub fn source_new_revision(&mut self, has_artifact: bool, revision: &str) -> &mut Self {
        let message = format!("new upstream revision '{revision}'");
        if has_artifact {
            self.set(
                ARTIFACT_OUTDATED,
                ConditionStatus::True,
                NEW_REVISION_REASON,
                &message,
            );
        }
        self.mark_progressing(true, &format!("building artifact: {message}"))
    }

    /// The artifact of `revision` is stored (just now, or it already was): Ready, and nothing
    /// is outdated, failing or in progress any more.
    pub fn source_stored(&mut self, revision: &str) -> &mut Self {
        let message = format!("stored artifact for revision '{revision}'");
        self.set(
            ARTIFACT_IN_STORAGE,
            ConditionStatus::True,
            SUCCEEDED_REASON,
            &message,
        )
        .set(READY, ConditionStatus::True, SUCCEEDED_REASON, &message);
        for type_ in [FETCH_FAILED, ARTIFACT_OUTDATED, RECONCILING] {
            self.remove(type_);
        }
        self
    }

    /// The run failed with `reason`: FetchFailed and Ready=False say why, and Reconciling stays
    /// with the reason `ProgressingWithRetry`, as the run will be retried.
    pub fn source_failed(&mut self, reason: &str, message: &str) -> &mut Self {
        self.set(FETCH_FAILED, ConditionStatus::True, reason, message)
            .set(READY, ConditionStatus::False, reason, message)
            .retrying()
    }

    /// Reconciling (when present) takes the reason `ProgressingWithRetry`: the run failed and
    /// will be retried.
    pub fn retrying(&mut self) -> &mut Self {
        if let Some(c) = self.conditions.iter_mut().find(|c| c.type_ == RECONCILING) {
            c.reason = PROGRESSING_WITH_RETRY.into();
        }
        self
    }
}

/// Removes a condition.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// A condition's status, if present.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Records one reconcile in the history: the entry with the same digest and status is updated,
/// else a new one is put first; at most 5 are kept.
pub fn upsert_history(
    history: &mut Vec<Snapshot>,
    digest: &str,
    status: &str,
    revision: &str,
    duration: Duration,
    now: &str,
) {
    let duration = format_duration(duration);
    if let Some(pos) = history
        .iter()
        .position(|s| s.digest == digest && s.last_reconciled_status == status)
    {
        let mut entry = history.remove(pos);
        entry.last_reconciled = now.to_owned();
        entry.last_reconciled_duration = duration;
        entry.total_reconciliations += 1;
        entry.metadata.insert("revision".into(), revision.to_owned());
        history.insert(0, entry);
    } else {
        history.insert(
            0,
            Snapshot {
                digest: digest.to_owned(),
                first_reconciled: now.to_owned(),
                last_reconciled: now.to_owned(),
                last_reconciled_duration: duration,
                last_reconciled_status: status.to_owned(),
                total_reconciliations: 1,
                metadata: [("revision".to_owned(), revision.to_owned())].into(),
            },
        );
    }
    history.truncate(5);
}

/// The first field of a Kustomization that serin-sync does not implement, with why.
pub fn unsupported_kustomization_field(spec: &KustomizationSpec) -> Option<String> {
    let not = |field: &str, what: &str| {
        Some(format!(
            "unsupported field '{field}': serin-sync does not implement {what}"
        ))
    };
    if spec.decryption.is_some() {
        return not("spec.decryption", "SOPS decryption");
    }
    if spec.kube_config.is_some() {
        return not("spec.kubeConfig", "applying to remote clusters");
    }
    if spec
        .health_check_exprs
        .as_ref()
        .is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty()))
    {
        return not("spec.healthCheckExprs", "CEL health checks");
    }
    if spec.depends_on.iter().any(|d| d.ready_expr.is_some()) {
        return not("spec.dependsOn[].readyExpr", "CEL readiness expressions");
    }
    if spec.source_ref.kind != "GitRepository" {
        return Some(format!(
            "unsupported field 'spec.sourceRef.kind': source kind '{}' is not supported by serin-sync (only GitRepository)",
            spec.source_ref.kind
        ));
    }
    if spec.post_build.as_ref().is_some_and(|p| {
        p.substitute_strategy
            .as_deref()
            .is_some_and(|s| s != "WithVariables" && s != "Always")
    }) {
        return not("spec.postBuild.substituteStrategy", "this substitution strategy");
    }
    None
}

/// The first field of a GitRepository that serin-sync does not implement, with why.
pub fn unsupported_source_field(spec: &GitRepositorySpec) -> Option<String> {
    let not = |field: &str, what: &str| {
        Some(format!(
            "unsupported field '{field}': serin-sync does not implement {what}"
        ))
    };
    if spec.verify.is_some() {
        return not("spec.verify", "commit signature verification");
    }
    if spec
        .include
        .as_ref()
        .is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty()))
    {
        return not("spec.include", "including other repositories");
    }
    if spec.sparse_checkout.as_ref().is_some_and(|v| !v.is_empty()) {
        return not("spec.sparseCheckout", "sparse checkouts");
    }
    if spec.recurse_submodules == Some(true) {
        return not("spec.recurseSubmodules", "submodules");
    }
    if spec.proxy_secret_ref.is_some() {
        return not("spec.proxySecretRef", "proxies");
    }
    if spec.provider.as_deref().is_some_and(|p| p != "generic") {
        return not("spec.provider", "cloud provider authentication");
    }
    None
}

/// Flux's default timeout: `timeout`, else `interval - 30s`, at least 30 s.
pub fn kustomization_timeout(spec: &KustomizationSpec) -> Duration {
    if let Some(Ok(t)) = spec.timeout.as_deref().map(parse_duration) {
        return t;
    }
    let interval = parse_duration(&spec.interval).unwrap_or(Duration::from_secs(600));
    interval
        .saturating_sub(Duration::from_secs(30))
        .max(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_as_go() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("99999999999999999999m").is_err());
        assert_eq!(format_duration(Duration::from_secs(600)), "10m0s");
        assert_eq!(format_duration(Duration::from_secs(60)), "1m0s");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_millis(176)), "176ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h0m0s");
    }

    #[test]
    fn timeout_defaults_to_interval_minus_30s_at_least_30s() {
        let spec = |interval: &str, timeout: Option<&str>| KustomizationSpec {
            interval: interval.into(),
            timeout: timeout.map(Into::into),
            ..Default::default()
        };
        assert_eq!(
            kustomization_timeout(&spec("10m", None)),
            Duration::from_secs(570)
        );
        assert_eq!(kustomization_timeout(&spec("45s", None)), Duration::from_secs(30));
        assert_eq!(
            kustomization_timeout(&spec("10m", Some("2m"))),
            Duration::from_secs(120)
        );
    }

    #[test]
    fn conditions_keep_their_transition_time() {
        let t0 = jiff::Timestamp::from_second(1).expect("time");
        let t1 = jiff::Timestamp::from_second(2).expect("time");
        let mut c = Vec::new();
        Progress::new(&mut c, Some(1), t0).set(READY, ConditionStatus::False, "BuildFailed", "x");
        Progress::new(&mut c, Some(1), t1).set(READY, ConditionStatus::False, "BuildFailed", "y");
        assert_eq!(c[0].last_transition_time.0, t0);
        Progress::new(&mut c, Some(1), t1).set(READY, ConditionStatus::True, "ReconciliationSucceeded", "ok");
        assert_eq!(c[0].last_transition_time.0, t1);
    }

    /// `(type, status, reason, message)` of each condition, in order.
    fn summary(conditions: &[Condition]) -> Vec<(String, String, String, String)> {
        conditions
            .iter()
            .map(|c| {
                (
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                )
            })
            .collect()
    }

    fn c(type_: &str, status: &str, reason: &str, message: &str) -> (String, String, String, String) {
        (type_.into(), status.into(), reason.into(), message.into())
    }

    #[test]
    fn a_new_revision_outdates_the_artifact_until_it_is_stored() {
        let (t0, t1) = (
            jiff::Timestamp::from_second(1).expect("time"),
            jiff::Timestamp::from_second(2).expect("time"),
        );
        let (old, new) = ("main@sha1:aaaa", "main@sha1:bbbb");
        let mut conds = Vec::new();
        Progress::new(&mut conds, Some(1), t0).source_stored(old);

        // A poll of the same generation: in progress, but Ready=True of the last run stays and
        // nothing needs writing yet.
        assert!(!Progress::new(&mut conds, Some(1), t1).source_run_started(Some(1), false, true));
        assert_eq!(
            summary(&conds),
            [
                c(
                    ARTIFACT_IN_STORAGE,
                    "True",
                    "Succeeded",
                    &format!("stored artifact for revision '{old}'")
                ),
                c(
                    READY,
                    "True",
                    "Succeeded",
                    &format!("stored artifact for revision '{old}'")
                ),
                c(RECONCILING, "True", "Progressing", "reconciliation in progress"),
            ]
        );

        // The checkout found a new revision.
        Progress::new(&mut conds, Some(1), t1).source_new_revision(true, new);
        let building = format!("building artifact: new upstream revision '{new}'");
        assert_eq!(
            summary(&conds),
            [
                c(
                    ARTIFACT_IN_STORAGE,
                    "True",
                    "Succeeded",
                    &format!("stored artifact for revision '{old}'")
                ),
                c(READY, "Unknown", "Progressing", &building),
                c(RECONCILING, "True", "Progressing", &building),
                c(
                    ARTIFACT_OUTDATED,
                    "True",
                    "NewRevision",
                    &format!("new upstream revision '{new}'")
                ),
            ]
        );
        assert_eq!(
            condition(&conds, READY).expect("Ready").last_transition_time.0,
            t1
        );

        // Stored: both cleared, Ready=True again.
        Progress::new(&mut conds, Some(1), t1).source_stored(new);
        let stored = format!("stored artifact for revision '{new}'");
        assert_eq!(
            summary(&conds),
            [
                c(ARTIFACT_IN_STORAGE, "True", "Succeeded", &stored),
                c(READY, "True", "Succeeded", &stored),
            ]
        );
    }

    #[test]
    fn a_first_run_builds_an_artifact_and_a_failed_one_is_retried() {
        let now = jiff::Timestamp::from_second(1).expect("time");
        let mut conds = Vec::new();
        // Never reconciled: a new generation and no artifact, written at once.
        assert!(Progress::new(&mut conds, Some(1), now).source_run_started(None, false, false));
        assert_eq!(
            summary(&conds),
            [
                c(RECONCILING, "True", "Progressing", "building artifact"),
                c(READY, "Unknown", "Progressing", "building artifact"),
            ]
        );
        // Without an artifact there is nothing to outdate.
        Progress::new(&mut conds, Some(1), now).source_new_revision(false, "main@sha1:aaaa");
        assert!(condition(&conds, ARTIFACT_OUTDATED).is_none());
        assert_eq!(
            condition(&conds, RECONCILING).map(|c| c.message.as_str()),
            Some("building artifact: new upstream revision 'main@sha1:aaaa'")
        );

        Progress::new(&mut conds, Some(1), now).source_failed("GitOperationFailed", "failed to checkout");
        assert_eq!(
            summary(&conds),
            [
                c(
                    RECONCILING,
                    "True",
                    "ProgressingWithRetry",
                    "building artifact: new upstream revision 'main@sha1:aaaa'"
                ),
                c(READY, "False", "GitOperationFailed", "failed to checkout"),
                c(FETCH_FAILED, "True", "GitOperationFailed", "failed to checkout"),
            ]
        );

        // A new generation of a failing object: Ready=False stays until the run ends; the
        // progress names the generations.
        let mut conds = conds.clone();
        assert!(Progress::new(&mut conds, Some(2), now).source_run_started(Some(1), false, true));
        assert_eq!(
            condition(&conds, RECONCILING).map(|c| (c.reason.as_str(), c.message.as_str())),
            Some(("Progressing", "processing object: new generation 1 -> 2"))
        );
        assert_eq!(condition(&conds, READY).map(|c| c.status.as_str()), Some("False"));
    }

    #[test]
    fn history_deduplicates_and_keeps_five() {
        let mut h = Vec::new();
        for n in 0..7 {
            upsert_history(
                &mut h,
                &format!("sha256:{n}"),
                "ReconciliationSucceeded",
                "r",
                Duration::ZERO,
                "now",
            );
        }
        upsert_history(
            &mut h,
            "sha256:6",
            "ReconciliationSucceeded",
            "r",
            Duration::ZERO,
            "later",
        );
        assert_eq!(h.len(), 5);
        assert_eq!(h[0].digest, "sha256:6");
        assert_eq!(h[0].total_reconciliations, 2);
    }

    #[test]
    fn unsupported_fields_are_named() {
        let spec = KustomizationSpec {
            source_ref: crate::api::kustomization::CrossNamespaceSourceReference {
                kind: "GitRepository".into(),
                ..Default::default()
            },
            decryption: Some(serde_json::json!({"provider": "sops"})),
            ..Default::default()
        };
        assert!(unsupported_kustomization_field(&spec).is_some_and(|m| m.contains("spec.decryption")));
        let oci = KustomizationSpec {
            source_ref: crate::api::kustomization::CrossNamespaceSourceReference {
                kind: "OCIRepository".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(unsupported_kustomization_field(&oci).is_some_and(|m| m.contains("OCIRepository")));
    }
}
