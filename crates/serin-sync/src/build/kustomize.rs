//! Runs kustomize: the `kustomize` program when it is on PATH, else `kubectl kustomize`, with
//! Flux's options (files may be loaded from anywhere in the artifact, which `fence` checks
//! first; no plugins, no Helm). Does I/O (a process).

use std::{path::Path, process::Stdio, time::Duration};

use tokio::process::Command;

/// How long one build may take.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(120);

/// The kustomize invocation found on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kustomize {
    /// The standalone `kustomize` binary.
    Standalone,
    /// `kubectl kustomize`.
    Kubectl,
}

impl Kustomize {
    /// `kustomize` when it is on PATH, else `kubectl`.
    pub fn detect() -> Self {
        let on_path = |name: &str| {
            std::env::var_os("PATH")
                .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(name).is_file()))
        };
        if on_path("kustomize") {
            Self::Standalone
        } else {
            Self::Kubectl
        }
    }

    /// Builds `dir` and returns the multi-document YAML, or kustomize's error text.
    pub async fn build(&self, dir: &Path) -> Result<String, String> {
        let mut cmd = match self {
            Self::Standalone => {
                let mut c = Command::new("kustomize");
                c.arg("build");
                c
            }
            Self::Kubectl => {
                let mut c = Command::new("kubectl");
                c.arg("kustomize");
                c
            }
        };
        cmd.arg("--load-restrictor=LoadRestrictionsNone")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let output = tokio::time::timeout(BUILD_TIMEOUT, cmd.output())
            .await
            .map_err(|_| format!("timed out after {}s", BUILD_TIMEOUT.as_secs()))?
            .map_err(|e| format!("cannot run {self:?} kustomize: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(error_text(&String::from_utf8_lossy(&output.stderr)))
        }
    }
}

/// The klog line in which `kubectl kustomize` reports a failure, up to the quoted error.
const KLOG_FAILURE: &str = "] \"command failed\" err=";

/// kustomize's error from its standard error, as Flux reports it (kustomize's own text): without
/// the `error: ` prefix, and without the klog line around it that `kubectl kustomize` prints
/// (`E1122 09:11:43.160216 32397 run.go:72] "command failed" err="…"`). Pure.
pub fn error_text(stderr: &str) -> String {
    let text = stderr.trim();
    if let Some(at) = text.find(KLOG_FAILURE)
        && let Some(err) = go_unquote(&text[at + KLOG_FAILURE.len()..])
    {
        return err;
    }
    text.trim_start_matches("error: ")
        .trim_start_matches("Error: ")
        .to_owned()
}

/// The content of the Go-quoted string `text` starts with.
fn go_unquote(text: &str) -> Option<String> {
    let mut chars = text.strip_prefix('"')?.chars();
    let mut out = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                escaped => out.push(escaped),
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_kustomize_wrote_them() {
        let klog = r#"E1122 09:11:43.160216   32397 run.go:72] "command failed" err="accumulating components: loader.New \"must build at directory: '/tmp/k/absent': no such file or directory\"""#;
        assert_eq!(
            error_text(&format!("{klog}\n")),
            r#"accumulating components: loader.New "must build at directory: '/tmp/k/absent': no such file or directory""#
        );
        assert_eq!(
            error_text("error: accumulating resources: missing.yaml\n"),
            "accumulating resources: missing.yaml"
        );
        assert_eq!(
            error_text("Error: accumulating resources: missing.yaml"),
            "accumulating resources: missing.yaml"
        );
        // Not a klog line after all: the text as it is.
        assert_eq!(
            error_text(r#"x] "command failed" err=unquoted"#),
            r#"x] "command failed" err=unquoted"#
        );
    }
}
