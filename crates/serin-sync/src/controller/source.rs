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

use super::{Context, Error, events, finalizer, status};
use crate::{
    api::{Artifact, FINALIZER, GitRepository, GitRepositoryStatus, REQUESTED_AT_ANNOTATION},
    source::{
        git::{Credentials, GitCli, GitError},
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
    if repo.meta().deletion_timestamp.is_some() {
        let dir = ctx
            .config
            .storage_dir
            .join(format!("gitrepository/{ns}/{}", repo.name_any()));
        let _ = std::fs::remove_dir_all(dir);
        finalizer::remove(&api, &repo.name_any(), repo.finalizers(), FINALIZER).await?;
        return Ok(Action::await_change());
    }
    if !repo.finalizers().iter().any(|f| f == FINALIZER) {
        finalizer::add(&api, &repo.name_any(), repo.finalizers(), FINALIZER).await?;
    }
    if repo.spec.suspend == Some(true) {
        tracing::info!(gitrepository = %format!("{ns}/{}", repo.name_any()), "Reconciliation is suspended for this object");
        return Ok(Action::await_change());
    }
    let interval = status::parse_duration(&repo.spec.interval).unwrap_or(Duration::from_secs(60));
    let mut st = repo.status.clone().unwrap_or_default();
    st.last_handled_reconcile_at = repo
        .annotations()
        .get(REQUESTED_AT_ANNOTATION)
        .cloned()
        .or(st.last_handled_reconcile_at);
    let generation = repo.meta().generation;
    let now = jiff::Timestamp::now();
    let reference = repo.object_ref(&());

    if let Some(message) = status::unsupported_source_field(&repo.spec) {
        status::set_condition(
            &mut st.conditions,
            status::READY,
            "False",
            status::UNSUPPORTED_REASON,
            &message,
            generation,
            now,
        );
        status::set_condition(
            &mut st.conditions,
            status::STALLED,
            "True",
            status::UNSUPPORTED_REASON,
            &message,
            generation,
            now,
        );
        st.observed_generation = generation;
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

    match fetch(&repo, &ctx, &st).await {
        Ok(Fetched::Unchanged(revision)) => {
            tracing::debug!(gitrepository = %format!("{ns}/{}", repo.name_any()), "no changes since last reconciliation: observed revision '{revision}'");
            let message = format!("stored artifact for revision '{revision}'");
            status::set_condition(
                &mut st.conditions,
                status::ARTIFACT_IN_STORAGE,
                "True",
                "Succeeded",
                &message,
                generation,
                now,
            );
            status::set_condition(
                &mut st.conditions,
                status::READY,
                "True",
                "Succeeded",
                &message,
                generation,
                now,
            );
            status::remove_condition(&mut st.conditions, status::FETCH_FAILED);
            status::remove_condition(&mut st.conditions, status::RECONCILING);
        }
        Ok(Fetched::New { artifact, subject }) => {
            let message = format!("stored artifact for revision '{}'", artifact.revision);
            let was_failing =
                status::condition(&st.conditions, status::READY).is_some_and(|c| c.status != "True");
            let changed = st.artifact.as_ref().map(|a| &a.digest) != Some(&artifact.digest);
            st.artifact = Some(artifact);
            st.observed_ignore = repo.spec.ignore.clone();
            status::set_condition(
                &mut st.conditions,
                status::ARTIFACT_IN_STORAGE,
                "True",
                "Succeeded",
                &message,
                generation,
                now,
            );
            status::set_condition(
                &mut st.conditions,
                status::READY,
                "True",
                "Succeeded",
                &message,
                generation,
                now,
            );
            status::remove_condition(&mut st.conditions, status::FETCH_FAILED);
            status::remove_condition(&mut st.conditions, status::RECONCILING);
            let event = format!("stored artifact for commit '{subject}'");
            if changed {
                events::record(&ctx.client, &reference, COMPONENT, false, "NewArtifact", &event).await;
            } else if was_failing {
                events::record(&ctx.client, &reference, COMPONENT, false, "Succeeded", &event).await;
            }
        }
        Err(err) => {
            let message = format!("failed to checkout and determine revision: {err}");
            status::set_condition(
                &mut st.conditions,
                status::FETCH_FAILED,
                "True",
                err.reason(),
                &message,
                generation,
                now,
            );
            status::set_condition(
                &mut st.conditions,
                status::READY,
                "False",
                err.reason(),
                &message,
                generation,
                now,
            );
            st.observed_generation = generation;
            patch_status(&api, &repo.name_any(), &st).await?;
            events::record(&ctx.client, &reference, COMPONENT, true, err.reason(), &message).await;
            return Ok(Action::requeue(interval.min(ctx.config.retry_cap)));
        }
    }
    st.observed_generation = generation;
    patch_status(&api, &repo.name_any(), &st).await?;
    Ok(Action::requeue(super::jitter(interval)))
}

enum Fetched {
    Unchanged(String),
    New { artifact: Artifact, subject: String },
}

async fn fetch(repo: &GitRepository, ctx: &Context, st: &GitRepositoryStatus) -> Result<Fetched, GitError> {
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
        .and_then(status::parse_duration)
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
            return Ok(Fetched::Unchanged(remote));
        }
    }
    let work = tempfile::Builder::new()
        .prefix("gitrepository-")
        .tempdir()
        .map_err(|e| GitError::Operation(format!("cannot create a checkout directory: {e}")))?;
    let commit = git.fetch(&checkout, work.path()).await?;
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
