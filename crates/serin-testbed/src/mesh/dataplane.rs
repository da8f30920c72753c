//! The simulated Istio data plane: keeps a routing model of the cluster up to date from kube-rs
//! watches through the API (`view.rs`, the same for the emulator and a real API server), serves simulated requests (outcomes from the workload's pod template
//! annotations), records Istio's metrics, and runs load: background load set on Services with
//! `testbed.serin.dev/rps`, and load started by the loadtester. Does I/O (tasks, timers).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use serde_json::Value;

use super::{
    metrics::{IstioMetrics, Labels},
    routing::{self, Draws, Mesh, Request},
    view::ClusterView,
};

/// Service annotation: background requests per second to the Service's host.
pub const RPS_ANNOTATION: &str = "testbed.serin.dev/rps";
/// How often load generators fire.
const TICK: Duration = Duration::from_millis(100);
/// Simulated clients per load; every other one keeps cookies.
const CLIENTS: usize = 20;

/// A simulated response.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub status: u16,
    /// Envoy's response flags (`-`, `UH` no healthy upstream, `NR` no route).
    pub flags: &'static str,
    pub latency_ms: f64,
    /// `(namespace, name)` of the answering workload.
    pub workload: Option<(String, String)>,
    pub headers: Vec<(String, String)>,
}

/// Who sends a request, for the `source_*` labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Source {
    pub workload: String,
    pub namespace: String,
}

/// A load to run.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadSpec {
    pub url_host: String,
    pub path: String,
    pub method: String,
    pub headers: BTreeMap<String, String>,
    /// Requests per second in total.
    pub rps: f64,
    pub duration: Duration,
    pub source: Source,
    /// `None` for in-mesh traffic, else the ingress gateway.
    pub gateway: Option<String>,
}

/// The data plane.
#[derive(Debug)]
pub struct DataPlane {
    view: Arc<ClusterView>,
    mesh: RwLock<Mesh>,
    pub metrics: IstioMetrics,
    loads: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    /// Requests served per workload, for the latency model.
    served: Mutex<HashMap<(String, String), u64>>,
}

/// The `n`-th request's latency at a workload: every hundredth lies between the 99th percentile
/// and 1.25 times it, the others are log-normal with the given median below the 99th percentile.
/// So the percentile a workload declares is the one Prometheus measures, even over a few hundred
/// requests.
fn latency_ms(n: u64, median: f64, p99: f64) -> f64 {
    let p99 = p99.max(median);
    if n % 100 == 99 {
        return p99 * (1.0 + 0.25 * rand::random::<f64>());
    }
    // ln X ~ N(ln median, sigma) with its 99th percentile at p99 (z = 2.326), below p99.
    let sigma = ((p99 / median).ln() / 2.326).max(0.0);
    for _ in 0..16 {
        let (u1, u2): (f64, f64) = (rand::random::<f64>().max(f64::MIN_POSITIVE), rand::random());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        let x = (median.ln() + sigma * z).exp();
        if x < p99 {
            return x;
        }
    }
    median
}

impl DataPlane {
    /// Starts the data plane on the cluster `client` reaches: keeps its model current and runs
    /// background load.
    pub fn spawn(client: kube::Client) -> (Arc<Self>, Vec<tokio::task::JoinHandle<()>>) {
        let (view, mut tasks) = ClusterView::spawn(client);
        let plane = Arc::new(Self {
            view: view.clone(),
            mesh: RwLock::new(Mesh::default()),
            metrics: IstioMetrics::default(),
            loads: Mutex::default(),
            served: Mutex::default(),
        });
        let watcher = plane.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            let mut carry: HashMap<String, f64> = HashMap::new();
            loop {
                tokio::select! {
                    () = view.changed() => watcher.refresh(),
                    _ = tick.tick() => watcher.background_load(&mut carry),
                }
            }
        }));
        (plane, tasks)
    }

    /// Rebuilds the routing model from the watched objects (shared, not copied).
    pub fn refresh(&self) {
        let mesh = Mesh {
            services: self.view.services(),
            workloads: self.view.deployments(),
            virtual_services: self.view.virtual_services(),
        };
        *self.mesh.write().unwrap_or_else(|p| p.into_inner()) = mesh;
    }

    /// Whether a host names a Service known to the mesh.
    pub fn knows_host(&self, host: &str, source_namespace: &str) -> bool {
        let mesh = self.mesh.read().unwrap_or_else(|p| p.into_inner());
        mesh.has_service(&routing::fqdn(host, source_namespace))
            || mesh.virtual_services.iter().map(|vs| &**vs).any(|(ns, _, spec)| {
                spec.get("hosts").and_then(Value::as_array).is_some_and(|hs| {
                    hs.iter()
                        .filter_map(Value::as_str)
                        .any(|h| routing::fqdn(h, ns) == routing::fqdn(host, source_namespace))
                })
            })
    }

    /// Serves one simulated request and records it.
    pub fn serve(&self, req: &Request, source: &Source) -> Response {
        let draws = Draws {
            weight: rand::random(),
            mirror: rand::random(),
            replica: rand::random(),
        };
        let route = {
            let mesh = self.mesh.read().unwrap_or_else(|p| p.into_inner());
            let route = mesh.route(req, draws);
            route.as_ref().map(|r| {
                let workload = r.workload.as_ref().and_then(|(ns, n)| {
                    mesh.workloads
                        .iter()
                        .find(|w| &w.namespace == ns && &w.name == n)
                        .cloned()
                });
                let mirror = r.mirror.as_ref().and_then(|(svc, w)| {
                    w.as_ref()
                        .and_then(|(ns, n)| {
                            mesh.workloads
                                .iter()
                                .find(|x| &x.namespace == ns && &x.name == n)
                                .cloned()
                        })
                        .map(|w| (svc.clone(), w))
                });
                (r.clone(), workload, mirror)
            })
        };
        let Some((route, workload, mirror)) = route else {
            return Response {
                status: 404,
                flags: "NR",
                latency_ms: 0.0,
                workload: None,
                headers: Vec::new(),
            };
        };
        let service_name = route.service.split('.').next().unwrap_or_default().to_owned();
        let service_ns = route.service.split('.').nth(1).unwrap_or_default().to_owned();
        let labels =
            |reporter: &'static str, workload: &str, workload_ns: &str, code: u16, flags: &'static str| {
                Labels {
                    reporter,
                    source_workload: source.workload.clone(),
                    source_workload_namespace: source.namespace.clone(),
                    destination_workload: workload.to_owned(),
                    destination_workload_namespace: workload_ns.to_owned(),
                    destination_service: route.service.clone(),
                    destination_service_name: service_name.clone(),
                    destination_service_namespace: service_ns.clone(),
                    response_code: code,
                    response_flags: flags,
                }
            };
        let Some(w) = workload else {
            // No healthy upstream: only the client's sidecar reports it.
            self.metrics
                .record(labels("source", "unknown", "unknown", 503, "UH"), 0.0);
            return Response {
                status: 503,
                flags: "UH",
                latency_ms: 0.0,
                workload: None,
                headers: Vec::new(),
            };
        };
        let status = if rand::random::<f64>() < w.error_rate {
            500
        } else {
            200
        };
        let latency = latency_ms(
            self.next_request(&w.namespace, &w.name),
            w.latency_ms,
            w.latency_p99_ms,
        );
        self.metrics
            .record(labels("destination", &w.name, &w.namespace, status, "-"), latency);
        self.metrics
            .record(labels("source", &w.name, &w.namespace, status, "-"), latency);
        if let Some((mirror_service, m)) = mirror {
            let mirror_status = if rand::random::<f64>() < m.error_rate {
                500
            } else {
                200
            };
            let mut l = labels("destination", &m.name, &m.namespace, mirror_status, "-");
            l.destination_service_name = mirror_service.split('.').next().unwrap_or_default().to_owned();
            l.destination_service = mirror_service;
            self.metrics.record(
                l,
                latency_ms(
                    self.next_request(&m.namespace, &m.name),
                    m.latency_ms,
                    m.latency_p99_ms,
                ),
            );
        }
        Response {
            status,
            flags: "-",
            latency_ms: latency,
            workload: Some((w.namespace.clone(), w.name.clone())),
            headers: route.response_headers,
        }
    }

    fn background_load(&self, carry: &mut HashMap<String, f64>) {
        for load in self.view.loads() {
            let (ns, name, rps) = &*load;
            let due = carry.entry(format!("{ns}/{name}")).or_default();
            *due += rps * TICK.as_secs_f64();
            let source = Source {
                workload: "testbed-load".into(),
                namespace: ns.clone(),
            };
            while *due >= 1.0 {
                *due -= 1.0;
                let req = Request {
                    host: name.clone(),
                    source_namespace: ns.clone(),
                    method: "GET".into(),
                    path: "/".into(),
                    ..Default::default()
                };
                self.serve(&req, &source);
            }
        }
    }

    /// The ordinal of a new request to a workload.
    fn next_request(&self, namespace: &str, name: &str) -> u64 {
        let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        let n = served.entry((namespace.to_owned(), name.to_owned())).or_default();
        *n += 1;
        *n - 1
    }

    /// Starts a load unless an identical one is running (as the loadtester does).
    pub fn start_load(self: &Arc<Self>, key: String, spec: LoadSpec) -> bool {
        let mut loads = self.loads.lock().unwrap_or_else(|p| p.into_inner());
        if loads.get(&key).is_some_and(|h| !h.is_finished()) {
            return false;
        }
        let plane = self.clone();
        let handle = tokio::spawn(async move {
            let mut jars: Vec<Option<BTreeMap<String, String>>> =
                (0..CLIENTS).map(|i| (i % 2 == 0).then(BTreeMap::new)).collect();
            let mut tick = tokio::time::interval(TICK);
            let end = tokio::time::Instant::now() + spec.duration;
            let mut due = 0.0;
            let mut next_client = 0;
            while tokio::time::Instant::now() < end {
                tick.tick().await;
                due += spec.rps * TICK.as_secs_f64();
                while due >= 1.0 {
                    due -= 1.0;
                    let jar = &mut jars[next_client % CLIENTS];
                    next_client += 1;
                    let mut headers = spec.headers.clone();
                    if let Some(jar) = jar.as_ref().filter(|j| !j.is_empty()) {
                        let cookies: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        headers.insert("cookie".into(), cookies.join("; "));
                    }
                    let req = Request {
                        host: spec.url_host.clone(),
                        source_namespace: spec.source.namespace.clone(),
                        gateway: spec.gateway.clone(),
                        method: spec.method.clone(),
                        path: spec.path.clone(),
                        headers,
                    };
                    let response = plane.serve(&req, &spec.source);
                    if let Some(jar) = jar.as_mut() {
                        keep_cookies(jar, &response.headers);
                    }
                }
            }
        });
        loads.insert(key, handle.abort_handle());
        true
    }

    /// Stops every load.
    pub fn stop_loads(&self) {
        for (_, h) in self.loads.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            h.abort();
        }
    }
}

/// Applies `Set-Cookie` response headers to a cookie jar (`Max-Age` of 0 or less deletes).
pub fn keep_cookies(jar: &mut BTreeMap<String, String>, headers: &[(String, String)]) {
    for (name, value) in headers {
        if !name.eq_ignore_ascii_case("set-cookie") {
            continue;
        }
        let mut parts = value.split(';').map(str::trim);
        let Some((k, v)) = parts.next().and_then(|p| p.split_once('=')) else {
            continue;
        };
        let expired = parts.any(|p| {
            p.to_ascii_lowercase()
                .strip_prefix("max-age=")
                .and_then(|n| n.parse::<i64>().ok())
                .is_some_and(|n| n <= 0)
        });
        if expired {
            jar.remove(k);
        } else {
            jar.insert(k.to_owned(), v.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_jar_follows_set_cookie() {
        let mut jar = BTreeMap::new();
        keep_cookies(
            &mut jar,
            &[("Set-Cookie".into(), "flagger-cookie=abc; Max-Age=86400".into())],
        );
        assert_eq!(jar.get("flagger-cookie").map(String::as_str), Some("abc"));
        keep_cookies(
            &mut jar,
            &[("set-cookie".into(), "flagger-cookie=abc; Max-Age=-1".into())],
        );
        assert!(jar.is_empty());
    }

    #[test]
    fn latency_distribution_has_the_requested_percentiles() {
        for _ in 0..20 {
            // Even a few hundred requests show the declared percentiles.
            let mut samples: Vec<f64> = (0..500).map(|n| latency_ms(n, 10.0, 800.0)).collect();
            samples.sort_by(f64::total_cmp);
            let p50 = samples[samples.len() / 2];
            let p99 = samples[samples.len() * 99 / 100];
            assert!((6.0..16.0).contains(&p50), "p50 {p50}");
            assert!((500.0..=1000.0).contains(&p99), "p99 {p99}");
            assert!(
                samples.iter().all(|s| *s <= 1000.0),
                "the tail stops at 1.25 x p99"
            );
        }
    }
}
