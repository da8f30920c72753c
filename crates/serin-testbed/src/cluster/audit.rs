//! Reads a real API server's audit log (JSON lines of `audit.k8s.io/v1` Events): the requests
//! served, counted as the emulator's `/testbed/requests` counts them, and the authorization
//! decisions for identities other than the admin, written in the emulator's audit format so
//! `serin-testbed rbac-audit` reads both. Pure parsing with file I/O at the edges.
//!
//! The log's decision annotation is the request's own (`patch` for a server-side apply). The API
//! server also authorizes `create` when an apply creates its object (answered 201), and `update`
//! on an owner's `finalizers` for an ownerReference with `blockOwnerDeletion` (admission); the
//! log records neither, so they are derived from the response code and the request body.

use std::{collections::BTreeMap, io::Read, path::Path};

use anyhow::Context;
use serde_json::Value;

use crate::{
    RequestCount,
    apiserver::rbac::{Attributes, AuditRecord},
};

/// The admin's group: its requests are not authorization decisions worth auditing.
const ADMIN_GROUP: &str = "system:masters";

fn events(path: &Path, offset: u64) -> anyhow::Result<Vec<Value>> {
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset))?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect())
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// The emulator's resource label for an audit event: `deployments`, `deployments/status`, or
/// the non-resource path.
fn resource_label(event: &Value) -> String {
    let label = resource_of(event);
    let uri = str_at(event, "/requestURI");
    let query = uri.split_once('?').map(|(_, q)| q).unwrap_or_default();
    if query.split('&').any(|pair| pair == "dryRun=All") {
        format!("{label} {}", crate::DRY_RUN)
    } else {
        label
    }
}

fn resource_of(event: &Value) -> String {
    match event.get("objectRef") {
        Some(r) => {
            let resource = str_at(r, "/resource");
            match str_at(r, "/subresource") {
                "" => resource.to_owned(),
                sub => format!("{resource}/{sub}"),
            }
        }
        None => str_at(event, "/requestURI")
            .split('?')
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}

/// User agents of the control plane's own components (and kwok): their requests are the
/// cluster's housekeeping, which the emulator does not have, not a client's under test.
const CONTROL_PLANE_AGENTS: [&str; 4] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
];

/// Requests clients made after byte `offset` of the API server's audit log, by verb, resource and
/// user agent (the control plane's own requests left out).
pub fn request_counts(path: &Path, offset: u64) -> anyhow::Result<Vec<RequestCount>> {
    Ok(count_requests(&events(path, offset)?))
}

fn count_requests(events: &[Value]) -> Vec<RequestCount> {
    let mut counts: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for e in events {
        // A watch logs ResponseStarted and ResponseComplete; count each request once.
        let counted = match str_at(e, "/verb") {
            "watch" => str_at(e, "/stage") == "ResponseStarted",
            _ => str_at(e, "/stage") == "ResponseComplete",
        };
        let agent = str_at(e, "/userAgent");
        if counted && !CONTROL_PLANE_AGENTS.iter().any(|a| agent.starts_with(a)) {
            *counts
                .entry((
                    str_at(e, "/verb").to_owned(),
                    resource_label(e),
                    str_at(e, "/userAgent").to_owned(),
                ))
                .or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|((verb, resource, user_agent), count)| RequestCount {
            verb,
            resource,
            user_agent,
            count,
        })
        .collect()
}

/// The authorization decisions an audit event shows, unless they are the admin's or none was
/// made (an unauthenticated request): the request's own, and those the API server made beside it.
fn decisions(e: &Value) -> Vec<AuditRecord> {
    let decision = str_at(e, "/annotations/authorization.k8s.io~1decision");
    if decision.is_empty() || str_at(e, "/stage") == "ResponseStarted" {
        return Vec::new();
    }
    let groups: Vec<String> = e
        .pointer("/user/groups")
        .and_then(Value::as_array)
        .map(|g| g.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    if groups.iter().any(|g| g == ADMIN_GROUP) {
        return Vec::new();
    }
    let record = |attributes: Attributes, allowed: bool, reason: &str| AuditRecord {
        user: str_at(e, "/user/username").to_owned(),
        groups: groups.clone(),
        attributes,
        allowed,
        reason: reason.to_owned(),
    };
    let verb = str_at(e, "/verb");
    let Some(r) = e.get("objectRef") else {
        let attributes = Attributes {
            verb: verb.to_owned(),
            resource_request: false,
            path: resource_label(e),
            ..Attributes::default()
        };
        return vec![record(
            attributes,
            decision == "allow",
            str_at(e, "/annotations/authorization.k8s.io~1reason"),
        )];
    };
    let attributes = Attributes {
        verb: verb.to_owned(),
        resource_request: true,
        api_group: str_at(r, "/apiGroup").to_owned(),
        resource: str_at(r, "/resource").to_owned(),
        subresource: str_at(r, "/subresource").to_owned(),
        namespace: str_at(r, "/namespace").to_owned(),
        name: str_at(r, "/name").to_owned(),
        path: String::new(),
    };
    let mut out = vec![record(
        attributes.clone(),
        decision == "allow",
        str_at(e, "/annotations/authorization.k8s.io~1reason"),
    )];
    if decision != "allow" {
        return out;
    }
    let code = e
        .pointer("/responseStatus/code")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if code == 403 {
        // Allowed by RBAC for the request's verb, then refused by a further check.
        let message = str_at(e, "/responseStatus/message");
        let verb = if message.contains("cannot create") {
            "create"
        } else {
            verb
        };
        out.push(record(
            Attributes {
                verb: verb.to_owned(),
                ..attributes
            },
            false,
            message,
        ));
        return out;
    }
    if verb == "patch" && code == 201 && attributes.subresource.is_empty() {
        out.push(record(
            Attributes {
                verb: "create".into(),
                ..attributes.clone()
            },
            true,
            "",
        ));
    }
    if matches!(verb, "create" | "update" | "patch") && code < 400 && attributes.subresource.is_empty() {
        let blocking = e
            .pointer("/requestObject/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|o| o.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true));
        for owner in blocking {
            let api_version = str_at(owner, "/apiVersion");
            let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
            out.push(record(
                Attributes {
                    verb: "update".into(),
                    resource_request: true,
                    api_group: group.to_owned(),
                    resource: plural(str_at(owner, "/kind")),
                    subresource: "finalizers".into(),
                    namespace: attributes.namespace.clone(),
                    name: str_at(owner, "/name").to_owned(),
                    path: String::new(),
                },
                true,
                "",
            ));
        }
    }
    out
}

/// The resource of a kind, as the API server's RESTMapper guesses it for most kinds:
/// `Canary` -> `canaries`, `Deployment` -> `deployments`, `Ingress` -> `ingresses`.
fn plural(kind: &str) -> String {
    let lower = kind.to_lowercase();
    if let Some(stem) = lower.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        return format!("{stem}ies");
    }
    if lower.ends_with('s') || lower.ends_with("ch") || lower.ends_with('x') {
        return format!("{lower}es");
    }
    format!("{lower}s")
}

/// Appends the decisions of a real cluster's audit log to `<dir>/authz-<pid>-real.jsonl`.
pub fn export_decisions(audit_log: &Path, dir: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let records: Vec<AuditRecord> = events(audit_log, 0)?.iter().flat_map(decisions).collect();
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("authz-{}-real.jsonl", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    for r in records {
        writeln!(file, "{}", serde_json::to_string(&r)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(stage: &str, verb: &str, user: &str, groups: &[&str], decision: &str) -> Value {
        serde_json::json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "stage": stage, "verb": verb,
            "requestURI": "/apis/apps/v1/namespaces/test/deployments/podinfo/status?fieldManager=x",
            "user": {"username": user, "groups": groups},
            "userAgent": "serin",
            "objectRef": {"resource": "deployments", "subresource": "status", "namespace": "test", "name": "podinfo", "apiGroup": "apps", "apiVersion": "v1"},
            "annotations": {"authorization.k8s.io/decision": decision, "authorization.k8s.io/reason": "because"},
        })
    }

    #[test]
    fn requests_are_counted_once_each() {
        let sa = "system:serviceaccount:istio-system:serin";
        let events = [
            event("ResponseComplete", "patch", sa, &[], "allow"),
            event("ResponseStarted", "watch", sa, &[], "allow"),
            event("ResponseComplete", "watch", sa, &[], "allow"),
        ];
        let mut housekeeping = event("ResponseComplete", "get", "admin", &[], "allow");
        housekeeping["userAgent"] = "kube-controller-manager/v1.36.3 (linux/amd64)".into();
        let events = [events.as_slice(), &[housekeeping]].concat();
        let counts = count_requests(&events);
        assert_eq!(counts.len(), 2);
        assert!(
            counts
                .iter()
                .all(|c| c.count == 1 && c.resource == "deployments/status")
        );
    }

    #[test]
    fn a_dry_run_is_counted_apart() {
        let sa = "system:serviceaccount:flux-system:serin-sync";
        let mut dry = event("ResponseComplete", "patch", sa, &[], "allow");
        dry["requestURI"] =
            "/apis/apps/v1/namespaces/test/deployments/podinfo/status?dryRun=All&fieldManager=m".into();
        let real = event("ResponseComplete", "patch", sa, &[], "allow");
        let counts = count_requests(&[dry, real]);
        let resources: Vec<&str> = counts.iter().map(|c| c.resource.as_str()).collect();
        assert_eq!(resources, ["deployments/status", "deployments/status (dry run)"]);
    }

    #[test]
    fn decisions_skip_the_admin_and_read_the_attributes() {
        let admin = event("ResponseComplete", "get", "admin", &["system:masters"], "allow");
        assert!(decisions(&admin).is_empty());
        let denied = decisions(&event(
            "ResponseComplete",
            "patch",
            "system:serviceaccount:a:b",
            &["system:serviceaccounts"],
            "forbid",
        ));
        assert_eq!(denied.len(), 1);
        assert!(!denied[0].allowed);
        assert_eq!(denied[0].attributes.api_group, "apps");
        assert_eq!(denied[0].attributes.subresource, "status");
        assert_eq!(denied[0].reason, "because");
        let nonresource = serde_json::json!({"stage": "ResponseComplete", "verb": "get", "requestURI": "/version?timeout=5s",
            "user": {"username": "u", "groups": []}, "annotations": {"authorization.k8s.io/decision": "allow"}});
        let d = decisions(&nonresource);
        assert!(!d[0].attributes.resource_request);
        assert_eq!(d[0].attributes.path, "/version");
    }

    #[test]
    fn an_apply_that_creates_with_a_blocking_owner_reference_shows_three_decisions() {
        let mut e = event(
            "ResponseComplete",
            "patch",
            "system:serviceaccount:istio-system:serin",
            &[],
            "allow",
        );
        e["objectRef"] = serde_json::json!({"resource": "deployments", "namespace": "test", "name": "podinfo-primary", "apiGroup": "apps", "apiVersion": "v1"});
        e["responseStatus"] = serde_json::json!({"code": 201});
        e["requestObject"] = serde_json::json!({"metadata": {"ownerReferences": [
            {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo", "blockOwnerDeletion": true, "controller": true}]}});
        let d = decisions(&e);
        let seen: Vec<String> = d
            .iter()
            .map(|r| {
                format!(
                    "{} {}/{}/{} {}",
                    r.attributes.verb,
                    r.attributes.api_group,
                    r.attributes.resource,
                    r.attributes.subresource,
                    r.attributes.name
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                "patch apps/deployments/ podinfo-primary",
                "create apps/deployments/ podinfo-primary",
                "update flagger.app/canaries/finalizers podinfo"
            ]
        );
        assert!(d.iter().all(|r| r.allowed));
        e["responseStatus"] = serde_json::json!({"code": 403, "message": "deployments.apps \"x\" is forbidden: User \"u\" cannot create resource"});
        let d = decisions(&e);
        assert_eq!(
            (d.len(), d[1].attributes.verb.as_str(), d[1].allowed),
            (2, "create", false)
        );
    }

    #[test]
    fn kinds_are_pluralized_as_the_rest_mapper_guesses() {
        for (kind, resource) in [
            ("Canary", "canaries"),
            ("Deployment", "deployments"),
            ("Ingress", "ingresses"),
            ("Gateway", "gateways"),
        ] {
            assert_eq!(plural(kind), resource);
        }
    }
}
