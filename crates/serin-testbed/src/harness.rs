//! What every test suite of the project needs from a cluster, once: waiting on a condition with a
//! deadline (never sleeping and hoping) and creating a namespace. CRDs are installed with
//! [`Testbed::install_crds`](crate::Testbed::install_crds), which waits until they are served.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

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

/// Creates a namespace; one that already exists is fine.
pub async fn create_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
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
