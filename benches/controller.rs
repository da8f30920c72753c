//! serin's speed and memory with many Canaries on the test bed: how long it takes to initialise
//! them, how much memory the controller holds, how many API requests it makes while they are
//! idle, and how soon a new revision is picked up (Flagger notices it on its next control-loop
//! tick, 10 s by default). Prints figures; asserts nothing. Run with `make bench` (release build);
//! `SERIN_BENCH_CANARIES` sets the number of Canaries (default 100), `SERIN_BENCH_UNRELATED`
//! the number of unrelated Deployments next to them (default 2,000, with 2.5 times as many
//! unrelated ConfigMaps and Secrets of 8 KiB each, as Helm release Secrets are), and
//! `SERIN_BENCH_REVISIONS` the number of new revisions timed (default 50),
//! `SERIN_BENCH_PROGRESSING` the number of Canaries given a new revision at once afterwards
//! (default: all, at most 1,000), whose rollouts are timed against one rollout alone,
//! and `SERIN_BENCH_WRAPPER` a command serin runs under (a profiler: `heaptrack`,
//! `perf record -g`).
//!
//! The benchmark follows the Canaries through a watch (a reflector), not by listing them: the
//! API server's load is serin's alone.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, Namespace, Secret},
    },
};
use kube::{
    Api,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    runtime::{reflector, watcher},
};
use serde_json::json;
use serin::api::{Canary, CanaryPhase};
use serin_testbed::{
    Testbed, TestbedOptions,
    process::{Controller, cpu_time, memory_mib},
};

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

/// The phase of every Canary, from the benchmark's reflector (no API request).
fn phases(store: &reflector::Store<Canary>) -> Vec<(String, CanaryPhase)> {
    store
        .state()
        .iter()
        .map(|c| {
            (
                c.metadata.name.clone().unwrap_or_default(),
                c.status.as_ref().map(|s| s.phase).unwrap_or_default(),
            )
        })
        .collect()
}

fn phase_of(store: &reflector::Store<Canary>, name: &str) -> Option<CanaryPhase> {
    store
        .get(&reflector::ObjectRef::new(name).within(NS))
        .and_then(|c| c.status.as_ref().map(|s| s.phase))
}

/// Every phase each Canary went through, as the benchmark's watch delivered them, with the time
/// each arrived: a phase held for less than a polling period is still seen.
#[derive(Clone, Default)]
struct Transitions(Arc<Mutex<HashMap<String, Phases>>>);

/// A Canary's phases in the order they arrived.
type Phases = Vec<(CanaryPhase, Instant)>;

impl Transitions {
    fn record(&self, canary: &Canary) {
        let phase = canary.status.as_ref().map(|s| s.phase).unwrap_or_default();
        let name = canary.metadata.name.as_deref().unwrap_or_default();
        let mut all = self.0.lock().expect("transitions");
        let seen = all.entry(name.to_owned()).or_default();
        if seen.last().map(|(p, _)| *p) != Some(phase) {
            seen.push((phase, Instant::now()));
        }
    }

    /// How a rollout started at `since` ended: its phase (`Succeeded` or `Failed`) and when,
    /// once it has gone through `Progressing`; its last phase otherwise.
    fn outcome(&self, name: &str, since: Instant) -> Result<(CanaryPhase, Instant), CanaryPhase> {
        let all = self.0.lock().expect("transitions");
        let seen = all.get(name).map(Vec::as_slice).unwrap_or_default();
        let mut progressed = false;
        for (phase, at) in seen.iter().filter(|(_, at)| *at >= since) {
            match phase {
                CanaryPhase::Progressing => progressed = true,
                CanaryPhase::Succeeded | CanaryPhase::Failed if progressed => return Ok((*phase, *at)),
                _ => {}
            }
        }
        Err(seen.last().map(|(p, _)| *p).unwrap_or_default())
    }
}

/// The API requests the test bed counted since its last reset, watches left out (an open
/// watch is not a request), most first.
async fn requests(tb: &Testbed) -> (u64, Vec<serin_testbed::RequestCount>) {
    let mut by_kind: Vec<_> = tb
        .requests()
        .await
        .expect("requests")
        .into_iter()
        .filter(|r| r.verb != "watch")
        .collect();
    by_kind.sort_by_key(|r| std::cmp::Reverse(r.count));
    (by_kind.iter().map(|r| r.count).sum(), by_kind)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What real clusters hold next to the Canaries: Deployments and ConfigMaps and Secrets of about
/// 8 KiB that no Canary uses, in their own namespace.
async fn unrelated_objects(client: &kube::Client, deployments_count: usize) {
    const UNRELATED: &str = "unrelated";
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(UNRELATED.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let payload = "x".repeat(8 * 1024);
    let configs = deployments_count * 5 / 4;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), UNRELATED);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), UNRELATED);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), UNRELATED);
    let started = Instant::now();
    futures::stream::iter(0..deployments_count.max(configs))
        .map(|i| {
            let (deployments, config_maps, secrets, payload) = (
                deployments.clone(),
                config_maps.clone(),
                secrets.clone(),
                payload.clone(),
            );
            async move {
                if i < deployments_count {
                    deployments
                        .create(&PostParams::default(), &deployment(&format!("other-{i}")))
                        .await?;
                }
                if i < configs {
                    let meta = ObjectMeta {
                        name: Some(format!("other-{i}")),
                        ..Default::default()
                    };
                    let cm = ConfigMap {
                        metadata: meta.clone(),
                        data: Some([("payload".to_owned(), payload.clone())].into()),
                        ..Default::default()
                    };
                    config_maps.create(&PostParams::default(), &cm).await?;
                    let secret = Secret {
                        metadata: meta,
                        data: Some([("release".to_owned(), ByteString(payload.into_bytes()))].into()),
                        type_: Some("helm.sh/release.v1".into()),
                        ..Default::default()
                    };
                    secrets.create(&PostParams::default(), &secret).await?;
                }
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("unrelated objects");
    println!(
        "unrelated objects: {deployments_count} Deployments, {configs} ConfigMaps and {configs} Secrets of 8 KiB (created in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    serin_runtime::tls::install_crypto_provider();
    let count = env_usize("SERIN_BENCH_CANARIES", 100);
    let unrelated = env_usize("SERIN_BENCH_UNRELATED", 2000);
    let revisions = env_usize("SERIN_BENCH_REVISIONS", 50).min(count);
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
    unrelated_objects(&client, unrelated).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let canaries: Api<Canary> = Api::namespaced(client.clone(), NS);
    let (store, writer) = reflector::store();
    let transitions = Transitions::default();
    let recorder = transitions.clone();
    let follow = tokio::spawn(
        reflector(writer, watcher(canaries.clone(), watcher::Config::default())).for_each(move |event| {
            if let Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) = &event {
                recorder.record(c);
            }
            async {}
        }),
    );
    store.wait_until_ready().await.expect("the Canary watch starts");
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
    // `SERIN_BENCH_WRAPPER` runs serin under a profiler, e.g. `heaptrack` or `perf record -g`.
    let wrapper = std::env::var("SERIN_BENCH_WRAPPER").unwrap_or_default();
    let mut argv: Vec<String> = wrapper.split_whitespace().map(str::to_owned).collect();
    argv.push(env!("CARGO_BIN_EXE_serin").to_owned());
    let serin = Controller::start(&argv, ["run", "--admin-addr", "127.0.0.1:0"], tb.kubeconfig())
        .expect("serin starts");
    let pid = serin.pid();
    let deadline = Duration::from_secs(600);
    loop {
        // Counted without a copy of each Canary's name: at 10,000 Canaries every 50 ms, the
        // copies were most of the benchmark's own CPU.
        let initialised = store
            .state()
            .iter()
            .filter(|c| {
                c.status
                    .as_ref()
                    .is_some_and(|s| s.phase == CanaryPhase::Initialized)
            })
            .count();
        if initialised == count {
            break;
        }
        if started.elapsed() > deadline {
            let (rss, peak) = memory_mib(pid);
            println!(
                "only {initialised} of {count} Canaries initialised after {} s; serin: {rss:.1} MiB resident, {peak:.1} MiB peak",
                deadline.as_secs()
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let init = started.elapsed();
    println!(
        "initialised {count} Canaries (primary, 3 Services, 2 DestinationRules, VirtualService each) in {:.2} s",
        init.as_secs_f64()
    );

    // Idle: nothing changes, so serin should neither write nor poll. The tail of the
    // initialisation (the targets scaled down, their status written, and serin's reconciles of
    // those changes) ends first: the minute is counted from the first 5 s without a request.
    let quiet = Instant::now();
    loop {
        tb.reset_requests().await.expect("reset");
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (tail, by_kind) = requests(&tb).await;
        if tail == 0 {
            break;
        }
        if quiet.elapsed() > Duration::from_secs(180) {
            println!("still {tail} requests in 5 s three minutes after the initialisation: {by_kind:?}");
            break;
        }
    }
    println!(
        "quiet {:.0} s after the last Canary was Initialized",
        quiet.elapsed().as_secs_f64()
    );
    tb.reset_requests().await.expect("reset");
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (idle, by_kind) = requests(&tb).await;
    let (rss, peak) = memory_mib(pid);
    println!("API requests per minute with {count} idle Canaries: {idle}");
    if idle > 0 {
        println!("  which: {by_kind:?}");
    }
    println!("serin memory with {count} Canaries: {rss:.1} MiB resident, {peak:.1} MiB peak");

    // Reaction: a new image on a target until its Canary is Progressing.
    let mut reactions = Vec::new();
    for i in 0..revisions {
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
            if phase_of(&store, &name) == Some(CanaryPhase::Progressing) {
                reactions.push(t.elapsed());
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "{name} never progressed");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    reactions.sort();
    println!(
        "new revision to Progressing: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms over {} revisions (Flagger: up to one control-loop tick, 10 s by default)",
        percentile(&reactions, 0.5).as_secs_f64() * 1000.0,
        percentile(&reactions, 0.99).as_secs_f64() * 1000.0,
        percentile(&reactions, 1.0).as_secs_f64() * 1000.0,
        reactions.len()
    );
    let (rss, peak) = memory_mib(pid);
    println!("serin memory after the rollouts started: {rss:.1} MiB resident, {peak:.1} MiB peak");

    // Many rollouts at once. A rollout of these Canaries takes a fixed number of `interval: 10s`
    // steps, so a rollout alone gives the schedule; with many at once, the time a rollout takes
    // beyond that is the lateness its steps add up to (an upper bound on any one step's).
    let progressing = env_usize("SERIN_BENCH_PROGRESSING", count.min(1000)).min(count);
    if progressing > 0 {
        let interval = Duration::from_secs(10);
        let settle = |store: reflector::Store<Canary>| async move {
            let settle = Instant::now();
            while phases(&store).iter().any(|(_, p)| {
                !matches!(
                    p,
                    CanaryPhase::Initialized | CanaryPhase::Succeeded | CanaryPhase::Failed
                )
            }) {
                assert!(
                    settle.elapsed() < Duration::from_secs(300),
                    "the rollouts never finished"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let rollout = |image: &'static str, name: String| {
            let deployments = deployments.clone();
            async move {
                deployments
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}})),
                    )
                    .await
                    .expect("new image");
            }
        };
        // The first revisions finish first, then one rollout alone sets the schedule.
        settle(store.clone()).await;
        let alone = Instant::now();
        rollout("ghcr.io/stefanprodan/podinfo:6.0.2", "app-0".into()).await;
        while phase_of(&store, "app-0") != Some(CanaryPhase::Progressing) {
            assert!(
                alone.elapsed() < Duration::from_secs(60),
                "app-0 never progressed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        while phase_of(&store, "app-0") != Some(CanaryPhase::Succeeded) {
            assert!(alone.elapsed() < interval * 12, "app-0 never promoted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let schedule = alone.elapsed();
        println!(
            "one rollout alone (interval 10s, 2 steps of 50%, then promotion): {:.1} s",
            schedule.as_secs_f64()
        );

        tb.reset_requests().await.expect("reset");
        let cpu_before = cpu_time(pid);
        let bed_cpu_before = cpu_time(std::process::id());
        let started = Instant::now();
        // Every target gets its new image at once (16 patches in flight); a rollout's time runs
        // from just before its patch is sent.
        let sent: HashMap<String, Instant> = futures::stream::iter(0..progressing)
            .map(|i| {
                let name = format!("app-{i}");
                let at = Instant::now();
                let patch = rollout("ghcr.io/stefanprodan/podinfo:6.0.3", name.clone());
                async move {
                    patch.await;
                    (name, at)
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let patched = started.elapsed();
        let deadline = Duration::from_secs(60) + interval * 10;
        let mut peak_rss = 0.0_f64;
        let outcomes = loop {
            let outcomes: HashMap<&String, Result<(CanaryPhase, Instant), CanaryPhase>> = sent
                .iter()
                .map(|(name, at)| (name, transitions.outcome(name, *at)))
                .collect();
            peak_rss = peak_rss.max(memory_mib(pid).0);
            if outcomes.values().all(Result::is_ok) || started.elapsed() > deadline {
                break outcomes;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let took = started.elapsed();
        let cpu = cpu_time(pid).saturating_sub(cpu_before);
        let bed_cpu = cpu_time(std::process::id()).saturating_sub(bed_cpu_before);
        let mut lateness = Vec::new();
        let mut failed = 0;
        let mut unfinished: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
        for (name, outcome) in &outcomes {
            match outcome {
                Ok((CanaryPhase::Succeeded, at)) => {
                    lateness.push(at.duration_since(sent[*name]).saturating_sub(schedule));
                }
                Ok(_) => failed += 1,
                Err(phase) => *unfinished.entry(format!("{phase:?}")).or_default() += 1,
            }
        }
        let done = lateness.len();
        if !unfinished.is_empty() {
            println!(
                "not finished within {} s, by last phase: {unfinished:?}",
                deadline.as_secs()
            );
        }
        if failed > 0 {
            println!("{failed} rollouts failed");
            if let Some((name, _)) = outcomes
                .iter()
                .find(|(_, o)| matches!(o, Ok((CanaryPhase::Failed, _))))
            {
                let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), NS);
                let lp = kube::api::ListParams::default().fields(&format!("involvedObject.name={name}"));
                for e in events.list(&lp).await.map(|l| l.items).unwrap_or_default() {
                    println!(
                        "  {name}: {} {}",
                        e.reason.unwrap_or_default(),
                        e.message.unwrap_or_default()
                    );
                }
            }
        }
        let (requests, by_kind) = requests(&tb).await;
        lateness.sort();
        println!(
            "{progressing} Canaries progressing at once (interval 10s; all patched in {:.1} s): {done} promoted in {:.1} s; each rollout's lateness against the one alone: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            patched.as_secs_f64(),
            took.as_secs_f64(),
            lateness
                .first()
                .map_or(0.0, |_| percentile(&lateness, 0.5).as_secs_f64() * 1000.0),
            lateness
                .first()
                .map_or(0.0, |_| percentile(&lateness, 0.99).as_secs_f64() * 1000.0),
            lateness
                .first()
                .map_or(0.0, |_| percentile(&lateness, 1.0).as_secs_f64() * 1000.0),
        );
        println!(
            "serin during those rollouts: {:.0}% of one core, {:.0} API requests per second, {peak_rss:.1} MiB resident at most",
            cpu.as_secs_f64() / took.as_secs_f64() * 100.0,
            requests as f64 / took.as_secs_f64()
        );
        // The API emulator and the simulated data plane run in this process (with the
        // benchmark's watch); on the real control plane its processes are not counted here.
        println!(
            "the test bed (this process) meanwhile: {:.0}% of one core, of the {} cores",
            bed_cpu.as_secs_f64() / took.as_secs_f64() * 100.0,
            std::thread::available_parallelism().map_or(1, usize::from)
        );
        let per_rollout: Vec<String> = by_kind
            .iter()
            .take(8)
            .map(|r| {
                format!(
                    "{} {} {:.1}",
                    r.verb,
                    r.resource,
                    r.count as f64 / progressing as f64
                )
            })
            .collect();
        println!("API requests per rollout: {}", per_rollout.join(", "));
    }
    follow.abort();
    drop(serin);
    tb.stop().await;
}
