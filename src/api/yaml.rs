//! `application/yaml` bodies. kube-apiserver encodes YAML by writing JSON and converting it
//! (sigs.k8s.io/yaml's `JSONToYAML`): keys come out sorted, block style, sequences not indented
//! under their key, strings that another YAML reader would take for a number, boolean, null or
//! timestamp quoted. The same is done here, from the JSON bytes every representation already
//! renders, so YAML can never say something the JSON does not.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::status::ApiError;

/// A JSON value with its object keys in sorted order whatever serde_json's `preserve_order`
/// feature says (another crate may turn it on), as Go's map-based conversion sorts them.
enum Sorted<'a> {
    Scalar(&'a Value),
    List(Vec<Sorted<'a>>),
    Map(BTreeMap<&'a str, Sorted<'a>>),
}

impl<'a> Sorted<'a> {
    fn of(value: &'a Value) -> Self {
        match value {
            Value::Array(items) => Sorted::List(items.iter().map(Sorted::of).collect()),
            Value::Object(map) => Sorted::Map(map.iter().map(|(k, v)| (k.as_str(), Sorted::of(v))).collect()),
            scalar => Sorted::Scalar(scalar),
        }
    }
}

impl Serialize for Sorted<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Sorted::Scalar(v) => v.serialize(serializer),
            Sorted::List(items) => items.serialize(serializer),
            Sorted::Map(map) => map.serialize(serializer),
        }
    }
}

fn options() -> serde_saphyr::SerializerOptions {
    let mut options = serde_saphyr::SerializerOptions::default();
    // Go's YAML writes long strings as (quoted) scalars, never as `>` or `|` blocks.
    options.prefer_block_scalars = false;
    options
}

/// The YAML document for a JSON value.
pub fn from_value(value: &Value) -> Result<Vec<u8>, ApiError> {
    serde_saphyr::to_string_with_options(&Sorted::of(value), options())
        .map(String::into_bytes)
        .map_err(|e| ApiError::internal(format!("encoding YAML: {e}")))
}

/// The YAML document for a rendered JSON body.
pub fn from_json(json: &[u8]) -> Result<Vec<u8>, ApiError> {
    let value: Value = serde_json::from_slice(json).map_err(|e| ApiError::internal(format!("encoding YAML: {e}")))?;
    from_value(&value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn yaml(value: Value) -> String {
        String::from_utf8(from_value(&value).unwrap()).unwrap()
    }

    #[test]
    fn keys_sorted_sequences_unindented_like_go() {
        let text = yaml(json!({
            "kind": "KlioBackupList",
            "apiVersion": "kliocatalog.enterprisedb.io/v1alpha1",
            "metadata": { "resourceVersion": "17" },
            "items": [{ "metadata": { "name": "a" }, "spec": { "clusterName": "a" } }],
        }));
        assert_eq!(
            text,
            "apiVersion: kliocatalog.enterprisedb.io/v1alpha1\nitems:\n- metadata:\n    name: a\n  spec:\n    clusterName: a\nkind: KlioBackupList\nmetadata:\n  resourceVersion: \"17\"\n"
        );
    }

    #[test]
    fn strings_other_readers_would_retype_stay_strings() {
        let value = json!({
            "rv": "1795578950490.1795578950488",
            "wal": "000000010000000000000007",
            "label": "true",
            "null": "null",
            "at": "2025-11-13T09:31:37Z",
            "yes": "yes",
            "lsn": 117440800,
            "empty": {},
            "none": [],
            "colon": "a: b",
            "long": "x ".repeat(100),
        });
        let text = yaml(value.clone());
        // Read back by a YAML reader, it is the same value: nothing was retyped or lost.
        let back: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(back, value, "{text}");
        assert!(text.contains("lsn: 117440800\n"), "numbers stay numbers: {text}");
        for quoted in ["rv: \"1795578950490.1795578950488\"", "label: \"true\"", "at: \"2025-11-13T09:31:37Z\""] {
            assert!(text.contains(quoted) || text.contains(&quoted.replace('"', "'")), "{quoted} in {text}");
        }
    }
}
