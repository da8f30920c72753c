//! A loadtester compatible with Flagger's flagger-loadtester webhook API: `POST /` with a
//! webhook payload runs `cmd` (`hey` load, started through the simulated mesh and deduplicated
//! while running) or `bash` (`curl ... | grep ...`, `grpc_health_probe -addr=...`) commands
//! against the simulated workloads; the gate endpoints (`/gate/*`, `/rollback/*`) keep their state
//! in memory, keyed by the payload's name and namespace. Command parsing is pure; running them
//! uses the data plane.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;

use crate::mesh::{
    dataplane::{DataPlane, LoadSpec, Source},
    routing::Request,
};

/// What the test bed's loadtester understands, for refusals.
pub const UNDERSTOOD: &str = "the test bed's loadtester runs `cmd` webhooks with `hey [-z DURATION] [-q QPS] [-c CONCURRENCY] [-n REQUESTS] [-m METHOD] [-H 'Name: value'] URL`, and `bash` webhooks with `curl [-s] [-S] [-f] [-d DATA] [-X METHOD] [-H 'Name: value'] URL [| grep [-q] PATTERN]...` or `grpc_health_probe -addr=HOST:PORT`";

/// Splits a command line into words, honouring single and double quotes and backslashes.
pub fn shell_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => current.push(chars.next().unwrap_or('\\')),
            (Some(_), c) => current.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                current.push(chars.next().unwrap_or('\\'));
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            (None, c) => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(format!("unterminated quote in {line:?}"));
    }
    if in_word {
        words.push(current);
    }
    Ok(words)
}

/// A URL split into host (with port) and path.
pub fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    if rest.is_empty() {
        return Err(format!("not a URL: {url:?}"));
    }
    let (host, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    Ok((host.to_owned(), path))
}

/// A parsed `hey` command.
#[derive(Clone, Debug, PartialEq)]
pub struct Hey {
    pub host: String,
    pub path: String,
    pub method: String,
    pub headers: BTreeMap<String, String>,
    pub rps: f64,
    pub duration: Duration,
}

fn header(value: &str) -> Result<(String, String), String> {
    let (k, v) = value
        .split_once(':')
        .ok_or_else(|| format!("a header is 'Name: value', not {value:?}"))?;
    Ok((k.trim().to_lowercase(), v.trim().to_owned()))
}

/// Parses `hey -z 5m -q 10 -c 2 http://podinfo-canary.test/`.
pub fn parse_hey(command: &str) -> Result<Hey, String> {
    let words = shell_words(command)?;
    if words.first().map(String::as_str) != Some("hey") {
        return Err(format!("not a hey command: {command:?}; {UNDERSTOOD}"));
    }
    let (mut duration, mut qps, mut concurrency, mut requests): (Option<Duration>, f64, f64, Option<f64>) =
        (None, 50.0, 50.0, None);
    let mut method = "GET".to_owned();
    let mut headers = BTreeMap::new();
    let mut url = None;
    let mut it = words[1..].iter();
    while let Some(w) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{w} needs a value"));
        match w.as_str() {
            "-z" => duration = Some(serin_duration(&value()?)?),
            "-q" => qps = value()?.parse().map_err(|_| "-q needs a number".to_owned())?,
            "-c" => concurrency = value()?.parse().map_err(|_| "-c needs a number".to_owned())?,
            "-n" => {
                requests = Some(
                    value()?
                        .parse::<f64>()
                        .map_err(|_| "-n needs a number".to_owned())?,
                )
            }
            "-m" => method = value()?.to_uppercase(),
            "-H" => {
                let (k, v) = header(&value()?)?;
                headers.insert(k, v);
            }
            "-t" | "-d" | "-D" | "-T" | "-a" | "-x" | "-o" => {
                value()?;
            }
            "-h2" | "-disable-compression" | "-disable-keepalive" | "-disable-redirects" => {}
            other if other.starts_with('-') => {
                return Err(format!("unsupported hey flag {other}; {UNDERSTOOD}"));
            }
            other => url = Some(other.to_owned()),
        }
    }
    let url = url.ok_or_else(|| format!("hey needs a URL; {UNDERSTOOD}"))?;
    let (host, path) = split_url(&url)?;
    let rps = qps * concurrency;
    let duration = match (duration, requests) {
        (Some(d), _) => d,
        (None, Some(n)) => Duration::try_from_secs_f64(n / rps.max(1.0))
            .map_err(|_| format!("-n {n} with -q {qps} -c {concurrency} is not a run length"))?,
        (None, None) => Duration::try_from_secs_f64(200.0 / rps.max(1.0))
            .map_err(|_| format!("-q {qps} -c {concurrency} is not a request rate"))?,
    };
    if !rps.is_finite() {
        return Err(format!("-q {qps} -c {concurrency} is not a request rate"));
    }
    Ok(Hey {
        host,
        path,
        method,
        headers,
        rps,
        duration,
    })
}

fn serin_duration(text: &str) -> Result<Duration, String> {
    serin_runtime::duration::parse(text).map_err(|e| format!("-z: {e}"))
}

/// A `bash` step.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Curl {
        host: String,
        path: String,
        method: String,
        headers: BTreeMap<String, String>,
        fail_on_http_error: bool,
    },
    Grep {
        pattern: String,
    },
    GrpcHealthProbe {
        host: String,
    },
}

/// Parses the `bash` commands the test bed understands into a pipeline.
pub fn parse_bash(command: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for segment in command.split('|') {
        let words = shell_words(segment)?;
        let Some(program) = words.first() else {
            return Err(format!("empty pipeline segment in {command:?}"));
        };
        match program.as_str() {
            "curl" => {
                let (mut method, mut data, mut fail, mut url) = (None, false, false, None);
                let mut headers = BTreeMap::new();
                let mut it = words[1..].iter();
                while let Some(w) = it.next() {
                    match w.as_str() {
                        "-X" | "--request" => method = it.next().cloned(),
                        "-d" | "--data" | "--data-raw" | "--data-binary" => {
                            it.next();
                            data = true;
                        }
                        "-H" | "--header" => {
                            let (k, v) = header(it.next().map(String::as_str).unwrap_or_default())?;
                            headers.insert(k, v);
                        }
                        "-o" | "--output" | "-w" | "--write-out" | "-m" | "--max-time"
                        | "--connect-timeout" => {
                            it.next();
                        }
                        "-f" | "--fail" => fail = true,
                        flags if flags.starts_with('-') && !flags.starts_with("--") => {
                            if flags.contains('d') {
                                data = true;
                                it.next();
                            }
                            if flags.contains('f') {
                                fail = true;
                            }
                        }
                        flag if flag.starts_with("--") => {}
                        other => url = Some(other.to_owned()),
                    }
                }
                let (host, path) = split_url(&url.ok_or_else(|| format!("curl needs a URL; {UNDERSTOOD}"))?)?;
                let method = method.unwrap_or_else(|| if data { "POST".into() } else { "GET".into() });
                steps.push(Step::Curl {
                    host,
                    path,
                    method,
                    headers,
                    fail_on_http_error: fail,
                });
            }
            "grep" => {
                let pattern = words[1..]
                    .iter()
                    .find(|w| !w.starts_with('-'))
                    .cloned()
                    .ok_or("grep needs a pattern")?;
                steps.push(Step::Grep { pattern });
            }
            "grpc_health_probe" => {
                let addr = words[1..]
                    .iter()
                    .find_map(|w| w.strip_prefix("-addr=").or_else(|| w.strip_prefix("--addr=")))
                    .ok_or("grpc_health_probe needs -addr=HOST:PORT")?;
                steps.push(Step::GrpcHealthProbe {
                    host: addr.to_owned(),
                });
            }
            other => return Err(format!("the test bed cannot run {other:?}; {UNDERSTOOD}")),
        }
    }
    Ok(steps)
}

/// The loadtester.
#[derive(Debug)]
pub struct Loadtester {
    plane: Arc<DataPlane>,
    gates: Mutex<HashSet<String>>,
    rollbacks: Mutex<HashSet<String>>,
}

impl Loadtester {
    pub fn new(plane: Arc<DataPlane>) -> Self {
        Self {
            plane,
            gates: Mutex::default(),
            rollbacks: Mutex::default(),
        }
    }

    /// Handles one request; `namespace` is where this loadtester runs (`None` when reached
    /// directly: the payload's namespace is used). Returns (status, body).
    pub fn handle(&self, namespace: Option<&str>, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let payload: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let namespace = namespace
            .or_else(|| payload.get("namespace").and_then(Value::as_str))
            .unwrap_or("default")
            .to_owned();
        let namespace = namespace.as_str();
        let key = format!(
            "{}.{}",
            payload.get("name").and_then(Value::as_str).unwrap_or_default(),
            payload
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
        );
        let open =
            |set: &Mutex<HashSet<String>>| set.lock().unwrap_or_else(|p| p.into_inner()).contains(&key);
        let set = |set: &Mutex<HashSet<String>>, on: bool| {
            let mut s = set.lock().unwrap_or_else(|p| p.into_inner());
            if on {
                s.insert(key.clone());
            } else {
                s.remove(&key);
            }
        };
        match (method, path.split('?').next().unwrap_or("/")) {
            (_, "/healthz" | "/readyz") => (200, "OK".into()),
            ("POST", "/gate/approve") => (200, "Approved".into()),
            ("POST", "/gate/halt") => (403, "Forbidden".into()),
            ("POST", "/gate/check") => {
                if open(&self.gates) {
                    (200, "Approved".into())
                } else {
                    (403, "Forbidden".into())
                }
            }
            ("POST", "/gate/open") => {
                set(&self.gates, true);
                (202, "Gate opened".into())
            }
            ("POST", "/gate/close") => {
                set(&self.gates, false);
                (202, "Gate closed".into())
            }
            ("POST", "/rollback/check") => {
                if open(&self.rollbacks) {
                    (200, "Rollback".into())
                } else {
                    (403, "Forbidden".into())
                }
            }
            ("POST", "/rollback/open") => {
                set(&self.rollbacks, true);
                (202, "Rollback gate opened".into())
            }
            ("POST", "/rollback/close") => {
                set(&self.rollbacks, false);
                (202, "Rollback gate closed".into())
            }
            ("POST", "/") => self.run(namespace, &payload),
            _ => (404, format!("no such loadtester endpoint: {method} {path}")),
        }
    }

    fn run(&self, namespace: &str, payload: &Value) -> (u16, String) {
        let Some(metadata) = payload.get("metadata").and_then(Value::as_object) else {
            return (400, "metadata not found in the payload".into());
        };
        let command = metadata.get("cmd").and_then(Value::as_str).unwrap_or_default();
        if command.is_empty() {
            return (400, "cmd not found in metadata".into());
        }
        let source = Source {
            workload: "flagger-loadtester".into(),
            namespace: namespace.to_owned(),
        };
        match metadata.get("type").and_then(Value::as_str).unwrap_or("cmd") {
            "cmd" => match parse_hey(command) {
                Ok(hey) => {
                    let spec = LoadSpec {
                        url_host: hey.host,
                        path: hey.path,
                        method: hey.method,
                        headers: hey.headers,
                        rps: hey.rps,
                        duration: hey.duration,
                        source,
                        gateway: None,
                    };
                    // As flagger-loadtester: queued, and skipped while the same command runs.
                    self.plane.start_load(command.to_owned(), spec);
                    (202, format!("command {command} accepted"))
                }
                Err(e) => (400, e),
            },
            "bash" => match parse_bash(command) {
                Ok(steps) => match self.run_bash(&steps, &source) {
                    Ok(output) => {
                        let show = metadata.get("returnCmdOutput").and_then(Value::as_str) == Some("true");
                        (200, if show { output } else { String::new() })
                    }
                    Err(e) => (500, format!("command {command} failed: {e}")),
                },
                Err(e) => (400, e),
            },
            other => (
                400,
                format!("webhook type {other:?} is not supported; {UNDERSTOOD}"),
            ),
        }
    }

    fn run_bash(&self, steps: &[Step], source: &Source) -> Result<String, String> {
        let mut output = String::new();
        for step in steps {
            match step {
                Step::Curl {
                    host,
                    path,
                    method,
                    headers,
                    fail_on_http_error,
                } => {
                    let req = Request {
                        host: host.clone(),
                        source_namespace: source.namespace.clone(),
                        gateway: None,
                        method: method.clone(),
                        path: path.clone(),
                        headers: headers.clone(),
                    };
                    if !self.plane.knows_host(host, &source.namespace) {
                        return Err(format!("curl: (6) Could not resolve host: {host}"));
                    }
                    let response = self.plane.serve(&req, source);
                    if *fail_on_http_error && response.status >= 400 {
                        return Err(format!(
                            "curl: (22) The requested URL returned error: {}",
                            response.status
                        ));
                    }
                    output = crate::network::workload_body(&response, path);
                }
                Step::Grep { pattern } => {
                    let matched: Vec<&str> =
                        output.lines().filter(|l| l.contains(pattern.as_str())).collect();
                    if matched.is_empty() {
                        return Err(format!("grep: no line matches {pattern:?} (exit status 1)"));
                    }
                    output = matched.join("\n");
                }
                Step::GrpcHealthProbe { host } => {
                    let req = Request {
                        host: host.clone(),
                        source_namespace: source.namespace.clone(),
                        method: "POST".into(),
                        path: "/grpc.health.v1.Health/Check".into(),
                        ..Default::default()
                    };
                    if !self.plane.knows_host(host, &source.namespace) {
                        return Err(format!(
                            "error: failed to connect service at {host:?}: context deadline exceeded"
                        ));
                    }
                    let response = self.plane.serve(&req, source);
                    if response.status >= 400 {
                        return Err(format!(
                            "error: health rpc failed: rpc error: code = Unavailable (HTTP {})",
                            response.status
                        ));
                    }
                    output = "status: SERVING".into();
                }
            }
        }
        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(
            shell_words("curl -sd 'test' http://x/token").expect("splits"),
            ["curl", "-sd", "test", "http://x/token"]
        );
        assert_eq!(
            shell_words(r#"hey -H "X-Canary: insider" u"#).expect("splits"),
            ["hey", "-H", "X-Canary: insider", "u"]
        );
        assert!(shell_words("echo 'open").is_err());
    }

    #[test]
    fn hey_commands() {
        let h = parse_hey("hey -z 5m -q 10 -c 2 http://podinfo-canary.test/").expect("parses");
        assert_eq!(
            (h.host.as_str(), h.path.as_str(), h.rps, h.duration),
            ("podinfo-canary.test", "/", 20.0, Duration::from_secs(300))
        );
        let h =
            parse_hey("hey -z 1m -q 5 -c 1 -m POST -H 'Cookie: canary=always' http://podinfo.test:9898/api")
                .expect("parses");
        assert_eq!(
            (
                h.method.as_str(),
                h.headers.get("cookie").map(String::as_str),
                h.host.as_str(),
                h.path.as_str()
            ),
            ("POST", Some("canary=always"), "podinfo.test:9898", "/api")
        );
        assert!(parse_hey("ab -n 10 http://x/").is_err());
        assert!(parse_hey("hey -z 1m").is_err());
        for (command, want) in [
            (
                "hey -z 99999999999999999999m http://x/",
                "-z: duration \"99999999999999999999m\" is too large",
            ),
            ("hey -z 5 http://x/", "-z: missing unit"),
            ("hey -n NaN http://x/", "is not a run length"),
            ("hey -n 1e308 -q 1e-300 -c 1 http://x/", "is not a run length"),
            ("hey -q inf -z 1s http://x/", "is not a request rate"),
        ] {
            let err = parse_hey(command).expect_err(command);
            assert!(err.contains(want), "{command}: {err}");
        }
    }

    #[test]
    fn bash_commands() {
        let steps = parse_bash("curl -sd 'test' http://podinfo-canary/token | grep token").expect("parses");
        assert_eq!(steps.len(), 2);
        assert!(
            matches!(&steps[0], Step::Curl { host, path, method, .. } if host == "podinfo-canary" && path == "/token" && method == "POST")
        );
        assert_eq!(
            steps[1],
            Step::Grep {
                pattern: "token".into()
            }
        );
        let steps =
            parse_bash("grpc_health_probe -connect-timeout=1s -addr=podinfo-canary:9999").expect("parses");
        assert_eq!(
            steps,
            [Step::GrpcHealthProbe {
                host: "podinfo-canary:9999".into()
            }]
        );
        let err = parse_bash("kubectl get pods").expect_err("refused");
        assert!(err.contains("cannot run \"kubectl\""), "{err}");
    }
}
