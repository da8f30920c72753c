//! `serin-sync reconcile|suspend|resume|delete`: annotate or patch the object, wait for the
//! controller, and report as Flux's CLI does. Does I/O.

use std::time::Duration;

use clap::{Args, Subcommand};
use kube::{
    Api, Resource,
    api::{DeleteParams, Patch, PatchParams},
};

use super::{CliError, ClusterArgs, say};
use crate::{
    api::{GitRepository, Kustomization, REQUESTED_AT_ANNOTATION},
    controller::status,
};

/// How often the CLI polls while waiting.
pub const POLL: Duration = Duration::from_millis(500);

#[derive(Args, Debug)]
pub struct ReconcileArgs {
    #[command(subcommand)]
    pub what: ReconcileWhat,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Subcommand, Debug)]
pub enum ReconcileWhat {
    /// A Kustomization.
    #[command(alias = "ks")]
    Kustomization {
        name: String,
        /// Reconcile its source first.
        #[arg(long)]
        with_source: bool,
    },
    /// A HelmRelease.
    #[command(alias = "hr")]
    Helmrelease {
        name: String,
        /// Reconcile its chart's source and its HelmChart first.
        #[arg(long)]
        with_source: bool,
    },
    /// A source.
    Source {
        #[command(subcommand)]
        kind: ReconcileSource,
    },
}

#[derive(Subcommand, Debug)]
pub enum ReconcileSource {
    /// A GitRepository.
    Git { name: String },
    /// A HelmRepository.
    Helm { name: String },
    /// A HelmChart.
    Chart { name: String },
}

impl ReconcileSource {
    /// The kind and the name.
    fn parts(&self) -> (&'static str, &str) {
        match self {
            Self::Git { name } => ("GitRepository", name),
            Self::Helm { name } => ("HelmRepository", name),
            Self::Chart { name } => ("HelmChart", name),
        }
    }
}

#[derive(Args, Debug)]
pub struct SuspendArgs {
    #[command(subcommand)]
    pub what: KustomizationName,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Subcommand, Debug)]
pub enum KustomizationName {
    /// A Kustomization.
    #[command(alias = "ks")]
    Kustomization { name: String },
    /// A HelmRelease.
    #[command(alias = "hr")]
    Helmrelease { name: String },
}

impl KustomizationName {
    /// The kind (Flux's lower-case word for messages) and the name.
    fn parts(&self) -> (&'static str, &str) {
        match self {
            Self::Kustomization { name } => ("kustomization", name),
            Self::Helmrelease { name } => ("helmrelease", name),
        }
    }
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    #[command(subcommand)]
    pub what: KustomizationName,
    /// Do not ask for confirmation.
    #[arg(short = 's', long, global = true)]
    pub silent: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// The CLI's patches carry its own field manager: not a `kubectl` one, which the parent
/// Kustomization would take over (and so revert a suspend).
fn cli_params() -> PatchParams {
    PatchParams {
        field_manager: Some(super::install::FIELD_MANAGER.to_owned()),
        ..Default::default()
    }
}

fn now_token() -> String {
    jiff::Timestamp::now().to_string()
}

async fn annotate<K>(api: &Api<K>, kind: &str, name: &str, ns: &str) -> anyhow::Result<String>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    say::action(&format!("annotating {kind} {name} in {ns} namespace"));
    let token = now_token();
    let body = serde_json::json!({"metadata": {"annotations": {REQUESTED_AT_ANNOTATION: token}}});
    api.patch(name, &cli_params(), &Patch::Merge(&body))
        .await
        .map_err(|e| CliError(crate::controller::api_message(&e)))?;
    say::success(&format!("{kind} annotated"));
    Ok(token)
}

/// Reconciles a GitRepository; returns the fetched revision.
async fn reconcile_source(cluster: &ClusterArgs, name: &str) -> anyhow::Result<String> {
    let client = cluster.client().await?;
    let ns = &cluster.namespace;
    let api: Api<GitRepository> = Api::namespaced(client, ns);
    let repo = api
        .get(name)
        .await
        .map_err(|e| CliError(crate::controller::api_message(&e)))?;
    if repo.spec.suspend == Some(true) {
        return Err(CliError("resource is suspended".into()).into());
    }
    let token = annotate(&api, "GitRepository", name, ns).await?;
    say::waiting("waiting for GitRepository reconciliation");
    let deadline = tokio::time::Instant::now() + cluster.timeout;
    loop {
        let r = api.get(name).await?;
        let st = r.status.clone().unwrap_or_default();
        if st.last_handled_reconcile_at.as_deref() == Some(token.as_str()) {
            let ready = status::condition(&st.conditions, status::READY);
            return match ready {
                Some(c) if c.status == "True" => {
                    let rev = st.artifact.map(|a| a.revision).unwrap_or_default();
                    say::success(&format!("fetched revision {rev}"));
                    Ok(rev)
                }
                Some(c) => {
                    Err(CliError(format!("GitRepository reconciliation failed: {}", c.message)).into())
                }
                None => Err(CliError("GitRepository reconciliation failed".into()).into()),
            };
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError(format!(
                "timeout waiting for GitRepository {ns}/{name} reconciliation"
            ))
            .into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until a Kustomization handled `token` (or, without a token, observed its generation)
/// and settled; returns its applied revision or the failure.
async fn wait_kustomization(
    api: &Api<Kustomization>,
    name: &str,
    token: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let k = api.get(name).await?;
        let st = k.status.clone().unwrap_or_default();
        let handled = match token {
            Some(t) => st.last_handled_reconcile_at.as_deref() == Some(t),
            None => true,
        };
        let ready = status::condition(&st.conditions, status::READY);
        // Waiting for a dependency is transient: the controller retries on its own.
        let settled = ready.is_some_and(|c| c.status != "Unknown" && c.reason != "DependencyNotReady")
            && (st.observed_generation == k.meta().generation || ready.is_some_and(|c| c.status == "False"));
        if handled && settled {
            return match ready {
                Some(c) if c.status == "True" => Ok(st.last_applied_revision.unwrap_or_default()),
                Some(c) => {
                    Err(CliError(format!("Kustomization reconciliation failed: {}", c.message)).into())
                }
                None => Err(CliError("Kustomization reconciliation failed".into()).into()),
            };
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError(format!("timeout waiting for Kustomization {name} reconciliation")).into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The API of a kind the CLI reconciles by annotation (any of serin-sync's).
fn dynamic_api(client: &kube::Client, ns: &str, kind: &str) -> Api<kube::api::DynamicObject> {
    use kube::api::ApiResource;
    let resource = match kind {
        "HelmRepository" => ApiResource::erase::<crate::api::HelmRepository>(&()),
        "HelmChart" => ApiResource::erase::<crate::api::HelmChart>(&()),
        "HelmRelease" => ApiResource::erase::<crate::api::HelmRelease>(&()),
        "Kustomization" => ApiResource::erase::<Kustomization>(&()),
        _ => ApiResource::erase::<GitRepository>(&()),
    };
    Api::namespaced_with(client.clone(), ns, &resource)
}

/// Asks `kind` `ns/name` to reconcile and waits until it handled the request and settled
/// (Ready True or False); returns its status.
async fn reconcile_and_wait(
    cluster: &ClusterArgs,
    kind: &str,
    ns: &str,
    name: &str,
) -> anyhow::Result<serde_json::Value> {
    let client = cluster.client().await?;
    let api = dynamic_api(&client, ns, kind);
    let object = api
        .get(name)
        .await
        .map_err(|e| CliError(crate::controller::api_message(&e)))?;
    if object.data["spec"]["suspend"] == true {
        return Err(CliError("resource is suspended".into()).into());
    }
    let token = annotate(&api, kind, name, ns).await?;
    say::waiting(&format!("waiting for {kind} reconciliation"));
    let deadline = tokio::time::Instant::now() + cluster.timeout;
    loop {
        let o = api.get(name).await?;
        let st = &o.data["status"];
        let handled = st["lastHandledReconcileAt"].as_str() == Some(token.as_str());
        let ready = st["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .cloned();
        let current = st["observedGeneration"].as_i64() == o.metadata.generation;
        if let Some(ready) = ready.filter(|r| handled && current && r["status"] != "Unknown") {
            if ready["status"] == "True" {
                return Ok(st.clone());
            }
            return Err(CliError(format!(
                "{kind} reconciliation failed: {}",
                ready["message"].as_str().unwrap_or_default()
            ))
            .into());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError(format!("timeout waiting for {kind} {ns}/{name} reconciliation")).into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `reconcile helmrelease NAME [--with-source]`: the chart's source, then its HelmChart, then
/// the HelmRelease, each waited for.
async fn reconcile_helm_release(cluster: &ClusterArgs, name: &str, with_source: bool) -> anyhow::Result<()> {
    let client = cluster.client().await?;
    let ns = &cluster.namespace;
    let api: Api<crate::api::HelmRelease> = Api::namespaced(client, ns);
    let hr = api
        .get(name)
        .await
        .map_err(|e| CliError(crate::controller::api_message(&e)))?;
    if hr.spec.suspend == Some(true) {
        return Err(CliError("resource is suspended".into()).into());
    }
    if with_source {
        if let Some(template) = &hr.spec.chart {
            let source = &template.spec.source_ref;
            let source_ns = source.namespace.clone().unwrap_or_else(|| ns.clone());
            let st = reconcile_and_wait(cluster, &source.kind, &source_ns, &source.name).await?;
            if let Some(rev) = st["artifact"]["revision"].as_str() {
                say::success(&format!("fetched revision {rev}"));
            }
            let chart = format!("{ns}-{name}");
            reconcile_and_wait(cluster, "HelmChart", &source_ns, &chart).await?;
        } else if let Some(r) = hr.spec.chart_ref.as_ref().filter(|r| r.kind == "HelmChart") {
            let chart_ns = r.namespace.clone().unwrap_or_else(|| ns.clone());
            reconcile_and_wait(cluster, "HelmChart", &chart_ns, &r.name).await?;
        }
    }
    let st = reconcile_and_wait(cluster, "HelmRelease", ns, name).await?;
    let revision = st["history"][0]["chartVersion"]
        .as_str()
        .or(st["lastAttemptedRevision"].as_str())
        .unwrap_or_default();
    say::success(&format!("applied revision {revision}"));
    Ok(())
}

/// `reconcile`.
pub async fn reconcile(args: &ReconcileArgs) -> anyhow::Result<()> {
    let ns = args.cluster.namespace.clone();
    match &args.what {
        ReconcileWhat::Source {
            kind: ReconcileSource::Git { name },
        } => {
            reconcile_source(&args.cluster, name).await?;
        }
        ReconcileWhat::Source { kind } => {
            let (kind, name) = kind.parts();
            let st = reconcile_and_wait(&args.cluster, kind, &ns, name).await?;
            say::success(&format!(
                "fetched revision {}",
                st["artifact"]["revision"].as_str().unwrap_or_default()
            ));
        }
        ReconcileWhat::Helmrelease { name, with_source } => {
            reconcile_helm_release(&args.cluster, name, *with_source).await?;
        }
        ReconcileWhat::Kustomization { name, with_source } => {
            let client = args.cluster.client().await?;
            let ns = &args.cluster.namespace;
            let api: Api<Kustomization> = Api::namespaced(client, ns);
            let ks = api
                .get(name)
                .await
                .map_err(|e| CliError(crate::controller::api_message(&e)))?;
            if ks.spec.suspend == Some(true) {
                return Err(CliError("resource is suspended".into()).into());
            }
            if *with_source {
                let mut source_args = args.cluster.clone();
                if let Some(sns) = &ks.spec.source_ref.namespace {
                    source_args.namespace = sns.clone();
                }
                reconcile_source(&source_args, &ks.spec.source_ref.name).await?;
            }
            let token = annotate(&api, "Kustomization", name, ns).await?;
            say::waiting("waiting for Kustomization reconciliation");
            let rev = wait_kustomization(&api, name, Some(&token), args.cluster.timeout).await?;
            say::success(&format!("applied revision {rev}"));
        }
    }
    Ok(())
}

async fn set_suspend(args: &SuspendArgs, suspend: bool) -> anyhow::Result<()> {
    let (kind, name) = args.what.parts();
    let client = args.cluster.client().await?;
    let ns = &args.cluster.namespace;
    let api = dynamic_api(
        &client,
        ns,
        if kind == "helmrelease" {
            "HelmRelease"
        } else {
            "Kustomization"
        },
    );
    say::action(&format!(
        "{} {kind} {name} in {ns} namespace",
        if suspend { "suspending" } else { "resuming" }
    ));
    let body = serde_json::json!({"spec": {"suspend": suspend}});
    api.patch(name, &cli_params(), &Patch::Merge(&body))
        .await
        .map_err(|e| CliError(crate::controller::api_message(&e)))?;
    say::success(&format!(
        "{kind} {}",
        if suspend { "suspended" } else { "resumed" }
    ));
    Ok(())
}

/// `suspend kustomization|helmrelease NAME`.
pub async fn suspend(args: &SuspendArgs) -> anyhow::Result<()> {
    set_suspend(args, true).await
}

/// `resume kustomization|helmrelease NAME`: resumes, then waits for the reconcile the resume
/// triggers.
pub async fn resume(args: &SuspendArgs) -> anyhow::Result<()> {
    set_suspend(args, false).await?;
    if let KustomizationName::Helmrelease { name } = &args.what {
        return resume_helm_release(&args.cluster, name).await;
    }
    let (_, name) = args.what.parts();
    let name = name.to_owned();
    let client = args.cluster.client().await?;
    let api: Api<Kustomization> = Api::namespaced(client, &args.cluster.namespace);
    say::waiting("waiting for Kustomization reconciliation");
    // Resuming changes the generation; the controller marks the new one observed when done.
    let deadline = tokio::time::Instant::now() + args.cluster.timeout;
    loop {
        let k = api.get(&name).await?;
        let st = k.status.clone().unwrap_or_default();
        if st.observed_generation == k.meta().generation
            || status::condition(&st.conditions, status::READY)
                .is_some_and(|c| c.status == "False" && c.observed_generation == k.meta().generation)
        {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError(format!("timeout waiting for Kustomization {name} reconciliation")).into());
        }
        tokio::time::sleep(POLL).await;
    }
    let rev = wait_kustomization(&api, &name, None, args.cluster.timeout).await?;
    say::success(&format!("Kustomization {name} reconciliation completed"));
    say::success(&format!("applied revision {rev}"));
    Ok(())
}

/// Waits until a resumed HelmRelease observed its new generation and settled.
async fn resume_helm_release(cluster: &ClusterArgs, name: &str) -> anyhow::Result<()> {
    let client = cluster.client().await?;
    let api: Api<crate::api::HelmRelease> = Api::namespaced(client, &cluster.namespace);
    say::waiting("waiting for HelmRelease reconciliation");
    let deadline = tokio::time::Instant::now() + cluster.timeout;
    loop {
        let hr = api.get(name).await?;
        let st = hr.status.clone().unwrap_or_default();
        let ready = status::condition(&st.conditions, status::READY);
        if st.observed_generation == hr.meta().generation
            && let Some(ready) = ready.filter(|r| r.status != "Unknown")
        {
            if ready.status != "True" {
                return Err(CliError(format!("HelmRelease reconciliation failed: {}", ready.message)).into());
            }
            let revision = st
                .history
                .first()
                .map(|h| h.chart_version.clone())
                .or(st.last_attempted_revision)
                .unwrap_or_default();
            say::success(&format!("HelmRelease {name} reconciliation completed"));
            say::success(&format!("applied revision {revision}"));
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError(format!("timeout waiting for HelmRelease {name} reconciliation")).into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `delete kustomization|helmrelease NAME` (a HelmRelease's release is uninstalled).
pub async fn delete(args: &DeleteArgs) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    let (kind, name) = args.what.parts();
    let client = args.cluster.client().await?;
    let ns = &args.cluster.namespace;
    let api = dynamic_api(
        &client,
        ns,
        if kind == "helmrelease" {
            "HelmRelease"
        } else {
            "Kustomization"
        },
    );
    let object = api
        .get(name)
        .await
        .map_err(|e| CliError(crate::controller::api_message(&e)))?;
    if !args.silent && std::io::stdin().is_terminal() {
        let spec = &object.data["spec"];
        let managed = match kind {
            "kustomization" => spec["prune"] == true && spec["deletionPolicy"] != "Orphan",
            _ => true,
        };
        eprint!(
            "Are you sure you want to delete this {kind}{}? [y/N] ",
            if managed { " and its managed objects" } else { "" }
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !answer.trim().eq_ignore_ascii_case("y") {
            return Err(CliError("aborting".into()).into());
        }
    }
    say::action(&format!("deleting {kind} {name} in {ns} namespace"));
    api.delete(name, &DeleteParams::default())
        .await
        .map_err(|e| CliError(crate::controller::api_message(&e)))?;
    say::success(&format!("{kind} deleted"));
    Ok(())
}
