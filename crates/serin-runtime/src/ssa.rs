//! Taking over fields another writer owns, for server-side apply. An object written before with
//! Update (by Flagger, say) keeps that writer's ownership of every field it set; serin's apply
//! then never removes those fields, even when serin no longer sets them. As Flux does, the
//! foreign Update entries are merged into serin's own Apply entry, so serin's next apply owns
//! (and can remove) what they held. Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
use serde_json::Value;

/// Merges the `fieldsV1` sets of two entries (a union of their field trees).
fn union(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(existing) => union(existing, v),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot @ Value::Null, from) => *slot = from.clone(),
        _ => {}
    }
}

/// The managed fields with every Update entry of a `foreign` manager (on the object itself, not
/// a subresource) merged into `own`'s Apply entry of the same API version; `None` when there is
/// none to merge.
pub fn adopt_foreign_fields(
    entries: &[ManagedFieldsEntry],
    foreign: &[&str],
    own: &str,
) -> Option<Vec<ManagedFieldsEntry>> {
    let is_foreign = |e: &ManagedFieldsEntry| {
        e.operation.as_deref() == Some("Update")
            && e.subresource.as_deref().unwrap_or_default().is_empty()
            && e.manager.as_deref().is_some_and(|m| foreign.contains(&m))
    };
    if !entries.iter().any(is_foreign) {
        return None;
    }
    let mut out: Vec<ManagedFieldsEntry> = entries.iter().filter(|e| !is_foreign(e)).cloned().collect();
    for taken in entries.iter().filter(|e| is_foreign(e)) {
        let fields = taken
            .fields_v1
            .as_ref()
            .map(|f| f.0.clone())
            .unwrap_or(Value::Null);
        let mine = out.iter_mut().find(|e| {
            e.manager.as_deref() == Some(own)
                && e.operation.as_deref() == Some("Apply")
                && e.subresource.as_deref().unwrap_or_default().is_empty()
                && e.api_version == taken.api_version
        });
        match mine {
            Some(mine) => {
                let mut merged = mine.fields_v1.take().map(|f| f.0).unwrap_or(Value::Null);
                union(&mut merged, &fields);
                mine.fields_v1 = Some(FieldsV1(merged));
            }
            None => out.push(ManagedFieldsEntry {
                manager: Some(own.to_owned()),
                operation: Some("Apply".to_owned()),
                subresource: None,
                ..taken.clone()
            }),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(manager: &str, operation: &str, subresource: Option<&str>, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            subresource: subresource.map(str::to_owned),
            api_version: Some("apps/v1".into()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(FieldsV1(fields)),
            time: None,
        }
    }

    #[test]
    fn flaggers_fields_become_serins() {
        let entries = [
            entry(
                "flagger",
                "Update",
                None,
                json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {"f:env": {"k:{\"name\":\"LEGACY\"}": {}}}}}}}}),
            ),
            entry("serin", "Apply", None, json!({"f:spec": {"f:replicas": {}}})),
            entry(
                "kube-controller-manager",
                "Update",
                Some("status"),
                json!({"f:status": {}}),
            ),
            entry(
                "kube-controller-manager",
                "Update",
                Some("scale"),
                json!({"f:spec": {"f:replicas": {}}}),
            ),
        ];
        let adopted = adopt_foreign_fields(&entries, &["flagger"], "serin").expect("adopted");
        let managers: Vec<(&str, &str)> = adopted
            .iter()
            .map(|e| {
                (
                    e.manager.as_deref().unwrap_or_default(),
                    e.subresource.as_deref().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            managers,
            [
                ("serin", ""),
                ("kube-controller-manager", "status"),
                ("kube-controller-manager", "scale")
            ],
            "the autoscaler and the status writer keep theirs"
        );
        assert_eq!(
            adopted[0].fields_v1.as_ref().map(|f| f.0.clone()),
            Some(
                json!({"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {"f:env": {"k:{\"name\":\"LEGACY\"}": {}}}}}}}})
            )
        );
        assert_eq!(
            adopt_foreign_fields(&adopted, &["flagger"], "serin"),
            None,
            "once"
        );
    }

    #[test]
    fn without_an_apply_entry_one_is_made() {
        let entries = [entry("flagger", "Update", None, json!({"f:data": {"f:a": {}}}))];
        let adopted = adopt_foreign_fields(&entries, &["flagger"], "serin").expect("adopted");
        assert_eq!(adopted.len(), 1);
        assert_eq!(adopted[0].manager.as_deref(), Some("serin"));
        assert_eq!(adopted[0].operation.as_deref(), Some("Apply"));
    }
}
