//! The property pass over serin's untrusted inputs (`serin::inputs`): thousands of documents,
//! queries, durations and Prometheus responses generated from the project's own examples by
//! mutation, each of which must give a value or a rejection that names the field or position,
//! never a panic. `make fuzz` runs the same entry points under libFuzzer for longer.

use std::path::Path;

use rand::Rng;
use serin::inputs;
use serin_testbed::property::{mutate_one, pass, pieces};

/// Values that have broken parsers before: overflows, signs, YAML's special scalars, templates.
const INTERESTING: &[&str] = &[
    "99999999999999999999m",
    "2562048h",
    "-1",
    "0",
    "2147483648",
    "-2147483649",
    "1e309",
    ".nan",
    ".inf",
    "-.inf",
    "null",
    "~",
    "''",
    "[]",
    "{}",
    "true",
    "\"{{\"",
    "\"{{ variables.missing }}\"",
    "\"}}{{\"",
    "\"é\u{0}\"",
    "\"1m30\"",
    "\"5 s\"",
    "[-5, 200]",
    "[50, 10, 10]",
    "{min: 1, max: -1}",
    "&a [*a]",
];

fn examples(kind: &str) -> Vec<String> {
    let mut out = Vec::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["examples", "tests/e2e/fixtures"] {
        for entry in walk(&root.join(dir)) {
            let text = std::fs::read_to_string(&entry).unwrap_or_default();
            for doc in text.split("\n---") {
                if doc.contains(&format!("kind: {kind}\n")) {
                    out.push(doc.trim_start_matches('\n').to_owned());
                }
            }
        }
    }
    assert!(!out.is_empty(), "no {kind} in the examples");
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out
}

/// A mutation of one of `seeds`.
fn document_check(result: Result<Vec<serin::validate::Finding>, String>) {
    match result {
        Ok(findings) => {
            for f in findings {
                assert!(
                    f.path.starts_with("spec") || f.path.starts_with("metadata"),
                    "a finding names its field: {f:?}"
                );
                assert!(!f.message.is_empty(), "{f:?}");
            }
        }
        Err(message) => assert!(
            inputs::names_its_place(&message),
            "the rejection names its place: {message}"
        ),
    }
}

/// Generated Canaries valid enough to be built and decided in every phase.
static RAN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[test]
fn no_input_panics_and_every_rejection_names_its_place() {
    let mut total = 0;
    let canaries = examples("Canary");
    total += pass(
        "Canary",
        5000,
        |rng| mutate_one(rng, &canaries, INTERESTING),
        |text| {
            let result = inputs::canary_document(text);
            let ran = matches!(&result, Ok(f) if !f.iter().any(serin::validate::Finding::blocks_run));
            if ran {
                RAN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            document_check(result)
        },
    );
    let ran = RAN.load(std::sync::atomic::Ordering::Relaxed);
    assert!(ran >= 800, "only {ran} Canaries got as far as decide");
    let templates = examples("MetricTemplate");
    total += pass(
        "MetricTemplate",
        1500,
        |rng| mutate_one(rng, &templates, INTERESTING),
        |text| document_check(inputs::metric_template_document(text)),
    );
    let providers = examples("AlertProvider");
    total += pass(
        "AlertProvider",
        1000,
        |rng| mutate_one(rng, &providers, INTERESTING),
        |text| document_check(inputs::alert_provider_document(text)),
    );
    let queries = [
        "sum(rate(x{ns=\"{{ namespace }}\",w=~\"{{ target }}\"}[{{ interval }}]))",
        "{{ variables.reporter }} {{ name }} {{ service }} {{ ingress }} {{ route }}",
    ];
    total += pass(
        "template",
        1500,
        |rng| {
            let seed = queries[rng.random_range(0..queries.len())];
            let mut bytes = seed.as_bytes().to_vec();
            for _ in 0..rng.random_range(1..4) {
                let j = rng.random_range(0..bytes.len());
                bytes[j] = b"{} .$|\"()-"[rng.random_range(0..10)];
            }
            String::from_utf8_lossy(&bytes).into_owned()
        },
        |text| {
            if let Err(message) = inputs::template_query(text) {
                assert!(message.starts_with("template: "), "{message}");
            }
        },
    );
    total += pass(
        "duration",
        2000,
        |rng| {
            pieces(
                rng,
                &[
                    "0", "1", "9", ".", "h", "m", "s", "ms", "us", "µs", "ns", "-", "+", " ", "d",
                ],
                12,
            )
        },
        |text| {
            let _ = inputs::duration(text);
        },
    );
    let responses = [
        r#"{"resultType":"vector","result":[{"metric":{},"value":[1.0,"99.5"]}]}"#,
        r#"{"resultType":"scalar","result":[1.0,"NaN"]}"#,
        r#"{"resultType":"matrix","result":[{"metric":{"a":"b"},"values":[[1.0,"1"],[2.0,"2"]]}]}"#,
    ];
    total += pass(
        "Prometheus response",
        1000,
        |rng| {
            let seed = responses[rng.random_range(0..responses.len())];
            let mut bytes = seed.as_bytes().to_vec();
            let j = rng.random_range(0..bytes.len());
            bytes[j] = b"0\"{}[],.e-+Nx"[rng.random_range(0..13)];
            String::from_utf8_lossy(&bytes).into_owned()
        },
        |text| {
            let _ = inputs::prometheus_response(text);
        },
    );
    assert!(total >= 10_000, "{total} cases");
    println!("{total} generated inputs ({ran} Canaries decided in every phase), none panicked");
}
