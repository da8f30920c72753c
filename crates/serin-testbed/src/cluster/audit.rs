//! Reads a real API server's audit log (JSON lines of `audit.k8s.io/v1` Events): the requests
//! served, counted as the emulator's `/testbed/requests` counts them, and the authorization
//! decisions for identities other than the admin, written in the emulator's audit format so
//! `serin-testbed rbac-audit` reads both. Pure parsing with file I/O at the edges.

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

/// The authorization decision an audit event records, unless it is the admin's or none was
/// made (an unauthenticated request).
fn decision(e: &Value) -> Option<AuditRecord> {
    let decision = str_at(e, "/annotations/authorization.k8s.io~1decision");
    if decision.is_empty() || str_at(e, "/stage") == "ResponseStarted" {
        return None;
    }
    let groups: Vec<String> = e
        .pointer("/user/groups")
        .and_then(Value::as_array)
        .map(|g| g.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    if groups.iter().any(|g| g == ADMIN_GROUP) {
        return None;
    }
    let attributes = match e.get("objectRef") {
        Some(r) => Attributes {
            verb: str_at(e, "/verb").to_owned(),
            resource_request: true,
            api_group: str_at(r, "/apiGroup").to_owned(),
            resource: str_at(r, "/resource").to_owned(),
            subresource: str_at(r, "/subresource").to_owned(),
            namespace: str_at(r, "/namespace").to_owned(),
            name: str_at(r, "/name").to_owned(),
            path: String::new(),
        },
        None => Attributes {
            verb: str_at(e, "/verb").to_owned(),
            resource_request: false,
            path: resource_label(e),
            ..Attributes::default()
        },
    };
    Some(AuditRecord {
        user: str_at(e, "/user/username").to_owned(),
        groups,
        attributes,
        allowed: decision == "allow",
        reason: str_at(e, "/annotations/authorization.k8s.io~1reason").to_owned(),
    })
}

/// Appends the decisions of a real cluster's audit log to `<dir>/authz-<pid>-real.jsonl`.
pub fn export_decisions(audit_log: &Path, dir: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let records: Vec<AuditRecord> = events(audit_log, 0)?.iter().filter_map(decision).collect();
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
    fn decisions_skip_the_admin_and_read_the_attributes() {
        let admin = event("ResponseComplete", "get", "admin", &["system:masters"], "allow");
        assert!(decision(&admin).is_none());
        let denied = decision(&event(
            "ResponseComplete",
            "patch",
            "system:serviceaccount:a:b",
            &["system:serviceaccounts"],
            "forbid",
        ))
        .expect("a decision");
        assert!(!denied.allowed);
        assert_eq!(denied.attributes.api_group, "apps");
        assert_eq!(denied.attributes.subresource, "status");
        assert_eq!(denied.reason, "because");
        let nonresource = serde_json::json!({"stage": "ResponseComplete", "verb": "get", "requestURI": "/version?timeout=5s",
            "user": {"username": "u", "groups": []}, "annotations": {"authorization.k8s.io/decision": "allow"}});
        let d = decision(&nonresource).expect("a decision");
        assert!(!d.attributes.resource_request);
        assert_eq!(d.attributes.path, "/version");
    }
}
