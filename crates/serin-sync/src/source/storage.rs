//! serin-sync's artifact storage: the files of a fetched revision, filtered by the ignore rules,
//! kept in `<root>/gitrepository/<ns>/<name>/<commit>/`, with a content digest. Flux archives a
//! tarball served over HTTP; serin-sync's reconcilers share one process and read the directory.
//! Does I/O (files).

use std::{
    io,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use super::ignore::{IGNORE_FILE, Matcher};

/// Where a GitRepository's artifact for `commit` lives, relative to the storage root.
pub fn artifact_path(namespace: &str, name: &str, commit: &str) -> String {
    format!("gitrepository/{namespace}/{name}/{commit}")
}

/// Reads every `.sourceignore` below `root` (not descending into `.git`) in walk order, then
/// `spec_ignore`; each with its directory relative to the root.
pub fn ignore_patterns(root: &Path, spec_ignore: Option<&str>) -> Vec<(Vec<String>, String)> {
    let mut patterns = Vec::new();
    let walker = walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git");
    for entry in walker.flatten() {
        if entry.file_type().is_file() && entry.file_name() == IGNORE_FILE {
            let domain = components(entry.path().parent().unwrap_or(root), root);
            if let Ok(text) = std::fs::read_to_string(entry.path()) {
                patterns.push((domain, text));
            }
        }
    }
    if let Some(text) = spec_ignore {
        patterns.push((Vec::new(), text.to_owned()));
    }
    patterns
}

fn components(path: &Path, root: &Path) -> Vec<String> {
    path.strip_prefix(root)
        .map(|rel| rel.iter().map(|c| c.to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// The stored content: its digest (`sha256:<hex>` over paths, modes and contents in name
/// order) and size in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub digest: String,
    pub size: i64,
}

/// Copies the regular files and directories of `checkout` that the matcher keeps into `dest`
/// (replaced when present); symlinks are dropped, as Flux drops them.
pub fn store(checkout: &Path, dest: &Path, matcher: &Matcher) -> io::Result<Stored> {
    let staging = dest.with_extension("tmp");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(&staging)?;
    let mut hasher = Sha256::new();
    let mut size = 0i64;
    let walker = walkdir::WalkDir::new(checkout)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| {
            let rel = components(e.path(), checkout);
            !matcher.is_ignored(&rel, e.file_type().is_dir())
        });
    for entry in walker {
        let entry = entry.map_err(io::Error::other)?;
        let rel: PathBuf = entry
            .path()
            .strip_prefix(checkout)
            .map_err(io::Error::other)?
            .to_path_buf();
        let target = staging.join(&rel);
        let kind = entry.file_type();
        if kind.is_dir() {
            std::fs::create_dir_all(&target)?;
            hasher.update(format!("d {}\n", rel.display()));
        } else if kind.is_file() {
            let content = std::fs::read(entry.path())?;
            std::fs::write(&target, &content)?;
            size += content.len() as i64;
            hasher.update(format!("f {} {}\n", rel.display(), content.len()));
            hasher.update(&content);
        }
    }
    if dest.exists() {
        std::fs::remove_dir_all(dest)?;
    }
    std::fs::rename(&staging, dest)?;
    Ok(Stored {
        digest: format!("sha256:{:x}", hasher.finalize()),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_what_the_ignore_rules_keep() {
        let src = tempfile::tempdir().expect("tempdir");
        let root = src.path();
        std::fs::create_dir_all(root.join("apps/base")).expect("mkdir");
        std::fs::create_dir_all(root.join(".git")).expect("mkdir");
        std::fs::write(root.join(".git/HEAD"), "ref").expect("write");
        std::fs::write(root.join("apps/base/a.yaml"), "kind: A").expect("write");
        std::fs::write(root.join("apps/notes.txt"), "x").expect("write");
        std::fs::write(root.join("apps/.sourceignore"), "*.txt\n").expect("write");
        std::fs::write(root.join("logo.png"), "png").expect("write");
        let matcher = Matcher::flux(&ignore_patterns(root, None));
        let out = tempfile::tempdir().expect("tempdir");
        let dest = out.path().join("artifact");
        let stored = store(root, &dest, &matcher).expect("stored");
        assert!(dest.join("apps/base/a.yaml").is_file());
        assert!(!dest.join("apps/notes.txt").exists());
        assert!(!dest.join(".git").exists());
        assert!(
            dest.join("logo.png").exists(),
            "defaults are dropped once a pattern exists"
        );
        let again = store(root, &dest, &matcher).expect("stored again");
        assert_eq!(stored, again, "the digest depends on content only");
        assert!(stored.digest.starts_with("sha256:"));
    }
}
