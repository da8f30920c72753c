//! The OwnerReferencesPermissionEnforcement admission check: setting an ownerReference with
//! `blockOwnerDeletion` needs `update` on the owner's finalizers. No I/O.

use super::*;

/// The checks of the OwnerReferencesPermissionEnforcement admission plugin for a write that
/// turns `old` (absent on create) into `new`: changing ownerReferences of an existing object
/// needs `delete` on it, and each new reference with `blockOwnerDeletion` needs `update` on the
/// owner's `finalizers` subresource. `owner_resource` maps (apiVersion, kind) to (group,
/// resource).
pub fn owner_reference_checks(
    target: &Attributes,
    old: Option<&Value>,
    new: &Value,
    owner_resource: impl Fn(&str, &str) -> Option<(String, String)>,
) -> Result<Vec<Attributes>, String> {
    let refs = |v: &Value| -> Vec<Value> {
        v.pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let new_refs = refs(new);
    let old_refs = old.map(refs);
    let changing = match &old_refs {
        None => !new_refs.is_empty(),
        Some(old) => *old != new_refs,
    };
    if !changing {
        return Ok(Vec::new());
    }
    let mut checks = Vec::new();
    if old.is_some() {
        checks.push(Attributes {
            verb: "delete".into(),
            subresource: String::new(),
            ..target.clone()
        });
    }
    let blocking = |r: &Value| r.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true);
    for r in new_refs.iter().filter(|r| blocking(r)) {
        let uid = r.get("uid").and_then(Value::as_str);
        let was_blocking = old_refs
            .iter()
            .flatten()
            .any(|o| o.get("uid").and_then(Value::as_str) == uid && blocking(o));
        if was_blocking {
            continue;
        }
        let api_version = r.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        let kind = r.get("kind").and_then(Value::as_str).unwrap_or_default();
        let Some((group, resource)) = owner_resource(api_version, kind) else {
            return Err(format!(
                "cannot set blockOwnerDeletion in this case because cannot find RESTMapping for APIVersion {api_version} Kind {kind}"
            ));
        };
        checks.push(Attributes::resource(
            "update",
            &group,
            &resource,
            Some("finalizers"),
            Some(target.namespace.as_str()).filter(|n| !n.is_empty()),
            r.get("name").and_then(Value::as_str),
        ));
    }
    Ok(checks)
}
