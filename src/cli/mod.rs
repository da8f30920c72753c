//! The `serin` command line: `run` (the controller), `crd` (print the CRDs), `lint` (check
//! manifests offline) and `simulate` (replay a Canary's analysis over a past time range).

pub mod crd;
pub mod lint;
pub mod run;
pub mod simulate;

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
    /// Replay a Canary's analysis over a past time range (from Prometheus or a recording) and
    /// print each step and where it would have promoted or rolled back.
    Simulate(simulate::SimulateArgs),
}

/// Runs a one-shot command (not the controller) on a single-threaded runtime: `Ok` exits 0,
/// `Err` prints `error: ...` and exits 1.
pub fn block_on(command: impl std::future::Future<Output = Result<(), String>>) -> std::process::ExitCode {
    serin_runtime::tls::install_crypto_provider();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| runtime.block_on(command));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
