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
use super::request::{info_of, kube_bool, Query};
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

/// The query parameters of list, watch and get, validated: each the first value given (see
/// [`super::request`]).
#[derive(Debug, Default, Clone)]
pub struct Params {
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

/// Reads the options of a list (`is_list`; a watch when `watch`, decided by the caller from the
/// same query) or a get.
pub(crate) fn parse_params(query: &Query, is_list: bool, watch: bool) -> Result<Params, ApiError> {
    let mut p = Params { watch: is_list && watch, ..Default::default() };
    if let Some(value) = query.first("includeObject") {
        p.include = value.parse().map_err(ApiError::bad_request)?;
    }
    for key in ["limit", "timeoutSeconds"] {
        let Some(value) = query.first(key) else { continue };
        let n = value.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("{key}: invalid value {value:?}: must be a non-negative integer"))
        })?;
        if key == "limit" {
            p.limit = (n > 0).then_some(n.min(usize::MAX as u64) as usize);
        } else {
            p.timeout_seconds = Some(n);
        }
    }
    if is_list {
        if let Some(value) = query.first("continue").filter(|v| !v.is_empty()) {
            p.continue_token = Some(ContinueToken::decode(value)?);
        }
        if let Some(value) = query.first("fieldSelector") {
            p.selectors.fields = FieldSelector::parse(value).map_err(ApiError::bad_request)?;
        }
        if let Some(value) = query.first("labelSelector") {
            p.selectors.labels = LabelSelector::parse(value).map_err(ApiError::bad_request)?;
        }
    }
    p.allow_bookmarks = query.first("allowWatchBookmarks").is_some_and(kube_bool);
    p.send_initial_events = query.first("sendInitialEvents").map(kube_bool);
    if let Some(value) = query.first("resourceVersion").filter(|v| !v.is_empty()) {
        p.resource_version = Some(value.to_string());
    }
    if let Some(value) = query.first("resourceVersionMatch").filter(|v| !v.is_empty()) {
        p.rv_match = Some(match value {
            "NotOlderThan" => RvMatch::NotOlderThan,
            "Exact" => RvMatch::Exact,
            other => {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
                )))
            }
        });
    }
    // kube-apiserver ignores parameters it does not know.
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
    for value in warning_headers(&catalog.warnings()) {
        resp.headers_mut().append("warning", value);
    }
    resp
}

/// k8s.io/apiserver's warning budget: 4096 characters in all; past it, every warning is cut to 256.
const WARNING_TOTAL_CHARS: usize = 4096;
const WARNING_ITEM_CHARS: usize = 256;

/// `299 - "<text>"` values for `texts`, as kube-apiserver writes them (a quoted string, `"` and
/// `\` escaped, UTF-8 kept) within kube's budget. A text is an upstream's error, so it may hold
/// anything: control characters (NUL, ESC, line breaks, which would drop the header or reach the
/// user's terminal) become spaces, and duplicates are sent once.
pub(crate) fn warning_headers(texts: &[String]) -> Vec<poem::http::HeaderValue> {
    let mut cleaned: Vec<String> = vec![];
    for text in texts {
        let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        let clean = clean.trim().to_string();
        if !clean.is_empty() && !cleaned.contains(&clean) {
            cleaned.push(clean);
        }
    }
    let truncate = cleaned.iter().map(|t| t.chars().count()).sum::<usize>() > WARNING_TOTAL_CHARS;
    cleaned
        .into_iter()
        .filter_map(|text| {
            let text: String = if truncate { text.chars().take(WARNING_ITEM_CHARS).collect() } else { text };
            let quoted = text.replace('\\', r"\\").replace('"', r#"\""#);
            poem::http::HeaderValue::from_bytes(format!("299 - \"{quoted}\"").as_bytes()).ok()
        })
        .collect()
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
    // The options the guard authorized, read once for both.
    let info = info_of(req);
    let params = info.params.as_ref().map_err(Clone::clone)?;
    let repr = representation(req)?;
    let catalog = &state.catalog;
    if params.watch {
        return super::watch::serve(state, &info, repr).await;
    }
    let snapshot = list_snapshot(catalog, params).await?;
    let start = match &params.continue_token {
        Some(t) => match snapshot.position(&t.after) {
            Ok(i) => i + 1,
            Err(i) => i,
        },
        None => 0,
    };
    // A whole list (no selector, no page) is the same bytes for everyone at this revision (a
    // Table within the same second: its AGE column moves with the clock).
    let whole = params.selectors.is_empty() && params.limit.is_none() && params.continue_token.is_none();
    let now = jiff::Timestamp::now().as_second();
    let at_second = matches!(repr, Representation::Table(_)).then_some(now);
    let key = super::render_cache::RenderKey { repr, include: params.include, at_second };
    let content_type = match repr {
        Representation::Json => "application/json".to_string(),
        Representation::Table(v) => table_content_type(v),
    };
    let render = || render_list(&snapshot, start, params, repr, now);
    let body =
        if whole { state.renders.get_or_render(&snapshot.resource_version_text, key, render).await } else { render() };
    Ok(with_warnings(Response::builder().content_type(content_type).body(shared_body(body)), catalog))
}

/// The body of a list (JSON or Table) from position `start` of `snapshot`.
fn render_list(snapshot: &Snapshot, start: usize, params: &Params, repr: Representation, now: i64) -> bytes::Bytes {
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
    bytes::Bytes::from(
        match repr {
            Representation::Json => {
                let body = ListBody { api_version: group_version(), kind: RESOURCES[0].list_kind, metadata, items };
                serde_json::to_vec(&body)
            }
            Representation::Table(v) => {
                serde_json::to_vec(&table::render_at(v, items.into_iter(), metadata, params.include, now))
            }
        }
        .expect("API objects serialize"),
    )
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
    let info = info_of(req);
    let params = info.params.as_ref().map_err(Clone::clone)?;
    let repr = representation(req)?;
    let snapshot = list_snapshot(&state.catalog, params).await?;
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

    fn list_params(query: &str) -> Result<Params, ApiError> {
        let q = Query::parse(Some(query));
        let watch = q.first("watch").is_some_and(kube_bool);
        parse_params(&q, true, watch)
    }

    #[test]
    fn params() {
        let p = list_params("limit=500&labelSelector=a%3Db&fieldSelector=spec.clusterName%3Dx").unwrap();
        assert_eq!((p.limit, p.include), (Some(500), IncludeObject::Metadata));
        assert!(!p.selectors.is_empty());
        assert_eq!(list_params("limit=0").unwrap().limit, None);
        assert_eq!(list_params("includeObject=Object").unwrap().include, IncludeObject::Object);
        assert!(list_params("watch=true&allowWatchBookmarks=true").unwrap().allow_bookmarks);
        // Booleans as apimachinery reads them: only 0 and false are false.
        assert!(list_params("watch=yes").unwrap().watch);
        assert!(!list_params("watch=False").unwrap().watch);
        // The first of repeated values.
        assert_eq!(list_params("limit=2&limit=x").unwrap().limit, Some(2));
        assert_eq!(list_params("limit=x&limit=2").unwrap_err().code, 400);
        for bad in [
            "limit=-1",
            "limit=x",
            "includeObject=All",
            "timeoutSeconds=1.5",
            "continue=abc",
            "fieldSelector=status.phase%3DX",
            "labelSelector=a+in+b",
            "resourceVersionMatch=Exact",
            "resourceVersion=1&resourceVersionMatch=Newest",
            "sendInitialEvents=true",
            "watch=1&continue=abc",
        ] {
            assert_eq!(list_params(bad).unwrap_err().code, 400, "{bad}");
        }
    }

    #[test]
    fn warnings_are_sanitized_and_bounded_like_kube_apiserver() {
        let headers = |texts: &[&str]| -> Vec<String> {
            warning_headers(&texts.iter().map(|t| t.to_string()).collect::<Vec<_>>())
                .iter()
                .map(|v| String::from_utf8(v.as_bytes().to_vec()).unwrap())
                .collect()
        };
        assert_eq!(headers(&["Klio server klio down"]), [r#"299 - "Klio server klio down""#]);
        assert_eq!(
            headers(&["nul\0esc\u{1b}[31mred\r\nbell\u{7}"]),
            [r#"299 - "nul esc [31mred  bell""#],
            "control characters become spaces, the warning is kept"
        );
        assert_eq!(headers(&[r#"say "hi" \ bye"#]), [r#"299 - "say \"hi\" \\ bye""#]);
        assert_eq!(headers(&["é ü"]), ["299 - \"é ü\""], "UTF-8 is kept, as kube-apiserver sends it");
        assert_eq!(headers(&["same", "same", "\0"]), [r#"299 - "same""#], "duplicates and empty texts dropped");
        // 12 MB of error text: cut to kube's budget.
        let huge = "x".repeat(12 << 20);
        let out = headers(&[&huge, "second"]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len(), WARNING_ITEM_CHARS + r#"299 - """#.len());
        assert!(out.iter().map(String::len).sum::<usize>() < 1024);
        let fits = "y".repeat(3000);
        assert_eq!(headers(&[&fits])[0].len(), 3000 + 8, "within the total budget nothing is cut");
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = ContinueToken { rv: "17.4".into(), after: "pg-a.backup-1".into() };
        let text = t.encode();
        assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{text} is URL-safe");
        assert_eq!(ContinueToken::decode(&text).unwrap(), t);
        assert_eq!(ContinueToken::decode("not a token").unwrap_err().code, 400);
        let p = list_params(&format!("continue={text}&resourceVersion=3")).unwrap_err();
        assert!(p.message.contains("not allowed when using continue"));
    }
}
