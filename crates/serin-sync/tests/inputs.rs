//! The property pass over serin-sync's untrusted inputs: Kustomization and GitRepository
//! documents from the project's GitOps example, mutated, through decoding, the unsupported-field
//! checks, durations and timeouts; `postBuild` substitution; `.sourceignore` patterns. Thousands
//! of generated inputs, none may panic.

use std::{collections::BTreeMap, panic::AssertUnwindSafe, path::Path};

use rand::{Rng, SeedableRng, rngs::StdRng};
use serin_sync::{
    api::{GitRepository, Kustomization},
    build::substitute,
    controller::status,
    source::ignore::Matcher,
};

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

fn documents(kind: &str) -> Vec<String> {
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
                out.extend(
                    text.split("\n---")
                        .filter(|d| d.contains(&format!("kind: {kind}\n")))
                        .map(|d| d.trim_start_matches('\n').to_owned()),
                );
            }
        }
    }
    assert!(!out.is_empty(), "no {kind} in examples/gitops");
    out
}

fn mutate(rng: &mut StdRng, seeds: &[String]) -> String {
    let seed = &seeds[rng.random_range(0..seeds.len())];
    let mut lines: Vec<String> = seed.lines().map(str::to_owned).collect();
    for _ in 0..rng.random_range(1..4) {
        let i = rng.random_range(0..lines.len().max(1));
        if i >= lines.len() {
            break;
        }
        match rng.random_range(0..4) {
            0 | 1 => {
                if let Some(at) = lines[i].find(": ") {
                    lines[i] = format!(
                        "{}: {}",
                        &lines[i][..at],
                        INTERESTING[rng.random_range(0..INTERESTING.len())]
                    );
                }
            }
            2 if lines.len() > 1 => {
                lines.remove(i);
            }
            _ => {
                let line = lines[i].clone();
                lines.insert(i, line);
            }
        }
    }
    lines.join("\n") + "\n"
}

fn pass(
    name: &str,
    cases: usize,
    mut generate: impl FnMut(&mut StdRng) -> String,
    check: impl Fn(&str),
) -> usize {
    let mut rng = StdRng::seed_from_u64(0x5e41 ^ name.len() as u64);
    for _ in 0..cases {
        let input = generate(&mut rng);
        if std::panic::catch_unwind(AssertUnwindSafe(|| check(&input))).is_err() {
            panic!("{name} panicked on\n{input}");
        }
    }
    cases
}

#[test]
fn no_input_panics() {
    let mut total = 0;
    let kustomizations = documents("Kustomization");
    total += pass(
        "Kustomization",
        2000,
        |rng| mutate(rng, &kustomizations),
        |text| {
            if let Ok(ks) = serde_yaml::from_str::<Kustomization>(text) {
                let _ = status::unsupported_kustomization_field(&ks.spec);
                let _ = status::kustomization_timeout(&ks.spec);
                let _ = status::parse_duration(&ks.spec.interval);
            }
        },
    );
    let repositories = documents("GitRepository");
    total += pass(
        "GitRepository",
        1000,
        |rng| mutate(rng, &repositories),
        |text| {
            if let Ok(repo) = serde_yaml::from_str::<GitRepository>(text) {
                let _ = status::unsupported_source_field(&repo.spec);
                let _ = status::parse_duration(&repo.spec.interval);
                if let Some(ignore) = &repo.spec.ignore {
                    let m = Matcher::flux(&[(Vec::new(), ignore.clone())]);
                    let _ = m.is_ignored(&["apps".into(), "x.yaml".into()], false);
                }
            }
        },
    );
    total += pass(
        "postBuild substitution",
        1500,
        |rng| {
            (0..rng.random_range(0..24))
                .map(|_| {
                    [
                        "$", "{", "}", "$$", "a", ":=", ":-", "=", "\n", "${a}", "${b:=x}", " ",
                    ][rng.random_range(0..12)]
                })
                .collect()
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
            (0..rng.random_range(0..6))
                .map(|_| {
                    [
                        "*", "**", "/", "!", "\\", "[", "]", "a", "?", "#", "\n", ".yaml", "[!a-z]", "{a,b}",
                    ][rng.random_range(0..14)]
                })
                .collect()
        },
        |text| {
            let m = Matcher::flux(&[
                (Vec::new(), text.to_owned()),
                (vec!["apps".into()], text.to_owned()),
            ]);
            let _ = m.is_ignored(&["apps".into(), "a.yaml".into()], false);
            let _ = m.is_ignored(&["apps".into()], true);
        },
    );
    assert!(total >= 5000, "{total} cases");
}
