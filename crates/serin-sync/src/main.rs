//! The `serin-sync` binary.

use std::process::ExitCode;

use clap::Parser;
use serin_sync::cli::{Cli, Command, crd, get, install, local, objects, post_render, run, tree};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd(args) => match crd::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("✗ {err:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            let telemetry = args.telemetry.clone();
            serin_runtime::startup::run_controller("serin-sync", &telemetry, run::run(args))
        }
        // `diff` exits 1 for differences, so errors of both exit 2.
        Command::Build(args) => run_cli(2, async move { local::run(&args, false).await }),
        Command::Diff(args) => run_cli(2, async move { local::run(&args, true).await }),
        Command::Get(a) => run_cli(1, async move { get::run(&a).await.map(|()| 0) }),
        Command::Reconcile(a) => run_cli(1, async move { objects::reconcile(&a).await.map(|()| 0) }),
        Command::Suspend(a) => run_cli(1, async move { objects::suspend(&a).await.map(|()| 0) }),
        Command::Resume(a) => run_cli(1, async move { objects::resume(&a).await.map(|()| 0) }),
        Command::Delete(a) => run_cli(1, async move { objects::delete(&a).await.map(|()| 0) }),
        Command::Tree(a) => run_cli(1, async move { tree::run(&a).await.map(|()| 0) }),
        Command::Install(a) => run_cli(1, async move { install::run(&a).await.map(|()| 0) }),
        Command::PostRender(a) => run_cli(1, async move { post_render::run(&a).await.map(|()| 0) }),
    }
}

/// Runs one cluster command: its exit code, or `error_code` after printing the error.
fn run_cli<F>(error_code: u8, command: F) -> ExitCode
where
    F: std::future::Future<Output = anyhow::Result<u8>>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("✗ cannot start the async runtime: {err}");
            return ExitCode::from(error_code);
        }
    };
    match runtime.block_on(command) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("✗ {err:#}");
            ExitCode::from(error_code)
        }
    }
}
