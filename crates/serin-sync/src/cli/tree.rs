//! `serin-sync tree kustomization NAME`: the objects in a Kustomization's inventory as a tree,
//! nested Kustomizations expanded. Does I/O.

use clap::{Args, Subcommand};
use kube::{Api, Client};

use super::{CliError, ClusterArgs};
use crate::{api::Kustomization, apply::order::ObjectId};

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

async fn expand(client: &Client, id: ObjectId, compact: bool, depth: usize) -> anyhow::Result<Node> {
    let mut children = Vec::new();
    if is_kustomization(&id) && depth < 16 {
        let api: Api<Kustomization> = Api::namespaced(client.clone(), &id.namespace);
        if let Some(ks) = api.get_opt(&id.name).await? {
            let entries = ks
                .status
                .and_then(|s| s.inventory)
                .map(|i| i.entries)
                .unwrap_or_default();
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
    }
    children.sort_by(|a, b| crate::apply::order::reconcile_order(&a.id, &b.id));
    Ok(Node { id, children })
}

/// Prints the tree.
pub async fn run(args: &TreeArgs) -> anyhow::Result<()> {
    let TreeWhat::Kustomization { name } = &args.what;
    let client = args.cluster.client().await?;
    let ns = &args.cluster.namespace;
    let api: Api<Kustomization> = Api::namespaced(client.clone(), ns);
    if api.get_opt(name).await?.is_none() {
        return Err(CliError(format!("Kustomization {ns}/{name} not found")).into());
    }
    let root = ObjectId {
        group: crate::api::kustomization::GROUP.into(),
        version: "v1".into(),
        kind: "Kustomization".into(),
        namespace: ns.clone(),
        name: name.clone(),
    };
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
