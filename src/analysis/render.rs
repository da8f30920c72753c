//! MetricTemplate rendering: Go `text/template` placeholders as Flagger exposes them
//! (`{{ name }}`, `{{ namespace }}`, `{{ target }}`, `{{ service }}`, `{{ ingress }}`,
//! `{{ route }}`, `{{ interval }}`, `{{ variables.<key> }}`), with Flagger's errors for unknown
//! names and missing variables. Pure.

use std::collections::BTreeMap;

/// The values a template can use.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Model {
    pub name: String,
    pub namespace: String,
    pub target: String,
    pub service: String,
    pub ingress: String,
    pub route: String,
    pub interval: String,
    pub variables: BTreeMap<String, String>,
}

impl Model {
    /// The model of a Canary's metric, for `target` (the Canary's target, or its `-primary` for a
    /// comparison) over `interval`.
    pub fn of(
        canary: &crate::api::Canary,
        metric: &crate::api::canary::CanaryMetric,
        target: &str,
        interval: &str,
    ) -> Self {
        let own_target = &canary.spec.target_ref.name;
        Self {
            name: canary.metadata.name.clone().unwrap_or_default(),
            namespace: canary.metadata.namespace.clone().unwrap_or_default(),
            target: target.to_owned(),
            service: canary.service_names().apex,
            ingress: canary
                .spec
                .ingress_ref
                .as_ref()
                .map_or_else(|| own_target.clone(), |r| r.name.clone()),
            route: canary
                .spec
                .route_ref
                .as_ref()
                .map_or_else(|| own_target.clone(), |r| r.name.clone()),
            interval: interval.to_owned(),
            variables: metric.template_variables.clone().unwrap_or_default(),
        }
    }
}

/// Renders a query template.
pub fn render(template: &str, model: &Model) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| {
            format!(
                "template: unclosed action at {:?}",
                &rest[start..].chars().take(30).collect::<String>()
            )
        })?;
        let action = after[..end]
            .trim()
            .trim_start_matches('-')
            .trim_end_matches('-')
            .trim();
        let value = match action {
            "name" => model.name.clone(),
            "namespace" => model.namespace.clone(),
            "target" => model.target.clone(),
            "service" => model.service.clone(),
            "ingress" => model.ingress.clone(),
            "route" => model.route.clone(),
            "interval" => model.interval.clone(),
            other => match other.strip_prefix("variables.") {
                Some(key) => model.variables.get(key).cloned().ok_or_else(|| {
                    format!("template: map has no entry for key {key:?} (set it in templateVariables)")
                })?,
                None => return Err(format!("template: function {other:?} not defined")),
            },
        };
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Collapses runs of whitespace to one space, as Flagger does before sending a query.
pub fn collapse_whitespace(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut in_space = false;
    for c in query.chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        Model {
            name: "podinfo".into(),
            namespace: "test".into(),
            target: "podinfo".into(),
            service: "podinfo".into(),
            ingress: "podinfo".into(),
            route: "podinfo".into(),
            interval: "1m".into(),
            variables: BTreeMap::from([("reporter".to_owned(), "destination".to_owned())]),
        }
    }

    #[test]
    fn renders_flaggers_placeholders() {
        let q = r#"rate(x{reporter="{{ variables.reporter }}",ns="{{namespace}}",w=~"{{ target }}"}[{{ interval }}])"#;
        assert_eq!(
            render(q, &model()),
            Ok(r#"rate(x{reporter="destination",ns="test",w=~"podinfo"}[1m])"#.to_owned())
        );
    }

    #[test]
    fn reports_unknown_names_and_missing_variables() {
        assert!(
            render("{{ nope }}", &model())
                .expect_err("unknown")
                .contains("function \"nope\" not defined")
        );
        assert!(
            render("{{ variables.missing }}", &model())
                .expect_err("missing")
                .contains("\"missing\"")
        );
        assert!(
            render("x {{ name", &model())
                .expect_err("unclosed")
                .contains("unclosed")
        );
    }

    #[test]
    fn whitespace_collapses() {
        assert_eq!(
            collapse_whitespace("  sum(\n  rate(x[1m])\n)"),
            " sum( rate(x[1m]) )"
        );
    }
}
