//! serin-sync at size, on the test bed: the release binary syncs a local Git repository of
//! ConfigMaps, as one Kustomization of `SERIN_SYNC_BENCH_OBJECTS` objects (default 1,000) and as
//! `SERIN_SYNC_BENCH_KUSTOMIZATIONS` Kustomizations (default 200) of `SERIN_SYNC_BENCH_EACH`
//! objects each (default 20). Per layout it prints the time from the Kustomizations' creation
//! until every one is Ready at the Git revision, serin-sync's resident and peak memory, and what
//! a reconcile of an unchanged revision costs: API requests by verb and resource (dry runs
//! apart) and how many objects were written. Run with `make bench` or
//! `cargo bench -p serin-sync --bench sync`; `SERIN_TESTBED_CLUSTER=real` runs it on the real
//! control plane.

use std::{
    collections::BTreeMap,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::ListParams,
    runtime::{reflector, watcher},
};
use serin_sync::api::{GitRepository, Kustomization};
use serin_testbed::{
    Testbed,
    process::{Controller, memory_mib},
};

#[path = "../tests/support/mod.rs"]
mod support;
use support::git;

const FLUX_NS: &str = "flux-system";
const DEADLINE: Duration = Duration::from_secs(900);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A bare repository with `count` directories `ks-<i>` of `each` ConfigMaps (about 1 KiB each)
/// in namespace `bench-<i>`; returns its URL and the revision of `main`.
fn repository(dir: &Path, count: usize, each: usize) -> (String, String) {
    let work = dir.join("work");
    let payload = "x".repeat(1024);
    for i in 0..count {
        let ks = work.join(format!("ks-{i}"));
        std::fs::create_dir_all(&ks).expect("mkdir");
        let mut docs = vec![format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench-{i}\n"
        )];
        for j in 0..each {
            docs.push(format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-{j}\n  namespace: bench-{i}\n  labels:\n    app: bench\ndata:\n  payload: {payload}\n"
            ));
        }
        std::fs::write(ks.join("objects.yaml"), docs.join("---\n")).expect("write");
    }
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "bench objects"]);
    git(dir, &["clone", "-q", "--bare", "work", "repo.git"]);
    (
        format!("file://{}", dir.join("repo.git").display()),
        git(&work, &["rev-parse", "HEAD"]),
    )
}

fn sources_yaml(url: &str, count: usize) -> String {
    let mut docs = vec![format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: bench\n  namespace: {FLUX_NS}\nspec:\n  interval: 10m\n  ref:\n    branch: main\n  url: {url}\n"
    )];
    for i in 0..count {
        docs.push(format!(
            "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: ks-{i}\n  namespace: {FLUX_NS}\nspec:\n  interval: 10m\n  path: ./ks-{i}\n  prune: true\n  sourceRef:\n    kind: GitRepository\n    name: bench\n"
        ));
    }
    docs.join("---\n")
}

fn ready_at(ks: &Kustomization, revision: &str) -> bool {
    ks.status.as_ref().is_some_and(|s| {
        s.last_applied_revision.as_deref() == Some(revision)
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Applies YAML with kubectl, whose requests the counts leave out (its user agent is kubectl's).
fn kubectl(tb: &Testbed, args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut child = tb
        .kubectl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write");
    }
    drop(input);
    let out = child.wait_with_output().expect("kubectl ends");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The resource version of every synced ConfigMap, by `namespace/name`.
async fn versions(client: &kube::Client) -> BTreeMap<String, String> {
    Api::<ConfigMap>::all(client.clone())
        .list_metadata(&ListParams::default().labels("app=bench"))
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|o| {
            let name = format!(
                "{}/{}",
                o.metadata.namespace.unwrap_or_default(),
                o.metadata.name.unwrap_or_default()
            );
            (name, o.metadata.resource_version.unwrap_or_default())
        })
        .collect()
}

async fn layout(count: usize, each: usize) {
    let objects = count * each;
    let tb = Testbed::start().await.expect("test bed starts");
    let client = tb.client();
    tb.install_crds(serin_sync::api::crds()).await.expect("CRDs");
    support::create_namespace(&client, FLUX_NS).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, head) = repository(dir.path(), count, each);
    let revision = format!("main@sha1:{head}");

    let kustomizations: Api<Kustomization> = Api::namespaced(client.clone(), FLUX_NS);
    let (store, writer) = reflector::store();
    let follow = tokio::spawn(
        reflector(
            writer,
            watcher(kustomizations.clone(), watcher::Config::default()),
        )
        .for_each(|_| async {}),
    );
    store
        .wait_until_ready()
        .await
        .expect("the Kustomization watch starts");

    let storage = tempfile::tempdir().expect("storage");
    let sync = Controller::start(
        &[env!("CARGO_BIN_EXE_serin-sync")],
        [
            "run".as_ref(),
            "--admin-addr".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--storage-path".as_ref(),
            storage.path().as_os_str(),
        ],
        tb.kubeconfig(),
    )
    .expect("serin-sync starts");
    let pid = sync.pid();

    let started = Instant::now();
    kubectl(&tb, &["apply", "-f", "-"], Some(&sources_yaml(&url, count)));
    let mut peak_rss: f64 = 0.0;
    loop {
        let ready = store.state().iter().filter(|k| ready_at(k, &revision)).count();
        peak_rss = peak_rss.max(memory_mib(pid).0);
        if ready == count {
            break;
        }
        if started.elapsed() > DEADLINE {
            println!(
                "{count} Kustomization(s) of {each} objects: only {ready} Ready after {} s",
                DEADLINE.as_secs()
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    let (rss, peak) = memory_mib(pid);
    let synced = Api::<ConfigMap>::all(client.clone())
        .list_metadata(&ListParams::default().labels("app=bench"))
        .await
        .expect("list")
        .items
        .len();
    assert_eq!(synced, count * each, "every object is in the cluster");
    println!(
        "{count} Kustomization(s) of {each} objects ({objects} objects): all Ready at the revision in {:.1} s; serin-sync {rss:.1} MiB resident, {peak:.1} MiB peak",
        took.as_secs_f64()
    );
    let before = versions(&client).await;

    // An unchanged revision: every Kustomization and the source asked to reconcile now.
    tb.reset_requests().await.expect("reset");
    let token = format!("bench-{}", std::process::id());
    let annotation = format!("reconcile.fluxcd.io/requestedAt={token}");
    for objects in [
        &["gitrepositories.source.toolkit.fluxcd.io/bench"][..],
        &["kustomizations.kustomize.toolkit.fluxcd.io", "--all"],
    ] {
        let mut args = vec!["annotate", "--overwrite", "-n", FLUX_NS];
        args.extend_from_slice(objects);
        args.push(&annotation);
        kubectl(&tb, &args, None);
    }
    let handled_at = Instant::now();
    loop {
        let handled = store
            .state()
            .iter()
            .filter(|k| {
                ready_at(k, &revision)
                    && k.status
                        .as_ref()
                        .is_some_and(|s| s.last_handled_reconcile_at.as_deref() == Some(token.as_str()))
            })
            .count();
        if handled == count {
            break;
        }
        assert!(
            handled_at.elapsed() < DEADLINE,
            "only {handled} of {count} Kustomizations handled the request"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let source: GitRepository = Api::namespaced(client.clone(), FLUX_NS)
        .get("bench")
        .await
        .expect("source");
    let checked = source
        .status
        .as_ref()
        .and_then(|s| s.last_handled_reconcile_at.as_deref())
        == Some(token.as_str());
    let unchanged_took = handled_at.elapsed();
    let requests = tb.requests().await.expect("requests");
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    for r in requests.iter().filter(|r| !r.user_agent.starts_with("kubectl")) {
        *by_kind.entry(format!("{} {}", r.verb, r.resource)).or_default() += r.count;
    }
    let after = versions(&client).await;
    let written = before.iter().filter(|(k, v)| after.get(*k) != Some(*v)).count();
    let applies = by_kind.get("patch configmaps").copied().unwrap_or(0);
    let total: u64 = by_kind.values().sum();
    let listed: Vec<String> = by_kind.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!(
        "  unchanged revision, reconciled on request in {:.1} s: source checked the remote: {}; {applies} applies, {written} objects written; {total} API requests ({})",
        unchanged_took.as_secs_f64(),
        if checked { "yes" } else { "no" },
        listed.join(", ")
    );
    follow.abort();
}

#[tokio::main]
async fn main() {
    serin_runtime::tls::install_crypto_provider();
    let objects = env_usize("SERIN_SYNC_BENCH_OBJECTS", 1000);
    let count = env_usize("SERIN_SYNC_BENCH_KUSTOMIZATIONS", 200);
    let each = env_usize("SERIN_SYNC_BENCH_EACH", 20);
    println!(
        "serin-sync at size ({} cores; Flux's published kustomize-controller benchmark, 16 cores: 1,000 objects in one Kustomization in 4 min 14 s at 195 MiB)",
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    if objects > 0 {
        layout(1, objects).await;
    }
    if count > 0 {
        layout(count, each).await;
    }
}
