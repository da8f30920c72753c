//! `serin-sync post-render --plan FILE`: Helm's post-renderer (hidden; the HelmRelease
//! reconciler passes it to `helm install|upgrade`). Reads Helm's manifest on stdin and writes
//! the post-rendered one on stdout (see [`crate::helm::post_render`]). Does I/O.

use std::{io::Read, path::PathBuf};

use anyhow::Context as _;
use clap::Args;

use super::ClusterArgs;
use crate::helm::post_render;

/// Flags of `post-render`.
#[derive(Args, Debug, Clone)]
pub struct PostRenderArgs {
    /// The plan the reconciler wrote (JSON).
    #[arg(long)]
    pub plan: PathBuf,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Post-renders stdin to stdout.
pub async fn run(args: &PostRenderArgs) -> anyhow::Result<()> {
    let plan: post_render::Plan = serde_json::from_slice(
        &std::fs::read(&args.plan).with_context(|| format!("reading {}", args.plan.display()))?,
    )
    .with_context(|| format!("reading the plan {}", args.plan.display()))?;
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the manifest from stdin")?;
    let client = args.cluster.client().await?;
    let work = tempfile::tempdir().context("a work directory")?;
    let out = post_render::render(&plan, &input, client, work.path())
        .await
        .map_err(|e| anyhow::anyhow!("serin-sync post-render: {e}"))?;
    print!("{out}");
    Ok(())
}
