//! `serin run`: connects to the cluster, checks that serin's CRDs are installed, starts the admin
//! server (and leader election when asked), and runs the canary controller.

use clap::Args;
use prometheus_client::registry::Registry;
use serin_runtime::{
    admin::{self, AdminState},
    args::{RuntimeArgs, TelemetryArgs},
    shutdown::Shutdown,
    startup::{self, ConnectError, RequiredCrd},
};

use crate::{api, controller};

/// Istio's CRDs the istio provider writes.
pub const ISTIO_CRDS: [&str; 2] = [
    "virtualservices.networking.istio.io",
    "destinationrules.networking.istio.io",
];
/// The Lease that replicas of serin elect a leader on.
pub const LEASE_NAME: &str = "serin-leader-election";

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "SERIN_NAMESPACE")]
    pub namespace: Option<String>,
    /// Service mesh provider for Canaries that set no `spec.provider`.
    #[arg(long, env = "MESH_PROVIDER", default_value = "istio")]
    pub mesh_provider: String,
    /// Prometheus URL for builtin metrics and inline queries.
    #[arg(long, env = "METRICS_SERVER", default_value = "http://prometheus:9090")]
    pub metrics_server: String,
    /// The windows a comparison with the primary (`metrics[].compare`) counts requests in: at
    /// least twice Prometheus's scrape interval (a Go duration).
    #[arg(long, env = "COMPARISON_WINDOW", default_value = "30s", value_parser = comparison_window)]
    pub comparison_window: std::time::Duration,
    /// Pod selector label keys, the first one present is used (comma-separated).
    #[arg(
        long,
        env = "SELECTOR_LABELS",
        default_value = "app,name,app.kubernetes.io/name",
        value_delimiter = ','
    )]
    pub selector_labels: Vec<String>,
    /// Label and annotation prefixes copied to the primary (comma-separated; `*` copies all).
    #[arg(long, env = "INCLUDE_LABEL_PREFIX", default_value = "", value_delimiter = ',')]
    pub include_label_prefix: Vec<String>,
    /// Track ConfigMaps and Secrets the target uses and copy them for the primary.
    #[arg(long, env = "ENABLE_CONFIG_TRACKING", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_config_tracking: bool,
    /// Webhook that receives every event of Canaries that have no `event` webhooks of their own.
    #[arg(long, env = "EVENT_WEBHOOK_URL")]
    pub event_webhook: Option<String>,
    /// Slack incoming webhook for alerts of Canaries that list no alerts of their own.
    #[arg(long, env = "SLACK_URL")]
    pub slack_url: Option<String>,
    /// HTTP proxy for the Slack webhook.
    #[arg(long, env = "SLACK_PROXY_URL")]
    pub slack_proxy_url: Option<String>,
    /// Token sent to the Slack URL as `Authorization: Bearer` (for Slack's API instead of an
    /// incoming webhook).
    #[arg(long, env = "SLACK_TOKEN", hide_env_values = true)]
    pub slack_token: Option<String>,
    /// Slack user name shown with alerts.
    #[arg(long, env = "SLACK_USER", default_value = "flagger")]
    pub slack_user: String,
    /// Slack channel for alerts.
    #[arg(long, env = "SLACK_CHANNEL", default_value = "general")]
    pub slack_channel: String,
    /// Microsoft Teams incoming webhook for alerts (wins over `--slack-url`).
    #[arg(long, env = "MSTEAMS_URL")]
    pub msteams_url: Option<String>,
    /// HTTP proxy for the Teams webhook.
    #[arg(long, env = "MSTEAMS_PROXY_URL")]
    pub msteams_proxy_url: Option<String>,
    /// Cluster name added to alert fields.
    #[arg(long, env = "CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// How many Canaries reconcile at once (0: no limit). One Canary never reconciles twice at
    /// once; a reconcile waiting on a slow webhook or Prometheus holds its slot until the
    /// request's timeout.
    #[arg(long, env = "SERIN_MAX_CONCURRENT_RECONCILES", default_value_t = controller::DEFAULT_CONCURRENCY)]
    pub max_concurrent_reconciles: u16,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// Why `serin run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[error("lost the leader election lease {LEASE_NAME}; another replica leads now")]
    LostLeadership,
}

/// The CRDs `serin run` needs: serin's own, then Istio's networking CRDs.
fn required_crds() -> Vec<RequiredCrd> {
    let ours = api::crds().into_iter().map(|crd| RequiredCrd {
        name: crd.metadata.name.unwrap_or_default(),
        remedy: "install serin's CRDs with `kubectl apply -f crds/` (or `serin crd | kubectl apply -f -`)",
    });
    let istio = ISTIO_CRDS.iter().map(|name| RequiredCrd {
        name: (*name).to_owned(),
        remedy: "the istio mesh provider needs Istio's networking CRDs (install Istio first)",
    });
    ours.chain(istio).collect()
}

/// Connects, checks the CRDs, then serves until SIGTERM/SIGINT.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let (client, _) = startup::connect(&required_crds()).await?;
    tracing::info!("connected; serin's and Istio's CRDs are installed");
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signal();

    let mut registry = Registry::default();
    let metrics = controller::metrics::Metrics::register(&mut registry);
    metrics
        .info
        .get_or_create(&controller::metrics::InfoLabels {
            version: env!("CARGO_PKG_VERSION").into(),
            mesh_provider: args.mesh_provider.clone(),
        })
        .set(1);
    let state = AdminState::new(registry);
    let listener = admin::bind(args.runtime.admin_addr).await?;
    tracing::info!(addr = %listener.local_addr().map_or_else(|_| args.runtime.admin_addr.to_string(), |a| a.to_string()), "admin server listening");
    let admin_task = tokio::spawn(admin::serve(listener, state.clone(), shutdown.clone()));

    let Some(leadership) = startup::lead(&client, &args.runtime, LEASE_NAME, "serin", &shutdown).await else {
        return Ok(());
    };

    let config = controller::Config {
        mesh_provider: args.mesh_provider.clone(),
        metrics_server: args.metrics_server.clone(),
        comparison_window: args.comparison_window,
        selector_labels: args
            .selector_labels
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect(),
        include_label_prefixes: args.include_label_prefix.clone(),
        config_tracking: args.enable_config_tracking,
        namespace: args.namespace.clone(),
        event_webhook: args.event_webhook.clone().filter(|u| !u.is_empty()),
        notifier: notifier(&args),
        cluster_name: args.cluster_name.clone().filter(|c| !c.is_empty()),
        concurrency: args.max_concurrent_reconciles,
    };
    tracing::info!(namespace = args.namespace.as_deref().unwrap_or("(all)"), mesh_provider = %args.mesh_provider, metrics_server = %args.metrics_server, "starting the canary controller");
    let ready_state = state.clone();
    let stop = shutdown.clone();
    controller::run(
        client,
        config,
        metrics,
        move || ready_state.set_ready(true),
        async move { stop.wait().await },
    )
    .await;
    shutdown.trigger();
    state.set_ready(false);
    let _ = admin_task.await;
    if leadership.lost() {
        return Err(RunError::LostLeadership);
    }
    Ok(())
}

/// The global notifier from the flags: Teams wins when both URLs are set, as in Flagger.
/// `--comparison-window`: a Go duration of at least one second.
fn comparison_window(text: &str) -> Result<std::time::Duration, String> {
    let window = crate::api::canary::parse_duration(text).map_err(|e| e.to_string())?;
    if window < std::time::Duration::from_secs(1) {
        return Err(format!("{text} is shorter than 1s"));
    }
    Ok(window)
}

fn notifier(args: &RunArgs) -> Option<controller::alerts::Notifier> {
    let set = |u: &Option<String>| u.clone().filter(|u| !u.is_empty());
    let (kind, url, proxy, token) = match (set(&args.msteams_url), set(&args.slack_url)) {
        (Some(url), _) => ("msteams", url, set(&args.msteams_proxy_url), None),
        (None, Some(url)) => ("slack", url, set(&args.slack_proxy_url), set(&args.slack_token)),
        (None, None) => return None,
    };
    Some(controller::alerts::Notifier {
        kind: kind.into(),
        url,
        channel: args.slack_channel.clone(),
        username: args.slack_user.clone(),
        proxy,
        token,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> RunArgs {
        Cli::try_parse_from(std::iter::once("serin").chain(args.iter().copied()))
            .expect("flags parse")
            .run
    }

    #[test]
    fn the_global_notifier_follows_flaggers_flags() {
        assert_eq!(notifier(&parse(&[])), None);
        let slack = notifier(&parse(&[
            "--slack-url",
            "https://hooks.slack.com/services/x",
            "--slack-channel",
            "deploys",
        ]))
        .expect("slack");
        assert_eq!(
            (
                slack.kind.as_str(),
                slack.channel.as_str(),
                slack.username.as_str()
            ),
            ("slack", "deploys", "flagger")
        );
        let proxies_and_token = [
            "--slack-proxy-url",
            "http://slack-proxy:3128",
            "--msteams-proxy-url",
            "http://teams-proxy:3128",
            "--slack-token",
            "xoxb-1",
        ];
        let slack = notifier(&parse(
            &[
                &["--slack-url", "https://slack.com/api/chat.postMessage"],
                &proxies_and_token[..],
            ]
            .concat(),
        ))
        .expect("slack");
        assert_eq!(
            (slack.proxy.as_deref(), slack.token.as_deref()),
            (Some("http://slack-proxy:3128"), Some("xoxb-1")),
            "Slack takes the Slack proxy and the token"
        );
        let teams = notifier(&parse(
            &[
                &[
                    "--slack-url",
                    "https://hooks.slack.com/services/x",
                    "--msteams-url",
                    "https://example.webhook.office.com/x",
                ],
                &proxies_and_token[..],
            ]
            .concat(),
        ))
        .expect("teams");
        assert_eq!(
            (teams.kind.as_str(), teams.url.as_str()),
            ("msteams", "https://example.webhook.office.com/x"),
            "Teams wins when both are set"
        );
        assert_eq!(
            (teams.proxy.as_deref(), teams.token.as_deref()),
            (Some("http://teams-proxy:3128"), None),
            "Teams takes its own proxy and no Slack token"
        );
    }
}
