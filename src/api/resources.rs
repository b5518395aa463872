//! The `kliobackups` handlers the generated operations call (see [`super::operations`]): list
//! (with selectors and paging; a watch is handed to [`super::watch`]) and get, as JSON, YAML, a
//! server-side-printed Table or metadata only. Which snapshot they read is the resolver's
//! ([`super::resource_version`]). The catalog is read-only: every other method is a 405.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta};
use poem::{Request, Response};
use serde::Serialize;

use super::negotiate::{Format, Representation, Shape, RESOURCE_MEDIA_TYPES};
use super::params::{ContinueToken, Params};
use super::render_cache::Rendered;
use super::request::{info_of, RequestInfo};
use super::resource_version::Resolver;
use super::status::ApiError;
use super::table::{self, IncludeObject};
use super::AppState;
use crate::catalog::{Backup, Catalog, Snapshot};
use crate::routes::{group_version, RESOURCES};

pub(crate) fn plural() -> &'static str {
    RESOURCES[0].name
}

/// The representation the Accept header asked for (read once, with the request), or kube's 406.
pub(crate) fn representation(info: &RequestInfo) -> Result<Representation, ApiError> {
    info.negotiated.resource.ok_or_else(|| ApiError::not_acceptable(RESOURCE_MEDIA_TYPES))
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
fn encode(repr: Representation, json: impl Into<bytes::Bytes> + AsRef<[u8]>) -> Result<bytes::Bytes, ApiError> {
    Ok(match repr.format {
        Format::Json => json.into(),
        Format::Yaml => super::yaml::from_json(json.as_ref())?.into(),
    })
}

fn to_json<T: Serialize>(body: &T) -> Result<Vec<u8>, ApiError> {
    to_json_in(body, Vec::with_capacity(128))
}

/// Serializes into `out`, which should be about the size of the result: a buffer that grows by
/// doubling holds the old and the new copy at once while it moves, so a list rendered into a
/// buffer that is too small peaks at twice its size (8.6 MB of JSON for 10 000 backups: 17 MB).
/// Room reserved and never written is address space, not memory.
fn to_json_in<T: Serialize, W: std::io::Write>(body: &T, mut out: W) -> Result<W, ApiError> {
    serde_json::to_writer(&mut out, body).map_err(|e| ApiError::internal(format!("encoding JSON: {e}")))?;
    Ok(out)
}

/// Serializes a list of about `capacity` bytes (large ones into a mapping of their own, see
/// [`super::mapped`]).
fn list_to_json<T: Serialize>(body: &T, capacity: usize) -> Result<bytes::Bytes, ApiError> {
    Ok(to_json_in(body, body_buf(capacity)?)?.into_bytes())
}

fn body_buf(capacity: usize) -> Result<super::mapped::BodyBuf, ApiError> {
    super::mapped::BodyBuf::with_capacity(capacity).map_err(|e| ApiError::internal(format!("mapping memory: {e}")))
}

/// Room for the JSON of a list of `items` objects in `shape` (`include` for a Table's rows):
/// more than they take (a KlioBackup is under 1 KiB of JSON, a Table row with its object's
/// metadata 0.6 KiB).
fn list_capacity(shape: Shape, include: IncludeObject, items: usize) -> usize {
    let per_item = match (shape, include) {
        (Shape::Object, _) | (Shape::Table(_), IncludeObject::Metadata) => 1024,
        (Shape::Table(_), IncludeObject::Object) => 2048,
        (Shape::Table(_), IncludeObject::None) => 256,
        (Shape::Metadata { .. }, _) => 512,
    };
    4096 + items.saturating_mul(per_item)
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

fn state_of(req: &Request) -> Result<&Arc<AppState>, ApiError> {
    req.data::<Arc<AppState>>().ok_or_else(|| ApiError::internal("no application state"))
}

/// `list` (and watch): the operation's handler, once poem-openapi has read the parameters.
pub async fn list(req: &Request) -> Result<Response, ApiError> {
    let state = state_of(req)?;
    // The options the guard authorized, read once for both.
    let info = info_of(req);
    // kube-apiserver negotiates the media type before it reads the options (406 before 400).
    let repr = representation(&info)?;
    let params = info.params.as_ref().map_err(Clone::clone)?;
    let catalog = &state.catalog;
    if params.watch {
        return super::watch::serve(state, &info, repr).await;
    }
    let snapshot = Resolver::new(catalog).await?.read(params).await?;
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
    // At most this many objects, from `start` on.
    let items = (snapshot.backups.len() - start.min(snapshot.backups.len())).min(params.limit.unwrap_or(usize::MAX));
    let render = {
        let (snapshot, info) = (snapshot.clone(), info.clone());
        move |previous: Option<Rendered>| match (&info.params, previous) {
            (Ok(_), Some(Rendered { body, ages: Some(marks) })) => reage_list(&body, &marks, now),
            (Ok(params), _) => render_list(&snapshot, start, params, repr, now, whole),
            (Err(e), _) => Err(e.clone()),
        }
    };
    let render = |previous| render_elsewhere_if_large(items, move || render(previous));
    let rendered =
        if whole { state.renders.get_or_render(&snapshot, key, render).await? } else { render(None).await? };
    Ok(with_warnings(
        Response::builder().header(poem::http::header::CONTENT_TYPE, content_type).body(shared_body(rendered.body)),
        catalog,
    ))
}

/// A JSON Table `body` rendered with `marks`, its ages counted to `now` instead.
fn reage_list(body: &[u8], marks: &table::AgeMarks, now: i64) -> Result<Rendered, ApiError> {
    // Ages differ by a few bytes; room never written costs nothing.
    let out = body_buf(body.len() + body.len() / 8)?;
    let (out, ages) =
        table::reage(body, marks, now, out).map_err(|e| ApiError::internal(format!("writing the Table: {e}")))?;
    let body = out.into_bytes();
    Ok(Rendered { body, ages: Some(Arc::new(ages)) })
}

/// Lists of more objects than this are rendered on the blocking pool.
const RENDER_ELSEWHERE: usize = 500;

/// Runs a render of `items` objects: here when small, on the blocking pool when large. A
/// connection is served by one thread, which serves other connections too (see
/// [`crate::server`]): a render of 100 000 objects takes a few hundred milliseconds, which
/// those connections must not wait for.
async fn render_elsewhere_if_large<T: Send + 'static>(
    items: usize,
    render: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    if items <= RENDER_ELSEWHERE {
        return render();
    }
    tokio::task::spawn_blocking(render).await.map_err(|e| ApiError::internal(format!("rendering the list: {e}")))?
}

/// The body of a list (objects, Table or metadata only; JSON or YAML) from position `start` of
/// `snapshot`, Table ages counted to `now`; `kept`: the render is cached, and a JSON Table then
/// notes where its ages are (the next second's is made from it).
fn render_list(
    snapshot: &Snapshot,
    start: usize,
    params: &Params,
    repr: Representation,
    now: i64,
    kept: bool,
) -> Result<Rendered, ApiError> {
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
    let capacity = list_capacity(repr.shape, params.include, items.len());
    let json = match repr.shape {
        Shape::Object => list_to_json(
            &ListBody { api_version: group_version(), kind: RESOURCES[0].list_kind, metadata, items },
            capacity,
        )?,
        Shape::Table(v) if kept && repr.format == Format::Json => {
            return marked_table(v, items, metadata, params.include, now, capacity);
        }
        Shape::Table(v) => {
            list_to_json(&table::render_at(v, items.into_iter(), metadata, params.include, now), capacity)?
        }
        Shape::Metadata { version, .. } => list_to_json(
            &MetadataListBody {
                kind: "PartialObjectMetadataList",
                api_version: meta_api_version(version),
                metadata,
                items: MetadataItems { version, backups: items },
            },
            capacity,
        )?,
    };
    encode(repr, json).map(Rendered::from)
}

/// A JSON Table and where its ages are (see [`list_to_json`] for where it is written).
fn marked_table(
    version: &str,
    items: Vec<&Backup>,
    metadata: ListMeta,
    include: IncludeObject,
    now: i64,
    capacity: usize,
) -> Result<Rendered, ApiError> {
    let (out, ages) = table::render_marked(version, items.into_iter(), metadata, include, now, body_buf(capacity)?)
        .map_err(|e| ApiError::internal(format!("encoding JSON: {e}")))?;
    let body = out.into_bytes();
    Ok(Rendered { body, ages: Some(Arc::new(ages)) })
}

/// Names that cannot be any object's name are a client error; well-formed unknown names are 404.
pub(crate) fn validate_name(name: &str) -> Result<(), ApiError> {
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

/// `get`: the operation's handler, once poem-openapi has read the parameters.
pub async fn get(req: &Request, name: &str) -> Result<Response, ApiError> {
    let state = state_of(req)?;
    validate_name(name)?;
    let info = info_of(req);
    let repr = representation(&info)?;
    let params = info.params.as_ref().map_err(Clone::clone)?;
    let snapshot = Resolver::new(&state.catalog).await?.read(params).await?;
    let backup = snapshot.get(name).ok_or_else(|| ApiError::not_found(plural(), name))?;
    let json: bytes::Bytes = match repr.shape {
        Shape::Object => state.objects.json(backup, || to_json(&backup.to_kliobackup()))?,
        Shape::Table(v) => {
            let metadata =
                ListMeta { resource_version: Some(snapshot.resource_version_text.clone()), ..Default::default() };
            to_json(&table::render(v, std::iter::once(backup.as_ref()), metadata, params.include))?.into()
        }
        Shape::Metadata { version, list: false } => {
            to_json(&PartialObjectMetadata::new(version, backup.metadata()))?.into()
        }
        Shape::Metadata { list: true, .. } => return Err(not_acceptable_for("PartialObjectMetadataList", false)),
    };
    let resp =
        Response::builder().header(poem::http::header::CONTENT_TYPE, repr.content_type()).body(encode(repr, json)?);
    Ok(with_warnings(resp, &state.catalog))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn large_lists_are_rendered_off_the_connections_thread() {
        let here = std::thread::current().id();
        let thread_of = |items| {
            render_elsewhere_if_large(items, move || {
                Ok(bytes::Bytes::from(format!("{:?}", std::thread::current().id())))
            })
        };
        let small = thread_of(RENDER_ELSEWHERE).await.unwrap();
        let large = thread_of(RENDER_ELSEWHERE + 1).await.unwrap();
        assert_eq!(small, format!("{here:?}"), "a small list is rendered where it is asked for");
        assert_ne!(large, format!("{here:?}"), "a large one elsewhere");
    }

    #[test]
    fn names() {
        assert!(validate_name("cluster-example.backup-20251113093137").is_ok());
        assert!(validate_name("nonexistent").is_ok(), "well-formed unknown names are a 404, not a 400");
        for bad in ["", ".", "..", "a b", "a%2Fb", "ä", &"x".repeat(254)] {
            assert_eq!(validate_name(bad).unwrap_err().code, 400, "{bad:?}");
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
}
