//! What a HelmRelease's reconcile does next, as Flux's helm-controller decides it: from the
//! release Helm keeps (its latest revision) and what the spec asks (chart version and values),
//! with the failures counted so far: install, upgrade, remediate (uninstall a failed install,
//! roll back or uninstall a failed upgrade), stall once the retries are spent, or nothing. And
//! the release's values: `valuesFrom` merged in order, `targetPath`s, then `values`, and their
//! digest. Pure.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::helm::HelmReleaseSpec;

/// The release's latest revision in Helm's storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Latest {
    pub revision: i64,
    /// Helm's status: `deployed`, `failed`, `pending-install`, `uninstalled`, ...
    pub status: String,
    pub chart_version: String,
    /// The digest of the values it was released with.
    pub config_digest: String,
    /// The newest earlier revision that was deployed (a rollback target).
    pub previous_deployed: Option<i64>,
}

/// What the spec asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub chart_version: String,
    pub config_digest: String,
}

/// Failed attempts at the current desired state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Failures {
    pub install: i64,
    pub upgrade: i64,
}

/// The next step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Install,
    Upgrade,
    /// Remediate a failed upgrade: roll back to this revision.
    Rollback(i64),
    /// Remediate a failed install or upgrade: uninstall.
    Uninstall,
    /// The retries are spent: nothing until the spec, chart or values change.
    Stall(String),
    /// The release is as the spec asks.
    InSync,
}

/// How many attempts an action gets before it stalls (`retries` + 1; without end when
/// negative), and whether its last failure is remediated.
fn limits(retries: Option<i64>, remediate_last: Option<bool>, upgrade: bool) -> (Option<i64>, bool) {
    let retries = retries.unwrap_or(0);
    let attempts = (retries >= 0).then_some(retries + 1);
    // Flux: `remediateLastFailure` defaults to true when retries are set for upgrades.
    let remediate_last = remediate_last.unwrap_or(upgrade && retries > 0);
    (attempts, remediate_last)
}

/// The next step for a release.
pub fn plan(spec: &HelmReleaseSpec, latest: Option<&Latest>, desired: &Desired, failures: Failures) -> Step {
    let install = spec.install.as_ref().and_then(|i| i.remediation.as_ref());
    let upgrade = spec.upgrade.as_ref().and_then(|u| u.remediation.as_ref());
    let (install_attempts, install_remediate_last) = limits(
        install.and_then(|r| r.retries),
        install.and_then(|r| r.remediate_last_failure),
        false,
    );
    let (upgrade_attempts, upgrade_remediate_last) = limits(
        upgrade.and_then(|r| r.retries),
        upgrade.and_then(|r| r.remediate_last_failure),
        true,
    );
    let uninstall_strategy = upgrade
        .and_then(|r| r.strategy.as_deref())
        .is_some_and(|s| s == "uninstall");
    let spent = |failures: i64, attempts: Option<i64>| attempts.is_some_and(|a| failures >= a);
    let latest = match latest {
        None => {
            return if spent(failures.install, install_attempts) {
                Step::Stall(format!("Failed to install after {} attempt(s)", failures.install))
            } else {
                Step::Install
            };
        }
        Some(l) if l.status == "uninstalled" => {
            return if spent(failures.install, install_attempts) {
                Step::Stall(format!("Failed to install after {} attempt(s)", failures.install))
            } else {
                Step::Install
            };
        }
        Some(l) => l,
    };
    // A release left `pending-*` by an action that was killed midway holds Helm's lock: it is
    // remediated at once, whatever the counts.
    if latest.status.starts_with("pending") {
        return match latest.previous_deployed {
            Some(previous) => Step::Rollback(previous),
            None => Step::Uninstall,
        };
    }
    let failed = latest.status == "failed";
    if !failed {
        let in_sync =
            latest.chart_version == desired.chart_version && latest.config_digest == desired.config_digest;
        if in_sync {
            return Step::InSync;
        }
        // A rolled back release, its upgrade retries spent, waits for a change.
        return if spent(failures.upgrade, upgrade_attempts) {
            Step::Stall(format!("Failed to upgrade after {} attempt(s)", failures.upgrade))
        } else {
            Step::Upgrade
        };
    }
    match latest.previous_deployed {
        // A failed install: uninstalled to try again, or (the last attempt) when asked.
        None => {
            if failures.install == 0 {
                // Not a failure of this desired state (the spec changed since): try again.
                return Step::Uninstall;
            }
            if !spent(failures.install, install_attempts) || install_remediate_last {
                return Step::Uninstall;
            }
            Step::Stall(format!("Failed to install after {} attempt(s)", failures.install))
        }
        // A failed upgrade: rolled back (or uninstalled) to try again, or (the last attempt)
        // when asked.
        Some(previous) => {
            if failures.upgrade == 0 {
                return Step::Upgrade;
            }
            let last = spent(failures.upgrade, upgrade_attempts);
            if !last || upgrade_remediate_last {
                return if uninstall_strategy {
                    Step::Uninstall
                } else {
                    Step::Rollback(previous)
                };
            }
            Step::Stall(format!("Failed to upgrade after {} attempt(s)", failures.upgrade))
        }
    }
}

/// Deep-merges `overlay` into `base`: maps merge key by key, anything else is replaced.
pub fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Sets `value` at a `--set` path (`a.b.c`, `list[0].name`, `a\.b` for a key with a dot),
/// parsed as `--set` parses it (`true`, `false`, `null` and integers are typed, anything else a
/// string); `literal` keeps it a string (`--set-literal`).
pub fn set_path(values: &mut Value, path: &str, raw: &str, literal: bool) -> Result<(), String> {
    let value = if literal {
        Value::String(raw.to_owned())
    } else {
        match raw {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            "null" => Value::Null,
            _ => raw
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::String(raw.to_owned())),
        }
    };
    let mut keys = Vec::new();
    let mut current = String::new();
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            '.' => keys.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    keys.push(current);
    if keys.iter().any(String::is_empty) {
        return Err(format!("invalid targetPath '{path}'"));
    }
    let mut node = values;
    let last = keys.len() - 1;
    for (i, key) in keys.iter().enumerate() {
        let (name, index) = match key.strip_suffix(']').and_then(|k| k.split_once('[')) {
            Some((name, idx)) => (
                name,
                Some(
                    idx.parse::<usize>()
                        .map_err(|_| format!("invalid index in targetPath '{path}'"))?,
                ),
            ),
            None => (key.as_str(), None),
        };
        if !node.is_object() {
            *node = Value::Object(Default::default());
        }
        let map = node.as_object_mut().expect("an object");
        let entry = map.entry(name.to_owned()).or_insert(Value::Null);
        let slot = match index {
            Some(idx) => {
                if !entry.is_array() {
                    *entry = Value::Array(Vec::new());
                }
                let list = entry.as_array_mut().expect("an array");
                if list.len() <= idx {
                    list.resize(idx + 1, Value::Null);
                }
                &mut list[idx]
            }
            None => entry,
        };
        if i == last {
            *slot = value.clone();
            return Ok(());
        }
        node = slot;
    }
    Ok(())
}

/// `sha256:<hex>` of the values as canonical JSON (keys sorted).
pub fn digest(values: &Value) -> String {
    fn canonical(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: std::collections::BTreeMap<&String, Value> =
                    m.iter().map(|(k, v)| (k, canonical(v))).collect();
                serde_json::to_value(sorted).unwrap_or_default()
            }
            Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
            other => other.clone(),
        }
    }
    let text = serde_json::to_string(&canonical(values)).unwrap_or_default();
    format!("sha256:{:x}", Sha256::digest(text.as_bytes()))
}

/// The release's name: `releaseName`, else `[targetNamespace-]name`; above 53 characters the
/// first 40, a dash and 12 hex characters of its SHA-256, as Flux shortens it.
pub fn release_name(spec: &HelmReleaseSpec, name: &str) -> String {
    let full = match (&spec.release_name, &spec.target_namespace) {
        (Some(r), _) if !r.is_empty() => r.clone(),
        (_, Some(t)) if !t.is_empty() => format!("{t}-{name}"),
        _ => name.to_owned(),
    };
    if full.len() <= 53 {
        return full;
    }
    let hash = format!("{:x}", Sha256::digest(full.as_bytes()));
    format!("{}-{}", &full[..40], &hash[..12])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::helm::{Install, Remediation, Upgrade};

    fn latest(status: &str, version: &str, previous: Option<i64>) -> Latest {
        Latest {
            revision: 2,
            status: status.into(),
            chart_version: version.into(),
            config_digest: "d1".into(),
            previous_deployed: previous,
        }
    }

    fn desired(version: &str) -> Desired {
        Desired {
            chart_version: version.into(),
            config_digest: "d1".into(),
        }
    }

    fn with_retries(install: i64, upgrade: i64) -> HelmReleaseSpec {
        HelmReleaseSpec {
            install: Some(Install {
                remediation: Some(Remediation {
                    retries: Some(install),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            upgrade: Some(Upgrade {
                remediation: Some(Remediation {
                    retries: Some(upgrade),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_missing_release_is_installed_and_one_out_of_sync_upgraded() {
        let spec = HelmReleaseSpec::default();
        let none = Failures::default();
        assert_eq!(plan(&spec, None, &desired("1.0.0"), none), Step::Install);
        let deployed = latest("deployed", "1.0.0", Some(1));
        assert_eq!(
            plan(&spec, Some(&deployed), &desired("1.0.0"), none),
            Step::InSync
        );
        assert_eq!(
            plan(&spec, Some(&deployed), &desired("1.1.0"), none),
            Step::Upgrade
        );
        let mut other_values = desired("1.0.0");
        other_values.config_digest = "d2".into();
        assert_eq!(plan(&spec, Some(&deployed), &other_values, none), Step::Upgrade);
        let uninstalled = latest("uninstalled", "1.0.0", None);
        assert_eq!(
            plan(&spec, Some(&uninstalled), &desired("1.0.0"), none),
            Step::Install
        );
    }

    #[test]
    fn a_failed_upgrade_is_rolled_back_while_retries_remain_then_stalls() {
        let spec = with_retries(0, 2);
        let failed = latest("failed", "1.1.0", Some(1));
        let want = desired("1.1.0");
        let f = |upgrade| Failures { install: 0, upgrade };
        assert_eq!(plan(&spec, Some(&failed), &want, f(1)), Step::Rollback(1));
        // Rolled back to 1.0.0: upgrade again.
        let rolled_back = latest("deployed", "1.0.0", Some(2));
        assert_eq!(plan(&spec, Some(&rolled_back), &want, f(1)), Step::Upgrade);
        assert_eq!(plan(&spec, Some(&rolled_back), &want, f(2)), Step::Upgrade);
        // The third failure spends the retries: remediated (retries set), then stalled.
        assert_eq!(plan(&spec, Some(&failed), &want, f(3)), Step::Rollback(1));
        assert_eq!(
            plan(&spec, Some(&rolled_back), &want, f(3)),
            Step::Stall("Failed to upgrade after 3 attempt(s)".into())
        );
    }

    #[test]
    fn by_default_a_failed_upgrade_stalls_where_it_failed() {
        let spec = HelmReleaseSpec::default();
        let failed = latest("failed", "1.1.0", Some(1));
        let f = Failures {
            install: 0,
            upgrade: 1,
        };
        assert_eq!(
            plan(&spec, Some(&failed), &desired("1.1.0"), f),
            Step::Stall("Failed to upgrade after 1 attempt(s)".into())
        );
        // A new desired state (the counters reset) upgrades again.
        assert_eq!(
            plan(&spec, Some(&failed), &desired("1.2.0"), Failures::default()),
            Step::Upgrade
        );
        let mut uninstall = with_retries(0, 1);
        uninstall
            .upgrade
            .as_mut()
            .and_then(|u| u.remediation.as_mut())
            .expect("remediation")
            .strategy = Some("uninstall".into());
        assert_eq!(
            plan(&uninstall, Some(&failed), &desired("1.1.0"), f),
            Step::Uninstall
        );
    }

    #[test]
    fn a_failed_install_is_uninstalled_and_tried_again_while_retries_remain() {
        let spec = with_retries(1, 0);
        let failed = latest("failed", "1.0.0", None);
        let f = |install| Failures { install, upgrade: 0 };
        assert_eq!(
            plan(&spec, Some(&failed), &desired("1.0.0"), f(1)),
            Step::Uninstall
        );
        assert_eq!(plan(&spec, None, &desired("1.0.0"), f(1)), Step::Install);
        assert_eq!(
            plan(&spec, Some(&failed), &desired("1.0.0"), f(2)),
            Step::Stall("Failed to install after 2 attempt(s)".into())
        );
        assert_eq!(
            plan(&spec, None, &desired("1.0.0"), f(2)),
            Step::Stall("Failed to install after 2 attempt(s)".into())
        );
        // A stale lock left by a crash is cleared first.
        let pending = latest("pending-install", "1.0.0", None);
        assert_eq!(
            plan(&spec, Some(&pending), &desired("1.0.0"), f(0)),
            Step::Uninstall
        );
        let pending = latest("pending-upgrade", "1.1.0", Some(1));
        assert_eq!(
            plan(&spec, Some(&pending), &desired("1.1.0"), f(0)),
            Step::Rollback(1)
        );
    }

    #[test]
    fn values_merge_in_order_with_target_paths() {
        let mut values = json!({"image": {"tag": "1", "pullPolicy": "Always"}, "list": [1, 2]});
        merge(&mut values, json!({"image": {"tag": "2"}, "list": [3]}));
        assert_eq!(
            values,
            json!({"image": {"tag": "2", "pullPolicy": "Always"}, "list": [3]})
        );
        set_path(&mut values, "ingress.enabled", "true", false).expect("path");
        set_path(&mut values, "replicas", "3", false).expect("path");
        set_path(&mut values, "hosts[1].name", "b", false).expect("path");
        set_path(&mut values, "annotations.a\\.b/c", "007", true).expect("path");
        assert_eq!(values["ingress"]["enabled"], json!(true));
        assert_eq!(values["replicas"], json!(3));
        assert_eq!(values["hosts"], json!([null, {"name": "b"}]));
        assert_eq!(values["annotations"]["a.b/c"], json!("007"));
        assert!(set_path(&mut values, "a..b", "1", false).is_err());
        assert_eq!(digest(&json!({"b": 1, "a": 2})), digest(&json!({"a": 2, "b": 1})));
        assert_ne!(digest(&json!({"a": 1})), digest(&json!({"a": 2})));
    }

    #[test]
    fn release_names_follow_flux() {
        let mut spec = HelmReleaseSpec::default();
        assert_eq!(release_name(&spec, "podinfo"), "podinfo");
        spec.target_namespace = Some("apps".into());
        assert_eq!(release_name(&spec, "podinfo"), "apps-podinfo");
        spec.release_name = Some("web".into());
        assert_eq!(release_name(&spec, "podinfo"), "web");
        spec.release_name = None;
        spec.target_namespace = Some("a-very-long-namespace-name-for-the-release".into());
        let long = release_name(&spec, "and-a-long-helmrelease-name");
        assert_eq!(long.len(), 53);
        assert!(long.starts_with("a-very-long-namespace-name-for-the-relea-"));
    }
}
