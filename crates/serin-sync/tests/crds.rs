//! The committed CRDs in `crds/` are what the code generates.

use std::path::Path;

#[test]
fn committed_crds_are_what_the_code_generates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds/serin-sync");
    for (name, yaml) in serin_sync::api::crds_yaml().expect("CRDs render") {
        let on_disk = std::fs::read_to_string(dir.join(&name))
            .unwrap_or_else(|e| panic!("crds/serin-sync/{name} is missing ({e}): run `cargo run -p serin-sync -- crd --out-dir crds/serin-sync`"));
        assert!(
            on_disk == yaml,
            "crds/serin-sync/{name} is stale: run `cargo run -p serin-sync -- crd --out-dir crds/serin-sync` and commit the result"
        );
    }
}

#[test]
fn crds_are_served_by_the_test_bed() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        use kube::{Api, api::PostParams};
        let tb = serin_testbed::Testbed::start().await.expect("test bed");
        tb.install_crds(serin_sync::api::crds()).await.expect("CRDs accepted");
        let ks: Api<serin_sync::api::Kustomization> = Api::namespaced(tb.client(), "default");
        let obj: serin_sync::api::Kustomization = serde_yaml::from_str(
            "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: apps, namespace: default}\nspec:\n  interval: 10m\n  path: ./apps/dev\n  prune: true\n  sourceRef: {kind: GitRepository, name: flux-system}\n  dependsOn: [{name: infrastructure}]\n  postBuild: {substitute: {cluster: dev}}\n",
        )
        .expect("Flux manifest parses");
        let created = ks.create(&PostParams::default(), &obj).await.expect("created");
        assert_eq!(created.spec.depends_on[0].name, "infrastructure");
    });
}
