//! The `serin-sync` command line: `run` (the controller), `crd` (print the CRDs) and the
//! commands teams use with Flux.

pub mod crd;
pub mod run;

use clap::{Parser, Subcommand};

/// serin-sync: reconciles Git repositories to the cluster, compatible with Flux.
#[derive(Parser, Debug)]
#[command(name = "serin-sync", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the GitRepository and Kustomization CRDs (or write them into a directory).
    Crd(crd::CrdArgs),
    /// Run the GitRepository and Kustomization controllers.
    Run(run::RunArgs),
}
