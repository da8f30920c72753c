//! The property pass over serin-sync's untrusted inputs (`serin_sync::inputs`, the entry points
//! `make fuzz` feeds to libFuzzer): Kustomization and GitRepository documents and kustomization
//! files from the project's GitOps example, mutated; kustomize output through `postBuild`
//! substitution; `.sourceignore` patterns; HelmReleases and Helm indexes; Providers, Alerts and
//! Receivers. Thousands of generated inputs: none may panic, and
//! every rejection names its field, file or position.

use std::{collections::BTreeMap, path::Path};

use serin_sync::{build::substitute, inputs};
use serin_testbed::property::{mutate, mutate_one, pass, pieces};

const INTERESTING: &[&str] = &[
    "99999999999999999999m",
    "-1s",
    "0",
    "null",
    "[]",
    "{}",
    "''",
    "\"${a:=b}\"",
    "\"${\"",
    "\"$${x}\"",
    "../../etc",
    "/etc/passwd",
    "1e309",
    "true",
];

/// A HelmRelease using most of what serin-sync reads.
const HELM_RELEASE: &str = "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: demo\n  namespace: apps\nspec:\n  interval: 5m\n  timeout: 2m\n  targetNamespace: apps\n  chart:\n    spec:\n      chart: demo\n      version: '>=1.0.0 <2.0.0'\n      sourceRef:\n        kind: HelmRepository\n        name: charts\n  install:\n    remediation:\n      retries: 3\n  upgrade:\n    remediation:\n      retries: 2\n      strategy: rollback\n  valuesFrom:\n  - kind: ConfigMap\n    name: demo-values\n    targetPath: image.tag\n  values:\n    replicas: 2\n";

/// A GitHub Receiver.
const RECEIVER: &str = "apiVersion: notification.toolkit.fluxcd.io/v1\nkind: Receiver\nmetadata:\n  name: github\n  namespace: flux-system\nspec:\n  type: github\n  events: [ping, push]\n  secretRef:\n    name: webhook-token\n  resources:\n  - kind: GitRepository\n    name: flux-system\n  - apiVersion: helm.toolkit.fluxcd.io/v2\n    kind: HelmRelease\n    name: '*'\n    matchLabels:\n      team: web\n";
/// A Helm repository index with two charts.
const HELM_INDEX: &str = "apiVersion: v1\nentries:\n  demo:\n  - name: demo\n    version: 1.2.3\n    urls: [demo-1.2.3.tgz]\n  - name: demo\n    version: 2.0.0-rc.1\n    urls: [demo-2.0.0-rc.1.tgz]\n  web:\n  - name: web\n    version: 0.1.0\n    urls: [https://example.com/web-0.1.0.tgz]\n";

/// The YAML files of the project's GitOps example.
fn example_files() -> Vec<(std::path::PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/gitops");
    let mut out = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                out.push((path, text));
            }
        }
    }
    out
}

/// The documents of one kind in the example.
fn documents(kind: &str) -> Vec<String> {
    let out: Vec<String> = example_files()
        .into_iter()
        .flat_map(|(_, text)| {
            text.split("\n---")
                .filter(|d| d.contains(&format!("kind: {kind}\n")))
                .map(|d| d.trim_start_matches('\n').to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!out.is_empty(), "no {kind} in examples/gitops");
    out
}

/// The example's kustomization files, and one that tries every field the fence checks.
fn kustomization_files() -> Vec<String> {
    let mut out: Vec<String> = example_files()
        .into_iter()
        .filter(|(path, _)| path.file_name().is_some_and(|n| n == "kustomization.yaml"))
        .map(|(_, text)| text)
        .collect();
    assert!(!out.is_empty(), "no kustomization.yaml in examples/gitops");
    out.push(
        "resources:\n- base\n- https://example.com/x.yaml\ncomponents:\n- ../components/a\npatches:\n- path: patch.yaml\nconfigMapGenerator:\n- name: c\n  files:\n  - key=conf/app.toml\n  envs:\n  - app.env\nsecretGenerator:\n- name: s\n  env: s.env\nopenapi:\n  path: schema.json\n"
            .to_owned(),
    );
    out
}

/// Whether a rejection names the field, file or position it is about.
fn names_its_place(message: &str) -> bool {
    message.contains(" at line ")
        || message.contains('`')
        || message.starts_with("spec.")
        || message.contains("unsupported field '")
        || message.starts_with("file '")
}

fn rejection(result: Result<(), String>) {
    if let Err(message) = result {
        assert!(
            names_its_place(&message),
            "the rejection names its place: {message}"
        );
    }
}

#[test]
fn no_input_panics_and_every_rejection_names_its_place() {
    let mut total = 0;
    let kustomizations = documents("Kustomization");
    total += pass(
        "Kustomization",
        2000,
        |rng| mutate_one(rng, &kustomizations, INTERESTING),
        |text| rejection(inputs::kustomization_document(text)),
    );
    let repositories = documents("GitRepository");
    total += pass(
        "GitRepository",
        1000,
        |rng| mutate_one(rng, &repositories, INTERESTING),
        |text| rejection(inputs::git_repository_document(text)),
    );
    let files = kustomization_files();
    total += pass(
        "kustomization.yaml",
        1500,
        |rng| mutate_one(rng, &files, INTERESTING),
        |text| rejection(inputs::kustomization_file(text).map(drop)),
    );
    total += pass(
        "kustomize output",
        1000,
        |rng| {
            let seed = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: ${cluster}\ndata:\n  replicas: \"${replicas:=2}\"\n  escaped: $${kept}\n";
            mutate(rng, seed, INTERESTING)
        },
        |text| {
            let _ = inputs::built_objects(text);
        },
    );
    total += pass(
        "postBuild substitution",
        1500,
        |rng| {
            pieces(
                rng,
                &[
                    "$", "{", "}", "$$", "a", ":=", ":-", "=", "\n", "${a}", "${b:=x}", " ",
                ],
                24,
            )
        },
        |text| {
            let vars = BTreeMap::from([("a".to_owned(), "1".to_owned())]);
            let _ = substitute::substitute(text, &vars, true);
            let _ = substitute::substitute(text, &vars, false);
            let _ = substitute::prepare_vars(BTreeMap::from([(text.to_owned(), text.to_owned())]));
        },
    );
    total += pass(
        ".sourceignore",
        500,
        |rng| {
            pieces(
                rng,
                &[
                    "*", "**", "/", "!", "\\", "[", "]", "a", "?", "#", "\n", ".yaml", "[!a-z]", "{a,b}",
                ],
                6,
            )
        },
        |text| {
            let _ = inputs::source_ignore(text);
        },
    );
    let releases = vec![HELM_RELEASE.to_owned()];
    total += pass(
        "HelmRelease",
        1500,
        |rng| mutate_one(rng, &releases, INTERESTING),
        |text| rejection(inputs::helm_release_document(text)),
    );
    let mut notifications = documents("Alert");
    notifications.extend(documents("Provider"));
    notifications.push(RECEIVER.to_owned());
    total += pass(
        "Provider, Alert and Receiver",
        1500,
        |rng| mutate_one(rng, &notifications, INTERESTING),
        |text| rejection(inputs::notification_document(text)),
    );
    let indexes = vec![HELM_INDEX.to_owned()];
    total += pass(
        "Helm repository index and ranges",
        1000,
        |rng| {
            let index = mutate_one(rng, &indexes, INTERESTING);
            let range = pieces(
                rng,
                &[
                    ">=", "<", "1", ".", "2", "x", "*", "^", "~", " - ", "||", ",", " ", "v", "-rc.1",
                ],
                8,
            );
            format!("{range}\n{index}")
        },
        |text| {
            let (range, index) = text.split_once('\n').unwrap_or((text, ""));
            let _ = inputs::helm_index(index, range);
        },
    );
    assert!(total >= 9500, "{total} cases");
}
