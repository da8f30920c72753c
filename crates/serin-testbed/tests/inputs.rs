//! The property pass over the API emulator's request parsing
//! (`serin_testbed::apiserver::inputs`, the entry point `make fuzz` feeds to libFuzzer):
//! thousands of requests made from real ones by changing their paths, query parameters,
//! content types and bodies. None may panic the emulator, and none may be answered with a
//! server error: bad requests are the client's fault (4xx).

use rand::{Rng, rngs::StdRng};
use serin_testbed::{
    apiserver::inputs,
    property::{mutate, pass, pieces},
};

/// Requests as the test bed's clients send them (kubectl, kube-rs, serin, serin-sync).
const SEEDS: &[&str] = &[
    "GET /api/v1/namespaces/test/configmaps?labelSelector=app%3Dc&limit=1\n\n",
    "GET /api/v1/namespaces/test/configmaps?fieldSelector=metadata.name%3Dc&resourceVersion=0\n\n",
    "GET /apis/apps/v1/namespaces/test/deployments?watch=true&resourceVersion=1&allowWatchBookmarks=true\n\n",
    "GET /apis/apps/v1/namespaces/test/deployments/d\napplication/json\n",
    "GET /apis/apps/v1/deployments?limit=1&continue=eyJ2IjoibWV0YS5rOHMuaW8vdjEifQ\n\n",
    "PATCH /apis/apps/v1/namespaces/test/deployments/d?fieldManager=serin&force=true\napplication/apply-patch+yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  replicas: 2\n",
    "PATCH /apis/apps/v1/namespaces/test/deployments/d\napplication/strategic-merge-patch+json\n{\"spec\":{\"template\":{\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"y\"}]}}}}",
    "PATCH /apis/apps/v1/namespaces/test/deployments/d/scale\napplication/merge-patch+json\n{\"spec\":{\"replicas\":0}}",
    "PATCH /api/v1/namespaces/test/configmaps/c\napplication/json-patch+json\n[{\"op\":\"add\",\"path\":\"/data/x\",\"value\":\"1\"},{\"op\":\"test\",\"path\":\"/data/k\",\"value\":\"v\"}]",
    "PUT /api/v1/namespaces/test/configmaps/c\napplication/json\n{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"c\",\"resourceVersion\":\"2\"},\"data\":{}}",
    "POST /api/v1/namespaces/test/secrets?dryRun=All\napplication/json\n{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"generateName\":\"s-\"},\"stringData\":{\"a\":\"b\"}}",
    "DELETE /apis/apps/v1/namespaces/test/deployments/d?propagationPolicy=Foreground\napplication/json\n{\"kind\":\"DeleteOptions\",\"apiVersion\":\"v1\",\"gracePeriodSeconds\":0}",
    "GET /api/v1/namespaces/test/configmaps\napplication/json;as=Table;v=v1;g=meta.k8s.io\n",
    "POST /apis/apiextensions.k8s.io/v1/customresourcedefinitions\napplication/json\n{\"apiVersion\":\"apiextensions.k8s.io/v1\",\"kind\":\"CustomResourceDefinition\",\"metadata\":{\"name\":\"widgets.example.com\"},\"spec\":{\"group\":\"example.com\",\"names\":{\"kind\":\"Widget\",\"plural\":\"widgets\"},\"scope\":\"Namespaced\",\"versions\":[{\"name\":\"v1\",\"served\":true,\"storage\":true,\"schema\":{\"openAPIV3Schema\":{\"type\":\"object\",\"x-kubernetes-preserve-unknown-fields\":true}}}]}}",
    "GET /apis/apps/v1\n\n",
    "GET /openapi/v3/apis/apps/v1\n\n",
];

/// Pieces a request's path and query are changed with.
const TARGET_PIECES: &[&str] = &[
    "/",
    "%",
    "%2F",
    "?",
    "&",
    "=",
    "..",
    "namespaces",
    "test",
    "c",
    "d",
    "status",
    "scale",
    "watch=1",
    "limit=-1",
    "limit=99999999999999999999",
    "continue=%%%",
    "labelSelector=a+in+(b",
    "fieldSelector=x!=",
    "resourceVersion=abc",
    "timeoutSeconds=-5",
    "dryRun=x",
    "propagationPolicy=Nope",
    "\u{1F600}",
];

/// Content types the emulator may be sent.
const CONTENT_TYPES: &[&str] = &[
    "",
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
    "text/plain",
];

/// Values that have broken request handlers before.
const INTERESTING: &[&str] = &[
    "null",
    "[]",
    "{}",
    "\"\"",
    "-1",
    "1e400",
    "99999999999999999999",
    "\"\\u0000\"",
    "[[[[[[[[[[",
    "true",
];

/// One request from a seed: its target extended, its content type swapped, or its body mutated
/// (as YAML lines and as single bytes).
fn request(rng: &mut StdRng) -> String {
    let seed = SEEDS[rng.random_range(0..SEEDS.len())];
    let mut lines = seed.splitn(3, '\n');
    let first = lines.next().unwrap_or_default();
    let mut content_type = lines.next().unwrap_or_default().to_owned();
    let mut body = lines.next().unwrap_or_default().to_owned();
    let (method, mut target) = first
        .split_once(' ')
        .map(|(m, t)| (m.to_owned(), t.to_owned()))
        .unwrap_or_default();
    match rng.random_range(0..5) {
        0 => target.push_str(&pieces(rng, TARGET_PIECES, 4)),
        1 => {
            let cut = rng.random_range(0..=target.len());
            if target.is_char_boundary(cut) {
                target = format!("{}{}", &target[..cut], pieces(rng, TARGET_PIECES, 3));
            }
        }
        2 => content_type = CONTENT_TYPES[rng.random_range(0..CONTENT_TYPES.len())].to_owned(),
        3 if !body.is_empty() => {
            let mut bytes = body.into_bytes();
            for _ in 0..rng.random_range(1..4) {
                let j = rng.random_range(0..bytes.len());
                bytes[j] = b"{}[]\":,0-e\\ \n"[rng.random_range(0..13)];
            }
            body = String::from_utf8_lossy(&bytes).into_owned();
        }
        _ => body = mutate(rng, &body, INTERESTING),
    }
    format!("{method} {target}\n{content_type}\n{body}")
}

#[test]
fn no_request_panics_or_fails_the_emulator() {
    let mut total = 0;
    total += pass("one request", 2000, request, |text| {
        for status in inputs::requests(text) {
            assert!(status < 500, "answered {status}");
        }
    });
    total += pass(
        "a sequence",
        500,
        |rng| {
            (0..inputs::MAX_REQUESTS)
                .map(|_| request(rng))
                .collect::<Vec<_>>()
                .join("\n===\n")
        },
        |text| {
            for status in inputs::requests(text) {
                assert!(status < 500, "answered {status}");
            }
        },
    );
    assert!(total >= 2500, "{total} cases");
}
