//! The `kliobackups` handlers: list (with selectors, paging, resourceVersion semantics), watch,
//! and get, as JSON or as a server-side-printed Table. Every other method is refused with a
//! MethodNotAllowed Status: the catalog is read-only.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta};
use poem::web::Data;
use poem::{handler, Request, Response};
use serde::{Deserialize, Serialize};

use super::negotiate::{resource_representation, Format, Representation, Shape, RESOURCE_MEDIA_TYPES};
use super::request::{info_of, kube_bool, Query};
use super::selectors::{FieldSelector, LabelSelector, Selectors};
use super::status::{ApiError, FieldError};
use super::table::{self, IncludeObject};
use super::AppState;
use crate::catalog::{Backup, Catalog, ResourceVersion, Snapshot};
use crate::routes::{group_version, RESOURCES};

pub(crate) fn plural() -> &'static str {
    RESOURCES[0].name
}

/// How long a request may wait for this replica to catch up with a resourceVersion a client
/// saw elsewhere (another replica, a newer upstream revision).
pub(crate) const CATCH_UP: Duration = Duration::from_secs(3);

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
        if let Some(value) = query.first("fieldSelector") {
            p.selectors.fields = FieldSelector::parse(value).map_err(ApiError::bad_request)?;
        }
        if let Some(value) = query.first("labelSelector") {
            p.selectors.labels = LabelSelector::parse(value).map_err(ApiError::bad_request)?;
        }
    }
    p.allow_bookmarks = query.first("allowWatchBookmarks").is_some_and(kube_bool);
    p.send_initial_events = query.first("sendInitialEvents").map(kube_bool);
    let rv = query.first("resourceVersion").unwrap_or_default();
    p.resource_version = Some(rv.to_string()).filter(|rv| !rv.is_empty());
    let rv_match = query.first("resourceVersionMatch").unwrap_or_default();
    let continue_text = query.first("continue").unwrap_or_default();
    if is_list {
        // kube's SetListOptionsDefaults with the WatchList feature on (its default from 1.34): a
        // watch from "" or "0" that names neither option streams its initial events.
        let (send_initial_events, rv_match) =
            if p.watch && p.send_initial_events.is_none() && rv_match.is_empty() && (rv.is_empty() || rv == "0") {
                (Some(true), "NotOlderThan")
            } else {
                (p.send_initial_events, rv_match)
            };
        let errors = validate_list_options(p.watch, rv, rv_match, continue_text, send_initial_events);
        if !errors.is_empty() {
            return Err(ApiError::invalid("meta.k8s.io", "ListOptions", "", &errors));
        }
        p.send_initial_events = send_initial_events;
        p.rv_match = match rv_match {
            "Exact" => Some(RvMatch::Exact),
            "NotOlderThan" => Some(RvMatch::NotOlderThan),
            _ => None,
        };
        // A watch ignores `continue`, as kube's watch does.
        if !p.watch && !continue_text.is_empty() {
            p.continue_token = Some(ContinueToken::decode(continue_text)?);
        }
    } else if !rv_match.is_empty() {
        // A get: the resourceVersion semantics of a list of one.
        p.rv_match = Some(match rv_match {
            "NotOlderThan" => RvMatch::NotOlderThan,
            "Exact" => RvMatch::Exact,
            other => {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
                )))
            }
        });
        if p.resource_version.is_none() {
            return Err(ApiError::bad_request(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
    }
    // kube ignores parameters it does not know. "0" may come with `continue` (kube's storage
    // refuses any other version there).
    if p.continue_token.is_some() && p.resource_version.as_deref().is_some_and(|rv| rv != "0") {
        return Err(ApiError::bad_request(
            "resourceVersion: Forbidden: specifying resource version is not allowed when using continue",
        ));
    }
    Ok(p)
}

/// k8s.io/apimachinery's `ValidateListOptions` (meta/internalversion/validation), with the
/// WatchList feature on: which combinations of `resourceVersion`, `resourceVersionMatch`,
/// `continue` and `sendInitialEvents` a list or a watch may use. kube answers these with a 422
/// Invalid `ListOptions.meta.k8s.io` Status, every error a cause.
fn validate_list_options(
    watch: bool,
    rv: &str,
    rv_match: &str,
    continue_text: &str,
    send_initial_events: Option<bool>,
) -> Vec<FieldError> {
    const RV_MATCH: &str = "resourceVersionMatch";
    let mut errors = vec![];
    if watch {
        if send_initial_events.is_some() && rv_match != "NotOlderThan" {
            errors.push(FieldError::forbidden(
                RV_MATCH,
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if !rv_match.is_empty() {
            if send_initial_events.is_none() {
                errors.push(FieldError::forbidden(
                    RV_MATCH,
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                ));
            }
            if rv_match != "NotOlderThan" {
                errors.push(FieldError::not_supported(RV_MATCH, rv_match, &["NotOlderThan"]));
            }
            if !continue_text.is_empty() {
                errors.push(FieldError::forbidden(
                    RV_MATCH,
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
        }
        return errors;
    }
    if !rv_match.is_empty() {
        if rv.is_empty() {
            errors.push(FieldError::forbidden(
                RV_MATCH,
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        if !continue_text.is_empty() {
            errors.push(FieldError::forbidden(RV_MATCH, "resourceVersionMatch is forbidden when continue is provided"));
        }
        if rv_match != "Exact" && rv_match != "NotOlderThan" {
            errors.push(FieldError::not_supported(RV_MATCH, rv_match, &["Exact", "NotOlderThan", ""]));
        }
        if rv_match == "Exact" && rv == "0" {
            errors.push(FieldError::forbidden(
                RV_MATCH,
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
    }
    if send_initial_events.is_some() {
        errors.push(FieldError::forbidden("sendInitialEvents", "sendInitialEvents is forbidden for list"));
    }
    errors
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

/// The response body in `repr`'s format, from the JSON every representation renders.
fn encode(repr: Representation, json: Vec<u8>) -> Result<bytes::Bytes, ApiError> {
    Ok(match repr.format {
        Format::Json => json.into(),
        Format::Yaml => super::yaml::from_json(&json)?.into(),
    })
}

fn to_json<T: Serialize>(body: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(body).map_err(|e| ApiError::internal(format!("encoding JSON: {e}")))
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

/// `meta.k8s.io/<version>`.
pub(crate) fn meta_api_version(version: &str) -> &'static str {
    if version == "v1beta1" {
        "meta.k8s.io/v1beta1"
    } else {
        "meta.k8s.io/v1"
    }
}

/// One object's metadata alone, as kube's `asPartialObjectMetadata` makes it: the whole
/// `metadata` of the object, typed `PartialObjectMetadata`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PartialObjectMetadata {
    kind: &'static str,
    api_version: &'static str,
    metadata: ObjectMeta,
}

impl PartialObjectMetadata {
    pub(crate) fn new(version: &str, metadata: ObjectMeta) -> Self {
        Self { kind: "PartialObjectMetadata", api_version: meta_api_version(version), metadata }
    }
}

/// `PartialObjectMetadataList`: the list's metadata (resourceVersion, continue,
/// remainingItemCount) and each item's, built while it is written.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MetadataListBody<'a> {
    kind: &'static str,
    api_version: &'static str,
    metadata: ListMeta,
    items: MetadataItems<'a>,
}

struct MetadataItems<'a> {
    version: &'static str,
    backups: Vec<&'a Backup>,
}

impl Serialize for MetadataItems<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.backups.len()))?;
        for b in &self.backups {
            seq.serialize_element(&PartialObjectMetadata::new(self.version, b.metadata()))?;
        }
        seq.end()
    }
}

/// kube's 406 when the representation asked for does not fit what was read (its
/// `errNotAcceptable`, after the object or list was read): metadata of one object for a list, or
/// a list for one object. `what` is the Go type kube names.
fn not_acceptable_for(asked: &str, is_list: bool) -> ApiError {
    let go_type = |kind: &str| format!("*{}.{kind}", crate::routes::VERSION);
    let message = if is_list {
        format!("you requested {asked}, but the requested object is a list ({})", go_type(RESOURCES[0].list_kind))
    } else {
        format!("you requested {asked}, but the requested object is not a list ({})", go_type(RESOURCES[0].kind))
    };
    ApiError::new(poem::http::StatusCode::NOT_ACCEPTABLE, "NotAcceptable", message)
}

/// A resourceVersion a client sent, as far as this replica can place it.
pub(crate) enum Requested {
    /// One of this catalog's (one number per source).
    Ours(ResourceVersion),
    /// A number kube would accept that this catalog never issued (`1` where there are two
    /// sources, or the dotted form of another number of sources): older than anything kept,
    /// so a NotOlderThan read is served the current state, and a watch or an Exact read from
    /// it is 410 Expired, as a version compacted away is in kube.
    Foreign,
}

/// Reads a resourceVersion: ours, foreign, or (not a number at all) a 400.
pub(crate) fn requested_version(catalog: &Catalog, text: &str) -> Result<Requested, ApiError> {
    match ResourceVersion::parse(text, catalog.source_count()) {
        Ok(rv) => Ok(Requested::Ours(rv)),
        Err(_) if text.split('.').all(|part| part.parse::<u64>().is_ok_and(|_| !part.starts_with('+'))) => {
            Ok(Requested::Foreign)
        }
        Err(message) => Err(ApiError::bad_request(message)),
    }
}

pub(crate) fn too_old(rv: &str, current: &Snapshot) -> ApiError {
    ApiError::gone(format!("too old resource version: {rv} ({})", current.resource_version_text))
}

/// The snapshot a list is served from, following kube's resourceVersion semantics.
async fn list_snapshot(catalog: &Catalog, p: &Params) -> Result<Arc<Snapshot>, ApiError> {
    if let Some(token) = &p.continue_token {
        let expired = || {
            ApiError::gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.")
        };
        let Requested::Ours(rv) = requested_version(catalog, &token.rv)? else { return Err(expired()) };
        if let Some(kept) = catalog.at(&rv) {
            return Ok(kept);
        }
        // A token minted by a replica ahead of this one: catch up first.
        if !catalog.snapshot().await?.resource_version.covers(&rv) {
            catalog.wait_for(&rv, CATCH_UP).await;
        }
        return catalog.at(&rv).ok_or_else(expired);
    }
    let current = catalog.snapshot().await?;
    let Some(text) = p.resource_version.as_deref().filter(|rv| *rv != "0") else { return Ok(current) };
    let rv = match requested_version(catalog, text)? {
        Requested::Ours(rv) => rv,
        Requested::Foreign if p.rv_match == Some(RvMatch::Exact) => return Err(too_old(text, &current)),
        Requested::Foreign => return Ok(current),
    };
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
        _ => catalog
            .wait_for(&rv, CATCH_UP)
            .await
            .ok_or_else(|| ApiError::too_large_resource_version(text, &current.resource_version_text)),
    }
}

#[handler]
pub async fn list(req: &Request, Data(state): Data<&Arc<AppState>>) -> Result<Response, ApiError> {
    // kube-apiserver negotiates the media type before it reads the options (406 before 400).
    let repr = representation(req)?;
    // The options the guard authorized, read once for both.
    let info = info_of(req);
    let params = info.params.as_ref().map_err(Clone::clone)?;
    let catalog = &state.catalog;
    if params.watch {
        return super::watch::serve(state, &info, repr).await;
    }
    let snapshot = list_snapshot(catalog, params).await?;
    if let Shape::Metadata { list: false, .. } = repr.shape {
        return Err(not_acceptable_for("PartialObjectMetadata", true));
    }
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
    let at_second = matches!(repr.shape, Shape::Table(_)).then_some(now);
    let key = super::render_cache::RenderKey { repr, include: params.include, at_second };
    let content_type = repr.content_type();
    let render = || render_list(&snapshot, start, params, repr, now);
    let body = if whole { state.renders.get_or_render(&snapshot, key, render).await? } else { render()? };
    Ok(with_warnings(Response::builder().content_type(content_type).body(shared_body(body)), catalog))
}

/// The body of a list (objects, Table or metadata only; JSON or YAML) from position `start` of
/// `snapshot`, Table ages counted to `now`.
fn render_list(
    snapshot: &Snapshot,
    start: usize,
    params: &Params,
    repr: Representation,
    now: i64,
) -> Result<bytes::Bytes, ApiError> {
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
    let json = match repr.shape {
        Shape::Object => {
            to_json(&ListBody { api_version: group_version(), kind: RESOURCES[0].list_kind, metadata, items })?
        }
        Shape::Table(v) => to_json(&table::render_at(v, items.into_iter(), metadata, params.include, now))?,
        Shape::Metadata { version, .. } => to_json(&MetadataListBody {
            kind: "PartialObjectMetadataList",
            api_version: meta_api_version(version),
            metadata,
            items: MetadataItems { version, backups: items },
        })?,
    };
    encode(repr, json)
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
    let repr = representation(req)?;
    let info = info_of(req);
    let params = info.params.as_ref().map_err(Clone::clone)?;
    let snapshot = list_snapshot(&state.catalog, params).await?;
    let backup = snapshot.get(&name).ok_or_else(|| ApiError::not_found(plural(), &name))?;
    let json = match repr.shape {
        Shape::Object => to_json(&backup.to_kliobackup())?,
        Shape::Table(v) => {
            let metadata =
                ListMeta { resource_version: Some(snapshot.resource_version_text.clone()), ..Default::default() };
            to_json(&table::render(v, std::iter::once(backup.as_ref()), metadata, params.include))?
        }
        Shape::Metadata { version, list: false } => to_json(&PartialObjectMetadata::new(version, backup.metadata()))?,
        Shape::Metadata { list: true, .. } => return Err(not_acceptable_for("PartialObjectMetadataList", false)),
    };
    let resp = Response::builder().content_type(repr.content_type()).body(encode(repr, json)?);
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
            "continue=eyJydiI6IjEiLCJhZnRlciI6IiJ9&resourceVersion=1",
        ] {
            assert_eq!(list_params(bad).unwrap_err().code, 400, "{bad}");
        }
        // A watch from a version ignores `continue`, as kube's does; from none, kube's defaults
        // make it a streaming watch, which may not have one.
        assert!(list_params("watch=1&resourceVersion=5&continue=abc").is_ok());
        assert_eq!(list_params("watch=1&continue=abc").unwrap_err().code, 422);
        // "0" may come with a continue token.
        assert!(list_params("continue=eyJydiI6IjEiLCJhZnRlciI6IiJ9&resourceVersion=0").is_ok());
    }

    /// The cases of apimachinery's `ValidateListOptions` tests (WatchList on), with kube's
    /// messages, after kube's defaulting (`SetListOptionsDefaults`).
    #[test]
    fn list_options_are_validated_as_kube_validates_them() {
        let invalid = |query: &str| -> Vec<String> {
            match list_params(query) {
                Ok(_) => vec![],
                Err(e) => {
                    assert_eq!((e.code.as_u16(), e.reason), (422, "Invalid"), "{query}: {e}");
                    let details = e.details.as_ref().expect("details");
                    assert_eq!(
                        (details.group.as_deref(), details.kind.as_deref(), details.name.as_deref()),
                        (Some("meta.k8s.io"), Some("ListOptions"), None)
                    );
                    let causes = details.causes.as_ref().expect("causes");
                    causes
                        .iter()
                        .map(|c| format!("{}: {}", c.field.as_deref().unwrap(), c.message.as_deref().unwrap()))
                        .collect()
                }
            }
        };
        let ok: [&str; 8] = [
            "",
            "resourceVersion=1&resourceVersionMatch=Exact",
            "resourceVersion=0&resourceVersionMatch=NotOlderThan",
            "watch=true",
            "watch=true&resourceVersion=0",
            "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true",
            "watch=true&sendInitialEvents=false&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true",
            "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
        ];
        for query in ok {
            assert_eq!(invalid(query), Vec::<String>::new(), "{query}");
        }
        let cases: [(&str, &[&str]); 10] = [
            (
                "resourceVersion=0&resourceVersionMatch=Exact",
                &[r#"resourceVersionMatch: Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0""#],
            ),
            (
                "resourceVersion=0&resourceVersionMatch=foo",
                &[r#"resourceVersionMatch: Unsupported value: "foo": supported values: "Exact", "NotOlderThan", """#],
            ),
            ("sendInitialEvents=true", &["sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list"]),
            ("sendInitialEvents=false", &["sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list"]),
            (
                "resourceVersionMatch=NotOlderThan",
                &["resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"],
            ),
            (
                "watch=true&resourceVersionMatch=NotOlderThan",
                &["resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"],
            ),
            (
                "watch=true&sendInitialEvents=true",
                &["resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"],
            ),
            (
                "watch=true&sendInitialEvents=false&resourceVersion=5",
                &["resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"],
            ),
            (
                "watch=true&sendInitialEvents=true&resourceVersionMatch=Exact&allowWatchBookmarks=true",
                &[
                    "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                    r#"resourceVersionMatch: Unsupported value: "Exact": supported values: "NotOlderThan""#,
                ],
            ),
            (
                "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&continue=123",
                &["resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when continue is provided"],
            ),
        ];
        for (query, expected) in cases {
            assert_eq!(invalid(query), expected, "{query}");
        }
        // The message: kube's NewInvalid over the aggregate of the errors.
        let e = list_params("watch=true&sendInitialEvents=true&resourceVersionMatch=Exact").unwrap_err();
        assert_eq!(
            e.message,
            r#"ListOptions.meta.k8s.io "" is invalid: [resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan, resourceVersionMatch: Unsupported value: "Exact": supported values: "NotOlderThan"]"#
        );
        let e = list_params("watch=true&sendInitialEvents=true").unwrap_err();
        assert_eq!(
            e.message,
            r#"ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"#
        );
        // Defaulting: a watch from "" or "0" naming neither option streams its initial events.
        for query in ["watch=true", "watch=true&resourceVersion=0"] {
            assert_eq!(list_params(query).unwrap().send_initial_events, Some(true), "{query}");
        }
        assert_eq!(list_params("watch=true&resourceVersion=5").unwrap().send_initial_events, None);
        assert_eq!(
            list_params("watch=true&sendInitialEvents=false&resourceVersionMatch=NotOlderThan")
                .unwrap()
                .send_initial_events,
            Some(false)
        );
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
