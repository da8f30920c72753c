//! Runs kustomize: the `kustomize` program when it is on PATH, else `kubectl kustomize`, with
//! Flux's options (files may be loaded from anywhere in the artifact, no plugins, no Helm).
//! Does I/O (a process).

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
            let stderr = String::from_utf8_lossy(&output.stderr);
            Err(stderr.trim().trim_start_matches("error: ").to_owned())
        }
    }
}
