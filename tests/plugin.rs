//! Golden tests of what `kubectl serin get`, `explain` and the actions print, from the Canaries
//! of `tests/fixtures/plugin/` (and the requests of `tests/fixtures/plugin/requests/`) at a fixed
//! time. `SERIN_UPDATE_GOLDEN=1` rewrites the files of
//! `tests/golden/plugin/` (review the diff).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serin::{
    api::{Canary, CanaryAction},
    engine::Request,
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
        .filter(|p| p.is_file())
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

/// The requests made on the podinfo Canary.
fn requests() -> Vec<CanaryAction> {
    let text = std::fs::read_to_string(dir("fixtures").join("requests/podinfo.yaml")).expect("read");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| CanaryAction::deserialize(doc).expect("a CanaryAction"))
        .collect()
}

#[path = "support/golden.rs"]
mod support;

fn golden(name: &str, actual: &str) {
    support::assert_golden("plugin", name, actual);
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
    let rows: Vec<view::Row> = canaries.iter().map(|c| view::row(c, &[], NOW)).collect();
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
        let explanation = view::explain(&canary, &[], &history, NOW);
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

#[test]
fn a_paused_canary_shows_who_paused_it_and_the_requests_with_their_answers() {
    let asked: Vec<Request> = requests().iter().map(Request::of).collect();
    let podinfo = fixtures()
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some("podinfo"))
        .expect("podinfo");
    let row = view::row(&podinfo, &asked, NOW);
    assert_eq!(row.paused_by.as_deref(), Some("bob@example.com"));
    golden("get-paused.txt", &view::table(&[row], false, true));
    let explanation = view::explain(&podinfo, &asked, &events(), NOW);
    golden("explain-paused.txt", &view::explanation_text(&explanation));
    golden(
        "explain-paused.json",
        &(serde_json::to_string_pretty(&explanation).expect("json") + "\n"),
    );
}

#[test]
fn an_action_prints_serins_answer_or_fails_with_it() {
    let answers: Vec<String> = requests()
        .iter()
        .map(|a| match view::answer(a) {
            Some(Ok(done)) => format!("{}: ok: {done}", a.spec.action),
            Some(Err(ignored)) => format!("{}: error: {ignored}", a.spec.action),
            None => format!("{}: not answered yet", a.spec.action),
        })
        .collect();
    golden("answers.txt", &(answers.join("\n") + "\n"));
}
