//! Starting the API emulator, and what only it needs at start: the bootstrap RBAC objects every
//! API server has, and the token controller of kube-controller-manager (a real cluster runs the
//! real ones).
//! Does I/O (the store, a task).

use std::{net::SocketAddr, path::Path, sync::Arc};

use anyhow::Context;

use serin_runtime::shutdown::Shutdown;

use crate::{
    Backend, Emulator, TestbedOptions,
    apiserver::{self, server::Server, store::Store},
    kubeconfig_yaml, workloads,
};

fn admin_options() -> apiserver::store::WriteOptions {
    apiserver::store::WriteOptions {
        manager: "serin-testbed".into(),
        ..Default::default()
    }
}

/// The bootstrap ClusterRoles and bindings every API server has that matter here:
/// `cluster-admin` for `system:masters`, and discovery, OpenAPI, version and health for every
/// authenticated identity.
pub(crate) fn install_bootstrap_rbac(store: &Store) -> anyhow::Result<()> {
    use serde_json::json;
    let registry = store.registry();
    let roles = registry
        .find("rbac.authorization.k8s.io", "v1", "clusterroles")
        .context("clusterroles are built in")?;
    let bindings = registry
        .find("rbac.authorization.k8s.io", "v1", "clusterrolebindings")
        .context("clusterrolebindings are built in")?;
    let meta = |name: &str| json!({"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}, "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}});
    let group = |name: &str| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": name});
    let defaults = [
        (
            "cluster-admin",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
            vec![group("system:masters")],
        ),
        (
            "system:discovery",
            json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
            vec![group("system:authenticated")],
        ),
        (
            "system:basic-user",
            json!([{"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]}, {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]}]),
            vec![group("system:authenticated")],
        ),
        (
            "system:public-info-viewer",
            json!([{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
            vec![group("system:authenticated"), group("system:unauthenticated")],
        ),
    ];
    for (name, rules, subjects) in defaults {
        let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta(name), "rules": rules});
        let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": meta(name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}, "subjects": subjects});
        for (res, object) in [(roles, role), (bindings, binding)] {
            match store.create(res, None, object, &admin_options()) {
                Ok(_) => {}
                Err(e) if e.code == 409 => {}
                Err(e) => anyhow::bail!("installing the bootstrap {name}: {e}"),
            }
        }
    }
    Ok(())
}

/// The token controller of kube-controller-manager: a `kubernetes.io/service-account-token`
/// Secret naming an existing ServiceAccount (annotation `kubernetes.io/service-account.name`) gets
/// a legacy token, the namespace and `ca.crt` (empty: the emulator serves plain http).
pub(crate) fn spawn_token_controller(
    store: Arc<Store>,
    issuer: Arc<apiserver::rbac::TokenIssuer>,
) -> tokio::task::JoinHandle<()> {
    use apiserver::store::EventType;
    let mut events = store.subscribe();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) if e.type_ != EventType::Deleted && e.key.group.is_empty() => {
                    match e.key.plural.as_str() {
                        "secrets" => fill_token(&store, &issuer, &e.object),
                        // A Secret created before its ServiceAccount is filled when it appears.
                        "serviceaccounts" if e.type_ == EventType::Added => {
                            let registry = store.registry();
                            if let Some(res) = registry.find("", "v1", "secrets") {
                                let (secrets, ..) = store.list(
                                    res,
                                    &apiserver::store::ListQuery {
                                        namespace: Some(e.key.namespace.clone()),
                                        ..Default::default()
                                    },
                                );
                                for secret in &secrets {
                                    fill_token(&store, &issuer, secret);
                                }
                            }
                        }
                        _ => {}
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    })
}

fn fill_token(store: &Store, issuer: &apiserver::rbac::TokenIssuer, secret: &serde_json::Value) {
    use base64::Engine;
    use serde_json::{Value, json};
    let at = |p: &str| {
        secret
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    if at("/type") != apiserver::rbac::SERVICE_ACCOUNT_TOKEN_TYPE || !at("/data/token").is_empty() {
        return;
    }
    let (namespace, name) = (at("/metadata/namespace"), at("/metadata/name"));
    let account = at("/metadata/annotations/kubernetes.io~1service-account.name");
    let registry = store.registry();
    let (Some(accounts), Some(secrets)) = (
        registry.find("", "v1", "serviceaccounts"),
        registry.find("", "v1", "secrets"),
    ) else {
        return;
    };
    let Ok(sa) = store.get(accounts, Some(&namespace), &account) else {
        return;
    };
    let uid = sa
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let token = issuer.issue_legacy(&apiserver::rbac::LegacyTokenClaims {
        namespace: namespace.clone(),
        service_account: account,
        uid: uid.clone(),
        secret: name.clone(),
    });
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let patch = json!({
        "metadata": {"annotations": {"kubernetes.io/service-account.uid": uid}},
        "data": {"token": b64(&token), "namespace": b64(&namespace), "ca.crt": ""},
    });
    let options = apiserver::store::WriteOptions {
        manager: "kube-controller-manager".into(),
        ..Default::default()
    };
    if let Err(err) = store.patch(
        secrets,
        Some(&namespace),
        &name,
        apiserver::store::PatchKind::Merge,
        &patch,
        apiserver::store::Subresource::Main,
        &options,
    ) {
        tracing::warn!(error = %err, secret = %name, "filling a ServiceAccount token Secret failed");
    }
}

/// Starts the API emulator on `options.port` and writes its admin kubeconfig.
pub(crate) async fn start_emulator(
    options: &TestbedOptions,
    shutdown: &Shutdown,
    kubeconfig: &Path,
) -> anyhow::Result<(String, Backend)> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], options.port)))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", options.port))?;
    let addr = listener.local_addr()?;
    let base_url = format!("http://{addr}");
    let token: String = (0..32)
        .map(|_| format!("{:x}", rand::random_range(0..16u8)))
        .collect();
    let store = Arc::new(Store::new(options.event_log));
    install_bootstrap_rbac(&store)?;
    let audit = match &options.audit_dir {
        Some(dir) => Some(
            apiserver::rbac::Audit::open(dir, addr.port())
                .with_context(|| format!("cannot open the audit log in {}", dir.display()))?,
        ),
        None => None,
    };
    let api = Arc::new(Server::new(store.clone(), token.clone(), addr.to_string()).with_audit(audit));
    let token_controller = spawn_token_controller(store.clone(), api.token_issuer());
    let app = apiserver::server::router(api);
    let server = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let serve =
                axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.wait().await });
            if let Err(err) = serve.await {
                tracing::error!(error = %err, "test bed API server failed");
            }
        })
    };
    let workloads = workloads::spawn(store.clone(), options.workload_delay);
    std::fs::write(kubeconfig, kubeconfig_yaml(&base_url, &token))
        .with_context(|| format!("cannot write the kubeconfig {}", kubeconfig.display()))?;
    Ok((
        base_url,
        Backend::Emulator(Emulator {
            store,
            token,
            server,
            workloads,
            token_controller,
        }),
    ))
}
