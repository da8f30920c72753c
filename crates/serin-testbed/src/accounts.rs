//! ServiceAccounts for the suites: binding a ClusterRole to one, and tokens and kubeconfigs that
//! authenticate as it on either cluster (the chart's RBAC is tested as the controllers use it).
//! Does I/O (the API server).

use std::path::PathBuf;

use anyhow::Context;

use crate::{Backend, Testbed, cluster, harness::ensure_namespace, kubeconfig_yaml};

impl Testbed {
    /// Creates (or replaces) ClusterRole `role` with `rules_yaml` (a YAML list of PolicyRules,
    /// as a chart keeps them) and binds it cluster-wide to ServiceAccount `namespace/name`,
    /// which is created when missing.
    pub async fn bind_cluster_role(
        &self,
        role: &str,
        rules_yaml: &str,
        namespace: &str,
        service_account: &str,
    ) -> anyhow::Result<()> {
        use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
        let rules: Vec<PolicyRule> =
            serde_yaml::from_str(rules_yaml).with_context(|| format!("the rules of ClusterRole {role}"))?;
        self.ensure_service_account(namespace, service_account).await?;
        let params = kube::api::PatchParams::apply("serin-testbed").force();
        let roles: kube::Api<ClusterRole> = kube::Api::all(self.client.clone());
        let object = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": role}, "rules": rules,
        });
        roles
            .patch(role, &params, &kube::api::Patch::Apply(&object))
            .await
            .with_context(|| format!("applying ClusterRole {role}"))?;
        let bindings: kube::Api<ClusterRoleBinding> = kube::Api::all(self.client.clone());
        let binding = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
        });
        bindings
            .patch(role, &params, &kube::api::Patch::Apply(&binding))
            .await
            .with_context(|| format!("applying ClusterRoleBinding {role}"))?;
        Ok(())
    }

    async fn ensure_service_account(&self, namespace: &str, name: &str) -> anyhow::Result<()> {
        use k8s_openapi::api::core::v1::ServiceAccount;
        ensure_namespace(&self.client, namespace).await?;
        let api: kube::Api<ServiceAccount> = kube::Api::namespaced(self.client.clone(), namespace);
        if api.get_opt(name).await?.is_none() {
            let sa = ServiceAccount {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_owned()),
                    ..Default::default()
                },
                ..Default::default()
            };
            match api.create(&kube::api::PostParams::default(), &sa).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("creating ServiceAccount {namespace}/{name}"));
                }
            }
        }
        Ok(())
    }

    /// A bound token for ServiceAccount `namespace/name` (created when missing) from the
    /// TokenRequest API, as `kubectl create token` gets one.
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> anyhow::Result<String> {
        self.ensure_service_account(namespace, name).await?;
        let request = http::Request::builder()
            .method("POST")
            .uri(format!(
                "/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"
            ))
            .header("content-type", "application/json")
            .body(
                serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 86_400}})
                    .to_string()
                    .into_bytes(),
            )?;
        let answer: serde_json::Value = serde_json::from_str(&self.client.request_text(request).await?)?;
        answer
            .pointer("/status/token")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .context("a TokenRequest answer without status.token")
    }

    /// Writes a kubeconfig that authenticates as ServiceAccount `namespace/name` (created when
    /// missing) next to the admin's, and returns its path.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> anyhow::Result<PathBuf> {
        let token = self.service_account_token(namespace, name).await?;
        let path = self
            .kubeconfig
            .with_file_name(format!("kubeconfig-{namespace}-{name}"));
        let yaml = match &self.backend {
            Backend::Emulator(_) => kubeconfig_yaml(&self.base_url, &token),
            Backend::Real(real) => cluster::real::kubeconfig_yaml(
                &self.base_url,
                &real.ca_pem()?,
                &format!("    token: \"{token}\"\n"),
            ),
        };
        std::fs::write(&path, yaml).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}
