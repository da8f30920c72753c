//! `serin run` against the test bed: CRD checks, readiness, a Canary whose target is missing,
//! metrics, a clean shutdown on SIGTERM, and leader election.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::Duration,
};

use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Event, Namespace},
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use serin::api::{Canary, CanarySpec, canary::TargetRef};
use serin_testbed::{Testbed, TestbedOptions};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("binds")
        .local_addr()
        .expect("addr")
        .port()
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.get(9..12)?.parse().ok()?;
    Some((
        code,
        response.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned(),
    ))
}

use serin_testbed::harness::eventually_blocking as eventually;

/// Everything an exited child wrote to stderr.
fn stderr_of(child: &mut Child) -> String {
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("reads");
    stderr
}

fn start_serin(tb: &Testbed, admin_port: u16) -> Child {
    start_serin_with(tb, admin_port, &[])
}

fn start_serin_with(tb: &Testbed, admin_port: u16, flags: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_serin"))
        .args(["run", "--admin-addr", &format!("127.0.0.1:{admin_port}")])
        .args(flags)
        .env("KUBECONFIG", tb.kubeconfig())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serin starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exits_naming_a_missing_crd() {
    let tb = Testbed::start().await.expect("test bed starts");
    let child = start_serin(&tb, free_port());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("waits");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("CRD canaries.flagger.app is not installed"),
        "{stderr}"
    );
    assert!(stderr.contains("kubectl apply -f crds/"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exits_naming_missing_istio_crds() {
    let tb = Testbed::start().await.expect("test bed starts");
    tb.install_crds(serin::api::crds()).await.expect("CRDs");
    let child = start_serin(&tb, free_port());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("waits");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("virtualservices.networking.istio.io is not installed"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_watches_canaries_and_stops_cleanly() {
    let tb = testbed_with_crds().await;
    let client = tb.client();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("test".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let canaries: Api<Canary> = Api::namespaced(client.clone(), "test");
    let mut canary = Canary::new(
        "podinfo",
        CanarySpec {
            target_ref: TargetRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "podinfo".into(),
            },
            analysis: Some(
                serde_json::from_value(
                    serde_json::json!({"interval": "10s", "threshold": 1, "stepWeight": 10}),
                )
                .expect("analysis"),
            ),
            ..Default::default()
        },
    );
    canary.spec.service.port = 9898;
    canaries
        .create(&PostParams::default(), &canary)
        .await
        .expect("canary");

    let port = free_port();
    let mut child = start_serin(&tb, port);
    let events: Api<Event> = Api::namespaced(client.clone(), "test");
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        eventually(Duration::from_secs(20), "serin to be ready", || {
            http_get(port, "/readyz").filter(|(c, _)| *c == 200)
        });
        assert_eq!(http_get(port, "/healthz").map(|(c, _)| c), Some(200));
        let (_, metrics) = eventually(Duration::from_secs(10), "flagger_info in /metrics", || {
            http_get(port, "/metrics").filter(|(_, body)| body.contains("flagger_info{"))
        });
        assert!(metrics.contains(r#"mesh_provider="istio"} 1"#), "{metrics}");
        // The Canary's target does not exist: reported as a Warning event, not fatal.
        eventually(Duration::from_secs(20), "the missing target reported", || {
            runtime
                .block_on(events.list(&Default::default()))
                .ok()
                .filter(|l| {
                    l.items.iter().any(|e| {
                        e.message
                            .as_deref()
                            .is_some_and(|m| m.contains("deployment podinfo.test get query error"))
                    })
                })
        });
        let pid = child.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        let status = eventually(Duration::from_secs(10), "serin to exit after SIGTERM", || {
            child.try_wait().expect("try_wait")
        });
        let stderr = stderr_of(&mut child);
        assert!(status.success(), "serin exited with {status}: {stderr}");
        // The Canary's target does not exist: reported, not fatal.
        assert!(
            stderr.contains("deployment podinfo.test get query error"),
            "{stderr}"
        );
    })
    .await
    .expect("serin checks");
}

/// A test bed with Istio's CRDs (the mesh option) and serin's.
async fn testbed_with_crds() -> Testbed {
    let tb = Testbed::start_with(TestbedOptions {
        mesh: true,
        ..Default::default()
    })
    .await
    .expect("test bed starts");
    tb.install_crds(serin::api::crds()).await.expect("CRDs");
    tb
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_lease_stops_reconciling_and_exits() {
    let tb = testbed_with_crds().await;
    let leases: Api<Lease> = Api::namespaced(tb.client(), "default");
    let port = free_port();
    let flags = ["--leader-elect", "--leader-election-namespace", "default"];
    let mut child = start_serin_with(&tb, port, &flags);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        // Ready means leading with the caches filled.
        eventually(Duration::from_secs(20), "serin to lead and be ready", || {
            http_get(port, "/readyz").filter(|(c, _)| *c == 200)
        });
        let mut lease = runtime
            .block_on(leases.get("serin-leader-election"))
            .expect("the Lease exists");
        let spec = lease.spec.as_mut().expect("Lease spec");
        let holder = spec.holder_identity.clone().expect("a holder");
        assert!(
            !holder.is_empty() && holder != "serin-elsewhere",
            "holder {holder}"
        );
        // Another replica takes the Lease over (as after a partition): serin must stop.
        spec.holder_identity = Some("serin-elsewhere".to_owned());
        spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            jiff::Timestamp::now(),
        ));
        runtime
            .block_on(leases.replace("serin-leader-election", &PostParams::default(), &lease))
            .expect("Lease taken over");
        let status = eventually(
            Duration::from_secs(20),
            "serin to exit after losing the Lease",
            || child.try_wait().expect("try_wait"),
        );
        let stderr = stderr_of(&mut child);
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("lost the leader election lease serin-leader-election"),
            "{stderr}"
        );
        assert!(http_get(port, "/readyz").is_none(), "the admin server stopped");
        let lease = runtime
            .block_on(leases.get("serin-leader-election"))
            .expect("the Lease exists");
        assert_eq!(
            lease.spec.and_then(|s| s.holder_identity).as_deref(),
            Some("serin-elsewhere"),
            "the new holder keeps the Lease"
        );
    })
    .await
    .expect("serin checks");
}
