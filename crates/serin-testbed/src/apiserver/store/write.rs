//! Creating, updating, patching and server-side applying objects: optimistic concurrency,
//! generation, managedFields, dry runs and the watch events they produce. No I/O.

use super::*;

impl Store {
    /// Creates an object.
    pub fn create(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        check_kind(res, &obj)?;
        let mut state = self.lock();
        let ns = if res.namespaced {
            let body_ns = meta_str(&obj, "namespace").filter(|n| !n.is_empty());
            match (namespace, body_ns) {
                (Some(url), Some(body)) if url != body => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                (Some(url), _) => url.to_owned(),
                (None, Some(body)) => body.to_owned(),
                (None, None) => return Err(ApiError::bad_request("the namespace of the object is required")),
            }
        } else {
            String::new()
        };
        Self::check_namespace(&state, res, &ns)?;
        let name = match meta_str(&obj, "name").filter(|n| !n.is_empty()) {
            Some(n) => n.to_owned(),
            None => match meta_str(&obj, "generateName") {
                Some(prefix) => format!("{prefix}{}", random_suffix()),
                None => {
                    return Err(ApiError::invalid(
                        &res.group,
                        &res.kind,
                        "",
                        &[(
                            "metadata.name".into(),
                            "Required value: name or generateName is required".into(),
                        )],
                    ));
                }
            },
        };
        // RBAC objects are named like path segments (`system:discovery`), as on a real server.
        if res.group == "rbac.authorization.k8s.io" {
            if let Some(why) = crate::apiserver::rbac::path_segment_name_error(&name) {
                return Err(ApiError::invalid(
                    &res.group,
                    &res.kind,
                    &name,
                    &[(
                        "metadata.name".into(),
                        format!("Invalid value: \"{name}\": {why}"),
                    )],
                ));
            }
        } else if !is_dns_subdomain(&name) {
            return Err(ApiError::invalid(
                &res.group,
                &res.kind,
                &name,
                &[(
                    "metadata.name".into(),
                    format!(
                        "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                    ),
                )],
            ));
        }
        let key = Self::key(res, Some(&ns), &name);
        if state.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&res.group, &res.plural, &name));
        }
        obj["apiVersion"] = json!(res.api_version());
        obj["kind"] = json!(res.kind);
        if res.status_subresource && res.custom {
            obj.as_object_mut().map(|m| m.remove("status"));
        }
        let warnings = Self::validate_custom(res, &mut obj, opts.field_validation)?;
        if res.plural == "customresourcedefinitions" && res.group == "apiextensions.k8s.io" {
            crate::apiserver::resources::crd_resources(&obj).map_err(|m| {
                ApiError::invalid(
                    &res.group,
                    &res.kind,
                    &name,
                    &[(m.split(':').next().unwrap_or_default().to_owned(), m.clone())],
                )
            })?;
        }
        Self::apply_defaults(&mut state, res, &mut obj, None);
        {
            let m = meta_mut(&mut obj);
            m.insert("name".into(), json!(name));
            if res.namespaced {
                m.insert("namespace".into(), json!(ns));
            } else {
                m.remove("namespace");
            }
            m.insert("uid".into(), json!(random_uid()));
            m.insert("creationTimestamp".into(), json!(now_rfc3339()));
            m.remove("deletionTimestamp");
            m.remove("resourceVersion");
            m.remove("managedFields");
            if res.tracks_generation {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        record_update(
            None,
            &mut obj,
            &opts.manager,
            Subresource::Main,
            &res.api_version(),
        );
        if opts.dry_run {
            return Ok(Written {
                object: Self::present(res, &obj),
                warnings,
            });
        }
        if res.group == "apiextensions.k8s.io" && res.plural == "customresourcedefinitions" {
            Arc::make_mut(&mut state.registry)
                .register_crd(&obj)
                .map_err(ApiError::bad_request)?;
        }
        let stored = self.commit(&mut state, key, EventType::Added, obj);
        Ok(Written {
            object: Self::present(res, &stored),
            warnings,
        })
    }

    /// Replaces an object (PUT), or its status.
    pub fn update(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        obj: Value,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        check_named_body(res, &obj, name)?;
        let precondition = meta_str(&obj, "resourceVersion")
            .filter(|rv| !rv.is_empty())
            .map(str::to_owned);
        let mut state = self.lock();
        let key = Self::key(res, namespace, name);
        let existing = state
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&res.group, &res.plural, name))?;
        if let Some(rv) = precondition
            && meta_str(&existing, "resourceVersion") != Some(rv.as_str())
        {
            return Err(ApiError::conflict(&res.group, &res.plural, name));
        }
        self.write(&mut state, res, key, existing, obj, sub, opts, None)
    }

    /// The shared tail of update, patch and apply: validation, bookkeeping, commit, finalizers.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn write(
        &self,
        state: &mut State,
        res: &ResourceInfo,
        key: Key,
        existing: Value,
        body: Value,
        sub: Subresource,
        opts: &WriteOptions,
        managers: Option<Vec<Manager>>,
    ) -> Result<Written, ApiError> {
        let mut obj = match sub {
            Subresource::Status => {
                let mut o = existing.clone();
                match body.get("status") {
                    Some(status) => o["status"] = status.clone(),
                    None => {
                        o.as_object_mut().map(|m| m.remove("status"));
                    }
                }
                o
            }
            Subresource::Main => {
                let mut o = body;
                if res.status_subresource {
                    match existing.get("status") {
                        Some(status) => o["status"] = status.clone(),
                        None => {
                            o.as_object_mut().map(|m| m.remove("status"));
                        }
                    }
                }
                o
            }
        };
        obj["apiVersion"] = json!(res.api_version());
        obj["kind"] = json!(res.kind);
        // An update or patch that sets managedFields to something new replaces them, as the API
        // server does (how controllers such as Flux take fields over from other managers).
        let explicit_managers = (managers.is_none() && sub == Subresource::Main)
            .then(|| meta(&obj).get("managedFields").cloned())
            .flatten()
            .filter(|m| m.is_array() && Some(m) != meta(&existing).get("managedFields"));
        {
            // Fields the server owns.
            let old_meta = meta(&existing).clone();
            let m = meta_mut(&mut obj);
            for field in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old_meta.get(field) {
                    Some(v) => {
                        m.insert(field.into(), v.clone());
                    }
                    None => {
                        m.remove(field);
                    }
                }
            }
            if managers.is_none() {
                match old_meta.get("managedFields") {
                    Some(v) => m.insert("managedFields".into(), v.clone()),
                    None => m.remove("managedFields"),
                };
            }
            // A finalizer cannot be added to an object that is being deleted.
            if old_meta.get("deletionTimestamp").is_some() {
                let old_finalizers = old_meta
                    .get("finalizers")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if let Some(Value::Array(new_finalizers)) = m.get("finalizers")
                    && new_finalizers.iter().any(|f| !old_finalizers.contains(f))
                {
                    return Err(ApiError::forbidden(
                        "no new finalizers can be added if the object is being deleted",
                    ));
                }
            }
        }
        let warnings = Self::validate_custom(res, &mut obj, opts.field_validation)?;
        // A workload's selector is immutable (apps/v1), as on the API server.
        if sub == Subresource::Main
            && res.group == "apps"
            && matches!(
                res.kind.as_str(),
                "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet"
            )
        {
            let (old_selector, new_selector) =
                (existing.pointer("/spec/selector"), obj.pointer("/spec/selector"));
            if old_selector.is_some() && old_selector != new_selector {
                let shown = new_selector.map_or_else(|| "null".to_owned(), Value::to_string);
                return Err(ApiError::invalid(
                    &res.group,
                    &res.kind,
                    &key.name,
                    &[(
                        "spec.selector".to_owned(),
                        format!("Invalid value: {shown}: field is immutable"),
                    )],
                ));
            }
        }
        if res.group == "apiextensions.k8s.io" && res.plural == "customresourcedefinitions" {
            crate::apiserver::resources::crd_resources(&obj)
                .map_err(|m| ApiError::invalid(&res.group, &res.kind, &key.name, &[(String::new(), m)]))?;
        }
        Self::apply_defaults(state, res, &mut obj, Some(&existing));
        if res.tracks_generation {
            let old_gen = meta(&existing)
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let changed = generation_content(&existing, res.status_subresource)
                != generation_content(&obj, res.status_subresource);
            meta_mut(&mut obj).insert(
                "generation".into(),
                json!(if changed && sub == Subresource::Main {
                    old_gen + 1
                } else {
                    old_gen
                }),
            );
        }
        match (managers, explicit_managers) {
            (Some(list), _) => write_managers(&mut obj, &list),
            (None, Some(given)) => {
                let mut base = existing.clone();
                meta_mut(&mut base).insert("managedFields".into(), given);
                record_update(Some(&base), &mut obj, &opts.manager, sub, &res.api_version());
            }
            (None, None) => record_update(Some(&existing), &mut obj, &opts.manager, sub, &res.api_version()),
        }
        if same_content(&existing, &obj)
            && meta(&existing).get("managedFields") == meta(&obj).get("managedFields")
        {
            // A no-op write changes nothing, not even the resourceVersion.
            return Ok(Written {
                object: Self::present(res, &existing),
                warnings,
            });
        }
        if opts.dry_run {
            return Ok(Written {
                object: Self::present(res, &obj),
                warnings,
            });
        }
        if res.group == "apiextensions.k8s.io" && res.plural == "customresourcedefinitions" {
            Arc::make_mut(&mut state.registry)
                .register_crd(&obj)
                .map_err(ApiError::bad_request)?;
        }
        let finishing = meta(&obj).get("deletionTimestamp").is_some()
            && meta(&obj)
                .get("finalizers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
        let stored = self.commit(state, key.clone(), EventType::Modified, obj);
        if finishing {
            self.remove_now(state, &key);
            self.collect_garbage(state);
        }
        Ok(Written {
            object: Self::present(res, &stored),
            warnings,
        })
    }

    /// Patches an object (merge, JSON or strategic merge patch).
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        kind: PatchKind,
        patch_body: &Value,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let mut state = self.lock();
        let key = Self::key(res, namespace, name);
        let existing = state
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&res.group, &res.plural, name))?;
        let mut patched = Self::present(res, &existing);
        // A merge patch must be an object (the API server's JSON merge answers "Invalid JSON
        // Patch"; its strategic merge, Go's decoding error).
        if !patch_body.is_object() {
            match kind {
                PatchKind::Merge => return Err(ApiError::bad_request("Invalid JSON Patch".to_owned())),
                PatchKind::Strategic => {
                    return Err(ApiError::bad_request(format!(
                        "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                        go_json_type(patch_body)
                    )));
                }
                PatchKind::Json => {}
            }
        }
        match kind {
            PatchKind::Merge => patch::merge_patch(&mut patched, patch_body),
            PatchKind::Json => patch::json_patch(&mut patched, patch_body).map_err(|e| match e {
                patch::PatchError::Malformed(why) => ApiError::bad_request(why),
                patch::PatchError::TestFailed(_) => ApiError {
                    code: 422,
                    reason: "Invalid",
                    message: e.to_string(),
                    details: None,
                },
                patch::PatchError::Invalid(why) => ApiError {
                    code: 422,
                    reason: "Invalid",
                    message: format!("the server rejected our request due to an error in our request: {why}"),
                    details: None,
                },
            })?,
            PatchKind::Strategic => {
                if !res.strategic_merge {
                    return Err(ApiError::unsupported_media_type(
                        "application/strategic-merge-patch+json",
                    ));
                }
                patch::strategic_merge(&mut patched, patch_body)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
            }
        }
        if let Some(rv) = patch_body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            && meta_str(&existing, "resourceVersion") != Some(rv)
        {
            return Err(ApiError::conflict(&res.group, &res.plural, name));
        }
        self.write(&mut state, res, key, existing, patched, sub, opts, None)
    }

    /// Server-side apply.
    pub fn apply(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        config: Value,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if opts.manager.is_empty() {
            return Err(ApiError::bad_request(
                "PATCH, fieldManager is required for apply requests",
            ));
        }
        check_named_body(res, &config, name)?;
        let key = Self::key(res, namespace, name);
        let existing = self.lock().objects.get(&key).cloned();
        let Some(existing) = existing else {
            if sub == Subresource::Status {
                return Err(ApiError::not_found(&res.group, &res.plural, name));
            }
            // Apply creates; the applier owns every field it set.
            let mut obj = config.clone();
            meta_mut(&mut obj).insert("name".into(), json!(name));
            let written = self.create(
                res,
                namespace,
                obj,
                &WriteOptions {
                    manager: opts.manager.clone(),
                    ..opts.clone()
                },
            )?;
            let mut state = self.lock();
            let Some(stored) = state.objects.get(&key).cloned() else {
                return Ok(written);
            };
            if opts.dry_run {
                return Ok(written);
            }
            let mut obj = stored.clone();
            write_managers(
                &mut obj,
                &[Manager {
                    manager: opts.manager.clone(),
                    operation: "Apply".into(),
                    subresource: None,
                    time: now_rfc3339(),
                    api_version: res.api_version(),
                    fields: fields::field_set(&config, false),
                }],
            );
            let stored = self.commit(&mut state, key, EventType::Modified, obj);
            return Ok(Written {
                object: Self::present(res, &stored),
                warnings: written.warnings,
            });
        };
        let include_status = sub == Subresource::Status;
        let applied = fields::field_set(&config, include_status);
        let subresource = include_status.then(|| "status".to_owned());
        let mut managers = read_managers(&existing);
        let mut conflicts = Vec::new();
        for m in &managers {
            if m.manager == opts.manager && m.operation == "Apply" && m.subresource == subresource {
                continue;
            }
            for path in applied.intersection(&m.fields) {
                if fields::get(&existing, path) != fields::get(&config, path) {
                    conflicts.push((m.manager.clone(), fields::display(path)));
                }
            }
        }
        if !conflicts.is_empty() && !opts.force {
            return Err(ApiError::apply_conflict(
                &res.group,
                &res.plural,
                name,
                &conflicts,
            ));
        }
        let previous: FieldSet = managers
            .iter()
            .find(|m| m.manager == opts.manager && m.operation == "Apply" && m.subresource == subresource)
            .map(|m| m.fields.clone())
            .unwrap_or_default();
        // Others keep a field when their value is the applied one (shared ownership); a forced
        // apply takes the conflicting ones.
        for m in &mut managers {
            if m.manager == opts.manager && m.operation == "Apply" && m.subresource == subresource {
                continue;
            }
            m.fields
                .retain(|p| !applied.contains(p) || fields::get(&existing, p) == fields::get(&config, p));
        }
        let mut obj = Self::present(res, &existing);
        let mut body = config.clone();
        if let Value::Object(map) = &mut body {
            map.remove("apiVersion");
            map.remove("kind");
            if !include_status {
                map.remove("status");
            }
            if let Some(Value::Object(m)) = map.get_mut("metadata") {
                m.retain(|k, _| {
                    matches!(
                        k.as_str(),
                        "labels" | "annotations" | "finalizers" | "ownerReferences"
                    )
                });
            }
        }
        fields::merge_applied(&mut obj, &body, "");
        for path in previous.difference(&applied) {
            let owned_elsewhere = managers.iter().any(|m| {
                !(m.manager == opts.manager && m.operation == "Apply" && m.subresource == subresource)
                    && m.fields.iter().any(|p| p.starts_with(path))
            });
            if !owned_elsewhere {
                fields::remove(&mut obj, path);
            }
        }
        managers.retain(|m| {
            !(m.manager == opts.manager && m.operation == "Apply" && m.subresource == subresource)
        });
        managers.push(Manager {
            manager: opts.manager.clone(),
            operation: "Apply".into(),
            subresource,
            time: now_rfc3339(),
            api_version: res.api_version(),
            fields: applied,
        });
        let mut state = self.lock();
        let current = state
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&res.group, &res.plural, name))?;
        if meta_str(&current, "resourceVersion") != meta_str(&existing, "resourceVersion") {
            return Err(ApiError::conflict(&res.group, &res.plural, name));
        }
        self.write(&mut state, res, key, existing, obj, sub, opts, Some(managers))
    }
}

/// The patch formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Json,
    Strategic,
}
