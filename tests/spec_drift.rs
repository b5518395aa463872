//! Spec drift: the OpenAPI document in `openapi/`, the Rust types build.rs generates from it,
//! the schema utoipa derives from those types, and the objects the service actually serializes
//! must all say the same thing. Any disagreement fails here.

use std::collections::{BTreeMap, BTreeSet};

use klio_api::model::{KlioBackup, KlioBackupList, KlioBackupSpec, KlioBackupStatus, TablespaceLayout};
use serde_json::{json, Value};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(components(schemas(KlioBackup, KlioBackupList, KlioBackupSpec, KlioBackupStatus, TablespaceLayout)))]
struct Derived;

const OWN: &str = "io.enterprisedb.kliocatalog.v1alpha1.";

fn document() -> Value {
    serde_json::from_slice(klio_api::api::openapi::V3_GROUP_DOC).expect("the published v3 document is JSON")
}

fn source_document() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/openapi/kliocatalog.enterprisedb.io_v1alpha1.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The facts both sides must agree on, in one canonical shape.
fn canonical(schema: &Value) -> Value {
    let reference = schema
        .get("$ref")
        .or_else(|| schema.pointer("/allOf/0/$ref"))
        .or_else(|| schema.pointer("/oneOf/0/$ref"))
        .and_then(Value::as_str)
        .map(|r| r.rsplit('/').next().unwrap().to_string());
    let mut out = serde_json::Map::new();
    if let Some(r) = reference {
        out.insert("ref".into(), json!(r));
    } else {
        let ty = match &schema["type"] {
            Value::Array(types) => types.iter().find(|t| *t != "null").cloned().unwrap_or(Value::Null),
            other => other.clone(),
        };
        out.insert("type".into(), ty);
        if let Some(format) = schema.get("format") {
            out.insert("format".into(), format.clone());
        }
        // 0 and 0.0 are the same bound.
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            out.insert("minimum".into(), json!(min));
        }
        if let Some(items) = schema.get("items") {
            out.insert("items".into(), canonical(items));
        }
        if let Some(extra) = schema.get("additionalProperties") {
            out.insert("additionalProperties".into(), canonical(extra));
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            let props: BTreeMap<_, _> = props.iter().map(|(k, v)| (k.clone(), canonical(v))).collect();
            out.insert("properties".into(), json!(props));
            let required: BTreeSet<&str> =
                schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            out.insert("required".into(), json!(required));
        }
    }
    if let Some(d) = schema.get("description").and_then(Value::as_str) {
        out.insert("description".into(), json!(d.trim()));
    }
    Value::Object(out)
}

#[test]
fn published_document_is_the_source_document() {
    assert_eq!(document(), source_document(), "build.rs must publish openapi/ unchanged");
}

#[test]
fn generated_types_derive_the_documented_schemas() {
    let doc = document();
    let derived = serde_json::to_value(Derived::openapi()).unwrap();
    let derived_schemas = derived["components"]["schemas"].as_object().unwrap();
    let documented: Vec<&String> =
        doc["components"]["schemas"].as_object().unwrap().keys().filter(|k| k.starts_with(OWN)).collect();
    assert_eq!(documented.len(), 5, "the document defines KlioBackup, its list, spec, status and TablespaceLayout");
    for name in documented {
        let derived_schema = derived_schemas.get(name.as_str()).unwrap_or_else(|| {
            panic!("utoipa derived no schema named {name}; it has {:?}", derived_schemas.keys().collect::<Vec<_>>())
        });
        assert_eq!(
            canonical(&doc["components"]["schemas"][name]),
            canonical(derived_schema),
            "schema {name}: the document and the generated Rust type disagree"
        );
    }
}

/// Every key of a serialized object is documented, and every documented required key is there.
fn check_instance(doc: &Value, schema_name: &str, instance: &Value, at: &str) {
    let schema = &doc["components"]["schemas"][schema_name];
    assert!(schema.is_object(), "{at}: no schema {schema_name}");
    let Some(props) = schema["properties"].as_object() else { return };
    let obj = instance.as_object().unwrap_or_else(|| panic!("{at}: expected an object, got {instance}"));
    for req in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        assert!(obj.contains_key(req), "{at}: required field {req} missing from {instance}");
    }
    for (key, value) in obj {
        let prop = props.get(key).unwrap_or_else(|| panic!("{at}.{key}: serialized but not documented"));
        let target = prop.get("$ref").or_else(|| prop.pointer("/allOf/0/$ref")).and_then(Value::as_str);
        if let Some(t) = target {
            check_instance(doc, t.rsplit('/').next().unwrap(), value, &format!("{at}.{key}"));
            continue;
        }
        match prop["type"].as_str().unwrap() {
            "string" => assert!(value.is_string(), "{at}.{key}: not a string: {value}"),
            "integer" => assert!(value.is_u64() || value.is_i64(), "{at}.{key}: not an integer: {value}"),
            "object" => {
                assert!(value.as_object().unwrap().values().all(Value::is_string), "{at}.{key}: not a string map")
            }
            "array" => {
                let item = prop["items"]["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
                for (i, v) in value.as_array().unwrap().iter().enumerate() {
                    check_instance(doc, item, v, &format!("{at}.{key}[{i}]"));
                }
            }
            other => panic!("{at}.{key}: unexpected type {other}"),
        }
    }
}

#[test]
fn served_objects_match_the_document() {
    let doc = document();
    use klio_api::upstream::kopia::ids::ManifestId;
    use klio_api::upstream::kopia::reader::{SnapshotIds, SourceBackup};
    let record: klio_api::upstream::record::BackupRecord =
        serde_json::from_value(klio_api::demo::sample_record("pg-analytics", "backup-1", 1_763_600_400, 754, 42, true))
            .unwrap();
    let on_tier = |n: u8| {
        Some(std::sync::Arc::new(SourceBackup {
            record: std::sync::Arc::new(record.clone()),
            manifest: ManifestId([n; 16]),
            written_nanos: 1_763_601_200_000_000_000,
            root: [n; 16],
            snapshots: SnapshotIds {
                pgdata: Some(ManifestId([n + 1; 16])),
                controldata: Some(ManifestId([n + 2; 16])),
                tablespaces: [("analytics".into(), ManifestId([n + 3; 16]))].into(),
            },
        }))
    };
    let backup = klio_api::catalog::Backup::new(
        "pg-analytics.backup-1".into(),
        [on_tier(1), on_tier(10)],
        "klio".into(),
        "1".into(),
    )
    .unwrap();
    let value = serde_json::to_value(&backup).unwrap();
    assert!(value["status"]["tablespaces"].is_array(), "the sample must exercise every field");
    check_instance(&doc, "io.enterprisedb.kliocatalog.v1alpha1.KlioBackup", &value, "KlioBackup");
    let meta_keys: Vec<&String> = value["metadata"].as_object().unwrap().keys().collect();
    assert_eq!(meta_keys, ["creationTimestamp", "labels", "name", "resourceVersion", "uid"]);
}

#[test]
fn the_comparison_sees_drift() {
    let doc = document();
    let status = &doc["components"]["schemas"]["io.enterprisedb.kliocatalog.v1alpha1.KlioBackupStatus"];
    type Mutation = (&'static str, fn(&mut Value));
    let mutations: [Mutation; 4] = [
        ("a changed description", |s| s["properties"]["endWAL"]["description"] = json!("something else")),
        ("a changed type", |s| s["properties"]["endLSN"]["type"] = json!("string")),
        ("a signed integer", |s| {
            s["properties"]["endLSN"].as_object_mut().unwrap().remove("minimum").map(drop).unwrap()
        }),
        ("a new required field", |s| s["required"] = json!(["endWAL"])),
    ];
    for (what, mutate) in mutations {
        let mut changed = status.clone();
        mutate(&mut changed);
        assert_ne!(canonical(status), canonical(&changed), "{what} went unnoticed");
    }
}
