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
            record: record.clone(),
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
    let server = klio_api::catalog::ServerName::single("klio");
    let backup =
        klio_api::catalog::Backup::new([on_tier(1), on_tier(10)], server, std::sync::Arc::new("1".into())).unwrap();
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

// ---------------------------------------------------------------------------------------------
// The operations: what poem-openapi derives from the operations build.rs generated must be the
// document's paths, parameters and responses.

/// The spec poem-openapi derives from the generated operations.
fn derived_spec() -> Value {
    let spec = klio_api::api::operations::service(klio_api::api::operations::Served).spec();
    serde_json::from_str(&spec).expect("poem-openapi's spec is JSON")
}

/// Follows a `$ref` into `doc`'s components.
fn deref<'a>(doc: &'a Value, item: &'a Value) -> &'a Value {
    match item.get("$ref").and_then(Value::as_str) {
        Some(r) => doc.pointer(&r.replacen('#', "", 1)).unwrap_or_else(|| panic!("$ref {r} names nothing")),
        None => item,
    }
}

/// A parameter schema's facts: its type and bounds. An integer's 64-bit format is what an
/// integer without a format means (kube's int64); any other format counts.
fn canonical_param_schema(doc: &Value, schema: &Value) -> Value {
    let schema = deref(doc, schema);
    let mut out = serde_json::Map::new();
    for key in ["type", "enum", "minimum", "maximum", "default", "pattern", "minLength", "maxLength", "format"] {
        if let Some(v) = schema.get(key) {
            let v = match key {
                "minimum" | "maximum" => json!(v.as_f64()),
                _ => v.clone(),
            };
            out.insert(key.into(), v);
        }
    }
    if matches!(out.get("format").and_then(Value::as_str), Some("int64" | "uint64")) {
        out.remove("format");
    }
    Value::Object(out)
}

/// Every operation of `doc`, in one canonical shape: per path and method, the operation id, the
/// parameters (path-level ones included) by name with where they go, their schema, whether they
/// are required and their description, and the responses by code with their description, media
/// types and schemas.
fn canonical_operations(doc: &Value) -> Value {
    let mut paths = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let mut params = BTreeMap::new();
            let shared = item["parameters"].as_array().into_iter().flatten();
            for p in shared.chain(op["parameters"].as_array().into_iter().flatten()) {
                let p = deref(doc, p);
                let required = p["required"].as_bool().unwrap_or(false);
                params.insert(
                    p["name"].as_str().unwrap().to_string(),
                    json!({
                        "in": p["in"],
                        "required": required,
                        "schema": canonical_param_schema(doc, &p["schema"]),
                        "description": p["description"].as_str().map(str::trim),
                    }),
                );
            }
            let mut responses = BTreeMap::new();
            for (code, r) in op["responses"].as_object().into_iter().flatten() {
                let r = deref(doc, r);
                let content: BTreeMap<&String, &Value> = r["content"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(media, m)| (media, &m["schema"]["$ref"]))
                    .collect();
                responses.insert(code.clone(), json!({"description": r["description"], "content": content}));
            }
            paths.insert(
                format!("{} {path}", method.to_uppercase()),
                json!({
                    "operationId": op["operationId"],
                    // poem-openapi publishes a one-line doc comment as the summary.
                    "description": op.get("description").or_else(|| op.get("summary")),
                    "parameters": params,
                    "responses": responses,
                }),
            );
        }
    }
    json!(paths)
}

#[test]
fn the_generated_operations_derive_the_documented_paths_parameters_and_responses() {
    let doc = source_document();
    let derived = derived_spec();
    let (documented, served) = (canonical_operations(&doc), canonical_operations(&derived));
    assert_eq!(
        documented.as_object().unwrap().keys().collect::<Vec<_>>(),
        served.as_object().unwrap().keys().collect::<Vec<_>>(),
        "the same paths and methods"
    );
    for (operation, expected) in documented.as_object().unwrap() {
        let got = &served[operation];
        for part in ["operationId", "description", "parameters", "responses"] {
            let (e, g) = (&expected[part], &got[part]);
            if part == "parameters" || part == "responses" {
                let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
                assert_eq!(keys(e), keys(g), "{operation}: the same {part}");
                for key in keys(e) {
                    assert_eq!(e[&key], g[&key], "{operation}: {part} {key}: the document and poem-openapi disagree");
                }
            }
            assert_eq!(e, g, "{operation}: {part}");
        }
    }
    // The comparison covers what matters: twelve list parameters, the get's name in the path.
    let list = &served["GET /apis/kliocatalog.enterprisedb.io/v1alpha1/kliobackups"];
    assert_eq!(list["parameters"].as_object().unwrap().len(), 12);
    assert_eq!(list["parameters"]["watch"]["schema"], json!({"type": "boolean"}));
    assert_eq!(list["parameters"]["limit"]["schema"], json!({"type": "integer", "minimum": 0.0}));
    let get = &served["GET /apis/kliocatalog.enterprisedb.io/v1alpha1/kliobackups/{name}"];
    assert_eq!(get["parameters"]["name"]["in"], "path");
    assert_eq!(get["parameters"]["name"]["required"], true);
    assert_eq!(get["parameters"]["includeObject"]["schema"]["enum"], json!(["None", "Metadata", "Object"]));
    assert!(get["responses"]["404"].is_object());
}

#[test]
fn the_operations_comparison_sees_drift() {
    let doc = source_document();
    const LIST: &str = "/apis/kliocatalog.enterprisedb.io/v1alpha1/kliobackups";
    type Mutation = (&'static str, fn(&mut Value));
    let mutations: [Mutation; 7] = [
        ("a parameter's type", |d| d["components"]["parameters"]["limit"]["schema"]["type"] = json!("string")),
        ("a parameter's bound", |d| d["components"]["parameters"]["limit"]["schema"]["maximum"] = json!(500)),
        ("a parameter's format", |d| d["components"]["parameters"]["limit"]["schema"]["format"] = json!("int32")),
        ("a required parameter", |d| d["components"]["parameters"]["watch"]["required"] = json!(true)),
        ("a parameter fewer", |d| {
            d["paths"][LIST]["get"]["parameters"].as_array_mut().unwrap().pop();
        }),
        ("a response code more", |d| {
            d["paths"][LIST]["get"]["responses"]["409"] = json!({"$ref": "#/components/responses/Gone"})
        }),
        ("a path renamed", |d| {
            let item = d["paths"].as_object_mut().unwrap().remove(LIST).unwrap();
            d["paths"]["/apis/kliocatalog.enterprisedb.io/v1alpha1/kliobackup"] = item;
        }),
    ];
    for (what, mutate) in mutations {
        let mut changed = doc.clone();
        mutate(&mut changed);
        assert_ne!(canonical_operations(&doc), canonical_operations(&changed), "{what} went unnoticed");
    }
}
