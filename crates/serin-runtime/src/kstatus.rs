//! Health of any Kubernetes object by the kstatus rules Flux uses (`cli-utils` `kstatus`):
//! terminating, generation not yet observed, `Reconciling`/`Stalled` conditions, then the rules
//! of the built-in kinds, and serin's Canary (healthy when Initialized or Succeeded, in progress
//! while it analyses, failed when Failed). Anything else is current. Pure.

use serde_json::Value;

/// An object's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    InProgress,
    Failed,
    Current,
    Terminating,
    NotFound,
    Unknown,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::InProgress => "InProgress",
            Self::Failed => "Failed",
            Self::Current => "Current",
            Self::Terminating => "Terminating",
            Self::NotFound => "NotFound",
            Self::Unknown => "Unknown",
        })
    }
}

/// A status and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub status: Status,
    pub message: String,
}

impl Health {
    fn new(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"].as_str() == Some(type_))
}

fn condition_is(obj: &Value, type_: &str, status: &str) -> bool {
    condition(obj, type_).is_some_and(|c| c["status"].as_str() == Some(status))
}

/// Computes an object's status.
pub fn compute(obj: &Value) -> Health {
    if !obj["metadata"]["deletionTimestamp"].is_null() {
        return Health::new(Status::Terminating, "Resource scheduled for deletion");
    }
    if let Some(observed) = obj["status"]["observedGeneration"].as_i64() {
        let generation = int(&obj["metadata"]["generation"]);
        if generation != observed && generation != 0 {
            return Health::new(
                Status::InProgress,
                format!(
                    "{} generation is {generation}, but latest observed generation is {observed}",
                    kind(obj)
                ),
            );
        }
    }
    if let Some(c) = condition(obj, "Reconciling").filter(|c| c["status"] == "True") {
        return Health::new(Status::InProgress, c["message"].as_str().unwrap_or_default());
    }
    if let Some(c) = condition(obj, "Stalled").filter(|c| c["status"] == "True") {
        return Health::new(Status::Failed, c["message"].as_str().unwrap_or_default());
    }
    let group = obj["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .rsplit_once('/')
        .map_or("", |(g, _)| g);
    match (group, kind(obj)) {
        ("apps", "Deployment") => deployment(obj),
        ("apps", "StatefulSet") => stateful_set(obj),
        ("apps", "DaemonSet") => daemon_set(obj),
        ("apps", "ReplicaSet") => replica_set(obj),
        ("", "PersistentVolumeClaim") => {
            if obj["status"]["phase"] == "Bound" {
                Health::new(Status::Current, "PVC is Bound")
            } else {
                Health::new(Status::InProgress, "PVC is not Bound")
            }
        }
        ("", "Pod") => pod(obj),
        ("batch", "Job") => job(obj),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            if condition_is(obj, "Established", "True") {
                Health::new(Status::Current, "CRD is established")
            } else {
                Health::new(Status::InProgress, "Install in progress")
            }
        }
        ("flagger.app", "Canary") => canary(obj),
        _ => Health::new(Status::Current, "Resource is current"),
    }
}

fn kind(obj: &Value) -> &str {
    obj["kind"].as_str().unwrap_or_default()
}

fn deployment(obj: &Value) -> Health {
    let spec_replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
    let s = &obj["status"];
    let (replicas, updated, ready, available) = (
        int(&s["replicas"]),
        int(&s["updatedReplicas"]),
        int(&s["readyReplicas"]),
        int(&s["availableReplicas"]),
    );
    if condition(obj, "Progressing").is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded") {
        return Health::new(Status::Failed, "Progress deadline exceeded");
    }
    if spec_replicas > replicas {
        return Health::new(
            Status::InProgress,
            format!("Replicas: {replicas}/{spec_replicas}"),
        );
    }
    if spec_replicas > updated {
        return Health::new(Status::InProgress, format!("Updated: {updated}/{spec_replicas}"));
    }
    if replicas > spec_replicas {
        return Health::new(
            Status::InProgress,
            format!("Pending termination: {}", replicas - spec_replicas),
        );
    }
    if updated > available {
        return Health::new(Status::InProgress, format!("Available: {available}/{updated}"));
    }
    if spec_replicas > ready {
        return Health::new(Status::InProgress, format!("Ready: {ready}/{spec_replicas}"));
    }
    let progressing_done = obj["spec"]["progressDeadlineSeconds"].is_null()
        || condition(obj, "Progressing")
            .is_some_and(|c| c["status"] == "True" && c["reason"] == "NewReplicaSetAvailable");
    if !progressing_done {
        return Health::new(Status::InProgress, "ReplicaSet not Available");
    }
    if !condition_is(obj, "Available", "True") {
        return Health::new(Status::InProgress, "Deployment not Available");
    }
    Health::new(
        Status::Current,
        format!("Deployment is available. Replicas: {replicas}"),
    )
}

fn stateful_set(obj: &Value) -> Health {
    let spec_replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
    let s = &obj["status"];
    if obj["status"]["observedGeneration"].is_null() {
        return Health::new(Status::InProgress, "StatefulSet generation not yet observed");
    }
    let (replicas, ready, current) = (
        int(&s["replicas"]),
        int(&s["readyReplicas"]),
        int(&s["currentReplicas"]),
    );
    if spec_replicas > replicas {
        return Health::new(
            Status::InProgress,
            format!("Replicas: {replicas}/{spec_replicas}"),
        );
    }
    if spec_replicas > ready {
        return Health::new(Status::InProgress, format!("Ready: {ready}/{spec_replicas}"));
    }
    let update_revision = s["updateRevision"].as_str().unwrap_or_default();
    if !update_revision.is_empty()
        && s["currentRevision"].as_str() != Some(update_revision)
        && current < spec_replicas
    {
        return Health::new(Status::InProgress, format!("Updated: {current}/{spec_replicas}"));
    }
    Health::new(
        Status::Current,
        format!("All replicas scheduled as expected. Replicas: {replicas}"),
    )
}

fn daemon_set(obj: &Value) -> Health {
    let s = &obj["status"];
    let desired = int(&s["desiredNumberScheduled"]);
    let (updated, available, ready) = (
        int(&s["updatedNumberScheduled"]),
        int(&s["numberAvailable"]),
        int(&s["numberReady"]),
    );
    if desired > updated {
        return Health::new(Status::InProgress, format!("Updated: {updated}/{desired}"));
    }
    if desired > available {
        return Health::new(Status::InProgress, format!("Available: {available}/{desired}"));
    }
    if desired > ready {
        return Health::new(Status::InProgress, format!("Ready: {ready}/{desired}"));
    }
    Health::new(
        Status::Current,
        format!("All replicas scheduled as expected. Replicas: {desired}"),
    )
}

fn replica_set(obj: &Value) -> Health {
    let spec_replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
    let ready = int(&obj["status"]["readyReplicas"]);
    if spec_replicas > ready {
        return Health::new(Status::InProgress, format!("Ready: {ready}/{spec_replicas}"));
    }
    Health::new(
        Status::Current,
        format!("ReplicaSet is available. Replicas: {spec_replicas}"),
    )
}

fn pod(obj: &Value) -> Health {
    match obj["status"]["phase"].as_str().unwrap_or_default() {
        "Succeeded" => Health::new(Status::Current, "Pod has completed successfully"),
        "Failed" => Health::new(Status::Failed, "Pod has completed, but not successfully"),
        "Running" if condition_is(obj, "Ready", "True") => Health::new(Status::Current, "Pod is Ready"),
        _ => Health::new(Status::InProgress, "Pod is not Ready"),
    }
}

fn job(obj: &Value) -> Health {
    if condition_is(obj, "Failed", "True") {
        return Health::new(Status::Failed, "Job Failed");
    }
    if condition_is(obj, "Complete", "True") {
        return Health::new(Status::Current, "Job Completed");
    }
    Health::new(Status::InProgress, "Job in progress")
}

/// serin's Canary: current once initialized or promoted, failed when its analysis failed.
fn canary(obj: &Value) -> Health {
    let phase = obj["status"]["phase"].as_str().unwrap_or_default();
    match phase {
        "Initialized" | "Succeeded" => Health::new(Status::Current, format!("Canary {phase}")),
        "Failed" => Health::new(
            Status::Failed,
            condition(obj, "Promoted")
                .and_then(|c| c["message"].as_str())
                .map_or_else(
                    || "Canary analysis failed".to_owned(),
                    |m| format!("Canary Failed: {m}"),
                ),
        ),
        "" => Health::new(Status::InProgress, "Canary not yet initialized"),
        other => Health::new(Status::InProgress, format!("Canary {other}")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deploy(spec_replicas: Option<i64>, status: Value) -> Value {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "generation": 2}, "spec": {"progressDeadlineSeconds": 600}, "status": status});
        if let Some(r) = spec_replicas {
            d["spec"]["replicas"] = json!(r);
        }
        d
    }

    #[test]
    fn table() {
        let available = json!([{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]);
        let cases = [
            (
                "terminating",
                json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}}),
                Status::Terminating,
            ),
            (
                "generation",
                deploy(Some(1), json!({"observedGeneration": 1})),
                Status::InProgress,
            ),
            (
                "stalled",
                json!({"kind": "X", "status": {"conditions": [{"type": "Stalled", "status": "True"}]}}),
                Status::Failed,
            ),
            (
                "reconciling",
                json!({"kind": "X", "status": {"conditions": [{"type": "Reconciling", "status": "True"}]}}),
                Status::InProgress,
            ),
            (
                "deployment ready",
                deploy(
                    Some(2),
                    json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2, "conditions": available.clone()}),
                ),
                Status::Current,
            ),
            (
                "scaled to zero",
                deploy(
                    Some(0),
                    json!({"observedGeneration": 2, "conditions": available.clone()}),
                ),
                Status::Current,
            ),
            (
                "deployment rolling",
                deploy(
                    None,
                    json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 0, "conditions": available}),
                ),
                Status::InProgress,
            ),
            (
                "deadline",
                deploy(
                    Some(1),
                    json!({"observedGeneration": 2, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}),
                ),
                Status::Failed,
            ),
            (
                "configmap",
                json!({"apiVersion": "v1", "kind": "ConfigMap"}),
                Status::Current,
            ),
            (
                "canary initialized",
                json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "status": {"phase": "Initialized"}}),
                Status::Current,
            ),
            (
                "canary progressing",
                json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "status": {"phase": "Progressing"}}),
                Status::InProgress,
            ),
            (
                "canary new",
                json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary"}),
                Status::InProgress,
            ),
            (
                "canary failed",
                json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "status": {"phase": "Failed"}}),
                Status::Failed,
            ),
            (
                "crd",
                json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "status": {"conditions": [{"type": "Established", "status": "True"}]}}),
                Status::Current,
            ),
        ];
        for (name, obj, want) in cases {
            assert_eq!(compute(&obj).status, want, "{name}: {:?}", compute(&obj));
        }
    }
}
