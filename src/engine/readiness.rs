//! Whether a Deployment is ready, with Flagger's rules and messages (`isDeploymentReady`): the
//! observed generation, the progress deadline, updated, old and available replicas against a
//! ready threshold. Pure.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;

/// A Deployment's readiness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Still rolling out; look again later. The message says why.
    Waiting(String),
    /// It will not get ready: its progress deadline passed.
    Failed(String),
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready)
    }

    /// The same verdict with its message wrapped (`<name>-primary.<ns> not ready: ...`).
    pub fn wrap(self, prefix: &str) -> Self {
        match self {
            Self::Ready => Self::Ready,
            Self::Waiting(m) => Self::Waiting(format!("{prefix}: {m}")),
            Self::Failed(m) => Self::Failed(format!("{prefix}: {m}")),
        }
    }
}

/// Whether a cached Deployment is older than serin's last write to it (`expected`: the UID and
/// generation that write returned). Its status then describes a spec serin has already changed
/// (a target still at 0 replicas, a primary before its new template), so it cannot count as ready.
pub fn behind_write(deployment: &Deployment, expected: Option<&(String, i64)>) -> Option<Readiness> {
    let (uid, generation) = expected?;
    let cached = deployment.metadata.generation.unwrap_or(0);
    (deployment.metadata.uid.as_ref() == Some(uid) && cached < *generation).then(|| {
        Readiness::Waiting(format!(
            "waiting for rollout to finish: generation {generation} not observed yet (cached {cached})"
        ))
    })
}

/// Flagger's readiness rules for a Deployment. `deadline` is the Canary's
/// `progressDeadlineSeconds`, `threshold` the ready percentage, `now_seconds` the Unix time.
pub fn deployment_readiness(
    deployment: &Deployment,
    deadline: Duration,
    threshold: i32,
    now_seconds: i64,
) -> Readiness {
    let name = deployment.metadata.name.as_deref().unwrap_or_default();
    let generation = deployment.metadata.generation.unwrap_or(0);
    let status = deployment.status.clone().unwrap_or_default();
    if generation > status.observed_generation.unwrap_or(0) {
        return Readiness::Waiting(
            "waiting for rollout to finish: observed deployment generation less than desired generation"
                .into(),
        );
    }
    let conditions = status.conditions.unwrap_or_default();
    let condition = |t: &str| conditions.iter().find(|c| c.type_ == t);
    // MinimumReplicasUnavailable for longer than the Canary's deadline cannot recover.
    let stuck = condition("Available").is_some_and(|c| {
        c.status == "False"
            && c.reason.as_deref() == Some("MinimumReplicasUnavailable")
            && c.last_update_time
                .as_ref()
                .is_some_and(|t| t.0.as_second() + (deadline.as_secs() as i64) < now_seconds)
    });
    if condition("Progressing").is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded")) {
        return Readiness::Failed(format!("deployment {name:?} exceeded its progress deadline"));
    }
    let verdict = |message: String| {
        if stuck {
            Readiness::Failed(message)
        } else {
            Readiness::Waiting(message)
        }
    };
    let replicas = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < replicas {
        return verdict(format!(
            "waiting for rollout to finish: {updated} out of {replicas} new replicas have been updated"
        ));
    }
    if total > updated {
        return verdict(format!(
            "waiting for rollout to finish: {} old replicas are pending termination",
            total - updated
        ));
    }
    let needed = (updated as f32 * threshold as f32 / 100.0) as i32;
    if available < needed {
        return verdict(format!(
            "waiting for rollout to finish: {available} of {needed} (readyThreshold {threshold}%) updated replicas are available"
        ));
    }
    Readiness::Ready
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;

    fn deployment(status: serde_json::Value, generation: i64, replicas: i32) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "podinfo", "generation": generation}, "spec": {"replicas": replicas, "selector": {}, "template": {}}, "status": status})).expect("deployment")
    }

    #[test]
    fn a_cached_copy_older_than_serins_write_is_not_ready() {
        // The target was just scaled up from 0: the cache still shows generation 3 at 0 replicas,
        // which the rules alone would call ready.
        let mut cached = deployment(
            json!({"observedGeneration": 3, "replicas": 0, "updatedReplicas": 0}),
            3,
            0,
        );
        cached.metadata.uid = Some("u1".into());
        assert_eq!(
            deployment_readiness(&cached, Duration::from_secs(60), 100, 0),
            Readiness::Ready
        );
        let expected = ("u1".to_owned(), 4);
        assert_eq!(
            behind_write(&cached, Some(&expected)),
            Some(Readiness::Waiting(
                "waiting for rollout to finish: generation 4 not observed yet (cached 3)".into()
            ))
        );
        cached.metadata.generation = Some(4);
        assert_eq!(
            behind_write(&cached, Some(&expected)),
            None,
            "the write is in the cache"
        );
        cached.metadata.generation = Some(3);
        assert_eq!(
            behind_write(&cached, Some(&("u0".to_owned(), 9))),
            None,
            "another object (recreated)"
        );
        assert_eq!(behind_write(&cached, None), None, "serin never wrote it");
    }

    #[test]
    fn the_ready_threshold_message_prints_the_required_count() {
        // Flagger prints the count the threshold requires, not the updated one.
        let d = deployment(
            json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 4, "availableReplicas": 1}),
            2,
            4,
        );
        assert_eq!(
            deployment_readiness(&d, Duration::from_secs(60), 50, 0),
            Readiness::Waiting(
                "waiting for rollout to finish: 1 of 2 (readyThreshold 50%) updated replicas are available"
                    .into()
            )
        );
    }

    #[test]
    fn rules_in_order() {
        let deadline = Duration::from_secs(60);
        let now = 1_000_000;
        let cases = vec![
            ("ready", deployment(json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}), 2, 2), Readiness::Ready),
            ("new generation", deployment(json!({"observedGeneration": 1}), 2, 2), Readiness::Waiting("waiting for rollout to finish: observed deployment generation less than desired generation".into())),
            ("updating", deployment(json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1}), 2, 2), Readiness::Waiting("waiting for rollout to finish: 1 out of 2 new replicas have been updated".into())),
            ("old pending", deployment(json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2}), 2, 2), Readiness::Waiting("waiting for rollout to finish: 1 old replicas are pending termination".into())),
            ("unavailable", deployment(json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}), 2, 2), Readiness::Waiting("waiting for rollout to finish: 1 of 2 (readyThreshold 100%) updated replicas are available".into())),
            (
                "deadline exceeded",
                deployment(json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}), 2, 1),
                Readiness::Failed("deployment \"podinfo\" exceeded its progress deadline".into()),
            ),
        ];
        for (name, d, want) in cases {
            assert_eq!(deployment_readiness(&d, deadline, 100, now), want, "{name}");
        }
    }

    #[test]
    fn minimum_replicas_unavailable_past_the_canary_deadline_fails() {
        let mut d = deployment(
            json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 0, "conditions": [{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"}]}),
            1,
            1,
        );
        d.status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .expect("conditions")[0]
            .last_update_time = Some(Time(jiff::Timestamp::from_second(1000).expect("ts")));
        assert!(matches!(
            deployment_readiness(&d, Duration::from_secs(60), 100, 1030),
            Readiness::Waiting(_)
        ));
        assert!(matches!(
            deployment_readiness(&d, Duration::from_secs(60), 100, 1061),
            Readiness::Failed(_)
        ));
    }

    #[test]
    fn threshold_allows_partial_availability() {
        let d = deployment(
            json!({"observedGeneration": 1, "replicas": 4, "updatedReplicas": 4, "availableReplicas": 2}),
            1,
            4,
        );
        assert_eq!(
            deployment_readiness(&d, Duration::from_secs(60), 50, 0),
            Readiness::Ready
        );
        assert!(!deployment_readiness(&d, Duration::from_secs(60), 75, 0).is_ready());
        assert_eq!(
            Readiness::Waiting("x".into()).wrap("podinfo-primary.test not ready"),
            Readiness::Waiting("podinfo-primary.test not ready: x".into())
        );
    }
}
