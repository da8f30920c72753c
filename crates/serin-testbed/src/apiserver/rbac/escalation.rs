//! Escalation prevention, as the RBAC storage does it: a Role, ClusterRole or binding may only
//! grant what its writer holds (`Covers`), unless the writer may `escalate` or `bind`. No I/O.

use super::*;

/// Whether `owner` rules grant everything `servant` does (Kubernetes' `Covers`): each verb,
/// group, resource, name or URL of `servant`, wildcards taken literally, is allowed by one rule.
pub fn covers(owner: &[Rule], servant: &Rule) -> bool {
    uncovered(owner, servant).is_empty()
}

pub(super) fn uncovered(owner: &[Rule], servant: &Rule) -> Vec<Rule> {
    let single = |verb: &str| Rule {
        verbs: vec![verb.to_owned()],
        ..Rule::default()
    };
    let mut missing = Vec::new();
    for verb in &servant.verbs {
        for url in &servant.non_resource_urls {
            let ok = owner.iter().any(|o| {
                has(&o.verbs, verb)
                    && o.non_resource_urls.iter().any(|u| {
                        u == "*" || u == url || u.strip_suffix('*').is_some_and(|p| url.starts_with(p))
                    })
            });
            if !ok {
                missing.push(Rule {
                    non_resource_urls: vec![url.clone()],
                    ..single(verb)
                });
            }
        }
        for group in &servant.api_groups {
            for resource in &servant.resources {
                let names: Vec<&str> = if servant.resource_names.is_empty() {
                    vec![""]
                } else {
                    servant.resource_names.iter().map(String::as_str).collect()
                };
                for name in names {
                    let ok = owner.iter().any(|o| {
                        has(&o.verbs, verb)
                            && has(&o.api_groups, group)
                            && o.resources.iter().any(|r| {
                                r == "*"
                                    || r == resource
                                    || resource
                                        .split_once('/')
                                        .is_some_and(|(_, sub)| r.strip_prefix("*/") == Some(sub))
                            })
                            && (o.resource_names.is_empty()
                                || (!name.is_empty() && o.resource_names.iter().any(|n| n == name)))
                    });
                    if !ok {
                        missing.push(Rule {
                            api_groups: vec![group.clone()],
                            resources: vec![resource.clone()],
                            resource_names: if name.is_empty() {
                                Vec::new()
                            } else {
                                vec![name.to_owned()]
                            },
                            ..single(verb)
                        });
                    }
                }
            }
        }
    }
    missing
}

/// The API server's escalation check for a Role or ClusterRole written by `user`: allowed when
/// the user holds every permission it grants (in its namespace, or cluster-wide for a
/// ClusterRole) or may `escalate` it.
pub fn check_role_escalation(
    store: &Store,
    user: &User,
    target: &Attributes,
    role: &Value,
) -> Result<(), ApiError> {
    if user.admin {
        return Ok(());
    }
    let escalate = Attributes {
        verb: "escalate".into(),
        subresource: String::new(),
        ..target.clone()
    };
    if authorize(store, user, &escalate).allowed {
        return Ok(());
    }
    let namespace = Some(target.namespace.as_str()).filter(|n| !n.is_empty());
    let held: Vec<Rule> = granted_rules(store, user, namespace)
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let missing: Vec<Rule> = rules_of(role).iter().flat_map(|r| uncovered(&held, r)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(escalation_error(user, target, &missing))
}

/// The API server's check for a RoleBinding or ClusterRoleBinding written by `user`: allowed
/// when the user may `bind` the referenced role or holds every permission it grants in the
/// binding's scope.
pub fn check_binding_escalation(
    store: &Store,
    user: &User,
    target: &Attributes,
    binding: &Value,
) -> Result<(), ApiError> {
    if user.admin {
        return Ok(());
    }
    let kind = binding
        .pointer("/roleRef/kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = binding
        .pointer("/roleRef/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (resource, role_ns) = match kind {
        "ClusterRole" => ("clusterroles", None),
        _ => ("roles", Some(target.namespace.as_str()).filter(|n| !n.is_empty())),
    };
    let bind = Attributes::resource(
        "bind",
        "rbac.authorization.k8s.io",
        resource,
        None,
        Some(target.namespace.as_str()).filter(|n| !n.is_empty()),
        Some(name),
    );
    if authorize(store, user, &bind).allowed {
        return Ok(());
    }
    let registry = store.registry();
    let role = registry
        .find("rbac.authorization.k8s.io", "v1", resource)
        .and_then(|res| store.get(res, role_ns, name).ok())
        .unwrap_or(Value::Null);
    let namespace = Some(target.namespace.as_str()).filter(|n| !n.is_empty());
    let held: Vec<Rule> = granted_rules(store, user, namespace)
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let missing: Vec<Rule> = rules_of(&role).iter().flat_map(|r| uncovered(&held, r)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(escalation_error(user, target, &missing))
}

pub(super) fn escalation_error(user: &User, target: &Attributes, missing: &[Rule]) -> ApiError {
    let list = |v: &[String]| v.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(" ");
    let rules: Vec<String> = missing
        .iter()
        .map(|r| {
            if r.non_resource_urls.is_empty() {
                let names = if r.resource_names.is_empty() {
                    String::new()
                } else {
                    format!(", ResourceNames:[{}]", list(&r.resource_names))
                };
                format!(
                    "{{APIGroups:[{}], Resources:[{}]{names}, Verbs:[{}]}}",
                    list(&r.api_groups),
                    list(&r.resources),
                    list(&r.verbs)
                )
            } else {
                format!(
                    "{{NonResourceURLs:[{}], Verbs:[{}]}}",
                    list(&r.non_resource_urls),
                    list(&r.verbs)
                )
            }
        })
        .collect();
    ApiError::forbidden(format!(
        "{}.rbac.authorization.k8s.io {:?} is forbidden: user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        target.resource,
        target.name,
        user.name,
        list(&user.groups),
        rules.join("\n")
    ))
}
