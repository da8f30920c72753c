//! The `kubectl-serin` binary: the kubectl plugin (`kubectl serin get|explain|promote|abort|retry|pause|resume`).

use std::process::ExitCode;

use clap::Parser;
use serin::plugin::{Plugin, run};

fn main() -> ExitCode {
    serin::cli::block_on(run(Plugin::parse()))
}
