//! The gnostic protobuf form of a Swagger 2.0 document (`openapi.v2.Document`), which kubectl
//! 1.27 and 1.28 fetch before `explain` and every kubectl parses for `create` validation. Only
//! what a schema reader needs is encoded: swagger, info and definitions. Field numbers are those
//! of gnostic's OpenAPIv2.proto. Used by build.rs and at run time.
use std::collections::BTreeMap;

use prost::Message;
use serde_json::Value;

#[derive(Clone, PartialEq, Message)]
pub struct Document {
    #[prost(string, tag = "1")]
    pub swagger: String,
    #[prost(message, optional, tag = "2")]
    pub info: Option<Info>,
    #[prost(message, optional, tag = "9")]
    pub definitions: Option<Definitions>,
}
#[derive(Clone, PartialEq, Message)]
pub struct Info {
    #[prost(string, tag = "1")]
    pub title: String,
    #[prost(string, tag = "2")]
    pub version: String,
}
#[derive(Clone, PartialEq, Message)]
pub struct Definitions {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}
#[derive(Clone, PartialEq, Message)]
pub struct NamedSchema {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Schema>,
}
#[derive(Clone, PartialEq, Message)]
pub struct Schema {
    #[prost(string, tag = "1")]
    pub r#ref: String,
    #[prost(string, tag = "2")]
    pub format: String,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(string, repeated, tag = "19")]
    pub required: Vec<String>,
    #[prost(message, optional, boxed, tag = "21")]
    pub additional_properties: Option<Box<AdditionalPropertiesItem>>,
    #[prost(message, optional, tag = "22")]
    pub r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    pub items: Option<ItemsItem>,
    #[prost(message, optional, tag = "25")]
    pub properties: Option<Properties>,
    #[prost(message, repeated, tag = "31")]
    pub vendor_extension: Vec<NamedAny>,
}
#[derive(Clone, PartialEq, Message)]
pub struct AdditionalPropertiesItem {
    #[prost(message, optional, tag = "1")]
    pub schema: Option<Schema>,
}
#[derive(Clone, PartialEq, Message)]
pub struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}
#[derive(Clone, PartialEq, Message)]
pub struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    pub schema: Vec<Schema>,
}
#[derive(Clone, PartialEq, Message)]
pub struct Properties {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}
#[derive(Clone, PartialEq, Message)]
pub struct NamedAny {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Any>,
}
#[derive(Clone, PartialEq, Message)]
pub struct Any {
    #[prost(string, tag = "2")]
    pub yaml: String,
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
