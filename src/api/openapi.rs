//! Publishing the OpenAPI document: `/openapi/v3` (index and group-version document) and
//! `/openapi/v2` (JSON, or the gnostic protobuf kubectl and kube-aggregator ask for). All of it
//! is produced by build.rs from `openapi/`, so what is served is exactly what was built.

use std::sync::LazyLock;

use poem::http::{HeaderMap, StatusCode};
use poem::web::Query;
use poem::{handler, Response};
use serde::Deserialize;

use super::negotiate::parse_accept;
use crate::routes::GROUP_VERSION;

include!(concat!(env!("OUT_DIR"), "/openapi_hashes.rs"));

pub static V3_GROUP_DOC: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/openapi_v3_group.json"));
pub static V2_JSON: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/openapi_v2.json"));
pub static V2_PROTOBUF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/openapi_v2.pb"));

/// The media type of the v2 protobuf answer. The Accept kubectl sends has `@` in it, which Go's
/// mime parser rejects in a Content-Type; this is the form kube-apiserver answers with.
pub const V2_PROTOBUF_CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The v3 path of the group-version document (no leading slash in the index key).
pub static V3_GROUP_PATH: LazyLock<String> = LazyLock::new(|| format!("apis/{GROUP_VERSION}"));

static V3_INDEX: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let index = serde_json::json!({
        "paths": {
            V3_GROUP_PATH.as_str(): { "serverRelativeURL": format!("/openapi/v3/{}?hash={OPENAPI_V3_HASH}", *V3_GROUP_PATH) }
        }
    });
    serde_json::to_vec(&index).expect("JSON values serialize")
});

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
        builder.content_type(content_type).body(body)
    }
}

#[handler]
pub fn v3_index(headers: &HeaderMap) -> Response {
    let hash = hex_sha256(&V3_INDEX);
    let body: &'static [u8] = V3_INDEX.as_slice();
    conditional(headers, &etag_of(&hash), "application/json", "no-cache, private", body)
}

#[derive(Deserialize)]
pub struct HashQuery {
    hash: Option<String>,
}

#[handler]
pub fn v3_group(headers: &HeaderMap, Query(q): Query<HashQuery>) -> Response {
    match q.hash.as_deref() {
        // The content behind a hash never changes: let clients keep it.
        Some(h) if h == OPENAPI_V3_HASH => {
            conditional(headers, &etag_of(OPENAPI_V3_HASH), "application/json", "public, immutable", V3_GROUP_DOC)
        }
        // An old hash: send the client to the current document, as kube-apiserver does.
        Some(_) => Response::builder()
            .status(StatusCode::MOVED_PERMANENTLY)
            .header("Location", format!("/openapi/v3/{}?hash={OPENAPI_V3_HASH}", *V3_GROUP_PATH))
            .header("Cache-Control", "no-cache, private")
            .finish(),
        None => conditional(headers, &etag_of(OPENAPI_V3_HASH), "application/json", "no-cache, private", V3_GROUP_DOC),
    }
}

#[handler]
pub fn v2(headers: &HeaderMap) -> Response {
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
    if wants_protobuf {
        conditional(headers, &etag_of(OPENAPI_V2_PB_HASH), V2_PROTOBUF_CONTENT_TYPE, "no-cache, private", V2_PROTOBUF)
    } else {
        conditional(headers, &etag_of(OPENAPI_V2_HASH), "application/json", "no-cache, private", V2_JSON)
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    openssl::sha::sha256(bytes).iter().map(|b| format!("{b:02X}")).collect()
}
