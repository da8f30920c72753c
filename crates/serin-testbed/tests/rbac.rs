//! RBAC in the emulator: ServiceAccount tokens from the TokenRequest API, Roles, ClusterRoles and
//! their bindings (verbs, resources, subresources, resourceNames, non-resource URLs, groups),
//! 403s with the API server's Status, impersonation and `kubectl auth can-i`/`whoami`, the
//! OwnerReferencesPermissionEnforcement check, and the audit log of decisions.

mod common;

use std::path::Path;

use common::create_namespace;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Secret, ServiceAccount},
    rbac::v1::RoleBinding,
};
use kube::{
    Api, Client,
    api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;
use serin_testbed::{Testbed, TestbedOptions, apiserver::rbac};

async fn client_for(kubeconfig: &Path) -> Client {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig"),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    Client::try_from(config).expect("client")
}

fn status_of<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn apply(tb: &Testbed, yaml: &str) {
    let mut child = tb
        .kubectl()
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("written");
    let out = child.wait_with_output().expect("kubectl ends");
    assert!(
        out.status.success(),
        "kubectl apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn kubectl(tb: &Testbed, args: &[&str]) -> (bool, String) {
    let out = tb.kubectl().args(args).output().expect("kubectl runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const SA: &str = "system:serviceaccount:apps:bot";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_requests_are_authorized_by_rbac() {
    let audit = tempfile::tempdir().expect("tempdir");
    let tb = Testbed::start_with(TestbedOptions {
        audit_dir: Some(audit.path().to_owned()),
        ..TestbedOptions::emulator()
    })
    .await
    .expect("test bed starts");
    let admin = tb.client();
    create_namespace(&admin, "apps").await;
    create_namespace(&admin, "other").await;
    kubectl(&tb, &["-n", "apps", "create", "serviceaccount", "bot"]);
    // Real kubectl gets a bound token from the TokenRequest API.
    let (ok, token) = kubectl(&tb, &["-n", "apps", "create", "token", "bot"]);
    assert!(ok, "kubectl create token: {token}");
    assert_eq!(token.trim().split('.').count(), 3, "a JWT: {token}");
    let kubeconfig = tb.kubeconfig().with_file_name("bot");
    std::fs::write(
        &kubeconfig,
        serin_testbed::kubeconfig_yaml(tb.base_url(), token.trim()),
    )
    .expect("kubeconfig");
    let bot = client_for(&kubeconfig).await;

    // Nothing is granted yet: the API server's 403 Status.
    let secrets: Api<Secret> = Api::namespaced(bot.clone(), "apps");
    let status = status_of(secrets.list(&ListParams::default()).await);
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        format!(
            "secrets is forbidden: User \"{SA}\" cannot list resource \"secrets\" in API group \"\" in the namespace \"apps\""
        )
    );
    assert_eq!(status.details.as_ref().map(|d| d.kind.as_str()), Some("secrets"));
    // Discovery is open to every authenticated identity (system:discovery).
    let version = bot
        .request_text(http::Request::get("/apis").body(Vec::new()).expect("request"))
        .await;
    assert!(version.is_ok(), "{version:?}");
    let metrics = bot
        .request_text(
            http::Request::get("/testbed/requests")
                .body(Vec::new())
                .expect("request"),
        )
        .await;
    assert!(
        matches!(&metrics, Err(kube::Error::Api(s)) if s.code == 403 && s.message == format!("forbidden: User \"{SA}\" cannot get path \"/testbed/requests\"")),
        "{metrics:?}"
    );

    // A Role in apps: configmaps by name, deployments/scale but not deployments.
    apply(
        &tb,
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader, namespace: apps}
rules:
  - apiGroups: [""]
    resources: [configmaps]
    resourceNames: [allowed]
    verbs: [get, list]
  - apiGroups: [apps]
    resources: [deployments/scale]
    verbs: [get, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader, namespace: apps}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
subjects: [{kind: ServiceAccount, name: bot}]
"#,
    );
    let admin_cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "apps");
    for name in ["allowed", "hidden"] {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        admin_cms
            .create(&PostParams::default(), &cm)
            .await
            .expect("configmap");
    }
    let cms: Api<ConfigMap> = Api::namespaced(bot.clone(), "apps");
    cms.get("allowed").await.expect("a named configmap may be read");
    assert_eq!(status_of(cms.get("hidden").await).code, 403);
    assert_eq!(
        status_of(cms.list(&ListParams::default()).await).code,
        403,
        "resourceNames grant no list of everything"
    );
    let one = cms
        .list(&ListParams::default().fields("metadata.name=allowed"))
        .await
        .expect("a list narrowed to the name is authorized for that name");
    assert_eq!(one.items.len(), 1);
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "web:1"}]}}}
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(admin.clone(), "apps")
        .create(&PostParams::default(), &deployment)
        .await
        .expect("deployment");
    let deployments: Api<Deployment> = Api::namespaced(bot.clone(), "apps");
    deployments
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("the scale subresource is granted");
    let status = status_of(
        deployments
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 2}})),
            )
            .await,
    );
    assert_eq!(
        status.message,
        format!(
            "deployments.apps \"web\" is forbidden: User \"{SA}\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"apps\""
        )
    );

    // A ClusterRole bound by a RoleBinding holds in that namespace only.
    apply(
        &tb,
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: secret-lister}
rules: [{apiGroups: [""], resources: [secrets], verbs: [list, watch]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: secret-lister, namespace: apps}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: secret-lister}
subjects: [{kind: ServiceAccount, name: bot, namespace: apps}]
"#,
    );
    secrets
        .list(&ListParams::default())
        .await
        .expect("listed in apps");
    let other: Api<Secret> = Api::namespaced(bot.clone(), "other");
    assert_eq!(status_of(other.list(&ListParams::default()).await).code, 403);
    let all: Api<Secret> = Api::all(bot.clone());
    let status = status_of(all.list(&ListParams::default()).await);
    assert!(
        status.message.ends_with("at the cluster scope"),
        "{}",
        status.message
    );

    // A ClusterRoleBinding to the namespace's ServiceAccount group holds everywhere.
    apply(
        &tb,
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: apps-sa-secret-lister}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: secret-lister}
subjects: [{kind: Group, name: "system:serviceaccounts:apps", apiGroup: rbac.authorization.k8s.io}]
"#,
    );
    all.list(&ListParams::default())
        .await
        .expect("listed cluster-wide");
    other.list(&ListParams::default()).await.expect("listed in other");

    // Real kubectl asks through impersonation and access reviews.
    let (ok, out) = kubectl(
        &tb,
        &["auth", "can-i", "list", "secrets", "-n", "other", "--as", SA],
    );
    assert!(ok && out.trim() == "yes", "{out}");
    let (ok, out) = kubectl(
        &tb,
        &["auth", "can-i", "delete", "secrets", "-n", "apps", "--as", SA],
    );
    assert!(!ok && out.trim() == "no", "{out}");
    let (ok, out) = kubectl(&tb, &["get", "configmaps", "-n", "apps", "--as", SA]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("Error from server (Forbidden): configmaps is forbidden: User \"{SA}\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"apps\"")),
        "{out}"
    );
    let (ok, out) = kubectl(&tb, &["auth", "whoami", "--as", SA, "-o", "json"]);
    assert!(ok, "{out}");
    let who: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(who["status"]["userInfo"]["username"], SA);
    assert!(
        who["status"]["userInfo"]["groups"]
            .as_array()
            .is_some_and(|g| g.contains(&json!("system:serviceaccounts:apps"))),
        "{who}"
    );

    // The audit log holds the decisions for the ServiceAccount, allowed and denied.
    let records = rbac::read_audit(audit.path()).expect("audit");
    assert!(
        records
            .iter()
            .any(|r| r.user == SA && !r.allowed && r.attributes.resource == "secrets")
    );
    assert!(
        records
            .iter()
            .any(|r| r.user == SA && r.allowed && r.attributes.subresource == "scale")
    );
    assert!(
        records.iter().all(|r| r.user != "kubernetes-admin"),
        "the admin is not audited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_unknown_or_deleted_service_accounts_are_refused() {
    let tb = Testbed::start_with(TestbedOptions::emulator())
        .await
        .expect("test bed starts");
    let admin = tb.client();
    create_namespace(&admin, "apps").await;
    let kubeconfig = tb
        .service_account_kubeconfig("apps", "short-lived")
        .await
        .expect("token");
    let client = client_for(&kubeconfig).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "apps");
    assert_eq!(status_of(api.list(&ListParams::default()).await).code, 403);
    Api::<ServiceAccount>::namespaced(admin.clone(), "apps")
        .delete("short-lived", &Default::default())
        .await
        .expect("deleted");
    assert_eq!(
        status_of(api.list(&ListParams::default()).await).code,
        401,
        "a deleted ServiceAccount's token is no longer valid"
    );
    let forged = tb.kubeconfig().with_file_name("forged");
    std::fs::write(
        &forged,
        serin_testbed::kubeconfig_yaml(tb.base_url(), "eyJ.eyJ.forged"),
    )
    .expect("kubeconfig");
    let api: Api<ConfigMap> = Api::namespaced(client_for(&forged).await, "apps");
    assert_eq!(status_of(api.list(&ListParams::default()).await).code, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_owner_references_need_update_on_the_owners_finalizers() {
    let tb = Testbed::start_with(TestbedOptions::emulator())
        .await
        .expect("test bed starts");
    let admin = tb.client();
    create_namespace(&admin, "apps").await;
    let owner = Api::<ConfigMap>::namespaced(admin.clone(), "apps")
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("owner".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("owner");
    tb.bind_cluster_role(
        "writer",
        // A server-side apply that creates its object needs create as well as patch.
        "- apiGroups: [\"\"]\n  resources: [secrets]\n  verbs: [create, patch]\n",
        "apps",
        "writer",
    )
    .await
    .expect("role");
    let client = client_for(
        &tb.service_account_kubeconfig("apps", "writer")
            .await
            .expect("token"),
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(client, "apps");
    let owned = |block: bool| {
        json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "owned", "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid, "blockOwnerDeletion": block, "controller": true}]},
            "stringData": {"k": "v"},
        })
    };
    let params = PatchParams::apply("writer");
    let status = status_of(secrets.patch("owned", &params, &Patch::Apply(owned(true))).await);
    assert_eq!(status.code, 403);
    assert!(
        status.message.contains("cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set finalizers on: User \"system:serviceaccount:apps:writer\" cannot update resource \"configmaps/finalizers\""),
        "{}",
        status.message
    );
    // Without blockOwnerDeletion, creating with an ownerReference needs nothing more.
    secrets
        .patch("owned", &params, &Patch::Apply(owned(false)))
        .await
        .expect("created");
    tb.bind_cluster_role(
        "writer",
        "- apiGroups: [\"\"]\n  resources: [secrets]\n  verbs: [create, patch, delete]\n- apiGroups: [\"\"]\n  resources: [configmaps/finalizers]\n  verbs: [update]\n",
        "apps",
        "writer",
    )
    .await
    .expect("role");
    secrets
        .patch("owned", &params, &Patch::Apply(owned(true)))
        .await
        .expect("changing the reference needs delete on the object and update on the owner's finalizers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_bindings_cannot_grant_more_than_their_writer_holds() {
    let tb = Testbed::start_with(TestbedOptions::emulator())
        .await
        .expect("test bed starts");
    let admin = tb.client();
    create_namespace(&admin, "apps").await;
    tb.bind_cluster_role(
        "rbac-writer",
        r#"
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [create, patch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list]
"#,
        "apps",
        "writer",
    )
    .await
    .expect("role");
    let client = client_for(
        &tb.service_account_kubeconfig("apps", "writer")
            .await
            .expect("token"),
    )
    .await;
    let roles: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        "apps",
        &kube::core::ApiResource::erase::<k8s_openapi::api::rbac::v1::Role>(&()),
    );
    let role = |name: &str, resource: &str| {
        serde_json::from_value::<kube::api::DynamicObject>(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name, "namespace": "apps"},
            "rules": [{"apiGroups": [""], "resources": [resource], "verbs": ["get"]}],
        }))
        .expect("role")
    };
    roles
        .create(&PostParams::default(), &role("cm-reader", "configmaps"))
        .await
        .expect("a Role within what the writer holds");
    let status = status_of(
        roles
            .create(&PostParams::default(), &role("secret-reader", "secrets"))
            .await,
    );
    assert_eq!(status.code, 403);
    assert!(
        status.message.contains("is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\"]}"),
        "{}",
        status.message
    );
    let bindings: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        "apps",
        &kube::core::ApiResource::erase::<RoleBinding>(&()),
    );
    let binding = |name: &str, kind: &str, role: &str| {
        serde_json::from_value::<kube::api::DynamicObject>(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": "apps"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "apps"}],
        }))
        .expect("binding")
    };
    bindings
        .create(&PostParams::default(), &binding("cm", "Role", "cm-reader"))
        .await
        .expect("binding a Role the writer covers");
    let status = status_of(
        bindings
            .create(
                &PostParams::default(),
                &binding("admin", "ClusterRole", "cluster-admin"),
            )
            .await,
    );
    assert_eq!(status.code, 403, "{}", status.message);
    // The bind verb on that ClusterRole allows it.
    tb.bind_cluster_role(
        "rbac-writer",
        r#"
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [create, patch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [clusterroles]
  resourceNames: [cluster-admin]
  verbs: [bind]
"#,
        "apps",
        "writer",
    )
    .await
    .expect("role");
    bindings
        .create(
            &PostParams::default(),
            &binding("admin", "ClusterRole", "cluster-admin"),
        )
        .await
        .expect("bind on cluster-admin allows binding it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_token_secrets_are_filled_and_valid_while_they_exist() {
    let tb = Testbed::start_with(TestbedOptions::emulator())
        .await
        .expect("test bed starts");
    let admin = tb.client();
    create_namespace(&admin, "apps").await;
    // The Secret first: it is filled once its ServiceAccount exists.
    apply(
        &tb,
        r#"
apiVersion: v1
kind: Secret
metadata:
  name: legacy-token
  namespace: apps
  annotations: {kubernetes.io/service-account.name: legacy}
type: kubernetes.io/service-account-token
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: legacy, namespace: apps}
"#,
    );
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "apps");
    let token = common::eventually(
        std::time::Duration::from_secs(10),
        "the token controller to fill the Secret",
        || {
            let secrets = secrets.clone();
            async move {
                let secret = secrets.get("legacy-token").await.ok()?;
                let data = secret.data?;
                let token = String::from_utf8(data.get("token")?.0.clone()).ok()?;
                assert_eq!(data.get("namespace").map(|n| n.0.as_slice()), Some(&b"apps"[..]));
                Some(token)
            }
        },
    )
    .await;
    let kubeconfig = tb.kubeconfig().with_file_name("legacy");
    std::fs::write(&kubeconfig, serin_testbed::kubeconfig_yaml(tb.base_url(), &token)).expect("kubeconfig");
    let client = client_for(&kubeconfig).await;
    let api: Api<ConfigMap> = Api::namespaced(client, "apps");
    let status = status_of(api.list(&ListParams::default()).await);
    assert_eq!(status.code, 403);
    assert!(
        status
            .message
            .contains("User \"system:serviceaccount:apps:legacy\""),
        "{}",
        status.message
    );
    secrets
        .delete("legacy-token", &Default::default())
        .await
        .expect("deleted");
    assert_eq!(
        status_of(api.list(&ListParams::default()).await).code,
        401,
        "the token goes with its Secret"
    );
}

/// On either API server (`SERIN_TESTBED_CLUSTER`): a server-side apply that creates its object is
/// authorized as `create` too, while an apply to an existing object needs only `patch`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_that_creates_needs_create_as_well_as_patch() {
    let tb = Testbed::start().await.expect("test bed starts");
    create_namespace(&tb.client(), "apps").await;
    let only_patch = "- apiGroups: [\"\"]\n  resources: [configmaps]\n  verbs: [patch]\n";
    tb.bind_cluster_role("applier", only_patch, "apps", "applier")
        .await
        .expect("role");
    let client = client_for(
        &tb.service_account_kubeconfig("apps", "applier")
            .await
            .expect("token"),
    )
    .await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client, "apps");
    let object =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"a": "b"}});
    let params = PatchParams::apply("applier");
    // A real API server's authorizer learns the new binding from its watch, a moment later.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        let status = status_of(
            config_maps
                .patch("applied", &params, &Patch::Apply(&object))
                .await,
        );
        if !status.message.contains("cannot patch") || std::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(status.code, 403, "{}", status.message);
    assert!(
        status.message.contains("cannot create resource \"configmaps\""),
        "{}",
        status.message
    );
    // Once it exists, patch alone updates it.
    let admin: Api<ConfigMap> = Api::namespaced(tb.client(), "apps");
    admin
        .patch("applied", &PatchParams::apply("admin"), &Patch::Apply(&object))
        .await
        .expect("the admin creates it");
    let changed =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"c": "d"}});
    config_maps
        .patch("applied", &params, &Patch::Apply(&changed))
        .await
        .expect("patch alone updates an existing object");
}
