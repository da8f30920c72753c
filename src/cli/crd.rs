//! `serin crd`: the CRDs as YAML, exactly the concatenation of `crds/*.yaml` in name order;
//! `--out-dir` writes those files instead.

use std::path::PathBuf;

use clap::Args;

use crate::api;

#[derive(Args, Debug)]
pub struct CrdArgs {
    /// Write one file per CRD into this directory instead of printing them.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

/// Errors of `serin crd`.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("rendering the CRDs failed: {0}")]
    Render(#[from] serde_yaml::Error),
    #[error("writing {path} failed: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// The CRD files, sorted by name as `crds/*.yaml` expands.
pub fn files() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    let mut files = api::crds_yaml()?;
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// The CRDs as one multi-document YAML stream.
pub fn render() -> Result<String, serde_yaml::Error> {
    Ok(files()?.into_iter().map(|(_, yaml)| yaml).collect())
}

/// Prints the CRDs, or writes them into `--out-dir`.
pub fn run(args: &CrdArgs) -> Result<(), CrdError> {
    match &args.out_dir {
        None => print!("{}", render()?),
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| CrdError::Write {
                path: dir.clone(),
                source,
            })?;
            for (name, yaml) in files()? {
                let path = dir.join(name);
                std::fs::write(&path, yaml).map_err(|source| CrdError::Write {
                    path: path.clone(),
                    source,
                })?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
