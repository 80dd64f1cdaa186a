//! `crds/` is generated from the Rust types; this fails when someone changed the types
//! without regenerating (`herald crd --dir crds`).

use std::path::PathBuf;

#[test]
fn checked_in_crds_match_the_rust_types() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../crds");
    let mut expected_files = Vec::new();
    for crd in herald_api::crds() {
        let name = herald_api::crd_file_name(&crd);
        let path = dir.join(&name);
        let on_disk =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            on_disk == herald_api::crd_yaml(&crd),
            "crds/{name} is out of date: run `cargo run -- crd --dir crds` and commit the result"
        );
        expected_files.push(name);
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    expected_files.sort();
    assert_eq!(
        present, expected_files,
        "crds/ holds exactly the generated CRDs"
    );
}

#[test]
fn the_cel_rule_and_the_rust_code_know_the_same_receiver_kinds() {
    // A receiver with every kind set: `kinds_set` lists them all, in the list's order.
    let mut all = serde_json::json!({"name": "all"});
    for kind in herald_api::RECEIVER_KINDS {
        all[*kind] = serde_json::json!({});
    }
    let all: herald_api::Receiver = serde_json::from_value(all).unwrap();
    let kinds = all.kinds_set();
    assert_eq!(kinds, herald_api::RECEIVER_KINDS);
    let rule = kinds
        .iter()
        .map(|kind| format!("has(self.{kind})"))
        .collect::<Vec<_>>()
        .join(", ");
    let rule = format!("[{rule}].filter(k, k).size() == 1");
    assert!(
        herald_api::crds_yaml().contains(&rule),
        "the CRD's one-kind rule differs from {rule}"
    );
    assert!(matches!(all.address(), herald_api::AddressRef::Invalid));
}

#[test]
fn crd_schema_carries_the_validation_rules() {
    let yaml = herald_api::crds_yaml();
    for rule in [
        "].filter(k, k).size() == 1",
        "has(self.url) != has(self.secretRef)",
        "x-kubernetes-list-map-keys",
    ] {
        assert!(yaml.contains(rule), "missing {rule}");
    }
    let crds = herald_api::crds();
    assert_eq!(crds[0].spec.scope, "Namespaced");
    assert_eq!(crds[1].spec.scope, "Cluster");
    let version = &crds[0].spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<&str> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Receivers", "Ready", "Reason", "Age"]);
}

/// Kubernetes rejects a CRD whose schema lists `null` as an enum value (the 1.20 API server
/// says "per-version schemas may not all be set to identical values"): optional enums must
/// be spelt `nullable: true` with the names only.
#[test]
fn no_enum_lists_null() {
    fn walk(value: &serde_json::Value, path: &str, found: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Array(members)) = map.get("enum") {
                    if members.iter().any(serde_json::Value::is_null) {
                        found.push(path.to_owned());
                    }
                }
                for (key, child) in map {
                    walk(child, &format!("{path}.{key}"), found);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, &format!("{path}[{i}]"), found);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    for crd in herald_api::crds() {
        let name = herald_api::crd_file_name(&crd);
        walk(&serde_json::to_value(&crd).unwrap(), &name, &mut found);
    }
    assert_eq!(found, Vec::<String>::new());
}

/// The RECEIVERS column lists every receiver: kubectl shows only the first value a column's
/// JSONPath selects, so it reads the one string the status keeps, not `spec.receivers[*]`.
#[test]
fn the_receivers_column_lists_every_receiver_kind() {
    let policy_kinds = herald_api::crds()
        .into_iter()
        .filter(|crd| crd.spec.names.kind.ends_with("NotificationPolicy"));
    for crd in policy_kinds {
        let version = &crd.spec.versions[0];
        let column = version
            .additional_printer_columns
            .iter()
            .flatten()
            .find(|c| c.name == "Receivers")
            .unwrap();
        assert_eq!(column.json_path, ".status.receiverKinds");
        let schema = serde_json::to_value(&version.schema).unwrap();
        assert_eq!(
            schema
                .pointer("/openAPIV3Schema/properties/status/properties/receiverKinds/type")
                .unwrap(),
            "string"
        );
    }
    let policy: herald_api::NotificationPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationPolicy",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"receivers": [
            {"name": "chat", "slack": {"url": "https://example.com"}},
            {"name": "teams", "msteams": {"url": "https://example.com"}},
            {"name": "both", "webhook": {"url": "https://example.com"}, "discord": {"url": "https://example.com"}},
            {"name": "none"}
        ]}
    }))
    .unwrap();
    assert_eq!(
        policy.spec.rules().receiver_kinds(),
        "slack,msteams,webhook+discord,?"
    );
}
