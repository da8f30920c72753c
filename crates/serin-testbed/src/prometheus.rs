//! The real Prometheus server (Debian's `prometheus` package), started for a test bed: a config
//! that scrapes the simulated data plane every second, storage in a temporary directory, a
//! listener on 127.0.0.1, and a wait for `/-/ready`. The process is killed when the handle drops,
//! so tests leave nothing behind. Does I/O (process, files, HTTP).

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::{io::AsyncReadExt, process::Child};

/// Why Prometheus could not start.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    #[error("`prometheus` is not on PATH; install it with `apt-get install -y prometheus`")]
    NotInstalled,
    #[error("cannot prepare Prometheus' directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("Prometheus exited before it was ready ({status}): {stderr}")]
    Exited { status: String, stderr: String },
    #[error("Prometheus was not ready at {url} within {seconds}s")]
    NotReady { url: String, seconds: u64 },
}

/// A running Prometheus.
#[derive(Debug)]
pub struct Prometheus {
    url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

/// Finds `prometheus` in a PATH-style list of directories.
pub fn find_binary(path: &str) -> Option<PathBuf> {
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join("prometheus"))
        .find(|p| p.is_file())
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The scrape configuration for a metrics target.
pub fn config(target: SocketAddr) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: istio-mesh\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['{target}']\n"
    )
}

impl Prometheus {
    /// Starts Prometheus (found on PATH) scraping `target` and waits until it is ready.
    pub async fn start(target: SocketAddr) -> Result<Self, PrometheusError> {
        Self::start_from_path(target, &std::env::var("PATH").unwrap_or_default()).await
    }

    /// As [`Prometheus::start`], looking for the binary in `path` (a PATH-style list).
    pub async fn start_from_path(target: SocketAddr, path: &str) -> Result<Self, PrometheusError> {
        let binary = find_binary(path).ok_or(PrometheusError::NotInstalled)?;
        let dir = tempfile::Builder::new().prefix("serin-prometheus-").tempdir()?;
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config(target))?;
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let mut child = tokio::process::Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=2h")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    PrometheusError::NotInstalled
                } else {
                    PrometheusError::Io(e)
                }
            })?;
        let deadline = Duration::from_secs(30);
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                let mut stderr = String::new();
                if let Some(mut err) = child.stderr.take() {
                    let _ = err.read_to_string(&mut stderr).await;
                }
                return Err(PrometheusError::Exited {
                    status: status.to_string(),
                    stderr,
                });
            }
            if http_get(port, "/-/ready")
                .await
                .is_some_and(|(code, _)| code == 200)
            {
                // Drain stderr so a chatty Prometheus never blocks on a full pipe.
                if let Some(mut err) = child.stderr.take() {
                    tokio::spawn(async move {
                        let mut sink = Vec::new();
                        let _ = err.read_to_end(&mut sink).await;
                    });
                }
                return Ok(Self {
                    url,
                    child,
                    _dir: dir,
                });
            }
            if start.elapsed() > deadline {
                return Err(PrometheusError::NotReady {
                    url,
                    seconds: deadline.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The server's URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A minimal HTTP/1.1 GET on 127.0.0.1: (status, body).
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .ok()?
    .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let code = text.get(9..12)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((code, body))
}
