//! Shapes the generated CRD schemas so the API server publishes them whole.
//!
//! kube's derive marks every `Option<T>` field `nullable: true`. OpenAPI v2, which the API
//! server publishes at `/openapi/v2` and kubectl reads for `explain` and client-side
//! validation, cannot express `nullable`, so the server strips a nullable field's `type`,
//! `properties`, `items` and `additionalProperties` there. Every optional object (each receiver
//! kind, `secretRef`, `template` ...) was then published as an untyped, empty schema: `kubectl
//! explain` listed nothing inside it and a misspelt field went through, to be pruned silently.
//!
//! Herald never writes `null` (every optional field is skipped when unset), and since 1.20 the
//! API server prunes a `null` written to a non-nullable field without a default, so a user's
//! explicit `null` still means "unset". Dropping `nullable` costs nothing and keeps the types.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};

/// Removes `nullable` from every schema of every version of `crd`.
pub(crate) fn without_nullable(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            drop_nullable(schema);
        }
    }
    crd
}

fn drop_nullable(schema: &mut JSONSchemaProps) {
    schema.nullable = None;
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        drop_nullable(child);
    }
    match &mut schema.items {
        Some(JSONSchemaPropsOrArray::Schema(item)) => drop_nullable(item),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => items.iter_mut().for_each(drop_nullable),
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = &mut schema.additional_properties {
        drop_nullable(values);
    }
    let alternatives = [&mut schema.all_of, &mut schema.any_of, &mut schema.one_of];
    for alternative in alternatives.into_iter().flatten().flatten() {
        drop_nullable(alternative);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// The schema of `spec.receivers[]` in each policy CRD, as JSON.
    fn receiver_schemas() -> Vec<(String, Value)> {
        let schemas: Vec<_> = crate::crds()
            .iter()
            .filter(|crd| crd.spec.names.kind.ends_with("NotificationPolicy"))
            .map(|crd| {
                let json = serde_json::to_value(crd).unwrap();
                let receiver = json.pointer(
                    "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/receivers/items",
                )
                .expect("spec.receivers[] has a schema")
                .clone();
                (crate::crd_file_name(crd), receiver)
            })
            .collect();
        assert_eq!(schemas.len(), 2, "both policy kinds");
        schemas
    }

    /// Each receiver kind is published as a typed object with its fields (a nullable one loses
    /// both in the API server's OpenAPI v2, where kubectl looks).
    #[test]
    fn every_receiver_kind_is_a_typed_object_with_its_fields() {
        for (crd, receiver) in receiver_schemas() {
            for kind in crate::RECEIVER_KINDS {
                let schema = &receiver["properties"][kind];
                assert_eq!(schema["type"], "object", "{crd}: {kind}");
                assert_eq!(schema.get("nullable"), None, "{crd}: {kind} is nullable");
                let fields = schema["properties"].as_object();
                assert!(
                    fields.is_some_and(|f| !f.is_empty()),
                    "{crd}: {kind} lists no fields: {schema}"
                );
            }
            let slack = &receiver["properties"]["slack"]["properties"];
            assert_eq!(slack["channel"]["type"], "string", "{crd}");
            assert_eq!(slack["tokenSecretRef"]["type"], "object", "{crd}");
        }
    }

    /// No schema anywhere in the CRDs is nullable: each would be published untyped.
    #[test]
    fn no_schema_is_nullable() {
        for crd in crate::crds() {
            let yaml = crate::crd_yaml(&crd);
            assert!(
                !yaml.contains("nullable:"),
                "{} has a nullable schema",
                crate::crd_file_name(&crd)
            );
        }
    }
}
