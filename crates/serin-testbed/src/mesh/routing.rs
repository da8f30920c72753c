//! Istio routing, simulated: which workload answers a request, given the Services,
//! VirtualServices and Deployments in the cluster. Host matching (short, `name.ns`, FQDN,
//! wildcards), gateways (`mesh` for in-mesh traffic), delegate VirtualServices, HTTP routes in
//! order with their matches (headers exact/prefix/suffix/regex including `cookie`, query
//! parameters, uri, method), weighted destinations, mirroring and response headers. Pure: the
//! random draws come in as arguments.

use std::{collections::BTreeMap, sync::Arc};

use serde_json::Value;

/// Pod template annotation: share of requests answered with 500 (0.0 to 1.0).
pub const ERROR_RATE_ANNOTATION: &str = "testbed.serin.dev/error-rate";
/// Pod template annotation: median latency in milliseconds.
pub const LATENCY_ANNOTATION: &str = "testbed.serin.dev/latency-ms";
/// Pod template annotation: 99th percentile latency in milliseconds.
pub const LATENCY_P99_ANNOTATION: &str = "testbed.serin.dev/latency-p99-ms";

/// A Deployment as the data plane sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub pod_labels: BTreeMap<String, String>,
    pub ready_replicas: i64,
    pub error_rate: f64,
    pub latency_ms: f64,
    pub latency_p99_ms: f64,
}

/// A Service: its selector.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub selector: BTreeMap<String, String>,
}

/// A VirtualService as stored: namespace, name and spec.
pub type VirtualService = (String, String, Value);

/// What the data plane knows. Objects are shared with the cluster view, so a new snapshot costs
/// a reference per object.
#[derive(Clone, Debug, Default)]
pub struct Mesh {
    pub services: Vec<Arc<Service>>,
    pub workloads: Vec<Arc<Workload>>,
    pub virtual_services: Vec<Arc<VirtualService>>,
}

/// A simulated request.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// Host as the client wrote it (`podinfo`, `podinfo.test:9898`, `app.example.com`).
    pub host: String,
    /// Namespace of the client, for short names.
    pub source_namespace: String,
    /// `None` for in-mesh traffic, else the gateway it entered through (`istio-system/public`).
    pub gateway: Option<String>,
    pub method: String,
    pub path: String,
    /// Lower-case header names.
    pub headers: BTreeMap<String, String>,
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// The destination Service's FQDN.
    pub service: String,
    /// The answering workload, or `None` when no ready workload backs the Service.
    pub workload: Option<(String, String)>,
    /// A copy is sent here too; its answer is discarded.
    pub mirror: Option<(String, Option<(String, String)>)>,
    /// Response headers the route adds (`Set-Cookie` for session affinity).
    pub response_headers: Vec<(String, String)>,
}

/// Random numbers in [0, 1) for the draws one request needs.
#[derive(Clone, Copy, Debug)]
pub struct Draws {
    pub weight: f64,
    pub mirror: f64,
    pub replica: f64,
}

/// `podinfo` in `test` -> `podinfo.test.svc.cluster.local`.
pub fn fqdn(host: &str, namespace: &str) -> String {
    let host = host.split(':').next().unwrap_or(host).trim_end_matches('.');
    let dots = host.matches('.').count();
    if host.ends_with(".svc.cluster.local") || host.starts_with('*') {
        host.to_owned()
    } else if host.ends_with(".svc") {
        format!("{host}.cluster.local")
    } else if dots == 0 {
        format!("{host}.{namespace}.svc.cluster.local")
    } else if dots == 1 {
        // `name.namespace` unless it looks like an external domain (`example.com`).
        let (_, tail) = host.split_once('.').unwrap_or((host, ""));
        if matches!(tail, "com" | "org" | "net" | "io" | "dev" | "local") {
            host.to_owned()
        } else {
            format!("{host}.svc.cluster.local")
        }
    } else {
        host.to_owned()
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix),
        None => pattern == host,
    }
}

fn string_match(m: &Value, value: Option<&str>) -> bool {
    let Some(value) = value else { return false };
    if let Some(e) = m.get("exact").and_then(Value::as_str) {
        return value == e;
    }
    if let Some(p) = m.get("prefix").and_then(Value::as_str) {
        return value.starts_with(p);
    }
    if let Some(s) = m.get("suffix").and_then(Value::as_str) {
        return value.ends_with(s);
    }
    if let Some(r) = m.get("regex").and_then(Value::as_str) {
        // Envoy's regex matching is full-string (RE2 `FullMatch`).
        return regex::Regex::new(&format!("^(?:{r})$")).is_ok_and(|re| re.is_match(value));
    }
    true
}

fn query_params(path: &str) -> BTreeMap<String, String> {
    path.split_once('?')
        .map(|(_, q)| {
            q.split('&')
                .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn request_matches(m: &Value, req: &Request) -> bool {
    let path = req.path.split('?').next().unwrap_or("/");
    let checks = [
        m.get("uri").is_none_or(|u| string_match(u, Some(path))),
        m.get("method").is_none_or(|u| string_match(u, Some(&req.method))),
        m.get("authority")
            .is_none_or(|u| string_match(u, Some(&req.host))),
        m.get("headers").and_then(Value::as_object).is_none_or(|hs| {
            hs.iter()
                .all(|(name, sm)| string_match(sm, req.headers.get(&name.to_lowercase()).map(String::as_str)))
        }),
        m.get("withoutHeaders")
            .and_then(Value::as_object)
            .is_none_or(|hs| {
                hs.iter().all(|(name, sm)| {
                    !string_match(sm, req.headers.get(&name.to_lowercase()).map(String::as_str))
                })
            }),
        m.get("queryParams").and_then(Value::as_object).is_none_or(|qs| {
            let params = query_params(&req.path);
            qs.iter()
                .all(|(name, sm)| string_match(sm, params.get(name).map(String::as_str)))
        }),
        m.get("gateways").and_then(Value::as_array).is_none_or(|gs| {
            let gw = req.gateway.as_deref().unwrap_or("mesh");
            gs.iter().any(|g| {
                g.as_str()
                    .is_some_and(|g| g == gw || g.rsplit('/').next() == gw.rsplit('/').next())
            })
        }),
    ];
    checks.iter().all(|c| *c)
}

fn route_matches(route: &Value, req: &Request) -> bool {
    match route.get("match").and_then(Value::as_array) {
        None => true,
        Some(ms) if ms.is_empty() => true,
        Some(ms) => ms.iter().any(|m| request_matches(m, req)),
    }
}

fn gateway_applies(spec: &Value, req: &Request) -> bool {
    let gateways: Vec<&str> = spec
        .get("gateways")
        .and_then(Value::as_array)
        .map(|g| g.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match &req.gateway {
        None => gateways.is_empty() || gateways.contains(&"mesh"),
        Some(gw) => gateways
            .iter()
            .any(|g| *g == gw || g.rsplit('/').next() == gw.rsplit('/').next()),
    }
}

fn add_headers(out: &mut Vec<(String, String)>, headers: Option<&Value>) {
    if let Some(add) = headers
        .and_then(|h| h.pointer("/response/add"))
        .and_then(Value::as_object)
    {
        for (k, v) in add {
            out.push((k.clone(), v.as_str().unwrap_or_default().to_owned()));
        }
    }
}

impl Mesh {
    /// The workload answering for a Service FQDN: a ready Deployment its selector picks.
    pub fn backend(&self, service_fqdn: &str, draw: f64) -> Option<&Workload> {
        let svc = self
            .services
            .iter()
            .find(|s| fqdn(&s.name, &s.namespace) == service_fqdn)?;
        if svc.selector.is_empty() {
            return None;
        }
        let ready: Vec<&Workload> = self
            .workloads
            .iter()
            .map(|w| &**w)
            .filter(|w| w.namespace == svc.namespace && w.ready_replicas > 0)
            .filter(|w| svc.selector.iter().all(|(k, v)| w.pod_labels.get(k) == Some(v)))
            .collect();
        let total: i64 = ready.iter().map(|w| w.ready_replicas).sum();
        let mut pick = (draw * total as f64) as i64;
        for w in &ready {
            if pick < w.ready_replicas {
                return Some(w);
            }
            pick -= w.ready_replicas;
        }
        ready.last().copied()
    }

    /// Whether a Service with this FQDN exists.
    pub fn has_service(&self, service_fqdn: &str) -> bool {
        self.services
            .iter()
            .any(|s| fqdn(&s.name, &s.namespace) == service_fqdn)
    }

    fn workload_of(&self, service: &str, draw: f64) -> Option<(String, String)> {
        self.backend(service, draw)
            .map(|w| (w.namespace.clone(), w.name.clone()))
    }

    /// Routes a request. `None` when nothing answers for the host (Envoy's 404 NR).
    pub fn route(&self, req: &Request, draws: Draws) -> Option<Route> {
        let host = fqdn(&req.host, &req.source_namespace);
        let root = self
            .virtual_services
            .iter()
            .map(|vs| &**vs)
            .find(|(ns, _, spec)| {
                gateway_applies(spec, req)
                    && spec.get("hosts").and_then(Value::as_array).is_some_and(|hs| {
                        hs.iter()
                            .filter_map(Value::as_str)
                            .any(|h| host_matches(&fqdn(h, ns), &host))
                    })
            });
        let Some((vs_ns, _, spec)) = root else {
            // No VirtualService: plain Kubernetes Service routing (in-mesh only).
            if req.gateway.is_some() || !self.has_service(&host) {
                return None;
            }
            return Some(Route {
                workload: self.workload_of(&host, draws.replica),
                service: host,
                mirror: None,
                response_headers: Vec::new(),
            });
        };
        self.route_in(vs_ns, spec, req, draws, 0)
    }

    fn route_in(&self, vs_ns: &str, spec: &Value, req: &Request, draws: Draws, depth: u8) -> Option<Route> {
        let routes = spec.get("http").and_then(Value::as_array)?;
        let route = routes.iter().find(|r| route_matches(r, req))?;
        if let Some(delegate) = route.get("delegate") {
            if depth > 0 {
                return None; // Istio allows one level of delegation.
            }
            let name = delegate.get("name").and_then(Value::as_str)?;
            let ns = delegate.get("namespace").and_then(Value::as_str).unwrap_or(vs_ns);
            let (_, _, delegate_spec) = self
                .virtual_services
                .iter()
                .map(|vs| &**vs)
                .find(|(n, vs_name, _)| n == ns && vs_name == name)?;
            return self.route_in(ns, delegate_spec, req, draws, depth + 1);
        }
        let destinations = route.get("route").and_then(Value::as_array)?;
        let chosen = if destinations.len() == 1 {
            &destinations[0]
        } else {
            let weights: Vec<f64> = destinations
                .iter()
                .map(|d| d.get("weight").and_then(Value::as_f64).unwrap_or(0.0))
                .collect();
            let total: f64 = weights.iter().sum();
            if total <= 0.0 {
                &destinations[0]
            } else {
                let mut pick = draws.weight * total;
                let mut chosen = &destinations[destinations.len() - 1];
                for (d, w) in destinations.iter().zip(&weights) {
                    if pick < *w {
                        chosen = d;
                        break;
                    }
                    pick -= w;
                }
                chosen
            }
        };
        let host = chosen.pointer("/destination/host").and_then(Value::as_str)?;
        let service = fqdn(host, vs_ns);
        let mut response_headers = Vec::new();
        add_headers(&mut response_headers, route.get("headers"));
        add_headers(&mut response_headers, chosen.get("headers"));
        let mirror = route
            .pointer("/mirror/host")
            .and_then(Value::as_str)
            .and_then(|m| {
                let percent = route
                    .pointer("/mirrorPercentage/value")
                    .and_then(Value::as_f64)
                    .unwrap_or(100.0);
                (draws.mirror * 100.0 < percent).then(|| {
                    let mirror_service = fqdn(m, vs_ns);
                    let workload = self.workload_of(&mirror_service, draws.replica);
                    (mirror_service, workload)
                })
            });
        Some(Route {
            workload: self.workload_of(&service, draws.replica),
            service,
            mirror,
            response_headers,
        })
    }
}

/// Reads a Deployment object.
pub fn workload_from(obj: &Value) -> Option<Workload> {
    let annotation = |key: &str| {
        obj.pointer("/spec/template/metadata/annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let latency = annotation(LATENCY_ANNOTATION)
        .filter(|v| *v > 0.0)
        .unwrap_or(10.0);
    Some(Workload {
        namespace: obj.pointer("/metadata/namespace")?.as_str()?.to_owned(),
        name: obj.pointer("/metadata/name")?.as_str()?.to_owned(),
        pod_labels: obj
            .pointer("/spec/template/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default(),
        ready_replicas: obj
            .pointer("/status/readyReplicas")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        error_rate: annotation(ERROR_RATE_ANNOTATION).unwrap_or(0.0).clamp(0.0, 1.0),
        latency_ms: latency,
        latency_p99_ms: annotation(LATENCY_P99_ANNOTATION)
            .filter(|v| *v > 0.0)
            .unwrap_or(latency * 3.0),
    })
}

/// Reads a Service object.
pub fn service_from(obj: &Value) -> Option<Service> {
    Some(Service {
        namespace: obj.pointer("/metadata/namespace")?.as_str()?.to_owned(),
        name: obj.pointer("/metadata/name")?.as_str()?.to_owned(),
        selector: obj
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn workload(name: &str, app: &str) -> Workload {
        Workload {
            namespace: "test".into(),
            name: name.into(),
            pod_labels: [("app".to_owned(), app.to_owned())].into(),
            ready_replicas: 1,
            error_rate: 0.0,
            latency_ms: 10.0,
            latency_p99_ms: 30.0,
        }
    }

    fn service(name: &str, app: &str) -> Service {
        Service {
            namespace: "test".into(),
            name: name.into(),
            selector: [("app".to_owned(), app.to_owned())].into(),
        }
    }

    fn mesh(vs: Value) -> Mesh {
        Mesh {
            services: vec![
                Arc::new(service("podinfo", "podinfo-primary")),
                Arc::new(service("podinfo-primary", "podinfo-primary")),
                Arc::new(service("podinfo-canary", "podinfo")),
            ],
            workloads: vec![
                Arc::new(workload("podinfo-primary", "podinfo-primary")),
                Arc::new(workload("podinfo", "podinfo")),
            ],
            virtual_services: vec![Arc::new(("test".into(), "podinfo".into(), vs))],
        }
    }

    fn req(host: &str) -> Request {
        Request {
            host: host.into(),
            source_namespace: "test".into(),
            method: "GET".into(),
            path: "/".into(),
            ..Default::default()
        }
    }

    fn draws(weight: f64) -> Draws {
        Draws {
            weight,
            mirror: 0.5,
            replica: 0.0,
        }
    }

    fn weighted(primary: i64, canary: i64) -> Value {
        json!({"hosts": ["podinfo"], "http": [{"route": [
            {"destination": {"host": "podinfo-primary"}, "weight": primary},
            {"destination": {"host": "podinfo-canary"}, "weight": canary}
        ]}]})
    }

    fn workload_name(route: Option<Route>) -> Option<String> {
        route.and_then(|r| r.workload).map(|(_, n)| n)
    }

    #[test]
    fn host_forms_resolve_alike() {
        for host in [
            "podinfo",
            "podinfo.test",
            "podinfo.test.svc",
            "podinfo.test.svc.cluster.local",
            "podinfo:9898",
        ] {
            assert_eq!(fqdn(host, "test"), "podinfo.test.svc.cluster.local", "{host}");
        }
        assert_eq!(fqdn("app.example.com", "test"), "app.example.com");
        let m = mesh(weighted(90, 10));
        assert_eq!(
            workload_name(m.route(&req("podinfo.test:9898"), draws(0.0))).as_deref(),
            Some("podinfo-primary")
        );
    }

    #[test]
    fn weights_split_traffic() {
        let m = mesh(weighted(90, 10));
        assert_eq!(
            workload_name(m.route(&req("podinfo"), draws(0.5))).as_deref(),
            Some("podinfo-primary")
        );
        assert_eq!(
            workload_name(m.route(&req("podinfo"), draws(0.95))).as_deref(),
            Some("podinfo")
        );
        // A single destination with weight 0 still takes all traffic.
        let single = mesh(
            json!({"hosts": ["podinfo"], "http": [{"route": [{"destination": {"host": "podinfo-canary"}, "weight": 0}]}]}),
        );
        assert_eq!(
            workload_name(single.route(&req("podinfo"), draws(0.99))).as_deref(),
            Some("podinfo")
        );
    }

    #[test]
    fn matches_pick_the_first_matching_route() {
        let m = mesh(json!({"hosts": ["podinfo"], "http": [
            {"match": [{"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}}, {"headers": {"x-canary": {"exact": "insider"}}}, {"queryParams": {"beta": {"exact": "1"}}}],
             "route": [{"destination": {"host": "podinfo-canary"}}]},
            {"route": [{"destination": {"host": "podinfo-primary"}}]}
        ]}));
        let mut r = req("podinfo");
        assert_eq!(
            workload_name(m.route(&r, draws(0.0))).as_deref(),
            Some("podinfo-primary")
        );
        r.headers.insert("cookie".into(), "a=b;canary=always".into());
        assert_eq!(workload_name(m.route(&r, draws(0.0))).as_deref(), Some("podinfo"));
        let mut r = req("podinfo");
        r.headers.insert("x-canary".into(), "insider".into());
        assert_eq!(workload_name(m.route(&r, draws(0.0))).as_deref(), Some("podinfo"));
        let mut r = req("podinfo");
        r.path = "/?beta=1".into();
        assert_eq!(workload_name(m.route(&r, draws(0.0))).as_deref(), Some("podinfo"));
    }

    #[test]
    fn mirror_and_response_headers() {
        let m = mesh(json!({"hosts": ["podinfo"], "http": [{
            "route": [{"destination": {"host": "podinfo-primary"}, "weight": 100, "headers": {"response": {"add": {"Set-Cookie": "flagger-cookie=abc; Max-Age=60"}}}}],
            "mirror": {"host": "podinfo-canary"},
            "mirrorPercentage": {"value": 50.0}
        }]}));
        let route = m
            .route(
                &req("podinfo"),
                Draws {
                    weight: 0.0,
                    mirror: 0.2,
                    replica: 0.0,
                },
            )
            .expect("routes");
        assert_eq!(route.workload.map(|w| w.1).as_deref(), Some("podinfo-primary"));
        assert_eq!(
            route.mirror.and_then(|(_, w)| w).map(|w| w.1).as_deref(),
            Some("podinfo")
        );
        assert_eq!(
            route.response_headers,
            vec![(
                "Set-Cookie".to_owned(),
                "flagger-cookie=abc; Max-Age=60".to_owned()
            )]
        );
        let not_mirrored = m
            .route(
                &req("podinfo"),
                Draws {
                    weight: 0.0,
                    mirror: 0.7,
                    replica: 0.0,
                },
            )
            .expect("routes");
        assert!(not_mirrored.mirror.is_none());
    }

    #[test]
    fn gateways_and_delegation() {
        let mut m = mesh(
            json!({"hosts": ["app.example.com"], "gateways": ["istio-system/public"], "http": [{"delegate": {"name": "podinfo-delegate", "namespace": "test"}}]}),
        );
        m.virtual_services.push(Arc::new((
            "test".into(),
            "podinfo-delegate".into(),
            weighted(0, 100),
        )));
        let mut r = req("app.example.com");
        assert!(
            m.route(&r, draws(0.0)).is_none(),
            "in-mesh traffic does not use a gateway-only VirtualService"
        );
        r.gateway = Some("istio-system/public".into());
        assert_eq!(workload_name(m.route(&r, draws(0.0))).as_deref(), Some("podinfo"));
    }

    #[test]
    fn no_ready_backend_has_no_workload() {
        let mut m = mesh(weighted(0, 100));
        Arc::make_mut(&mut m.workloads[1]).ready_replicas = 0;
        let route = m.route(&req("podinfo"), draws(0.0)).expect("routes");
        assert_eq!(route.workload, None);
        assert_eq!(route.service, "podinfo-canary.test.svc.cluster.local");
    }
}
