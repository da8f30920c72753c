//! `serin simulate` on a recording, without a cluster or Prometheus: the table and the JSON are
//! golden-tested (`SERIN_UPDATE_GOLDEN=1` rewrites `tests/golden/simulate/`), the replay is the
//! same every time, and a recording that does not fit the Canary is refused naming the metric.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/simulate")
        .join(name)
}

fn simulate(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_serin"))
        .arg("simulate")
        .args(args)
        .output()
        .expect("serin runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[path = "support/golden.rs"]
mod support;

fn golden(name: &str, actual: &str) {
    support::assert_golden("simulate", name, actual);
}

#[test]
fn a_recording_replays_to_the_same_table_every_time() {
    let canary = fixture("canary.yaml");
    let recording = fixture("recording.yaml");
    let args = [
        canary.to_str().expect("utf8"),
        "--recorded",
        recording.to_str().expect("utf8"),
    ];
    let (ok, table, err) = simulate(&args);
    assert!(ok, "{err}");
    assert!(
        table.contains("Would have rolled back at 2026-12-05T10:00:40Z (+40s)."),
        "{table}"
    );
    golden("replay.txt", &table);
    assert_eq!(simulate(&args).1, table, "deterministic");
    let (ok, json, err) = simulate(&[&args[..], &["-o", "json"]].concat());
    assert!(ok, "{err}");
    golden("replay.json", &json);
    let replay: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(replay["outcome"], "rolled back");

    // Only up to the third step: no decision yet.
    let (ok, table, _) = simulate(&[&args[..], &["--to", "2026-12-05T10:00:25Z"]].concat());
    assert!(ok);
    assert!(
        table.contains("No decision by 2026-12-05T10:00:25Z (+25s): still Progressing at 30%."),
        "{table}"
    );
}

#[test]
fn a_recording_that_does_not_fit_the_canary_is_refused_naming_the_metric() {
    let dir = std::env::temp_dir().join(format!("serin-simulate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    // The Canary's success rate now looks over 1m: the recorded 30s query no longer fits.
    let changed = std::fs::read_to_string(fixture("canary.yaml"))
        .expect("canary")
        .replacen("interval: 30s", "interval: 1m", 1);
    let canary = dir.join("canary.yaml");
    std::fs::write(&canary, changed).expect("write");
    let recording = fixture("recording.yaml");
    let (ok, _, err) = simulate(&[
        canary.to_str().expect("utf8"),
        "--recorded",
        recording.to_str().expect("utf8"),
    ]);
    assert!(!ok);
    assert!(
        err.contains("recorded metric request-success-rate with the query") && err.contains("record again"),
        "{err}"
    );
    // Without a recording, a time range is needed.
    let (ok, _, err) = simulate(&[
        canary.to_str().expect("utf8"),
        "--prometheus",
        "http://127.0.0.1:1",
    ]);
    assert!(!ok);
    assert!(err.contains("--from is needed"), "{err}");
    // An unreachable Prometheus is named.
    let (ok, _, err) = simulate(&[
        canary.to_str().expect("utf8"),
        "--prometheus",
        "http://127.0.0.1:1",
        "--from",
        "1796464800",
        "--to",
        "1796464860",
    ]);
    assert!(!ok);
    assert!(
        err.contains("metric request-success-rate: asking http://127.0.0.1:1"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
