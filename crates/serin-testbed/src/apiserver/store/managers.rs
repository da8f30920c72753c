//! The `managedFields` bookkeeping of writes that are not server-side applies: which manager
//! owns which fields after an update. No I/O.

use super::*;

/// One managedFields entry.
#[derive(Clone, Debug)]
pub(super) struct Manager {
    pub(super) manager: String,
    pub(super) operation: String,
    pub(super) subresource: Option<String>,
    pub(super) time: String,
    pub(super) api_version: String,
    pub(super) fields: FieldSet,
}

pub(super) fn read_managers(obj: &Value) -> Vec<Manager> {
    meta(obj)
        .get("managedFields")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .map(|e| Manager {
                    manager: e
                        .get("manager")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    operation: e
                        .get("operation")
                        .and_then(Value::as_str)
                        .unwrap_or("Update")
                        .to_owned(),
                    subresource: e.get("subresource").and_then(Value::as_str).map(str::to_owned),
                    time: e
                        .get("time")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    api_version: e
                        .get("apiVersion")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    fields: e.get("fieldsV1").map(fields::from_fields_v1).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn write_managers(obj: &mut Value, managers: &[Manager]) {
    let entries: Vec<Value> = managers
        .iter()
        .filter(|m| !m.fields.is_empty())
        .map(|m| {
            let mut e = json!({
                "manager": m.manager,
                "operation": m.operation,
                "apiVersion": m.api_version,
                "time": m.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields::to_fields_v1(&m.fields),
            });
            if let Some(sub) = &m.subresource {
                e["subresource"] = json!(sub);
            }
            e
        })
        .collect();
    if entries.is_empty() {
        meta_mut(obj).remove("managedFields");
    } else {
        meta_mut(obj).insert("managedFields".to_owned(), Value::Array(entries));
    }
}

/// Records an Update by `manager`: it owns what it changed; others lose what it changed or removed.
pub(super) fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    sub: Subresource,
    api_version: &str,
) {
    let include_status = sub == Subresource::Status;
    let new_set = fields::field_set(new, include_status);
    let old_set = old
        .map(|o| fields::field_set(o, include_status))
        .unwrap_or_default();
    let changed: FieldSet = new_set
        .iter()
        .filter(|p| old.is_none_or(|o| fields::get(o, p) != fields::get(new, p)))
        .cloned()
        .collect();
    let removed: FieldSet = old_set.difference(&new_set).cloned().collect();
    let mut managers = old.map(read_managers).unwrap_or_default();
    for m in &mut managers {
        m.fields.retain(|p| !changed.contains(p) && !removed.contains(p));
    }
    if !changed.is_empty() {
        let subresource = include_status.then(|| "status".to_owned());
        let now = now_rfc3339();
        match managers
            .iter_mut()
            .find(|m| m.manager == manager && m.operation == "Update" && m.subresource == subresource)
        {
            Some(m) => {
                m.fields.extend(changed);
                m.time = now;
            }
            None => managers.push(Manager {
                manager: manager.to_owned(),
                operation: "Update".to_owned(),
                subresource,
                time: now,
                api_version: api_version.to_owned(),
                fields: changed,
            }),
        }
    }
    write_managers(new, &managers);
}
