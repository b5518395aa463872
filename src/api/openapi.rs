//! Publishing the OpenAPI document: `/openapi/v3` (index and group-version document) and
//! `/openapi/v2` (JSON, or the gnostic protobuf kubectl and kube-aggregator ask for). All of it
//! is produced by build.rs from `openapi/`, so what is served is exactly what was built.

use std::borrow::Cow;
use std::sync::LazyLock;

use poem::http::{HeaderMap, StatusCode};
use poem::web::Query;
use poem::{handler, Response};
use serde::Deserialize;

use super::negotiate::parse_accept;
use crate::routes::{group, DOCUMENT_GROUP, VERSION};

include!(concat!(env!("OUT_DIR"), "/openapi_hashes.rs"));

/// The group-version document as built, for the document's group (`tests/` compares it with
/// the hand-authored one and with the generated types).
pub static V3_GROUP_DOC: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/openapi_v3_group.json"));
static V2_JSON: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/openapi_v2.json"));
static V2_PROTOBUF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/openapi_v2.pb"));

/// The media type of the v2 protobuf answer. The Accept kubectl sends has `@` in it, which Go's
/// mime parser rejects in a Content-Type; this is the form kube-apiserver answers with.
pub const V2_PROTOBUF_CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The documents as served, for the served API group.
pub struct Published {
    /// `apis/<group>/<version>`: the v3 index key (no leading slash).
    pub v3_group_path: String,
    /// `/openapi/v3/apis/<group>/<version>`: the group-version document.
    pub v3_group: Cow<'static, [u8]>,
    /// Its SHA-256, the `?hash=` of the index's URL and its ETag.
    pub v3_hash: String,
    /// `/openapi/v3`: the index pointing at the group-version document by hash.
    pub v3_index: Vec<u8>,
    /// The index's ETag.
    pub v3_index_hash: String,
    /// `/openapi/v2` as JSON.
    pub v2_json: Cow<'static, [u8]>,
    /// Its ETag.
    pub v2_json_hash: String,
    /// `/openapi/v2` as the gnostic protobuf.
    pub v2_protobuf: Cow<'static, [u8]>,
    /// Its ETag.
    pub v2_protobuf_hash: String,
}

impl Published {
    /// The build-time documents, rewritten for `group` when it is not the document's.
    pub fn for_group(group: &str) -> Self {
        type Bytes = Cow<'static, [u8]>;
        let (v3_group, v2_json, v2_protobuf): (Bytes, Bytes, Bytes) = if group == DOCUMENT_GROUP {
            (V3_GROUP_DOC.into(), V2_JSON.into(), V2_PROTOBUF.into())
        } else {
            let rewrite = |bytes: &[u8]| -> Vec<u8> {
                let text = std::str::from_utf8(bytes).expect("build.rs writes UTF-8 JSON");
                text.replace(&format!("{DOCUMENT_GROUP}/{VERSION}"), &format!("{group}/{VERSION}"))
                    .replace(&format!("\"group\":\"{DOCUMENT_GROUP}\""), &format!("\"group\":\"{group}\""))
                    .into_bytes()
            };
            let v2_text = rewrite(V2_JSON);
            let v2_value: serde_json::Value =
                serde_json::from_slice(&v2_text).expect("the rewritten v2 document is JSON");
            (rewrite(V3_GROUP_DOC).into(), v2_text.into(), super::gnostic::encode(&v2_value).into())
        };
        let v3_group_path = format!("apis/{group}/{VERSION}");
        let v3_hash = hex_sha256(&v3_group);
        let index = serde_json::json!({
            "paths": { v3_group_path.as_str(): { "serverRelativeURL": format!("/openapi/v3/{v3_group_path}?hash={v3_hash}") } }
        });
        let v3_index = serde_json::to_vec(&index).expect("JSON values serialize");
        Self {
            v3_index_hash: hex_sha256(&v3_index),
            v3_index,
            v3_hash,
            v2_json_hash: hex_sha256(&v2_json),
            v2_protobuf_hash: hex_sha256(&v2_protobuf),
            v3_group_path,
            v3_group,
            v2_json,
            v2_protobuf,
        }
    }
}

/// What this process serves (the group is fixed before the first request).
pub static PUBLISHED: LazyLock<Published> = LazyLock::new(|| Published::for_group(group()));

fn etag_of(hash: &str) -> String {
    format!("\"{hash}\"")
}

/// 304 when the client already has this version, else the body.
fn conditional(
    headers: &HeaderMap,
    etag: &str,
    content_type: &str,
    cache_control: &str,
    body: &'static [u8],
) -> Response {
    let matches = headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let builder = Response::builder().header("ETag", etag).header("Cache-Control", cache_control);
    if matches {
        builder.status(StatusCode::NOT_MODIFIED).finish()
    } else {
        builder.content_type(content_type).body(bytes::Bytes::from_static(body))
    }
}

/// `/openapi/v3`: the index kubectl reads first, revalidated on every use (no-cache).
#[handler]
pub fn serve_v3_index(headers: &HeaderMap) -> Response {
    let p = &*PUBLISHED;
    conditional(headers, &etag_of(&p.v3_index_hash), "application/json", "no-cache, private", &p.v3_index)
}

/// The query of `/openapi/v3/<group-version>`.
#[derive(Deserialize)]
struct HashQuery {
    /// The hash the index named: the document at that hash never changes.
    hash: Option<String>,
}

/// `/openapi/v3/apis/<group>/<version>`: cacheable for good when asked by its current hash.
#[handler]
pub fn serve_v3_group(headers: &HeaderMap, Query(q): Query<HashQuery>) -> Response {
    let p = &*PUBLISHED;
    match q.hash.as_deref() {
        // The content behind a hash never changes: let clients keep it.
        Some(h) if h == p.v3_hash => {
            conditional(headers, &etag_of(&p.v3_hash), "application/json", "public, immutable", &p.v3_group)
        }
        // An old hash: send the client to the current document, as kube-apiserver does.
        Some(_) => Response::builder()
            .status(StatusCode::MOVED_PERMANENTLY)
            .header("Location", format!("/openapi/v3/{}?hash={}", p.v3_group_path, p.v3_hash))
            .header("Cache-Control", "no-cache, private")
            .finish(),
        None => conditional(headers, &etag_of(&p.v3_hash), "application/json", "no-cache, private", &p.v3_group),
    }
}

/// `/openapi/v2`: the gnostic protobuf when the Accept prefers it (kubectl, kube-aggregator),
/// JSON otherwise.
#[handler]
pub fn serve_v2(headers: &HeaderMap) -> Response {
    let wants_protobuf = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .and_then(|accept| {
            parse_accept(accept)
                .into_iter()
                .find(|r| {
                    r.essence.starts_with("application/com.github.proto-openapi.spec.v2")
                        || r.essence == "application/json"
                        || r.essence == "*/*"
                })
                .map(|r| r.essence.starts_with("application/com.github.proto-openapi.spec.v2"))
        })
        .unwrap_or(false);
    let p = &*PUBLISHED;
    if wants_protobuf {
        conditional(
            headers,
            &etag_of(&p.v2_protobuf_hash),
            V2_PROTOBUF_CONTENT_TYPE,
            "no-cache, private",
            &p.v2_protobuf,
        )
    } else {
        conditional(headers, &etag_of(&p.v2_json_hash), "application/json", "no-cache, private", &p.v2_json)
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    openssl::sha::sha256(bytes).iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_group_serves_the_build_time_documents() {
        let p = Published::for_group(DOCUMENT_GROUP);
        assert_eq!((&*p.v3_group, &*p.v2_json, &*p.v2_protobuf), (V3_GROUP_DOC, V2_JSON, V2_PROTOBUF));
        assert_eq!(p.v3_hash, OPENAPI_V3_HASH);
        assert_eq!((p.v2_json_hash.as_str(), p.v2_protobuf_hash.as_str()), (OPENAPI_V2_HASH, OPENAPI_V2_PB_HASH));
    }

    #[test]
    fn another_group_is_rewritten_everywhere_it_names_the_api() {
        let p = Published::for_group("klio-east.example.com");
        let v3: serde_json::Value = serde_json::from_slice(&p.v3_group).unwrap();
        assert!(v3["paths"].get("/apis/klio-east.example.com/v1alpha1/kliobackups").is_some());
        let gvk = &v3["components"]["schemas"]["io.enterprisedb.kliocatalog.v1alpha1.KlioBackup"]
            ["x-kubernetes-group-version-kind"];
        assert_eq!(gvk[0]["group"], "klio-east.example.com");
        let text = String::from_utf8(p.v3_group.to_vec()).unwrap();
        assert!(!text.contains("kliocatalog.enterprisedb.io/v1alpha1"), "no path or apiVersion names the old group");
        assert_ne!(p.v3_hash, OPENAPI_V3_HASH, "clients must not keep the old document");
        assert!(String::from_utf8(p.v3_index.clone()).unwrap().contains("apis/klio-east.example.com/v1alpha1?hash="));
        assert!(p.v2_protobuf.len() > 100 && *p.v2_protobuf != *V2_PROTOBUF);
        let needle = b"klio-east.example.com";
        assert!(p.v2_protobuf.windows(needle.len()).any(|w| w == needle), "the protobuf carries the new group");
    }
}
