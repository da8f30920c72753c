//! `serin-sync install --url URL --branch B --path P`: server-side applies the CRDs, the
//! namespace, a GitRepository and the root Kustomization `flux-system` (the bootstrap entry
//! point). Does I/O.

use std::time::Duration;

use clap::Args;
use k8s_openapi::{
    api::core::v1::Namespace, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api,
    api::{Patch, PatchParams},
};

use super::{CliError, ClusterArgs, say};
use crate::api::{GitRepository, Kustomization};

/// The field manager of `install`.
pub const FIELD_MANAGER: &str = "serin-sync";

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// The Git repository URL (http, https, ssh or file).
    #[arg(long)]
    pub url: String,
    /// The branch to sync.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// The path of the cluster's entry point in the repository, such as `./clusters/dev`.
    #[arg(long)]
    pub path: String,
    /// A Secret in the namespace with the Git credentials.
    #[arg(long)]
    pub secret_ref: Option<String>,
    /// How often the repository is checked.
    #[arg(long, default_value = "1m")]
    pub interval: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// The GitRepository and Kustomization `install` applies.
pub fn manifests(args: &InstallArgs) -> anyhow::Result<(GitRepository, Kustomization)> {
    let ns = &args.cluster.namespace;
    let secret = args
        .secret_ref
        .as_ref()
        .map(|s| format!("\n  secretRef:\n    name: {s}"))
        .unwrap_or_default();
    let repo: GitRepository = serde_yaml::from_str(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: flux-system\n  namespace: {ns}\nspec:\n  interval: {}\n  ref:\n    branch: {}\n  url: {}{secret}\n",
        args.interval, args.branch, args.url
    ))?;
    let ks: Kustomization = serde_yaml::from_str(&format!(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: flux-system\n  namespace: {ns}\nspec:\n  interval: 10m0s\n  path: {}\n  prune: true\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n",
        args.path
    ))?;
    Ok((repo, ks))
}

/// Applies everything.
pub async fn run(args: &InstallArgs) -> anyhow::Result<()> {
    let client = args.cluster.client().await?;
    let ns = &args.cluster.namespace;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let fail = |e: kube::Error| CliError(crate::controller::api_message(&e));
    say::action(&format!("installing components in {ns} namespace"));
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crate::api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .map_err(fail)?;
    }
    // The Kustomization kind must be served before objects of it are applied.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for crd in crate::api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        loop {
            let c = crds.get(&name).await.map_err(fail)?;
            let established = c
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CliError(format!("CRD {name} was not established in time")).into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    say::success("CRDs installed");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace = serde_json::from_value(
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )?;
    namespaces
        .patch(ns, &params, &Patch::Apply(&namespace))
        .await
        .map_err(fail)?;
    let (repo, ks) = manifests(args)?;
    let repos: Api<GitRepository> = Api::namespaced(client.clone(), ns);
    repos
        .patch("flux-system", &params, &Patch::Apply(&repo))
        .await
        .map_err(fail)?;
    say::success("GitRepository flux-system applied");
    let kss: Api<Kustomization> = Api::namespaced(client, ns);
    kss.patch("flux-system", &params, &Patch::Apply(&ks))
        .await
        .map_err(fail)?;
    say::success("Kustomization flux-system applied");
    say::success(&format!(
        "installed: serin-sync syncs {} ({}) path {}",
        args.url, args.branch, args.path
    ));
    Ok(())
}
