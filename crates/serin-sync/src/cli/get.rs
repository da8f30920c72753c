//! `serin-sync get kustomizations|helmreleases|sources git|helm|chart|all|alerts|alert-providers|receivers`:
//! Flux's tables (NAME REVISION SUSPENDED READY MESSAGE, NAMESPACE first with `-A`; alerts and
//! receivers without REVISION, alert providers without SUSPENDED too), hashes shortened to 8
//! characters, optionally only the objects a `--status-selector type=status` matches. Does I/O.

use clap::{Args, Subcommand};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Api, api::ListParams};

use super::ClusterArgs;
use crate::{
    api::{Alert, GitRepository, HelmChart, HelmRelease, HelmRepository, Kustomization, Provider, Receiver},
    controller::status,
    source::revision::shorten_hashes,
};

#[derive(Args, Debug)]
pub struct GetArgs {
    #[command(subcommand)]
    pub what: GetWhat,
    /// List across all namespaces.
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// Only the objects whose condition of this type has this status, e.g. `ready=false`
    /// (both compared case-insensitively).
    #[arg(long, global = true, value_name = "TYPE=STATUS")]
    pub status_selector: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Subcommand, Debug)]
pub enum GetWhat {
    /// Kustomizations (optionally one by name).
    #[command(alias = "kustomization", alias = "ks")]
    Kustomizations { name: Option<String> },
    /// HelmReleases (optionally one by name).
    #[command(alias = "helmrelease", alias = "hr")]
    Helmreleases { name: Option<String> },
    /// Sources.
    #[command(alias = "source")]
    Sources {
        #[command(subcommand)]
        kind: SourceKind,
    },
    /// Every source and Kustomization.
    All,
    /// Alerts (optionally one by name).
    #[command(alias = "alert")]
    Alerts { name: Option<String> },
    /// Alert providers (optionally one by name).
    #[command(name = "alert-providers", alias = "alert-provider")]
    AlertProviders { name: Option<String> },
    /// Receivers (optionally one by name).
    #[command(alias = "receiver")]
    Receivers { name: Option<String> },
}

#[derive(Subcommand, Debug)]
pub enum SourceKind {
    /// GitRepositories (optionally one by name).
    Git { name: Option<String> },
    /// HelmRepositories (optionally one by name).
    Helm { name: Option<String> },
    /// HelmCharts (optionally one by name).
    Chart { name: Option<String> },
}

/// `--status-selector TYPE=STATUS`: an object matches when its condition of that type has that
/// status, both compared case-insensitively (Flux's CLI semantics). Pure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusSelector {
    pub type_: String,
    pub status: String,
}

impl StatusSelector {
    /// Parses `type=status`; the error is Flux's.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (type_, status) = text
            .split_once('=')
            .ok_or_else(|| format!("expected status selector in type=status format, but found: {text}"))?;
        Ok(Self {
            type_: type_.to_owned(),
            status: status.to_owned(),
        })
    }

    /// Whether `conditions` match; an object without a condition of that type does not.
    pub fn matches(&self, conditions: &[Condition]) -> bool {
        // The last condition of the type, as Flux reads it.
        conditions
            .iter()
            .rfind(|c| c.type_.eq_ignore_ascii_case(&self.type_))
            .is_some_and(|c| c.status.eq_ignore_ascii_case(&self.status))
    }
}

/// Keeps the objects `selector` matches (all without one).
fn select<K>(
    items: Vec<K>,
    selector: Option<&StatusSelector>,
    conditions: impl Fn(&K) -> &[Condition],
) -> Vec<K> {
    items
        .into_iter()
        .filter(|item| selector.is_none_or(|s| s.matches(conditions(item))))
        .collect()
}

fn kustomization_conditions(k: &Kustomization) -> &[Condition] {
    k.status.as_ref().map_or(&[], |s| &s.conditions)
}

fn source_conditions(r: &GitRepository) -> &[Condition] {
    r.status.as_ref().map_or(&[], |s| &s.conditions)
}

fn helm_repository_conditions(r: &HelmRepository) -> &[Condition] {
    r.status.as_ref().map_or(&[], |s| &s.conditions)
}

fn helm_chart_conditions(c: &HelmChart) -> &[Condition] {
    c.status.as_ref().map_or(&[], |s| &s.conditions)
}

fn helm_release_conditions(h: &HelmRelease) -> &[Condition] {
    h.status.as_ref().map_or(&[], |s| &s.conditions)
}

/// One table row before formatting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub namespace: String,
    pub name: String,
    pub revision: String,
    pub suspended: bool,
    pub ready: String,
    pub message: String,
}

/// Renders rows as Flux's table writer does: cells padded to the column width, each followed by
/// a tab.
pub fn render(rows: &[Row], all_namespaces: bool) -> String {
    render_columns(rows, all_namespaces, true, true)
}

/// [`render`] with or without the REVISION and SUSPENDED columns; without REVISION, messages
/// keep their hashes (a Receiver's path is its message).
pub fn render_columns(rows: &[Row], all_namespaces: bool, revision: bool, suspended: bool) -> String {
    let shorten = |text: &str| {
        if revision {
            shorten_hashes(text)
        } else {
            text.to_owned()
        }
    };
    let mut table: Vec<Vec<String>> = Vec::new();
    let keep = [true, revision, suspended, true, true];
    let pick = |cells: [String; 5]| -> Vec<String> {
        cells
            .into_iter()
            .zip(keep)
            .filter_map(|(c, k)| k.then_some(c))
            .collect()
    };
    let mut header = pick(["NAME", "REVISION", "SUSPENDED", "READY", "MESSAGE"].map(String::from));
    if all_namespaces {
        header.insert(0, "NAMESPACE".into());
    }
    table.push(header);
    for r in rows {
        let mut cells = pick([
            r.name.clone(),
            shorten_hashes(&r.revision),
            if r.suspended { "True" } else { "False" }.to_owned(),
            r.ready.clone(),
            shorten(&r.message),
        ]);
        if all_namespaces {
            cells.insert(0, r.namespace.clone());
        }
        table.push(cells);
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|i| table.iter().map(|row| row[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &table {
        for (cell, width) in row.iter().zip(&widths) {
            out.push_str(cell);
            out.push_str(&" ".repeat(width - cell.chars().count()));
            out.push('\t');
        }
        out.push('\n');
    }
    out
}

fn ready_of(conditions: &[Condition]) -> (String, String) {
    match status::condition(conditions, status::READY) {
        Some(c) => (c.status.clone(), c.message.clone()),
        None => ("Unknown".into(), "waiting to be reconciled".into()),
    }
}

/// One object's row: its Ready condition, the revision given, whether it is suspended.
fn row_of(
    meta: &kube::api::ObjectMeta,
    prefix: &str,
    conditions: &[Condition],
    revision: Option<String>,
    suspend: Option<bool>,
) -> Row {
    let (ready, message) = ready_of(conditions);
    Row {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: format!("{prefix}{}", meta.name.as_deref().unwrap_or_default()),
        revision: revision.unwrap_or_default(),
        suspended: suspend == Some(true),
        ready,
        message,
    }
}

/// Rows of Kustomizations.
pub fn kustomization_rows(items: &[Kustomization], prefix: &str) -> Vec<Row> {
    items
        .iter()
        .map(|k| {
            let st = k.status.clone().unwrap_or_default();
            row_of(
                &k.metadata,
                prefix,
                &st.conditions,
                st.last_applied_revision,
                k.spec.suspend,
            )
        })
        .collect()
}

/// Rows of GitRepositories.
pub fn source_rows(items: &[GitRepository], prefix: &str) -> Vec<Row> {
    items
        .iter()
        .map(|r| {
            let st = r.status.clone().unwrap_or_default();
            row_of(
                &r.metadata,
                prefix,
                &st.conditions,
                st.artifact.map(|a| a.revision),
                r.spec.suspend,
            )
        })
        .collect()
}

/// Rows of HelmRepositories (an OCI repository has no revision).
pub fn helm_repository_rows(items: &[HelmRepository], prefix: &str) -> Vec<Row> {
    items
        .iter()
        .map(|r| {
            let st = r.status.clone().unwrap_or_default();
            row_of(
                &r.metadata,
                prefix,
                &st.conditions,
                st.artifact.map(|a| a.revision),
                r.spec.suspend,
            )
        })
        .collect()
}

/// Rows of HelmCharts: the chart version stored.
pub fn helm_chart_rows(items: &[HelmChart], prefix: &str) -> Vec<Row> {
    items
        .iter()
        .map(|c| {
            let st = c.status.clone().unwrap_or_default();
            row_of(
                &c.metadata,
                prefix,
                &st.conditions,
                st.artifact.map(|a| a.revision),
                c.spec.suspend,
            )
        })
        .collect()
}

/// Rows of HelmReleases: the chart version of the newest revision, else the one last attempted.
pub fn helm_release_rows(items: &[HelmRelease], prefix: &str) -> Vec<Row> {
    items
        .iter()
        .map(|h| {
            let st = h.status.clone().unwrap_or_default();
            let revision = st
                .history
                .first()
                .map(|s| s.chart_version.clone())
                .or(st.last_attempted_revision);
            row_of(&h.metadata, prefix, &st.conditions, revision, h.spec.suspend)
        })
        .collect()
}

/// Rows of Receivers.
pub fn receiver_rows(items: &[Receiver]) -> Vec<Row> {
    items
        .iter()
        .map(|r| {
            let st = r.status.clone().unwrap_or_default();
            row_of(&r.metadata, "", &st.conditions, None, r.spec.suspend)
        })
        .collect()
}

/// Rows of Providers (they have no status: Ready says whether serin-sync sends to the type).
pub fn provider_rows(items: &[Provider]) -> Vec<Row> {
    items
        .iter()
        .map(|p| {
            let supported = crate::notify::SUPPORTED_PROVIDERS.contains(&p.spec.type_.as_str());
            let (ready, message) = if supported {
                ("True", "Provider is Ready".to_owned())
            } else {
                (
                    "False",
                    format!("spec.type {:?} is not supported by serin-sync", p.spec.type_),
                )
            };
            Row {
                namespace: p.metadata.namespace.clone().unwrap_or_default(),
                name: p.metadata.name.clone().unwrap_or_default(),
                revision: String::new(),
                suspended: p.spec.suspend == Some(true),
                ready: ready.into(),
                message,
            }
        })
        .collect()
}

/// Rows of Alerts (no status: Ready says whether their Provider exists, of the `providers`).
pub fn alert_rows(items: &[Alert], providers: &[Provider]) -> Vec<Row> {
    items
        .iter()
        .map(|a| {
            let ns = a.metadata.namespace.clone().unwrap_or_default();
            let provider = &a.spec.provider_ref.name;
            let found = providers.iter().any(|p| {
                p.metadata.namespace.as_deref() == Some(ns.as_str())
                    && p.metadata.name.as_deref() == Some(provider)
            });
            let (ready, message) = if found {
                ("True", "Alert is Ready".to_owned())
            } else {
                ("False", format!("Provider '{ns}/{provider}' not found"))
            };
            Row {
                namespace: ns,
                name: a.metadata.name.clone().unwrap_or_default(),
                revision: String::new(),
                suspended: a.spec.suspend == Some(true),
                ready: ready.into(),
                message,
            }
        })
        .collect()
}

async fn list<K>(api: Api<K>, name: Option<&str>) -> anyhow::Result<Vec<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match name {
        Some(n) => {
            Ok(vec![api.get(n).await.map_err(|e| {
                super::CliError(crate::controller::api_message(&e))
            })?])
        }
        None => {
            let mut items = api.list(&ListParams::default()).await?.items;
            items.sort_by(|a, b| {
                (a.meta().namespace.clone(), a.meta().name.clone())
                    .cmp(&(b.meta().namespace.clone(), b.meta().name.clone()))
            });
            Ok(items)
        }
    }
}

/// Prints the table(s).
pub async fn run(args: &GetArgs) -> anyhow::Result<()> {
    let selector = args
        .status_selector
        .as_deref()
        .map(StatusSelector::parse)
        .transpose()
        .map_err(super::CliError)?;
    let selector = selector.as_ref();
    let client = args.cluster.client().await?;
    let ns = &args.cluster.namespace;
    let scope = (!args.all_namespaces).then_some(ns.as_str());
    let all = args.all_namespaces;
    let lister = Lister {
        client: &client,
        scope,
        selector,
        all_namespaces: all,
    };
    let show = |table: Option<String>, what: &str| match table {
        // As Flux: objects exist, so the table is printed, if need be with no row.
        Some(table) => print!("{table}"),
        None if all => eprintln!("✗ no {what} objects found in any namespace"),
        None => eprintln!("✗ no {what} objects found in {ns} namespace"),
    };
    match &args.what {
        GetWhat::Kustomizations { name } => show(
            lister
                .table(
                    name.as_deref(),
                    FLUX,
                    |k: &Kustomization| kustomization_conditions(k),
                    |items| kustomization_rows(items, ""),
                )
                .await?,
            "Kustomization",
        ),
        GetWhat::Sources {
            kind: SourceKind::Git { name },
        } => show(
            lister
                .table(name.as_deref(), FLUX, source_conditions, |items| {
                    source_rows(items, "")
                })
                .await?,
            "GitRepository",
        ),
        GetWhat::Helmreleases { name } => show(
            lister
                .table(name.as_deref(), FLUX, helm_release_conditions, |items| {
                    helm_release_rows(items, "")
                })
                .await?,
            "HelmRelease",
        ),
        GetWhat::Sources {
            kind: SourceKind::Helm { name },
        } => show(
            lister
                .table(name.as_deref(), FLUX, helm_repository_conditions, |items| {
                    helm_repository_rows(items, "")
                })
                .await?,
            "HelmRepository",
        ),
        GetWhat::Sources {
            kind: SourceKind::Chart { name },
        } => show(
            lister
                .table(name.as_deref(), FLUX, helm_chart_conditions, |items| {
                    helm_chart_rows(items, "")
                })
                .await?,
            "HelmChart",
        ),
        GetWhat::All => {
            let tables = [
                lister
                    .table(None, FLUX, source_conditions, |items| {
                        source_rows(items, "gitrepository/")
                    })
                    .await?,
                lister
                    .table(None, FLUX, helm_repository_conditions, |items| {
                        helm_repository_rows(items, "helmrepository/")
                    })
                    .await?,
                lister
                    .table(None, FLUX, helm_chart_conditions, |items| {
                        helm_chart_rows(items, "helmchart/")
                    })
                    .await?,
                lister
                    .table(None, FLUX, kustomization_conditions, |items| {
                        kustomization_rows(items, "kustomization/")
                    })
                    .await?,
                lister
                    .table(None, FLUX, helm_release_conditions, |items| {
                        helm_release_rows(items, "helmrelease/")
                    })
                    .await?,
            ];
            print!("{}", tables.into_iter().flatten().collect::<Vec<_>>().join("\n"));
        }
        GetWhat::Alerts { name } => {
            let providers = list(serin_runtime::scope::api::<Provider>(&client, scope), None).await?;
            show(
                lister
                    .table(name.as_deref(), SUSPENDED_ONLY, no_conditions, |items| {
                        alert_rows(items, &providers)
                    })
                    .await?,
                "Alert",
            );
        }
        GetWhat::AlertProviders { name } => show(
            lister
                .table(name.as_deref(), (false, false), no_conditions, provider_rows)
                .await?,
            "Provider",
        ),
        GetWhat::Receivers { name } => show(
            lister
                .table(
                    name.as_deref(),
                    SUSPENDED_ONLY,
                    |r: &Receiver| r.status.as_ref().map_or(&[], |s| &s.conditions),
                    receiver_rows,
                )
                .await?,
            "Receiver",
        ),
    }
    Ok(())
}

/// The columns of Flux's sources, Kustomizations and HelmReleases (REVISION and SUSPENDED).
const FLUX: (bool, bool) = (true, true);
/// The columns of alerts and receivers (SUSPENDED, no REVISION).
const SUSPENDED_ONLY: (bool, bool) = (false, true);

/// Alerts and Providers have no status.
fn no_conditions<K>(_: &K) -> &[Condition] {
    &[]
}

/// Where and what `get` lists.
struct Lister<'a> {
    client: &'a kube::Client,
    scope: Option<&'a str>,
    selector: Option<&'a StatusSelector>,
    all_namespaces: bool,
}

impl Lister<'_> {
    /// One kind's table (`columns`: REVISION, SUSPENDED), `None` when no such object exists.
    async fn table<K>(
        &self,
        name: Option<&str>,
        columns: (bool, bool),
        conditions: impl Fn(&K) -> &[Condition],
        rows: impl Fn(&[K]) -> Vec<Row>,
    ) -> anyhow::Result<Option<String>>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let items = list(serin_runtime::scope::api::<K>(self.client, self.scope), name).await?;
        if items.is_empty() {
            return Ok(None);
        }
        let items = select(items, self.selector, conditions);
        Ok(Some(render_columns(
            &rows(&items),
            self.all_namespaces,
            columns.0,
            columns.1,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_padded_and_hashes_shortened() {
        let rev = "main@sha1:450796ddb2ab6724ee1cc32a4be56da032d1cca0";
        let rows = vec![Row {
            namespace: "flux-system".into(),
            name: "apps".into(),
            revision: rev.into(),
            suspended: false,
            ready: "True".into(),
            message: format!("Applied revision: {rev}"),
        }];
        assert_eq!(
            render(&rows, false),
            "NAME\tREVISION          \tSUSPENDED\tREADY\tMESSAGE                             \t\napps\tmain@sha1:450796dd\tFalse    \tTrue \tApplied revision: main@sha1:450796dd\t\n"
        );
        assert!(render(&rows, true).starts_with("NAMESPACE  \tNAME\t"));
    }

    #[test]
    fn status_selectors_match_as_flux_cli() {
        let condition = |type_: &str, status: &str| Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "R".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::UNIX_EPOCH,
            ),
        };
        let failing = [condition("Ready", "False"), condition("Reconciling", "True")];
        let ready_false = StatusSelector::parse("ready=false").expect("parses");
        assert_eq!(
            ready_false,
            StatusSelector {
                type_: "ready".into(),
                status: "false".into()
            }
        );
        // (selector, conditions, matches)
        let table: [(&str, &[Condition], bool); 6] = [
            ("ready=false", &failing, true),
            ("READY=False", &failing, true),
            ("ready=true", &failing, false),
            ("reconciling=true", &failing, true),
            ("healthy=false", &failing, false),
            ("ready=false", &[], false),
        ];
        for (text, conditions, expected) in table {
            let selector = StatusSelector::parse(text).expect("parses");
            assert_eq!(selector.matches(conditions), expected, "{text}");
        }
        // Only the first `=` splits.
        assert_eq!(
            StatusSelector::parse("a=b=c").map(|s| s.status),
            Ok("b=c".to_owned())
        );
        assert_eq!(
            StatusSelector::parse("ready"),
            Err("expected status selector in type=status format, but found: ready".to_owned())
        );
    }
}
