//! `serin-sync crd`: the CRDs as YAML, exactly the concatenation of their files in `crds/serin-sync/` in
//! name order; `--out-dir` writes those files instead. Does I/O (stdout, files).

use std::path::PathBuf;

use clap::Args;

use crate::api;

#[derive(Args, Debug)]
pub struct CrdArgs {
    /// Write one file per CRD into this directory instead of printing them.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

/// The CRDs as one multi-document YAML stream.
pub fn render() -> Result<String, serde_yaml::Error> {
    Ok(api::crds_yaml()?.into_iter().map(|(_, yaml)| yaml).collect())
}

/// Prints the CRDs, or writes them into `--out-dir`.
pub fn run(args: &CrdArgs) -> anyhow::Result<()> {
    match &args.out_dir {
        None => print!("{}", render()?),
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            for (name, yaml) in api::crds_yaml()? {
                let path = dir.join(name);
                std::fs::write(&path, yaml)?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
