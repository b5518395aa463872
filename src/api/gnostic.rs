//! The gnostic protobuf form of a Swagger 2.0 document (`openapi.v2.Document`), which kubectl
//! 1.27 and 1.28 fetch before `explain` and every kubectl parses for `create` validation. Only
//! what a schema reader needs is encoded: swagger, info and definitions. Field numbers are those
//! of gnostic's OpenAPIv2.proto. Used by build.rs and at run time.
use std::collections::BTreeMap;

use prost::Message;
use serde_json::Value;

/// `openapi.v2.Document`: the root.
#[derive(Clone, PartialEq, Message)]
struct Document {
    #[prost(string, tag = "1")]
    swagger: String,
    #[prost(message, optional, tag = "2")]
    info: Option<Info>,
    #[prost(message, optional, tag = "9")]
    definitions: Option<Definitions>,
}

/// `openapi.v2.Info`: the document's title and version.
#[derive(Clone, PartialEq, Message)]
struct Info {
    #[prost(string, tag = "1")]
    title: String,
    #[prost(string, tag = "2")]
    version: String,
}

/// `openapi.v2.Definitions`: the named schemas.
#[derive(Clone, PartialEq, Message)]
struct Definitions {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedSchema>,
}

/// `openapi.v2.NamedSchema`: gnostic's form of one entry of a JSON map of schemas.
#[derive(Clone, PartialEq, Message)]
struct NamedSchema {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Schema>,
}

/// `openapi.v2.Schema`, the fields a schema reader uses.
#[derive(Clone, PartialEq, Message)]
struct Schema {
    #[prost(string, tag = "1")]
    r#ref: String,
    #[prost(string, tag = "2")]
    format: String,
    #[prost(string, tag = "4")]
    description: String,
    #[prost(string, repeated, tag = "19")]
    required: Vec<String>,
    #[prost(message, optional, boxed, tag = "21")]
    additional_properties: Option<Box<AdditionalPropertiesItem>>,
    #[prost(message, optional, tag = "22")]
    r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    items: Option<ItemsItem>,
    #[prost(message, optional, tag = "25")]
    properties: Option<Properties>,
    #[prost(message, repeated, tag = "31")]
    vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.AdditionalPropertiesItem`: a map's value schema.
#[derive(Clone, PartialEq, Message)]
struct AdditionalPropertiesItem {
    #[prost(message, optional, tag = "1")]
    schema: Option<Schema>,
}

/// `openapi.v2.TypeItem`: `type`, a list in gnostic.
#[derive(Clone, PartialEq, Message)]
struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    value: Vec<String>,
}

/// `openapi.v2.ItemsItem`: an array's item schema.
#[derive(Clone, PartialEq, Message)]
struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    schema: Vec<Schema>,
}

/// `openapi.v2.Properties`: an object's property schemas.
#[derive(Clone, PartialEq, Message)]
struct Properties {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedSchema>,
}

/// `openapi.v2.NamedAny`: one `x-` vendor extension.
#[derive(Clone, PartialEq, Message)]
struct NamedAny {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Any>,
}

/// `openapi.v2.Any`: a vendor extension's value, as YAML.
#[derive(Clone, PartialEq, Message)]
struct Any {
    #[prost(string, tag = "2")]
    yaml: String,
}

fn schema(v: &Value) -> Schema {
    let str_of = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    Schema {
        r#ref: str_of("$ref"),
        format: str_of("format"),
        description: str_of("description"),
        required: v["required"].as_array().into_iter().flatten().filter_map(Value::as_str).map(String::from).collect(),
        additional_properties: v
            .get("additionalProperties")
            .filter(|a| a.is_object())
            .map(|a| Box::new(AdditionalPropertiesItem { schema: Some(schema(a)) })),
        r#type: v["type"].as_str().map(|t| TypeItem { value: vec![t.to_string()] }),
        items: v.get("items").map(|i| ItemsItem { schema: vec![schema(i)] }),
        properties: v["properties"].as_object().map(|props| Properties {
            additional_properties: props
                .iter()
                .map(|(name, p)| NamedSchema { name: name.clone(), value: Some(schema(p)) })
                .collect(),
        }),
        vendor_extension: v
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with("x-"))
            // The YAML of a vendor extension; JSON is valid YAML.
            .map(|(k, x)| NamedAny { name: k.clone(), value: Some(Any { yaml: x.to_string() }) })
            .collect(),
    }
}

/// The gnostic protobuf of a Swagger 2.0 document, what `/openapi/v2` answers to clients that
/// ask for protobuf (build.rs encodes the default group's; the service re-encodes for `--api-group`).
pub fn encode(v2: &Value) -> Vec<u8> {
    let defs: BTreeMap<&String, &Value> = v2["definitions"].as_object().into_iter().flatten().collect();
    let doc = Document {
        swagger: "2.0".into(),
        info: Some(Info {
            title: v2["info"]["title"].as_str().unwrap_or_default().into(),
            version: v2["info"]["version"].as_str().unwrap_or_default().into(),
        }),
        definitions: Some(Definitions {
            additional_properties: defs
                .into_iter()
                .map(|(name, s)| NamedSchema { name: name.clone(), value: Some(schema(s)) })
                .collect(),
        }),
    };
    doc.encode_to_vec()
}
