//! Throughput of the API emulator, so later benchmarks can show it is not their bottleneck.
//! Prints figures; asserts nothing. Run with `make bench` (release build).

use std::time::{Duration, Instant};

use futures::{StreamExt, future::join_all};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
    runtime::watcher,
};
use serin_testbed::Testbed;

fn configmap(name: String) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name),
            ..Default::default()
        },
        data: Some([("payload".to_owned(), "x".repeat(256))].into()),
        ..Default::default()
    }
}

async fn writes(api: &Api<ConfigMap>, prefix: &str, count: usize, concurrency: usize) -> Duration {
    let start = Instant::now();
    let per_task = count / concurrency;
    join_all((0..concurrency).map(|t| {
        let api = api.clone();
        let prefix = prefix.to_owned();
        async move {
            for i in 0..per_task {
                api.create(&PostParams::default(), &configmap(format!("{prefix}-{t}-{i}")))
                    .await
                    .expect("create");
            }
        }
    }))
    .await;
    start.elapsed()
}

#[tokio::main]
async fn main() {
    let tb = Testbed::start().await.expect("test bed starts");
    let client = tb.client();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("bench".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "bench");

    println!(
        "serin-testbed API emulator benchmark ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for (concurrency, count) in [(1, 2000), (8, 4000)] {
        let elapsed = writes(&api, &format!("w{concurrency}"), count, concurrency).await;
        println!(
            "writes: {count} ConfigMap creates, {concurrency} client(s): {:.0} writes/s ({:.2} ms each)",
            count as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1000.0 / count as f64 * concurrency as f64
        );
    }

    const WATCHERS: usize = 10;
    const EVENTS: usize = 2000;
    let ready = std::sync::Arc::new(tokio::sync::Barrier::new(WATCHERS + 1));
    let watchers: Vec<_> = (0..WATCHERS)
        .map(|_| {
            let api = api.clone();
            let ready = ready.clone();
            tokio::spawn(async move {
                let mut stream =
                    std::pin::pin!(watcher(api, watcher::Config::default().labels("fanout=yes")));
                let mut seen = 0;
                while seen < EVENTS {
                    match stream.next().await {
                        // Ready once the initial (empty) list is done.
                        Some(Ok(watcher::Event::InitDone)) => {
                            ready.wait().await;
                        }
                        Some(Ok(watcher::Event::Apply(_))) => seen += 1,
                        _ => {}
                    }
                }
                Instant::now()
            })
        })
        .collect();
    ready.wait().await;
    let start = Instant::now();
    for i in 0..EVENTS {
        let mut cm = configmap(format!("fan-{i}"));
        cm.metadata.labels = Some([("fanout".to_owned(), "yes".to_owned())].into());
        api.create(&PostParams::default(), &cm).await.expect("create");
    }
    let written = start.elapsed();
    let done = join_all(watchers)
        .await
        .into_iter()
        .map(|r| r.expect("watcher"))
        .max()
        .expect("watchers");
    let delivered = done.duration_since(start);
    println!(
        "watch fan-out: {EVENTS} writes to {WATCHERS} watchers: writes took {:.2} s, last watcher caught up after {:.2} s: {:.0} events/s delivered in total",
        written.as_secs_f64(),
        delivered.as_secs_f64(),
        (EVENTS * WATCHERS) as f64 / delivered.as_secs_f64()
    );
    tb.stop().await;
}
