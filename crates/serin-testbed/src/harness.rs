//! What every test suite of the project (and the test bed's own start) needs from a cluster,
//! once: waiting on a condition with a deadline (never sleeping and hoping), installing CRDs and
//! waiting until they are served, and creating namespaces and Services that may already exist.

use std::time::{Duration, Instant};

use anyhow::Context;

use kube::Client;

/// How often the waits look again.
const POLL: Duration = Duration::from_millis(100);

/// Waits until `check` returns `Some`, looking every 100 ms; fails the test naming `what` after
/// `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for checks that block (processes, plain HTTP), outside an async runtime.
pub fn eventually_blocking<T>(deadline: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// Creates a namespace; one that already exists is fine (a test fails on any other error).
pub async fn create_namespace(client: &Client, name: &str) {
    ensure_namespace(client, name)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Creates CRDs (those that exist are left alone) and waits until each is Established.
pub async fn install_crds(
    client: &kube::Client,
    crds: impl IntoIterator<
        Item = k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    >,
) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    let mut names = Vec::new();
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        match api.create(&kube::api::PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e).with_context(|| format!("creating CRD {name}")),
        }
        names.push(name);
    }
    for name in names {
        let established = kube::runtime::wait::await_condition(
            api.clone(),
            &name,
            kube::runtime::wait::conditions::is_crd_established(),
        );
        tokio::time::timeout(Duration::from_secs(30), established)
            .await
            .with_context(|| format!("CRD {name} was not Established within 30s"))?
            .with_context(|| format!("waiting for CRD {name}"))?;
    }
    Ok(())
}

/// Creates a namespace if it does not exist.
pub async fn ensure_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    let api: kube::Api<Namespace> = kube::Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
    match api.create(&kube::api::PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating namespace {name}")),
    }
}

/// Creates a selector-less Service (served by the test bed itself) if it does not exist.
pub async fn ensure_service(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    port: u16,
) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Service;
    ensure_namespace(client, namespace).await?;
    let api: kube::Api<Service> = kube::Api::namespaced(client.clone(), namespace);
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "serin-testbed"}},
        "spec": {"ports": [{"name": "http", "port": port, "targetPort": port}]}
    }))?;
    match api.create(&kube::api::PostParams::default(), &svc).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating Service {namespace}/{name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn eventually_returns_the_first_value_and_times_out_naming_what() {
        let mut n = 0;
        let got = eventually(Duration::from_secs(5), "three tries", || {
            n += 1;
            let v = (n == 3).then_some(n);
            async move { v }
        })
        .await;
        assert_eq!(got, 3);
        let timed_out = std::panic::catch_unwind(|| {
            eventually_blocking(Duration::from_millis(150), "never", || None::<()>)
        });
        let message = timed_out
            .expect_err("times out")
            .downcast::<String>()
            .expect("a message");
        assert!(message.contains("waiting for never"), "{message}");
    }
}
