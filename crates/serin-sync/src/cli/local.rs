//! `serin-sync build|diff kustomization NAME --path DIR`: builds a local directory exactly as
//! the controller builds the Kustomization's path (generator, Flux overlays, substitution with
//! variables read from the cluster, ownership labels), then prints the YAML, or compares it with
//! the cluster through server-side dry-runs (exit 0 no diff, 1 diff, >1 error). Does I/O.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use kube::Api;
use serde_json::Value;

use super::{CliError, ClusterArgs};
use crate::{
    api::Kustomization,
    apply::{
        manager::{Action, ApplyOptions, ResourceManager},
        order::{self, ObjectId},
    },
    build,
    controller::kustomization as reconciler,
};

#[derive(Args, Debug)]
pub struct LocalArgs {
    #[command(subcommand)]
    pub what: LocalWhat,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Subcommand, Debug)]
pub enum LocalWhat {
    /// A Kustomization.
    #[command(alias = "ks")]
    Kustomization {
        name: String,
        /// The local directory that stands for the Kustomization's path.
        #[arg(long)]
        path: PathBuf,
        /// Do not read substitution variables from the cluster.
        #[arg(long)]
        dry_run: bool,
    },
}

/// The local directory's repository root (its Git work tree, else itself) and its path there.
fn locate(dir: &Path) -> anyhow::Result<(PathBuf, String)> {
    let dir = dir
        .canonicalize()
        .map_err(|e| CliError(format!("invalid resource path '{}': {e}", dir.display())))?;
    let top = std::process::Command::new("git")
        .args(["rev-parse", "--show-toplevel"])
        .current_dir(&dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let root = top.unwrap_or_else(|| dir.clone());
    let rel = dir
        .strip_prefix(&root)
        .unwrap_or(Path::new(""))
        .display()
        .to_string();
    Ok((root, rel))
}

/// The objects the Kustomization would apply from `dir`.
async fn build_local(
    client: &kube::Client,
    ks: &Kustomization,
    dir: &Path,
    dry_run: bool,
) -> anyhow::Result<Vec<Value>> {
    let (root, rel) = locate(dir)?;
    let mut spec = ks.spec.clone();
    spec.path = Some(rel);
    let vars = if dry_run {
        spec.post_build.as_ref().map(|pb| build::PostBuildVars {
            vars: pb.substitute.clone(),
            always: pb.substitute_strategy.as_deref() == Some("Always"),
            strict: true,
        })
    } else {
        reconciler::substitution_vars(ks, client)
            .await
            .map_err(CliError)?
    };
    let built = build::build(&root, &spec, vars.as_ref())
        .await
        .map_err(|e| CliError(e.to_string()))?;
    Ok(reconciler::desired_objects(ks, built.objects))
}

/// The objects as a YAML stream, as `flux build` prints them.
pub fn to_yaml(objects: &[Value]) -> anyhow::Result<String> {
    let docs = objects
        .iter()
        .map(serde_yaml::to_string)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(docs.join("---\n"))
}

/// Runs `build` (returns 0) or `diff` (returns 0 or 1); errors exit with 2.
pub async fn run(args: &LocalArgs, diff: bool) -> anyhow::Result<u8> {
    let LocalWhat::Kustomization { name, path, dry_run } = &args.what;
    let client = args.cluster.client().await?;
    let api: Api<Kustomization> = Api::namespaced(client.clone(), &args.cluster.namespace);
    let ks = api
        .get(name)
        .await
        .map_err(|e| CliError(crate::controller::api_message(&e)))?;
    let objects = build_local(&client, &ks, path, *dry_run).await?;
    if !diff {
        print!("{}", to_yaml(&objects)?);
        return Ok(0);
    }
    let options = ApplyOptions {
        ignore: ks.spec.ignore.clone(),
        canary_targets: reconciler::canary_targets(&client).await,
        ..Default::default()
    };
    let mut rm = ResourceManager::new(client.clone());
    let mut differs = false;
    let mut built_ids = Vec::new();
    let mut sorted = objects;
    sorted.sort_by(|a, b| order::reconcile_order(&ObjectId::of(a), &ObjectId::of(b)));
    for object in sorted {
        let (change, drift) = rm.diff_one(object, &options).await.map_err(CliError)?;
        built_ids.push(change.id.clone());
        match change.action {
            Action::Created => {
                differs = true;
                println!("► {} created", change.id.subject());
            }
            Action::Configured => {
                differs = true;
                println!("► {} drifted", change.id.subject());
                if let Some((live, dry_run)) = drift {
                    print!("{}", structured_diff(&mask_secret(live), &mask_secret(dry_run)));
                }
            }
            Action::Skipped => println!("► {} skipped", change.id.subject()),
            Action::Unchanged | Action::Deleted => {}
        }
    }
    let old = ks
        .status
        .and_then(|s| s.inventory)
        .map(|i| i.entries)
        .unwrap_or_default();
    for stale in order::stale(&old, &order::inventory(&built_ids)) {
        differs = true;
        println!("► {} deleted", stale.subject());
    }
    Ok(u8::from(differs))
}

/// A Secret with every value of `data` and `stringData` replaced by a mask that still shows
/// whether it changed (a short digest), as Flux masks Secrets in diffs.
pub fn mask_secret(mut object: Value) -> Value {
    use sha2::{Digest, Sha256};
    if object["kind"] != "Secret" || object["apiVersion"] != "v1" {
        return object;
    }
    for field in ["data", "stringData"] {
        if let Some(map) = object[field].as_object_mut() {
            for value in map.values_mut() {
                let digest = format!("{:x}", Sha256::digest(value.to_string().as_bytes()));
                *value = Value::String(format!("*** (sha256 {})", &digest[..8]));
            }
        }
    }
    if let Some(annotations) = object["metadata"]["annotations"].as_object_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    object
}

/// A dyff-like listing of the paths whose values differ between the cluster and the build.
pub fn structured_diff(live: &Value, desired: &Value) -> String {
    let clean = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("status");
        }
        if let Some(meta) = v["metadata"].as_object_mut() {
            for k in [
                "managedFields",
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "generation",
            ] {
                meta.remove(k);
            }
        }
        v
    };
    let mut out = String::new();
    walk(&clean(live), &clean(desired), &mut Vec::new(), &mut out);
    out
}

fn walk(a: &Value, b: &Value, path: &mut Vec<String>, out: &mut String) {
    if a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                path.push(k.clone());
                walk(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    path,
                    out,
                );
                path.pop();
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                let key = q["name"].as_str().map_or_else(|| i.to_string(), str::to_owned);
                path.push(key);
                walk(p, q, path, out);
                path.pop();
            }
        }
        _ => {
            let show = |v: &Value| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!("{}\n", path.join(".")));
            match (a, b) {
                (Value::Null, _) => out.push_str(&format!("  + {}\n", show(b))),
                (_, Value::Null) => out.push_str(&format!("  - {}\n", show(a))),
                _ => out.push_str(&format!(
                    "  ± value change\n    - {}\n    + {}\n",
                    show(a),
                    show(b)
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secret_values_are_masked() {
        let live = json!({"apiVersion": "v1", "kind": "Secret", "data": {"password": "b2xk"}});
        let desired = json!({"apiVersion": "v1", "kind": "Secret", "data": {"password": "bmV3"}});
        let out = structured_diff(&mask_secret(live), &mask_secret(desired));
        assert!(
            out.starts_with("data.password\n  ± value change\n    - *** (sha256 "),
            "{out}"
        );
        assert!(!out.contains("b2xk") && !out.contains("bmV3"), "{out}");
    }

    #[test]
    fn diffs_name_the_changed_paths() {
        let live = json!({"metadata": {"name": "a", "resourceVersion": "3"}, "spec": {"template": {"spec": {"containers": [{"name": "podinfod", "image": "x:2"}]}}, "paused": true}});
        let desired = json!({"metadata": {"name": "a", "resourceVersion": "3"}, "spec": {"template": {"spec": {"containers": [{"name": "podinfod", "image": "x:1"}]}}, "minReadySeconds": 3}});
        assert_eq!(
            structured_diff(&live, &desired),
            "spec.minReadySeconds\n  + 3\nspec.paused\n  - true\nspec.template.spec.containers.podinfod.image\n  ± value change\n    - x:2\n    + x:1\n"
        );
    }
}
