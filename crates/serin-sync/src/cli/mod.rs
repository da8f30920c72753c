//! The `serin-sync` command line: `run` (the controller), `crd` (print the CRDs) and the
//! commands teams use with Flux, with the same output shapes: `get`, `reconcile`, `suspend`,
//! `resume`, `delete`, `build`, `diff`, `tree` and `install`.

pub mod crd;
pub mod get;
pub mod install;
pub mod local;
pub mod objects;
pub mod post_render;
pub mod run;
pub mod tree;

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use kube::Client;

/// serin-sync: reconciles Git repositories to the cluster, compatible with Flux.
#[derive(Parser, Debug)]
#[command(name = "serin-sync", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the CRDs serin-sync reads (or write them into a directory).
    Crd(crd::CrdArgs),
    /// Run the controllers (sources, Kustomizations, HelmReleases, notifications).
    Run(run::RunArgs),
    /// Show Kustomizations, HelmReleases, sources, alerts, alert providers and receivers.
    Get(get::GetArgs),
    /// Ask for an immediate reconcile and wait for it.
    Reconcile(objects::ReconcileArgs),
    /// Stop reconciling a Kustomization or HelmRelease.
    Suspend(objects::SuspendArgs),
    /// Resume a suspended Kustomization or HelmRelease and wait for it.
    Resume(objects::SuspendArgs),
    /// Delete a Kustomization (its objects are garbage-collected per its deletionPolicy) or a
    /// HelmRelease (its release is uninstalled).
    Delete(objects::DeleteArgs),
    /// Print the YAML a Kustomization would apply from a local directory.
    Build(local::LocalArgs),
    /// Compare what a Kustomization would apply from a local directory with the cluster.
    Diff(local::LocalArgs),
    /// Show the objects a Kustomization applied or a HelmRelease installed, nested ones expanded.
    Tree(tree::TreeArgs),
    /// Install the CRDs, a GitRepository and the root Kustomization `flux-system`.
    Install(install::InstallArgs),
    /// Helm's post-renderer for HelmReleases (run by helm, not by hand).
    #[command(hide = true)]
    PostRender(post_render::PostRenderArgs),
}

/// Flags every cluster command has.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Path to the kubeconfig (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace of the objects.
    #[arg(short = 'n', long, global = true, default_value = "flux-system")]
    pub namespace: String,
    /// How long to wait for a reconcile.
    #[arg(long, global = true, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::controller::status::parse_duration(s).map_err(|e| e.to_string())
}

impl ClusterArgs {
    /// A client for the kubeconfig (or the environment).
    pub async fn client(&self) -> anyhow::Result<Client> {
        serin_runtime::tls::install_crypto_provider();
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
            }
            None => kube::Config::infer().await?,
        };
        Ok(Client::try_from(config)?)
    }
}

/// A cluster command's failure: printed as `✗ message`, exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(pub String);

/// Prints Flux's progress lines on stderr.
pub mod say {
    pub fn action(m: &str) {
        eprintln!("► {m}");
    }
    pub fn success(m: &str) {
        eprintln!("✔ {m}");
    }
    pub fn waiting(m: &str) {
        eprintln!("◎ {m}");
    }
}
