//! Builds the real cluster's components from the Go module proxy into a cache directory keyed
//! by component and version, once per machine: later calls find the stamp file and return at
//! once. Concurrent callers (parallel test processes) serialize on a lock file. Does I/O (files,
//! processes).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, bail};

use super::components::{self, Component};

/// Where built components live: `$SERIN_TESTBED_CACHE`, else `$XDG_CACHE_HOME/serin-testbed`,
/// else `~/.cache/serin-testbed`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("SERIN_TESTBED_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("serin-testbed")
}

/// The directory holding a component's binaries.
pub fn bin_dir(component: &Component) -> PathBuf {
    cache_root().join(component.dir_name()).join("bin")
}

/// The path of one built binary, such as `kube-apiserver`.
pub fn binary(component: &Component, name: &str) -> PathBuf {
    bin_dir(component).join(name)
}

const STAMP: &str = "built";

/// Whether every binary of a component is built.
pub fn is_built(component: &Component) -> bool {
    let dir = cache_root().join(component.dir_name());
    dir.join(STAMP).is_file()
        && component
            .binaries()
            .iter()
            .all(|b| dir.join("bin").join(b).is_file())
}

/// Builds every component that is not built yet, printing progress to stderr.
pub fn ensure_all() -> anyhow::Result<()> {
    for component in components::ALL {
        ensure(&component)?;
    }
    Ok(())
}

/// Builds a component unless it is built already.
pub fn ensure(component: &Component) -> anyhow::Result<()> {
    if is_built(component) {
        return Ok(());
    }
    let root = cache_root();
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let lock_path = root.join(format!("{}.lock", component.dir_name()));
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    // Another process may have built it while this one waited for the lock.
    if is_built(component) {
        return Ok(());
    }
    let started = Instant::now();
    eprintln!(
        "serin-testbed: building {} {} from the Go module proxy into {} (once per machine; minutes)",
        component.module,
        component.version,
        root.join(component.dir_name()).display()
    );
    build(component, &root.join(component.dir_name()))
        .with_context(|| format!("building {} {}", component.module, component.version))?;
    eprintln!(
        "serin-testbed: built {} in {:.0}s",
        component.binaries().join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn go(dir: &Path) -> Command {
    let mut cmd = Command::new("go");
    cmd.current_dir(dir)
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-mod=mod -buildvcs=false")
        .env("GOTOOLCHAIN", "local");
    // The checksum database is not reachable from every machine the test bed runs on; the
    // module proxy is, and the pinned versions are what it serves.
    if std::env::var_os("GOSUMDB").is_none() {
        cmd.env("GOSUMDB", "off");
    }
    cmd
}

fn run(mut cmd: Command, what: &str) -> anyhow::Result<String> {
    let output = match cmd.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("`go` is not on PATH: the real cluster is built from Go modules (Go 1.26 or newer)")
        }
        Err(e) => return Err(e).with_context(|| format!("cannot run {what}")),
    };
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn build(component: &Component, dir: &Path) -> anyhow::Result<()> {
    // Start from nothing: a half-written module from an interrupted build must not linger.
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir.join("bin")).with_context(|| format!("cannot create {}", dir.display()))?;
    let module_version = format!("{}@{}", component.module, component.version);
    // The upstream go.mod: its go/godebug lines, and for Kubernetes its staging modules.
    let mut download = go(dir);
    download.args(["mod", "download", "-json", &module_version]);
    // `go mod download` outside a module needs no go.mod; run it from the cache root.
    download
        .current_dir(dir.parent().unwrap_or(dir))
        .env("GOFLAGS", "-buildvcs=false");
    let info: serde_json::Value = serde_json::from_str(&run(download, "go mod download")?)
        .context("go mod download printed no JSON")?;
    let upstream_mod = info
        .get("GoMod")
        .and_then(serde_json::Value::as_str)
        .context("go mod download named no go.mod")?;
    let upstream_mod =
        std::fs::read_to_string(upstream_mod).with_context(|| format!("cannot read {upstream_mod}"))?;
    let (go_line, godebug) = components::go_directives(&upstream_mod);
    let mut go_mod = format!("module local/serin-testbed-{}\n", component.name);
    if let Some(v) = go_line {
        go_mod.push_str(&format!("\ngo {v}\n"));
    }
    if let Some(v) = godebug {
        go_mod.push_str(&format!("\ngodebug {v}\n"));
    }
    if component.stamp == components::Stamp::Kubernetes {
        let staging = components::staging_version(component.version);
        let modules = components::staging_modules(&upstream_mod);
        if modules.is_empty() {
            bail!("the go.mod of {module_version} replaces no staging modules; is the version right?");
        }
        go_mod.push_str("\nreplace (\n");
        for m in modules {
            go_mod.push_str(&format!("\t{m} => {m} {staging}\n"));
        }
        go_mod.push_str(")\n");
    }
    std::fs::write(dir.join("go.mod"), go_mod).context("cannot write go.mod")?;
    let mut get = go(dir);
    get.arg("get");
    for package in component.packages {
        get.arg(format!("{package}@{}", component.version));
    }
    run(get, "go get")?;
    let mut build = go(dir);
    build.args(["build", "-trimpath", "-ldflags", &component.ldflags()]);
    match component.packages {
        [one] => {
            build
                .arg("-o")
                .arg(dir.join("bin").join(components::binary_name(one)))
                .arg(one);
        }
        many => {
            build.arg("-o").arg(format!("{}/", dir.join("bin").display()));
            build.args(many.iter());
        }
    }
    run(build, "go build")?;
    for binary in component.binaries() {
        if !dir.join("bin").join(binary).is_file() {
            bail!("go build left no bin/{binary}");
        }
    }
    std::fs::write(
        dir.join(STAMP),
        format!("{module_version}\n{}\n", component.binaries().join("\n")),
    )
    .context("cannot write the build stamp")?;
    Ok(())
}
