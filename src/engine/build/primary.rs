//! The `-primary` Deployment, built from the target as Flagger builds it at creation and at
//! promotion, and the replica counts of scaling. Pure.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::{configs, include_by_prefix, owner_reference, without_flux};
use crate::api::Canary;

/// The pod template annotation whose fresh value rolls the primary at every promotion.
pub const FLAGGER_ID_ANNOTATION: &str = "flagger-id";

/// The default `--selector-labels`.
pub const DEFAULT_SELECTOR_LABELS: [&str; 3] = ["app", "name", "app.kubernetes.io/name"];

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// The selector label of a target: the first of `selector_labels` in its
/// `spec.selector.matchLabels`, with its value.
pub fn selector_label(target: &Value, selector_labels: &[String]) -> Result<(String, String), String> {
    let match_labels = string_map(target.pointer("/spec/selector/matchLabels"));
    selector_labels
        .iter()
        .find_map(|key| match_labels.get(key).map(|v| (key.clone(), v.clone())))
        .ok_or_else(|| {
            format!(
                "deployment {}.{} spec.selector.matchLabels must contain one of [{}]",
                target
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                target
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                selector_labels.join(" ")
            )
        })
}

/// Rewrites label selectors in affinity and topology spread constraints that select the target
/// (a value equal to its name under a selector label key) to select the primary.
fn rewrite_selectors(pod_spec: &mut Value, target_name: &str, selector_labels: &[String]) {
    let primary = format!("{target_name}-primary");
    let fix = |selector: &mut Value| {
        if let Some(labels) = selector.get_mut("matchLabels").and_then(Value::as_object_mut) {
            for (k, v) in labels.iter_mut() {
                if selector_labels.contains(k) && v.as_str() == Some(target_name) {
                    *v = json!(primary);
                }
            }
        }
        if let Some(exprs) = selector.get_mut("matchExpressions").and_then(Value::as_array_mut) {
            for e in exprs {
                let key = e
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if !selector_labels.contains(&key) {
                    continue;
                }
                if let Some(values) = e.get_mut("values").and_then(Value::as_array_mut) {
                    for v in values {
                        if v.as_str() == Some(target_name) {
                            *v = json!(primary);
                        }
                    }
                }
            }
        }
    };
    if let Some(constraints) = pod_spec
        .get_mut("topologySpreadConstraints")
        .and_then(Value::as_array_mut)
    {
        for c in constraints {
            if let Some(s) = c.get_mut("labelSelector") {
                fix(s);
            }
        }
    }
    if let Some(anti) = pod_spec.pointer_mut("/affinity/podAntiAffinity") {
        if let Some(terms) = anti
            .get_mut("requiredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array_mut)
        {
            for t in terms {
                if let Some(s) = t.get_mut("labelSelector") {
                    fix(s);
                }
            }
        }
        if let Some(terms) = anti
            .get_mut("preferredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array_mut)
        {
            for t in terms {
                if let Some(s) = t.pointer_mut("/podAffinityTerm/labelSelector") {
                    fix(s);
                }
            }
        }
    }
}

/// What building the primary needs.
#[derive(Clone, Copy, Debug)]
pub struct PrimaryInput<'a> {
    pub canary: &'a Canary,
    /// The target Deployment as JSON.
    pub target: &'a Value,
    /// The selector label key and the target's value for it.
    pub label: (&'a str, &'a str),
    pub selector_labels: &'a [String],
    pub include_label_prefixes: &'a [String],
    /// `(kind, name)` of the configs that have `-primary` copies.
    pub tracked: &'a BTreeSet<(String, String)>,
    /// A fresh random id for the template annotation.
    pub flagger_id: &'a str,
    /// The live primary's `spec.replicas`, when it exists.
    pub primary_replicas: Option<i32>,
}

/// The primary Deployment. `promotion` chooses Flagger's promotion rules for metadata (filtered
/// annotations) and replicas (kept for the autoscaler when there is one).
pub fn primary_deployment(input: PrimaryInput, promotion: bool) -> Value {
    let target = input.target;
    let target_name = target
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (key, value) = input.label;
    let primary_value = format!("{value}-primary");
    let mut labels = include_by_prefix(
        Some(&string_map(target.pointer("/metadata/labels"))),
        input.include_label_prefixes,
    );
    labels.insert(key.to_owned(), primary_value.clone());
    let annotations = if promotion {
        include_by_prefix(
            Some(&string_map(target.pointer("/metadata/annotations"))),
            input.include_label_prefixes,
        )
    } else {
        without_flux(Some(&string_map(target.pointer("/metadata/annotations"))))
    };
    let mut template_labels = without_flux(Some(&string_map(
        target.pointer("/spec/template/metadata/labels"),
    )));
    template_labels.insert(key.to_owned(), primary_value.clone());
    let mut template_annotations = without_flux(Some(&string_map(
        target.pointer("/spec/template/metadata/annotations"),
    )));
    template_annotations.insert(FLAGGER_ID_ANNOTATION.to_owned(), input.flagger_id.to_owned());
    let mut pod_spec = configs::rename_to_primary(
        target.pointer("/spec/template/spec").unwrap_or(&Value::Null),
        input.tracked,
    );
    rewrite_selectors(&mut pod_spec, target_name, input.selector_labels);

    let target_replicas = target
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let mut spec = json!({
        "selector": {"matchLabels": {key: primary_value}},
        "template": {"metadata": {"labels": template_labels, "annotations": template_annotations}, "spec": pod_spec},
    });
    for field in [
        "progressDeadlineSeconds",
        "minReadySeconds",
        "revisionHistoryLimit",
        "strategy",
    ] {
        if let Some(v) = target.pointer(&format!("/spec/{field}")) {
            spec[field] = v.clone();
        }
    }
    let has_autoscaler = input.canary.spec.autoscaler_ref.is_some();
    if !promotion {
        spec["replicas"] = json!(if target_replicas > 0 { target_replicas } else { 1 });
    } else if !has_autoscaler && target_replicas > 0 {
        spec["replicas"] = json!(target_replicas);
    } else if let Some(live) = input.primary_replicas {
        // Flagger leaves the count alone here (the autoscaler's). Leaving it out of a server-side
        // apply would instead drop it when serin was its only manager, and the primary would
        // fall to 1 replica during its rolling update: serin applies the live count.
        spec["replicas"] = json!(live);
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": format!("{target_name}-primary"),
            "namespace": input.canary.metadata.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(input.canary)],
        },
        "spec": spec,
    })
}

/// Whether the live primary already runs what a promotion would give it: its pod template equals
/// `built`'s (the primary serin builds from the target), the `flagger-id` annotation aside. A
/// Canary switched from Flagger is in that state: Flagger's stored revision hashes differ from
/// serin's, but nothing is left to roll out.
pub fn runs_target(built: &Value, live: &Value) -> bool {
    let template = |d: &Value| {
        let mut t = d.pointer("/spec/template").cloned().unwrap_or(Value::Null);
        if let Some(annotations) = t
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            annotations.remove(FLAGGER_ID_ANNOTATION);
            if annotations.is_empty() {
                t["metadata"].as_object_mut().map(|m| m.remove("annotations"));
            }
        }
        if let Some(labels) = t.pointer("/metadata/labels").and_then(Value::as_object)
            && labels.is_empty()
        {
            t["metadata"].as_object_mut().map(|m| m.remove("labels"));
        }
        t
    };
    let live = template(live);
    !live.is_null() && template(built) == live
}

/// The replicas a target gets back when a run starts (Flagger's `ScaleFromZero`): its own if set,
/// else the HPA's minimum (at least 1) with an autoscaler, else the primary's (at least 1).
pub fn scale_from_zero(
    target_replicas: Option<i32>,
    primary_replicas: Option<i32>,
    hpa_min_replicas: Option<Option<i32>>,
) -> i32 {
    if let Some(r) = target_replicas.filter(|r| *r > 0) {
        return r;
    }
    match hpa_min_replicas {
        Some(min) => min.filter(|m| *m > 1).unwrap_or(1),
        None => primary_replicas.filter(|r| *r > 0).unwrap_or(1),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::{CanarySpec, canary::TargetRef};

    fn canary() -> Canary {
        let mut c = Canary::new(
            "podinfo",
            CanarySpec {
                target_ref: TargetRef {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: "podinfo".into(),
                },
                ..Default::default()
            },
        );
        c.metadata.namespace = Some("test".into());
        c.metadata.uid = Some("uid-1".into());
        c
    }

    fn target() -> Value {
        json!({
            "metadata": {"name": "podinfo", "namespace": "test",
                "labels": {"app.kubernetes.io/name": "podinfo", "kustomize.toolkit.fluxcd.io/name": "apps", "team": "a"},
                "annotations": {"app.kubernetes.io/instance": "x", "kustomize.toolkit.fluxcd.io/checksum": "y", "note": "z"}},
            "spec": {
                "replicas": 0, "minReadySeconds": 5, "progressDeadlineSeconds": 60, "revisionHistoryLimit": 5,
                "strategy": {"type": "RollingUpdate"},
                "selector": {"matchLabels": {"app": "podinfo"}},
                "template": {
                    "metadata": {"labels": {"app": "podinfo"}, "annotations": {"prometheus.io/scrape": "true", "flagger-id": "old"}},
                    "spec": {
                        "containers": [{"name": "podinfod", "image": "podinfo:6.0.1", "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "podinfo-secret", "key": "v"}}}]}],
                        "topologySpreadConstraints": [{"labelSelector": {"matchLabels": {"app": "podinfo"}}}],
                        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"podAffinityTerm": {"labelSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["podinfo"]}]}}}]}}
                    }
                }
            }
        })
    }

    fn build(promotion: bool, prefixes: &[String]) -> Value {
        let c = canary();
        let t = target();
        let tracked = BTreeSet::from([("secret".to_owned(), "podinfo-secret".to_owned())]);
        let selector_labels: Vec<String> = DEFAULT_SELECTOR_LABELS.iter().map(|s| (*s).to_owned()).collect();
        primary_deployment(
            PrimaryInput {
                canary: &c,
                target: &t,
                label: ("app", "podinfo"),
                selector_labels: &selector_labels,
                include_label_prefixes: prefixes,
                tracked: &tracked,
                flagger_id: "new-id",
                primary_replicas: None,
            },
            promotion,
        )
    }

    #[test]
    fn a_primary_running_the_targets_template_is_recognised_whatever_its_flagger_id() {
        let built = build(true, &[]);
        let mut live = built.clone();
        live["spec"]["template"]["metadata"]["annotations"]["flagger-id"] = json!("written-by-flagger");
        live["spec"]["replicas"] = json!(7);
        assert!(runs_target(&built, &live));
        live["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!("ghcr.io/stefanprodan/podinfo:6.0.0");
        assert!(
            !runs_target(&built, &live),
            "another image is a revision to roll out"
        );
        assert!(!runs_target(&built, &json!({})));
    }

    #[test]
    fn promotion_with_an_autoscaler_keeps_the_primarys_live_count() {
        let mut c = canary();
        c.spec.autoscaler_ref = Some(Default::default());
        let mut t = target();
        t["spec"]["replicas"] = json!(2);
        let tracked = BTreeSet::new();
        let selector_labels: Vec<String> = DEFAULT_SELECTOR_LABELS.iter().map(|s| (*s).to_owned()).collect();
        let input = |primary_replicas| PrimaryInput {
            canary: &c,
            target: &t,
            label: ("app", "podinfo"),
            selector_labels: &selector_labels,
            include_label_prefixes: &[],
            tracked: &tracked,
            flagger_id: "id",
            primary_replicas,
        };
        assert_eq!(
            primary_deployment(input(Some(4)), true)["spec"]["replicas"],
            4,
            "the autoscaler's count"
        );
        assert_eq!(
            primary_deployment(input(Some(4)), false)["spec"]["replicas"],
            2,
            "created with the target's"
        );
        assert!(
            primary_deployment(input(None), true)["spec"]
                .get("replicas")
                .is_none()
        );
    }

    #[test]
    fn selector_label_is_the_first_configured_key_present() {
        let labels: Vec<String> = DEFAULT_SELECTOR_LABELS.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(
            selector_label(&target(), &labels),
            Ok(("app".into(), "podinfo".into()))
        );
        let err = selector_label(&json!({"metadata": {"name": "x", "namespace": "test"}, "spec": {"selector": {"matchLabels": {"tier": "web"}}}}), &labels).expect_err("missing");
        assert_eq!(
            err,
            "deployment x.test spec.selector.matchLabels must contain one of [app name app.kubernetes.io/name]"
        );
    }

    #[test]
    fn primary_at_creation() {
        let p = build(false, &["app.kubernetes.io".into()]);
        assert_eq!(p["metadata"]["name"], "podinfo-primary");
        assert_eq!(
            p["metadata"]["labels"],
            json!({"app": "podinfo-primary", "app.kubernetes.io/name": "podinfo"})
        );
        assert_eq!(
            p["metadata"]["annotations"],
            json!({"app.kubernetes.io/instance": "x", "note": "z"}),
            "creation copies all but Flux's"
        );
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Canary");
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(
            p["spec"]["selector"],
            json!({"matchLabels": {"app": "podinfo-primary"}})
        );
        assert_eq!(p["spec"]["replicas"], 1, "a target at 0 gives a primary of 1");
        assert_eq!(
            (
                p["spec"]["minReadySeconds"].clone(),
                p["spec"]["progressDeadlineSeconds"].clone()
            ),
            (json!(5), json!(60))
        );
        let template = &p["spec"]["template"];
        assert_eq!(template["metadata"]["labels"]["app"], "podinfo-primary");
        assert_eq!(template["metadata"]["annotations"]["flagger-id"], "new-id");
        assert_eq!(
            template["metadata"]["annotations"]["prometheus.io/scrape"],
            "true"
        );
        assert_eq!(
            template["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"],
            "podinfo-secret-primary"
        );
        assert_eq!(
            template["spec"]["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]["app"],
            "podinfo-primary"
        );
        assert_eq!(
            template.pointer("/spec/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution/0/podAffinityTerm/labelSelector/matchExpressions/0/values/0"),
            Some(&json!("podinfo-primary"))
        );
    }

    #[test]
    fn primary_at_promotion_filters_annotations_by_prefix() {
        let p = build(true, &["app.kubernetes.io".into()]);
        assert_eq!(
            p["metadata"]["annotations"],
            json!({"app.kubernetes.io/instance": "x"})
        );
        assert!(
            p["spec"].get("replicas").is_none(),
            "a target at 0 does not set the primary's replicas"
        );
        let p = build(true, &[String::new()]);
        assert_eq!(
            p["metadata"]["annotations"],
            json!({}),
            "the default prefix list copies nothing"
        );
        assert_eq!(p["metadata"]["labels"], json!({"app": "podinfo-primary"}));
    }

    #[test]
    fn scale_from_zero_counts() {
        assert_eq!(scale_from_zero(Some(3), Some(5), None), 3);
        assert_eq!(scale_from_zero(Some(0), Some(5), None), 5);
        assert_eq!(scale_from_zero(None, None, None), 1);
        assert_eq!(scale_from_zero(Some(0), Some(5), Some(Some(2))), 2);
        assert_eq!(scale_from_zero(Some(0), Some(5), Some(Some(1))), 1);
        assert_eq!(scale_from_zero(Some(0), Some(5), Some(None)), 1);
    }
}
