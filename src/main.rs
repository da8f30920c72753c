//! The `serin` binary.

use std::process::ExitCode;

use clap::Parser;
use serin::cli::{Cli, Command, crd, lint, run, simulate};

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
        Command::Simulate(args) => serin::cli::block_on(simulate::run(&args)),
        Command::Run(args) => {
            let telemetry = args.telemetry.clone();
            serin_runtime::startup::run_controller("serin", &telemetry, run::run(*args))
        }
    }
}
