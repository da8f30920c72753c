//! `serin-sync get kustomizations|sources git|all`: Flux's tables (NAME REVISION SUSPENDED READY
//! MESSAGE, NAMESPACE first with `-A`), hashes shortened to 8 characters. Does I/O.

use clap::{Args, Subcommand};
use kube::{Api, ResourceExt, api::ListParams};

use super::ClusterArgs;
use crate::{
    api::{GitRepository, Kustomization},
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
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Subcommand, Debug)]
pub enum GetWhat {
    /// Kustomizations (optionally one by name).
    #[command(alias = "kustomization", alias = "ks")]
    Kustomizations { name: Option<String> },
    /// Sources.
    #[command(alias = "source")]
    Sources {
        #[command(subcommand)]
        kind: SourceKind,
    },
    /// Every source and Kustomization.
    All,
}

#[derive(Subcommand, Debug)]
pub enum SourceKind {
    /// GitRepositories (optionally one by name).
    Git { name: Option<String> },
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
    let mut table: Vec<Vec<String>> = Vec::new();
    let mut header: Vec<String> = ["NAME", "REVISION", "SUSPENDED", "READY", "MESSAGE"]
        .map(String::from)
        .to_vec();
    if all_namespaces {
        header.insert(0, "NAMESPACE".into());
    }
    table.push(header);
    for r in rows {
        let mut cells = vec![
            r.name.clone(),
            shorten_hashes(&r.revision),
            if r.suspended { "True" } else { "False" }.to_owned(),
            r.ready.clone(),
            shorten_hashes(&r.message),
        ];
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

fn ready_of(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> (String, String) {
    match status::condition(conditions, status::READY) {
        Some(c) => (c.status.clone(), c.message.clone()),
        None => ("Unknown".into(), "waiting to be reconciled".into()),
    }
}

/// Rows of Kustomizations.
pub fn kustomization_rows(items: &[Kustomization], prefix: &str) -> Vec<Row> {
    items
        .iter()
        .map(|k| {
            let st = k.status.clone().unwrap_or_default();
            let (ready, message) = ready_of(&st.conditions);
            Row {
                namespace: k.namespace().unwrap_or_default(),
                name: format!("{prefix}{}", k.name_any()),
                revision: st.last_applied_revision.unwrap_or_default(),
                suspended: k.spec.suspend == Some(true),
                ready,
                message,
            }
        })
        .collect()
}

/// Rows of GitRepositories.
pub fn source_rows(items: &[GitRepository], prefix: &str) -> Vec<Row> {
    items
        .iter()
        .map(|r| {
            let st = r.status.clone().unwrap_or_default();
            let (ready, message) = ready_of(&st.conditions);
            Row {
                namespace: r.namespace().unwrap_or_default(),
                name: format!("{prefix}{}", r.name_any()),
                revision: st.artifact.map(|a| a.revision).unwrap_or_default(),
                suspended: r.spec.suspend == Some(true),
                ready,
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
    let client = args.cluster.client().await?;
    let ns = &args.cluster.namespace;
    let ks_api = || -> Api<Kustomization> {
        if args.all_namespaces {
            Api::all(client.clone())
        } else {
            Api::namespaced(client.clone(), ns)
        }
    };
    let git_api = || -> Api<GitRepository> {
        if args.all_namespaces {
            Api::all(client.clone())
        } else {
            Api::namespaced(client.clone(), ns)
        }
    };
    let empty = |what: &str| {
        if args.all_namespaces {
            eprintln!("✗ no {what} objects found in any namespace");
        } else {
            eprintln!("✗ no {what} objects found in {ns} namespace");
        }
    };
    match &args.what {
        GetWhat::Kustomizations { name } => {
            let items = list(ks_api(), name.as_deref()).await?;
            if items.is_empty() {
                empty("Kustomization");
            } else {
                print!("{}", render(&kustomization_rows(&items, ""), args.all_namespaces));
            }
        }
        GetWhat::Sources {
            kind: SourceKind::Git { name },
        } => {
            let items = list(git_api(), name.as_deref()).await?;
            if items.is_empty() {
                empty("GitRepository");
            } else {
                print!("{}", render(&source_rows(&items, ""), args.all_namespaces));
            }
        }
        GetWhat::All => {
            let repos = list(git_api(), None).await?;
            let ks = list(ks_api(), None).await?;
            let mut tables = Vec::new();
            if !repos.is_empty() {
                tables.push(render(
                    &source_rows(&repos, "gitrepository/"),
                    args.all_namespaces,
                ));
            }
            if !ks.is_empty() {
                tables.push(render(
                    &kustomization_rows(&ks, "kustomization/"),
                    args.all_namespaces,
                ));
            }
            print!("{}", tables.join("\n"));
        }
    }
    Ok(())
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
}
