//! Generates everything that derives from `openapi/kliocatalog.enterprisedb.io_v1alpha1.json`,
//! the single source of truth of the API:
//!
//! * `model.rs`: the Rust types of the group's schemas (serde + utoipa derives, doc comments
//!   taken from the descriptions);
//! * `routes.rs`: the discovery facts (resources, their verbs from the operations' actions);
//! * `operations.rs`: the document's operations as poem-openapi operations (paths, parameters
//!   with their types, descriptions and defaults, responses), each calling the handler named by
//!   its `x-kubernetes-action` (see `src/build/operations.rs`);
//! * the published documents: `/openapi/v3` (index and group-version document), `/openapi/v2`
//!   as JSON and as the gnostic protobuf that kubectl 1.27 and 1.28 insist on, with their hashes.
//!
//! The build fails when the document breaks a rule the API relies on (a field without a
//! description, a resource schema without `x-kubernetes-group-version-kind`, an unknown type).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};

const SOURCE: &str = "openapi/kliocatalog.enterprisedb.io_v1alpha1.json";
/// Schemas owned by this API (generated as Rust types); everything else is referenced.
const OWN_PREFIX: &str = "io.enterprisedb.kliocatalog.v1alpha1.";
const META_PREFIX: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.";

fn main() -> Result<()> {
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-changed=build.rs");
    // The service's relative relocations packed (DT_RELR, glibc 2.36+, the image's Debian 12):
    // the binary is position-independent, and its 400 KiB table of plain relocations was read at
    // every start and stayed resident.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let out_dir = std::env::var("OUT_DIR")?;
    let out = Path::new(&out_dir);

    let text = std::fs::read_to_string(SOURCE).with_context(|| format!("reading {SOURCE}"))?;
    let doc: Value = serde_json::from_str(&text).with_context(|| format!("parsing {SOURCE}"))?;
    validate(&doc)?;

    std::fs::write(out.join("model.rs"), generate_model(&doc)?)?;
    std::fs::write(out.join("routes.rs"), generate_routes(&doc)?)?;
    std::fs::write(out.join("operations.rs"), operations::generate(&doc)?)?;

    // Published documents: compact JSON, content hashes for URLs and ETags.
    let v3 = serde_json::to_vec(&doc)?;
    let v3_hash = sha256_hex(&v3);
    std::fs::write(out.join("openapi_v3_group.json"), &v3)?;
    let v2_doc = to_swagger2(&doc)?;
    let v2 = serde_json::to_vec(&v2_doc)?;
    std::fs::write(out.join("openapi_v2.json"), &v2)?;
    let v2_pb = gnostic::encode(&v2_doc);
    std::fs::write(out.join("openapi_v2.pb"), &v2_pb)?;

    let mut hashes = String::new();
    writeln!(hashes, "/// SHA-256 of the published v3 group-version document (upper-case hex).")?;
    writeln!(hashes, "pub const OPENAPI_V3_HASH: &str = {:?};", v3_hash)?;
    writeln!(hashes, "/// SHA-256 of the published v2 JSON document.")?;
    writeln!(hashes, "pub const OPENAPI_V2_HASH: &str = {:?};", sha256_hex(&v2))?;
    writeln!(hashes, "/// SHA-256 of the published v2 protobuf document.")?;
    writeln!(hashes, "pub const OPENAPI_V2_PB_HASH: &str = {:?};", sha256_hex(&v2_pb))?;
    std::fs::write(out.join("openapi_hashes.rs"), hashes)?;

    compile_kopia_protocol()?;
    Ok(())
}

/// The Kopia repository protocol's messages and gRPC client and server stubs, from our .proto,
/// compiled in-process (protox) so the build needs no protoc binary.
fn compile_kopia_protocol() -> Result<()> {
    const PROTO: &str = "src/upstream/kopia/repository.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors =
        protox::compile([PROTO], ["src/upstream/kopia"]).map_err(|e| anyhow!("compiling {PROTO}: {e}"))?;
    tonic_prost_build::configure()
        // Bytes fields as `bytes::Bytes`: contents and listings are sliced from the received
        // buffer, not copied.
        .bytes(".")
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds(descriptors)
        .with_context(|| format!("generating Rust from {PROTO}"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    openssl::sha::sha256(bytes).iter().map(|b| format!("{b:02X}")).collect()
}

fn schemas(doc: &Value) -> Result<&Map<String, Value>> {
    doc.pointer("/components/schemas")
        .and_then(Value::as_object)
        .ok_or_else(|| anyhow!("{SOURCE}: components.schemas is missing"))
}

/// The rules `kubectl explain` and the generators rely on.
fn validate(doc: &Value) -> Result<()> {
    for (name, schema) in schemas(doc)? {
        if schema.get("description").and_then(Value::as_str).unwrap_or("").is_empty() {
            bail!("{SOURCE}: schema {name} has no description");
        }
        for (field, prop) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
            if prop.get("description").and_then(Value::as_str).unwrap_or("").is_empty() {
                bail!("{SOURCE}: {name}.{field} has no description (kubectl explain prints it)");
            }
        }
    }
    let x_discovery = doc.get("x-klio-discovery").ok_or_else(|| anyhow!("{SOURCE}: x-klio-discovery missing"))?;
    for res in x_discovery["resources"].as_array().into_iter().flatten() {
        let kind = res["kind"].as_str().unwrap_or_default();
        let found = schemas(doc)?.values().any(|s| {
            s["x-kubernetes-group-version-kind"]
                .as_array()
                .is_some_and(|gvks| gvks.iter().any(|g| g["kind"] == kind && g["group"] == x_discovery["group"]))
        });
        if !found {
            bail!("{SOURCE}: no schema carries x-kubernetes-group-version-kind for {kind}");
        }
    }
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        let get = &item["get"];
        if get["x-kubernetes-group-version-kind"].is_null() || get["x-kubernetes-action"].is_null() {
            bail!("{SOURCE}: GET {path} needs x-kubernetes-action and x-kubernetes-group-version-kind (kubectl explain maps resources through paths)");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Rust types

/// `startLSN` -> `start_lsn`, `backupID` -> `backup_id`, `apiVersion` -> `api_version`.
fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev_lower = i > 0 && (chars[i - 1].is_ascii_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            let prev_upper = i > 0 && chars[i - 1].is_ascii_uppercase();
            if i > 0 && (prev_lower || (prev_upper && next_lower)) {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    match out.as_str() {
        "continue" | "type" | "ref" => format!("r#{out}"),
        _ => out,
    }
}

fn ref_target(prop: &Value) -> Option<&str> {
    let r = prop.get("$ref").or_else(|| prop.pointer("/allOf/0/$ref"))?;
    r.as_str()?.strip_prefix("#/components/schemas/")
}

/// The Rust type of a property, and the utoipa `value_type` to use when the Rust type is foreign.
fn rust_type(owner: &str, field: &str, prop: &Value) -> Result<(String, Option<String>)> {
    if let Some(target) = ref_target(prop) {
        if let Some(own) = target.strip_prefix(OWN_PREFIX) {
            return Ok((own.to_string(), None));
        }
        if let Some(meta) = target.strip_prefix(META_PREFIX) {
            return Ok((
                format!("k8s_openapi::apimachinery::pkg::apis::meta::v1::{meta}"),
                Some(format!("schema_refs::{meta}")),
            ));
        }
        bail!("{owner}.{field}: unsupported $ref {target}");
    }
    let ty = prop["type"].as_str().unwrap_or_default();
    Ok(match ty {
        "string" => ("String".into(), None),
        "integer" => {
            let unsigned = prop["minimum"].as_i64() == Some(0);
            let rust = match (prop["format"].as_str(), unsigned) {
                (Some("int32"), false) => "i32",
                (Some("int32"), true) => "u32",
                (_, false) => "i64",
                (_, true) => "u64",
            };
            (rust.into(), None)
        }
        "boolean" => ("bool".into(), None),
        "object" if prop["additionalProperties"]["type"] == "string" => {
            ("std::collections::BTreeMap<String, String>".into(), None)
        }
        "array" => {
            let (inner, value_type) = rust_type(owner, field, &prop["items"])?;
            (format!("Vec<{inner}>"), value_type.map(|v| format!("Vec<{v}>")))
        }
        other => bail!("{owner}.{field}: unsupported type {other:?}"),
    })
}

fn doc_comment(out: &mut String, indent: &str, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "{indent}/// {line}");
    }
}

fn generate_model(doc: &Value) -> Result<String> {
    let mut out = String::from(
        "// @generated by build.rs from openapi/kliocatalog.enterprisedb.io_v1alpha1.json. Do not edit.\n\n",
    );
    for (name, schema) in schemas(doc)? {
        let Some(short) = name.strip_prefix(OWN_PREFIX) else { continue };
        let required: Vec<&str> =
            schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        doc_comment(&mut out, "", schema["description"].as_str().unwrap_or_default());
        out.push_str(
            "#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]\n",
        );
        let _ = writeln!(out, "#[schema(as = {})]", name.replace('.', "::"));
        let _ = writeln!(out, "pub struct {short} {{");
        for (field, prop) in schema["properties"].as_object().into_iter().flatten() {
            let (ty, value_type) = rust_type(short, field, prop)?;
            doc_comment(&mut out, "    ", prop["description"].as_str().unwrap_or_default());
            let _ = writeln!(out, "    #[serde(rename = {field:?})]");
            // A field with a `default` (kube's `metadata: {}`) is optional on the wire but always
            // present in Rust.
            let defaulted = !required.contains(&field.as_str()) && prop.get("default").is_some();
            let is_required = required.contains(&field.as_str()) || defaulted;
            let mut attrs = vec![];
            if let Some(v) = value_type {
                attrs.push(format!("value_type = {}", if is_required { v } else { format!("Option<{v}>") }));
            }
            if defaulted {
                out.push_str("    #[serde(default)]\n");
            }
            if !is_required {
                attrs.push("nullable = false".into());
                out.push_str("    #[serde(default, skip_serializing_if = \"Option::is_none\")]\n");
            }
            if !attrs.is_empty() {
                let _ = writeln!(out, "    #[schema({})]", attrs.join(", "));
            }
            let ty = if is_required { ty } else { format!("Option<{ty}>") };
            let _ = writeln!(out, "    pub {}: {ty},", snake_case(field));
        }
        out.push_str("}\n\n");
    }
    // Stand-ins that let utoipa reference the apimachinery schemas by their published names.
    out.push_str("/// utoipa stand-ins for the apimachinery schemas the document references.\npub mod schema_refs {\n");
    for (full, schema) in schemas(doc)? {
        let Some(name) = full.strip_prefix(META_PREFIX) else { continue };
        let description = schema["description"].as_str().unwrap_or_default();
        doc_comment(&mut out, "    ", &format!("Stands for `{full}`, referenced by name: {description}"));
        let _ = writeln!(
            out,
            "    pub struct {name};\n    impl utoipa::PartialSchema for {name} {{\n        fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {{\n            utoipa::openapi::RefOr::Ref(utoipa::openapi::Ref::from_schema_name({full:?}))\n        }}\n    }}\n    impl utoipa::ToSchema for {name} {{\n        fn name() -> std::borrow::Cow<'static, str> {{\n            {full:?}.into()\n        }}\n    }}"
        );
    }
    out.push_str("}\n");
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Routes and discovery facts

fn generate_routes(doc: &Value) -> Result<String> {
    let disc = &doc["x-klio-discovery"];
    let group = disc["group"].as_str().ok_or_else(|| anyhow!("x-klio-discovery.group"))?;
    let version = disc["version"].as_str().ok_or_else(|| anyhow!("x-klio-discovery.version"))?;
    let mut out = String::from(
        "// @generated by build.rs from openapi/kliocatalog.enterprisedb.io_v1alpha1.json. Do not edit.\n\n",
    );
    let _ = writeln!(out, "/// The API group of the document (the served one is [`group`], configurable).\npub const DOCUMENT_GROUP: &str = {group:?};");
    let _ = writeln!(out, "/// The one version of the group.\npub const VERSION: &str = {version:?};");

    // Resources, with the verbs taken from the actions of the paths that serve them.
    out.push_str("\n/// The resources of the group, as discovery publishes them.\npub const RESOURCES: &[crate::api::discovery::Resource] = &[\n");
    for res in disc["resources"].as_array().into_iter().flatten() {
        let plural = res["name"].as_str().unwrap_or_default();
        let collection = format!("/apis/{group}/{version}/{plural}");
        let mut verbs = vec![];
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            if path == &collection || path.starts_with(&format!("{collection}/")) {
                if let Some(action) = item["get"]["x-kubernetes-action"].as_str() {
                    if action == "list" && item["get"]["parameters"].to_string().contains("watch") {
                        verbs.push("watch".to_string());
                    }
                    verbs.push(action.to_string());
                }
            }
        }
        verbs.sort();
        verbs.dedup();
        let strs = |v: &Value| -> String {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "    crate::api::discovery::Resource {{ name: {plural:?}, singular_name: {:?}, kind: {:?}, list_kind: {:?}, namespaced: {}, short_names: &[{}], categories: &[{}], verbs: &[{}] }},",
            res["singularName"].as_str().unwrap_or_default(),
            res["kind"].as_str().unwrap_or_default(),
            res["listKind"].as_str().unwrap_or_default(),
            res["namespaced"].as_bool().unwrap_or(false),
            strs(&res["shortNames"]),
            strs(&res["categories"]),
            verbs.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", "),
        );
    }
    out.push_str("];\n\n");

    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Swagger 2.0 (what `/openapi/v2` serves and kube-aggregator merges)

fn v2_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                match k.as_str() {
                    // `allOf: [$ref]` with a description is the v3 way to describe a reference;
                    // v2 puts the description beside the `$ref`.
                    "allOf" if v.as_array().is_some_and(|a| a.len() == 1 && a[0].get("$ref").is_some()) => {
                        out.insert("$ref".into(), v2_schema(&v[0]["$ref"]));
                    }
                    "$ref" => {
                        out.insert(k.clone(), v2_schema(v));
                    }
                    _ => {
                        out.insert(k.clone(), v2_schema(v));
                    }
                }
            }
            Value::Object(out)
        }
        Value::String(s) if s.starts_with("#/components/schemas/") => {
            Value::String(s.replace("#/components/schemas/", "#/definitions/"))
        }
        Value::Array(items) => Value::Array(items.iter().map(v2_schema).collect()),
        other => other.clone(),
    }
}

fn to_swagger2(doc: &Value) -> Result<Value> {
    let components = &doc["components"];
    let resolve = |v: &Value, section: &str| -> Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.rsplit('/').next().unwrap_or_default();
                components[section][name].clone()
            }
            None => v.clone(),
        }
    };
    let mut paths = Map::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        let mut v2_item = Map::new();
        let mut params: Vec<Value> = vec![];
        for p in item["parameters"].as_array().into_iter().flatten() {
            let p = resolve(p, "parameters");
            params.push(v2_parameter(&p));
        }
        if !params.is_empty() {
            v2_item.insert("parameters".into(), Value::Array(params));
        }
        let op = &item["get"];
        let mut v2_op = Map::new();
        for key in ["operationId", "description", "tags", "x-kubernetes-action", "x-kubernetes-group-version-kind"] {
            if !op[key].is_null() {
                v2_op.insert(key.into(), op[key].clone());
            }
        }
        v2_op.insert(
            "produces".into(),
            json!(["application/json", "application/yaml", "application/json;as=Table;v=v1;g=meta.k8s.io"]),
        );
        v2_op.insert("schemes".into(), json!(["https"]));
        let params: Vec<Value> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| v2_parameter(&resolve(p, "parameters")))
            .collect();
        v2_op.insert("parameters".into(), Value::Array(params));
        let mut responses = Map::new();
        for (code, resp) in op["responses"].as_object().into_iter().flatten() {
            let resp = resolve(resp, "responses");
            let mut r = Map::new();
            r.insert("description".into(), resp["description"].clone());
            if let Some(schema) = resp.pointer("/content/application~1json/schema") {
                r.insert("schema".into(), v2_schema(schema));
            }
            responses.insert(code.clone(), Value::Object(r));
        }
        v2_op.insert("responses".into(), Value::Object(responses));
        v2_item.insert("get".into(), Value::Object(v2_op));
        paths.insert(path.clone(), Value::Object(v2_item));
    }
    let definitions: Map<String, Value> =
        schemas(doc)?.iter().map(|(name, schema)| (name.clone(), v2_schema(schema))).collect();
    Ok(json!({
        "swagger": "2.0",
        "info": {"title": doc["info"]["title"], "version": doc["info"]["version"]},
        "paths": paths,
        "definitions": definitions,
    }))
}

fn v2_parameter(p: &Value) -> Value {
    let mut out = Map::new();
    for key in ["name", "in", "description", "required"] {
        if !p[key].is_null() {
            out.insert(key.into(), p[key].clone());
        }
    }
    for (k, v) in p["schema"].as_object().into_iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    Value::Object(out)
}

#[path = "src/build/operations.rs"]
mod operations;

// The gnostic protobuf encoder is shared with the service (which re-encodes when the API group
// is configured at run time).
#[path = "src/api/gnostic.rs"]
mod gnostic;
