//! The real Kubernetes control plane the test bed can run instead of its API emulator:
//! `components` pins what it is built from, `build` builds it into a per-version cache, `kwok`
//! configures the fake nodes, and `real` starts and stops it.

pub mod audit;
pub mod build;
pub mod components;
pub mod kwok;
pub mod real;
pub mod report;

/// Which API server a test bed runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClusterKind {
    /// serin-testbed's own API emulator, in process: starts in milliseconds.
    #[default]
    Emulator,
    /// etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, as processes.
    Real,
}

/// The environment variable that picks the cluster kind (`emulator` or `real`).
pub const CLUSTER_ENV: &str = "SERIN_TESTBED_CLUSTER";

impl std::str::FromStr for ClusterKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "emulator" => Ok(Self::Emulator),
            "real" => Ok(Self::Real),
            other => Err(format!(
                "unknown cluster kind {other:?}: expected `emulator` or `real`"
            )),
        }
    }
}

impl ClusterKind {
    /// The kind `SERIN_TESTBED_CLUSTER` names, the emulator when unset. An unknown value is an
    /// error rather than a silent fallback, so a typo never runs a suite on the wrong server.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var(CLUSTER_ENV) {
            Ok(v) if !v.is_empty() => v.parse().map_err(|e| format!("{CLUSTER_ENV}: {e}")),
            _ => Ok(Self::Emulator),
        }
    }
}
