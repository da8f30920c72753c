//! `serin-testbed up`: runs the test bed in the foreground, on the API emulator or a real
//! control plane. `serin-testbed build-cluster`: builds the real control plane's components once.
//! `serin-testbed rbac-audit`: compares the authorization decisions that test runs recorded for
//! an identity with the rules it was granted.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serin_testbed::{ClusterKind, Testbed, TestbedOptions, cluster};

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
        /// The API server alone: no data plane, network proxy, loadtester or Prometheus.
        #[arg(long)]
        no_mesh: bool,
        /// `emulator` (in process, the default) or `real` (etcd, kube-apiserver,
        /// kube-controller-manager, kube-scheduler and kwok, built by `build-cluster`).
        #[arg(long, env = "SERIN_TESTBED_CLUSTER", default_value = "emulator")]
        cluster: ClusterKind,
    },
    /// Builds the real cluster's components (Kubernetes, etcd, kwok, Helm) from the Go module
    /// proxy into a cache directory keyed by version; components already built are kept.
    BuildCluster {
        /// Print the directories of the built binaries, `:`-separated, for PATH.
        #[arg(long)]
        print_path: bool,
    },
    /// Prints how many tests ran on a real control plane, by API server version, from the
    /// files test beds wrote to DIR (`SERIN_TESTBED_REPORT_DIR`); fails when none did.
    ClusterReport {
        #[arg(long)]
        dir: PathBuf,
        /// List each test.
        #[arg(long)]
        verbose: bool,
    },
    /// Reads the audit logs that test beds wrote to DIR (`SERIN_TESTBED_AUDIT_DIR`) and fails
    /// when USER was denied a request or when a rule grants something USER never requested.
    RbacAudit {
        /// The directory of audit logs.
        #[arg(long)]
        dir: PathBuf,
        /// The identity, such as `system:serviceaccount:istio-system:serin`.
        #[arg(long)]
        user: String,
        /// YAML files, each a list of PolicyRules (repeatable).
        #[arg(long = "rules", required = true)]
        rules: Vec<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // kube's client logs every failed request as an error; while a real API server starts,
        // its readiness probe fails by design.
        .with_env_filter(serin_runtime::telemetry::env_filter(
            "warn,kube_client::client::builder=off",
        )?)
        .init();
    match Cli::parse().command {
        Command::Up {
            port,
            kubeconfig,
            no_mesh,
            cluster,
        } => {
            let options = TestbedOptions {
                cluster: Some(cluster),
                port,
                kubeconfig,
                mesh: !no_mesh,
                prometheus: !no_mesh,
                ..Default::default()
            };
            let started = std::time::Instant::now();
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
            eprintln!(
                "serin-testbed: {} ready in {:.1}s",
                testbed.server_version(),
                started.elapsed().as_secs_f64()
            );
            serin_runtime::shutdown::signal().await;
            testbed.stop().await;
        }
        Command::BuildCluster { print_path } => {
            tokio::task::spawn_blocking(cluster::build::ensure_all).await??;
            if print_path {
                let dirs: Vec<String> = cluster::components::ALL
                    .iter()
                    .map(|c| cluster::build::bin_dir(c).display().to_string())
                    .collect();
                println!("{}", dirs.join(":"));
            }
        }
        Command::ClusterReport { dir, verbose } => {
            use anyhow::Context;
            let summary = cluster::report::summarize(&dir)
                .with_context(|| format!("reading the run reports in {}", dir.display()))?;
            if summary.is_empty() {
                anyhow::bail!(
                    "no test started a real control plane (reports in {})",
                    dir.display()
                );
            }
            for (version, tests) in &summary {
                println!("{} end-to-end test(s) ran on {version}", tests.len());
                if verbose {
                    for t in tests {
                        println!("  {t}");
                    }
                }
            }
        }
        Command::RbacAudit { dir, user, rules } => rbac_audit(&dir, &user, &rules)?,
    }
    Ok(())
}

fn rbac_audit(dir: &std::path::Path, user: &str, files: &[PathBuf]) -> anyhow::Result<()> {
    use anyhow::Context;
    use serin_testbed::apiserver::rbac;
    let records =
        rbac::read_audit(dir).with_context(|| format!("reading the audit logs in {}", dir.display()))?;
    let mut failed = false;
    let mut decisions = 0;
    for file in files {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let rules: Vec<rbac::Rule> = serde_yaml::from_str(&text)
            .with_context(|| format!("{} is not a list of rules", file.display()))?;
        let usage = rbac::usage(&rules, &records, user);
        decisions = usage.decisions;
        for idle in &usage.idle {
            println!("idle: {}: {idle}", file.display());
            failed = true;
        }
        if usage.idle.is_empty() {
            println!("ok: {}: every rule was used", file.display());
        }
    }
    let denied = rbac::usage(&[], &records, user).denied;
    for d in &denied {
        println!("denied: {user}: {d}");
        failed = true;
    }
    if decisions == 0 {
        anyhow::bail!(
            "no authorization decisions for {user} in {}: did the tests run with {}={}?",
            dir.display(),
            rbac::AUDIT_DIR_ENV,
            dir.display()
        );
    }
    println!("{decisions} decision(s) for {user}, {} denied", denied.len());
    if failed {
        anyhow::bail!(
            "the RBAC rules and what {user} requests differ: remove the idle grants, or grant what was denied"
        );
    }
    Ok(())
}
