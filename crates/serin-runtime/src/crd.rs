//! CRDs derived from API types, completed the way upstream projects write theirs, and written as
//! the files of a `crds/` directory. No I/O.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};

/// Completes a derived CRD: `listKind`, and the root schema's `apiVersion`, `kind` and `metadata`
/// properties, without requiring `spec`.
pub fn complete(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    crd.spec
        .names
        .list_kind
        .get_or_insert_with(|| format!("{}List", crd.spec.names.kind));
    let string = |description: &str| JSONSchemaProps {
        type_: Some("string".to_owned()),
        description: Some(description.to_owned()),
        ..Default::default()
    };
    for version in &mut crd.spec.versions {
        let Some(root) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        root.required = None;
        let properties = root.properties.get_or_insert_with(Default::default);
        properties.insert(
            "apiVersion".to_owned(),
            string("APIVersion defines the versioned schema of this representation of an object."),
        );
        properties.insert(
            "kind".to_owned(),
            string("Kind is a string value representing the REST resource this object represents."),
        );
        properties.insert(
            "metadata".to_owned(),
            JSONSchemaProps {
                type_: Some("object".to_owned()),
                ..Default::default()
            },
        );
    }
    crd
}

/// Each CRD as a file name (`<group>_<plural>.yaml`) and its YAML document, which starts with
/// `---` so that the files concatenate into one valid stream; in the order given.
pub fn files(
    crds: impl IntoIterator<Item = CustomResourceDefinition>,
) -> Result<Vec<(String, String)>, serde_yaml::Error> {
    crds.into_iter()
        .map(|crd| {
            let file = format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural);
            serde_yaml::to_string(&crd).map(|yaml| (file, format!("---\n{yaml}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        CustomResourceDefinitionNames, CustomResourceDefinitionSpec, CustomResourceDefinitionVersion,
        CustomResourceValidation,
    };

    use super::*;

    fn derived() -> CustomResourceDefinition {
        CustomResourceDefinition {
            spec: CustomResourceDefinitionSpec {
                group: "example.dev".to_owned(),
                names: CustomResourceDefinitionNames {
                    kind: "Widget".to_owned(),
                    plural: "widgets".to_owned(),
                    ..Default::default()
                },
                versions: vec![CustomResourceDefinitionVersion {
                    name: "v1".to_owned(),
                    schema: Some(CustomResourceValidation {
                        open_api_v3_schema: Some(JSONSchemaProps {
                            required: Some(vec!["spec".to_owned()]),
                            ..Default::default()
                        }),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn completes_list_kind_and_the_root_schema() {
        let crd = complete(derived());
        assert_eq!(crd.spec.names.list_kind.as_deref(), Some("WidgetList"));
        let root = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("schema");
        assert_eq!(root.required, None);
        let properties = root.properties.as_ref().expect("properties");
        let keys: Vec<&str> = properties.keys().map(String::as_str).collect();
        assert_eq!(keys, ["apiVersion", "kind", "metadata"]);
        assert_eq!(properties["metadata"].type_.as_deref(), Some("object"));
    }

    #[test]
    fn files_are_named_by_group_and_plural_and_start_a_document() {
        let files = files([complete(derived())]).expect("yaml");
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, "example.dev_widgets.yaml");
        assert!(
            files[0]
                .1
                .starts_with("---\napiVersion: apiextensions.k8s.io/v1\n"),
            "{}",
            files[0].1
        );
    }
}
