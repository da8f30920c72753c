//! serin's speed and memory with many Canaries on the test bed: how long it takes to initialise
//! them, how much memory the controller holds, how many API requests it makes while they are
//! idle, and how soon a new revision is picked up (Flagger notices it on its next control-loop
//! tick, 10 s by default). Prints figures; asserts nothing. Run with `make bench` (release build);
//! `SERIN_BENCH_CANARIES` sets the number of Canaries (default 100).

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Namespace};
use kube::{
    Api,
    api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;
use serin::api::{Canary, CanaryPhase};
use serin_testbed::{Testbed, TestbedOptions};

const NS: &str = "bench";

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "ghcr.io/stefanprodan/podinfo:6.0.0", "ports": [{"containerPort": 9898}]}]}
            }
        }
    }))
    .expect("deployment")
}

fn canary(name: &str) -> Canary {
    serde_json::from_value(json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": name},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": {"port": 9898},
            "analysis": {"interval": "10s", "threshold": 1, "maxWeight": 50, "stepWeight": 50}
        }
    }))
    .expect("canary")
}

/// Kernel-reported memory of a process: (resident now, peak resident) in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn phases(api: &Api<Canary>) -> Vec<(String, CanaryPhase)> {
    api.list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .map(|c| {
                    (
                        c.metadata.name.clone().unwrap_or_default(),
                        c.status.map(|s| s.phase).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Serin(Child);

impl Drop for Serin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() {
    serin_runtime::tls::install_crypto_provider();
    let count: usize = std::env::var("SERIN_BENCH_CANARIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let tb = Testbed::start_with(TestbedOptions {
        mesh: true,
        ..TestbedOptions::default()
    })
    .await
    .expect("test bed starts");
    let client = tb.client();
    let crds: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(client.clone());
    for crd in serin::api::crds() {
        crds.create(&PostParams::default(), &crd).await.expect("CRD");
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(NS.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let canaries: Api<Canary> = Api::namespaced(client.clone(), NS);
    for i in 0..count {
        let name = format!("app-{i}");
        deployments
            .create(&PostParams::default(), &deployment(&name))
            .await
            .expect("deployment");
        canaries
            .create(&PostParams::default(), &canary(&name))
            .await
            .expect("canary");
    }

    let started = Instant::now();
    let serin = Serin(
        Command::new(env!("CARGO_BIN_EXE_serin"))
            .args(["run", "--admin-addr", "127.0.0.1:0"])
            .env("KUBECONFIG", tb.kubeconfig())
            .env("RUST_LOG", "warn")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serin starts"),
    );
    let pid = serin.0.id();
    loop {
        let p = phases(&canaries).await;
        if p.iter().filter(|(_, ph)| *ph == CanaryPhase::Initialized).count() == count {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "not all Canaries initialised: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let init = started.elapsed();
    println!(
        "initialised {count} Canaries (primary, 3 Services, 2 DestinationRules, VirtualService each) in {:.2} s",
        init.as_secs_f64()
    );

    // Idle: nothing changes, so serin should neither write nor poll.
    tokio::time::sleep(Duration::from_secs(2)).await;
    tb.reset_requests().await.expect("reset");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle: u64 = tb
        .requests()
        .await
        .expect("requests")
        .iter()
        // The benchmark itself sends nothing in this window; open watches are not requests.
        .filter(|r| r.verb != "watch")
        .map(|r| r.count)
        .sum();
    let (rss, peak) = memory_mib(pid);
    println!("API requests in 10 s with {count} idle Canaries: {idle}");
    println!("serin memory with {count} Canaries: {rss:.1} MiB resident, {peak:.1} MiB peak");

    // Reaction: a new image on a target until its Canary is Progressing.
    let mut reactions = Vec::new();
    for i in 0..10.min(count) {
        let name = format!("app-{i}");
        let t = Instant::now();
        deployments
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "ghcr.io/stefanprodan/podinfo:6.0.1"}]}}}})),
            )
            .await
            .expect("new image");
        loop {
            let c = canaries.get(&name).await.expect("canary");
            if c.status.map(|s| s.phase) == Some(CanaryPhase::Progressing) {
                reactions.push(t.elapsed());
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "{name} never progressed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    reactions.sort();
    println!(
        "new revision to Progressing: p50 {:.0} ms, max {:.0} ms over {} revisions (Flagger: up to one control-loop tick, 10 s by default)",
        percentile(&reactions, 0.5).as_secs_f64() * 1000.0,
        percentile(&reactions, 1.0).as_secs_f64() * 1000.0,
        reactions.len()
    );
    let (rss, peak) = memory_mib(pid);
    println!("serin memory after the rollouts started: {rss:.1} MiB resident, {peak:.1} MiB peak");
    drop(serin);
    tb.stop().await;
}
