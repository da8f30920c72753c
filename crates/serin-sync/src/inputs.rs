//! The entry points that read untrusted input, each taking the raw text as it arrives:
//! Kustomization and GitRepository documents (decoding, the unsupported-field checks, durations
//! and timeouts, the spec's build fields written over a kustomization and checked by the
//! fence), a repository's kustomization files through the fence, kustomize's output through
//! `postBuild` substitution, `.sourceignore` patterns, HelmRelease documents (with their values
//! paths) and Helm repository indexes with version ranges. `fuzz/` feeds them to libFuzzer and
//! `tests/inputs.rs` drives them with generated cases; both check that no input panics. Pure:
//! paths resolve against an artifact root that does not exist, so nothing is read.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use crate::{
    api::{GitRepository, Kustomization},
    build::{self, PostBuildVars, fence, generator},
    controller::status,
    source::ignore::Matcher,
};

/// The artifact root the fence checks paths against: it does not exist, so symlinks never
/// resolve and every path is judged lexically.
const ROOT: &str = "/nonexistent/serin-sync/artifact";

/// A Kustomization document: decoded, checked for unsupported fields, its interval and timeout
/// parsed, and its build fields (`images`, `patches`, `components`, ...) written over an empty
/// kustomization that the fence then checks. `Err` names the field or position.
pub fn kustomization_document(text: &str) -> Result<(), String> {
    let ks: Kustomization = serin_runtime::yaml::from_str(text)?;
    if let Some(why) = status::unsupported_kustomization_field(&ks.spec) {
        return Err(why);
    }
    status::parse_duration(&ks.spec.interval).map_err(|e| format!("spec.interval: {e}"))?;
    if let Some(timeout) = &ks.spec.timeout {
        status::parse_duration(timeout).map_err(|e| format!("spec.timeout: {e}"))?;
    }
    let _ = status::kustomization_timeout(&ks.spec);
    let root = Path::new(ROOT);
    let mut doc = serde_yaml::Mapping::new();
    generator::overlay(&mut doc, &ks.spec, root).map_err(|e| e.to_string())?;
    let written = serde_yaml::to_string(&doc).map_err(|e| e.to_string())?;
    kustomization_text(&written).map(drop)
}

/// A repository's kustomization file, through the fence: the paths its `resources`,
/// `components` and `bases` lead to, or the reference that leaves the artifact.
pub fn kustomization_file(text: &str) -> Result<Vec<PathBuf>, String> {
    kustomization_text(text)
}

fn kustomization_text(text: &str) -> Result<Vec<PathBuf>, String> {
    let root = Path::new(ROOT);
    let dir = root.join("apps");
    fence::check_text(
        root,
        &dir,
        &dir.join("kustomization.yaml"),
        text,
        &BTreeSet::new(),
    )
}

/// A GitRepository document: decoded, checked for unsupported fields, its interval parsed and
/// its `spec.ignore` patterns matched against a few paths.
pub fn git_repository_document(text: &str) -> Result<(), String> {
    let repo: GitRepository = serin_runtime::yaml::from_str(text)?;
    if let Some(why) = status::unsupported_source_field(&repo.spec) {
        return Err(why);
    }
    status::parse_duration(&repo.spec.interval).map_err(|e| format!("spec.interval: {e}"))?;
    if let Some(ignore) = &repo.spec.ignore {
        source_ignore(ignore);
    }
    Ok(())
}

/// `.sourceignore` (or `spec.ignore`) patterns, at the root and in a subdirectory, matched
/// against files and directories; how many of the probes they ignore.
pub fn source_ignore(text: &str) -> usize {
    let matcher = Matcher::flux(&[
        (Vec::new(), text.to_owned()),
        (vec!["apps".into()], text.to_owned()),
    ]);
    let probes: [(&[&str], bool); 4] = [
        (&["apps", "a.yaml"], false),
        (&["apps"], true),
        (&["apps", "base", "kustomization.yaml"], false),
        (&[".git"], true),
    ];
    probes
        .iter()
        .filter(|(path, is_dir)| {
            let path: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
            matcher.is_ignored(&path, *is_dir)
        })
        .count()
}

/// kustomize's output as serin-sync reads it: decoded into objects, and substituted with
/// `postBuild` variables (strict and not); how many objects came out.
pub fn built_objects(text: &str) -> Result<usize, String> {
    let vars = BTreeMap::from([
        ("cluster".to_owned(), "prod".to_owned()),
        ("replicas".to_owned(), "3".to_owned()),
    ]);
    let mut count = 0;
    for strict in [false, true] {
        let post_build = PostBuildVars {
            vars: vars.clone(),
            always: true,
            strict,
        };
        count = build::finish(text, Some(&post_build))
            .map_err(|e| e.to_string())?
            .objects
            .len();
    }
    Ok(count)
}

/// A HelmRelease document: decoded, checked for unsupported fields, its durations parsed, its
/// release name made, and each `valuesFrom[].targetPath` set in its `values`, whose digest is
/// taken. `Err` names the field or position.
pub fn helm_release_document(text: &str) -> Result<(), String> {
    use crate::controller::helm_release::{plan, unsupported_field};
    let mut hr: crate::api::HelmRelease = serin_runtime::yaml::from_str(text)?;
    hr.metadata.namespace.get_or_insert_with(|| "default".into());
    if let Some(why) = unsupported_field(&hr) {
        return Err(why);
    }
    status::parse_duration(&hr.spec.interval).map_err(|e| format!("spec.interval: {e}"))?;
    if let Some(timeout) = &hr.spec.timeout {
        status::parse_duration(timeout).map_err(|e| format!("spec.timeout: {e}"))?;
    }
    let _ = plan::release_name(&hr.spec, hr.metadata.name.as_deref().unwrap_or_default());
    let mut values = hr.spec.values.clone().unwrap_or_else(|| serde_json::json!({}));
    for (i, from) in hr.spec.values_from.iter().enumerate() {
        if let Some(path) = &from.target_path {
            plan::set_path(&mut values, path, "1", false)
                .map_err(|e| format!("spec.valuesFrom[{i}].targetPath: {e}"))?;
        }
    }
    let _ = plan::digest(&values);
    Ok(())
}

/// A notification document: a Provider (its request for an event), an Alert (whether it takes
/// an event, and the event it sends) or a Receiver (a call checked against it). `Err` names the
/// field or position.
pub fn notification_document(text: &str) -> Result<(), String> {
    use std::collections::BTreeMap;

    use crate::{
        api::{Alert, Provider, Receiver},
        notify,
    };
    let kind: serde_json::Value = serin_runtime::yaml::from_str(text)?;
    let event = notify::Event {
        involved_object: notify::InvolvedObject {
            kind: "HelmRelease".into(),
            namespace: "apps".into(),
            name: "demo".into(),
            ..Default::default()
        },
        severity: "error".into(),
        message: "Helm upgrade failed".into(),
        reason: "UpgradeFailed".into(),
        reporting_controller: "helm-controller".into(),
        ..Default::default()
    };
    match kind["kind"].as_str() {
        Some("Alert") => {
            let alert: Alert = serin_runtime::yaml::from_str(text)?;
            let labels = BTreeMap::from([("team".to_owned(), "web".to_owned())]);
            let _ = notify::alert_rejects(&alert, &event, Some(&labels));
            let _ = notify::for_alert(&alert, &event);
        }
        Some("Provider") => {
            let provider: Provider = serin_runtime::yaml::from_str(text)?;
            let address = provider
                .spec
                .address
                .clone()
                .unwrap_or_else(|| "http://hooks".into());
            notify::request(&provider.spec, &address, Some("token"), &BTreeMap::new(), &event)
                .map_err(|e| format!("spec.type: {e}"))?;
        }
        Some("Receiver") => {
            let receiver: Receiver = serin_runtime::yaml::from_str(text)?;
            let headers = BTreeMap::from([
                (
                    "x-signature".to_owned(),
                    format!("sha256={}", notify::hmac_sha256("token", text.as_bytes())),
                ),
                ("x-github-event".to_owned(), "push".to_owned()),
            ]);
            let _ = notify::verify(
                &receiver.spec.type_,
                &receiver.spec.events,
                "token",
                &headers,
                text.as_bytes(),
            );
            let _ = notify::webhook_path(
                "token",
                receiver.metadata.name.as_deref().unwrap_or_default(),
                "apps",
            );
        }
        _ => return Err("`kind`: Provider, Alert or Receiver".into()),
    }
    Ok(())
}

/// A Helm repository index: parsed, and for each of its charts the version `range` selects.
pub fn helm_index(text: &str, range: &str) -> Result<Vec<String>, String> {
    let index = crate::source::helm_index::Index::parse(text.as_bytes())?;
    Ok(index
        .entries
        .keys()
        .filter_map(|chart| index.select(chart, Some(range)).ok().map(|v| v.version.clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_references_name_the_field() {
        let err = kustomization_file("configMapGenerator:\n- name: x\n  files: [../../etc/passwd]\n")
            .expect_err("escapes");
        assert!(err.contains("configMapGenerator[0].files[0]"), "{err}");
        let err = kustomization_document(
            "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: x}\nspec:\n  interval: 99999999999999999999m\n  path: ./\n  prune: true\n  sourceRef: {kind: GitRepository, name: x}\n",
        )
        .expect_err("overflows");
        assert!(err.starts_with("spec.interval:"), "{err}");
        assert_eq!(
            kustomization_file("resources: [base, ../other]\n").map(|p| p.len()),
            Ok(2),
            "../other leaves apps/ but stays in the artifact"
        );
        assert!(kustomization_file("resources: [../../other]\n").is_err());
    }

    #[test]
    fn substitution_reaches_the_objects() {
        let n =
            built_objects("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata:\n  c: ${cluster}\n");
        assert_eq!(n, Ok(1));
        assert!(
            built_objects("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata:\n  c: ${missing}\n")
                .is_err()
        );
        assert!(source_ignore("*.yaml\n") >= source_ignore("") + 2);
    }
}
