//! Acceptance 2 with the canary engine: a new image tag committed to Git is applied by serin-sync
//! and serin canaries and promotes it, on the full test bed (simulated Istio traffic, real
//! Prometheus, loadtester). Runs when the `serin` binary is built next to this test (as in
//! `make test`); otherwise skips with a message.

mod support;

use std::{path::PathBuf, process::Stdio, time::Duration};

use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind},
};
use serin_testbed::{Testbed, TestbedOptions};
use support::*;

/// The `serin` binary of the same build, if it was built.
fn serin_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?;
    let bin = dir.join("serin");
    bin.is_file().then_some(bin)
}

struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn canary_phase(api: &Api<DynamicObject>) -> Option<(String, String)> {
    let c = api.get_opt("podinfo").await.ok()??;
    let phase = c.data["status"]["phase"].as_str()?.to_owned();
    let revision = c.data["status"]["lastAppliedSpec"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Some((phase, revision))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tag_from_git_is_canaried_and_promoted() {
    let Some(serin) = serin_binary() else {
        eprintln!(
            "skipping: the serin binary is not built next to this test (cargo build --bin serin, or make test)"
        );
        return;
    };
    let tb = match Testbed::start_with(TestbedOptions::full()).await {
        Ok(tb) => tb,
        Err(e) => {
            eprintln!("skipping: the full test bed needs Prometheus (apt-get install -y prometheus): {e}");
            return;
        }
    };
    install_crds(&tb).await;
    create_namespace(&tb.client(), "flux-system").await;
    let repo = GitFixture::from_examples();
    let _controllers = start_controllers(&tb);
    kubectl_apply(&tb, &bootstrap_yaml(&repo.url(), "./clusters/dev", "2s"));
    let first = format!("main@sha1:{}", repo.head());
    wait_applied(&tb.client(), "infrastructure", &first, Duration::from_secs(60)).await;
    tb.register_loadtester("podinfo").await.expect("loadtester");

    let proxy = tb.proxy_url().expect("proxy").to_owned();
    let log = tempfile::NamedTempFile::new().expect("log");
    let _serin = Process(
        std::process::Command::new(serin)
            .args([
                "run",
                "--admin-addr",
                "127.0.0.1:0",
                "--metrics-server",
                "http://prometheus.istio-system:9090",
            ])
            .env("KUBECONFIG", tb.kubeconfig())
            .env("HTTP_PROXY", &proxy)
            .env("http_proxy", &proxy)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env("RUST_LOG", "info,kube=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log"))
            .spawn()
            .expect("serin starts"),
    );
    let gvk = GroupVersionKind::gvk("flagger.app", "v1beta1", "Canary");
    let canaries: Api<DynamicObject> = Api::namespaced_with(
        tb.client(),
        "podinfo",
        &ApiResource::from_gvk_with_plural(&gvk, "canaries"),
    );
    let serin_log = || std::fs::read_to_string(log.path()).unwrap_or_default();

    // serin initializes the Canary; serin-sync's apps then become healthy.
    wait_applied(&tb.client(), "apps", &first, Duration::from_secs(120)).await;

    // Promotion: a new tag in Git.
    let file = repo.work().join("apps/dev/kustomization.yaml");
    let promoted = std::fs::read_to_string(&file)
        .expect("read")
        .replace("newTag: 6.5.0", "newTag: 6.5.1");
    let second = repo.commit(
        &[("apps/dev/kustomization.yaml", Some(&promoted))],
        "podinfo 6.5.1",
    );
    let second = format!("main@sha1:{second}");
    let start = tokio::time::Instant::now();
    let mut seen_progressing = false;
    loop {
        let phase = canary_phase(&canaries).await.map(|(p, _)| p).unwrap_or_default();
        seen_progressing |= phase == "Progressing";
        if seen_progressing && phase == "Succeeded" {
            break;
        }
        assert!(phase != "Failed", "the canary failed:\n{}", serin_log());
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "no promotion (phase {phase}):\n{}",
            serin_log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let apps = wait_applied(&tb.client(), "apps", &second, Duration::from_secs(60)).await;
    assert!(
        apps.status
            .expect("status")
            .conditions
            .iter()
            .any(|c| c.type_ == "Healthy" && c.status == "True")
    );
    let primary = tb
        .kubectl()
        .args([
            "get",
            "deploy",
            "podinfo-primary",
            "-n",
            "podinfo",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .output()
        .expect("kubectl");
    assert_eq!(
        String::from_utf8_lossy(&primary.stdout),
        "ghcr.io/stefanprodan/podinfo:6.5.1"
    );
}
