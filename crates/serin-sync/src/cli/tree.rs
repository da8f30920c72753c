//! `serin-sync tree kustomization|helmrelease NAME`: the objects in a Kustomization's or a
//! HelmRelease's inventory (what its release installed) as a tree, nested Kustomizations and
//! HelmReleases expanded. Does I/O.

use clap::{Args, Subcommand};
use kube::{Api, Client};

use super::{CliError, ClusterArgs};
use crate::{
    api::{HelmRelease, Kustomization, helm::HELM_GROUP},
    apply::order::ObjectId,
};

#[derive(Args, Debug)]
pub struct TreeArgs {
    #[command(subcommand)]
    pub what: TreeWhat,
    /// Show only Flux objects.
    #[arg(long)]
    pub compact: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Subcommand, Debug)]
pub enum TreeWhat {
    /// A Kustomization.
    #[command(alias = "ks")]
    Kustomization { name: String },
    /// A HelmRelease.
    #[command(alias = "hr")]
    Helmrelease { name: String },
}

/// A node: an object and, for Kustomizations, what they applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub id: ObjectId,
    pub children: Vec<Node>,
}

/// Renders the tree with Flux's box-drawing prefixes.
pub fn render(root: &Node) -> String {
    let mut out = format!("{}\n", root.id.subject());
    draw(&root.children, "", &mut out);
    out
}

fn draw(children: &[Node], prefix: &str, out: &mut String) {
    for (i, child) in children.iter().enumerate() {
        let last = i + 1 == children.len();
        out.push_str(&format!(
            "{prefix}{}{}\n",
            if last { "└── " } else { "├── " },
            child.id.subject()
        ));
        draw(
            &child.children,
            &format!("{prefix}{}", if last { "    " } else { "│   " }),
            out,
        );
    }
}

fn is_kustomization(id: &ObjectId) -> bool {
    id.kind == "Kustomization" && id.group == crate::api::kustomization::GROUP
}

fn is_helm_release(id: &ObjectId) -> bool {
    id.kind == "HelmRelease" && id.group == HELM_GROUP
}

/// The inventory of a Kustomization or HelmRelease (none for other objects).
async fn inventory_of(
    client: &Client,
    id: &ObjectId,
) -> anyhow::Result<Option<Vec<crate::api::ResourceRef>>> {
    let entries = if is_kustomization(id) {
        let api: Api<Kustomization> = Api::namespaced(client.clone(), &id.namespace);
        api.get_opt(&id.name)
            .await?
            .map(|k| k.status.and_then(|s| s.inventory))
    } else if is_helm_release(id) {
        let api: Api<HelmRelease> = Api::namespaced(client.clone(), &id.namespace);
        api.get_opt(&id.name)
            .await?
            .map(|h| h.status.and_then(|s| s.inventory))
    } else {
        None
    };
    Ok(entries.map(|i| i.map(|i| i.entries).unwrap_or_default()))
}

async fn expand(client: &Client, id: ObjectId, compact: bool, depth: usize) -> anyhow::Result<Node> {
    let mut children = Vec::new();
    if depth < 16
        && let Some(entries) = inventory_of(client, &id).await?
    {
        for entry in entries {
            let Some(child) = ObjectId::from_inventory(&entry) else {
                continue;
            };
            if compact && !child.group.ends_with(".toolkit.fluxcd.io") {
                continue;
            }
            children.push(Box::pin(expand(client, child, compact, depth + 1)).await?);
        }
    }
    children.sort_by(|a, b| crate::apply::order::reconcile_order(&a.id, &b.id));
    Ok(Node { id, children })
}

/// Prints the tree.
pub async fn run(args: &TreeArgs) -> anyhow::Result<()> {
    let client = args.cluster.client().await?;
    let ns = &args.cluster.namespace;
    let (group, version, kind, name) = match &args.what {
        TreeWhat::Kustomization { name } => (crate::api::kustomization::GROUP, "v1", "Kustomization", name),
        TreeWhat::Helmrelease { name } => (HELM_GROUP, "v2", "HelmRelease", name),
    };
    let root = ObjectId {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        namespace: ns.clone(),
        name: name.clone(),
    };
    if inventory_of(&client, &root).await?.is_none() {
        return Err(CliError(format!("{kind} {ns}/{name} not found")).into());
    }
    let tree = expand(&client, root, args.compact, 0).await?;
    print!("{}", render(&tree));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(kind: &str, ns: &str, name: &str) -> ObjectId {
        ObjectId {
            group: String::new(),
            version: "v1".into(),
            kind: kind.into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn renders_like_flux() {
        let tree = Node {
            id: id("Kustomization", "flux-system", "flux-system"),
            children: vec![
                Node {
                    id: id("Kustomization", "flux-system", "infrastructure"),
                    children: vec![Node {
                        id: id("Namespace", "", "podinfo"),
                        children: vec![],
                    }],
                },
                Node {
                    id: id("GitRepository", "flux-system", "flux-system"),
                    children: vec![],
                },
            ],
        };
        assert_eq!(
            render(&tree),
            "Kustomization/flux-system/flux-system\n├── Kustomization/flux-system/infrastructure\n│   └── Namespace/podinfo\n└── GitRepository/flux-system/flux-system\n"
        );
    }
}
