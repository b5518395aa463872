//! The `kliobackups` handlers: list (with selectors, paging, resourceVersion semantics), watch,
//! and get, as JSON or as a server-side-printed Table. Every other method is refused with a
//! MethodNotAllowed Status: the catalog is read-only.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use poem::web::Data;
use poem::{handler, Request, Response};
use serde::{Deserialize, Serialize};

use super::negotiate::{resource_representation, Representation, RESOURCE_MEDIA_TYPES};
use super::selectors::{FieldSelector, LabelSelector, Selectors};
use super::status::ApiError;
use super::table::{self, IncludeObject};
use super::AppState;
use crate::catalog::{Backup, Catalog, ResourceVersion, Snapshot};
use crate::routes::{group_version, RESOURCES};

pub(crate) fn plural() -> &'static str {
    RESOURCES[0].name
}

/// How long a request may wait for this replica to catch up with a resourceVersion a client
/// saw elsewhere (another replica, a newer upstream revision).
const CATCH_UP: Duration = Duration::from_secs(3);

/// `resourceVersionMatch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RvMatch {
    NotOlderThan,
    Exact,
}

/// The query parameters of list, watch and get, validated.
#[derive(Debug, Default)]
pub(crate) struct Params {
    pub include: IncludeObject,
    pub selectors: Selectors,
    limit: Option<usize>,
    continue_token: Option<ContinueToken>,
    pub resource_version: Option<String>,
    rv_match: Option<RvMatch>,
    pub watch: bool,
    pub timeout_seconds: Option<u64>,
    pub allow_bookmarks: bool,
    pub send_initial_events: Option<bool>,
}

fn boolean(key: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "" | "false" | "0" => Ok(false),
        "true" | "1" => Ok(true),
        other => Err(ApiError::bad_request(format!("{key}: invalid value {other:?}: must be true or false"))),
    }
}

fn parse_params(query: Option<&str>, is_list: bool) -> Result<Params, ApiError> {
    let mut p = Params::default();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let value = value.as_ref();
        match key.as_ref() {
            "includeObject" => p.include = value.parse().map_err(ApiError::bad_request)?,
            "limit" | "timeoutSeconds" => {
                let n = value.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("{key}: invalid value {value:?}: must be a non-negative integer"))
                })?;
                if key == "limit" {
                    p.limit = (n > 0).then_some(n.min(usize::MAX as u64) as usize);
                } else {
                    p.timeout_seconds = Some(n);
                }
            }
            "continue" if is_list && !value.is_empty() => p.continue_token = Some(ContinueToken::decode(value)?),
            "fieldSelector" if is_list => {
                p.selectors.fields = FieldSelector::parse(value).map_err(ApiError::bad_request)?
            }
            "labelSelector" if is_list => {
                p.selectors.labels = LabelSelector::parse(value).map_err(ApiError::bad_request)?
            }
            "watch" if is_list => p.watch = boolean("watch", value)?,
            "allowWatchBookmarks" => p.allow_bookmarks = boolean("allowWatchBookmarks", value)?,
            "sendInitialEvents" => p.send_initial_events = Some(boolean("sendInitialEvents", value)?),
            "resourceVersion" if !value.is_empty() => p.resource_version = Some(value.to_string()),
            "resourceVersionMatch" if !value.is_empty() => {
                p.rv_match = Some(match value {
                    "NotOlderThan" => RvMatch::NotOlderThan,
                    "Exact" => RvMatch::Exact,
                    other => {
                        return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
                )))
                    }
                })
            }
            _ => {} // kube-apiserver ignores parameters it does not know
        }
    }
    if p.rv_match.is_some() && p.resource_version.is_none() {
        return Err(ApiError::bad_request(
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        ));
    }
    if p.continue_token.is_some() && p.resource_version.is_some() {
        return Err(ApiError::bad_request(
            "resourceVersion: Forbidden: specifying resource version is not allowed when using continue",
        ));
    }
    if p.watch && (p.continue_token.is_some() || p.rv_match == Some(RvMatch::Exact)) {
        return Err(ApiError::bad_request("a watch cannot use continue or resourceVersionMatch=Exact"));
    }
    if p.send_initial_events == Some(true) && !p.watch {
        return Err(ApiError::bad_request("sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list"));
    }
    Ok(p)
}

/// Where a paged list resumes: the snapshot it was read from and the last name returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ContinueToken {
    rv: String,
    after: String,
}

impl ContinueToken {
    fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("a continue token serializes");
        openssl::base64::encode_block(&json).replace('+', "-").replace('/', "_").trim_end_matches('=').to_string()
    }

    fn decode(text: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::bad_request("continue: Invalid value: the continue token is not one this server issued");
        let mut b64 = text.replace('-', "+").replace('_', "/");
        while !b64.len().is_multiple_of(4) {
            b64.push('=');
        }
        let json = openssl::base64::decode_block(&b64).map_err(|_| bad())?;
        serde_json::from_slice(&json).map_err(|_| bad())
    }
}

pub(crate) fn representation(req: &Request) -> Result<Representation, ApiError> {
    resource_representation(req.header("accept")).ok_or_else(|| ApiError::not_acceptable(RESOURCE_MEDIA_TYPES))
}

/// `Warning: 299` headers for every source that is failing (kubectl prints them on stderr).
pub(crate) fn with_warnings(mut resp: Response, catalog: &Catalog) -> Response {
    for w in catalog.warnings() {
        let text = format!("299 - \"{}\"", w.replace(['"', '\\'], "'").replace(['\r', '\n'], " "));
        if let Ok(v) = poem::http::HeaderValue::from_str(&text) {
            resp.headers_mut().append("warning", v);
        }
    }
    resp
}

fn json<T: Serialize>(body: &T, content_type: &str) -> Response {
    Response::builder().content_type(content_type).body(serde_json::to_vec(body).expect("API objects serialize"))
}

pub(crate) fn table_content_type(version: &str) -> String {
    format!("application/json;as=Table;v={version};g=meta.k8s.io")
}

/// A large rendered body is sent in slices of itself: hyper copies what it writes to a TLS stream
/// into its own buffer, so one whole multi-megabyte list per client in flight would be copied.
fn shared_body(body: bytes::Bytes) -> poem::Body {
    const SLICE: usize = 256 * 1024;
    if body.len() <= SLICE {
        return body.into();
    }
    let slices: Vec<bytes::Bytes> =
        (0..body.len()).step_by(SLICE).map(|i| body.slice(i..(i + SLICE).min(body.len()))).collect();
    poem::Body::from_bytes_stream(futures_util::stream::iter(slices.into_iter().map(Ok::<_, std::io::Error>)))
}

/// The list body, borrowing the snapshot's objects; each becomes a `KlioBackup` only while it is
/// written.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListBody<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: ListMeta,
    items: Vec<&'a Backup>,
}

fn parse_rv(catalog: &Catalog, text: &str) -> Result<ResourceVersion, ApiError> {
    ResourceVersion::parse(text, catalog.source_count()).map_err(ApiError::bad_request)
}

fn too_old(rv: &str, current: &Snapshot) -> ApiError {
    ApiError::gone(format!("too old resource version: {rv} ({})", current.resource_version_text))
}

/// The snapshot a list is served from, following kube's resourceVersion semantics.
async fn list_snapshot(catalog: &Catalog, p: &Params) -> Result<Arc<Snapshot>, ApiError> {
    if let Some(token) = &p.continue_token {
        let rv = parse_rv(catalog, &token.rv)?;
        if let Some(kept) = catalog.at(&rv) {
            return Ok(kept);
        }
        // A token minted by a replica ahead of this one: catch up first.
        if !catalog.snapshot().await?.resource_version.covers(&rv) {
            catalog.wait_for(&rv, CATCH_UP).await;
        }
        return catalog.at(&rv).ok_or_else(|| {
            ApiError::gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.")
        });
    }
    let current = catalog.snapshot().await?;
    let Some(text) = p.resource_version.as_deref().filter(|rv| *rv != "0") else { return Ok(current) };
    let rv = parse_rv(catalog, text)?;
    match p.rv_match {
        Some(RvMatch::Exact) => {
            if let Some(s) = catalog.at(&rv) {
                return Ok(s);
            }
            if !current.resource_version.covers(&rv) && catalog.wait_for(&rv, CATCH_UP).await.is_some() {
                if let Some(s) = catalog.at(&rv) {
                    return Ok(s);
                }
            }
            Err(too_old(text, &current))
        }
        _ if current.resource_version.covers(&rv) => Ok(current),
        _ => catalog.wait_for(&rv, CATCH_UP).await.ok_or_else(|| {
            ApiError::timeout(format!("Too large resource version: {text}, current: {}", current.resource_version_text))
        }),
    }
}

#[handler]
pub async fn list(req: &Request, Data(state): Data<&Arc<AppState>>) -> Result<Response, ApiError> {
    let params = parse_params(req.uri().query(), true)?;
    let repr = representation(req)?;
    let catalog = &state.catalog;
    if params.watch {
        return super::watch::serve(state, params, repr).await;
    }
    let snapshot = list_snapshot(catalog, &params).await?;
    let start = match &params.continue_token {
        Some(t) => match snapshot.position(&t.after) {
            Ok(i) => i + 1,
            Err(i) => i,
        },
        None => 0,
    };
    // A whole list (no selector, no page) is the same bytes for everyone at this revision.
    let whole = params.selectors.is_empty() && params.limit.is_none() && params.continue_token.is_none();
    let key = super::render_cache::RenderKey { repr, include: params.include };
    let content_type = match repr {
        Representation::Json => "application/json".to_string(),
        Representation::Table(v) => table_content_type(v),
    };
    if whole {
        if let Some(body) = state.renders.get(&snapshot.resource_version_text, key) {
            return Ok(with_warnings(Response::builder().content_type(content_type).body(shared_body(body)), catalog));
        }
    }
    let mut matching = snapshot.backups[start..].iter().filter(|b| params.selectors.matches(b));
    let items: Vec<&Backup> = matching.by_ref().take(params.limit.unwrap_or(usize::MAX)).map(Arc::as_ref).collect();
    let mut metadata =
        ListMeta { resource_version: Some(snapshot.resource_version_text.clone()), ..Default::default() };
    if let (Some(last), true) = (items.last(), params.limit.is_some()) {
        let remaining = matching.count();
        if remaining > 0 {
            let token = ContinueToken { rv: snapshot.resource_version_text.clone(), after: last.name().to_string() };
            metadata.continue_ = Some(token.encode());
            // Only exact without selectors, as kube-apiserver does.
            metadata.remaining_item_count = params.selectors.is_empty().then_some(remaining as i64);
        }
    }
    let body = bytes::Bytes::from(
        match repr {
            Representation::Json => {
                let list = ListBody { api_version: group_version(), kind: RESOURCES[0].list_kind, metadata, items };
                serde_json::to_vec(&list)
            }
            Representation::Table(v) => {
                serde_json::to_vec(&table::render(v, items.into_iter(), metadata, params.include))
            }
        }
        .expect("API objects serialize"),
    );
    if whole {
        state.renders.put(&snapshot.resource_version_text, key, body.clone());
    }
    Ok(with_warnings(Response::builder().content_type(content_type).body(shared_body(body)), catalog))
}

/// Names that cannot be any object's name are a client error; well-formed unknown names are 404.
fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid resource name {name:?}: a KlioBackup name is <clusterName>.<backupID>, made of letters, digits, '.', '-' and '_', at most 253 characters"
        )))
    }
}

#[handler]
pub async fn get(req: &Request, Data(state): Data<&Arc<AppState>>) -> Result<Response, ApiError> {
    let name = req.path_params::<String>().map_err(|_| ApiError::bad_request("missing resource name"))?;
    validate_name(&name)?;
    let params = parse_params(req.uri().query(), false)?;
    let repr = representation(req)?;
    let snapshot = list_snapshot(&state.catalog, &params).await?;
    let backup = snapshot.get(&name).ok_or_else(|| ApiError::not_found(plural(), &name))?;
    let resp = match repr {
        Representation::Json => json(&backup.to_kliobackup(), "application/json"),
        Representation::Table(v) => {
            let metadata =
                ListMeta { resource_version: Some(snapshot.resource_version_text.clone()), ..Default::default() };
            json(&table::render(v, std::iter::once(backup.as_ref()), metadata, params.include), &table_content_type(v))
        }
    };
    Ok(with_warnings(resp, &state.catalog))
}

/// create, update, patch and delete: the catalog is read-only.
#[handler]
pub fn method_not_allowed(req: &Request) -> ApiError {
    let name = req.path_params::<String>().ok();
    ApiError::method_not_allowed(Some((plural(), name.as_deref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("cluster-example.backup-20251113093137").is_ok());
        assert!(validate_name("nonexistent").is_ok(), "well-formed unknown names are a 404, not a 400");
        for bad in ["", ".", "..", "a b", "a%2Fb", "ä", &"x".repeat(254)] {
            assert_eq!(validate_name(bad).unwrap_err().code, 400, "{bad:?}");
        }
    }

    #[test]
    fn params() {
        let p = parse_params(Some("limit=500&labelSelector=a%3Db&fieldSelector=spec.clusterName%3Dx"), true).unwrap();
        assert_eq!((p.limit, p.include), (Some(500), IncludeObject::Metadata));
        assert!(!p.selectors.is_empty());
        assert_eq!(parse_params(Some("limit=0"), true).unwrap().limit, None);
        assert_eq!(parse_params(Some("includeObject=Object"), true).unwrap().include, IncludeObject::Object);
        assert!(parse_params(Some("watch=true&allowWatchBookmarks=true"), true).unwrap().allow_bookmarks);
        for bad in [
            "limit=-1",
            "limit=x",
            "includeObject=All",
            "watch=maybe",
            "timeoutSeconds=1.5",
            "continue=abc",
            "fieldSelector=status.phase%3DX",
            "labelSelector=a+in+b",
            "resourceVersionMatch=Exact",
            "resourceVersion=1&resourceVersionMatch=Newest",
            "sendInitialEvents=true",
        ] {
            assert_eq!(parse_params(Some(bad), true).unwrap_err().code, 400, "{bad}");
        }
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = ContinueToken { rv: "17.4".into(), after: "pg-a.backup-1".into() };
        let text = t.encode();
        assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{text} is URL-safe");
        assert_eq!(ContinueToken::decode(&text).unwrap(), t);
        assert_eq!(ContinueToken::decode("not a token").unwrap_err().code, 400);
        let p = parse_params(Some(&format!("continue={text}&resourceVersion=3")), true).unwrap_err();
        assert!(p.message.contains("not allowed when using continue"));
    }
}
