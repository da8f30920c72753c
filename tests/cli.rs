//! The `serin` binary as a user runs it: `crd`, `lint` and `run`'s start-up errors.

use std::{
    io::Write,
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

fn serin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_serin"))
        .args(args)
        .output()
        .expect("serin runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn committed_crds_are_what_the_code_generates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("crds/ exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let committed: String = files
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("readable"))
        .collect();
    let generated = serin::cli::crd::render().expect("renders");
    assert!(
        committed == generated,
        "crds/ is stale: run `cargo run -- crd --out-dir crds` (or `make crds`) and commit the result"
    );
    for (name, yaml) in serin::cli::crd::files().expect("renders") {
        let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        assert!(on_disk == yaml, "crds/{name} differs from the generated CRD");
    }
    let output = serin(&["crd"]);
    assert!(output.status.success());
    assert_eq!(
        stdout(&output),
        committed,
        "`serin crd` must print crds/*.yaml concatenated"
    );
}

fn write_temp(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writes");
    path
}

const CANARY: &str = r#"apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  service:
    port: 9898
  analysis:
    interval: 15s
    threshold: 5
    maxWeight: 50
    stepWeight: 10
    metrics:
    - name: request-success-rate
      thresholdRange:
        min: 99
      interval: 1m
"#;

#[test]
fn lint_exit_status_and_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write_temp(dir.path(), "good.yaml", CANARY);
    let output = serin(&["lint", good.to_str().expect("utf8")]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(
        stdout(&output).contains("1 object(s) checked"),
        "{}",
        stdout(&output)
    );

    let both = write_temp(
        dir.path(),
        "both.yaml",
        &CANARY.replace("stepWeight: 10", "stepWeight: 10\n    iterations: 5"),
    );
    let output = serin(&["lint", both.to_str().expect("utf8")]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(
        text.contains("both.yaml: Canary/test/podinfo: spec.analysis:"),
        "{text}"
    );

    let steps = write_temp(
        dir.path(),
        "steps.yaml",
        &CANARY.replace("stepWeight: 10", "stepWeights: [10, 5]"),
    );
    let output = serin(&["lint", steps.to_str().expect("utf8")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("spec.analysis.stepWeights"),
        "{}",
        stdout(&output)
    );

    // A directory lints every YAML file below it: one bad file fails the run.
    std::fs::create_dir(dir.path().join("nested")).expect("mkdir");
    write_temp(&dir.path().join("nested"), "bad.yml", "kind: [unclosed");
    let output = serin(&["lint", dir.path().to_str().expect("utf8")]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(
        text.contains("nested/bad.yml: document 1: invalid YAML"),
        "{text}"
    );
    assert!(text.contains("4 file(s)"), "{text}");

    let output = serin(&["lint", dir.path().join("missing.yaml").to_str().expect("utf8")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("missing.yaml: file: cannot read"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn lint_accepts_flagger_examples() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/flagger/canaries");
    if !dir.is_dir() {
        eprintln!(
            "SKIP: Flagger fixtures not found at {} (the compatibility suite needs ../shared)",
            dir.display()
        );
        return;
    }
    let output = serin(&["lint", dir.to_str().expect("utf8")]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(stdout(&output).contains("0 error(s)"), "{}", stdout(&output));
}

fn kubeconfig(dir: &Path, server: &str) -> std::path::PathBuf {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
    );
    write_temp(dir, "kubeconfig", &text)
}

/// Runs `serin run` and waits for it to exit, up to `deadline`.
fn run_until_exit(kubeconfig: &Path, deadline: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_serin"))
        .args(["run", "--admin-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("waits") {
            let output = child.wait_with_output().expect("output");
            return (
                status.code(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            );
        }
        if start.elapsed() > deadline {
            child.kill().expect("kills");
            let output = child.wait_with_output().expect("output");
            return (None, String::from_utf8_lossy(&output.stderr).into_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn run_against_a_refusing_server_fails_fast_naming_it() {
    // A port that was just free: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("binds")
        .local_addr()
        .expect("addr")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = format!("http://127.0.0.1:{port}");
    let (code, stderr) = run_until_exit(&kubeconfig(dir.path(), &server), Duration::from_secs(10));
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(
        stderr.contains("cannot reach the Kubernetes API server"),
        "{stderr}"
    );
}

#[test]
fn run_against_a_silent_server_times_out_naming_it() {
    // Accepts connections (the kernel's backlog) but never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let port = listener.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, stderr) = run_until_exit(
        &kubeconfig(dir.path(), &format!("http://127.0.0.1:{port}")),
        Duration::from_secs(10),
    );
    drop(listener);
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
}

#[test]
fn run_with_a_broken_kubeconfig_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    std::fs::File::create(&path)
        .expect("creates")
        .write_all(b"{ this is not: a kubeconfig")
        .expect("writes");
    let (code, stderr) = run_until_exit(&path, Duration::from_secs(10));
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {stderr}");
    assert!(stderr.contains("kubeconfig"), "{stderr}");
}
