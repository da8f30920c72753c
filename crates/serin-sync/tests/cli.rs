//! The `serin-sync` CLI against the test bed, compared with golden outputs in `tests/golden/`
//! (commit hashes written as `{SHA}` and `{SHORT}`). `UPDATE_GOLDEN=1` rewrites them.

mod support;

use std::{path::Path, process::Output, time::Duration};

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serin_testbed::Testbed;
use support::*;

const DEADLINE: Duration = Duration::from_secs(60);

/// Replaces the commit hashes of `shas` with placeholders.
fn normalize(text: &str, shas: &[&str]) -> String {
    let mut out = text.to_owned();
    for (n, sha) in shas.iter().enumerate() {
        let suffix = if n == 0 { String::new() } else { n.to_string() };
        out = out
            .replace(sha, &format!("{{SHA{suffix}}}"))
            .replace(&sha[..8], &format!("{{SHORT{suffix}}}"));
    }
    out
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(actual, expected, "output differs from tests/golden/{name}");
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn synced(interval: &str) -> (Testbed, GitFixture, Controllers, String) {
    let tb = Testbed::start().await.expect("test bed");
    install_crds(&tb).await;
    create_namespace(&tb.client(), "flux-system").await;
    let repo = GitFixture::from_examples();
    let controllers = start_controllers(&tb);
    kubectl_apply(&tb, &bootstrap_yaml(&repo.url(), "./clusters/dev", interval));
    mark_canary(&tb.client(), "podinfo", "podinfo", "Initialized").await;
    let revision = format!("main@sha1:{}", repo.head());
    wait_applied(&tb.client(), "apps", &revision, DEADLINE).await;
    (tb, repo, controllers, revision)
}

/// Acceptance 7 (and 2 with `reconcile --with-source`): get, reconcile, suspend, resume, tree,
/// build, diff and delete print what Flux's CLI prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_print_flux_outputs() {
    // The source polls hourly: only `reconcile --with-source` brings the new commit in.
    let (tb, repo, _controllers, _) = synced("1h").await;
    let client = tb.client();
    let first = repo.head();

    let (out, _) = text(&cli(&tb, &["get", "kustomizations"]).await);
    golden("get_kustomizations.txt", &normalize(&out, &[&first]));
    let (out, _) = text(&cli(&tb, &["get", "sources", "git"]).await);
    golden("get_sources_git.txt", &normalize(&out, &[&first]));
    let (out, _) = text(&cli(&tb, &["get", "all", "-A"]).await);
    golden("get_all.txt", &normalize(&out, &[&first]));
    let (out, _) = text(&cli(&tb, &["tree", "kustomization", "flux-system"]).await);
    golden("tree.txt", &out);

    // build prints what would be applied; diff finds nothing, then the local change.
    let dev = repo.work().join("apps/dev");
    let dev = dev.to_str().expect("utf-8");
    let build = cli(&tb, &["build", "kustomization", "apps", "--path", dev]).await;
    assert!(build.status.success(), "{}", text(&build).1);
    golden("build_apps.yaml", &text(&build).0);
    let diff = cli(&tb, &["diff", "kustomization", "apps", "--path", dev]).await;
    assert_eq!(diff.status.code(), Some(0), "no diff: {:?}", text(&diff));
    let file = repo.work().join("apps/dev/kustomization.yaml");
    let original = std::fs::read_to_string(&file).expect("read");
    let promoted = original.replace("newTag: 6.5.0", "newTag: 6.5.1");
    std::fs::write(&file, &promoted).expect("write");
    let diff = cli(&tb, &["diff", "kustomization", "apps", "--path", dev]).await;
    assert_eq!(diff.status.code(), Some(1), "a diff: {:?}", text(&diff));
    golden("diff_apps.txt", &text(&diff).0);
    // An object gone from the local tree shows as deleted.
    let base = repo.work().join("apps/base/podinfo/kustomization.yaml");
    let base_text = std::fs::read_to_string(&base).expect("read");
    std::fs::write(&base, base_text.replace("  - hpa.yaml\n", "")).expect("write");
    let diff = cli(&tb, &["diff", "kustomization", "apps", "--path", dev]).await;
    assert_eq!(diff.status.code(), Some(1), "a diff: {:?}", text(&diff));
    golden("diff_apps_deleted.txt", &text(&diff).0);
    std::fs::write(&base, base_text).expect("restore");
    let missing = cli(&tb, &["diff", "kustomization", "apps", "--path", "/nonexistent"]).await;
    assert_eq!(missing.status.code(), Some(2), "an error: {:?}", text(&missing));

    // The new tag, committed, arrives at once with --with-source.
    let second = repo.commit(
        &[("apps/dev/kustomization.yaml", Some(&promoted))],
        "podinfo 6.5.1",
    );
    let reconcile = cli(&tb, &["reconcile", "kustomization", "apps", "--with-source"]).await;
    assert!(reconcile.status.success(), "{:?}", text(&reconcile));
    golden(
        "reconcile_with_source.txt",
        &normalize(&text(&reconcile).1, &[&second]),
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "podinfo");
    let d = deployments.get("podinfo").await.expect("get");
    let image = d
        .spec
        .and_then(|s| s.template.spec)
        .map(|s| s.containers[0].image.clone().unwrap_or_default());
    assert_eq!(image.as_deref(), Some("ghcr.io/stefanprodan/podinfo:6.5.1"));
    let reconcile = cli(&tb, &["reconcile", "source", "git", "flux-system"]).await;
    golden(
        "reconcile_source.txt",
        &normalize(&text(&reconcile).1, &[&second]),
    );

    let suspend = cli(&tb, &["suspend", "kustomization", "apps"]).await;
    golden("suspend.txt", &text(&suspend).1);
    let (out, _) = text(&cli(&tb, &["get", "kustomizations", "apps"]).await);
    golden("get_suspended.txt", &normalize(&out, &[&second]));
    let resume = cli(&tb, &["resume", "kustomization", "apps"]).await;
    assert!(resume.status.success(), "{:?}", text(&resume));
    golden("resume.txt", &normalize(&text(&resume).1, &[&second]));

    let delete = cli(&tb, &["delete", "kustomization", "apps", "--silent"]).await;
    golden("delete.txt", &text(&delete).1);
    eventually(DEADLINE, "apps' objects pruned on deletion", || {
        let deployments = deployments.clone();
        async move { deployments.get_opt("podinfo").await.ok()?.is_none().then_some(()) }
    })
    .await;
}

/// `install` bootstraps a cluster from a repository URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_bootstraps_the_cluster() {
    let tb = Testbed::start().await.expect("test bed");
    // serin's CRDs come with serin; install brings serin-sync's.
    let api: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(tb.client());
    for entry in std::fs::read_dir(repo_root().join("crds")).expect("crds/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let crd = serde_yaml::from_str(&std::fs::read_to_string(&path).expect("read")).expect("CRD");
            api.create(&Default::default(), &crd).await.expect("created");
        }
    }
    let repo = GitFixture::from_examples();
    let install = cli(
        &tb,
        &[
            "install",
            "--url",
            &repo.url(),
            "--branch",
            "main",
            "--path",
            "./clusters/dev",
        ],
    )
    .await;
    assert!(install.status.success(), "{:?}", text(&install));
    golden("install.txt", &text(&install).1.replace(&repo.url(), "{URL}"));
    let _controllers = start_controllers(&tb);
    mark_canary(&tb.client(), "podinfo", "podinfo", "Initialized").await;
    wait_applied(
        &tb.client(),
        "apps",
        &format!("main@sha1:{}", repo.head()),
        DEADLINE,
    )
    .await;
}

/// `get --status-selector type=status` lists only the objects whose condition matches, with
/// Flux's case-insensitive comparison; a selector without `=` is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_filters_by_status_selector() {
    let (tb, repo, _controllers, revision) = synced("1h").await;
    let client = tb.client();
    for name in ["infrastructure", "flux-system"] {
        wait_applied(&client, name, &revision, DEADLINE).await;
    }
    kubectl_apply(
        &tb,
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: orphaned\n  namespace: flux-system\nspec:\n  interval: 1h\n  path: ./apps/dev\n  prune: true\n  sourceRef:\n    kind: GitRepository\n    name: gone\n",
    );
    wait_failed(&client, "orphaned", "ArtifactFailed").await;
    let first = repo.head();

    let (out, _) = text(
        &cli(
            &tb,
            &["get", "kustomizations", "--status-selector", "ready=false"],
        )
        .await,
    );
    golden("get_ready_false.txt", &normalize(&out, &[&first]));
    let (out, _) = text(&cli(&tb, &["get", "ks", "--status-selector", "READY=True"]).await);
    golden("get_ready_true.txt", &normalize(&out, &[&first]));
    // The source is ready: its table has no row, the Kustomizations' one the failing object.
    let (out, _) = text(&cli(&tb, &["get", "all", "--status-selector", "Ready=False"]).await);
    golden("get_all_ready_false.txt", &normalize(&out, &[&first]));

    let bad = cli(&tb, &["get", "ks", "--status-selector", "ready"]).await;
    assert_eq!(bad.status.code(), Some(1), "{:?}", text(&bad));
    assert_eq!(
        text(&bad).1,
        "✗ expected status selector in type=status format, but found: ready\n"
    );
}
