//! The simulated Istio data plane with a real Prometheus: weights, errors and latency as
//! Flagger's queries see them, header matches, mirroring, weight-0 routes, the loadtester, the
//! cluster network proxy, and Prometheus' lifecycle.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use common::{create_namespace, eventually};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use serin::api::istio::VirtualService;
use serin_testbed::{Testbed, TestbedOptions, prometheus};

fn deployment(name: &str, app: &str, annotations: Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}, "annotations": annotations},
                "spec": {"containers": [{"name": "podinfod", "image": "ghcr.io/stefanprodan/podinfo:6.0.0", "ports": [{"containerPort": 9898}]}]}
            }
        }
    }))
    .expect("deployment")
}

fn service(name: &str, app: &str) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 80, "targetPort": 9898}]}})).expect("service")
}

fn virtual_service(http: Value) -> VirtualService {
    serde_json::from_value(json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService", "metadata": {"name": "podinfo"}, "spec": {"hosts": ["podinfo"], "http": http}})).expect("vs")
}

fn weighted(primary: i64, canary: i64) -> Value {
    json!([{"route": [{"destination": {"host": "podinfo-primary"}, "weight": primary}, {"destination": {"host": "podinfo-canary"}, "weight": canary}]}])
}

/// podinfo-primary and podinfo (the canary) behind podinfo-primary, podinfo-canary and podinfo.
async fn podinfo(client: &Client, canary_annotations: Value, http: Value) {
    create_namespace(client, "test").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "test");
    deployments
        .create(
            &PostParams::default(),
            &deployment("podinfo-primary", "podinfo-primary", json!({})),
        )
        .await
        .expect("primary");
    deployments
        .create(
            &PostParams::default(),
            &deployment("podinfo", "podinfo", canary_annotations),
        )
        .await
        .expect("canary");
    let services: Api<Service> = Api::namespaced(client.clone(), "test");
    for (name, app) in [
        ("podinfo", "podinfo-primary"),
        ("podinfo-primary", "podinfo-primary"),
        ("podinfo-canary", "podinfo"),
    ] {
        services
            .create(&PostParams::default(), &service(name, app))
            .await
            .expect("service");
    }
    let vs: Api<VirtualService> = Api::namespaced(client.clone(), "test");
    vs.create(&PostParams::default(), &virtual_service(http))
        .await
        .expect("virtual service");
    for name in ["podinfo-primary", "podinfo"] {
        eventually(Duration::from_secs(10), "ready workloads", || {
            let deployments = deployments.clone();
            async move {
                deployments
                    .get(name)
                    .await
                    .ok()
                    .filter(|d| d.status.as_ref().and_then(|s| s.ready_replicas) == Some(1))
            }
        })
        .await;
    }
}

fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("url with port")
}

/// Runs a PromQL query against the test bed's Prometheus: the vector's (labels, value) pairs.
async fn query(tb: &Testbed, promql: &str) -> Vec<(Value, f64)> {
    let port = port_of(tb.prometheus_url().expect("prometheus runs"));
    let (code, body) = prometheus::http_get(port, &format!("/api/v1/query?query={}", encode(promql)))
        .await
        .expect("prometheus answers");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v["data"]["result"]
        .as_array()
        .expect("vector")
        .iter()
        .map(|r| {
            (
                r["metric"].clone(),
                r["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(f64::NAN),
            )
        })
        .collect()
}

/// POSTs a webhook payload through the cluster network proxy: (status, body).
fn post_via_proxy(proxy: &str, url: &str, body: &Value) -> (u16, String) {
    let host = url.trim_start_matches("http://").split('/').next().expect("host");
    let payload = body.to_string();
    request_via_proxy(
        proxy,
        &format!(
            "POST {url} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
            payload.len()
        ),
    )
}

fn get_via_proxy(proxy: &str, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let host = url.trim_start_matches("http://").split('/').next().expect("host");
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    request_via_proxy(
        proxy,
        &format!("GET {url} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"),
    )
}

fn request_via_proxy(proxy: &str, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(proxy.trim_start_matches("http://")).expect("proxy reachable");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("writes");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reads");
    (
        response.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0),
        response,
    )
}

fn webhook(cmd_type: &str, cmd: &str) -> Value {
    json!({"name": "podinfo", "namespace": "test", "phase": "Progressing", "checksum": "x", "metadata": {"type": cmd_type, "cmd": cmd}})
}

async fn full_testbed() -> Testbed {
    Testbed::start_with(TestbedOptions::full())
        .await
        .expect("test bed with Prometheus starts (apt-get install -y prometheus)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_are_honoured_within_three_points() {
    let tb = full_testbed().await;
    podinfo(&tb.client(), json!({}), weighted(90, 10)).await;
    let proxy = tb.proxy_url().expect("proxy").to_owned();
    // 30 s of 100 rps from the loadtester, as Flagger's example Canary asks for it.
    let (code, body) = tokio::task::spawn_blocking(move || {
        post_via_proxy(
            &proxy,
            "http://flagger-loadtester.test/",
            &webhook("cmd", "hey -z 30s -q 50 -c 2 http://podinfo.test/"),
        )
    })
    .await
    .expect("join");
    assert_eq!(code, 202, "{body}");
    let by_workload = eventually(Duration::from_secs(60), "30 s of traffic in Prometheus", || async {
        let rows = query(&tb, r#"sum by (destination_workload) (istio_requests_total{reporter="destination",destination_workload_namespace="test"})"#).await;
        let total: f64 = rows.iter().map(|(_, v)| v).sum();
        (total >= 2950.0).then_some(rows)
    })
    .await;
    let count = |w: &str| {
        by_workload
            .iter()
            .find(|(m, _)| m["destination_workload"] == w)
            .map_or(0.0, |(_, v)| *v)
    };
    let (primary, canary) = (count("podinfo-primary"), count("podinfo"));
    let share = primary * 100.0 / (primary + canary);
    assert!(
        (87.0..=93.0).contains(&share),
        "primary share {share:.1}% ({primary} / {canary})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_latency_read_through_flaggers_queries() {
    let tb = full_testbed().await;
    podinfo(
        &tb.client(),
        json!({"testbed.serin.dev/error-rate": "0.5", "testbed.serin.dev/latency-p99-ms": "800"}),
        weighted(100, 0),
    )
    .await;
    let proxy = tb.proxy_url().expect("proxy").to_owned();
    tokio::task::spawn_blocking(move || {
        for cmd in [
            "hey -z 20s -q 50 -c 2 http://podinfo-canary.test/",
            "hey -z 20s -q 20 -c 1 http://podinfo-primary.test/",
        ] {
            let (code, body) =
                post_via_proxy(&proxy, "http://flagger-loadtester.test/", &webhook("cmd", cmd));
            assert_eq!(code, 202, "{body}");
        }
    })
    .await
    .expect("join");
    let success_rate = |target: &str| {
        format!(
            r#"sum(rate(istio_requests_total{{reporter="destination",destination_workload_namespace="test",destination_workload=~"{target}",response_code!~"5.*"}}[1m])) / sum(rate(istio_requests_total{{reporter="destination",destination_workload_namespace="test",destination_workload=~"{target}"}}[1m])) * 100"#
        )
    };
    // Wait for the whole run (2000 canary requests) to be scraped.
    eventually(
        Duration::from_secs(60),
        "20 s of canary traffic in Prometheus",
        || async {
            let rows = query(
                &tb,
                r#"sum(istio_requests_total{reporter="destination",destination_workload="podinfo"})"#,
            )
            .await;
            rows.first().is_some_and(|(_, v)| *v >= 1980.0).then_some(())
        },
    )
    .await;
    let canary = query(&tb, &success_rate("podinfo")).await;
    assert_eq!(canary.len(), 1, "one series: {canary:?}");
    assert!(
        (45.0..=55.0).contains(&canary[0].1),
        "canary success rate {}",
        canary[0].1
    );
    let primary = query(&tb, &success_rate("podinfo-primary")).await;
    assert_eq!(primary.first().map(|(_, v)| *v), Some(100.0));

    // The P99 of a latency template (this project's, and Flagger's example where present).
    let mut templates = vec![r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="{{ variables.reporter }}",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}[{{ interval }}])) by (le))"#.to_owned()];
    let flagger = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/flagger/canaries/metrictemplate-latency.yaml");
    match std::fs::read_to_string(&flagger) {
        Ok(text) => {
            let doc: Value = serde_yaml::from_str(&text).expect("template yaml");
            templates.push(doc["spec"]["query"].as_str().expect("query").to_owned());
        }
        Err(_) => eprintln!(
            "SKIP (Flagger's latency template): {} not found",
            flagger.display()
        ),
    }
    for template in templates {
        let rendered = template
            .replace("{{ variables.reporter }}", "destination")
            .replace("{{ namespace }}", "test")
            .replace("{{ target }}", "podinfo")
            .replace("{{ interval }}", "1m");
        let p99 = query(&tb, &rendered).await;
        let value = p99.first().map(|(_, v)| *v).expect("a P99");
        // Istio's buckets around 800 ms are 500 and 1000: the interpolated P99 lies between.
        assert!(value > 500.0 && value <= 1000.0, "P99 {value} ms");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_matches_mirrors_and_weight_zero_routes() {
    let tb = Testbed::start_with(TestbedOptions {
        mesh: true,
        ..Default::default()
    })
    .await
    .expect("test bed starts");
    let client = tb.client();
    podinfo(
        &client,
        json!({}),
        json!([
            {"match": [{"headers": {"x-canary": {"exact": "insider"}}}], "route": [{"destination": {"host": "podinfo-canary"}}]},
            {"route": [{"destination": {"host": "podinfo-primary"}}]}
        ]),
    )
    .await;
    let plane = tb.data_plane().expect("data plane").clone();
    let proxy = tb.proxy_url().expect("proxy").to_owned();
    let p = proxy.clone();
    tokio::task::spawn_blocking(move || {
        for _ in 0..25 {
            assert_eq!(
                get_via_proxy(&p, "http://podinfo.test/", &[("X-Canary", "insider")]).0,
                200
            );
            assert_eq!(get_via_proxy(&p, "http://podinfo.test/", &[]).0, 200);
        }
    })
    .await
    .expect("join");
    assert_eq!(
        (
            plane.metrics.count("destination", "podinfo"),
            plane.metrics.count("destination", "podinfo-primary")
        ),
        (25, 25)
    );

    let vs: Api<VirtualService> = Api::namespaced(client.clone(), "test");
    let mirror = json!({"spec": {"http": [{"route": [{"destination": {"host": "podinfo-primary"}, "weight": 100}], "mirror": {"host": "podinfo-canary"}, "mirrorPercentage": {"value": 100.0}}]}});
    vs.patch("podinfo", &PatchParams::default(), &Patch::Merge(mirror))
        .await
        .expect("mirror route");
    let p = proxy.clone();
    let mirrored = plane.clone();
    eventually(Duration::from_secs(10), "the mirror route to apply", || {
        let (p, plane) = (p.clone(), mirrored.clone());
        async move {
            let before = plane.metrics.count("destination", "podinfo");
            tokio::task::spawn_blocking(move || get_via_proxy(&p, "http://podinfo.test/", &[]))
                .await
                .ok()?;
            (plane.metrics.count("destination", "podinfo") > before).then_some(())
        }
    })
    .await;
    let before = (
        plane.metrics.count("destination", "podinfo"),
        plane.metrics.count("destination", "podinfo-primary"),
    );
    let p = proxy.clone();
    let workloads = tokio::task::spawn_blocking(move || {
        (0..20)
            .map(|_| get_via_proxy(&p, "http://podinfo.test/", &[]).1)
            .collect::<Vec<_>>()
    })
    .await
    .expect("join");
    assert!(
        workloads
            .iter()
            .all(|r| r.contains("x-testbed-workload: podinfo-primary")),
        "clients get the primary's answers"
    );
    assert_eq!(
        plane.metrics.count("destination", "podinfo") - before.0,
        20,
        "every request mirrored to the canary"
    );
    assert_eq!(
        plane.metrics.count("destination", "podinfo-primary") - before.1,
        20
    );

    let single =
        json!({"spec": {"http": [{"route": [{"destination": {"host": "podinfo-canary"}, "weight": 0}]}]}});
    vs.patch("podinfo", &PatchParams::default(), &Patch::Merge(single))
        .await
        .expect("single route");
    let p = proxy.clone();
    eventually(
        Duration::from_secs(10),
        "a weight-0 single destination to take the traffic",
        || {
            let p = p.clone();
            async move {
                let (_, raw) =
                    tokio::task::spawn_blocking(move || get_via_proxy(&p, "http://podinfo.test/", &[]))
                        .await
                        .ok()?;
                raw.contains("x-testbed-workload: podinfo\r\n").then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtester_runs_flaggers_webhooks_and_gates() {
    let tb = full_testbed().await;
    let client = tb.client();
    podinfo(&client, json!({}), weighted(100, 0)).await;
    let proxy = tb.proxy_url().expect("proxy").to_owned();
    let url = "http://flagger-loadtester.test/";
    let p = proxy.clone();
    tokio::task::spawn_blocking(move || {
        let cases = [
            (
                webhook("cmd", "hey -z 10s -q 10 -c 2 http://podinfo-canary.test/"),
                202,
            ),
            (
                webhook("bash", "curl -sd 'test' http://podinfo-canary/token | grep token"),
                200,
            ),
            (
                webhook(
                    "bash",
                    "grpc_health_probe -connect-timeout=1s -addr=podinfo-canary:9999",
                ),
                200,
            ),
            (webhook("bash", "kubectl get pods"), 400),
            (webhook("helm", "helm test podinfo"), 400),
            (json!({"name": "podinfo", "namespace": "test"}), 400),
        ];
        for (payload, want) in cases {
            let (code, raw) = post_via_proxy(&p, url, &payload);
            assert_eq!(code, want, "{payload}: {raw}");
        }
        let (_, refused) = post_via_proxy(&p, url, &webhook("bash", "kubectl get pods"));
        assert!(
            refused.contains("grpc_health_probe"),
            "the refusal says what is understood: {refused}"
        );
        // Gates, keyed by name and namespace.
        let gate = |path: &str| {
            post_via_proxy(
                &p,
                &format!("http://flagger-loadtester.test{path}"),
                &webhook("", ""),
            )
            .0
        };
        assert_eq!(gate("/gate/check"), 403);
        assert_eq!(gate("/gate/open"), 202);
        assert_eq!(gate("/gate/check"), 200);
        assert_eq!(gate("/gate/close"), 202);
        assert_eq!(gate("/gate/check"), 403);
        assert_eq!(gate("/gate/approve"), 200);
        assert_eq!(gate("/gate/halt"), 403);
        assert_eq!(gate("/rollback/check"), 403);
        assert_eq!(gate("/rollback/open"), 202);
        assert_eq!(gate("/rollback/check"), 200);
        assert_eq!(gate("/rollback/close"), 202);
        assert_eq!(gate("/rollback/check"), 403);
    })
    .await
    .expect("join");
    eventually(Duration::from_secs(30), "the load test's traffic in Prometheus", || async {
        let rows = query(&tb, r#"sum(istio_requests_total{reporter="destination",destination_workload="podinfo",source_workload="flagger-loadtester"})"#).await;
        rows.first().is_some_and(|(_, v)| *v > 0.0).then_some(())
    })
    .await;

    // A failing check: the canary answers 500, so `grep token` finds nothing.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "test");
    let broken =
        json!({"spec": {"template": {"metadata": {"annotations": {"testbed.serin.dev/error-rate": "1.0"}}}}});
    deployments
        .patch("podinfo", &PatchParams::default(), &Patch::Merge(broken))
        .await
        .expect("patched");
    let p = proxy.clone();
    eventually(Duration::from_secs(10), "the curl check to fail", || {
        let p = p.clone();
        async move {
            let (code, _) = tokio::task::spawn_blocking(move || {
                post_via_proxy(
                    &p,
                    url,
                    &webhook("bash", "curl -sd 'test' http://podinfo-canary/token | grep token"),
                )
            })
            .await
            .ok()?;
            (code == 500).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_reaches_prometheus_and_workloads_with_real_curl() {
    let tb = full_testbed().await;
    podinfo(
        &tb.client(),
        json!({"testbed.serin.dev/error-rate": "1.0"}),
        weighted(100, 0),
    )
    .await;
    let proxy = tb.proxy_url().expect("proxy").to_owned();
    let curl = |args: &[&str]| {
        let output = std::process::Command::new("curl")
            .args(["-s", "-x", &proxy])
            .args(args)
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let answer = curl(&["http://prometheus.istio-system:9090/api/v1/query?query=vector(1)"]);
    let v: Value = serde_json::from_str(&answer).expect("Prometheus JSON");
    assert_eq!(v["data"]["result"][0]["value"][1], "1", "{answer}");
    assert_eq!(
        curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://podinfo-canary.test/"
        ]),
        "500",
        "the canary's simulated status"
    );
    assert_eq!(
        curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://podinfo-primary.test:80/"
        ]),
        "200"
    );
    assert_eq!(
        curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://nothing-here.test/"
        ]),
        "502"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_leaves_no_process_and_its_absence_is_explained() {
    let tb = full_testbed().await;
    let port = port_of(tb.prometheus_url().expect("prometheus"));
    assert_eq!(
        prometheus::http_get(port, "/-/ready").await.map(|(c, _)| c),
        Some(200)
    );
    tb.stop().await;
    eventually(
        Duration::from_secs(10),
        "Prometheus to stop listening",
        || async {
            prometheus::http_get(port, "/-/ready")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;

    let target = "127.0.0.1:9".parse().expect("addr");
    let err = prometheus::Prometheus::start_from_path(target, "/nonexistent")
        .await
        .expect_err("no binary");
    assert!(err.to_string().contains("apt-get install -y prometheus"), "{err}");
}
