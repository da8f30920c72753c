//! A Helm repository's `index.yaml`: its charts and versions, and the version a HelmChart's
//! `version` (a semver version or range, in the syntax Helm and Flux accept) selects. Pure.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A repository index (only what serin-sync reads).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Index {
    #[serde(default)]
    pub entries: BTreeMap<String, Vec<ChartVersion>>,
}

/// One version of a chart in an index.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChartVersion {
    #[serde(default)]
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub app_version: Option<String>,
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub digest: Option<String>,
}

impl Index {
    pub fn parse(text: &[u8]) -> Result<Self, String> {
        serde_yaml::from_slice(text).map_err(|e| format!("failed to load Helm repository index: {e}"))
    }

    /// The version of `chart` that `wanted` selects: the exact version when the index has it,
    /// else the highest satisfying the range (`*` and no version: the highest stable one).
    pub fn select(&self, chart: &str, wanted: Option<&str>) -> Result<&ChartVersion, String> {
        let versions = self.entries.get(chart).filter(|v| !v.is_empty()).ok_or_else(|| {
            format!("no chart name found: chart '{chart}' not found in the repository index")
        })?;
        select(versions, wanted).ok_or_else(|| {
            format!(
                "invalid chart reference: failed to get chart version for remote reference: no '{chart}' chart with version matching '{}' found",
                wanted.unwrap_or("*")
            )
        })
    }
}

/// The version `wanted` selects among `versions`.
pub fn select<'a>(versions: &'a [ChartVersion], wanted: Option<&str>) -> Option<&'a ChartVersion> {
    let wanted = wanted.map(str::trim).filter(|w| !w.is_empty()).unwrap_or("*");
    if let Some(exact) = versions.iter().find(|v| v.version == wanted) {
        return Some(exact);
    }
    let range = Range::parse(wanted).ok()?;
    versions
        .iter()
        .filter_map(|v| {
            semver::Version::parse(v.version.trim_start_matches('v'))
                .ok()
                .map(|s| (s, v))
        })
        .filter(|(s, _)| range.matches(s))
        .max_by(|(a, _), (b, _)| a.cmp(b))
        .map(|(_, v)| v)
}

/// A semver range as Helm writes it (Masterminds' syntax): alternatives joined by `||`, each a
/// list of comparators separated by spaces or commas (`>= 1.2, < 2`), with `x`/`X`/`*`
/// wildcards (`1.2.x`), caret and tilde ranges (`^1.2`, `~1.2.3`) and hyphen ranges
/// (`1.2 - 1.4.5`).
#[derive(Clone, Debug)]
pub struct Range(Vec<semver::VersionReq>);

impl Range {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut alternatives = Vec::new();
        for part in text.split("||") {
            let req = cargo_syntax(part.trim());
            let parsed = semver::VersionReq::parse(&req)
                .map_err(|e| format!("invalid version range '{text}': {e}"))?;
            alternatives.push(parsed);
        }
        Ok(Self(alternatives))
    }

    pub fn matches(&self, version: &semver::Version) -> bool {
        self.0.iter().any(|r| r.matches(version))
    }
}

/// One alternative of a Masterminds range in the `semver` crate's syntax.
fn cargo_syntax(part: &str) -> String {
    if part.is_empty() || part == "*" || part.eq_ignore_ascii_case("x") {
        return "*".to_owned();
    }
    // A hyphen range: `1.2 - 1.4.5` is `>= 1.2, <= 1.4.5`.
    if let Some((low, high)) = part.split_once(" - ") {
        return format!(
            "{}, {}",
            wildcard(&format!(">={}", low.trim())),
            wildcard(&format!("<={}", high.trim()))
        );
    }
    // Comparators are separated by commas or spaces; an operator may stand apart from its
    // version (`>= 1.2`).
    let mut comparators: Vec<String> = Vec::new();
    let mut pending_op = String::new();
    for token in part.split([',', ' ']).filter(|t| !t.is_empty()) {
        if token.chars().all(|c| "<>=!~^".contains(c)) {
            pending_op.push_str(token);
            continue;
        }
        comparators.push(wildcard(&format!("{pending_op}{token}")));
        pending_op.clear();
    }
    comparators
        .into_iter()
        .map(|c| match c.strip_prefix('=') {
            // Masterminds' `=1.2` (and the `semver` crate's) mean exactly that version.
            Some(rest) if !rest.starts_with('=') => format!("={rest}"),
            _ => c,
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `1.2.x` and `1.X` as the `semver` crate writes wildcards (`1.2.*`), a leading `v` dropped.
fn wildcard(version: &str) -> String {
    let (op, rest) = version.split_at(
        version
            .find(|c: char| c.is_ascii_alphanumeric() || c == '*')
            .unwrap_or(0),
    );
    let rest = rest.trim_start_matches('v');
    let parts: Vec<&str> = rest
        .split('.')
        .map(|p| if p.eq_ignore_ascii_case("x") { "*" } else { p })
        .collect();
    // A bare version without an operator is an exact match in Masterminds' syntax when complete,
    // and a wildcard range when partial (`1.2` is `1.2.*`).
    let op = if op.is_empty() && !rest.contains('*') && parts.len() == 3 && !parts.contains(&"*") {
        "="
    } else {
        op
    };
    format!("{op}{}", parts.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(list: &[&str]) -> Vec<ChartVersion> {
        list.iter()
            .map(|v| ChartVersion {
                name: "podinfo".into(),
                version: (*v).into(),
                ..Default::default()
            })
            .collect()
    }

    fn pick(list: &[&str], wanted: Option<&str>) -> Option<String> {
        select(&versions(list), wanted).map(|v| v.version.clone())
    }

    #[test]
    fn ranges_select_the_highest_version_they_allow() {
        let all = ["6.0.0", "6.0.3", "6.1.0", "6.1.2-rc.1", "7.0.0", "5.9.9"];
        assert_eq!(pick(&all, None).as_deref(), Some("7.0.0"), "the highest stable");
        assert_eq!(pick(&all, Some("*")).as_deref(), Some("7.0.0"));
        assert_eq!(pick(&all, Some("6.0.3")).as_deref(), Some("6.0.3"), "exact");
        assert_eq!(pick(&all, Some(">=6.0.0 <7.0.0")).as_deref(), Some("6.1.0"));
        assert_eq!(pick(&all, Some(">= 6.0.0, < 6.1.0")).as_deref(), Some("6.0.3"));
        assert_eq!(pick(&all, Some("6.0.x")).as_deref(), Some("6.0.3"));
        assert_eq!(pick(&all, Some("6.x")).as_deref(), Some("6.1.0"));
        assert_eq!(pick(&all, Some("^6.0.0")).as_deref(), Some("6.1.0"));
        assert_eq!(pick(&all, Some("~6.0.0")).as_deref(), Some("6.0.3"));
        assert_eq!(pick(&all, Some("6.0.0 - 6.0.9")).as_deref(), Some("6.0.3"));
        assert_eq!(pick(&all, Some("<6.0.0 || >=7.0.0")).as_deref(), Some("7.0.0"));
        assert_eq!(pick(&all, Some(">=8")).as_deref(), None);
        assert_eq!(pick(&all, Some("not a range")).as_deref(), None);
    }

    #[test]
    fn an_index_names_the_chart_and_the_range_it_lacks() {
        let index = Index::parse(
            b"apiVersion: v1\nentries:\n  podinfo:\n  - name: podinfo\n    version: 6.0.3\n    urls: [podinfo-6.0.3.tgz]\n",
        )
        .expect("index");
        assert_eq!(
            index.select("podinfo", Some("6.x")).expect("6.x").urls,
            ["podinfo-6.0.3.tgz"]
        );
        let missing = index.select("nginx", None).expect_err("no such chart");
        assert!(missing.contains("chart 'nginx' not found"), "{missing}");
        let none = index.select("podinfo", Some(">=7")).expect_err("no such version");
        assert!(
            none.contains("no 'podinfo' chart with version matching '>=7'"),
            "{none}"
        );
        assert!(Index::parse(b"entries: [").is_err());
    }
}
