//! The fence around a build: every file kustomize would read (resources, components, bases,
//! patches, generator files and env files, replacements, configurations, CRDs, OpenAPI schemas,
//! transformers, generators and validators) must lie inside the artifact's root, as Flux confines
//! its builds. Absolute paths, `..` escapes and symlinks leaving the artifact fail the build with
//! a message naming the file and the field that refers to it. Remote resources (URLs, git
//! addresses) read no local file and pass. Does I/O (reads the kustomization files).

use std::{
    collections::BTreeSet,
    path::{Component, Path, PathBuf},
};

use serde_yaml::Value;

use super::generator::existing_file;

/// Fields whose entries are paths (or directories, for the first three) relative to the
/// kustomization's directory.
const PATH_LISTS: &[&str] = &[
    "resources",
    "components",
    "bases",
    "crds",
    "configurations",
    "transformers",
    "generators",
    "validators",
];

/// Checks the kustomization of `dir` and every kustomization it reaches. `root` is the artifact's
/// root (a scratch copy); `escaping` lists the artifact's symlinks that lead outside it
/// (relative to `root`), which the copy left out.
pub fn check(root: &Path, dir: &Path, escaping: &BTreeSet<PathBuf>) -> Result<(), String> {
    let root = root
        .canonicalize()
        .map_err(|e| format!("{}: {e}", root.display()))?;
    let mut seen = BTreeSet::new();
    visit(&root, dir, escaping, &mut seen)
}

fn visit(
    root: &Path,
    dir: &Path,
    escaping: &BTreeSet<PathBuf>,
    seen: &mut BTreeSet<PathBuf>,
) -> Result<(), String> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    if !seen.insert(dir.clone()) {
        return Ok(());
    }
    let Some(file) = existing_file(&dir) else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", shown(root, &file)))?;
    for next in check_text(root, &dir, &file, &text, escaping)? {
        if next.is_dir() {
            visit(root, &next, escaping, seen)?;
        }
    }
    Ok(())
}

/// Checks the text of one kustomization file (`file`, in `dir`) against the fence; returns the
/// paths its `resources`, `components` and `bases` lead to, which may be kustomizations too.
/// Reads no file (symlinks of existing paths are resolved).
pub fn check_text(
    root: &Path,
    dir: &Path,
    file: &Path,
    text: &str,
    escaping: &BTreeSet<PathBuf>,
) -> Result<Vec<PathBuf>, String> {
    let Ok(doc) = serde_yaml::from_str::<Value>(text) else {
        // kustomize reports a file it cannot decode itself.
        return Ok(Vec::new());
    };
    let mut next = Vec::new();
    for (field, path) in references(&doc) {
        if is_remote(&path) {
            continue;
        }
        let at = || format!("{field} in {}", shown(root, file));
        let resolved = inside(root, dir, &path).map_err(|why| format!("file '{path}' ({}) {why}", at()))?;
        if let Ok(rel) = resolved.strip_prefix(root)
            && escaping.iter().any(|e| rel.starts_with(e))
        {
            return Err(format!(
                "file '{path}' ({}) is a symlink that leaves the artifact",
                at()
            ));
        }
        let directory_field = matches!(field.as_str(), f if f.starts_with("resources") || f.starts_with("components") || f.starts_with("bases"));
        if directory_field {
            next.push(resolved);
        }
    }
    Ok(next)
}

/// `path` resolved against `dir`, if it stays inside `root`.
fn inside(root: &Path, dir: &Path, path: &str) -> Result<PathBuf, String> {
    let joined = dir.join(path);
    // Lexically first: `..` must not climb out even through directories that do not exist.
    let mut normal = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                normal.pop();
            }
            Component::CurDir => {}
            other => normal.push(other.as_os_str()),
        }
    }
    // Then through symlinks, for what exists.
    let real = normal.canonicalize().unwrap_or(normal);
    if real.starts_with(root) {
        Ok(real)
    } else {
        Err("is not in or below the artifact root".to_owned())
    }
}

fn shown(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}

/// A remote resource: kustomize fetches it and reads no local file for it.
fn is_remote(path: &str) -> bool {
    path.contains("://")
        || path.starts_with("git@")
        || path.starts_with("github.com/")
        || path.starts_with("git::")
}

/// Every local path a kustomization refers to, with the field it is in.
fn references(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let strings = |v: &Value| -> Vec<String> {
        v.as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    for field in PATH_LISTS {
        for (i, p) in strings(&doc[*field]).into_iter().enumerate() {
            out.push((format!("{field}[{i}]"), p));
        }
    }
    // Strategic merge patches: a file name, or an inline patch (several lines).
    for (i, p) in strings(&doc["patchesStrategicMerge"]).into_iter().enumerate() {
        if !p.contains('\n') {
            out.push((format!("patchesStrategicMerge[{i}]"), p));
        }
    }
    for field in ["patches", "patchesJson6902", "replacements"] {
        for (i, entry) in doc[field].as_sequence().into_iter().flatten().enumerate() {
            if let Some(p) = entry.get("path").and_then(Value::as_str) {
                out.push((format!("{field}[{i}].path"), p.to_owned()));
            }
        }
    }
    for field in ["configMapGenerator", "secretGenerator"] {
        for (i, generator) in doc[field].as_sequence().into_iter().flatten().enumerate() {
            for (j, f) in strings(&generator["files"]).into_iter().enumerate() {
                // `key=path` or `path`.
                let p = f.split_once('=').map_or(f.as_str(), |(_, p)| p).to_owned();
                out.push((format!("{field}[{i}].files[{j}]"), p));
            }
            for (j, p) in strings(&generator["envs"]).into_iter().enumerate() {
                out.push((format!("{field}[{i}].envs[{j}]"), p));
            }
            if let Some(p) = generator.get("env").and_then(Value::as_str) {
                out.push((format!("{field}[{i}].env"), p.to_owned()));
            }
        }
    }
    if let Some(p) = doc["openapi"].get("path").and_then(Value::as_str) {
        out.push(("openapi.path".to_owned(), p.to_owned()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().expect("tempdir");
        for (path, text) in files {
            let p = tmp.path().join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        tmp
    }

    fn checked(files: &[(&str, &str)], dir: &str) -> Result<(), String> {
        let tmp = tree(files);
        check(tmp.path(), &tmp.path().join(dir), &BTreeSet::new())
    }

    #[test]
    fn files_inside_the_artifact_pass() {
        let files = [
            (
                "base/kustomization.yaml",
                "resources: [deploy.yaml]\nconfigMapGenerator:\n- name: a\n  files: [config/app.ini, key=config/other.ini]\n  envs: [config/.env]\n",
            ),
            ("base/deploy.yaml", "kind: x"),
            (
                "apps/prod/kustomization.yaml",
                "resources: [../../base, https://github.com/org/repo//deploy?ref=v1]\npatches:\n- path: ../../patches/replicas.yaml\n- patch: |\n    - op: add\n",
            ),
            ("patches/replicas.yaml", "kind: x"),
        ];
        assert_eq!(checked(&files, "apps/prod"), Ok(()));
    }

    #[test]
    fn files_outside_the_artifact_fail_naming_the_file_and_field() {
        let cases: [(&str, &str); 5] = [
            (
                "configMapGenerator:\n- name: leak\n  files: [/etc/passwd]\n",
                "file '/etc/passwd' (configMapGenerator[0].files[0] in apps/kustomization.yaml) is not in or below the artifact root",
            ),
            (
                "configMapGenerator:\n- name: leak\n  files: [passwd=../../../../../../etc/passwd]\n",
                "file '../../../../../../etc/passwd' (configMapGenerator[0].files[0] in apps/kustomization.yaml)",
            ),
            (
                "secretGenerator:\n- name: token\n  envs: [/var/run/secrets/kubernetes.io/serviceaccount/token]\n",
                "(secretGenerator[0].envs[0] in apps/kustomization.yaml) is not in or below",
            ),
            (
                "resources: [../..]\n",
                "file '../..' (resources[0] in apps/kustomization.yaml)",
            ),
            (
                "patches:\n- path: ../../outside.yaml\n",
                "(patches[0].path in apps/kustomization.yaml)",
            ),
        ];
        for (kustomization, want) in cases {
            let err =
                checked(&[("apps/kustomization.yaml", kustomization)], "apps").expect_err(kustomization);
            assert!(err.contains(want), "{kustomization}: {err}");
        }
        // Through a base the build reaches.
        let err = checked(
            &[
                ("apps/kustomization.yaml", "resources: [../base]\n"),
                (
                    "base/kustomization.yaml",
                    "replacements:\n- path: /etc/hostname\n",
                ),
            ],
            "apps",
        )
        .expect_err("via a base");
        assert!(
            err.contains("(replacements[0].path in base/kustomization.yaml)"),
            "{err}"
        );
    }

    #[test]
    fn a_symlink_leaving_the_artifact_is_named() {
        let tmp = tree(&[(
            "apps/kustomization.yaml",
            "configMapGenerator:\n- name: a\n  files: [link.txt]\n",
        )]);
        let escaping = BTreeSet::from([PathBuf::from("apps/link.txt")]);
        let err = check(tmp.path(), &tmp.path().join("apps"), &escaping).expect_err("symlink");
        assert_eq!(
            err,
            "file 'link.txt' (configMapGenerator[0].files[0] in apps/kustomization.yaml) is a symlink that leaves the artifact"
        );
    }
}
