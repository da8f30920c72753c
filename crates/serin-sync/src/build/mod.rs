//! From an artifact and a Kustomization spec to the objects to apply: copy the artifact to a
//! scratch directory, write the kustomization file (`generator`), run kustomize (`kustomize`),
//! substitute variables (`substitute`) and read the objects (`objects`). Does I/O (files, a
//! process); the steps it calls are pure where they can be.

pub mod fence;
pub mod generator;
pub mod kustomize;
pub mod objects;
pub mod substitute;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::KustomizationSpec;

/// Why a build failed, with Flux's reasons.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Reason `ArtifactFailed`.
    #[error("kustomization path not found: stat {0}: no such file or directory")]
    PathNotFound(String),
    /// Reason `BuildFailed`.
    #[error("{0}")]
    Failed(String),
}

impl BuildError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::PathNotFound(_) => "ArtifactFailed",
            Self::Failed(_) => "BuildFailed",
        }
    }
}

/// Variables for post-build substitution, already gathered from `substituteFrom` and
/// `substitute`. `None` when the spec has no `postBuild`.
#[derive(Clone, Debug, Default)]
pub struct PostBuildVars {
    pub vars: BTreeMap<String, String>,
    pub always: bool,
    pub strict: bool,
}

/// The result of a build.
#[derive(Clone, Debug)]
pub struct Built {
    pub objects: Vec<Value>,
    /// `sha256:<hex>` of the built YAML (the history digest).
    pub digest: String,
    pub yaml: String,
}

/// Builds `spec.path` of the artifact in `artifact_dir`. The file work (copying, generating,
/// fencing) and the decoding run on the blocking pool, kustomize as a child process: none of it
/// holds an async worker.
pub async fn build(
    artifact_dir: &Path,
    spec: &KustomizationSpec,
    post_build: Option<&PostBuildVars>,
) -> Result<Built, BuildError> {
    let (artifact_dir, owned_spec) = (artifact_dir.to_path_buf(), spec.clone());
    let (scratch, dir) = blocking(move || prepare(&artifact_dir, &owned_spec)).await?;
    let yaml = kustomize::Kustomize::detect()
        .build(&dir)
        .await
        .map_err(|e| BuildError::Failed(format!("kustomize build failed: {e}")))?;
    drop(scratch);
    let post_build = post_build.cloned();
    blocking(move || finish(&yaml, post_build.as_ref())).await
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BuildError> + Send + 'static,
) -> Result<T, BuildError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BuildError::Failed(format!("the build task failed: {e}")))?
}

/// Copies the artifact to a scratch directory, writes the kustomization file of `spec.path` and
/// checks that every file it reads lies inside the artifact. Returns the scratch directory (kept
/// until kustomize has run) and the path to build.
fn prepare(
    artifact_dir: &Path,
    spec: &KustomizationSpec,
) -> Result<(tempfile::TempDir, PathBuf), BuildError> {
    let scratch = tempfile::Builder::new()
        .prefix("kustomization-")
        .tempdir()
        .map_err(|e| BuildError::Failed(format!("cannot create a build directory: {e}")))?;
    let escaping = copy_dir(artifact_dir, scratch.path())
        .map_err(|e| BuildError::Failed(format!("cannot copy the artifact: {e}")))?;
    let rel = spec
        .path
        .as_deref()
        .unwrap_or("")
        .trim_start_matches("./")
        .trim_start_matches('/');
    if rel.split('/').any(|c| c == "..") {
        return Err(BuildError::Failed(format!("path '{rel}' leaves the artifact")));
    }
    let dir = scratch.path().join(rel);
    if !dir.is_dir() {
        return Err(BuildError::PathNotFound(dir.display().to_string()));
    }
    generator::write(scratch.path(), &dir, spec).map_err(|e| BuildError::Failed(e.to_string()))?;
    // kustomize may load files from anywhere (Flux's options): serin-sync confines it to the
    // artifact first.
    fence::check(scratch.path(), &dir, &escaping)
        .map_err(|e| BuildError::Failed(format!("kustomize build failed: {e}")))?;
    Ok((scratch, dir))
}

/// Substitutes and decodes kustomize's output.
pub fn finish(yaml: &str, post_build: Option<&PostBuildVars>) -> Result<Built, BuildError> {
    let mut objects = objects::read_objects(yaml)
        .map_err(|e| BuildError::Failed(format!("kustomize build failed: {e}")))?;
    if let Some(pb) = post_build.filter(|pb| pb.always || !pb.vars.is_empty()) {
        for object in &mut objects {
            if objects::meta_value(object, substitute::SUBSTITUTE_KEY) == Some("disabled") {
                continue;
            }
            let text = serde_yaml::to_string(object).map_err(|e| BuildError::Failed(e.to_string()))?;
            let gvk = format!(
                "{}/{}",
                object["apiVersion"].as_str().unwrap_or_default(),
                object["kind"].as_str().unwrap_or_default()
            );
            let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            let failed = |e: String| BuildError::Failed(format!("post build failed for '{gvk}/{name}': {e}"));
            let out =
                substitute::substitute(&text, &pb.vars, pb.strict).map_err(|e| failed(e.to_string()))?;
            *object = serde_yaml::from_str(&out).map_err(|e| failed(e.to_string()))?;
        }
    }
    let mut out = String::new();
    for object in &objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(object).map_err(|e| BuildError::Failed(e.to_string()))?);
    }
    Ok(Built {
        digest: format!("sha256:{:x}", Sha256::digest(out.as_bytes())),
        objects,
        yaml: out,
    })
}

/// Copies a directory tree (directories, regular files, and symlinks to files inside the tree as
/// the files they lead to; `.git` left out). Returns the symlinks that lead outside the tree (or
/// nowhere), relative to it: they are not copied.
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<std::collections::BTreeSet<std::path::PathBuf>> {
    let root = from.canonicalize()?;
    let mut escaping = std::collections::BTreeSet::new();
    let walker = walkdir::WalkDir::new(from)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git");
    for entry in walker {
        let entry = entry.map_err(std::io::Error::other)?;
        let rel = entry.path().strip_prefix(from).map_err(std::io::Error::other)?;
        let target = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target)?;
        } else if entry.file_type().is_file() {
            std::fs::copy(entry.path(), &target)?;
        } else if entry.file_type().is_symlink() {
            match entry.path().canonicalize() {
                Ok(real) if real.starts_with(&root) => {
                    if real.is_file() {
                        std::fs::copy(&real, &target)?;
                    }
                }
                _ => {
                    escaping.insert(rel.to_path_buf());
                }
            }
        }
    }
    Ok(escaping)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn builds_a_plain_directory_with_flux_overlays() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("apps");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join("cm.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  cluster: ${cluster:=none}\n  literal: $${cluster}\n",
        )
        .expect("write");
        let spec = KustomizationSpec {
            path: Some("./apps".into()),
            target_namespace: Some("team".into()),
            name_suffix: Some("-v1".into()),
            ..Default::default()
        };
        let vars = PostBuildVars {
            vars: BTreeMap::from([("cluster".to_owned(), "dev".to_owned())]),
            always: false,
            strict: true,
        };
        let built = build(tmp.path(), &spec, Some(&vars)).await.expect("built");
        assert_eq!(built.objects.len(), 1);
        let cm = &built.objects[0];
        assert_eq!(cm["metadata"]["name"], "settings-v1");
        assert_eq!(cm["metadata"]["namespace"], "team");
        assert_eq!(cm["data"]["cluster"], "dev");
        assert_eq!(cm["data"]["literal"], "${cluster}");
        assert!(
            !dir.join("kustomization.yaml").exists(),
            "the artifact is not modified"
        );
    }

    #[tokio::test]
    async fn a_build_reads_no_file_outside_the_artifact() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("apps");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let spec = KustomizationSpec {
            path: Some("./apps".into()),
            ..Default::default()
        };
        for (files, want) in [
            (
                "[/etc/passwd]",
                "file '/etc/passwd' (configMapGenerator[0].files[0] in apps/kustomization.yaml) is not in or below the artifact root",
            ),
            (
                "[../../../../../../../../etc/passwd]",
                "is not in or below the artifact root",
            ),
            (
                "[hostname]",
                "file 'hostname' (configMapGenerator[0].files[0] in apps/kustomization.yaml) is a symlink that leaves the artifact",
            ),
        ] {
            std::fs::write(
                dir.join("kustomization.yaml"),
                format!("configMapGenerator:\n- name: leak\n  files: {files}\n"),
            )
            .expect("write");
            let _ = std::fs::remove_file(dir.join("hostname"));
            std::os::unix::fs::symlink("/etc/hostname", dir.join("hostname")).expect("symlink");
            let err = build(tmp.path(), &spec, None).await.expect_err(files);
            assert_eq!(err.reason(), "BuildFailed");
            assert!(err.to_string().contains(want), "{files}: {err}");
        }
    }

    #[tokio::test]
    async fn errors_carry_flux_reasons() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let spec = KustomizationSpec {
            path: Some("./missing".into()),
            ..Default::default()
        };
        let err = build(tmp.path(), &spec, None).await.expect_err("missing path");
        assert_eq!(err.reason(), "ArtifactFailed");
        assert!(
            err.to_string().starts_with("kustomization path not found: stat "),
            "{err}"
        );

        std::fs::write(tmp.path().join("kustomization.yaml"), "resources: [nope.yaml]\n").expect("write");
        let err = build(tmp.path(), &KustomizationSpec::default(), None)
            .await
            .expect_err("build error");
        assert_eq!(err.reason(), "BuildFailed");
        assert!(err.to_string().starts_with("kustomize build failed: "), "{err}");
        assert!(err.to_string().contains("nope.yaml"), "{err}");
    }
}
