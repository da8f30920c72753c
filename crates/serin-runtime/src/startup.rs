//! Start-up shared by serin's controllers: the process (rustls crypto provider, async runtime,
//! telemetry, exit code), the cluster connection with its check for the CRDs a controller needs,
//! and leader election. Does I/O.

use std::{
    future::Future,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client, Config};

use crate::{
    args::{RuntimeArgs, TelemetryArgs},
    leader::{LeaderElector, LeaseTiming},
    shutdown::Shutdown,
};

/// How long start-up waits for each answer of the API server before giving up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a controller process: installs the rustls crypto provider, starts a multi-threaded
/// runtime, initialises telemetry for `service` and awaits `run`. An error is printed to stderr
/// and exits 1.
pub fn run_controller<F, E>(service: &'static str, telemetry: &TelemetryArgs, run: F) -> ExitCode
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    crate::tls::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let _telemetry = match crate::telemetry::init(service, telemetry) {
            Ok(guard) => guard,
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::FAILURE;
            }
        };
        match run.await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        }
    })
}

/// A CRD a controller cannot run without, and how to install it (said when it is missing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequiredCrd {
    /// `<plural>.<group>`.
    pub name: String,
    /// The advice that follows "CRD … is not installed in the cluster at …;".
    pub remedy: &'static str,
}

/// Why a controller could not connect at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot load the Kubernetes client configuration (kubeconfig or in-cluster): {0}")]
    Config(#[source] kube::config::InferConfigError),
    #[error("cannot create the Kubernetes client for {server}: {source}")]
    Client { server: String, source: kube::Error },
    #[error("cannot reach the Kubernetes API server at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("CRD {name} is not installed in the cluster at {server}; {remedy}")]
    MissingCrd {
        name: String,
        server: String,
        remedy: &'static str,
    },
}

/// Builds the client from the kubeconfig or the in-cluster configuration, proves that the API
/// server answers, and checks that every `required` CRD is installed, in order.
pub async fn connect(required: &[RequiredCrd]) -> Result<(Client, Config), ConnectError> {
    let mut config = Config::infer().await.map_err(ConnectError::Config)?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config.clone()).map_err(|source| ConnectError::Client {
        server: server.clone(),
        source,
    })?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in required {
        let found = tokio::time::timeout(CONNECT_TIMEOUT, crds.get_opt(&crd.name))
            .await
            .map_err(|_| ConnectError::Unreachable {
                server: server.clone(),
                reason: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
            })?
            .map_err(|err| ConnectError::Unreachable {
                server: server.clone(),
                reason: match err {
                    kube::Error::Api(status) => format!(
                        "reading CRD {} failed: {} ({})",
                        crd.name, status.message, status.code
                    ),
                    other => error_chain(&other),
                },
            })?;
        if found.is_none() {
            return Err(ConnectError::MissingCrd {
                name: crd.name.clone(),
                server,
                remedy: crd.remedy,
            });
        }
    }
    Ok((client, config))
}

/// An error with its causes, `outer: inner: innermost`, skipping causes that repeat their parent.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Whether this replica lost the leader election after it had won it.
#[derive(Clone, Debug, Default)]
pub struct Leadership {
    lost: Arc<AtomicBool>,
}

impl Leadership {
    /// True once the Lease went to another holder (or could not be renewed in time).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

/// With `--leader-elect`, campaigns for the Lease `lease` and waits until this replica holds it;
/// the identity is `POD_NAME`, else `HOSTNAME`, else `<process>-<pid>`, followed by `_` and a
/// random suffix (as client-go's callers do: two replicas sharing a host name must not take each
/// other for the holder), and the Lease lives in
/// `--leader-election-namespace`, else `POD_NAMESPACE`, else `default`. Without the flag it
/// returns at once. `None` means shutdown came first.
///
/// A replica that loses the Lease after winning it triggers `shutdown`, so that its controllers
/// stop before the next leader starts writing, and `Leadership::lost` tells the caller to exit
/// with an error (a restarted pod campaigns again), as Kubernetes' own controllers do.
pub async fn lead(
    client: &Client,
    args: &RuntimeArgs,
    lease: &str,
    process: &str,
    shutdown: &Shutdown,
) -> Option<Leadership> {
    let leadership = Leadership::default();
    if !args.leader_elect {
        return Some(leadership);
    }
    let namespace = args
        .leader_election_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".to_owned());
    let identity = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("{process}-{}", std::process::id()));
    let identity = format!("{identity}_{:08x}", rand::random::<u32>());
    let elector = LeaderElector::new(
        client.clone(),
        &namespace,
        lease,
        &identity,
        LeaseTiming::default(),
    );
    let (mut leading, _) = elector.spawn(shutdown.clone());
    tracing::info!(%namespace, %identity, lease, "waiting to become leader");
    tokio::select! {
        won = leading.wait_for(|l| *l) => {
            if won.is_err() {
                return None;
            }
        }
        () = shutdown.wait() => return None,
    }
    let lost = Arc::clone(&leadership.lost);
    let stop = shutdown.clone();
    let lease = lease.to_owned();
    tokio::spawn(async move {
        tokio::select! {
            _ = leading.wait_for(|l| !*l) => {
                if !stop.is_triggered() {
                    tracing::error!(%namespace, %lease, %identity, "lost the leader election lease; stopping");
                    lost.store(true, Ordering::SeqCst);
                    stop.trigger();
                }
            }
            () = stop.wait() => {}
        }
    });
    Some(leadership)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped: inner")]
    struct Repeating(#[source] Inner);

    #[test]
    fn error_chain_names_each_cause_once() {
        assert_eq!(error_chain(&Outer(Inner)), "outer: inner");
        assert_eq!(error_chain(&Repeating(Inner)), "wrapped: inner");
    }

    #[test]
    fn a_missing_crd_says_how_to_install_it() {
        let err = ConnectError::MissingCrd {
            name: "canaries.flagger.app".to_owned(),
            server: "https://k8s:6443/".to_owned(),
            remedy: "install it first",
        };
        assert_eq!(
            err.to_string(),
            "CRD canaries.flagger.app is not installed in the cluster at https://k8s:6443/; install it first"
        );
    }
}
