//! The Kubernetes components a real test-bed cluster is built from, pinned by version, and the
//! Go module that builds each one. Pure: plans only; `build.rs` runs them.
//!
//! `k8s.io/kubernetes` cannot be installed with `go install pkg@version`: its go.mod requires
//! every staging module (`k8s.io/api`, `k8s.io/client-go`, ...) at `v0.0.0` and replaces it with
//! a path inside the repository. A module of our own with a `replace` from each staging module to
//! its published tag (`v1.36.3` <-> `v0.36.3`) builds the commands instead.

/// One Go module built into a cache directory of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Component {
    /// The cache directory's prefix, and what messages call it.
    pub name: &'static str,
    /// The upstream module and its pinned version.
    pub module: &'static str,
    pub version: &'static str,
    /// The main packages to build; each becomes `bin/<last path element>`.
    pub packages: &'static [&'static str],
    /// Packages whose string variables `-X` sets to the version (Kubernetes' version stamping).
    pub stamp: Stamp,
}

/// How a component learns its own version at link time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamp {
    /// The module's own version constants are right already.
    None,
    /// Kubernetes' `gitVersion`, `gitMajor` and `gitMinor` (as `hack/lib/version.sh` sets them).
    Kubernetes,
}

/// Kubernetes' control plane and kubectl.
pub const KUBERNETES: Component = Component {
    name: "kubernetes",
    module: "k8s.io/kubernetes",
    version: "v1.36.3",
    packages: &[
        "k8s.io/kubernetes/cmd/kube-apiserver",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        "k8s.io/kubernetes/cmd/kube-scheduler",
        "k8s.io/kubernetes/cmd/kubectl",
    ],
    stamp: Stamp::Kubernetes,
};

/// etcd, the version kubeadm pairs with Kubernetes 1.36's minor line.
pub const ETCD: Component = Component {
    name: "etcd",
    module: "go.etcd.io/etcd/server/v3",
    version: "v3.6.17",
    packages: &["go.etcd.io/etcd/server/v3"],
    stamp: Stamp::None,
};

/// kwok: fake nodes and kubelets, so Pods become Running and Ready without containers.
pub const KWOK: Component = Component {
    name: "kwok",
    module: "sigs.k8s.io/kwok",
    version: "v0.8.0",
    packages: &["sigs.k8s.io/kwok/cmd/kwok"],
    stamp: Stamp::None,
};

/// The Helm CLI.
pub const HELM: Component = Component {
    name: "helm",
    module: "helm.sh/helm/v3",
    version: "v3.22.0",
    packages: &["helm.sh/helm/v3/cmd/helm"],
    stamp: Stamp::None,
};

/// Everything `serin-testbed build-cluster` builds.
pub const ALL: [Component; 4] = [KUBERNETES, ETCD, KWOK, HELM];

impl Component {
    /// The cache directory's name: one per component and version.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }

    /// The binaries the build leaves in `bin/`.
    pub fn binaries(&self) -> Vec<&'static str> {
        self.packages.iter().map(|p| binary_name(p)).collect()
    }

    /// `-ldflags` for `go build`.
    pub fn ldflags(&self) -> String {
        let mut flags = vec!["-s".to_owned(), "-w".to_owned()];
        if self.stamp == Stamp::Kubernetes {
            let (major, minor) = major_minor(self.version);
            for package in ["k8s.io/component-base/version", "k8s.io/client-go/pkg/version"] {
                flags.push(format!("-X {package}.gitVersion={}", self.version));
                flags.push(format!("-X {package}.gitMajor={major}"));
                flags.push(format!("-X {package}.gitMinor={minor}"));
                flags.push(format!("-X {package}.gitTreeState=clean"));
            }
        }
        flags.join(" ")
    }
}

/// `go build -o bin/` names a binary after the last element of its package path, skipping a
/// major-version suffix (`go.etcd.io/etcd/server/v3` builds `server`, so it is renamed `etcd`).
pub fn binary_name(package: &str) -> &str {
    match package {
        "go.etcd.io/etcd/server/v3" => "etcd",
        _ => package.rsplit('/').next().unwrap_or(package),
    }
}

/// `("1", "36")` for `v1.36.3`.
fn major_minor(version: &str) -> (&str, &str) {
    let mut parts = version.trim_start_matches('v').split('.');
    (parts.next().unwrap_or("0"), parts.next().unwrap_or("0"))
}

/// The published tag of a Kubernetes staging module for a Kubernetes version: `v1.36.3` ->
/// `v0.36.3`.
pub fn staging_version(kubernetes: &str) -> String {
    format!("v0.{}", kubernetes.trim_start_matches("v1."))
}

/// The staging modules a Kubernetes go.mod replaces with paths inside its repository
/// (`k8s.io/api => ./staging/src/k8s.io/api`).
pub fn staging_modules(go_mod: &str) -> Vec<String> {
    go_mod
        .lines()
        .filter_map(|line| {
            let line = line.trim().trim_start_matches("replace").trim();
            let (module, target) = line.split_once("=>")?;
            target
                .trim()
                .starts_with("./staging/")
                .then(|| module.split_whitespace().next().unwrap_or_default().to_owned())
        })
        .filter(|m| !m.is_empty())
        .collect()
}

/// The `go` and `godebug` directives of an upstream go.mod, which the building module copies so
/// that the binaries run with upstream's GODEBUG defaults.
pub fn go_directives(go_mod: &str) -> (Option<String>, Option<String>) {
    let value = |prefix: &str| {
        go_mod
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_owned())
    };
    (value("go "), value("godebug "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_replacements_are_read_from_the_upstream_go_mod() {
        let go_mod = "module k8s.io/kubernetes\n\ngo 1.26.0\n\ngodebug default=go1.26\n\nreplace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n\tk8s.io/client-go => ./staging/src/k8s.io/client-go\n\tgithub.com/other/mod => github.com/fork/mod v1.0.0\n)\n\nreplace k8s.io/kubectl => ./staging/src/k8s.io/kubectl\n";
        assert_eq!(
            staging_modules(go_mod),
            ["k8s.io/api", "k8s.io/client-go", "k8s.io/kubectl"]
        );
        assert_eq!(
            go_directives(go_mod),
            (Some("1.26.0".into()), Some("default=go1.26".into()))
        );
    }

    #[test]
    fn staging_modules_follow_the_kubernetes_minor_and_patch() {
        assert_eq!(staging_version("v1.36.3"), "v0.36.3");
        assert_eq!(major_minor("v1.36.3"), ("1", "36"));
    }

    #[test]
    fn kubernetes_binaries_know_their_version() {
        let flags = KUBERNETES.ldflags();
        assert!(flags.contains("-X k8s.io/component-base/version.gitVersion=v1.36.3"));
        assert!(flags.contains("-X k8s.io/client-go/pkg/version.gitMinor=36"));
        assert_eq!(ETCD.ldflags(), "-s -w");
    }

    #[test]
    fn binaries_are_named_as_the_commands() {
        assert_eq!(
            KUBERNETES.binaries(),
            [
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kubectl"
            ]
        );
        assert_eq!(ETCD.binaries(), ["etcd"]);
        assert_eq!(HELM.dir_name(), "helm-v3.22.0");
    }
}
