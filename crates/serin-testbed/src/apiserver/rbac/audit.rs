//! The audit log of authorization decisions for identities other than the admin, and the
//! usage report that compares granted rules with what was used. [`Audit`] appends to a file.

use super::*;

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub user: String,
    pub groups: Vec<String>,
    #[serde(flatten)]
    pub attributes: Attributes,
    pub allowed: bool,
    #[serde(default)]
    pub reason: String,
}

/// Appends every decision for a non-admin identity to `<dir>/authz-<pid>-<port>.jsonl`, so
/// decisions gathered by many test processes can be read together.
#[derive(Debug)]
pub struct Audit {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

/// The environment variable naming the directory of audit logs.
pub const AUDIT_DIR_ENV: &str = "SERIN_TESTBED_AUDIT_DIR";

impl Audit {
    pub fn open(dir: &Path, port: u16) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("authz-{}-{port}.jsonl", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok(Self {
            path,
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn record(&self, user: &User, attrs: &Attributes, decision: &Decision) {
        if user.admin {
            return;
        }
        let record = AuditRecord {
            user: user.name.clone(),
            groups: user.groups.clone(),
            attributes: attrs.clone(),
            allowed: decision.allowed,
            reason: decision.reason.clone(),
        };
        let Ok(mut line) = serde_json::to_string(&record) else {
            return;
        };
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(err) = file.write_all(line.as_bytes()) {
            tracing::warn!(error = %err, path = %self.path.display(), "writing the audit log failed");
        }
    }
}

/// Reads every `*.jsonl` audit log in `dir`.
pub fn read_audit(dir: &Path) -> std::io::Result<Vec<AuditRecord>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            for line in std::fs::read_to_string(&path)?
                .lines()
                .filter(|l| !l.trim().is_empty())
            {
                match serde_json::from_str(line) {
                    Ok(r) => out.push(r),
                    Err(e) => {
                        return Err(std::io::Error::other(format!(
                            "{}: bad audit line {line:?}: {e}",
                            path.display()
                        )));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// What a role grants that an identity never used, and what it was denied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// One line per (rule, verb, group, resource, name) that no allowed request used.
    pub idle: Vec<String>,
    /// One line per distinct denied request.
    pub denied: Vec<String>,
    /// How many decisions were read for the identity.
    pub decisions: usize,
}

pub(super) fn grant_line(index: usize, verb: &str, group: &str, resource: &str, name: &str) -> String {
    let group = if group.is_empty() { "core" } else { group };
    if name.is_empty() {
        format!("rule {index}: {verb} {group}/{resource}")
    } else {
        format!("rule {index}: {verb} {group}/{resource} named {name:?}")
    }
}

/// Compares an identity's decisions with rules: every (verb, API group, resource, resource name
/// or non-resource URL) a rule lists must have been used by an allowed request, and no request
/// may have been denied. Wildcards count as used when anything matched them.
pub fn usage(rules: &[Rule], records: &[AuditRecord], user: &str) -> Usage {
    let mine: Vec<&AuditRecord> = records.iter().filter(|r| r.user == user).collect();
    let mut usage = Usage {
        decisions: mine.len(),
        ..Usage::default()
    };
    let denied: BTreeSet<String> = mine
        .iter()
        .filter(|r| !r.allowed)
        .map(|r| {
            let a = &r.attributes;
            if a.resource_request {
                let ns = if a.namespace.is_empty() {
                    String::new()
                } else {
                    format!(" in {}", a.namespace)
                };
                let name = if a.name.is_empty() {
                    String::new()
                } else {
                    format!(" {:?}", a.name)
                };
                format!(
                    "{} {}/{}{name}{ns}",
                    a.verb,
                    if a.api_group.is_empty() {
                        "core"
                    } else {
                        &a.api_group
                    },
                    a.combined_resource()
                )
            } else {
                format!("{} {}", a.verb, a.path)
            }
        })
        .collect();
    usage.denied = denied.into_iter().collect();
    let allowed: Vec<&Attributes> = mine.iter().filter(|r| r.allowed).map(|r| &r.attributes).collect();
    for (index, rule) in rules.iter().enumerate() {
        let narrowed = |verb: &str, f: &dyn Fn(&Rule) -> Rule| {
            let mut one = f(rule);
            one.verbs = vec![verb.to_owned()];
            allowed.iter().any(|a| one.allows(a))
        };
        for verb in &rule.verbs {
            if !rule.non_resource_urls.is_empty() {
                for url in &rule.non_resource_urls {
                    let used = narrowed(verb, &|r| Rule {
                        non_resource_urls: vec![url.clone()],
                        ..r.clone()
                    });
                    if !used {
                        usage.idle.push(format!("rule {index}: {verb} {url}"));
                    }
                }
                continue;
            }
            for group in &rule.api_groups {
                for resource in &rule.resources {
                    let names: Vec<String> = if rule.resource_names.is_empty() {
                        vec![String::new()]
                    } else {
                        rule.resource_names.clone()
                    };
                    for name in names {
                        let used = narrowed(verb, &|r| Rule {
                            api_groups: vec![group.clone()],
                            resources: vec![resource.clone()],
                            resource_names: if name.is_empty() {
                                Vec::new()
                            } else {
                                vec![name.clone()]
                            },
                            ..r.clone()
                        });
                        if !used {
                            usage.idle.push(grant_line(index, verb, group, resource, &name));
                        }
                    }
                }
            }
        }
    }
    usage
}
