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

/// `reconcile`.
pub async fn reconcile(args: &ReconcileArgs) -> anyhow::Result<()> {
    match &args.what {
        ReconcileWhat::Source {
            kind: ReconcileSource::Git { name },
        } => {
            reconcile_source(&args.cluster, name).await?;
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

async fn set_suspend(args: &SuspendArgs, suspend: bool) -> anyhow::Result<(Api<Kustomization>, String)> {
    let KustomizationName::Kustomization { name } = &args.what;
    let client = args.cluster.client().await?;
    let ns = &args.cluster.namespace;
    let api: Api<Kustomization> = Api::namespaced(client, ns);
    say::action(&format!(
        "{} kustomization {name} in {ns} namespace",
        if suspend { "suspending" } else { "resuming" }
    ));
    let body = serde_json::json!({"spec": {"suspend": suspend}});
    api.patch(name, &cli_params(), &Patch::Merge(&body))
        .await
        .map_err(|e| CliError(crate::controller::api_message(&e)))?;
    say::success(&format!(
        "kustomization {}",
        if suspend { "suspended" } else { "resumed" }
    ));
    Ok((api, name.clone()))
}

/// `suspend kustomization NAME`.
pub async fn suspend(args: &SuspendArgs) -> anyhow::Result<()> {
    set_suspend(args, true).await.map(|_| ())
}

/// `resume kustomization NAME`: resumes, then waits for the reconcile the resume triggers.
pub async fn resume(args: &SuspendArgs) -> anyhow::Result<()> {
    let (api, name) = set_suspend(args, false).await?;
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

/// `delete kustomization NAME`.
pub async fn delete(args: &DeleteArgs) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    let KustomizationName::Kustomization { name } = &args.what;
    let client = args.cluster.client().await?;
    let ns = &args.cluster.namespace;
    let api: Api<Kustomization> = Api::namespaced(client, ns);
    let ks = api
        .get(name)
        .await
        .map_err(|e| CliError(crate::controller::api_message(&e)))?;
    if !args.silent && std::io::stdin().is_terminal() {
        let prune = ks.spec.prune && ks.spec.deletion_policy.as_deref() != Some("Orphan");
        eprint!(
            "Are you sure you want to delete this kustomization{}? [y/N] ",
            if prune { " and its managed objects" } else { "" }
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !answer.trim().eq_ignore_ascii_case("y") {
            return Err(CliError("aborting".into()).into());
        }
    }
    say::action(&format!("deleting kustomization {name} in {ns} namespace"));
    api.delete(name, &DeleteParams::default())
        .await
        .map_err(|e| CliError(crate::controller::api_message(&e)))?;
    say::success("kustomization deleted");
    Ok(())
}
