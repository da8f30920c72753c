//! Golden tests of what `kubectl serin get` and `kubectl serin explain` print, from the Canaries
//! of `tests/fixtures/plugin/` at a fixed time. `SERIN_UPDATE_GOLDEN=1` rewrites the files of
//! `tests/golden/plugin/` (review the diff).

use std::path::{Path, PathBuf};

use serin::{
    api::Canary,
    plugin::view::{self, Happened},
};

fn dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(sub)
        .join("plugin")
}

/// 2026-12-05T10:00:35Z, 35 s after the progressing fixture's last status write.
const NOW: i64 = 1_796_464_835;

fn fixtures() -> Vec<Canary> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir("fixtures"))
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            serde_yaml::from_str(&std::fs::read_to_string(f).expect("read"))
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
        })
        .collect()
}

fn golden(name: &str, actual: &str) {
    let path = dir("golden").join(name);
    if std::env::var("SERIN_UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (SERIN_UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(
        expected == actual,
        "{} differs (SERIN_UPDATE_GOLDEN=1 rewrites it):\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

fn events() -> Vec<Happened> {
    let at = |s: i64| NOW - s;
    vec![
        Happened {
            at: at(300),
            warning: false,
            message: "New revision detected! Scaling up podinfo.test".into(),
            count: 1,
        },
        Happened {
            at: at(95),
            warning: false,
            message: "Advance podinfo.test canary weight 20".into(),
            count: 1,
        },
        Happened {
            at: at(35),
            warning: true,
            message: "Halt podinfo.test advancement success rate 98.75% < 99%".into(),
            count: 1,
        },
    ]
}

#[test]
fn get_prints_a_row_per_canary() {
    let canaries = fixtures();
    let rows: Vec<view::Row> = canaries.iter().map(|c| view::row(c, NOW)).collect();
    golden("get-all-namespaces.txt", &view::table(&rows, true, true));
    golden("get.txt", &view::table(&rows[1..], false, true));
    golden(
        "get.json",
        &(serde_json::to_string_pretty(&rows).expect("json") + "\n"),
    );
}

#[test]
fn explain_says_what_each_canary_waits_for() {
    for canary in fixtures() {
        let name = canary.metadata.name.clone().expect("name");
        let history = if name == "podinfo" { events() } else { Vec::new() };
        let explanation = view::explain(&canary, &history, NOW);
        golden(
            &format!("explain-{name}.txt"),
            &view::explanation_text(&explanation),
        );
        if name == "podinfo" {
            golden(
                "explain-podinfo.yaml",
                &serde_yaml::to_string(&explanation).expect("yaml"),
            );
        }
    }
}
