//! The Services, DestinationRules and VirtualService of a Canary (Flagger's Kubernetes and Istio
//! routers). Pure.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{FLUX_ANNOTATIONS, owner_reference};
use crate::api::{
    Canary,
    canary::{CustomMetadata, ServiceNames},
};

/// What routing needs to know about the target.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The selector label key and the target's value for it.
    pub label: (&'a str, &'a str),
    /// The target's pod spec (for port discovery).
    pub pod_spec: &'a Value,
}

fn metadata(
    canary: &Canary,
    name: &str,
    custom: Option<&CustomMetadata>,
    extra_labels: &[(&str, &str)],
) -> Value {
    let mut labels: BTreeMap<String, String> = custom.and_then(|c| c.labels.clone()).unwrap_or_default();
    for (k, v) in extra_labels {
        labels.insert((*k).to_owned(), (*v).to_owned());
    }
    let mut annotations: BTreeMap<String, String> =
        custom.and_then(|c| c.annotations.clone()).unwrap_or_default();
    for (k, v) in FLUX_ANNOTATIONS {
        annotations.insert(k.to_owned(), v.to_owned());
    }
    json!({
        "name": name,
        "namespace": canary.metadata.namespace,
        "labels": labels,
        "annotations": annotations,
        "ownerReferences": [owner_reference(canary)],
    })
}

/// Ports discovered on the target's containers (Flagger's `portDiscovery`): every container
/// port but the service's own and those of `istio-proxy`/`envoy` containers.
pub fn discovered_ports(canary: &Canary, pod_spec: &Value) -> Vec<Value> {
    let service = &canary.spec.service;
    let skip = service.target_port.as_ref().map_or_else(
        || json!(service.port),
        |t| match t {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => json!(n),
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => json!(s),
        },
    );
    let mut out = Vec::new();
    for container in pod_spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let cname = container.get("name").and_then(Value::as_str).unwrap_or_default();
        if matches!(cname, "istio-proxy" | "envoy") {
            continue;
        }
        for (i, port) in container
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let Some(number) = port.get("containerPort").and_then(Value::as_i64) else {
                continue;
            };
            let name = port
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("tcp-{cname}-{i}"));
            if json!(number) == skip || port.get("name").is_some_and(|n| *n == skip) {
                continue;
            }
            out.push(json!({"name": name, "protocol": "TCP", "port": number, "targetPort": number}));
        }
    }
    out
}

/// The apex, primary and canary Services.
pub fn services(canary: &Canary, target: Target) -> Vec<Value> {
    let names = canary.service_names();
    let service = &canary.spec.service;
    let (key, value) = target.label;
    let mut main_port = json!({
        "name": service.port_name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "http".into()),
        "protocol": "TCP",
        "port": service.port,
        "targetPort": service.target_port.as_ref().map_or_else(|| json!(service.port), |t| serde_json::to_value(t).unwrap_or(json!(service.port))),
    });
    if let Some(app_protocol) = &service.app_protocol {
        main_port["appProtocol"] = json!(app_protocol);
    }
    let mut ports = vec![main_port];
    if service.port_discovery.unwrap_or(false) {
        ports.extend(discovered_ports(canary, target.pod_spec));
    }
    let primary_value = format!("{value}-primary");
    let build = |name: &str, selector: &str, custom: Option<&CustomMetadata>| {
        let mut spec = json!({"type": "ClusterIP", "selector": {key: selector}, "ports": ports});
        if service.headless.unwrap_or(false) {
            spec["clusterIP"] = json!("None");
        }
        if let Some(td) = &service.traffic_distribution {
            spec["trafficDistribution"] = json!(td);
        }
        json!({"apiVersion": "v1", "kind": "Service", "metadata": metadata(canary, name, custom, &[(key, name)]), "spec": spec})
    };
    vec![
        build(&names.apex, &primary_value, service.apex.as_ref()),
        build(&names.primary, &primary_value, service.primary.as_ref()),
        build(&names.canary, value, service.canary.as_ref()),
    ]
}

/// The merge patch that takes over an apex Service the user made, as Flagger does: only its
/// ports (each keeping its node port, matched by name) and its selector change; its type, load
/// balancer, metadata and owner stay as they are. `None` when both already match.
pub fn take_over_service(existing: &Value, desired: &Value) -> Option<Value> {
    let live_ports = existing
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut ports = desired
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for port in &mut ports {
        let node_port = live_ports
            .iter()
            .filter(|live| live.get("name") == port.get("name"))
            .find_map(|live| live.get("nodePort").filter(|n| n.as_i64().is_some_and(|n| n > 0)));
        if let Some(node_port) = node_port {
            port["nodePort"] = node_port.clone();
        }
    }
    let key = |p: &Value| p.get("port").and_then(Value::as_i64).unwrap_or_default();
    let compared = |list: &[Value]| {
        let mut out: Vec<Value> = list
            .iter()
            .map(|p| {
                let mut kept = serde_json::Map::new();
                for field in [
                    "name",
                    "protocol",
                    "port",
                    "targetPort",
                    "nodePort",
                    "appProtocol",
                ] {
                    if let Some(v) = p.get(field).filter(|v| !v.is_null()) {
                        kept.insert(field.to_owned(), v.clone());
                    }
                }
                Value::Object(kept)
            })
            .collect();
        out.sort_by_key(key);
        out
    };
    let live_selector = existing
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let selector = desired
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if compared(&live_ports) == compared(&ports) && live_selector == selector {
        return None;
    }
    // A merge patch merges maps: keys of the old selector are removed explicitly.
    let mut selector_patch = selector.clone();
    for k in live_selector.keys() {
        if !selector.contains_key(k) {
            selector_patch.insert(k.clone(), Value::Null);
        }
    }
    Some(json!({"spec": {"ports": ports, "selector": selector_patch}}))
}

/// The primary and canary DestinationRules (the Canary's traffic policy in both).
pub fn destination_rules(canary: &Canary) -> Vec<Value> {
    let names = canary.service_names();
    [names.primary, names.canary]
        .into_iter()
        .map(|host| {
            let mut spec = json!({"host": host});
            if let Some(policy) = &canary.spec.service.traffic_policy {
                spec["trafficPolicy"] = serde_json::to_value(policy).unwrap_or(Value::Null);
            }
            json!({
                "apiVersion": "networking.istio.io/v1beta1",
                "kind": "DestinationRule",
                "metadata": {"name": host, "namespace": canary.metadata.namespace, "ownerReferences": [owner_reference(canary)]},
                "spec": spec,
            })
        })
        .collect()
}

/// Why a VirtualService cannot be built.
pub fn virtual_service_error(canary: &Canary) -> Option<String> {
    let service = &canary.spec.service;
    let names = canary.service_names();
    (service.delegation.unwrap_or(false)
        && (service.hosts.as_ref().is_some_and(|h| !h.is_empty())
            || service.gateways.as_ref().is_some_and(|g| !g.is_empty())))
    .then(|| {
        format!(
            "VirtualService {}.{} cannot have hosts and gateways when delegation enabled",
            names.apex,
            canary.metadata.namespace.as_deref().unwrap_or_default()
        )
    })
}

fn destination(canary: &Canary, host: &str, weight: i32) -> Value {
    let service = &canary.spec.service;
    let gateways = service.gateways.clone().unwrap_or_default();
    let delegation = service.delegation.unwrap_or(false);
    let mut d = json!({"destination": {"host": host}, "weight": weight});
    if service.port_discovery.unwrap_or(false)
        && ((!gateways.is_empty() && gateways[0] != "mesh") || delegation)
    {
        d["destination"]["port"] = json!({"number": service.port});
    }
    d
}

/// The parts of every HTTP route that come from `service`: match, rewrite, timeout, retries,
/// CORS policy and headers.
fn route_base(canary: &Canary) -> serde_json::Map<String, Value> {
    let service = &canary.spec.service;
    let mut base = serde_json::Map::new();
    if let Some(m) = service.match_.as_ref().filter(|m| !m.is_empty()) {
        base.insert("match".into(), serde_json::to_value(m).unwrap_or(Value::Null));
    }
    if let Some(r) = &service.rewrite {
        let mut rewrite = serde_json::to_value(r).unwrap_or(Value::Null);
        if let Some(m) = rewrite.as_object_mut() {
            m.remove("type");
        }
        base.insert("rewrite".into(), rewrite);
    }
    if let Some(t) = &service.timeout {
        base.insert("timeout".into(), json!(t));
    }
    if let Some(r) = &service.retries {
        base.insert("retries".into(), serde_json::to_value(r).unwrap_or(Value::Null));
    }
    if let Some(c) = &service.cors_policy {
        base.insert(
            "corsPolicy".into(),
            serde_json::to_value(c).unwrap_or(Value::Null),
        );
    }
    if let Some(h) = &service.headers {
        base.insert("headers".into(), serde_json::to_value(h).unwrap_or(Value::Null));
    }
    base
}

/// Flagger's `mergeMatchConditions`: every extra condition combined with every `service.match`
/// entry (the extra condition's fields win); the extra conditions alone when `service.match` is
/// empty.
pub fn merge_matches(extra: &[Value], service_matches: &[Value]) -> Vec<Value> {
    if service_matches.is_empty() {
        return extra.to_vec();
    }
    let mut merged = Vec::new();
    for e in extra {
        for base in service_matches {
            let mut m = base.clone();
            if let (Some(m), Some(e)) = (m.as_object_mut(), e.as_object()) {
                for (k, v) in e {
                    m.insert(k.clone(), v.clone());
                }
            }
            merged.push(m);
        }
    }
    merged
}

fn service_matches(canary: &Canary) -> Vec<Value> {
    canary
        .spec
        .service
        .match_
        .as_ref()
        .and_then(|m| serde_json::to_value(m).ok())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// A route on the `Cookie` header holding `cookie` (Flagger's sticky-route regex).
fn cookie_route(canary: &Canary, regex: String, route: Value) -> Value {
    let mut r = Value::Object(route_base(canary));
    let cookie = json!({"headers": {"Cookie": {"regex": regex}}});
    r["match"] = json!(merge_matches(&[cookie], &service_matches(canary)));
    r["route"] = route;
    r
}

/// The HTTP routes for the given weights (Flagger's `SetRoutes`): one weighted route; for A/B
/// testing the matched route plus the default one; with session affinity the sticky routes
/// before the weighted one (or, at canary weight 0, the route that expires the old cookie).
pub fn http_routes(
    canary: &Canary,
    names: &ServiceNames,
    primary: i32,
    canary_weight: i32,
    mirrored: bool,
) -> Vec<Value> {
    let base = route_base(canary);
    let analysis = canary.spec.analysis.clone().unwrap_or_default();
    let weighted_dests = || {
        json!([
            destination(canary, &names.primary, primary),
            destination(canary, &names.canary, canary_weight)
        ])
    };
    if let Some(matches) = analysis.match_.as_ref().filter(|m| !m.is_empty()) {
        let extra: Vec<Value> = matches
            .iter()
            .filter_map(|m| serde_json::to_value(m).ok())
            .collect();
        let mut matched = Value::Object(base.clone());
        matched["match"] = json!(merge_matches(&extra, &service_matches(canary)));
        matched["route"] = weighted_dests();
        let mut default = Value::Object(base);
        default["route"] = json!([destination(canary, &names.primary, primary)]);
        return vec![matched, default];
    }
    let mut weighted = Value::Object(base);
    weighted["route"] = weighted_dests();
    let mut routes = Vec::new();
    if let Some(affinity) = &analysis.session_affinity {
        let status = canary.status.clone().unwrap_or_default();
        let set = |v: Option<&String>| v.filter(|c| !c.is_empty()).cloned();
        if canary_weight != 0 {
            if let Some(cookie) = set(status.session_affinity_cookie.as_ref()) {
                weighted["route"][1]["headers"] = json!({"response": {"add": {"Set-Cookie": affinity.build_cookie(&cookie, affinity.max_age())}}});
                routes.push(cookie_route(
                    canary,
                    format!(".*{cookie}.*"),
                    json!([
                        destination(canary, &names.primary, 0),
                        destination(canary, &names.canary, 100)
                    ]),
                ));
            }
            if let (Some(_), Some(cookie)) = (
                affinity.primary_cookie_name.as_ref().filter(|n| !n.is_empty()),
                set(status.primary_session_affinity_cookie.as_ref()),
            ) {
                let max_age = i32::try_from(canary.spec.analysis_interval().as_secs()).unwrap_or(i32::MAX);
                weighted["route"][0]["headers"] =
                    json!({"response": {"add": {"Set-Cookie": affinity.build_cookie(&cookie, max_age)}}});
                routes.push(cookie_route(
                    canary,
                    format!(".*{cookie}.*"),
                    json!([
                        destination(canary, &names.primary, 100),
                        destination(canary, &names.canary, 0)
                    ]),
                ));
            }
        } else if let Some(previous) = set(status.previous_session_affinity_cookie.as_ref()) {
            let mut expire = cookie_route(canary, format!(".*{previous}.*"), weighted_dests());
            expire["headers"] =
                json!({"response": {"add": {"Set-Cookie": format!("{previous}; Max-Age=-1")}}});
            routes.push(expire);
        }
    }
    routes.push(weighted);
    if mirrored {
        let first = &mut routes[0];
        first["mirror"] = json!({"host": names.canary});
        if let Some(w) = analysis.mirror_weight.filter(|w| *w > 0) {
            first["mirrorPercentage"] = json!({"value": f64::from(w)});
        }
    }
    routes
}

/// Whether the Canary's service is plain TCP (`appProtocol: tcp`): TCP routes, no HTTP ones.
pub fn is_tcp(canary: &Canary) -> bool {
    canary
        .spec
        .service
        .app_protocol
        .as_deref()
        .is_some_and(|p| p.eq_ignore_ascii_case("tcp"))
}

/// The TCP route for the given weights (one per `service.match` port).
pub fn tcp_routes(canary: &Canary, names: &ServiceNames, primary: i32, canary_weight: i32) -> Vec<Value> {
    let ports: Vec<Value> = service_matches(canary)
        .iter()
        .filter_map(|m| m.get("port").cloned())
        .map(|port| json!({"port": port}))
        .collect();
    let mut route = json!({"route": [
        destination(canary, &names.primary, primary),
        destination(canary, &names.canary, canary_weight)
    ]});
    if !ports.is_empty() {
        route["match"] = json!(ports);
    }
    vec![route]
}

/// The VirtualService with the given weights.
pub fn virtual_service(canary: &Canary, primary: i32, canary_weight: i32, mirrored: bool) -> Value {
    let names = canary.service_names();
    let service = &canary.spec.service;
    let delegation = service.delegation.unwrap_or(false);
    let mut spec = serde_json::Map::new();
    if delegation {
        spec.insert("hosts".into(), json!([]));
    } else {
        let mut hosts = service.hosts.clone().unwrap_or_default();
        if !hosts.iter().any(|h| *h == names.apex || h == "*") {
            hosts.push(names.apex.clone());
        }
        spec.insert("hosts".into(), json!(hosts));
        let gateways = service
            .gateways
            .clone()
            .filter(|g| !g.is_empty())
            .unwrap_or_else(|| vec!["mesh".into()]);
        spec.insert("gateways".into(), json!(gateways));
    }
    if is_tcp(canary) {
        spec.insert(
            "tcp".into(),
            Value::Array(tcp_routes(canary, &names, primary, canary_weight)),
        );
    } else {
        spec.insert(
            "http".into(),
            Value::Array(http_routes(canary, &names, primary, canary_weight, mirrored)),
        );
    }
    json!({
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": metadata(canary, &names.apex, service.apex.as_ref(), &[]),
        "spec": Value::Object(spec),
    })
}

/// Whether `actual` holds everything `desired` says (fields others added are not drift; numbers
/// compare by value).
pub fn subset_eq(desired: &Value, actual: &Value) -> bool {
    match (desired, actual) {
        (Value::Object(d), Value::Object(a)) => d
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| subset_eq(v, av)) || (v.is_null() && !a.contains_key(k))),
        (Value::Array(d), Value::Array(a)) => {
            d.len() == a.len() && d.iter().zip(a).all(|(d, a)| subset_eq(d, a))
        }
        (Value::Number(d), Value::Number(a)) => d.as_f64() == a.as_f64(),
        (d, a) => d == a,
    }
}

/// Reads the weights back from a VirtualService (Flagger's `GetRoutes`): from the last HTTP route
/// that sends to the canary Service. `None` when no route holds both.
pub fn read_routes(canary: &Canary, vs_spec: &Value) -> Option<(i32, i32, bool)> {
    let names = canary.service_names();
    let mut found = None;
    let kind = if is_tcp(canary) { "tcp" } else { "http" };
    for route in vs_spec.get(kind).and_then(Value::as_array).into_iter().flatten() {
        let dests = route
            .get("route")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let weight = |host: &str| {
            dests
                .iter()
                .find(|d| d.pointer("/destination/host").and_then(Value::as_str) == Some(host))
                .map(|d| d.get("weight").and_then(Value::as_i64).unwrap_or(0) as i32)
        };
        if let Some(cw) = weight(&names.canary) {
            let mirrored = route
                .pointer("/mirror/host")
                .and_then(Value::as_str)
                .is_some_and(|h| !h.is_empty());
            found = Some((weight(&names.primary).unwrap_or(0), cw, mirrored));
        }
    }
    found.filter(|(p, c, _)| *p != 0 || *c != 0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::{CanarySpec, CanaryStatus};

    fn canary(service: Value) -> Canary {
        let spec: CanarySpec = serde_json::from_value(json!({
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": service,
            "analysis": {"interval": "10s", "threshold": 2, "stepWeight": 10, "mirrorWeight": 50}
        }))
        .expect("spec");
        let mut c = Canary::new("podinfo", spec);
        c.metadata.namespace = Some("test".into());
        c.metadata.uid = Some("u".into());
        c
    }

    fn pod_spec() -> Value {
        json!({"containers": [
            {"name": "podinfod", "ports": [{"name": "http", "containerPort": 9898}, {"name": "http-metrics", "containerPort": 9797}, {"containerPort": 9999}]},
            {"name": "istio-proxy", "ports": [{"containerPort": 15090}]}
        ]})
    }

    #[test]
    fn three_services_with_flaggers_selectors_and_ports() {
        let c = canary(
            json!({"port": 80, "targetPort": 9898, "portDiscovery": true, "apex": {"labels": {"test": "labels-test"}, "annotations": {"test": "annotations-test"}}}),
        );
        let svcs = services(
            &c,
            Target {
                label: ("app", "podinfo"),
                pod_spec: &pod_spec(),
            },
        );
        let by_name = |n: &str| {
            svcs.iter()
                .find(|s| s["metadata"]["name"] == n)
                .expect("service")
                .clone()
        };
        assert_eq!(
            by_name("podinfo")["spec"]["selector"],
            json!({"app": "podinfo-primary"})
        );
        assert_eq!(
            by_name("podinfo-primary")["spec"]["selector"],
            json!({"app": "podinfo-primary"})
        );
        assert_eq!(
            by_name("podinfo-canary")["spec"]["selector"],
            json!({"app": "podinfo"})
        );
        let apex = by_name("podinfo");
        assert_eq!(
            apex["metadata"]["labels"],
            json!({"app": "podinfo", "test": "labels-test"})
        );
        assert_eq!(apex["metadata"]["annotations"]["test"], "annotations-test");
        assert_eq!(
            apex["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/reconcile"],
            "disabled"
        );
        let ports: Vec<(Value, Value)> = apex["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| (p["name"].clone(), p["port"].clone()))
            .collect();
        assert_eq!(
            ports,
            [
                (json!("http"), json!(80)),
                (json!("http-metrics"), json!(9797)),
                (json!("tcp-podinfod-2"), json!(9999))
            ]
        );
    }

    #[test]
    fn virtual_service_defaults_to_the_mesh_at_100_0() {
        let c = canary(
            json!({"port": 9898, "headers": {"request": {"add": {"x-envoy-upstream-rq-timeout-ms": "15000"}}}}),
        );
        let vs = virtual_service(&c, 100, 0, false);
        assert_eq!(vs["spec"]["hosts"], json!(["podinfo"]));
        assert_eq!(vs["spec"]["gateways"], json!(["mesh"]));
        let route = &vs["spec"]["http"][0];
        assert_eq!(
            route["route"],
            json!([{"destination": {"host": "podinfo-primary"}, "weight": 100}, {"destination": {"host": "podinfo-canary"}, "weight": 0}])
        );
        assert_eq!(
            route["headers"]["request"]["add"]["x-envoy-upstream-rq-timeout-ms"],
            "15000"
        );
        assert_eq!(read_routes(&c, &vs["spec"]), Some((100, 0, false)));
    }

    #[test]
    fn hosts_gateways_mirror_and_delegation() {
        let c = canary(
            json!({"port": 9898, "portDiscovery": true, "hosts": ["app.example.com"], "gateways": ["istio-system/public"]}),
        );
        let vs = virtual_service(&c, 90, 10, true);
        assert_eq!(vs["spec"]["hosts"], json!(["app.example.com", "podinfo"]));
        assert_eq!(
            vs["spec"]["gateways"],
            json!(["istio-system/public"]),
            "mesh is not added to given gateways"
        );
        assert_eq!(
            vs["spec"]["http"][0]["route"][0]["destination"]["port"],
            json!({"number": 9898})
        );
        assert_eq!(vs["spec"]["http"][0]["mirror"], json!({"host": "podinfo-canary"}));
        assert_eq!(vs["spec"]["http"][0]["mirrorPercentage"], json!({"value": 50.0}));
        assert_eq!(read_routes(&c, &vs["spec"]), Some((90, 10, true)));
        let d = canary(json!({"port": 9898, "delegation": true}));
        assert_eq!(virtual_service(&d, 100, 0, false)["spec"]["hosts"], json!([]));
        assert!(
            virtual_service(&d, 100, 0, false)["spec"]
                .get("gateways")
                .is_none()
        );
        let bad = canary(json!({"port": 9898, "delegation": true, "hosts": ["x"]}));
        assert_eq!(
            virtual_service_error(&bad).as_deref(),
            Some("VirtualService podinfo.test cannot have hosts and gateways when delegation enabled")
        );
    }

    #[test]
    fn a_users_apex_service_keeps_its_type_node_ports_and_metadata() {
        let c = canary(json!({"port": 9898}));
        let pod_spec = pod_spec();
        let desired = &services(
            &c,
            Target {
                label: ("app", "podinfo"),
                pod_spec: &pod_spec,
            },
        )[0];
        let existing = json!({
            "metadata": {"name": "podinfo", "labels": {"team": "a"}, "annotations": {"lb": "x"}},
            "spec": {
                "type": "LoadBalancer",
                "selector": {"app": "podinfo", "tier": "web"},
                "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 9898, "nodePort": 31080}],
                "loadBalancerIP": "10.0.0.9",
            },
        });
        let patch = take_over_service(&existing, desired).expect("a patch");
        assert_eq!(
            patch,
            json!({"spec": {
                "ports": [{"name": "http", "protocol": "TCP", "port": 9898, "targetPort": 9898, "nodePort": 31080}],
                "selector": {"app": "podinfo-primary", "tier": null},
            }}),
            "only ports and selector, the node port kept"
        );
        let mut taken = existing.clone();
        taken["spec"]["ports"] = patch["spec"]["ports"].clone();
        taken["spec"]["selector"] = json!({"app": "podinfo-primary"});
        assert_eq!(take_over_service(&taken, desired), None, "nothing to change");
    }

    #[test]
    fn destination_rules_carry_the_traffic_policy() {
        let c = canary(json!({"port": 9898, "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}));
        let drs = destination_rules(&c);
        assert_eq!(
            drs.iter().map(|d| d["spec"]["host"].clone()).collect::<Vec<_>>(),
            [json!("podinfo-primary"), json!("podinfo-canary")]
        );
        assert!(
            drs.iter()
                .all(|d| d["spec"]["trafficPolicy"]["tls"]["mode"] == "ISTIO_MUTUAL")
        );
    }

    #[test]
    fn ab_testing_gives_the_matched_route_then_the_default_one() {
        let mut c = canary(json!({"port": 9898, "match": [{"uri": {"prefix": "/api"}}], "timeout": "5s"}));
        c.spec.analysis.as_mut().expect("analysis").match_ = Some(vec![
            serde_json::from_value(json!({"headers": {"x-canary": {"exact": "insider"}}})).expect("m"),
            serde_json::from_value(json!({"queryParams": {"beta": {"exact": "1"}}})).expect("m"),
        ]);
        let vs = virtual_service(&c, 0, 100, false);
        let http = vs["spec"]["http"].as_array().expect("http");
        assert_eq!(http.len(), 2);
        assert_eq!(
            http[0]["match"],
            json!([
                {"uri": {"prefix": "/api"}, "headers": {"x-canary": {"exact": "insider"}}},
                {"uri": {"prefix": "/api"}, "queryParams": {"beta": {"exact": "1"}}}
            ]),
            "each analysis match is combined with each service match"
        );
        assert_eq!(
            http[0]["route"],
            json!([{"destination": {"host": "podinfo-primary"}, "weight": 0}, {"destination": {"host": "podinfo-canary"}, "weight": 100}])
        );
        assert_eq!(http[1]["match"], json!([{"uri": {"prefix": "/api"}}]));
        assert_eq!(
            http[1]["route"],
            json!([{"destination": {"host": "podinfo-primary"}, "weight": 0}])
        );
        assert!(http.iter().all(|r| r["timeout"] == "5s"));
        assert_eq!(read_routes(&c, &vs["spec"]), Some((0, 100, false)));
    }

    fn with_affinity(status: CanaryStatus) -> Canary {
        let mut c = canary(json!({"port": 9898}));
        c.spec.analysis.as_mut().expect("analysis").session_affinity = Some(
            serde_json::from_value(
                json!({"cookieName": "flagger-cookie", "primaryCookieName": "primary-cookie", "maxAge": 60}),
            )
            .expect("affinity"),
        );
        c.status = Some(status);
        c
    }

    #[test]
    fn session_affinity_sticky_routes_then_the_weighted_one() {
        let c = with_affinity(CanaryStatus {
            session_affinity_cookie: Some("flagger-cookie=abc".into()),
            primary_session_affinity_cookie: Some("primary-cookie=xyz".into()),
            ..CanaryStatus::default()
        });
        let vs = virtual_service(&c, 90, 10, false);
        let http = vs["spec"]["http"].as_array().expect("http");
        assert_eq!(http.len(), 3);
        assert_eq!(
            http[0]["match"],
            json!([{"headers": {"Cookie": {"regex": ".*flagger-cookie=abc.*"}}}])
        );
        assert_eq!(http[0]["route"][1]["weight"], 100);
        assert_eq!(
            http[1]["match"],
            json!([{"headers": {"Cookie": {"regex": ".*primary-cookie=xyz.*"}}}])
        );
        assert_eq!(http[1]["route"][0]["weight"], 100);
        assert_eq!(
            http[2]["route"][1]["headers"]["response"]["add"]["Set-Cookie"],
            "flagger-cookie=abc; Max-Age=60"
        );
        assert_eq!(
            http[2]["route"][0]["headers"]["response"]["add"]["Set-Cookie"], "primary-cookie=xyz; Max-Age=10",
            "the primary cookie lasts one interval"
        );
        assert_eq!(read_routes(&c, &vs["spec"]), Some((90, 10, false)));

        let done = with_affinity(CanaryStatus {
            session_affinity_cookie: Some(String::new()),
            previous_session_affinity_cookie: Some("flagger-cookie=abc".into()),
            ..CanaryStatus::default()
        });
        let vs = virtual_service(&done, 100, 0, false);
        let http = vs["spec"]["http"].as_array().expect("http");
        assert_eq!(http.len(), 2);
        assert_eq!(
            http[0]["headers"]["response"]["add"]["Set-Cookie"],
            "flagger-cookie=abc; Max-Age=-1"
        );
        assert_eq!(read_routes(&done, &vs["spec"]), Some((100, 0, false)));
    }

    #[test]
    fn tcp_services_get_tcp_routes() {
        let c = canary(json!({"port": 9898, "appProtocol": "TCP", "match": [{"port": 9898}]}));
        let vs = virtual_service(&c, 80, 20, false);
        assert!(vs["spec"].get("http").is_none());
        assert_eq!(vs["spec"]["tcp"][0]["match"], json!([{"port": 9898}]));
        assert_eq!(read_routes(&c, &vs["spec"]), Some((80, 20, false)));
    }

    #[test]
    fn drift_is_what_the_desired_spec_says_and_the_live_one_does_not() {
        let cases = [
            ("equal", json!({"a": 1}), json!({"a": 1}), true),
            (
                "fields others added",
                json!({"a": 1}),
                json!({"a": 1, "b": 2}),
                true,
            ),
            (
                "nested fields others added",
                json!({"r": [{"w": 10}]}),
                json!({"r": [{"w": 10, "x": 1}]}),
                true,
            ),
            (
                "integer and float of one value",
                json!({"w": 10}),
                json!({"w": 10.0}),
                true,
            ),
            ("null means absent", json!({"mirror": null}), json!({}), true),
            (
                "null is also null",
                json!({"mirror": null}),
                json!({"mirror": null}),
                true,
            ),
            ("a changed weight", json!({"w": 10}), json!({"w": 20}), false),
            ("a missing field", json!({"a": 1, "b": 2}), json!({"a": 1}), false),
            (
                "a field set that should be absent",
                json!({"mirror": null}),
                json!({"mirror": {"host": "x"}}),
                false,
            ),
            ("an extra route", json!({"r": [1]}), json!({"r": [1, 2]}), false),
            (
                "routes in another order",
                json!({"r": [1, 2]}),
                json!({"r": [2, 1]}),
                false,
            ),
            (
                "a string for a number",
                json!({"w": 10}),
                json!({"w": "10"}),
                false,
            ),
            (
                "a scalar for an object",
                json!({"m": {"a": 1}}),
                json!({"m": 1}),
                false,
            ),
        ];
        for (what, desired, actual, same) in cases {
            assert_eq!(subset_eq(&desired, &actual), same, "{what}");
        }
    }
}
