//! The GitRepository reconciler: check the remote's reference cheaply, fetch and store a new
//! revision, and report it as Flux's source-controller does (conditions, `status.artifact`,
//! events). Does I/O.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};

use super::{
    Context, Error, events, finalizer,
    status::{self, Progress},
};
use crate::{
    api::{Artifact, GitRepository, GitRepositoryStatus, REQUESTED_AT_ANNOTATION},
    source::{
        git::{Commit, Credentials, GitCli, GitError},
        ignore::Matcher,
        revision::Checkout,
        storage,
    },
};

/// The component name of the events, Flux's.
pub const COMPONENT: &str = "source-controller";
/// Default Git operation timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Reconciles one GitRepository.
pub async fn reconcile(repo: Arc<GitRepository>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = repo.namespace().unwrap_or_default();
    let api: Api<GitRepository> = Api::namespaced(ctx.client.clone(), &ns);
    let suspended = repo.spec.suspend == Some(true);
    let cleanup = || async {
        let dir = ctx
            .config
            .storage_dir
            .join(format!("gitrepository/{ns}/{}", repo.name_any()));
        let _ = std::fs::remove_dir_all(dir);
    };
    if let Some(action) = finalizer::preamble(&*repo, &api, suspended, cleanup).await? {
        return Ok(action);
    }
    let interval = status::parse_duration(&repo.spec.interval).unwrap_or(Duration::from_secs(60));
    let mut st = repo.status.clone().unwrap_or_default();
    // A reconcile request counts as handled only with the run's final status, which is what
    // `reconcile source` waits for.
    let requested = repo.annotations().get(REQUESTED_AT_ANNOTATION).cloned();
    let new_request = requested.is_some() && requested != st.last_handled_reconcile_at;
    let handled = requested.or_else(|| st.last_handled_reconcile_at.clone());
    let was_failing = status::condition(&st.conditions, status::READY).is_some_and(|c| c.status != "True");
    let generation = repo.meta().generation;
    let now = jiff::Timestamp::now();
    let reference = repo.object_ref(&());

    if let Some(message) = status::unsupported_source_field(&repo.spec) {
        Progress::new(&mut st.conditions, generation, now).stalled(status::UNSUPPORTED_REASON, &message);
        st.observed_generation = generation;
        st.last_handled_reconcile_at = handled;
        patch_status(&api, &repo.name_any(), &st).await?;
        events::record(
            &ctx.client,
            &reference,
            COMPONENT,
            true,
            status::UNSUPPORTED_REASON,
            &message,
        )
        .await;
        return Ok(Action::await_change());
    }
    status::remove_condition(&mut st.conditions, status::STALLED);

    // Progress: written at once for a new generation, a request or a first artifact, as Flux
    // does.
    let had_artifact = st.artifact.is_some();
    if Progress::new(&mut st.conditions, generation, now).source_run_started(
        st.observed_generation,
        new_request,
        had_artifact,
    ) {
        patch_status(&api, &repo.name_any(), &st).await?;
    }

    // Observe: the remote's revision, and a checkout when it is new.
    let observed = observe(&repo, &ctx, &st).await;
    // Act: store a new revision, reporting it as being built first.
    let outcome = match observed {
        Ok(Observed::Unchanged(revision)) => Ok(Fetched::Unchanged(revision)),
        Ok(Observed::Checkout { work, commit }) => {
            if st.artifact.as_ref().map(|a| &a.revision) != Some(&commit.revision) {
                Progress::new(&mut st.conditions, generation, jiff::Timestamp::now())
                    .source_new_revision(had_artifact, &commit.revision);
                patch_status(&api, &repo.name_any(), &st).await?;
            }
            store(&repo, &ctx, work, commit).await
        }
        Err(err) => Err(err),
    };
    st.last_handled_reconcile_at = handled;
    let now = jiff::Timestamp::now();

    // Report.
    match outcome {
        Ok(Fetched::Unchanged(revision)) => {
            tracing::debug!(gitrepository = %format!("{ns}/{}", repo.name_any()), "no changes since last reconciliation: observed revision '{revision}'");
            Progress::new(&mut st.conditions, generation, now).source_stored(&revision);
        }
        Ok(Fetched::New { artifact, subject }) => {
            let changed = st.artifact.as_ref().map(|a| &a.digest) != Some(&artifact.digest);
            Progress::new(&mut st.conditions, generation, now).source_stored(&artifact.revision);
            st.artifact = Some(artifact);
            st.observed_ignore = repo.spec.ignore.clone();
            let event = format!("stored artifact for commit '{subject}'");
            if changed {
                events::record(&ctx.client, &reference, COMPONENT, false, "NewArtifact", &event).await;
            } else if was_failing {
                events::record(&ctx.client, &reference, COMPONENT, false, "Succeeded", &event).await;
            }
        }
        Err(err) => {
            let message = format!("failed to checkout and determine revision: {err}");
            Progress::new(&mut st.conditions, generation, now).source_failed(err.reason(), &message);
            st.observed_generation = generation;
            patch_status(&api, &repo.name_any(), &st).await?;
            events::record(&ctx.client, &reference, COMPONENT, true, err.reason(), &message).await;
            return Ok(Action::requeue(serin_runtime::duration::requeue_delay(
                interval.min(ctx.config.retry_cap),
            )));
        }
    }
    st.observed_generation = generation;
    patch_status(&api, &repo.name_any(), &st).await?;
    Ok(Action::requeue(serin_runtime::duration::requeue_delay(
        super::jitter(interval),
    )))
}

/// What the remote has.
enum Observed {
    /// The stored artifact's revision, and nothing else changed.
    Unchanged(String),
    /// A checkout to store.
    Checkout { work: tempfile::TempDir, commit: Commit },
}

enum Fetched {
    Unchanged(String),
    New { artifact: Artifact, subject: String },
}

/// The remote's revision through the cheap check, and a checkout of it when it is not the
/// stored one (or the ignore rules changed).
async fn observe(
    repo: &GitRepository,
    ctx: &Context,
    st: &GitRepositoryStatus,
) -> Result<Observed, GitError> {
    let ns = repo.namespace().unwrap_or_default();
    let credentials = match &repo.spec.secret_ref {
        Some(r) => {
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
            let secret = secrets.get(&r.name).await.map_err(|e| {
                GitError::Auth(format!(
                    "failed to get secret '{ns}/{}': {}",
                    r.name,
                    super::api_message(&e)
                ))
            })?;
            let data: BTreeMap<String, Vec<u8>> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            Credentials::from_secret_data(&data)
        }
        None => Credentials::default(),
    };
    let timeout = repo
        .spec
        .timeout
        .as_deref()
        .and_then(|text| status::parse_duration(text).ok())
        .unwrap_or(DEFAULT_TIMEOUT);
    let git = GitCli::new(&repo.spec.url, timeout, credentials)?;
    let checkout = Checkout::from_ref(repo.spec.reference.as_ref());
    // The cheap check: the remote's revision equals the stored one and nothing else changed.
    if let Some(artifact) = &st.artifact {
        let stored = ctx.config.storage_dir.join(&artifact.path).is_dir();
        if stored
            && st.observed_ignore == repo.spec.ignore
            && let Some(remote) = git.remote_revision(&checkout).await?
            && remote == artifact.revision
        {
            return Ok(Observed::Unchanged(remote));
        }
    }
    let work = tempfile::Builder::new()
        .prefix("gitrepository-")
        .tempdir()
        .map_err(|e| GitError::Operation(format!("cannot create a checkout directory: {e}")))?;
    let commit = git.fetch(&checkout, work.path()).await?;
    Ok(Observed::Checkout { work, commit })
}

/// Stores a checkout as the repository's artifact, keeping only the newest one.
async fn store(
    repo: &GitRepository,
    ctx: &Context,
    work: tempfile::TempDir,
    commit: Commit,
) -> Result<Fetched, GitError> {
    let ns = repo.namespace().unwrap_or_default();
    let path = storage::artifact_path(&ns, &repo.name_any(), &commit.sha);
    let dest = ctx.config.storage_dir.join(&path);
    let matcher = Matcher::flux(&storage::ignore_patterns(
        work.path(),
        repo.spec.ignore.as_deref(),
    ));
    let checkout_dir = work.path().to_path_buf();
    let dest_dir = dest.clone();
    let stored = tokio::task::spawn_blocking(move || {
        if let Some(parent) = dest_dir.parent() {
            std::fs::create_dir_all(parent)?;
        }
        storage::store(&checkout_dir, &dest_dir, &matcher)
    })
    .await
    .map_err(|e| GitError::Operation(e.to_string()))?
    .map_err(|e| GitError::Operation(format!("failed to store the artifact: {e}")))?;
    // Keep only the newest artifact of this repository.
    if let Some(parent) = dest.parent()
        && let Ok(entries) = std::fs::read_dir(parent)
    {
        for entry in entries.flatten() {
            if entry.path() != dest {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(Fetched::New {
        artifact: Artifact {
            url: format!("file://{}", dest.display()),
            path,
            revision: commit.revision,
            digest: Some(stored.digest),
            last_update_time: jiff::Timestamp::now().to_string(),
            size: Some(stored.size),
            metadata: None,
        },
        subject: commit.subject,
    })
}

async fn patch_status(api: &Api<GitRepository>, name: &str, st: &GitRepositoryStatus) -> Result<(), Error> {
    let body = serde_json::json!({ "status": st });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map(|_| ())
        .map_err(Error::Kube)
}
