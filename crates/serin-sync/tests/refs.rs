//! GitRepository references resolved and written as Flux does: branch, tag, semver (highest
//! match), an arbitrary reference name (absolute in the revision) and a commit.

mod support;

use std::time::Duration;

use kube::Api;
use serin_sync::api::{GitRepository, GitRepositoryStatus};
use serin_testbed::Testbed;
use support::*;

fn repository(name: &str, url: &str, reference: &str) -> String {
    format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: {name}\n  namespace: flux-system\nspec:\n  interval: 1m\n  url: {url}\n  ref:\n{reference}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_resolve_to_flux_revisions() {
    let repo = GitFixture::from_examples();
    let first = repo.head();
    git(&repo.work(), &["tag", "-a", "v1.2.3", "-m", "release 1.2.3"]);
    git(&repo.work(), &["tag", "v2.0.0-rc.1"]);
    let second = repo.commit(&[("apps/dev/notes.yaml", Some("# notes\n"))], "Second");
    git(&repo.work(), &["tag", "v1.3.0"]);
    git(&repo.work(), &["push", "-q", "origin", "--tags"]);
    git(
        &repo.work(),
        &["push", "-q", "origin", &format!("{first}:refs/pull/7/head")],
    );

    let tb = Testbed::start().await.expect("test bed");
    install_crds(&tb).await;
    create_namespace(&tb.client(), "flux-system").await;
    let _controllers = start_controllers(&tb);
    let url = repo.url();
    let cases = [
        ("branch", "    branch: main\n", format!("main@sha1:{second}")),
        ("tag", "    tag: v1.2.3\n", format!("v1.2.3@sha1:{first}")),
        (
            "semver",
            "    semver: \">=1.0.0 <2.0.0\"\n",
            format!("v1.3.0@sha1:{second}"),
        ),
        (
            "name",
            "    name: refs/pull/7/head\n",
            format!("refs/pull/7/head@sha1:{first}"),
        ),
        (
            "commit",
            &format!("    commit: {first}\n"),
            format!("sha1:{first}"),
        ),
    ];
    for (name, reference, _) in &cases {
        kubectl_apply(&tb, &repository(name, &url, reference));
    }
    let api: Api<GitRepository> = Api::namespaced(tb.client(), "flux-system");
    for (name, _, want) in &cases {
        let got = eventually(
            Duration::from_secs(60),
            &format!("GitRepository {name} fetched"),
            || {
                let api = api.clone();
                async move {
                    api.get_opt(name)
                        .await
                        .ok()??
                        .status?
                        .artifact
                        .map(|a| a.revision)
                }
            },
        )
        .await;
        assert_eq!(&got, want, "{name}");
    }
}

/// The cheap check: when the remote's revision is the stored one, nothing is fetched again (the
/// artifact keeps its update time); a new commit is fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_remotes_are_not_fetched_again() {
    use kube::api::{Patch, PatchParams};
    let repo = GitFixture::from_examples();
    let tb = Testbed::start().await.expect("test bed");
    install_crds(&tb).await;
    create_namespace(&tb.client(), "flux-system").await;
    let _controllers = start_controllers(&tb);
    kubectl_apply(&tb, &repository("source", &repo.url(), "    branch: main\n"));
    let api: Api<GitRepository> = Api::namespaced(tb.client(), "flux-system");
    let artifact = || {
        let api = api.clone();
        async move { api.get_opt("source").await.ok()??.status?.artifact }
    };
    let first = eventually(Duration::from_secs(60), "the first artifact", artifact).await;

    let request = |token: String| {
        let api = api.clone();
        async move {
            let body =
                serde_json::json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": token}}});
            api.patch("source", &PatchParams::default(), &Patch::Merge(&body))
                .await
                .expect("annotated");
            eventually(Duration::from_secs(60), "the request handled", || {
                let (api, token) = (api.clone(), token.clone());
                async move {
                    let st = api.get_opt("source").await.ok()??.status?;
                    (st.last_handled_reconcile_at.as_deref() == Some(token.as_str())).then_some(st.artifact?)
                }
            })
            .await
        }
    };
    let again = request("one".into()).await;
    assert_eq!(again, first, "nothing fetched: the artifact is untouched");

    // Every status write from here on, through a watch (which gets each one).
    let seen = record_statuses(&api, "source").await;
    let sha = repo.commit(&[("apps/dev/notes.yaml", Some("# notes\n"))], "Notes");
    let newer = request("two".into()).await;
    let revision = format!("main@sha1:{sha}");
    assert_eq!(newer.revision, revision);
    assert_ne!(newer.digest, first.digest);

    // While the new revision was built, the old artifact was outdated and the run in progress,
    // as Flux's source-controller reports it; once stored, both conditions are gone.
    let statuses = eventually(
        Duration::from_secs(60),
        "the watch to see the new artifact",
        || {
            let (seen, revision) = (seen.clone(), revision.clone());
            async move {
                let statuses = seen.lock().expect("lock").clone();
                let last = statuses.last()?;
                (last.artifact.as_ref()?.revision == revision).then_some(statuses)
            }
        },
    )
    .await;
    let building = statuses
        .iter()
        .find(|st| condition(&st.conditions, "ArtifactOutdated").is_some())
        .unwrap_or_else(|| panic!("ArtifactOutdated while fetching: {statuses:#?}"));
    let message = format!("new upstream revision '{revision}'");
    let progress = format!("building artifact: {message}");
    assert_eq!(
        building.artifact.as_ref(),
        Some(&first),
        "the old artifact is still served"
    );
    assert_eq!(
        condition(&building.conditions, "ArtifactOutdated"),
        Some(("True".into(), "NewRevision".into(), message))
    );
    assert_eq!(
        condition(&building.conditions, "Reconciling"),
        Some(("True".into(), "Progressing".into(), progress.clone()))
    );
    assert_eq!(
        condition(&building.conditions, "Ready"),
        Some(("Unknown".into(), "Progressing".into(), progress))
    );
    let stored = statuses.last().expect("a status");
    assert_eq!(condition(&stored.conditions, "ArtifactOutdated"), None);
    assert_eq!(condition(&stored.conditions, "Reconciling"), None);
    assert_eq!(
        condition(&stored.conditions, "Ready"),
        Some((
            "True".into(),
            "Succeeded".into(),
            format!("stored artifact for revision '{revision}'")
        ))
    );
}

/// `(status, reason, message)` of a condition.
fn condition(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<(String, String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Records the status of every version of GitRepository `name` a watch delivers, from the
/// current one on; returns once the watch has delivered the current one.
async fn record_statuses(
    api: &Api<GitRepository>,
    name: &str,
) -> std::sync::Arc<std::sync::Mutex<Vec<GitRepositoryStatus>>> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (api, name, record) = (api.clone(), name.to_owned(), seen.clone());
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default()).applied_objects().boxed();
        while let Some(Ok(repo)) = stream.next().await {
            if repo.metadata.name.as_deref() == Some(name.as_str()) {
                record.lock().expect("lock").push(repo.status.unwrap_or_default());
            }
        }
    });
    eventually(Duration::from_secs(60), "the watch to start", || {
        let seen = seen.clone();
        async move { (!seen.lock().expect("lock").is_empty()).then_some(()) }
    })
    .await;
    seen
}
