//! Authentication and authorization as the Kubernetes API server does them for ServiceAccounts:
//! bound ServiceAccount tokens (the TokenRequest subresource that `kubectl create token` and
//! kubelet use), impersonation (`kubectl --as`), the RBAC authorizer over the Roles, ClusterRoles
//! and bindings stored in the emulator, the OwnerReferencesPermissionEnforcement admission check,
//! access and identity reviews (`kubectl auth can-i`, `kubectl auth whoami`), and an audit log of
//! every authorization decision for identities other than the admin. Pure functions, except
//! [`Audit`], which appends to a file.

use std::{
    collections::BTreeSet,
    io::Write,
    path::{Path, PathBuf},
    sync::Mutex,
};

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{error::ApiError, store::ListQuery, store::Store};

mod audit;
mod escalation;
mod owner_references;
mod tokens;

pub use audit::*;
pub use escalation::*;
pub use owner_references::*;
pub use tokens::*;

/// Why a Role, ClusterRole or binding name is invalid (they are path segments, so
/// `system:discovery` is fine), as `ValidatePathSegmentName` says.
pub fn path_segment_name_error(name: &str) -> Option<String> {
    if name == "." || name == ".." {
        return Some(format!("may not be '{name}'"));
    }
    ["/", "%"]
        .into_iter()
        .find(|c| name.contains(c))
        .map(|c| format!("may not contain '{c}'"))
}

/// The identity of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
    /// The admin (the kubeconfig's token, or no credential at all) is a superuser, as the
    /// `system:masters` group is on a real cluster.
    #[serde(skip)]
    pub admin: bool,
}

/// The group every authenticated identity is in.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The user name prefix of ServiceAccounts.
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
/// The audience of tokens that name none.
pub const DEFAULT_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

impl User {
    pub fn admin() -> Self {
        Self {
            name: "kubernetes-admin".into(),
            groups: vec!["system:masters".into(), AUTHENTICATED.into()],
            admin: true,
        }
    }

    /// `system:serviceaccount:<ns>:<name>` with the groups the API server gives it.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self {
            name: format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                AUTHENTICATED.into(),
            ],
            admin: false,
        }
    }

    /// A user named by impersonation headers; a ServiceAccount name gets its groups.
    pub fn impersonated(name: &str, groups: &[String]) -> Self {
        if let Some((ns, sa)) = name
            .strip_prefix(SERVICE_ACCOUNT_PREFIX)
            .and_then(|r| r.split_once(':'))
            && groups.is_empty()
        {
            return Self::service_account(ns, sa);
        }
        let mut all: Vec<String> = groups.to_vec();
        if !all.iter().any(|g| g == AUTHENTICATED) {
            all.push(AUTHENTICATED.into());
        }
        Self {
            name: name.to_owned(),
            groups: all,
            admin: groups.iter().any(|g| g == "system:masters"),
        }
    }
}

/// What a request asks to do, as the API server's request-info resolver sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attributes {
    pub verb: String,
    /// A resource request (else a non-resource URL such as `/api`).
    pub resource_request: bool,
    #[serde(default)]
    pub api_group: String,
    #[serde(default)]
    pub resource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
}

impl Attributes {
    /// A resource request.
    pub fn resource(
        verb: &str,
        api_group: &str,
        resource: &str,
        subresource: Option<&str>,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Self {
        Self {
            verb: verb.to_owned(),
            resource_request: true,
            api_group: api_group.to_owned(),
            resource: resource.to_owned(),
            subresource: subresource.unwrap_or_default().to_owned(),
            namespace: namespace.unwrap_or_default().to_owned(),
            name: name.unwrap_or_default().to_owned(),
            path: String::new(),
        }
    }

    /// A non-resource request: the verb is the lower-case HTTP method.
    pub fn non_resource(method: &str, path: &str) -> Self {
        Self {
            verb: method.to_ascii_lowercase(),
            resource_request: false,
            path: path.to_owned(),
            ..Self::default()
        }
    }

    /// `resource` or `resource/subresource`.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// The name a list, watch or deletecollection is authorized for: the API server takes it from a
/// field selector that requires `metadata.name` to equal one value (as a single-object watch
/// sends), so `resourceNames` rules can allow it.
pub fn name_from_field_selector(selector: &str) -> Option<String> {
    selector
        .split(',')
        .filter_map(|term| {
            let term = term.trim();
            term.strip_prefix("metadata.name==")
                .or_else(|| term.strip_prefix("metadata.name="))
        })
        .find(|name| !name.is_empty() && path_segment_name_error(name).is_none())
        .map(str::to_owned)
}

/// One `PolicyRule`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default)]
    pub api_groups: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub resource_names: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
}

fn has(list: &[String], item: &str) -> bool {
    list.iter().any(|x| x == "*" || x == item)
}

impl Rule {
    /// Whether the rule allows the request (Kubernetes' `RuleAllows`).
    pub fn allows(&self, attrs: &Attributes) -> bool {
        if !has(&self.verbs, &attrs.verb) {
            return false;
        }
        if !attrs.resource_request {
            return self.non_resource_urls.iter().any(|u| {
                u == "*" || *u == attrs.path || u.strip_suffix('*').is_some_and(|p| attrs.path.starts_with(p))
            });
        }
        let combined = attrs.combined_resource();
        has(&self.api_groups, &attrs.api_group)
            && self.resources.iter().any(|r| {
                r == "*"
                    || *r == combined
                    || (!attrs.subresource.is_empty()
                        && r.len() == attrs.subresource.len() + 2
                        && r.starts_with("*/")
                        && r.ends_with(&attrs.subresource))
            })
            && (self.resource_names.is_empty() || self.resource_names.contains(&attrs.name))
    }
}

/// Rules from a `rules` array (of a Role or ClusterRole).
pub fn rules_of(role: &Value) -> Vec<Rule> {
    role.get("rules")
        .cloned()
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default()
}

/// Whether a binding subject is the user (`appliesToUser`); `namespace` is the binding's.
fn subject_applies(subject: &Value, user: &User, namespace: &str) -> bool {
    let name = subject.get("name").and_then(Value::as_str).unwrap_or_default();
    match subject.get("kind").and_then(Value::as_str) {
        Some("User") => user.name == name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = subject
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or(namespace);
            user.name == format!("{SERVICE_ACCOUNT_PREFIX}{ns}:{name}")
        }
        _ => false,
    }
}

/// An authorization decision and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The binding and role that allowed it, as the RBAC authorizer reports it.
    pub reason: String,
}

/// The rules granted to `user`, each with the binding that grants it: every ClusterRoleBinding's,
/// and with a namespace the resource rules of that namespace's RoleBindings.
pub fn granted_rules(store: &Store, user: &User, namespace: Option<&str>) -> Vec<(String, Rule)> {
    let registry = store.registry();
    let find = |plural: &str| registry.find("rbac.authorization.k8s.io", "v1", plural).cloned();
    let (Some(crb), Some(cr), Some(rb), Some(role)) = (
        find("clusterrolebindings"),
        find("clusterroles"),
        find("rolebindings"),
        find("roles"),
    ) else {
        return Vec::new();
    };
    let subjects_apply = |binding: &Value, ns: &str| {
        binding
            .get("subjects")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|s| subject_applies(s, user, ns)))
    };
    let role_rules = |binding: &Value, ns: Option<&str>| -> Vec<Rule> {
        let kind = binding.pointer("/roleRef/kind").and_then(Value::as_str);
        let name = binding
            .pointer("/roleRef/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let found = match (kind, ns) {
            (Some("ClusterRole"), _) => store.get(&cr, None, name).ok(),
            (Some("Role"), Some(ns)) => store.get(&role, Some(ns), name).ok(),
            _ => None,
        };
        found.map(|r| rules_of(&r)).unwrap_or_default()
    };
    let describe = |binding: &Value| {
        let at = |p: &str| {
            binding
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        format!(
            "{} {:?} of {} {:?}",
            at("/kind"),
            at("/metadata/name"),
            at("/roleRef/kind"),
            at("/roleRef/name")
        )
    };
    let mut out = Vec::new();
    let (bindings, ..) = store.list(&crb, &ListQuery::default());
    for b in bindings.iter().filter(|b| subjects_apply(b, "")) {
        let why = describe(b);
        out.extend(role_rules(b, None).into_iter().map(|r| (why.clone(), r)));
    }
    if let Some(ns) = namespace.filter(|n| !n.is_empty()) {
        let (bindings, ..) = store.list(
            &rb,
            &ListQuery {
                namespace: Some(ns.to_owned()),
                ..Default::default()
            },
        );
        for b in bindings.iter().filter(|b| subjects_apply(b, ns)) {
            let why = describe(b);
            // RoleBindings grant resource rules only.
            out.extend(
                role_rules(b, Some(ns))
                    .into_iter()
                    .filter(|r| r.non_resource_urls.is_empty())
                    .map(|r| (why.clone(), r)),
            );
        }
    }
    out
}

/// The RBAC authorizer over the store's bindings and roles.
pub fn authorize(store: &Store, user: &User, attrs: &Attributes) -> Decision {
    if user.admin {
        return Decision {
            allowed: true,
            reason: "superuser".into(),
        };
    }
    let namespace =
        (attrs.resource_request && !attrs.namespace.is_empty()).then_some(attrs.namespace.as_str());
    match granted_rules(store, user, namespace)
        .into_iter()
        .find(|(_, rule)| rule.allows(attrs))
    {
        Some((why, _)) => Decision {
            allowed: true,
            reason: format!("RBAC: allowed by {why}"),
        },
        None => Decision {
            allowed: false,
            reason: String::new(),
        },
    }
}

/// The 403 the API server answers for a denied request.
pub fn forbidden(user: &User, attrs: &Attributes, qualifier: &str) -> ApiError {
    let what = if !attrs.resource_request {
        format!("User {:?} cannot {} path {:?}", user.name, attrs.verb, attrs.path)
    } else if attrs.namespace.is_empty() {
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
            user.name,
            attrs.verb,
            attrs.combined_resource(),
            attrs.api_group
        )
    } else {
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
            user.name,
            attrs.verb,
            attrs.combined_resource(),
            attrs.api_group,
            attrs.namespace
        )
    };
    let what = if qualifier.is_empty() {
        what
    } else {
        format!("{qualifier}: {what}")
    };
    let qualified = if attrs.api_group.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}.{}", attrs.resource, attrs.api_group)
    };
    let message = match (attrs.resource_request, attrs.name.is_empty()) {
        (false, _) => format!("forbidden: {what}"),
        (true, true) => format!("{qualified} is forbidden: {what}"),
        (true, false) => format!("{qualified} {:?} is forbidden: {what}", attrs.name),
    };
    let mut err = ApiError::forbidden(message);
    if attrs.resource_request {
        err.details = Some(json!({"name": attrs.name, "group": attrs.api_group, "kind": attrs.resource}));
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> Rule {
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect();
        Rule {
            verbs: v(verbs),
            api_groups: v(groups),
            resources: v(resources),
            resource_names: v(names),
            non_resource_urls: Vec::new(),
        }
    }

    #[test]
    fn rules_match_as_kubernetes_evaluates_them() {
        let get_secret = Attributes::resource("get", "", "secrets", None, Some("a"), Some("s"));
        assert!(rule(&["get"], &[""], &["secrets"], &[]).allows(&get_secret));
        assert!(rule(&["*"], &["*"], &["*"], &[]).allows(&get_secret));
        assert!(rule(&["get"], &[""], &["secrets"], &["s"]).allows(&get_secret));
        assert!(!rule(&["get"], &[""], &["secrets"], &["t"]).allows(&get_secret));
        assert!(!rule(&["list"], &[""], &["secrets"], &[]).allows(&get_secret));
        assert!(!rule(&["get"], &["apps"], &["secrets"], &[]).allows(&get_secret));
        let status = Attributes::resource(
            "patch",
            "flagger.app",
            "canaries",
            Some("status"),
            Some("a"),
            Some("c"),
        );
        assert!(!rule(&["patch"], &["flagger.app"], &["canaries"], &[]).allows(&status));
        assert!(rule(&["patch"], &["flagger.app"], &["canaries/status"], &[]).allows(&status));
        assert!(rule(&["patch"], &["flagger.app"], &["*/status"], &[]).allows(&status));
        assert!(!rule(&["patch"], &["flagger.app"], &["*/scale"], &[]).allows(&status));
        let create = Attributes::resource("create", "", "configmaps", None, Some("a"), None);
        assert!(!rule(&["create"], &[""], &["configmaps"], &["x"]).allows(&create));
        let url = Rule {
            verbs: vec!["get".into()],
            non_resource_urls: vec!["/apis/*".into(), "/version".into()],
            ..Rule::default()
        };
        assert!(url.allows(&Attributes::non_resource("GET", "/apis/apps/v1")));
        assert!(url.allows(&Attributes::non_resource("GET", "/version")));
        assert!(!url.allows(&Attributes::non_resource("GET", "/api")));
        assert!(
            !url.allows(&get_secret),
            "non-resource rules never grant resources"
        );
    }

    #[test]
    fn a_name_field_selector_names_the_request() {
        assert_eq!(
            name_from_field_selector("metadata.name=serin-leader-election").as_deref(),
            Some("serin-leader-election")
        );
        assert_eq!(
            name_from_field_selector("status.phase=Running,metadata.name==a").as_deref(),
            Some("a")
        );
        assert_eq!(name_from_field_selector("metadata.name!=a"), None);
        assert_eq!(name_from_field_selector("metadata.namespace=a"), None);
        assert_eq!(name_from_field_selector(""), None);
    }

    #[test]
    fn covering_takes_the_servants_wildcards_literally() {
        let owner = vec![
            rule(&["get", "list"], &[""], &["secrets", "*/status"], &[]),
            rule(&["get"], &["apps"], &["deployments"], &["web"]),
        ];
        assert!(covers(&owner, &rule(&["get"], &[""], &["secrets"], &[])));
        assert!(covers(&owner, &rule(&["list"], &[""], &["secrets"], &["a", "b"])));
        assert!(covers(&owner, &rule(&["get"], &[""], &["pods/status"], &[])));
        assert!(!covers(&owner, &rule(&["watch"], &[""], &["secrets"], &[])));
        assert!(!covers(&owner, &rule(&["*"], &[""], &["secrets"], &[])));
        assert!(!covers(&owner, &rule(&["get"], &["*"], &["secrets"], &[])));
        assert!(covers(
            &owner,
            &rule(&["get"], &["apps"], &["deployments"], &["web"])
        ));
        assert!(!covers(&owner, &rule(&["get"], &["apps"], &["deployments"], &[])));
        let admin = vec![rule(&["*"], &["*"], &["*"], &[])];
        assert!(covers(&admin, &rule(&["*"], &["*"], &["*"], &[])));
    }

    #[test]
    fn subjects_match_users_groups_and_service_accounts() {
        let sa = User::service_account("istio-system", "serin");
        assert!(subject_applies(
            &json!({"kind": "ServiceAccount", "name": "serin", "namespace": "istio-system"}),
            &sa,
            ""
        ));
        assert!(subject_applies(
            &json!({"kind": "ServiceAccount", "name": "serin"}),
            &sa,
            "istio-system"
        ));
        assert!(!subject_applies(
            &json!({"kind": "ServiceAccount", "name": "serin", "namespace": "x"}),
            &sa,
            ""
        ));
        assert!(subject_applies(
            &json!({"kind": "Group", "name": "system:serviceaccounts:istio-system"}),
            &sa,
            ""
        ));
        assert!(subject_applies(
            &json!({"kind": "Group", "name": "system:authenticated"}),
            &sa,
            ""
        ));
        assert!(subject_applies(
            &json!({"kind": "User", "name": "system:serviceaccount:istio-system:serin"}),
            &sa,
            ""
        ));
        assert!(!subject_applies(
            &json!({"kind": "User", "name": "serin"}),
            &sa,
            ""
        ));
    }

    #[test]
    fn forbidden_messages_read_like_the_api_servers() {
        let sa = User::service_account("istio-system", "serin");
        let err = forbidden(
            &sa,
            &Attributes::resource("list", "", "secrets", None, Some("test"), None),
            "",
        );
        assert_eq!(err.code, 403);
        assert_eq!(
            err.message,
            "secrets is forbidden: User \"system:serviceaccount:istio-system:serin\" cannot list resource \"secrets\" in API group \"\" in the namespace \"test\""
        );
        let err = forbidden(
            &sa,
            &Attributes::resource(
                "get",
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                None,
                None,
                Some("x.y"),
            ),
            "",
        );
        assert_eq!(
            err.message,
            "customresourcedefinitions.apiextensions.k8s.io \"x.y\" is forbidden: User \"system:serviceaccount:istio-system:serin\" cannot get resource \"customresourcedefinitions\" in API group \"apiextensions.k8s.io\" at the cluster scope"
        );
        let err = forbidden(&sa, &Attributes::non_resource("GET", "/metrics"), "");
        assert_eq!(
            err.message,
            "forbidden: User \"system:serviceaccount:istio-system:serin\" cannot get path \"/metrics\""
        );
    }

    #[test]
    fn tokens_verify_until_they_expire_and_not_when_forged() {
        let issuer = TokenIssuer::new("k".into());
        let claims = TokenClaims {
            namespace: "ns".into(),
            service_account: "sa".into(),
            uid: "u".into(),
            expires: 100,
        };
        let token = issuer.issue(&claims, &[DEFAULT_AUDIENCE.into()], 10);
        assert_eq!(issuer.verify(&token, 50), Some(claims));
        assert_eq!(issuer.verify(&token, 100), None);
        assert_eq!(TokenIssuer::new("other".into()).verify(&token, 50), None);
        assert_eq!(issuer.verify(&format!("{token}x"), 50), None);
        assert_eq!(
            issuer.verify_legacy(&token),
            None,
            "a bound token is not a legacy one"
        );
        let legacy = LegacyTokenClaims {
            namespace: "ns".into(),
            service_account: "sa".into(),
            uid: "u".into(),
            secret: "sa-token".into(),
        };
        let token = issuer.issue_legacy(&legacy);
        assert_eq!(issuer.verify_legacy(&token), Some(legacy));
        assert_eq!(
            issuer.verify(&token, 50),
            None,
            "a legacy token is not a bound one"
        );
    }

    #[test]
    fn usage_reports_idle_grants_and_denials() {
        let rules = vec![
            rule(&["list", "watch"], &["apps"], &["deployments"], &[]),
            rule(
                &["get"],
                &["apiextensions.k8s.io"],
                &["customresourcedefinitions"],
                &["a.b", "c.d"],
            ),
        ];
        let user = User::service_account("ns", "sa");
        let record = |attrs: Attributes, allowed: bool| AuditRecord {
            user: user.name.clone(),
            groups: user.groups.clone(),
            attributes: attrs,
            allowed,
            reason: String::new(),
        };
        let records = vec![
            record(
                Attributes::resource("list", "apps", "deployments", None, None, None),
                true,
            ),
            record(
                Attributes::resource(
                    "get",
                    "apiextensions.k8s.io",
                    "customresourcedefinitions",
                    None,
                    None,
                    Some("a.b"),
                ),
                true,
            ),
            record(
                Attributes::resource("get", "", "secrets", None, Some("x"), Some("s")),
                false,
            ),
            AuditRecord {
                user: "someone-else".into(),
                ..record(
                    Attributes::resource("watch", "apps", "deployments", None, None, None),
                    true,
                )
            },
        ];
        let u = usage(&rules, &records, &user.name);
        assert_eq!(u.decisions, 3);
        assert_eq!(
            u.idle,
            vec![
                "rule 0: watch apps/deployments".to_owned(),
                "rule 1: get apiextensions.k8s.io/customresourcedefinitions named \"c.d\"".to_owned(),
            ]
        );
        assert_eq!(u.denied, vec!["get core/secrets \"s\" in x".to_owned()]);
    }

    #[test]
    fn owner_references_need_finalizer_rights_on_the_owner() {
        let target = Attributes::resource(
            "patch",
            "apps",
            "deployments",
            None,
            Some("test"),
            Some("podinfo-primary"),
        );
        let owner = json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo", "uid": "1", "blockOwnerDeletion": true, "controller": true});
        let new = json!({"metadata": {"ownerReferences": [owner]}});
        let map = |_: &str, kind: &str| {
            (kind == "Canary").then(|| ("flagger.app".to_owned(), "canaries".to_owned()))
        };
        let checks = owner_reference_checks(&target, None, &new, map).expect("mapped");
        assert_eq!(
            checks,
            vec![Attributes::resource(
                "update",
                "flagger.app",
                "canaries",
                Some("finalizers"),
                Some("test"),
                Some("podinfo")
            )]
        );
        assert!(
            owner_reference_checks(&target, Some(&new), &new, map)
                .expect("ok")
                .is_empty()
        );
        let old = json!({"metadata": {}});
        let checks = owner_reference_checks(&target, Some(&old), &new, map).expect("mapped");
        assert_eq!(checks[0].verb, "delete");
        assert_eq!(checks.len(), 2);
        let unknown = json!({"metadata": {"ownerReferences": [{"apiVersion": "x/v1", "kind": "Nope", "name": "n", "uid": "2", "blockOwnerDeletion": true}]}});
        assert!(owner_reference_checks(&target, None, &unknown, map).is_err());
    }
}
