//! The real helm CLI (built from Helm's Go module by `make cluster`) against the test bed's API
//! server: install a small chart with `--wait`, find its objects and release Secret, uninstall,
//! find them gone.

mod common;

use std::{path::Path, process::Command, time::Duration};

use common::{create_namespace, eventually};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Secret, Service},
};
use kube::Api;
use serin_testbed::Testbed;

/// Runs `helm ARGS` and returns its standard output.
fn helm(args: &[&str]) -> String {
    let output = Command::new(serin_testbed::helm_program())
        .args(args)
        .output()
        .expect("helm runs (make cluster builds it)");
    assert!(
        output.status.success(),
        "helm {} failed (exit {:?}):\n{}{}",
        args.join(" "),
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installs_and_uninstalls_a_chart() {
    let tb = Testbed::start().await.expect("test bed starts");
    if tb.kind() == serin_testbed::ClusterKind::Emulator {
        // `helm install --wait` finds a Deployment ready through its ReplicaSet, which only the
        // real control plane creates (FIDELITY.md, row 5).
        eprintln!(
            "skipped on the API emulator: helm --wait needs ReplicaSets; run it with SERIN_TESTBED_CLUSTER=real"
        );
        return;
    }
    let client = tb.client();
    create_namespace(&client, "apps").await;
    let kubeconfig = tb.kubeconfig().to_str().expect("utf8").to_owned();
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/helm/webapp");
    let chart = chart.to_str().expect("utf8").to_owned();

    let installed = tokio::task::spawn_blocking({
        let (kubeconfig, chart) = (kubeconfig.clone(), chart.clone());
        move || {
            helm(&[
                "install",
                "web",
                &chart,
                "--kubeconfig",
                &kubeconfig,
                "--namespace",
                "apps",
                "--wait",
                "--timeout",
                "90s",
                "--output",
                "json",
            ])
        }
    })
    .await
    .expect("install task");
    let installed: serde_json::Value = serde_json::from_str(&installed).expect("the release as JSON");
    assert_eq!(installed["info"]["status"], "deployed", "{installed}");

    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "apps");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "apps");
    let services: Api<Service> = Api::namespaced(client.clone(), "apps");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "apps");
    let cm = configmaps.get("web-config").await.expect("ConfigMap installed");
    assert_eq!(
        cm.data.and_then(|d| d.get("message").cloned()).as_deref(),
        Some("hello from helm")
    );
    // `wait` returned, so the Deployment must be ready already.
    let deploy = deployments.get("web").await.expect("Deployment installed");
    assert_eq!(deploy.status.and_then(|s| s.ready_replicas), Some(2));
    let svc = services.get("web").await.expect("Service installed");
    assert!(
        svc.spec
            .and_then(|s| s.cluster_ip)
            .is_some_and(|ip| !ip.is_empty()),
        "a Service gets a cluster IP"
    );
    let release_secret = secrets
        .get("sh.helm.release.v1.web.v1")
        .await
        .expect("release Secret");
    assert_eq!(release_secret.type_.as_deref(), Some("helm.sh/release.v1"));

    tokio::task::spawn_blocking(move || {
        helm(&[
            "uninstall",
            "web",
            "--kubeconfig",
            &kubeconfig,
            "--namespace",
            "apps",
            "--wait",
        ])
    })
    .await
    .expect("uninstall task");
    eventually(
        Duration::from_secs(30),
        "the release's objects to be gone",
        || {
            let (configmaps, deployments, services, secrets) = (
                configmaps.clone(),
                deployments.clone(),
                services.clone(),
                secrets.clone(),
            );
            async move {
                let gone = configmaps.get_opt("web-config").await.ok()?.is_none()
                    && deployments.get_opt("web").await.ok()?.is_none()
                    && services.get_opt("web").await.ok()?.is_none()
                    && secrets.get_opt("sh.helm.release.v1.web.v1").await.ok()?.is_none();
                gone.then_some(())
            }
        },
    )
    .await;
}
