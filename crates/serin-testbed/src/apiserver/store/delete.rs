//! Deleting objects: finalizers, deletion propagation (foreground, background, orphan) and
//! ownerReference garbage collection. No I/O.

use super::*;

impl Store {
    /// Deletes an object, honouring finalizers and propagation. Returns the object as deleted (or
    /// marked for deletion).
    pub fn delete(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        propagation: Option<Propagation>,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let key = Self::key(res, namespace, name);
        let existing = state
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&res.group, &res.plural, name))?;
        if dry_run {
            return Ok(Self::present(res, &existing));
        }
        let propagation = propagation.unwrap_or(Propagation::Background);
        let is_namespace = res.group.is_empty() && res.plural == "namespaces";
        let mut obj = existing.clone();
        let mut finalizers: Vec<Value> = meta(&obj)
            .get("finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let add = |finalizers: &mut Vec<Value>, f: &str| {
            if !finalizers.iter().any(|x| x == f) {
                finalizers.push(json!(f));
            }
        };
        match propagation {
            Propagation::Foreground => add(&mut finalizers, "foregroundDeletion"),
            Propagation::Orphan => add(&mut finalizers, "orphan"),
            Propagation::Background => {}
        }
        if is_namespace && meta(&obj).get("deletionTimestamp").is_none() {
            obj["status"] = json!({"phase": "Terminating"});
        }
        if finalizers.is_empty() && !is_namespace {
            let removed = self.remove_now(&mut state, &key);
            self.collect_garbage(&mut state);
            return Ok(Self::present(res, &removed.unwrap_or(existing)));
        }
        if meta(&obj).get("deletionTimestamp").is_none()
            || meta(&obj)
                .get("finalizers")
                .and_then(Value::as_array)
                .map(Vec::len)
                != Some(finalizers.len())
        {
            let m = meta_mut(&mut obj);
            m.entry("deletionTimestamp")
                .or_insert_with(|| json!(now_rfc3339()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            m.insert("finalizers".into(), Value::Array(finalizers));
            obj = self.commit(&mut state, key, EventType::Modified, obj);
        }
        self.collect_garbage(&mut state);
        Ok(Self::present(res, &obj))
    }

    pub(super) fn remove_now(&self, state: &mut State, key: &Key) -> Option<Value> {
        let obj = state.objects.get(key).cloned()?;
        if key.group == "apiextensions.k8s.io"
            && key.plural == "customresourcedefinitions"
            && let (Some(group), Some(plural)) = (
                obj.pointer("/spec/group").and_then(Value::as_str),
                obj.pointer("/spec/names/plural").and_then(Value::as_str),
            )
        {
            let (group, plural) = (group.to_owned(), plural.to_owned());
            let doomed: Vec<Key> = state
                .objects
                .keys()
                .filter(|k| k.group == group && k.plural == plural)
                .cloned()
                .collect();
            for k in doomed {
                if let Some(o) = state.objects.get(&k).cloned() {
                    self.commit(state, k, EventType::Deleted, o);
                }
            }
            Arc::make_mut(&mut state.registry).unregister_crd(&group, &plural);
        }
        Some(self.commit(state, key.clone(), EventType::Deleted, obj))
    }

    /// Garbage collection, run after every deletion: dependents of deleted owners, foreground
    /// and orphan finalizers, and terminating namespaces.
    pub(super) fn collect_garbage(&self, state: &mut State) {
        loop {
            let mut changed = false;
            let uids: std::collections::HashSet<String> = state
                .objects
                .values()
                .filter_map(|o| meta_str(o, "uid").map(str::to_owned))
                .collect();
            let snapshot: Vec<(Key, Value)> = state
                .objects
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (key, obj) in &snapshot {
                let deleting = meta(obj).get("deletionTimestamp").is_some();
                let finalizers: Vec<String> = meta(obj)
                    .get("finalizers")
                    .and_then(Value::as_array)
                    .map(|f| f.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                let uid = meta_str(obj, "uid").unwrap_or_default().to_owned();
                let dependents: Vec<&(Key, Value)> = snapshot
                    .iter()
                    .filter(|(_, d)| {
                        meta(d)
                            .get("ownerReferences")
                            .and_then(Value::as_array)
                            .is_some_and(|refs| {
                                refs.iter()
                                    .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid.as_str()))
                            })
                    })
                    .collect();
                // Orphan: drop our ownerReferences from dependents, then our finalizer.
                if deleting && finalizers.iter().any(|f| f == "orphan") {
                    for (dk, d) in &dependents {
                        let mut d = d.clone();
                        if let Some(Value::Array(refs)) = meta_mut(&mut d).get_mut("ownerReferences") {
                            refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
                        }
                        self.commit(state, dk.clone(), EventType::Modified, d);
                    }
                    self.drop_finalizer(state, key, obj, "orphan");
                    changed = true;
                    break;
                }
                // Foreground: delete dependents first; finish once none is left.
                if deleting && finalizers.iter().any(|f| f == "foregroundDeletion") {
                    if dependents.is_empty() {
                        self.drop_finalizer(state, key, obj, "foregroundDeletion");
                        changed = true;
                        break;
                    }
                    for (dk, d) in &dependents {
                        if meta(d).get("deletionTimestamp").is_none() {
                            self.mark_or_remove(state, dk, d);
                            changed = true;
                        }
                    }
                    if changed {
                        break;
                    }
                }
                // Terminating namespace: delete its contents, then itself.
                if deleting && key.group.is_empty() && key.plural == "namespaces" {
                    let contents: Vec<&(Key, Value)> =
                        snapshot.iter().filter(|(k, _)| k.namespace == key.name).collect();
                    if contents.is_empty() {
                        self.commit(state, key.clone(), EventType::Deleted, obj.clone());
                        changed = true;
                        break;
                    }
                    for (ck, c) in contents {
                        if meta(c).get("deletionTimestamp").is_none() {
                            self.mark_or_remove(state, ck, c);
                            changed = true;
                        }
                    }
                    if changed {
                        break;
                    }
                }
                // Background: a dependent whose owners are all gone is deleted.
                if let Some(refs) = meta(obj).get("ownerReferences").and_then(Value::as_array)
                    && !refs.is_empty()
                    && !deleting
                    && refs.iter().all(|r| {
                        r.get("uid")
                            .and_then(Value::as_str)
                            .is_none_or(|u| !uids.contains(u))
                    })
                {
                    self.mark_or_remove(state, key, obj);
                    changed = true;
                    break;
                }
            }
            if !changed {
                break;
            }
        }
    }

    pub(super) fn mark_or_remove(&self, state: &mut State, key: &Key, obj: &Value) {
        let has_finalizers = meta(obj)
            .get("finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            let mut o = obj.clone();
            meta_mut(&mut o).insert("deletionTimestamp".into(), json!(now_rfc3339()));
            self.commit(state, key.clone(), EventType::Modified, o);
        } else {
            self.remove_now(state, key);
        }
    }

    pub(super) fn drop_finalizer(&self, state: &mut State, key: &Key, obj: &Value, finalizer: &str) {
        let mut o = obj.clone();
        if let Some(Value::Array(f)) = meta_mut(&mut o).get_mut("finalizers") {
            f.retain(|x| x.as_str() != Some(finalizer));
        }
        let done = meta(&o)
            .get("finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        self.commit(state, key.clone(), EventType::Modified, o);
        if done {
            self.remove_now(state, key);
        }
    }
}
