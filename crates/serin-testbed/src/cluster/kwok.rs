//! kwok's configuration for the real cluster: the Stages that make fake nodes Ready and keep
//! their leases, Pods Running and Ready, deleted Pods gone, and the two ways a Pod fails as on a
//! cluster: a pod template annotated `testbed.serin.dev/never-ready: "true"` runs but never
//! becomes Ready, and an image the test bed cannot pull (see [`crate::workloads::unpullable_image`])
//! waits in ErrImagePull, then ImagePullBackOff. PersistentVolumeClaims of the default
//! StorageClass [`STORAGE_CLASS`] are provisioned and bound at once, so StatefulSets with volume
//! claim templates become ready. A pod template annotated `testbed.serin.dev/ready-after: 3s`
//! becomes Ready that long after its Pods are created. A run-to-completion Pod (`restartPolicy`
//! Never or OnFailure: a Helm test, a Job's) completes a second after it runs, or fails with exit
//! code 1 when annotated `testbed.serin.dev/fail: "true"`. The fake nodes take 100,000 Pods each
//! (a kubelet's default is 110): the benchmarks run thousands of Deployments on one node, and
//! the emulator has no capacity limit either. Pure: text only.

/// The cluster's default StorageClass, whose claims kwok provisions.
pub const STORAGE_CLASS: &str = "testbed-volume";

/// The StorageClass object.
pub fn storage_class() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "testbed.serin.dev/volume",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    })
}

/// The annotation that kwok's `--manage-nodes-with-annotation-selector` selects.
pub const NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// A gojq expression true for a Pod with a container image the test bed cannot pull: its
/// registry host ends in `.invalid`, a name that never resolves (RFC 6761).
const UNPULLABLE: &str = r#".spec.containers.[].image | test("^[^/]*[.]invalid(:[0-9]+)?/")"#;
const NEVER_READY: &str = r#".metadata.annotations["testbed.serin.dev/never-ready"]"#;
/// A gojq expression for the readiness delay (a Go duration; none when absent).
const READY_AFTER: &str = r#".metadata.annotations["testbed.serin.dev/ready-after"]"#;
/// A gojq expression true for a run-to-completion Pod that is to fail (exit code 1).
const FAILS: &str = r#".metadata.annotations["testbed.serin.dev/fail"]"#;

/// The Stage documents, for kwok's `--config`.
pub fn stages() -> String {
    format!(
        r#"apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-initialize
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ["True"]
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      {{{{ $lastTransitionTime := or .metadata.creationTimestamp $now }}}}
      conditions:
      {{{{ range NodeConditions }}}}
      - lastHeartbeatTime: {{{{ $now | Quote }}}}
        lastTransitionTime: {{{{ $lastTransitionTime | Quote }}}}
        message: {{{{ .message | Quote }}}}
        reason: {{{{ .reason | Quote }}}}
        status: {{{{ .status | Quote }}}}
        type: {{{{ .type | Quote }}}}
      {{{{ end }}}}
      addresses:
      {{{{ with NodeIP }}}}
      - address: {{{{ . | Quote }}}}
        type: InternalIP
      {{{{ end }}}}
      {{{{ with NodeName }}}}
      - address: {{{{ . | Quote }}}}
        type: Hostname
      {{{{ end }}}}
      allocatable:
        cpu: "64"
        memory: 256Gi
        pods: "100000"
      capacity:
        cpu: "64"
        memory: 256Gi
        pods: "100000"
      nodeInfo:
        architecture: amd64
        kubeletVersion: kwok
        operatingSystem: linux
      phase: Running
{ready}{never_ready}{pull_error}---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-image-pull-backoff
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: .metadata.deletionTimestamp
      operator: DoesNotExist
    - key: '.status.containerStatuses.[].state.waiting.reason'
      operator: In
      values: [ErrImagePull]
  delay:
    durationMilliseconds: 2000
  next:
    statusTemplate: |
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: false
        started: false
        restartCount: 0
        state:
          waiting:
            reason: ImagePullBackOff
            message: {{{{ printf "Back-off pulling image %q" .image | Quote }}}}
      {{{{ end }}}}
{complete}{fail}---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-delete
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: .metadata.deletionTimestamp
      operator: Exists
  next:
    delete: true
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: claim-provision
spec:
  resourceRef:
    apiGroup: v1
    kind: PersistentVolumeClaim
  selector:
    matchExpressions:
    - cel:
        expression: self.spec.storageClassName == '{STORAGE_CLASS}' && !has(self.metadata.deletionTimestamp) && !has(self.spec.volumeName)
  steps:
  - apply:
      template: |
        apiVersion: v1
        kind: PersistentVolume
        metadata:
          name: pv-{{{{ .metadata.uid }}}}
        spec:
          accessModes:
          {{{{ YAML .spec.accessModes 2 }}}}
          capacity:
          {{{{ YAML .spec.resources.requests 2 }}}}
          persistentVolumeReclaimPolicy: Delete
          storageClassName: {STORAGE_CLASS}
          claimRef:
            apiVersion: v1
            kind: PersistentVolumeClaim
            name: {{{{ .metadata.name | Quote }}}}
            namespace: {{{{ .metadata.namespace | Quote }}}}
            uid: {{{{ .metadata.uid | Quote }}}}
          hostPath:
            path: /nonexistent/pv-{{{{ .metadata.uid }}}}
  - patch:
      root: metadata
      template: |
        annotations:
          pv.kubernetes.io/bind-completed: "yes"
          pv.kubernetes.io/bound-by-controller: "yes"
  - patch:
      root: spec
      template: |
        volumeName: pv-{{{{ .metadata.uid }}}}
  - patch:
      root: status
      subresource: status
      template: |
        phase: Bound
        accessModes:
        {{{{ YAML .spec.accessModes 1 }}}}
        capacity:
        {{{{ YAML .spec.resources.requests 1 }}}}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: volume-bind
spec:
  resourceRef:
    apiGroup: v1
    kind: PersistentVolume
  selector:
    matchExpressions:
    - cel:
        expression: self.spec.storageClassName == '{STORAGE_CLASS}' && !has(self.metadata.deletionTimestamp) && has(self.spec.claimRef) && (!has(self.status.phase) || self.status.phase in ['Pending', 'Available'])
  steps:
  - patch:
      root: status
      subresource: status
      template: |
        phase: Bound
"#,
        complete = completion_stage("pod-complete", "NotIn", "Succeeded", 0, "Completed"),
        fail = completion_stage("pod-fail", "In", "Failed", 1, "Error"),
        ready = pod_stage(
            "pod-ready",
            &[(NEVER_READY, "NotIn", "true"), (UNPULLABLE, "NotIn", "true"),],
            &PodState::ready(),
        ),
        never_ready = pod_stage(
            "pod-never-ready",
            &[(NEVER_READY, "In", "true"), (UNPULLABLE, "NotIn", "true")],
            &PodState::running_unready(),
        ),
        pull_error = pod_stage(
            "pod-image-pull-error",
            &[
                (UNPULLABLE, "In", "true"),
                (WAITING_REASON, "NotIn", "ErrImagePull, ImagePullBackOff"),
            ],
            &PodState::image_pull_error(),
        ),
    )
}

const WAITING_REASON: &str = ".status.containerStatuses.[].state.waiting.reason";

/// A Stage for running, undeleted run-to-completion Pods (`restartPolicy` Never or OnFailure)
/// whose `testbed.serin.dev/fail` annotation is (`In`) or is not (`NotIn`) "true": a second
/// later their containers have exited with `exit_code` and the Pod is in `phase`.
fn completion_stage(name: &str, fails: &str, phase: &str, exit_code: u8, reason: &str) -> String {
    format!(
        r#"---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: {name}
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: .metadata.deletionTimestamp
      operator: DoesNotExist
    - key: .status.phase
      operator: In
      values: [Running]
    - key: .spec.restartPolicy
      operator: In
      values: [Never, OnFailure]
    - key: '{FAILS}'
      operator: {fails}
      values: ["true"]
  delay:
    durationMilliseconds: 1000
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      conditions:
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "False", reason: PodCompleted, type: Ready}}
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "False", reason: PodCompleted, type: ContainersReady}}
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: false
        started: false
        restartCount: 0
        state:
          terminated:
            exitCode: {exit_code}
            reason: {reason}
            finishedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      phase: {phase}
"#
    )
}

/// What a pod stage writes: readiness, each container's state, the phase.
struct PodState {
    ready: bool,
    started: bool,
    /// The container state (YAML at the depth of `state:`'s value).
    container_state: &'static str,
    phase: &'static str,
    with_ips: bool,
}

impl PodState {
    fn ready() -> Self {
        Self {
            ready: true,
            started: true,
            container_state: "running:\n            startedAt: {{ $now | Quote }}",
            phase: "Running",
            with_ips: true,
        }
    }

    fn running_unready() -> Self {
        Self {
            ready: false,
            ..Self::ready()
        }
    }

    fn image_pull_error() -> Self {
        Self {
            ready: false,
            started: false,
            container_state: "waiting:\n            reason: ErrImagePull\n            message: {{ printf \"failed to pull image %q: failed to resolve reference: dial tcp: lookup: no such host\" .image | Quote }}",
            phase: "Pending",
            with_ips: false,
        }
    }
}

/// A Stage for Pending, undeleted Pods that also match `selectors` (gojq key, operator, values),
/// writing `state`.
fn pod_stage(name: &str, selectors: &[(&str, &str, &str)], state: &PodState) -> String {
    let mut out = format!(
        "---\napiVersion: kwok.x-k8s.io/v1alpha1\nkind: Stage\nmetadata:\n  name: {name}\nspec:\n  resourceRef:\n    apiGroup: v1\n    kind: Pod\n  selector:\n    matchExpressions:\n    - key: .metadata.deletionTimestamp\n      operator: DoesNotExist\n    - key: .status.phase\n      operator: In\n      values: [Pending]\n    - key: '.status.conditions.[] | select( .type == \"Ready\" ) | .status'\n      operator: NotIn\n      values: [\"True\"]\n"
    );
    for (key, operator, values) in selectors {
        // Quoted: an unquoted `true` is a YAML boolean, which kwok refuses as a value.
        let values: Vec<String> = values.split(", ").map(|v| format!("{v:?}")).collect();
        out.push_str(&format!(
            "    - key: '{key}'\n      operator: {operator}\n      values: [{}]\n",
            values.join(", ")
        ));
    }
    let (status, reason) = if state.ready {
        ("\"True\"", "")
    } else {
        ("\"False\"", ", reason: ContainersNotReady")
    };
    if state.ready {
        out.push_str(&format!(
            "  delay:\n    durationMilliseconds: 0\n    durationFrom:\n      jq:\n        expression: '{READY_AFTER}'\n"
        ));
    }
    out.push_str("  next:\n    statusTemplate: |\n      {{ $now := Now }}\n      conditions:\n");
    out.push_str("      - {lastTransitionTime: {{ $now | Quote }}, status: \"True\", type: Initialized}\n");
    for type_ in ["Ready", "ContainersReady"] {
        out.push_str(&format!(
            "      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: {status}{reason}, type: {type_}}}\n"
        ));
    }
    out.push_str("      - {lastTransitionTime: {{ $now | Quote }}, status: \"True\", type: PodScheduled}\n");
    out.push_str(&format!(
        "      containerStatuses:\n      {{{{ range .spec.containers }}}}\n      - image: {{{{ .image | Quote }}}}\n        name: {{{{ .name | Quote }}}}\n        ready: {}\n        started: {}\n        restartCount: 0\n        state:\n          {}\n      {{{{ end }}}}\n",
        state.ready, state.started, state.container_state
    ));
    if state.with_ips {
        out.push_str("      {{ with NodeIPWith .spec.nodeName }}\n      hostIP: {{ . | Quote }}\n      {{ end }}\n      {{ with PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid \"\" ) ( or .metadata.name \"\" ) ( or .metadata.namespace \"\" ) }}\n      podIP: {{ . | Quote }}\n      {{ end }}\n");
    }
    out.push_str(&format!(
        "      phase: {}\n      startTime: {{{{ $now | Quote }}}}\n",
        state.phase
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_yaml_documents_with_unique_names() {
        let text = stages();
        let mut names = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc).expect("each stage is YAML");
            assert_eq!(value["kind"], "Stage");
            let template = &value["spec"]["next"]["statusTemplate"];
            assert!(
                template.is_string()
                    || value["spec"]["next"]["delete"] == true
                    || value["spec"]["steps"].is_sequence()
            );
            names.push(value["metadata"]["name"].as_str().expect("named").to_owned());
        }
        assert_eq!(
            names,
            [
                "node-initialize",
                "pod-ready",
                "pod-never-ready",
                "pod-image-pull-error",
                "pod-image-pull-backoff",
                "pod-complete",
                "pod-fail",
                "pod-delete",
                "claim-provision",
                "volume-bind"
            ]
        );
        // Selector values stay strings (kwok refuses a YAML boolean).
        assert!(text.contains(r#"values: ["true"]"#) && !text.contains("values: [true]"));
        assert!(text.contains(r#"expression: '.metadata.annotations["testbed.serin.dev/ready-after"]'"#));
        // Go template braces survive Rust's formatting.
        assert!(text.contains("{{ $now := Now }}"));
        assert!(text.contains(r#"test("^[^/]*[.]invalid(:[0-9]+)?/")"#));
    }

    use serde::Deserialize;
}
