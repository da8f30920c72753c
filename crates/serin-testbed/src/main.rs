//! `serin-testbed up`: runs the test bed in the foreground.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serin_testbed::{Testbed, TestbedOptions};

#[derive(Parser, Debug)]
#[command(
    name = "serin-testbed",
    version,
    about = "serin's local test bed: a Kubernetes API emulator with simulated workloads"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve on 127.0.0.1 until SIGINT/SIGTERM. Prints one line once serving:
    /// `ready kubeconfig=PATH prometheus=URL proxy=URL loadtester=URL`
    /// (`ready kubeconfig=PATH` with `--no-mesh`).
    Up {
        /// Port of the API server (0 picks a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Where to write the kubeconfig (default: a temporary directory).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// The API emulator alone: no data plane, network proxy, loadtester or Prometheus.
        #[arg(long)]
        no_mesh: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(serin_runtime::telemetry::env_filter("warn")?)
        .init();
    match Cli::parse().command {
        Command::Up {
            port,
            kubeconfig,
            no_mesh,
        } => {
            let options = TestbedOptions {
                port,
                kubeconfig,
                mesh: !no_mesh,
                prometheus: !no_mesh,
                ..Default::default()
            };
            let testbed = Testbed::start_with(options).await?;
            match (
                testbed.prometheus_url(),
                testbed.proxy_url(),
                testbed.loadtester_url(),
            ) {
                (Some(prometheus), Some(proxy), Some(loadtester)) => println!(
                    "ready kubeconfig={} prometheus={prometheus} proxy={proxy} loadtester={loadtester}",
                    testbed.kubeconfig().display()
                ),
                _ => println!("ready kubeconfig={}", testbed.kubeconfig().display()),
            }
            serin_runtime::shutdown::signal().await;
            testbed.stop().await;
        }
    }
    Ok(())
}
