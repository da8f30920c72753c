//! `serin-sync run`: connects to the cluster, checks that its CRDs are installed, starts the
//! admin server (and leader election when asked), and runs the reconcilers. Does I/O.

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::Args;
use prometheus_client::registry::Registry;
use serin_runtime::{
    admin::{self, AdminState},
    args::{RuntimeArgs, TelemetryArgs},
    shutdown::Shutdown,
    startup::{self, ConnectError, RequiredCrd},
};

use super::parse_duration;
use crate::{api, controller};

/// The Lease replicas of serin-sync elect a leader on.
pub const LEASE_NAME: &str = "serin-sync-leader-election";

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "SERIN_SYNC_NAMESPACE")]
    pub namespace: Option<String>,
    /// Directory where fetched revisions are stored.
    #[arg(long, env = "STORAGE_PATH", default_value = "/tmp/serin-sync")]
    pub storage_path: PathBuf,
    /// Retry interval when a dependency or source artifact is not ready.
    #[arg(long, env = "REQUEUE_DEPENDENCY", default_value = "30s", value_parser = parse_duration)]
    pub requeue_dependency: Duration,
    /// How many objects of each kind reconcile at once.
    #[arg(long, env = "CONCURRENT", default_value_t = 4)]
    pub concurrent: u16,
    /// Poll interval of health checks.
    #[arg(long, env = "HEALTH_CHECK_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub health_check_interval: Duration,
    /// The `helm` program HelmReleases are released with.
    #[arg(long, env = "HELM_PROGRAM", default_value = "helm")]
    pub helm_program: PathBuf,
    /// Where the Receivers' webhooks are served (`off`: not served).
    #[arg(long, env = "RECEIVER_ADDR", default_value = "0.0.0.0:9292", value_parser = parse_receiver_addr)]
    pub receiver_addr: ReceiverAddr,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// Why `serin-sync run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("cannot create the storage directory {path}: {source}")]
    Storage { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[error("lost the leader election lease {LEASE_NAME}; another replica leads now")]
    LostLeadership,
}

/// The CRDs of every kind serin-sync reconciles.
fn required_crds() -> Vec<RequiredCrd> {
    api::crds()
        .into_iter()
        .map(|crd| RequiredCrd {
            name: crd.metadata.name.unwrap_or_default(),
            remedy: "install it with `serin-sync install` or `serin-sync crd | kubectl apply -f -`",
        })
        .collect()
}

/// Connects, checks the CRDs, then serves until SIGTERM/SIGINT.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let (client, kube_config) = startup::connect(&required_crds()).await?;
    tracing::info!(
        "connected; the GitRepository, Kustomization, HelmRepository, HelmChart and HelmRelease CRDs are installed"
    );
    std::fs::create_dir_all(&args.storage_path).map_err(|source| RunError::Storage {
        path: args.storage_path.clone(),
        source,
    })?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signal();
    let mut registry = Registry::default();
    let metrics = controller::metrics::Metrics::register(&mut registry);
    let state = AdminState::new(registry);
    let listener = admin::bind(args.runtime.admin_addr).await?;
    tracing::info!(addr = %listener.local_addr().map_or_else(|_| args.runtime.admin_addr.to_string(), |a| a.to_string()), "admin server listening");
    let admin_task = tokio::spawn(admin::serve(listener, state.clone(), shutdown.clone()));

    let Some(leadership) = startup::lead(&client, &args.runtime, LEASE_NAME, "serin-sync", &shutdown).await
    else {
        return Ok(());
    };

    // `helm` talks to the cluster as serin-sync does.
    let helm_kubeconfig = args.storage_path.join("helm-kubeconfig.yaml");
    let written = crate::helm::kubeconfig_of(&kube_config)
        .map_err(std::io::Error::other)
        .and_then(|text| std::fs::write(&helm_kubeconfig, text));
    if let Err(source) = written {
        return Err(RunError::Storage {
            path: helm_kubeconfig,
            source,
        });
    }
    let ctx = Arc::new(controller::Context {
        client,
        kube_config: Some(kube_config),
        config: controller::Config {
            storage_dir: args.storage_path.clone(),
            requeue_dependency: args.requeue_dependency,
            health_interval: args.health_check_interval,
            namespace: args.namespace.clone(),
            concurrency: args.concurrent,
            test_hooks: serin_runtime::hooks::enabled_by_env(),
            helm: crate::helm::Helm {
                program: args.helm_program.clone(),
                kubeconfig: Some(helm_kubeconfig),
            },
            receiver_addr: args.receiver_addr.0,
            // serin-sync itself is Helm's post-renderer.
            post_renderer: std::env::current_exe().ok(),
            ..Default::default()
        },
        metrics,
        backoffs: Default::default(),
    });
    tracing::info!(namespace = args.namespace.as_deref().unwrap_or("(all)"), storage = %args.storage_path.display(), "starting the GitRepository and Kustomization controllers");
    let ready_state = state.clone();
    let stop = shutdown.clone();
    controller::run(ctx, move || ready_state.set_ready(true), async move {
        stop.wait().await
    })
    .await;
    shutdown.trigger();
    state.set_ready(false);
    let _ = admin_task.await;
    if leadership.lost() {
        return Err(RunError::LostLeadership);
    }
    Ok(())
}

/// `--receiver-addr`: an address, or none (`off`).
#[derive(Clone, Copy, Debug)]
pub struct ReceiverAddr(pub Option<std::net::SocketAddr>);

fn parse_receiver_addr(s: &str) -> Result<ReceiverAddr, String> {
    if s == "off" {
        return Ok(ReceiverAddr(None));
    }
    s.parse()
        .map(|a| ReceiverAddr(Some(a)))
        .map_err(|e| format!("--receiver-addr {s:?}: {e} (an address such as 0.0.0.0:9292, or off)"))
}
