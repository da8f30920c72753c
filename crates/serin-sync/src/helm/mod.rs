//! The `helm` program, which renders charts and keeps releases for serin-sync: install, upgrade,
//! rollback, uninstall, test, history, package and pull, each a `helm` run with the kubeconfig
//! serin-sync was given (so releases are Helm's own, in Helm's storage, and `helm list`,
//! `helm history` and `helm rollback` agree with serin-sync). Does I/O (processes).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

pub mod post_render;

/// How serin-sync runs `helm`.
#[derive(Clone, Debug)]
pub struct Helm {
    /// The program (default `helm` on PATH).
    pub program: PathBuf,
    /// The kubeconfig `helm` talks to the cluster with.
    pub kubeconfig: Option<PathBuf>,
}

/// A kubeconfig (YAML) with which `helm` reaches the cluster as `config` does.
pub fn kubeconfig_of(config: &kube::Config) -> Result<String, String> {
    use base64::Engine;
    let ca = config.root_cert.as_ref().map(|certs| {
        let pem: String = certs
            .iter()
            .map(|der| {
                let b64 = base64::engine::general_purpose::STANDARD.encode(der);
                let lines: Vec<&str> = b64
                    .as_bytes()
                    .chunks(64)
                    .map(|c| std::str::from_utf8(c).unwrap_or_default())
                    .collect();
                format!(
                    "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                    lines.join("\n")
                )
            })
            .collect();
        base64::engine::general_purpose::STANDARD.encode(pem)
    });
    let mut cluster = serde_json::json!({ "server": config.cluster_url.to_string().trim_end_matches('/') });
    if let Some(ca) = ca {
        cluster["certificate-authority-data"] = ca.into();
    }
    if config.accept_invalid_certs {
        cluster["insecure-skip-tls-verify"] = true.into();
    }
    if let Some(name) = &config.tls_server_name {
        cluster["tls-server-name"] = name.clone().into();
    }
    let user =
        serde_json::to_value(&config.auth_info).map_err(|e| format!("the client's credentials: {e}"))?;
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "serin-sync", "cluster": cluster}],
        "users": [{"name": "serin-sync", "user": user}],
        "contexts": [{"name": "serin-sync", "context": {"cluster": "serin-sync", "user": "serin-sync", "namespace": config.default_namespace}}],
        "current-context": "serin-sync",
    });
    serde_yaml::to_string(&kubeconfig).map_err(|e| e.to_string())
}

/// A release revision, as `helm history -o json` lists it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Revision {
    pub revision: i64,
    #[serde(default)]
    pub updated: String,
    pub status: String,
    /// `<chart name>-<chart version>`.
    pub chart: String,
    #[serde(default)]
    pub app_version: String,
    #[serde(default)]
    pub description: String,
}

impl Revision {
    /// The chart's name and version, from `<name>-<version>` (the version is the part after the
    /// last `-` that starts a valid semver version).
    pub fn chart_name_version(&self) -> (String, String) {
        split_chart(&self.chart)
    }
}

/// `podinfo-6.0.3` as (`podinfo`, `6.0.3`); `my-chart-1.2.3-rc.1` as (`my-chart`, `1.2.3-rc.1`).
pub fn split_chart(chart: &str) -> (String, String) {
    for (i, _) in chart.match_indices('-') {
        let version = &chart[i + 1..];
        if semver::Version::parse(version).is_ok() {
            return (chart[..i].to_owned(), version.to_owned());
        }
    }
    (chart.to_owned(), String::new())
}

/// Options of an install or upgrade.
#[derive(Clone, Debug)]
pub struct Release<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub chart: &'a Path,
    pub values: &'a Path,
    pub timeout: Duration,
    pub wait: bool,
    pub wait_for_jobs: bool,
    pub disable_hooks: bool,
    pub disable_openapi_validation: bool,
    pub skip_crds: bool,
    pub create_namespace: bool,
    pub force: bool,
    pub cleanup_on_fail: bool,
    pub max_history: Option<i32>,
    /// `--kube-as-user` (a HelmRelease's `serviceAccountName`).
    pub impersonate: Option<String>,
    /// `--post-renderer` program and its arguments.
    pub post_renderer: Option<(PathBuf, Vec<String>)>,
}

/// A `helm` run that failed: its error output, trimmed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct HelmError(pub String);

impl Helm {
    fn command(&self, args: &[String], impersonate: Option<&str>) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.program);
        command.args(args);
        if let Some(kubeconfig) = &self.kubeconfig {
            command.arg("--kubeconfig").arg(kubeconfig);
        }
        if let Some(user) = impersonate {
            command.arg("--kube-as-user").arg(user);
        }
        command
            .env(
                "HELM_CACHE_HOME",
                std::env::temp_dir().join("serin-sync-helm/cache"),
            )
            .env(
                "HELM_CONFIG_HOME",
                std::env::temp_dir().join("serin-sync-helm/config"),
            )
            .env(
                "HELM_DATA_HOME",
                std::env::temp_dir().join("serin-sync-helm/data"),
            )
            .kill_on_drop(true);
        command
    }

    async fn run(
        &self,
        args: Vec<String>,
        impersonate: Option<&str>,
        limit: Duration,
    ) -> Result<String, HelmError> {
        let mut command = self.command(&args, impersonate);
        let output = tokio::time::timeout(limit, command.output())
            .await
            .map_err(|_| {
                HelmError(format!(
                    "helm {} did not finish within {limit:?}",
                    args.first().map_or("", String::as_str)
                ))
            })?
            .map_err(|e| HelmError(format!("cannot run {}: {e}", self.program.display())))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            let err = String::from_utf8_lossy(&output.stderr);
            let err = err.trim().trim_start_matches("Error: ").trim();
            Err(HelmError(if err.is_empty() {
                format!(
                    "helm {} failed ({})",
                    args.first().map_or("", String::as_str),
                    output.status
                )
            } else {
                err.to_owned()
            }))
        }
    }

    fn release_args(verb: &str, r: &Release) -> Vec<String> {
        let mut args: Vec<String> = vec![
            verb.into(),
            r.name.into(),
            r.chart.display().to_string(),
            "--namespace".into(),
            r.namespace.into(),
            "--values".into(),
            r.values.display().to_string(),
            "--timeout".into(),
            format!("{}s", r.timeout.as_secs().max(1)),
        ];
        let flags = [
            (r.wait, "--wait"),
            (r.wait && r.wait_for_jobs, "--wait-for-jobs"),
            (r.disable_hooks, "--no-hooks"),
            (r.disable_openapi_validation, "--disable-openapi-validation"),
            (r.skip_crds, "--skip-crds"),
        ];
        args.extend(
            flags
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, flag)| (*flag).to_owned()),
        );
        if let Some((program, extra)) = &r.post_renderer {
            args.push("--post-renderer".into());
            args.push(program.display().to_string());
            for arg in extra {
                args.push("--post-renderer-args".into());
                args.push(arg.clone());
            }
        }
        args
    }

    /// `helm install`.
    pub async fn install(&self, r: &Release<'_>) -> Result<(), HelmError> {
        let mut args = Self::release_args("install", r);
        if r.create_namespace {
            args.push("--create-namespace".into());
        }
        self.run(
            args,
            r.impersonate.as_deref(),
            r.timeout + Duration::from_secs(30),
        )
        .await
        .map(|_| ())
    }

    /// `helm upgrade`, with the values given only (as Flux: never reusing the last ones).
    pub async fn upgrade(&self, r: &Release<'_>) -> Result<(), HelmError> {
        let mut args = Self::release_args("upgrade", r);
        args.push("--reset-values".into());
        if r.force {
            args.push("--force".into());
        }
        if r.cleanup_on_fail {
            args.push("--cleanup-on-fail".into());
        }
        if let Some(max) = r.max_history {
            args.push("--history-max".into());
            args.push(max.to_string());
        }
        self.run(
            args,
            r.impersonate.as_deref(),
            r.timeout + Duration::from_secs(30),
        )
        .await
        .map(|_| ())
    }

    /// `helm rollback` to `revision` (the previous one when `None`), keeping at most
    /// `max_history` revisions.
    #[allow(clippy::too_many_arguments)]
    pub async fn rollback(
        &self,
        name: &str,
        namespace: &str,
        revision: Option<i64>,
        timeout: Duration,
        wait: bool,
        max_history: Option<i32>,
        impersonate: Option<&str>,
    ) -> Result<(), HelmError> {
        let mut args: Vec<String> = vec!["rollback".into(), name.into()];
        if let Some(r) = revision {
            args.push(r.to_string());
        }
        args.extend([
            "--namespace".into(),
            namespace.into(),
            "--timeout".into(),
            format!("{}s", timeout.as_secs().max(1)),
        ]);
        if wait {
            args.push("--wait".into());
        }
        if let Some(max) = max_history {
            args.push("--history-max".into());
            args.push(max.to_string());
        }
        self.run(args, impersonate, timeout + Duration::from_secs(30))
            .await
            .map(|_| ())
    }

    /// `helm uninstall`.
    pub async fn uninstall(
        &self,
        name: &str,
        namespace: &str,
        keep_history: bool,
        disable_hooks: bool,
        timeout: Duration,
        impersonate: Option<&str>,
    ) -> Result<(), HelmError> {
        let mut args: Vec<String> = vec![
            "uninstall".into(),
            name.into(),
            "--namespace".into(),
            namespace.into(),
            "--timeout".into(),
            format!("{}s", timeout.as_secs().max(1)),
        ];
        if keep_history {
            args.push("--keep-history".into());
        }
        if disable_hooks {
            args.push("--no-hooks".into());
        }
        self.run(args, impersonate, timeout + Duration::from_secs(30))
            .await
            .map(|_| ())
    }

    /// `helm test`: the number of test hooks that ran.
    pub async fn test(
        &self,
        name: &str,
        namespace: &str,
        timeout: Duration,
        impersonate: Option<&str>,
    ) -> Result<usize, HelmError> {
        let args: Vec<String> = vec![
            "test".into(),
            name.into(),
            "--namespace".into(),
            namespace.into(),
            "--timeout".into(),
            format!("{}s", timeout.as_secs().max(1)),
        ];
        let out = self
            .run(args, impersonate, timeout + Duration::from_secs(30))
            .await?;
        Ok(out
            .lines()
            .filter(|l| l.trim_start().starts_with("TEST SUITE:"))
            .count()
            .max(
                out.lines()
                    .filter(|l| l.trim_start().starts_with("Phase:"))
                    .count(),
            ))
    }

    /// The release's revisions, oldest first (empty when it does not exist).
    pub async fn history(
        &self,
        name: &str,
        namespace: &str,
        impersonate: Option<&str>,
    ) -> Result<Vec<Revision>, HelmError> {
        let args: Vec<String> = vec![
            "history".into(),
            name.into(),
            "--namespace".into(),
            namespace.into(),
            "--max".into(),
            "256".into(),
            "--output".into(),
            "json".into(),
        ];
        match self.run(args, impersonate, Duration::from_secs(60)).await {
            Ok(out) => {
                serde_json::from_str(&out).map_err(|e| HelmError(format!("reading helm history: {e}")))
            }
            Err(HelmError(m)) if m.contains("release: not found") => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The values a revision was released with (`helm get values --all` minus the chart's: the
    /// user-supplied values), as JSON.
    pub async fn values(
        &self,
        name: &str,
        namespace: &str,
        revision: i64,
        impersonate: Option<&str>,
    ) -> Result<serde_json::Value, HelmError> {
        let args: Vec<String> = vec![
            "get".into(),
            "values".into(),
            name.into(),
            "--namespace".into(),
            namespace.into(),
            "--revision".into(),
            revision.to_string(),
            "--output".into(),
            "json".into(),
        ];
        let out = self.run(args, impersonate, Duration::from_secs(60)).await?;
        let values: serde_json::Value = serde_json::from_str(out.trim())
            .map_err(|e| HelmError(format!("reading helm get values: {e}")))?;
        Ok(if values.is_null() {
            serde_json::json!({})
        } else {
            values
        })
    }

    /// The manifest of the release's current revision.
    pub async fn manifest(
        &self,
        name: &str,
        namespace: &str,
        impersonate: Option<&str>,
    ) -> Result<String, HelmError> {
        let args: Vec<String> = vec![
            "get".into(),
            "manifest".into(),
            name.into(),
            "--namespace".into(),
            namespace.into(),
        ];
        self.run(args, impersonate, Duration::from_secs(60)).await
    }

    /// `helm package DIR --destination OUT [--version V]`: the package's path.
    pub async fn package(&self, dir: &Path, out: &Path, version: Option<&str>) -> Result<PathBuf, HelmError> {
        let mut args: Vec<String> = vec![
            "package".into(),
            dir.display().to_string(),
            "--destination".into(),
            out.display().to_string(),
        ];
        if let Some(v) = version {
            args.push("--version".into());
            args.push(v.into());
        }
        let printed = self.run(args, None, Duration::from_secs(120)).await?;
        // "Successfully packaged chart and saved it to: /out/podinfo-6.0.3.tgz"
        printed
            .rsplit_once(": ")
            .map(|(_, path)| PathBuf::from(path.trim()))
            .ok_or_else(|| HelmError(format!("helm package printed no path: {printed}")))
    }

    /// `helm pull oci://...` into `dest`: the package's path.
    pub async fn pull(
        &self,
        reference: &str,
        version: Option<&str>,
        dest: &Path,
        plain_http: bool,
    ) -> Result<PathBuf, HelmError> {
        let mut args: Vec<String> = vec![
            "pull".into(),
            reference.into(),
            "--destination".into(),
            dest.display().to_string(),
        ];
        if let Some(v) = version.filter(|v| !v.is_empty() && *v != "*") {
            args.push("--version".into());
            args.push(v.into());
        }
        if plain_http {
            args.push("--plain-http".into());
        }
        self.run(args, None, Duration::from_secs(120)).await?;
        std::fs::read_dir(dest)
            .map_err(|e| HelmError(e.to_string()))?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "tgz"))
            .ok_or_else(|| HelmError(format!("helm pull {reference} left no package")))
    }

    /// `helm show chart PACKAGE`: the chart's name and version.
    pub async fn show_chart(&self, chart: &Path) -> Result<(String, String), HelmError> {
        let args: Vec<String> = vec!["show".into(), "chart".into(), chart.display().to_string()];
        let out = self.run(args, None, Duration::from_secs(60)).await?;
        #[derive(Deserialize)]
        struct Meta {
            name: String,
            version: String,
        }
        let meta: Meta =
            serde_yaml::from_str(&out).map_err(|e| HelmError(format!("reading Chart.yaml: {e}")))?;
        Ok((meta.name, meta.version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_names_and_versions_split_at_the_version() {
        assert_eq!(split_chart("podinfo-6.0.3"), ("podinfo".into(), "6.0.3".into()));
        assert_eq!(
            split_chart("my-chart-1.2.3-rc.1"),
            ("my-chart".into(), "1.2.3-rc.1".into())
        );
        assert_eq!(
            split_chart("demo-0.1.0+4e5cbb7b97d0"),
            ("demo".into(), "0.1.0+4e5cbb7b97d0".into())
        );
        assert_eq!(split_chart("weird"), ("weird".into(), String::new()));
    }
}
