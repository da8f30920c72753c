//! `.sourceignore` and `spec.ignore` matching with gitignore semantics, and the default
//! exclusions Flux uses when no pattern is given. Pure.

use regex::Regex;

/// Always excluded: version-control files.
pub const VCS_PATTERNS: &[&str] = &[".git/", ".gitignore", ".gitmodules", ".gitattributes"];
/// Excluded only when no `.sourceignore` or `spec.ignore` pattern exists.
pub const DEFAULT_PATTERNS: &[&str] = &[
    "*.jpg",
    "*.jpeg",
    "*.gif",
    "*.png",
    "*.wmv",
    "*.flv",
    "*.tar.gz",
    "*.zip",
    ".github/",
    ".circleci/",
    ".travis.yml",
    ".gitlab-ci.yml",
    "appveyor.yml",
    ".drone.yml",
    "cloudbuild.yaml",
    "codeship-services.yml",
    "codeship-steps.yml",
    "**/.goreleaser.yml",
    "**/.sops.yaml",
    "**/.flux.yaml",
];
/// The file name of per-directory ignore files.
pub const IGNORE_FILE: &str = ".sourceignore";

/// One gitignore pattern, scoped to the directory that declared it.
#[derive(Clone, Debug)]
struct Pattern {
    domain: Vec<String>,
    negate: bool,
    dir_only: bool,
    regex: Regex,
}

/// An ordered list of patterns; the last one that matches a path decides.
#[derive(Clone, Debug, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

impl Matcher {
    /// The matcher Flux builds: VCS patterns, then either the defaults (when `user` is empty)
    /// or the user's patterns. Each user entry is `(domain, text)`: the directory of a
    /// `.sourceignore` relative to the root (empty for the root and for `spec.ignore`) and its
    /// content.
    pub fn flux(user: &[(Vec<String>, String)]) -> Self {
        let mut m = Self::default();
        m.add_lines(&[], VCS_PATTERNS.iter().copied());
        let has_user = user
            .iter()
            .any(|(_, text)| text.lines().any(|l| parse_line(l).is_some()));
        if has_user {
            for (domain, text) in user {
                m.add_lines(domain, text.lines());
            }
        } else {
            m.add_lines(&[], DEFAULT_PATTERNS.iter().copied());
        }
        m
    }

    fn add_lines<'a>(&mut self, domain: &[String], lines: impl Iterator<Item = &'a str>) {
        for line in lines {
            if let Some(p) = parse_line(line).and_then(|(negate, dir_only, glob)| {
                compile(&glob).map(|regex| Pattern {
                    domain: domain.to_vec(),
                    negate,
                    dir_only,
                    regex,
                })
            }) {
                self.patterns.push(p);
            }
        }
    }

    /// Whether the path (components relative to the root) is excluded.
    pub fn is_ignored(&self, path: &[String], is_dir: bool) -> bool {
        let mut ignored = false;
        for p in &self.patterns {
            if p.dir_only && !is_dir {
                continue;
            }
            if path.len() <= p.domain.len() || !path.starts_with(&p.domain) {
                continue;
            }
            let rel = path[p.domain.len()..].join("/");
            if p.regex.is_match(&rel) {
                ignored = !p.negate;
            }
        }
        ignored
    }
}

/// `(negate, dir_only, glob)` of a line, `None` for blanks and comments.
fn parse_line(line: &str) -> Option<(bool, bool, String)> {
    let line = line.trim_end();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (negate, rest) = match line.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, line.strip_prefix('\\').unwrap_or(line)),
    };
    let dir_only = rest.ends_with('/');
    let glob = rest.trim_end_matches('/');
    if glob.is_empty() {
        return None;
    }
    Some((negate, dir_only, glob.to_owned()))
}

/// A glob as an anchored regex over a `/`-joined relative path.
fn compile(glob: &str) -> Option<Regex> {
    let anchored = glob.contains('/');
    let glob = glob.strip_prefix('/').unwrap_or(glob);
    let mut re = String::new();
    let chars: Vec<char> = glob.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' if chars.get(i + 1) == Some(&'*') => {
                if chars.get(i + 2) == Some(&'/') {
                    re.push_str("(?:.*/)?");
                    i += 3;
                } else {
                    re.push_str(".*");
                    i += 2;
                }
                continue;
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '[' => match chars[i..].iter().position(|&c| c == ']') {
                Some(end) => {
                    let class: String = chars[i + 1..i + end].iter().collect();
                    let class = class.strip_prefix('!').map_or(class.clone(), |c| format!("^{c}"));
                    re.push('[');
                    re.push_str(&class);
                    re.push(']');
                    i += end + 1;
                    continue;
                }
                None => re.push_str(r"\["),
            },
            other => re.push_str(&regex::escape(&other.to_string())),
        }
        i += 1;
    }
    let full = if anchored {
        format!("^{re}$")
    } else {
        format!("^(?:.*/)?{re}$")
    };
    Regex::new(&full).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Vec<String> {
        p.split('/').map(str::to_owned).collect()
    }

    #[test]
    fn defaults_apply_only_without_user_patterns() {
        let m = Matcher::flux(&[]);
        assert!(m.is_ignored(&path(".git"), true));
        assert!(m.is_ignored(&path("docs/logo.png"), false));
        assert!(m.is_ignored(&path(".github"), true));
        assert!(!m.is_ignored(&path("apps/podinfo.yaml"), false));
        let m = Matcher::flux(&[(vec![], "*.md\n".into())]);
        assert!(!m.is_ignored(&path("docs/logo.png"), false), "defaults dropped");
        assert!(m.is_ignored(&path("README.md"), false));
        assert!(m.is_ignored(&path(".git"), true), "VCS patterns stay");
    }

    #[test]
    fn flux_example_keeps_only_the_listed_roots() {
        let m = Matcher::flux(&[(vec![], "/*\n!/apps/\n!/clusters/\n!/infrastructure/\n".into())]);
        assert!(m.is_ignored(&path("README.md"), false));
        assert!(m.is_ignored(&path("scripts"), true));
        assert!(!m.is_ignored(&path("apps"), true));
        assert!(!m.is_ignored(&path("apps/base/podinfo/deployment.yaml"), false));
    }

    #[test]
    fn nested_ignore_files_are_scoped_to_their_directory() {
        let m = Matcher::flux(&[(path("apps"), "*.txt\n/local/\n".into())]);
        assert!(m.is_ignored(&path("apps/notes.txt"), false));
        assert!(m.is_ignored(&path("apps/x/notes.txt"), false));
        assert!(!m.is_ignored(&path("notes.txt"), false));
        assert!(m.is_ignored(&path("apps/local"), true));
        assert!(!m.is_ignored(&path("apps/x/local"), true));
        assert!(!m.is_ignored(&path("apps/local"), false), "dir-only pattern");
    }

    #[test]
    fn double_star_and_classes() {
        let m = Matcher::flux(&[(vec![], "**/secret-*.yaml\ndocs/**\nfile[0-9].txt\n".into())]);
        assert!(m.is_ignored(&path("a/b/secret-db.yaml"), false));
        assert!(m.is_ignored(&path("secret-db.yaml"), false));
        assert!(m.is_ignored(&path("docs/x/y.md"), false));
        assert!(m.is_ignored(&path("file3.txt"), false));
        assert!(!m.is_ignored(&path("fileX.txt"), false));
    }
}
