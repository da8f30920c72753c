//! Helpers shared by the test bed's integration tests.
#![allow(dead_code)]

use kube::Client;

/// Installs serin's CRDs (from the code that generates `crds/`).
pub async fn install_crds(client: &Client) {
    serin_testbed::install_crds(client, serin::api::crds())
        .await
        .expect("CRDs installed");
}

pub use serin_testbed::harness::{create_namespace, eventually};
