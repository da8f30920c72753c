//! `kubectl serin` (the `kubectl-serin` binary, a kubectl plugin): `get` lists Canaries with
//! their phase, weight, step, failed checks, next step and last check values (`--watch` follows
//! them); `explain` says what a Canary is waiting for and why; `promote`, `abort`, `retry`,
//! `pause` and `resume` ask serin to act through a `CanaryAction` ([`ask`]), never by writing
//! the Canary. Does I/O (Kubernetes API); what it prints is [`view`]'s.

pub mod ask;
pub mod view;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Event;
use kube::{
    Api, Client, Config,
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::watcher,
};

use std::collections::HashMap;

use crate::{
    api::{Canary, CanaryAction},
    engine::Request,
};

/// kubectl serin: see, explain and operate serin's Canaries.
#[derive(Parser, Debug)]
#[command(name = "kubectl-serin", bin_name = "kubectl serin", version, long_about = None)]
pub struct Plugin {
    /// The namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// List Canaries: phase, weight, step, failed checks, next step and the last checks.
    Get(GetArgs),
    /// Say what a Canary is waiting for and why: its state, gates, checks, comparisons with the
    /// primary, what happens next and its recent events.
    Explain(ExplainArgs),
    /// Promote now: skip the remaining steps once the analysis passes (`--full`: without it).
    Promote(PromoteArgs),
    /// Roll back now.
    Abort(ask::AskArgs),
    /// Run the failed revision again, without a new commit.
    Retry(ask::AskArgs),
    /// Hold the rollout where it is: no step, no analysis, until `resume`.
    Pause(ask::AskArgs),
    /// Go on after a pause.
    Resume(ask::AskArgs),
}

#[derive(clap::Args, Debug)]
pub struct PromoteArgs {
    /// Skip the analysis too: promote without checking the metrics.
    #[arg(long)]
    pub full: bool,
    #[command(flatten)]
    pub ask: ask::AskArgs,
}

/// `--output` formats for scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Json,
    Yaml,
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// `canaries` (optional), then Canary names (default: all).
    pub names: Vec<String>,
    /// Canaries of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// After the list, print a row each time a Canary changes.
    #[arg(short = 'w', long)]
    pub watch: bool,
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
}

#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// `canary/NAME` or `NAME`.
    pub canary: String,
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
}

/// The names a `get` asks for: `canaries`, `canary` or `canaries.flagger.app` first is the kind.
fn names(args: &[String]) -> Vec<String> {
    let kinds = ["canary", "canaries", "canary.flagger.app", "canaries.flagger.app"];
    let mut out: Vec<String> = args.to_vec();
    if out.first().is_some_and(|k| kinds.contains(&k.as_str())) {
        out.remove(0);
    }
    out.into_iter()
        .map(|n| n.rsplit('/').next().unwrap_or_default().to_owned())
        .collect()
}

async fn client(plugin: &Plugin) -> Result<(Client, String), String> {
    let options = KubeConfigOptions {
        context: plugin.context.clone(),
        ..Default::default()
    };
    let config = match &plugin.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| e.to_string())
        }
        None if plugin.context.is_some() => {
            Config::from_kubeconfig(&options).await.map_err(|e| e.to_string())
        }
        None => Config::infer().await.map_err(|e| e.to_string()),
    }
    .map_err(|e| format!("no cluster configuration: {e}"))?;
    let namespace = plugin
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| format!("cannot build a client: {e}"))?;
    Ok((client, namespace))
}

fn print<T: serde::Serialize>(value: &T, output: Output) -> Result<(), String> {
    let text = match output {
        Output::Json => serde_json::to_string_pretty(value).map_err(|e| e.to_string())? + "\n",
        Output::Yaml => serde_yaml::to_string(value).map_err(|e| e.to_string())?,
    };
    print!("{text}");
    Ok(())
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Runs a command; `Err` is what to print before exiting with 1.
pub async fn run(plugin: Plugin) -> Result<(), String> {
    let (client, namespace) = client(&plugin).await?;
    match &plugin.command {
        PluginCommand::Get(args) => get(client, &namespace, args).await,
        PluginCommand::Explain(args) => explain(client, &namespace, args).await,
        PluginCommand::Promote(args) => ask::ask(client, &namespace, "promote", args.full, &args.ask).await,
        PluginCommand::Abort(args) => ask::ask(client, &namespace, "abort", false, args).await,
        PluginCommand::Retry(args) => ask::ask(client, &namespace, "retry", false, args).await,
        PluginCommand::Pause(args) => ask::ask(client, &namespace, "pause", false, args).await,
        PluginCommand::Resume(args) => ask::ask(client, &namespace, "resume", false, args).await,
    }
}

/// The requests (`CanaryAction`s) of the namespace (or of all), as serin reads them; none when
/// they cannot be listed (no access, or serin's CRDs older than the plugin).
async fn requests(client: Client, namespace: &str, all: bool) -> Vec<CanaryAction> {
    let api: Api<CanaryAction> = if all {
        Api::all(client)
    } else {
        Api::namespaced(client, namespace)
    };
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// The requests made on one Canary.
fn of(asked: &[CanaryAction], canary: &Canary) -> Vec<Request> {
    asked
        .iter()
        .filter(|a| {
            a.metadata.namespace == canary.metadata.namespace
                && Some(&a.spec.canary) == canary.metadata.name.as_ref()
        })
        .map(Request::of)
        .collect()
}

type Key = (Option<String>, Option<String>);

async fn get(client: Client, namespace: &str, args: &GetArgs) -> Result<(), String> {
    let api: Api<Canary> = if args.all_namespaces {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), namespace)
    };
    let wanted = names(&args.names);
    let keep = |c: &Canary| wanted.is_empty() || wanted.iter().any(|n| Some(n) == c.metadata.name.as_ref());
    let mut canaries: Vec<Canary> = api
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing Canaries: {e}"))?
        .items
        .into_iter()
        .filter(|c| keep(c))
        .collect();
    canaries.sort_by_key(|c| (c.metadata.namespace.clone(), c.metadata.name.clone()));
    let now = now();
    let asked = requests(client.clone(), namespace, args.all_namespaces).await;
    let rows: Vec<view::Row> = canaries
        .iter()
        .map(|c| view::row(c, &of(&asked, c), now))
        .collect();
    for name in &wanted {
        if !rows.iter().any(|r| &r.name == name) {
            return Err(format!(
                "canary {name:?} not found{}",
                if args.all_namespaces {
                    String::new()
                } else {
                    format!(" in namespace {namespace:?}")
                }
            ));
        }
    }
    match args.output {
        Some(output) => print(&rows, output)?,
        None if rows.is_empty() && !args.watch => {
            eprintln!(
                "No Canaries found{}.",
                if args.all_namespaces {
                    String::new()
                } else {
                    format!(" in {namespace} namespace")
                }
            );
        }
        None => print!("{}", view::table(&rows, args.all_namespaces, true)),
    }
    if !args.watch {
        return Ok(());
    }
    // kubectl's convention: the list, then one row (or object) per change: of a Canary, or of
    // the requests made on it (a pause writes no Canary). A restarted watch lists again: only
    // what changed since it was printed is printed.
    let key = |m: &kube::api::ObjectMeta| (m.namespace.clone(), m.name.clone());
    let mut shown: HashMap<Key, (Canary, Option<view::Row>)> = canaries
        .iter()
        .zip(rows)
        .map(|(c, r)| (key(&c.metadata), (c.clone(), Some(r))))
        .collect();
    let mut asked: HashMap<Key, CanaryAction> = asked.into_iter().map(|a| (key(&a.metadata), a)).collect();
    let actions: Api<CanaryAction> = if args.all_namespaces {
        Api::all(client)
    } else {
        Api::namespaced(client, namespace)
    };
    enum Change {
        Canary(Box<watcher::Event<Canary>>),
        Action(Box<watcher::Event<CanaryAction>>),
    }
    let canary_changes = watcher(api, watcher::Config::default())
        .map_ok(|e| Change::Canary(Box::new(e)))
        .boxed();
    // Requests are optional: without access to them, the Canaries are followed alone.
    let action_changes = watcher(actions, watcher::Config::default())
        .map_ok(|e| Change::Action(Box::new(e)))
        .take_while(|r| futures::future::ready(r.is_ok()))
        .boxed();
    let mut changes = futures::stream::select(canary_changes, action_changes);
    while let Some(change) = changes
        .try_next()
        .await
        .map_err(|e| format!("watching Canaries: {e}"))?
    {
        // A Canary that changed prints a row (a watch restarted lists again: one already printed
        // at that version is not printed twice); a request prints one when it pauses or resumes.
        let touched: Option<(Key, bool)> = match change {
            Change::Canary(event) => match *event {
                watcher::Event::Apply(c) | watcher::Event::InitApply(c) if keep(&c) => {
                    let k = key(&c.metadata);
                    let version = c.metadata.resource_version.clone();
                    let seen = shown
                        .get(&k)
                        .is_some_and(|(old, row)| row.is_some() && old.metadata.resource_version == version);
                    match shown.get_mut(&k) {
                        Some(entry) => entry.0 = c,
                        None => {
                            shown.insert(k.clone(), (c, None));
                        }
                    }
                    (!seen).then_some((k, true))
                }
                watcher::Event::Delete(c) => {
                    shown.remove(&key(&c.metadata));
                    None
                }
                _ => None,
            },
            Change::Action(event) => match *event {
                watcher::Event::Apply(a) | watcher::Event::InitApply(a) => {
                    let k = (a.metadata.namespace.clone(), Some(a.spec.canary.clone()));
                    asked.insert(key(&a.metadata), a);
                    Some((k, false))
                }
                watcher::Event::Delete(a) => {
                    asked.remove(&key(&a.metadata));
                    None
                }
                _ => None,
            },
        };
        let Some((k, canary_changed)) = touched else {
            continue;
        };
        let Some((canary, printed)) = shown.get_mut(&k) else {
            continue;
        };
        let mine: Vec<CanaryAction> = asked.values().cloned().collect();
        let row = view::row(canary, &of(&mine, canary), now_at());
        let pause_changed = printed.as_ref().map(|p| &p.paused_by) != Some(&row.paused_by);
        if !canary_changed && !pause_changed {
            continue;
        }
        *printed = Some(row.clone());
        match args.output {
            Some(output) => print(&row, output)?,
            None => print!(
                "{}",
                view::table(std::slice::from_ref(&row), args.all_namespaces, false)
            ),
        }
    }
    Ok(())
}

fn now_at() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The Canary's events, oldest first (at most the last `limit`).
async fn events(
    client: Client,
    namespace: &str,
    name: &str,
    limit: usize,
) -> Result<Vec<view::Happened>, String> {
    let api: Api<Event> = Api::namespaced(client, namespace);
    let selector = format!("involvedObject.kind=Canary,involvedObject.name={name}");
    let list = api
        .list(&ListParams::default().fields(&selector))
        .await
        .map_err(|e| format!("listing the events of {name}: {e}"))?;
    let mut out: Vec<view::Happened> = list
        .items
        .into_iter()
        .map(|e| view::Happened {
            at: e
                .last_timestamp
                .map(|t| t.0.as_second())
                .or_else(|| e.event_time.map(|t| t.0.as_second()))
                .or_else(|| e.first_timestamp.map(|t| t.0.as_second()))
                .unwrap_or_default(),
            warning: e.type_.as_deref() == Some("Warning"),
            message: e.message.unwrap_or_default(),
            count: e.count.unwrap_or(1),
        })
        .collect();
    out.sort_by_key(|e| e.at);
    let skip = out.len().saturating_sub(limit);
    Ok(out.split_off(skip))
}

async fn explain(client: Client, namespace: &str, args: &ExplainArgs) -> Result<(), String> {
    let name = args
        .canary
        .strip_prefix("canary/")
        .or_else(|| args.canary.strip_prefix("canaries/"))
        .unwrap_or(&args.canary);
    let api: Api<Canary> = Api::namespaced(client.clone(), namespace);
    let canary = api
        .get_opt(name)
        .await
        .map_err(|e| format!("reading canary {name}: {e}"))?
        .ok_or_else(|| format!("canary {name:?} not found in namespace {namespace:?}"))?;
    let happened = events(client.clone(), namespace, name, 10).await?;
    let asked = requests(client, namespace, false).await;
    let explanation = view::explain(&canary, &of(&asked, &canary), &happened, now());
    match args.output {
        Some(output) => print(&explanation, output),
        None => {
            print!("{}", view::explanation_text(&explanation));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_is_optional_and_names_may_carry_it() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(names(&args(&[])), Vec::<String>::new());
        assert_eq!(names(&args(&["canaries"])), Vec::<String>::new());
        assert_eq!(names(&args(&["canary", "podinfo"])), ["podinfo"]);
        assert_eq!(names(&args(&["canary/podinfo", "web"])), ["podinfo", "web"]);
    }
}
