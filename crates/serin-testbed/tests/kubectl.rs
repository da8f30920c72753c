//! Real `kubectl` against the emulator: the commands a user runs at a terminal and that serin's
//! tests and demo rely on. Runs on the project's own fixtures, and on Flagger's example workloads
//! and Canary (the compatibility suite) where `../shared` is present.

use std::{
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::Duration,
};

use serin_testbed::Testbed;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn run(tb: &Testbed, args: &[&str]) -> Output {
    tb.kubectl()
        .args(args)
        .output()
        .expect("kubectl runs (is it on PATH?)")
}

fn ok(tb: &Testbed, args: &[&str]) -> String {
    let output = run(tb, args);
    assert!(
        output.status.success(),
        "kubectl {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json(tb: &Testbed, args: &[&str]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    serde_json::from_str(&ok(tb, &args)).expect("kubectl prints JSON")
}

use serin_testbed::harness::eventually_blocking as eventually;

/// The acceptance walk-through, on a workloads directory and a Canary manifest.
async fn walk_through(workloads: &Path, canary: &Path, container: &str) {
    let tb = Testbed::start().await.expect("test bed starts");
    let crds = repo().join("crds");
    ok(&tb, &["apply", "-f", crds.to_str().expect("utf8")]);
    ok(&tb, &["create", "ns", "test"]);
    ok(
        &tb,
        &["-n", "test", "apply", "-f", workloads.to_str().expect("utf8")],
    );
    ok(
        &tb,
        &[
            "-n",
            "test",
            "rollout",
            "status",
            "deploy/podinfo",
            "--timeout=30s",
        ],
    );

    let before = json(&tb, &["-n", "test", "get", "deploy", "podinfo"]);
    let set = format!("{container}=ghcr.io/stefanprodan/podinfo:6.0.1");
    ok(&tb, &["-n", "test", "set", "image", "deploy/podinfo", &set]);
    let after = json(&tb, &["-n", "test", "get", "deploy", "podinfo"]);
    let c0 = |d: &serde_json::Value| d["spec"]["template"]["spec"]["containers"][0].clone();
    assert_eq!(c0(&after)["image"], "ghcr.io/stefanprodan/podinfo:6.0.1");
    for field in ["ports", "env", "readinessProbe", "livenessProbe"] {
        assert_eq!(c0(&after)[field], c0(&before)[field], "set image changed {field}");
    }
    let generation = |d: &serde_json::Value| d["metadata"]["generation"].as_i64().unwrap_or_default();
    let bumped = generation(&after) - generation(&before);
    assert!(bumped >= 1, "set image bumps generation");
    // On the real control plane a HorizontalPodAutoscaler of the workloads (Flagger's podinfo has
    // one) may scale the Deployment to its minimum meanwhile, which bumps it once more.
    if bumped > 1 {
        assert_ne!(
            after["spec"]["replicas"], before["spec"]["replicas"],
            "only set image and an autoscaler's scaling changed the spec"
        );
    }
    ok(
        &tb,
        &[
            "-n",
            "test",
            "rollout",
            "status",
            "deploy/podinfo",
            "--timeout=30s",
        ],
    );

    ok(
        &tb,
        &["-n", "test", "apply", "-f", canary.to_str().expect("utf8")],
    );
    let table = ok(&tb, &["-n", "test", "get", "canaries"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "STATUS", "WEIGHT", "LASTTRANSITIONTIME"],
        "{table}"
    );

    // A status written through the status subresource shows in the columns, and
    // `kubectl wait --for=condition=promoted` returns once Promoted=True is written.
    let mut waiter = tb
        .kubectl()
        .args([
            "-n",
            "test",
            "wait",
            "--for=condition=promoted",
            "canary/podinfo",
            "--timeout=20s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl wait starts");
    let progressing = r#"{"status":{"phase":"Progressing","canaryWeight":20,"failedChecks":0,"iterations":0,"lastTransitionTime":"2026-01-01T00:00:00Z"}}"#;
    ok(
        &tb,
        &[
            "-n",
            "test",
            "patch",
            "canary",
            "podinfo",
            "--subresource=status",
            "--type=merge",
            "-p",
            progressing,
        ],
    );
    let table = ok(&tb, &["-n", "test", "get", "canaries"]);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        ["podinfo", "Progressing", "20", "2026-01-01T00:00:00Z"],
        "{table}"
    );
    assert!(
        waiter.try_wait().expect("wait status").is_none(),
        "kubectl wait returned before Promoted=True"
    );
    let promoted = r#"{"status":{"phase":"Succeeded","canaryWeight":0,"conditions":[{"type":"Promoted","status":"True","reason":"Succeeded","message":"Canary analysis completed successfully, promotion finished."}]}}"#;
    ok(
        &tb,
        &[
            "-n",
            "test",
            "patch",
            "canary",
            "podinfo",
            "--subresource=status",
            "--type=merge",
            "-p",
            promoted,
        ],
    );
    let status = eventually(Duration::from_secs(20), "kubectl wait to return", || {
        waiter.try_wait().expect("wait status")
    });
    assert!(status.success(), "kubectl wait failed");

    ok(&tb, &["-n", "test", "scale", "deploy", "podinfo", "--replicas=2"]);
    eventually(Duration::from_secs(10), "two ready replicas", || {
        (json(&tb, &["-n", "test", "get", "deploy", "podinfo"])["status"]["readyReplicas"] == 2).then_some(())
    });

    // Deleting an owner garbage-collects its dependents.
    let uid = json(&tb, &["-n", "test", "get", "canary", "podinfo"])["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_owned();
    let owned = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"owned","namespace":"test","ownerReferences":[{{"apiVersion":"flagger.app/v1beta1","kind":"Canary","name":"podinfo","uid":"{uid}"}}]}},"data":{{"a":"b"}}}}"#
    );
    let path = std::env::temp_dir().join(format!("serin-owned-{}.json", std::process::id()));
    std::fs::write(&path, owned).expect("writes");
    ok(&tb, &["apply", "-f", path.to_str().expect("utf8")]);
    ok(&tb, &["-n", "test", "delete", "canary", "podinfo"]);
    // The garbage collector works asynchronously on a real cluster, and learns a new custom
    // resource kind only at its next discovery resync (every 30 s).
    let gone = eventually(
        Duration::from_secs(90),
        "the dependent ConfigMap to be collected",
        || {
            let out = run(&tb, &["-n", "test", "get", "configmap", "owned"]);
            (!out.status.success()).then_some(out)
        },
    );
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));

    // Server-side apply: fields the manager dropped are removed; another manager's change conflicts.
    let ssa = std::env::temp_dir().join(format!("serin-ssa-{}.yaml", std::process::id()));
    std::fs::write(&ssa, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa, namespace: test}\ndata: {x: \"1\", y: \"2\"}\n").expect("writes");
    ok(
        &tb,
        &["apply", "--server-side", "-f", ssa.to_str().expect("utf8")],
    );
    std::fs::write(
        &ssa,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa, namespace: test}\ndata: {x: \"3\"}\n",
    )
    .expect("writes");
    ok(
        &tb,
        &["apply", "--server-side", "-f", ssa.to_str().expect("utf8")],
    );
    assert_eq!(
        json(&tb, &["-n", "test", "get", "cm", "ssa"])["data"],
        serde_json::json!({"x": "3"})
    );
    ok(
        &tb,
        &[
            "-n",
            "test",
            "patch",
            "cm",
            "ssa",
            "--type=merge",
            "-p",
            r#"{"data":{"x":"edited"}}"#,
        ],
    );
    let conflict = run(
        &tb,
        &["apply", "--server-side", "-f", ssa.to_str().expect("utf8")],
    );
    assert!(!conflict.status.success(), "a conflicting apply succeeded");
    assert!(
        String::from_utf8_lossy(&conflict.stderr).contains("conflict"),
        "{}",
        String::from_utf8_lossy(&conflict.stderr)
    );
    ok(
        &tb,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            ssa.to_str().expect("utf8"),
        ],
    );
    assert_eq!(json(&tb, &["-n", "test", "get", "cm", "ssa"])["data"]["x"], "3");

    // `kubectl get -w` streams rows.
    let mut watch = tb
        .kubectl()
        .args(["-n", "test", "get", "configmaps", "-w", "--request-timeout=8s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w starts");
    let stdout = watch.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let header = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("kubectl get -w prints the table header");
    assert!(header.starts_with("NAME"), "{header}");
    // Drain the initial rows, then create an object: its row must arrive through the watch.
    while rx.recv_timeout(Duration::from_millis(500)).is_ok() {}
    ok(
        &tb,
        &[
            "-n",
            "test",
            "create",
            "configmap",
            "streamed",
            "--from-literal=a=b",
        ],
    );
    let row = eventually(Duration::from_secs(10), "the streamed row", || {
        rx.recv_timeout(Duration::from_millis(100))
            .ok()
            .filter(|l| l.starts_with("streamed"))
    });
    assert!(row.starts_with("streamed"), "{row}");
    let _ = watch.kill();
    let _ = watch.wait();
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(ssa);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_walk_through_on_project_fixtures() {
    walk_through(
        &fixtures().join("workloads"),
        &fixtures().join("canary.yaml"),
        "podinfod",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_walk_through_on_flagger_examples() {
    let shared = repo().join("../shared/fixtures/flagger");
    if !shared.is_dir() {
        eprintln!(
            "SKIP: Flagger fixtures not found at {} (the compatibility suite needs ../shared)",
            shared.display()
        );
        return;
    }
    walk_through(
        &shared.join("workloads"),
        &shared.join("canaries/canary-progressive.yaml"),
        "podinfod",
    )
    .await;
}

/// The real control plane, whatever `SERIN_TESTBED_CLUSTER` says: Deployments become ready
/// through their ReplicaSets and kwok's Pods, a never-ready template and an unpullable image
/// report ProgressDeadlineExceeded, and a StatefulSet's claim is provisioned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_cluster_runs_workloads_as_a_cluster_does() {
    let tb = Testbed::start_with(serin_testbed::TestbedOptions {
        cluster: Some(serin_testbed::ClusterKind::Real),
        ..Default::default()
    })
    .await
    .expect("the real cluster starts (make cluster builds it)");
    let version = run(&tb, &["version", "-o", "json"]);
    let version: serde_json::Value = serde_json::from_slice(&version.stdout).expect("JSON");
    assert!(
        version["serverVersion"]["gitVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("v1.")),
        "{version}"
    );
    let nodes = json(&tb, &["get", "nodes"]);
    assert_eq!(nodes["items"][0]["metadata"]["name"], "kwok-node-0");
    let manifest = fixtures().join("real/workloads.yaml");
    ok(&tb, &["apply", "-f", manifest.to_str().expect("utf8")]);
    ok(&tb, &["rollout", "status", "deploy/web", "--timeout=60s"]);
    let pods = json(&tb, &["get", "pods", "-l", "app=web"]);
    assert_eq!(pods["items"].as_array().map(Vec::len), Some(2), "{pods}");
    let replica_sets = json(&tb, &["get", "replicasets", "-l", "app=web"]);
    assert_eq!(replica_sets["items"][0]["status"]["readyReplicas"], 2);
    for name in ["never", "nopull"] {
        eventually(
            Duration::from_secs(60),
            &format!("{name} to exceed its deadline"),
            || {
                let d = json(&tb, &["get", "deploy", name]);
                d["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["reason"] == "ProgressDeadlineExceeded")
                    .then_some(())
            },
        );
    }
    let waiting = eventually(Duration::from_secs(30), "ImagePullBackOff", || {
        let pods = json(&tb, &["get", "pods", "-l", "app=nopull"]);
        let reason = pods["items"][0]["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].clone();
        (reason == "ImagePullBackOff").then_some(reason)
    });
    assert_eq!(waiting, "ImagePullBackOff");
    ok(&tb, &["rollout", "status", "statefulset/db", "--timeout=60s"]);
    let claim = json(&tb, &["get", "pvc", "data-db-0"]);
    assert_eq!(claim["status"]["phase"], "Bound", "{claim}");
}
