//! Which Git reference a GitRepository asks for, and the revision strings Flux writes
//! (`main@sha1:<hex>`, `v1.2.3@sha1:<hex>`, `refs/pull/1/head@sha1:<hex>`, `sha1:<hex>`). Pure.

use crate::api::GitRepositoryRef;

/// The branch Flux checks out when the GitRepository names no reference.
pub const DEFAULT_BRANCH: &str = "master";

/// The reference to resolve, by Flux's precedence: commit > name > semver > tag > branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checkout {
    /// A commit SHA, optionally looked up on a branch.
    Commit {
        sha: String,
        branch: Option<String>,
    },
    /// An absolute reference such as `refs/pull/420/head`.
    Name(String),
    /// The highest tag matching a semver constraint.
    SemVer(String),
    Tag(String),
    Branch(String),
}

impl Checkout {
    /// The checkout a GitRepository's `spec.ref` asks for.
    pub fn from_ref(reference: Option<&GitRepositoryRef>) -> Self {
        let r = reference.cloned().unwrap_or_default();
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        if let Some(sha) = non_empty(r.commit) {
            return Self::Commit {
                sha,
                branch: non_empty(r.branch),
            };
        }
        if let Some(name) = non_empty(r.name) {
            return Self::Name(name);
        }
        if let Some(semver) = non_empty(r.semver) {
            return Self::SemVer(semver);
        }
        if let Some(tag) = non_empty(r.tag) {
            return Self::Tag(tag);
        }
        Self::Branch(non_empty(r.branch).unwrap_or_else(|| DEFAULT_BRANCH.to_owned()))
    }

    /// The full reference name on the remote, where one is known before listing.
    pub fn remote_ref(&self) -> Option<String> {
        match self {
            Self::Branch(b) => Some(format!("refs/heads/{b}")),
            Self::Tag(t) => Some(format!("refs/tags/{t}")),
            Self::Name(n) => Some(n.clone()),
            Self::Commit { .. } | Self::SemVer(_) => None,
        }
    }
}

/// Flux's revision string for a commit checked out at `reference` (a full ref name, or `None`
/// for a commit-only checkout). `absolute` keeps the whole reference (for `spec.ref.name`).
pub fn revision(reference: Option<&str>, sha: &str, absolute: bool) -> String {
    let digest = format!("sha1:{sha}");
    match reference {
        Some(r) if absolute => format!("{r}@{digest}"),
        Some(r) => {
            let parts: Vec<&str> = r.splitn(3, '/').collect();
            if parts.len() == 3 {
                format!("{}@{digest}", parts[2])
            } else {
                digest
            }
        }
        None => digest,
    }
}

/// The commit hash part of a revision (`main@sha1:abc` → `abc`).
pub fn commit_of(revision: &str) -> &str {
    let digest = revision.rsplit_once('@').map_or(revision, |(_, d)| d);
    digest.split_once(':').map_or(digest, |(_, h)| h)
}

/// Shortens every run of 40 to 128 hex characters to its first 8, as `flux get` prints.
pub fn shorten_hashes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if (40..=128).contains(&run.len()) {
            out.push_str(&run[..8]);
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// The highest version among `tags` that matches a semver constraint such as `>=1.0.0 <2.0.0`,
/// `~1.2`, `^1`, `1.2.x` or `*`. Tags may carry a leading `v`.
pub fn highest_matching_tag<'a>(constraint: &str, tags: &[&'a str]) -> Option<&'a str> {
    let constraint = normalize_constraint(constraint);
    let req = semver::VersionReq::parse(&constraint).ok()?;
    tags.iter()
        .filter_map(|t| {
            let v = semver::Version::parse(t.trim_start_matches('v')).ok()?;
            req.matches(&v).then_some((v, *t))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, t)| t)
}

/// Masterminds constraints separate ANDed terms with spaces; Rust's semver with commas.
fn normalize_constraint(constraint: &str) -> String {
    let mut terms: Vec<String> = Vec::new();
    for token in constraint.split_whitespace() {
        match terms.last_mut() {
            Some(last) if matches!(last.as_str(), ">" | ">=" | "<" | "<=" | "=" | "~" | "^") => {
                last.push_str(token);
            }
            _ => terms.push(token.trim_end_matches(',').to_owned()),
        }
    }
    terms.join(", ")
}

/// Whether `text` is a valid semver constraint.
pub fn is_valid_constraint(constraint: &str) -> bool {
    semver::VersionReq::parse(&normalize_constraint(constraint)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "450796ddb2ab6724ee1cc32a4be56da032d1cca0";

    #[test]
    fn precedence_follows_flux() {
        let all = GitRepositoryRef {
            branch: Some("main".into()),
            tag: Some("v1".into()),
            semver: Some("1.x".into()),
            name: Some("refs/pull/1/head".into()),
            commit: Some(SHA.into()),
        };
        assert_eq!(
            Checkout::from_ref(Some(&all)),
            Checkout::Commit {
                sha: SHA.into(),
                branch: Some("main".into())
            }
        );
        let no_commit = GitRepositoryRef {
            commit: None,
            ..all.clone()
        };
        assert_eq!(
            Checkout::from_ref(Some(&no_commit)),
            Checkout::Name("refs/pull/1/head".into())
        );
        let no_name = GitRepositoryRef {
            name: None,
            ..no_commit
        };
        assert_eq!(Checkout::from_ref(Some(&no_name)), Checkout::SemVer("1.x".into()));
        let no_semver = GitRepositoryRef {
            semver: None,
            ..no_name
        };
        assert_eq!(Checkout::from_ref(Some(&no_semver)), Checkout::Tag("v1".into()));
        let branch_only = GitRepositoryRef {
            tag: None,
            ..no_semver
        };
        assert_eq!(
            Checkout::from_ref(Some(&branch_only)),
            Checkout::Branch("main".into())
        );
        assert_eq!(Checkout::from_ref(None), Checkout::Branch("master".into()));
    }

    #[test]
    fn revisions_are_written_as_flux_writes_them() {
        assert_eq!(
            revision(Some("refs/heads/main"), SHA, false),
            format!("main@sha1:{SHA}")
        );
        assert_eq!(
            revision(Some("refs/heads/feature/x"), SHA, false),
            format!("feature/x@sha1:{SHA}")
        );
        assert_eq!(
            revision(Some("refs/tags/v1.2.3"), SHA, false),
            format!("v1.2.3@sha1:{SHA}")
        );
        assert_eq!(
            revision(Some("refs/pull/420/head"), SHA, true),
            format!("refs/pull/420/head@sha1:{SHA}")
        );
        assert_eq!(revision(None, SHA, false), format!("sha1:{SHA}"));
        assert_eq!(commit_of(&format!("main@sha1:{SHA}")), SHA);
        assert_eq!(commit_of(&format!("sha1:{SHA}")), SHA);
    }

    #[test]
    fn hashes_are_shortened_for_tables() {
        assert_eq!(
            shorten_hashes(&format!("Applied revision: main@sha1:{SHA}")),
            "Applied revision: main@sha1:450796dd"
        );
        assert_eq!(shorten_hashes("v1.2.3 abc"), "v1.2.3 abc");
    }

    #[test]
    fn semver_picks_the_highest_match() {
        let tags = ["v1.0.0", "v1.2.0", "1.3.0-rc.1", "v2.0.0", "latest"];
        assert_eq!(highest_matching_tag(">=1.0.0 <2.0.0", &tags), Some("v1.2.0"));
        assert_eq!(highest_matching_tag("*", &tags), Some("v2.0.0"));
        assert_eq!(highest_matching_tag("~1.0", &tags), Some("v1.0.0"));
        assert_eq!(highest_matching_tag(">=3", &tags), None);
        assert!(!is_valid_constraint("not a version"));
    }
}
