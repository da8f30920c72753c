//! Which tests ran on a real control plane: each test bed that starts one appends a line
//! (`<API server version>\t<test>`) to a file in `$SERIN_TESTBED_REPORT_DIR`, and
//! `serin-testbed cluster-report` sums them up after a run. Does I/O (files).

use std::{collections::BTreeMap, path::Path};

/// The environment variable naming the report directory.
pub const REPORT_DIR_ENV: &str = "SERIN_TESTBED_REPORT_DIR";

/// Records that the current test started a real control plane of `version`.
pub fn record(version: &str) {
    use std::io::Write;
    let Some(dir) = std::env::var_os(REPORT_DIR_ENV).filter(|d| !d.is_empty()) else {
        return;
    };
    let dir = Path::new(&dir);
    let test = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map(str::to_owned)
        .or_else(|| std::env::args().next())
        .unwrap_or_default();
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let line = format!("{version}\t{binary}::{test}\n");
    let written = std::fs::create_dir_all(dir).and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("real-{}.tsv", std::process::id())))?
            .write_all(line.as_bytes())
    });
    if let Err(err) = written {
        eprintln!("serin-testbed: cannot record the run in {}: {err}", dir.display());
    }
}

/// Tests per API server version, from the files of a report directory.
pub fn summarize(dir: &Path) -> std::io::Result<BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tsv") {
            for line in std::fs::read_to_string(&path)?.lines() {
                if let Some((version, test)) = line.split_once('\t') {
                    out.entry(version.to_owned()).or_default().push(test.to_owned());
                }
            }
        }
    }
    for tests in out.values_mut() {
        tests.sort();
    }
    Ok(out)
}
