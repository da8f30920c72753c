//! The `serin` binary.

use std::process::ExitCode;

use clap::Parser;
use serin::cli::{Cli, Command, crd, lint, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd(args) => match crd::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Lint(args) => ExitCode::from(lint::run(&args) as u8),
        Command::Run(args) => run_controller(*args),
    }
}

fn run_controller(args: run::RunArgs) -> ExitCode {
    serin_runtime::tls::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let _telemetry = match serin_runtime::telemetry::init("serin", &args.telemetry) {
            Ok(guard) => guard,
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::FAILURE;
            }
        };
        match run::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        }
    })
}
