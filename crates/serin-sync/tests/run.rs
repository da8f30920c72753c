//! `serin-sync run` as a process against the test bed: it refuses to start without its CRDs,
//! serves `/readyz` once it watches, and syncs the example repository.

mod support;

use std::{
    io::{Read, Write},
    time::Duration,
};

use serin_testbed::Testbed;
use support::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

fn http_status(port: u16, path: &str) -> Option<u16> {
    http_get(port, path)?.split_whitespace().nth(1)?.parse().ok()
}

struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serin_sync(tb: &Testbed, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_serin-sync"));
    cmd.args(args)
        .env("KUBECONFIG", tb.kubeconfig())
        .env("LOG_LEVEL", "warn");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_needs_its_crds_then_syncs() {
    let tb = Testbed::start().await.expect("test bed");
    let storage = tempfile::tempdir().expect("tempdir");
    let storage_path = storage.path().to_str().expect("utf-8").to_owned();
    let port = free_port().to_string();
    let admin = format!("127.0.0.1:{port}");
    let args = [
        "run",
        "--admin-addr",
        &admin,
        "--storage-path",
        &storage_path,
        "--requeue-dependency",
        "1s",
        "--health-check-interval",
        "1s",
    ];

    let missing = tokio::task::spawn_blocking({
        let mut cmd = serin_sync(&tb, &args);
        move || cmd.output().expect("runs")
    })
    .await
    .expect("joined");
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("CRD gitrepositories.source.toolkit.fluxcd.io is not installed"),
        "{stderr}"
    );

    install_crds(&tb).await;
    create_namespace(&tb.client(), "flux-system").await;
    let _process = Process(serin_sync(&tb, &args).spawn().expect("serin-sync run starts"));
    let port: u16 = port.parse().expect("port");
    eventually(Duration::from_secs(30), "/readyz to answer 200", || async move {
        (http_status(port, "/readyz") == Some(200)).then_some(())
    })
    .await;
    assert_eq!(http_status(port, "/healthz"), Some(200));

    let repo = GitFixture::from_examples();
    kubectl_apply(&tb, &bootstrap_yaml(&repo.url(), "./clusters/dev", "1m"));
    mark_canary(&tb.client(), "podinfo", "podinfo", "Initialized").await;
    wait_applied(
        &tb.client(),
        "apps",
        &format!("main@sha1:{}", repo.head()),
        Duration::from_secs(60),
    )
    .await;
    let metrics = http_get(port, "/metrics").unwrap_or_default();
    assert!(
        metrics.contains("gotk_reconcile_duration_seconds_count{kind=\"Kustomization\",name=\"apps\",namespace=\"flux-system\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "gotk_suspend_status{kind=\"GitRepository\",name=\"flux-system\",namespace=\"flux-system\"} 0"
        ),
        "{metrics}"
    );
}
