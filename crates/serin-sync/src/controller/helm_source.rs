//! The Helm sources, as Flux's source-controller reconciles them: a HelmRepository's
//! `index.yaml` fetched and stored (revision `sha256:` of its bytes; an OCI repository is a data
//! holder), and a HelmChart's package: the version its range selects from the repository's index,
//! downloaded; pulled from an OCI repository with `helm pull`; or packaged with `helm package`
//! from a GitRepository's artifact (its `valuesFiles` merged into `values.yaml` first). Does I/O.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use sha2::{Digest, Sha256};

use super::{
    Context, Error, events, finalizer,
    status::{self, ConditionStatus, Progress},
};
use crate::{
    api::{
        Artifact, GitRepository, REQUESTED_AT_ANNOTATION,
        helm::{HelmChart, HelmChartStatus, HelmRepository, HelmRepositoryStatus},
    },
    source::helm_index::Index,
};

/// The component name of the events, Flux's.
pub const COMPONENT: &str = "source-controller";
/// An index larger than this is refused, as Flux refuses it.
const MAX_INDEX_SIZE: usize = 50 * 1024 * 1024;
/// How long a chart download may take.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Reconciles one HelmRepository.
pub async fn reconcile_repository(repo: Arc<HelmRepository>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = repo.namespace().unwrap_or_default();
    let name = repo.name_any();
    let api: Api<HelmRepository> = Api::namespaced(ctx.client.clone(), &ns);
    let dir = ctx.config.storage_dir.join(format!("helmrepository/{ns}/{name}"));
    let cleanup = || async {
        let _ = std::fs::remove_dir_all(&dir);
    };
    if let Some(action) = finalizer::preamble(&*repo, &api, repo.spec.suspend == Some(true), cleanup).await? {
        return Ok(action);
    }
    let interval = repo
        .spec
        .interval
        .as_deref()
        .and_then(|i| status::parse_duration(i).ok())
        .unwrap_or(Duration::from_secs(60));
    let mut st = repo.status.clone().unwrap_or_default();
    let generation = repo.meta().generation;
    let reference = repo.object_ref(&());
    st.last_handled_reconcile_at = repo
        .annotations()
        .get(REQUESTED_AT_ANNOTATION)
        .cloned()
        .or(st.last_handled_reconcile_at.take());
    if let Some(message) = unsupported_repository_field(&repo) {
        Progress::new(&mut st.conditions, generation, jiff::Timestamp::now())
            .stalled(status::UNSUPPORTED_REASON, &message);
        st.observed_generation = generation;
        patch_repository(&api, &name, &st).await?;
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
    if repo.spec.type_.as_deref() == Some("oci") {
        // A data holder: the HelmCharts of this repository pull from the registry themselves.
        st.artifact = None;
        st.url = Some(repo.spec.url.clone());
        Progress::new(&mut st.conditions, generation, jiff::Timestamp::now())
            .set(
                status::READY,
                ConditionStatus::True,
                status::SUCCEEDED_REASON,
                "Helm repository is Ready",
            )
            .remove(status::RECONCILING)
            .remove(status::FETCH_FAILED);
        st.observed_generation = generation;
        patch_repository(&api, &name, &st).await?;
        return Ok(Action::await_change());
    }
    let fetched = fetch_index(&ctx, &repo).await;
    let now = jiff::Timestamp::now();
    match fetched {
        Ok(bytes) => {
            let revision = format!("sha256:{:x}", Sha256::digest(&bytes));
            let changed = st.artifact.as_ref().map(|a| &a.revision) != Some(&revision)
                || !st
                    .artifact
                    .as_ref()
                    .is_some_and(|a| ctx.config.storage_dir.join(&a.path).is_file());
            if changed {
                let file = format!("index-{}.yaml", &revision["sha256:".len()..]);
                let path = format!("helmrepository/{ns}/{name}/{file}");
                let stored = store_file(&dir, &file, &bytes).map_err(|e| {
                    tracing::warn!(error = %e, "storing the index failed");
                    e
                });
                if let Err(e) = stored {
                    let message = format!("failed to store the index: {e}");
                    Progress::new(&mut st.conditions, generation, now)
                        .source_failed("StorageOperationFailed", &message);
                    st.observed_generation = generation;
                    patch_repository(&api, &name, &st).await?;
                    return Ok(Action::requeue(interval.min(ctx.config.retry_cap)));
                }
                let entries = Index::parse(&bytes).map(|i| i.entries.len()).unwrap_or(0);
                st.artifact = Some(Artifact {
                    url: format!("file://{}", ctx.config.storage_dir.join(&path).display()),
                    path,
                    revision: revision.clone(),
                    digest: Some(revision.clone()),
                    last_update_time: now.to_string(),
                    size: Some(bytes.len() as i64),
                    metadata: None,
                });
                events::record(
                    &ctx.client,
                    &reference,
                    COMPONENT,
                    false,
                    "NewArtifact",
                    &format!(
                        "stored fetched index of size {} from '{}' ({entries} charts)",
                        bytes.len(),
                        repo.spec.url
                    ),
                )
                .await;
            }
            st.url = Some(repo.spec.url.clone());
            let message = format!("stored artifact: revision '{revision}'");
            Progress::new(&mut st.conditions, generation, now)
                .set(
                    status::ARTIFACT_IN_STORAGE,
                    ConditionStatus::True,
                    status::SUCCEEDED_REASON,
                    &message,
                )
                .set(
                    status::READY,
                    ConditionStatus::True,
                    status::SUCCEEDED_REASON,
                    &message,
                )
                .remove(status::FETCH_FAILED)
                .remove(status::RECONCILING);
            st.observed_generation = generation;
            patch_repository(&api, &name, &st).await?;
            Ok(Action::requeue(super::jitter(interval)))
        }
        Err((reason, message)) => {
            Progress::new(&mut st.conditions, generation, now).source_failed(reason, &message);
            st.observed_generation = generation;
            patch_repository(&api, &name, &st).await?;
            events::record(&ctx.client, &reference, COMPONENT, true, reason, &message).await;
            Ok(Action::requeue(interval.min(ctx.config.retry_cap)))
        }
    }
}

/// What serin-sync does not implement on a HelmRepository.
fn unsupported_repository_field(repo: &HelmRepository) -> Option<String> {
    if repo.spec.access_from.is_some() {
        return Some("spec.accessFrom is not supported by serin-sync".into());
    }
    if repo.spec.provider.as_deref().is_some_and(|p| p != "generic") {
        return Some(format!(
            "spec.provider {:?} is not supported by serin-sync (only generic)",
            repo.spec.provider.as_deref().unwrap_or_default()
        ));
    }
    None
}

/// Credentials of a repository: basic auth, a CA and a client certificate.
#[derive(Clone, Debug, Default)]
struct RepoAuth {
    basic: Option<(String, String)>,
    ca: Option<Vec<u8>>,
    identity: Option<Vec<u8>>,
}

async fn secret_data(
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<std::collections::BTreeMap<String, Vec<u8>>, String> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret = secrets
        .get(name)
        .await
        .map_err(|e| format!("failed to get secret '{ns}/{name}': {}", super::api_message(&e)))?;
    Ok(secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect())
}

async fn repo_auth(ctx: &Context, repo: &HelmRepository) -> Result<RepoAuth, String> {
    let ns = repo.namespace().unwrap_or_default();
    let mut auth = RepoAuth::default();
    if let Some(r) = &repo.spec.secret_ref {
        let data = secret_data(ctx, &ns, &r.name).await?;
        let text = |k: &str| data.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
        if let (Some(user), Some(password)) = (text("username"), text("password")) {
            auth.basic = Some((user, password));
        }
    }
    if let Some(r) = &repo.spec.cert_secret_ref {
        let data = secret_data(ctx, &ns, &r.name).await?;
        auth.ca = data.get("ca.crt").cloned();
        if let (Some(cert), Some(key)) = (data.get("tls.crt"), data.get("tls.key")) {
            let mut pem = cert.clone();
            pem.push(b'\n');
            pem.extend_from_slice(key);
            auth.identity = Some(pem);
        }
    }
    Ok(auth)
}

fn http_client(auth: &RepoAuth, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().timeout(timeout);
    if let Some(ca) = &auth.ca {
        let cert = reqwest::Certificate::from_pem(ca).map_err(|e| format!("invalid ca.crt: {e}"))?;
        builder = builder.add_root_certificate(cert);
    }
    if let Some(identity) = &auth.identity {
        let identity =
            reqwest::Identity::from_pem(identity).map_err(|e| format!("invalid tls.crt/tls.key: {e}"))?;
        builder = builder.identity(identity);
    }
    builder.build().map_err(|e| e.to_string())
}

async fn get(
    client: &reqwest::Client,
    url: &str,
    basic: Option<&(String, String)>,
    limit: usize,
) -> Result<Vec<u8>, (u16, String)> {
    let mut request = client.get(url);
    if let Some((user, password)) = basic {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().await.map_err(|e| (0, e.to_string()))?;
    let code = response.status();
    if !code.is_success() {
        return Err((code.as_u16(), format!("{url} answered {code}")));
    }
    let bytes = response.bytes().await.map_err(|e| (0, e.to_string()))?;
    if bytes.len() > limit {
        return Err((0, format!("{url} is larger than {limit} bytes")));
    }
    Ok(bytes.to_vec())
}

/// The repository's `index.yaml`, or Flux's failure reason and message.
async fn fetch_index(ctx: &Context, repo: &HelmRepository) -> Result<Vec<u8>, (&'static str, String)> {
    let url = repo.spec.url.trim_end_matches('/');
    if reqwest::Url::parse(url).is_err() {
        return Err(("URLInvalid", format!("invalid Helm repository URL: {url}")));
    }
    let auth = repo_auth(ctx, repo)
        .await
        .map_err(|e| ("AuthenticationFailed", e))?;
    let timeout = repo
        .spec
        .timeout
        .as_deref()
        .and_then(|t| status::parse_duration(t).ok())
        .unwrap_or(Duration::from_secs(60));
    let client = http_client(&auth, timeout).map_err(|e| ("AuthenticationFailed", e))?;
    let bytes = get(
        &client,
        &format!("{url}/index.yaml"),
        auth.basic.as_ref(),
        MAX_INDEX_SIZE,
    )
    .await
    .map_err(|(code, e)| {
        let reason = if code == 401 || code == 403 {
            "AuthenticationFailed"
        } else {
            "IndexationFailed"
        };
        (reason, format!("failed to fetch Helm repository index: {e}"))
    })?;
    Index::parse(&bytes).map_err(|e| ("IndexationFailed", e))?;
    Ok(bytes)
}

/// Writes `bytes` to `dir/file`, keeping only that file in `dir`.
fn store_file(dir: &std::path::Path, file: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let dest = dir.join(file);
    let staging = dir.join(format!(".{file}.tmp"));
    std::fs::write(&staging, bytes)?;
    std::fs::rename(&staging, &dest)?;
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.path() != dest {
            let _ = std::fs::remove_file(entry.path());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

async fn patch_repository(
    api: &Api<HelmRepository>,
    name: &str,
    st: &HelmRepositoryStatus,
) -> Result<(), Error> {
    let body = serde_json::json!({ "status": st });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map(|_| ())
        .map_err(Error::Kube)
}

/// Reconciles one HelmChart.
pub async fn reconcile_chart(chart: Arc<HelmChart>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = chart.namespace().unwrap_or_default();
    let name = chart.name_any();
    let api: Api<HelmChart> = Api::namespaced(ctx.client.clone(), &ns);
    let dir = ctx.config.storage_dir.join(format!("helmchart/{ns}/{name}"));
    let cleanup = || async {
        let _ = std::fs::remove_dir_all(&dir);
    };
    if let Some(action) =
        finalizer::preamble(&*chart, &api, chart.spec.suspend == Some(true), cleanup).await?
    {
        return Ok(action);
    }
    let interval = status::parse_duration(&chart.spec.interval).unwrap_or(Duration::from_secs(60));
    let mut st = chart.status.clone().unwrap_or_default();
    let generation = chart.meta().generation;
    let reference = chart.object_ref(&());
    st.last_handled_reconcile_at = chart
        .annotations()
        .get(REQUESTED_AT_ANNOTATION)
        .cloned()
        .or(st.last_handled_reconcile_at.take());
    if let Some(message) = unsupported_chart_field(&chart) {
        Progress::new(&mut st.conditions, generation, jiff::Timestamp::now())
            .stalled(status::UNSUPPORTED_REASON, &message);
        st.observed_generation = generation;
        patch_chart(&api, &name, &st).await?;
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
    let built = match chart.spec.source_ref.kind.as_str() {
        "HelmRepository" => from_repository(&ctx, &chart, &st, &dir).await,
        _ => from_git(&ctx, &chart, &st, &dir).await,
    };
    let now = jiff::Timestamp::now();
    match built {
        Ok(Built::Unchanged) => {}
        Ok(Built::New {
            artifact,
            chart_name,
            source_revision,
            packaged,
        }) => {
            let message = if packaged {
                format!(
                    "packaged '{chart_name}' chart with version '{}'",
                    artifact.revision
                )
            } else {
                format!("pulled '{chart_name}' chart with version '{}'", artifact.revision)
            };
            let reason = if packaged {
                "ChartPackageSucceeded"
            } else {
                "ChartPullSucceeded"
            };
            events::record(&ctx.client, &reference, COMPONENT, false, reason, &message).await;
            st.artifact = Some(*artifact);
            st.observed_chart_name = Some(chart_name);
            st.observed_source_artifact_revision = source_revision;
            st.observed_values_files = chart.spec.values_files.clone();
            Progress::new(&mut st.conditions, generation, now)
                .set(
                    status::ARTIFACT_IN_STORAGE,
                    ConditionStatus::True,
                    reason,
                    &message,
                )
                .set(status::READY, ConditionStatus::True, reason, &message);
        }
        Err(Failed {
            reason,
            message,
            stall,
        }) => {
            if stall {
                Progress::new(&mut st.conditions, generation, now).stalled(reason, &message);
            } else {
                Progress::new(&mut st.conditions, generation, now).source_failed(reason, &message);
            }
            st.observed_generation = generation;
            patch_chart(&api, &name, &st).await?;
            events::record(&ctx.client, &reference, COMPONENT, true, reason, &message).await;
            return Ok(if stall {
                Action::await_change()
            } else {
                Action::requeue(ctx.config.requeue_dependency.min(interval))
            });
        }
    }
    Progress::new(&mut st.conditions, generation, now)
        .remove(status::FETCH_FAILED)
        .remove(status::RECONCILING);
    st.observed_generation = generation;
    patch_chart(&api, &name, &st).await?;
    Ok(Action::requeue(super::jitter(interval)))
}

fn unsupported_chart_field(chart: &HelmChart) -> Option<String> {
    if chart.spec.verify.is_some() {
        return Some("spec.verify is not supported by serin-sync".into());
    }
    match chart.spec.source_ref.kind.as_str() {
        "HelmRepository" | "GitRepository" => None,
        other => Some(format!(
            "spec.sourceRef.kind {other:?} is not supported by serin-sync (HelmRepository, GitRepository)"
        )),
    }
}

enum Built {
    Unchanged,
    New {
        artifact: Box<Artifact>,
        chart_name: String,
        source_revision: Option<String>,
        packaged: bool,
    },
}

struct Failed {
    reason: &'static str,
    message: String,
    stall: bool,
}

fn failed(reason: &'static str, message: impl Into<String>) -> Failed {
    Failed {
        reason,
        message: message.into(),
        stall: false,
    }
}

/// The artifact of a package file in the chart's storage directory.
fn package_artifact(
    ctx: &Context,
    ns: &str,
    name: &str,
    file: &std::path::Path,
    version: &str,
) -> Result<Artifact, Failed> {
    let bytes = std::fs::read(file).map_err(|e| {
        failed(
            "StorageOperationFailed",
            format!("reading {}: {e}", file.display()),
        )
    })?;
    let file_name = file
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let path = format!("helmchart/{ns}/{name}/{file_name}");
    Ok(Artifact {
        url: format!("file://{}", ctx.config.storage_dir.join(&path).display()),
        path,
        revision: version.to_owned(),
        digest: Some(format!("sha256:{:x}", Sha256::digest(&bytes))),
        last_update_time: jiff::Timestamp::now().to_string(),
        size: Some(bytes.len() as i64),
        metadata: None,
    })
}

/// A chart from a HelmRepository: the version the range selects, downloaded (or pulled from an
/// OCI registry) unless it is the stored one.
async fn from_repository(
    ctx: &Context,
    chart: &HelmChart,
    st: &HelmChartStatus,
    dir: &std::path::Path,
) -> Result<Built, Failed> {
    let ns = chart.namespace().unwrap_or_default();
    let name = chart.name_any();
    let repo_name = &chart.spec.source_ref.name;
    let repos: Api<HelmRepository> = Api::namespaced(ctx.client.clone(), &ns);
    let repo = repos
        .get_opt(repo_name)
        .await
        .map_err(|e| failed("SourceUnavailable", super::api_message(&e)))?
        .ok_or_else(|| {
            failed(
                "SourceUnavailable",
                format!(
                    "failed to get source: HelmRepository.source.toolkit.fluxcd.io \"{repo_name}\" not found"
                ),
            )
        })?;
    let stored = |version: &str| {
        st.artifact
            .as_ref()
            .is_some_and(|a| a.revision == version && ctx.config.storage_dir.join(&a.path).is_file())
            && st.observed_chart_name.as_deref() == Some(chart.spec.chart.as_str())
    };
    if repo.spec.type_.as_deref() == Some("oci") {
        let reference = format!("{}/{}", repo.spec.url.trim_end_matches('/'), chart.spec.chart);
        let work = tempfile::tempdir().map_err(|e| failed("StorageOperationFailed", e.to_string()))?;
        let pulled = ctx
            .config
            .helm
            .pull(
                &reference,
                chart.spec.version.as_deref(),
                work.path(),
                repo.spec.insecure == Some(true),
            )
            .await
            .map_err(|e| failed("ChartPullError", format!("chart pull error: {e}")))?;
        let (chart_name, version) = ctx
            .config
            .helm
            .show_chart(&pulled)
            .await
            .map_err(|e| failed("ChartPullError", e.to_string()))?;
        if stored(&version) {
            return Ok(Built::Unchanged);
        }
        let file = format!("{chart_name}-{version}.tgz");
        let bytes = std::fs::read(&pulled).map_err(|e| failed("StorageOperationFailed", e.to_string()))?;
        store_file(dir, &file, &bytes).map_err(|e| failed("StorageOperationFailed", e.to_string()))?;
        let artifact = package_artifact(ctx, &ns, &name, &dir.join(&file), &version)?;
        return Ok(Built::New {
            artifact: Box::new(artifact),
            chart_name,
            source_revision: None,
            packaged: false,
        });
    }
    let index_artifact = repo
        .status
        .as_ref()
        .and_then(|s| s.artifact.clone())
        .filter(|_| {
            repo.status
                .as_ref()
                .and_then(|s| status::condition(&s.conditions, status::READY))
                .is_some_and(|c| c.status == "True")
        })
        .ok_or_else(|| {
            failed(
                "NoSourceArtifact",
                format!("no artifact available for HelmRepository source '{repo_name}'"),
            )
        })?;
    let bytes = std::fs::read(ctx.config.storage_dir.join(&index_artifact.path)).map_err(|e| {
        failed(
            "NoSourceArtifact",
            format!("the index of HelmRepository '{repo_name}' is not stored: {e}"),
        )
    })?;
    let index = Index::parse(&bytes).map_err(|e| failed("IndexationFailed", e))?;
    let selected = index
        .select(&chart.spec.chart, chart.spec.version.as_deref())
        .map_err(|e| Failed {
            reason: "InvalidChartReference",
            message: e,
            stall: false,
        })?
        .clone();
    if stored(&selected.version) {
        return Ok(Built::Unchanged);
    }
    let url = selected.urls.first().ok_or_else(|| {
        failed(
            "ChartPullError",
            format!(
                "chart '{}' version '{}' has no URL",
                chart.spec.chart, selected.version
            ),
        )
    })?;
    let base = format!("{}/", repo.spec.url.trim_end_matches('/'));
    let absolute = reqwest::Url::parse(&base)
        .and_then(|b| b.join(url))
        .map_err(|e| failed("ChartPullError", format!("invalid chart URL {url}: {e}")))?;
    let auth = repo_auth(ctx, &repo)
        .await
        .map_err(|e| failed("AuthenticationFailed", e))?;
    let same_host = reqwest::Url::parse(&base)
        .ok()
        .and_then(|b| b.host_str().map(str::to_owned))
        == absolute.host_str().map(str::to_owned);
    let basic = (same_host || repo.spec.pass_credentials == Some(true))
        .then_some(auth.basic.as_ref())
        .flatten();
    let client = http_client(&auth, DOWNLOAD_TIMEOUT).map_err(|e| failed("AuthenticationFailed", e))?;
    let package = get(&client, absolute.as_str(), basic, MAX_INDEX_SIZE)
        .await
        .map_err(|(_, e)| {
            failed(
                "ChartPullError",
                format!("chart pull error: failed to download chart for remote reference: {e}"),
            )
        })?;
    let file = format!("{}-{}.tgz", chart.spec.chart, selected.version);
    store_file(dir, &file, &package).map_err(|e| failed("StorageOperationFailed", e.to_string()))?;
    let artifact = package_artifact(ctx, &ns, &name, &dir.join(&file), &selected.version)?;
    Ok(Built::New {
        artifact: Box::new(artifact),
        chart_name: chart.spec.chart.clone(),
        source_revision: None,
        packaged: false,
    })
}

/// A chart from a GitRepository's artifact: the directory at `spec.chart`, its `valuesFiles`
/// merged into `values.yaml`, packaged with `helm package` (version `<version>+<12 hex of the
/// commit>` with `reconcileStrategy: Revision`).
async fn from_git(
    ctx: &Context,
    chart: &HelmChart,
    st: &HelmChartStatus,
    dir: &std::path::Path,
) -> Result<Built, Failed> {
    let ns = chart.namespace().unwrap_or_default();
    let name = chart.name_any();
    let repo_name = &chart.spec.source_ref.name;
    let repos: Api<GitRepository> = Api::namespaced(ctx.client.clone(), &ns);
    let repo = repos
        .get_opt(repo_name)
        .await
        .map_err(|e| failed("SourceUnavailable", super::api_message(&e)))?
        .ok_or_else(|| {
            failed(
                "SourceUnavailable",
                format!(
                    "failed to get source: GitRepository.source.toolkit.fluxcd.io \"{repo_name}\" not found"
                ),
            )
        })?;
    let artifact = repo
        .status
        .as_ref()
        .and_then(|s| s.artifact.clone())
        .ok_or_else(|| {
            failed(
                "NoSourceArtifact",
                format!("no artifact available for GitRepository source '{repo_name}'"),
            )
        })?;
    let revision_strategy = chart.spec.reconcile_strategy.as_deref() == Some("Revision");
    let unchanged = st
        .artifact
        .as_ref()
        .is_some_and(|a| ctx.config.storage_dir.join(&a.path).is_file())
        && st.observed_source_artifact_revision.as_deref() == Some(artifact.revision.as_str())
        && st.observed_values_files == chart.spec.values_files
        && st.observed_generation == chart.meta().generation;
    if unchanged {
        return Ok(Built::Unchanged);
    }
    let root = ctx.config.storage_dir.join(&artifact.path);
    let rel = chart.spec.chart.trim_start_matches("./");
    let source_dir = root.join(rel);
    if !source_dir.starts_with(&root) || rel.split('/').any(|c| c == "..") {
        return Err(Failed {
            reason: "InvalidChartReference",
            message: format!("chart path '{}' is not in the artifact", chart.spec.chart),
            stall: true,
        });
    }
    if !source_dir.join("Chart.yaml").is_file() {
        return Err(failed(
            "ChartPackageError",
            format!(
                "no Chart.yaml in '{}' of GitRepository '{repo_name}' at revision '{}'",
                chart.spec.chart, artifact.revision
            ),
        ));
    }
    let work = tempfile::tempdir().map_err(|e| failed("StorageOperationFailed", e.to_string()))?;
    let copy = work.path().join("chart");
    copy_dir(&source_dir, &copy).map_err(|e| failed("StorageOperationFailed", e.to_string()))?;
    merge_values_files(
        &copy,
        &source_dir,
        &chart.spec.values_files,
        chart.spec.ignore_missing_values_files == Some(true),
    )
    .map_err(|e| failed("ChartPackageError", e))?;
    let (_, chart_version) = ctx
        .config
        .helm
        .show_chart(&copy)
        .await
        .map_err(|e| failed("ChartPackageError", e.to_string()))?;
    let sha = artifact.revision.rsplit(':').next().unwrap_or_default();
    let version = if revision_strategy && !sha.is_empty() {
        format!("{chart_version}+{}", &sha[..sha.len().min(12)])
    } else {
        chart_version
    };
    let out = work.path().join("out");
    std::fs::create_dir_all(&out).map_err(|e| failed("StorageOperationFailed", e.to_string()))?;
    let package = ctx
        .config
        .helm
        .package(&copy, &out, Some(&version))
        .await
        .map_err(|e| failed("ChartPackageError", format!("chart package error: {e}")))?;
    let (chart_name, _) = ctx
        .config
        .helm
        .show_chart(&package)
        .await
        .map_err(|e| failed("ChartPackageError", e.to_string()))?;
    let file = package
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bytes = std::fs::read(&package).map_err(|e| failed("StorageOperationFailed", e.to_string()))?;
    store_file(dir, &file, &bytes).map_err(|e| failed("StorageOperationFailed", e.to_string()))?;
    let stored = package_artifact(ctx, &ns, &name, &dir.join(&file), &version)?;
    Ok(Built::New {
        artifact: Box::new(stored),
        chart_name,
        source_revision: Some(artifact.revision),
        packaged: true,
    })
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.map_err(std::io::Error::other)?;
        let rel = entry.path().strip_prefix(from).map_err(std::io::Error::other)?;
        let dest = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest)?;
        } else if entry.file_type().is_file() {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// Merges the chart's `valuesFiles` (paths relative to the chart, or to the artifact root
/// with `./`) in order over its `values.yaml`.
fn merge_values_files(
    copy: &std::path::Path,
    source: &std::path::Path,
    files: &[String],
    ignore_missing: bool,
) -> Result<(), String> {
    if files.is_empty() {
        return Ok(());
    }
    let read = |path: &std::path::Path| -> Result<Option<serde_json::Value>, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_yaml::from_str::<serde_json::Value>(&text)
                .map(|v| Some(if v.is_null() { serde_json::json!({}) } else { v }))
                .map_err(|e| format!("values file {}: {e}", path.display())),
            Err(_) => Ok(None),
        }
    };
    let mut values = read(&copy.join("values.yaml"))?.unwrap_or_else(|| serde_json::json!({}));
    for file in files {
        let path = source.join(file.trim_start_matches("./"));
        match read(&path)? {
            Some(v) => super::helm_release::plan::merge(&mut values, v),
            None if ignore_missing => {}
            None => return Err(format!("values file '{file}' not found in the chart")),
        }
    }
    let text = serde_yaml::to_string(&values).map_err(|e| e.to_string())?;
    std::fs::write(copy.join("values.yaml"), text).map_err(|e| e.to_string())
}

async fn patch_chart(api: &Api<HelmChart>, name: &str, st: &HelmChartStatus) -> Result<(), Error> {
    let body = serde_json::json!({ "status": st });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map(|_| ())
        .map_err(Error::Kube)
}
