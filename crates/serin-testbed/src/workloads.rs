//! Workload simulation: Deployments, StatefulSets and DaemonSets get the status their controllers
//! would write, after a short delay, so `kubectl rollout status`, Helm's readiness checks and
//! serin's readiness rules see rollouts complete. A pod template annotated
//! `testbed.serin.dev/never-ready: "true"` never becomes available, nor does one with an image the
//! test bed cannot pull ([`unpullable_image`], the rule kwok's stages apply on a real cluster),
//! and its Deployment's Progressing condition turns to ProgressDeadlineExceeded after
//! `progressDeadlineSeconds`.
//!
//! `desired_status` is pure; [`spawn`] does the store I/O.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};

use crate::apiserver::store::{EventType, Store, Subresource, WriteOptions, now_rfc3339};

/// The annotation that keeps a revision from ever becoming ready.
pub const NEVER_READY_ANNOTATION: &str = "testbed.serin.dev/never-ready";
/// The annotation that delays a revision's readiness: a Go duration (`3s`) after its pods start.
pub const READY_AFTER_ANNOTATION: &str = "testbed.serin.dev/ready-after";
/// The field manager of simulated controller writes.
pub const MANAGER: &str = "kube-controller-manager";

/// A short, stable hash of a pod template (`pod-template-hash`).
pub fn template_hash(template: &Value) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(template.to_string().as_bytes());
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    digest
        .iter()
        .take(10)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// An image the test bed cannot pull: its registry host ends in `.invalid`, a name that never
/// resolves (RFC 6761), such as `registry.invalid/podinfo:6.0.1`. Its Pods wait in ErrImagePull
/// and ImagePullBackOff on a real cluster, as they would on any cluster.
pub fn unpullable_image(image: &str) -> bool {
    image.split_once('/').is_some_and(|(host, _)| {
        let host = host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        host.ends_with(".invalid")
    })
}

fn never_ready(obj: &Value) -> bool {
    let annotated = obj
        .pointer(&format!(
            "/spec/template/metadata/annotations/{}",
            NEVER_READY_ANNOTATION.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .is_some_and(|v| v == "true");
    let unpullable = obj
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("image").and_then(Value::as_str))
        .any(unpullable_image);
    annotated || unpullable
}

/// How long after its pods start a revision becomes ready ([`READY_AFTER_ANNOTATION`]).
fn ready_after(obj: &Value) -> Duration {
    obj.pointer(&format!(
        "/spec/template/metadata/annotations/{}",
        READY_AFTER_ANNOTATION.replace('/', "~1")
    ))
    .and_then(Value::as_str)
    .and_then(|text| serin_runtime::duration::parse(text).ok())
    .unwrap_or_default()
}

/// A condition, keeping the old timestamps when nothing about it changed.
fn condition(old: &Value, type_: &str, status: &str, reason: &str, message: &str, now: &str) -> Value {
    let previous = old
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
        });
    let same = previous.is_some_and(|p| {
        p.get("status").and_then(Value::as_str) == Some(status)
            && p.get("reason").and_then(Value::as_str) == Some(reason)
    });
    let transition = previous
        .filter(|p| p.get("status").and_then(Value::as_str) == Some(status))
        .and_then(|p| p.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now));
    let update = if same {
        previous
            .and_then(|p| p.get("lastUpdateTime").cloned())
            .unwrap_or_else(|| json!(now))
    } else {
        json!(now)
    };
    json!({"type": type_, "status": status, "reason": reason, "message": message, "lastUpdateTime": update, "lastTransitionTime": transition})
}

/// The status a controller would write for `obj` (a Deployment, StatefulSet or DaemonSet), given
/// how long its current template has been rolling out. `None` for other kinds.
pub fn desired_status(kind: &str, obj: &Value, rolling_for: Duration, now: &str) -> Option<Value> {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let generation = obj
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let replicas = obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
    let hash = template_hash(obj.pointer("/spec/template").unwrap_or(&Value::Null));
    let ready = if never_ready(obj) || rolling_for < ready_after(obj) {
        0
    } else {
        replicas
    };
    match kind {
        "Deployment" => {
            let rs = format!("{name}-{hash}");
            let deadline = obj
                .pointer("/spec/progressDeadlineSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(600);
            let available = if ready >= replicas {
                condition(
                    obj,
                    "Available",
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.",
                    now,
                )
            } else {
                condition(
                    obj,
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.",
                    now,
                )
            };
            // The deployment controller updates Progressing only during a rollout: scaling a
            // Deployment whose current ReplicaSet has completed (as serin scales a target up
            // from 0) leaves NewReplicaSetAvailable in place, so it never times out.
            let completed = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing"))
                .filter(|c| {
                    c["reason"] == "NewReplicaSetAvailable"
                        && c["message"]
                            .as_str()
                            .is_some_and(|m| m.contains(&format!("\"{rs}\"")))
                })
                .cloned();
            let progressing = if let Some(completed) = completed {
                completed
            } else if ready >= replicas {
                condition(
                    obj,
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    &format!("ReplicaSet \"{rs}\" has successfully progressed."),
                    now,
                )
            } else if rolling_for >= Duration::from_secs(deadline) {
                condition(
                    obj,
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    &format!("ReplicaSet \"{rs}\" has timed out progressing."),
                    now,
                )
            } else {
                condition(
                    obj,
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    &format!("ReplicaSet \"{rs}\" is progressing."),
                    now,
                )
            };
            let mut status = json!({
                "observedGeneration": generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": ready,
                "availableReplicas": ready,
                "conditions": [available, progressing],
            });
            if replicas > ready {
                status["unavailableReplicas"] = json!(replicas - ready);
            }
            if ready == 0 {
                status.as_object_mut().map(|m| {
                    m.remove("readyReplicas");
                    m.remove("availableReplicas")
                });
            }
            Some(status)
        }
        "StatefulSet" => {
            let revision = format!("{name}-{hash}");
            Some(json!({
                "observedGeneration": generation,
                "replicas": replicas,
                "readyReplicas": ready,
                "availableReplicas": ready,
                "currentReplicas": replicas,
                "updatedReplicas": replicas,
                "currentRevision": revision,
                "updateRevision": revision,
                "collisionCount": 0,
            }))
        }
        "DaemonSet" => {
            let ready = ready.min(1);
            Some(json!({
                "observedGeneration": generation,
                "desiredNumberScheduled": 1,
                "currentNumberScheduled": 1,
                "updatedNumberScheduled": 1,
                "numberReady": ready,
                "numberAvailable": ready,
                "numberMisscheduled": 0,
            }))
        }
        _ => None,
    }
}

/// Runs the simulation on `store` until the store's event channel closes.
pub fn spawn(store: Arc<Store>, delay: Duration) -> tokio::task::JoinHandle<()> {
    let mut events = store.subscribe();
    let pending: Arc<Mutex<HashSet<Id>>> = Arc::default();
    let rollouts: Arc<Rollouts> = Arc::default();
    tokio::spawn(async move {
        loop {
            let event = match events.recv().await {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if e_kind(&event.key.plural).is_none() || event.key.group != "apps" {
                continue;
            }
            let id = (
                event.key.plural.clone(),
                event.key.namespace.clone(),
                event.key.name.clone(),
            );
            if event.type_ == EventType::Deleted {
                rollouts.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                continue;
            }
            schedule(store.clone(), id, delay, pending.clone(), rollouts.clone());
        }
    })
}

fn e_kind(plural: &str) -> Option<&'static str> {
    match plural {
        "deployments" => Some("Deployment"),
        "statefulsets" => Some("StatefulSet"),
        "daemonsets" => Some("DaemonSet"),
        _ => None,
    }
}

/// A workload: (plural, namespace, name).
type Id = (String, String, String);
/// When each workload's current template (by hash) started rolling out.
type Rollouts = Mutex<HashMap<Id, (String, tokio::time::Instant)>>;

fn schedule(
    store: Arc<Store>,
    id: Id,
    delay: Duration,
    pending: Arc<Mutex<HashSet<Id>>>,
    rollouts: Arc<Rollouts>,
) {
    if !pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone())
    {
        return;
    }
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        let Some(recheck) = reconcile(&store, &id, &rollouts) else {
            return;
        };
        tokio::time::sleep(recheck).await;
        schedule(store, id, Duration::ZERO, pending, rollouts);
    });
}

/// Writes the desired status; returns when to look again (a deadline still ahead).
fn reconcile(store: &Store, id: &Id, rollouts: &Rollouts) -> Option<Duration> {
    let kind = e_kind(&id.0)?;
    let registry = store.registry();
    let res = registry.find("apps", "v1", &id.0)?;
    let obj = store.get(res, Some(&id.1), &id.2).ok()?;
    if obj.pointer("/metadata/deletionTimestamp").is_some() {
        return None;
    }
    let hash = template_hash(obj.pointer("/spec/template").unwrap_or(&Value::Null));
    let started = {
        let mut map = rollouts.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map
            .entry(id.clone())
            .or_insert_with(|| (hash.clone(), tokio::time::Instant::now()));
        if entry.0 != hash {
            *entry = (hash, tokio::time::Instant::now());
        }
        entry.1
    };
    let rolling_for = started.elapsed();
    let status = desired_status(kind, &obj, rolling_for, &now_rfc3339())?;
    if obj.get("status") != Some(&status) {
        let mut updated = obj.clone();
        updated["status"] = status.clone();
        let opts = WriteOptions {
            manager: MANAGER.to_owned(),
            ..Default::default()
        };
        if let Err(err) = store.update(res, Some(&id.1), &id.2, updated, Subresource::Status, &opts) {
            tracing::debug!(error = %err, workload = %id.2, "simulated status write failed; the next event retries");
        }
    }
    let deadline = Duration::from_secs(
        obj.pointer("/spec/progressDeadlineSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(600),
    );
    let pending = ready_after(&obj);
    if kind == "Deployment" && rolling_for < pending {
        return Some(pending - rolling_for + Duration::from_millis(10));
    }
    (kind == "Deployment" && never_ready(&obj) && rolling_for < deadline)
        .then(|| deadline - rolling_for + Duration::from_millis(50))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i64, never: bool) -> Value {
        let mut d = json!({
            "metadata": {"name": "podinfo", "generation": 3},
            "spec": {"replicas": replicas, "progressDeadlineSeconds": 60, "template": {"metadata": {"labels": {"app": "podinfo"}}, "spec": {}}}
        });
        if never {
            d["spec"]["template"]["metadata"]["annotations"] = json!({NEVER_READY_ANNOTATION: "true"});
        }
        d
    }

    fn cond<'a>(status: &'a Value, type_: &str) -> &'a Value {
        status["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
            .expect("condition")
    }

    #[test]
    fn ready_deployment() {
        let s = desired_status("Deployment", &deployment(2, false), Duration::ZERO, "t").expect("status");
        assert_eq!(
            (
                s["observedGeneration"].clone(),
                s["readyReplicas"].clone(),
                s["availableReplicas"].clone()
            ),
            (json!(3), json!(2), json!(2))
        );
        assert_eq!(cond(&s, "Progressing")["reason"], "NewReplicaSetAvailable");
        assert_eq!(cond(&s, "Available")["status"], "True");
    }

    #[test]
    fn scaled_to_zero_is_settled() {
        let s = desired_status("Deployment", &deployment(0, false), Duration::ZERO, "t").expect("status");
        assert_eq!(s["replicas"], 0);
        assert_eq!(s["updatedReplicas"], 0);
        assert_eq!(cond(&s, "Available")["status"], "True");
    }

    #[test]
    fn never_ready_exceeds_its_deadline() {
        let d = deployment(1, true);
        let s = desired_status("Deployment", &d, Duration::from_secs(10), "t").expect("status");
        assert_eq!(cond(&s, "Available")["reason"], "MinimumReplicasUnavailable");
        assert_eq!(cond(&s, "Progressing")["reason"], "ReplicaSetUpdated");
        assert_eq!(s["unavailableReplicas"], 1);
        let s = desired_status("Deployment", &d, Duration::from_secs(61), "t2").expect("status");
        assert_eq!(cond(&s, "Progressing")["reason"], "ProgressDeadlineExceeded");
        assert_eq!(cond(&s, "Progressing")["status"], "False");
    }

    #[test]
    fn scaling_a_completed_deployment_never_times_out() {
        // Complete at 0 replicas, then scaled up with a template that never gets ready.
        let mut d = deployment(0, true);
        d["status"] = desired_status("Deployment", &d, Duration::ZERO, "t0").expect("status");
        d["spec"]["replicas"] = json!(1);
        let s = desired_status("Deployment", &d, Duration::from_secs(600), "t1").expect("status");
        assert_eq!(cond(&s, "Available")["reason"], "MinimumReplicasUnavailable");
        assert_eq!(cond(&s, "Progressing")["reason"], "NewReplicaSetAvailable");
        assert_eq!(cond(&s, "Progressing")["lastUpdateTime"], "t0");
    }

    #[test]
    fn an_unpullable_image_never_becomes_available() {
        for (image, unpullable) in [
            ("registry.invalid/podinfo:6.0.1", true),
            ("registry.invalid:5000/podinfo:6.0.1", true),
            ("ghcr.io/stefanprodan/podinfo:6.0.1", false),
            ("podinfo.invalid", false),
            ("library/invalid:1", false),
        ] {
            assert_eq!(unpullable_image(image), unpullable, "{image}");
        }
        let mut d = deployment(1, false);
        d["spec"]["template"]["spec"]["containers"] =
            json!([{"name": "app", "image": "registry.invalid/podinfo:6.0.1"}]);
        let s = desired_status("Deployment", &d, Duration::from_secs(61), "t").expect("status");
        assert_eq!(cond(&s, "Available")["reason"], "MinimumReplicasUnavailable");
        assert_eq!(cond(&s, "Progressing")["reason"], "ProgressDeadlineExceeded");
    }

    #[test]
    fn timestamps_stay_when_nothing_changes() {
        let mut d = deployment(1, false);
        let first = desired_status("Deployment", &d, Duration::ZERO, "t1").expect("status");
        d["status"] = first.clone();
        let second = desired_status("Deployment", &d, Duration::ZERO, "t2").expect("status");
        assert_eq!(first, second);
    }
}
