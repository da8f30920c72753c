//! `serin lint FILE|DIR...`: offline validation of Canary, MetricTemplate and AlertProvider
//! manifests against serin's CRD schemas and the semantic rules of [`crate::validate`]. Reads
//! files; prints findings; never talks to a cluster.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use clap::Args;
use serde::Deserialize;
use serde_json::Value;

use crate::{
    api::{self, AlertProvider, Canary, MetricTemplate},
    validate::{self, Severity},
};

#[derive(Args, Debug)]
pub struct LintArgs {
    /// Manifest files or directories (every .yaml/.yml file below a directory is checked).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// The default mesh provider of the controller the manifests are for.
    #[arg(long, default_value = "istio")]
    pub mesh_provider: String,
}

/// One problem found in one object of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub file: PathBuf,
    /// `Kind/namespace/name`, `Kind/name`, or `document N` when the object has no name.
    pub object: String,
    /// Field path; empty for problems with the whole document.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}: {}: ", self.file.display(), self.object)?;
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// What a lint run found.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<Problem>,
    pub files: usize,
    /// Flagger objects checked.
    pub objects: usize,
    /// Documents of other kinds, passed over.
    pub skipped: usize,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count()
    }

    pub fn warnings(&self) -> usize {
        self.problems.len() - self.errors()
    }

    /// The closing line.
    pub fn summary(&self) -> String {
        format!(
            "{} file(s), {} object(s) checked, {} other document(s) skipped: {} error(s), {} warning(s)",
            self.files,
            self.objects,
            self.skipped,
            self.errors(),
            self.warnings()
        )
    }
}

/// Runs the linter; prints each problem and the summary, and returns the exit status.
pub fn run(args: &LintArgs) -> i32 {
    let report = lint_paths(&args.paths, &args.mesh_provider);
    for problem in &report.problems {
        println!("{problem}");
    }
    println!("{}", report.summary());
    if report.errors() > 0 { 1 } else { 0 }
}

/// Lints files and directories.
pub fn lint_paths(paths: &[PathBuf], mesh_provider: &str) -> Report {
    let mut report = Report::default();
    let schemas = Schemas::new();
    for path in paths {
        let files = match yaml_files(path) {
            Ok(files) => files,
            Err(message) => {
                report.problems.push(whole_file(path, message));
                continue;
            }
        };
        if files.is_empty() {
            report
                .problems
                .push(whole_file(path, "no .yaml or .yml files found".to_owned()));
        }
        for file in files {
            report.files += 1;
            match std::fs::read_to_string(&file) {
                Ok(text) => lint_text(&file, &text, mesh_provider, &schemas, &mut report),
                Err(err) => report
                    .problems
                    .push(whole_file(&file, format!("cannot read: {err}"))),
            }
        }
    }
    report
}

fn whole_file(file: &Path, message: String) -> Problem {
    Problem {
        severity: Severity::Error,
        file: file.to_owned(),
        object: "file".to_owned(),
        path: String::new(),
        message,
    }
}

pub(crate) fn yaml_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|err| format!("cannot read: {err}"))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    let mut dirs = vec![path.to_owned()];
    while let Some(dir) = dirs.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|err| format!("cannot list {}: {err}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|err| format!("cannot list {}: {err}", dir.display()))?;
            let p = entry.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The `openAPIV3Schema` of each of serin's CRDs, by kind.
struct Schemas(Vec<(String, Value)>);

impl Schemas {
    fn new() -> Self {
        Self(
            api::crds()
                .into_iter()
                .filter_map(|crd| {
                    let schema = crd
                        .spec
                        .versions
                        .first()?
                        .schema
                        .as_ref()?
                        .open_api_v3_schema
                        .as_ref()?;
                    Some((crd.spec.names.kind.clone(), serde_json::to_value(schema).ok()?))
                })
                .collect(),
        )
    }

    fn get(&self, kind: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == kind).map(|(_, s)| s)
    }
}

fn lint_text(file: &Path, text: &str, mesh_provider: &str, schemas: &Schemas, report: &mut Report) {
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let number = index + 1;
        let yaml = match serde_yaml::Value::deserialize(doc) {
            Ok(yaml) => yaml,
            Err(err) => {
                report.problems.push(Problem {
                    severity: Severity::Error,
                    file: file.to_owned(),
                    object: format!("document {number}"),
                    path: String::new(),
                    message: format!("invalid YAML: {}", serin_runtime::yaml::describe(&err)),
                });
                // The parser cannot resynchronise after a syntax error.
                return;
            }
        };
        if yaml.is_null() {
            continue;
        }
        let value = match serde_json::to_value(&yaml) {
            Ok(value) => value,
            Err(err) => {
                report.problems.push(Problem {
                    severity: Severity::Error,
                    file: file.to_owned(),
                    object: format!("document {number}"),
                    path: String::new(),
                    message: format!("not representable as JSON (Kubernetes objects must be): {err}"),
                });
                continue;
            }
        };
        lint_object(file, number, &value, mesh_provider, schemas, report);
    }
}

fn object_name(value: &Value, number: usize) -> String {
    let kind = value["kind"].as_str().unwrap_or("object");
    match (
        value["metadata"]["namespace"].as_str(),
        value["metadata"]["name"].as_str(),
    ) {
        (Some(ns), Some(name)) => format!("{kind}/{ns}/{name}"),
        (None, Some(name)) => format!("{kind}/{name}"),
        _ => format!("{kind} (document {number})"),
    }
}

fn lint_object(
    file: &Path,
    number: usize,
    value: &Value,
    mesh_provider: &str,
    schemas: &Schemas,
    report: &mut Report,
) {
    let object = object_name(value, number);
    let mut problems: Vec<(Severity, String, String)> = Vec::new();
    let (Some(api_version), Some(kind)) = (value["apiVersion"].as_str(), value["kind"].as_str()) else {
        report.problems.push(Problem {
            severity: Severity::Error,
            file: file.to_owned(),
            object,
            path: String::new(),
            message: "not a Kubernetes object: apiVersion and kind are required".to_owned(),
        });
        return;
    };
    let Some((group, version)) = api_version.split_once('/') else {
        report.skipped += 1;
        return;
    };
    let Some(schema) = schemas.get(kind).filter(|_| group == "flagger.app") else {
        report.skipped += 1;
        return;
    };
    report.objects += 1;
    if version != "v1beta1" {
        problems.push((
            Severity::Error,
            "apiVersion".to_owned(),
            format!("{api_version} is not served; use flagger.app/v1beta1"),
        ));
    }
    if value["metadata"]["name"].as_str().is_none_or(str::is_empty) {
        problems.push((
            Severity::Error,
            "metadata.name".to_owned(),
            "Required value".to_owned(),
        ));
    }
    for violation in serin_runtime::schema::validate(schema, value) {
        problems.push((Severity::Error, violation.path, violation.message));
    }
    let semantic = match kind {
        "Canary" => serde_json::from_value::<Canary>(value.clone())
            .map(|c| validate::canary(&c.spec, mesh_provider))
            .map_err(|e| e.to_string()),
        "MetricTemplate" => serde_json::from_value::<MetricTemplate>(value.clone())
            .map(|t| validate::metric_template(&t.spec))
            .map_err(|e| e.to_string()),
        "AlertProvider" => serde_json::from_value::<AlertProvider>(value.clone())
            .map(|a| validate::alert_provider(&a.spec))
            .map_err(|e| e.to_string()),
        _ => Ok(Vec::new()),
    };
    match semantic {
        Ok(findings) => {
            for finding in findings {
                // The schema's oneOf message at the same place says less than the semantic one.
                if finding.severity == Severity::Error {
                    problems.retain(|(_, path, message)| {
                        !(path == &finding.path && message.starts_with("must match exactly one of"))
                    });
                }
                problems.push((finding.severity, finding.path, finding.message));
            }
        }
        // A schema error usually explains why the typed read failed; say it only when alone.
        Err(err) if problems.is_empty() => {
            problems.push((
                Severity::Error,
                String::new(),
                format!("cannot be read as a {kind}: {err}"),
            ));
        }
        Err(_) => {}
    }
    let mut seen = std::collections::HashSet::new();
    for (severity, path, message) in problems {
        if seen.insert((path.clone(), message.clone())) {
            report.problems.push(Problem {
                severity,
                file: file.to_owned(),
                object: object.clone(),
                path,
                message,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: &str = r#"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: podinfo, namespace: test}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service: {port: 9898}
  analysis:
    interval: 15s
    threshold: 5
    maxWeight: 50
    stepWeight: 10
    metrics:
    - name: request-success-rate
      thresholdRange: {min: 99}
      interval: 1m
"#;

    fn lint(text: &str) -> Report {
        let mut report = Report::default();
        lint_text(Path::new("x.yaml"), text, "istio", &Schemas::new(), &mut report);
        report
    }

    fn lines(report: &Report) -> Vec<String> {
        report.problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn clean_canary() {
        let report = lint(CANARY);
        assert_eq!(lines(&report), Vec::<String>::new());
        assert_eq!(report.objects, 1);
    }

    #[test]
    fn iterations_with_step_weight_names_analysis() {
        let report = lint(&CANARY.replace("stepWeight: 10", "stepWeight: 10\n    iterations: 5"));
        let got = lines(&report);
        assert!(
            got.iter().any(|l| l.starts_with(
                "error: x.yaml: Canary/test/podinfo: spec.analysis: sets iterations and stepWeight"
            )),
            "{got:#?}"
        );
        // The semantic message replaces the schema's oneOf message at the same field.
        assert!(
            !got.iter().any(|l| l.contains("must match exactly one of")),
            "{got:#?}"
        );
    }

    #[test]
    fn schema_errors_name_file_object_and_field() {
        let report = lint(
            &CANARY
                .replace("interval: 15s", "interval: fast")
                .replace("kind: Deployment", "kind: Pod"),
        );
        let got = lines(&report);
        assert!(
            got.iter().any(|l| l
                .starts_with("error: x.yaml: Canary/test/podinfo: spec.analysis.interval: Invalid value")),
            "{got:#?}"
        );
        assert!(
            got.iter().any(|l| l.starts_with(
                "error: x.yaml: Canary/test/podinfo: spec.targetRef.kind: Unsupported value: \"Pod\""
            )),
            "{got:#?}"
        );
    }

    #[test]
    fn unknown_field_is_an_error() {
        let report = lint(&CANARY.replace("threshold: 5", "threshold: 5\n    treshold: 5"));
        assert!(
            lines(&report)
                .iter()
                .any(|l| l.contains("spec.analysis.treshold: unknown field")),
            "{:#?}",
            lines(&report)
        );
    }

    #[test]
    fn bad_yaml_and_other_kinds() {
        let report = lint("apiVersion: v1\nkind: Service\nmetadata: {name: x}\n---\n{ not: yaml: here");
        assert_eq!(report.skipped, 1);
        let got = lines(&report);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(
            got[0].starts_with("error: x.yaml: document 2: invalid YAML"),
            "{got:#?}"
        );
    }

    #[test]
    fn multi_document_counts() {
        let text = format!(
            "{CANARY}\n---\n{}",
            CANARY.replace("name: podinfo, namespace", "name: other, namespace")
        );
        let report = lint(&text);
        assert_eq!(report.objects, 2);
        assert_eq!(report.errors(), 0);
    }
}
