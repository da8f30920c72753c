//! The `kubectl-serin` binary: the kubectl plugin (`kubectl serin get|explain`).

use std::process::ExitCode;

use clap::Parser;
use serin::plugin::{Plugin, run};

fn main() -> ExitCode {
    let plugin = Plugin::parse();
    serin_runtime::tls::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(plugin)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
