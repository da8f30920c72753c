//! The `serin` command line: `run` (the controller), `crd` (print the CRDs) and `lint` (check
//! manifests offline).

pub mod crd;
pub mod lint;
pub mod run;

use clap::{Parser, Subcommand};

/// serin: progressive delivery for Kubernetes, compatible with Flagger on Istio.
#[derive(Parser, Debug)]
#[command(name = "serin", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller against the cluster of the current kubeconfig (or in-cluster config).
    Run(Box<run::RunArgs>),
    /// Print the CustomResourceDefinitions serin serves (the contents of `crds/`).
    Crd(crd::CrdArgs),
    /// Check Canary, MetricTemplate and AlertProvider manifests without a cluster.
    Lint(lint::LintArgs),
}
