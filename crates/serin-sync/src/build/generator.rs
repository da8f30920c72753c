//! The `kustomization.yaml` of a Kustomization's path, by Flux's generator rules: load the one
//! the directory has, or generate one listing its manifests and sub-kustomizations; then overlay
//! the Flux spec (`targetNamespace`, `namePrefix`/`nameSuffix`, `patches`, `components`,
//! `images`). Does I/O (reads the directory, writes the file).

use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use crate::api::KustomizationSpec;

/// The file names kustomize recognises, in its order.
pub const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Errors of the generator, reported with reason `BuildFailed`.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("failed to decode Kubernetes YAML from {path}: {message}")]
    Decode { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> GenerateError + '_ {
    move |source| GenerateError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The kustomization file of `dir`, if it has one.
pub fn existing_file(dir: &Path) -> Option<PathBuf> {
    KUSTOMIZATION_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// Writes the kustomization file `kustomize build` will read for `dir` (inside a scratch copy of
/// the artifact; `root` is that copy's root), and returns its content.
pub fn write(root: &Path, dir: &Path, spec: &KustomizationSpec) -> Result<String, GenerateError> {
    let (path, mut doc) = match existing_file(dir) {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
            let mut doc: Mapping = serde_yaml::from_str::<Option<Mapping>>(&text)
                .map_err(|e| GenerateError::Decode {
                    path: rel(root, &path),
                    message: e.to_string(),
                })?
                .unwrap_or_default();
            if doc
                .get("resources")
                .is_none_or(|r| r.as_sequence().is_none_or(Vec::is_empty))
                && doc.get("buildMetadata").is_none()
            {
                doc.insert(
                    "buildMetadata".into(),
                    Value::Sequence(vec!["originAnnotations".into()]),
                );
            }
            (path, doc)
        }
        None => (dir.join("kustomization.yaml"), generate(root, dir)?),
    };
    overlay(&mut doc, spec, dir)?;
    let text = serde_yaml::to_string(&doc).map_err(|e| GenerateError::Invalid(e.to_string()))?;
    std::fs::write(&path, &text).map_err(io_err(&path))?;
    Ok(text)
}

/// A kustomization listing every manifest file below `dir` and every sub-directory that has a
/// kustomization of its own (not descended).
pub fn generate(root: &Path, dir: &Path) -> Result<Mapping, GenerateError> {
    let mut resources = Vec::new();
    collect(root, dir, dir, &mut resources)?;
    let mut doc = Mapping::new();
    doc.insert("apiVersion".into(), "kustomize.config.k8s.io/v1beta1".into());
    doc.insert("kind".into(), "Kustomization".into());
    if resources.is_empty() {
        doc.insert("namespace".into(), "_placeholder".into());
    } else {
        doc.insert(
            "resources".into(),
            Value::Sequence(resources.into_iter().map(Value::String).collect()),
        );
    }
    Ok(doc)
}

fn collect(root: &Path, base: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), GenerateError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let relative = format!("./{}", path.strip_prefix(base).unwrap_or(&path).display());
        if path.is_dir() {
            if existing_file(&path).is_some() {
                out.push(relative);
            } else {
                collect(root, base, &path, out)?;
            }
            continue;
        }
        let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if !is_yaml {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        if holds_resources(&text).map_err(|message| GenerateError::Decode {
            path: rel(root, &path),
            message,
        })? {
            out.push(relative);
        }
    }
    Ok(())
}

/// Whether a YAML file holds at least one Kubernetes object (`apiVersion` and `kind`).
fn holds_resources(text: &str) -> Result<bool, String> {
    let mut any = false;
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = Value::deserialize(doc).map_err(|e| serin_runtime::yaml::describe(&e))?;
        if value.get("apiVersion").is_some() && value.get("kind").is_some() {
            any = true;
        }
    }
    Ok(any)
}

use serde::Deserialize;

fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}

/// Sets the Flux spec's build fields on a kustomization.
pub fn overlay(doc: &mut Mapping, spec: &KustomizationSpec, dir: &Path) -> Result<(), GenerateError> {
    if let Some(ns) = spec.target_namespace.as_ref().filter(|s| !s.is_empty()) {
        doc.insert("namespace".into(), ns.as_str().into());
    }
    if let Some(p) = spec.name_prefix.as_ref().filter(|s| !s.is_empty()) {
        doc.insert("namePrefix".into(), p.as_str().into());
    }
    if let Some(s) = spec.name_suffix.as_ref().filter(|s| !s.is_empty()) {
        doc.insert("nameSuffix".into(), s.as_str().into());
    }
    if !spec.patches.is_empty() {
        let patches = sequence_at(doc, "patches");
        for patch in &spec.patches {
            patches.push(serde_yaml::to_value(patch).map_err(|e| GenerateError::Invalid(e.to_string()))?);
        }
    }
    if !spec.components.is_empty() {
        let ignore_missing = spec.ignore_missing_components.unwrap_or(false);
        let mut add = Vec::new();
        for component in &spec.components {
            let remote = [
                "https://",
                "http://",
                "git::",
                "github.com/",
                "gitlab.com/",
                "ssh://",
            ]
            .iter()
            .any(|p| component.starts_with(p));
            if remote || Path::new(component).is_absolute() {
                return Err(GenerateError::Invalid(format!(
                    "component path '{component}' must be local and relative"
                )));
            }
            if ignore_missing && !dir.join(component).exists() {
                continue;
            }
            add.push(Value::String(component.clone()));
        }
        sequence_at(doc, "components").extend(add);
    }
    if !spec.images.is_empty() {
        let images = sequence_at(doc, "images");
        for image in &spec.images {
            let existing = images
                .iter_mut()
                .find(|i| i.get("name").and_then(Value::as_str) == Some(image.name.as_str()));
            match existing.and_then(Value::as_mapping_mut) {
                Some(entry) => {
                    if let Some(n) = &image.new_name {
                        entry.insert("newName".into(), n.as_str().into());
                    }
                    if image.new_tag.is_some() || image.digest.is_some() {
                        entry.remove("newTag");
                        entry.remove("digest");
                        if let Some(t) = &image.new_tag {
                            entry.insert("newTag".into(), t.as_str().into());
                        }
                        if let Some(d) = &image.digest {
                            entry.insert("digest".into(), d.as_str().into());
                        }
                    }
                }
                None => images
                    .push(serde_yaml::to_value(image).map_err(|e| GenerateError::Invalid(e.to_string()))?),
            }
        }
    }
    Ok(())
}

fn sequence_at<'a>(doc: &'a mut Mapping, key: &str) -> &'a mut Vec<Value> {
    let entry = doc
        .entry(key.into())
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if !entry.is_sequence() {
        *entry = Value::Sequence(Vec::new());
    }
    entry.as_sequence_mut().expect("a sequence was just set")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kustomization::{Image, Patch, Selector};

    #[test]
    fn generates_resources_and_stops_at_sub_kustomizations() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("clusters/dev");
        std::fs::create_dir_all(dir.join("flux-system")).expect("mkdir");
        std::fs::create_dir_all(dir.join("extra/deeper")).expect("mkdir");
        std::fs::write(
            dir.join("apps.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
        )
        .expect("w");
        std::fs::write(dir.join("notes.yaml"), "just: data\n").expect("w");
        std::fs::write(dir.join("README.md"), "# x").expect("w");
        std::fs::write(dir.join("flux-system/kustomization.yaml"), "resources: []\n").expect("w");
        std::fs::write(
            dir.join("flux-system/ignored.yaml"),
            "apiVersion: v1\nkind: ConfigMap\n",
        )
        .expect("w");
        std::fs::write(
            dir.join("extra/deeper/x.yml"),
            "apiVersion: v1\nkind: ConfigMap\n",
        )
        .expect("w");
        let doc = generate(tmp.path(), &dir).expect("generated");
        let resources: Vec<&str> = doc["resources"]
            .as_sequence()
            .expect("seq")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            resources,
            ["./apps.yaml", "./extra/deeper/x.yml", "./flux-system"]
        );
    }

    #[test]
    fn a_yaml_syntax_error_names_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("bad.yaml"), "apiVersion: v1\nkind: [unclosed\n").expect("w");
        let err = generate(tmp.path(), tmp.path()).expect_err("fails");
        assert!(
            err.to_string()
                .starts_with("failed to decode Kubernetes YAML from bad.yaml"),
            "{err}"
        );
    }

    #[test]
    fn overlay_sets_the_flux_fields() {
        let mut doc: Mapping = serde_yaml::from_str(
            "resources: [a.yaml]\nimages:\n- name: podinfo\n  newTag: '1'\n  digest: sha256:x\n",
        )
        .expect("yaml");
        let spec = KustomizationSpec {
            target_namespace: Some("apps".into()),
            name_prefix: Some("p-".into()),
            patches: vec![Patch {
                patch: "- op: add\n  path: /x\n  value: 1".into(),
                target: Some(Selector {
                    kind: Some("Deployment".into()),
                    ..Default::default()
                }),
            }],
            images: vec![
                Image {
                    name: "podinfo".into(),
                    new_tag: Some("2".into()),
                    ..Default::default()
                },
                Image {
                    name: "other".into(),
                    new_name: Some("o".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        overlay(&mut doc, &spec, Path::new("/")).expect("overlay");
        let text = serde_yaml::to_string(&doc).expect("yaml");
        assert_eq!(
            text,
            "resources:\n- a.yaml\nimages:\n- name: podinfo\n  newTag: '2'\n- name: other\n  newName: o\nnamespace: apps\nnamePrefix: p-\npatches:\n- patch: |-\n    - op: add\n      path: /x\n      value: 1\n  target:\n    kind: Deployment\n"
        );
    }
}
