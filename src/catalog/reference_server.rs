//! The reference Klio catalog server: the catalog API v1 contract over a directory of backup
//! metadata files (one JSON record per `*.json` file, subfolders allowed), mutual TLS required.
//! The demo and the tests read it; a Klio installation without the contract can run it as a
//! gateway beside its repository dump.
//!
//! The revision changes whenever the content changes (a digest of every record file and its
//! path, so copies that keep old modification times and changes within one millisecond count):
//! it becomes the current time in milliseconds, or the previous revision plus one if that is
//! larger. So it only grows, also across restarts (the clock moves on), as the contract asks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use anyhow::Result;
use poem::http::StatusCode;
use poem::web::{Data, Path as PathParam, Query};
use poem::{handler, EndpointExt, IntoResponse, Response, Route};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::CatalogServeArgs;

/// One record file, decoded.
struct Record {
    cluster_name: String,
    name: String,
    raw: Box<RawValue>,
}

/// The directory listing at one moment.
struct Listing {
    revision: u64,
    /// Sorted by cluster, then name.
    records: Vec<Arc<Record>>,
    /// The unfiltered list body of this revision, once rendered.
    body: Option<bytes::Bytes>,
}

#[derive(Deserialize)]
struct Identity {
    #[serde(default, rename = "clusterName")]
    cluster_name: String,
    #[serde(default)]
    name: String,
}

/// What the last scan found: every file is read on every request (so any change counts), but
/// one whose text did not change is not decoded again, and an unchanged catalog is not
/// rendered again.
#[derive(Default)]
struct ScanCache {
    files: HashMap<PathBuf, (String, Option<Arc<Record>>)>,
    digest: [u8; 32],
    revision: u64,
    body: Option<bytes::Bytes>,
}

fn record_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = vec![];
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn decode(path: &Path, text: &str) -> Option<Arc<Record>> {
    match serde_json::from_str::<Box<RawValue>>(text) {
        Ok(raw) => {
            let id: Identity = serde_json::from_str(raw.get())
                .unwrap_or(Identity { cluster_name: String::new(), name: String::new() });
            Some(Arc::new(Record { cluster_name: id.cluster_name, name: id.name, raw }))
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "record file is not JSON; not served");
            None
        }
    }
}

struct CatalogDir {
    dir: PathBuf,
    cache: std::sync::Mutex<ScanCache>,
}

impl CatalogDir {
    fn listing(&self) -> std::io::Result<Listing> {
        let files = record_files(&self.dir)?;
        let mut cache = self.cache.lock().expect("catalog scan cache");
        let mut digest = openssl::sha::Sha256::new();
        let mut seen = HashMap::with_capacity(files.len());
        let mut records = vec![];
        for path in files {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "unreadable record file");
                    continue;
                }
            };
            digest.update(path.to_string_lossy().as_bytes());
            digest.update(&[0]);
            digest.update(text.as_bytes());
            digest.update(&[0]);
            let record = match cache.files.remove(&path) {
                Some((old, record)) if old == text => record,
                _ => decode(&path, &text),
            };
            records.extend(record.clone());
            seen.insert(path, (text, record));
        }
        records.sort_by(|a, b| (&a.cluster_name, &a.name).cmp(&(&b.cluster_name, &b.name)));
        cache.files = seen;
        let digest = digest.finish();
        if cache.digest != digest || cache.revision == 0 {
            let now = std::time::SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            cache.revision = now.max(cache.revision + 1);
            cache.digest = digest;
            cache.body = None;
        }
        Ok(Listing { revision: cache.revision, records, body: cache.body.clone() })
    }

    /// Keeps the unfiltered body of `revision`, if that is still the current one.
    fn keep_body(&self, revision: u64, body: bytes::Bytes) {
        let mut cache = self.cache.lock().expect("catalog scan cache");
        if cache.revision == revision {
            cache.body = Some(body);
        }
    }
}

async fn listing(dir: &Arc<CatalogDir>) -> Result<Listing, Response> {
    let dir = dir.clone();
    tokio::task::spawn_blocking(move || dir.listing())
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &format!("reading the catalog directory: {e}")))
}

fn error(status: StatusCode, message: &str) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(serde_json::json!({ "error": message }).to_string())
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(rename = "clusterName")]
    cluster_name: Option<String>,
}

#[handler]
async fn list(req: &poem::Request, Data(dir): Data<&Arc<CatalogDir>>, Query(q): Query<ListQuery>) -> Response {
    let listing = match listing(dir).await {
        Ok(l) => l,
        Err(resp) => return resp,
    };
    // The ETag covers the whole catalog; filtered answers are not cached.
    let etag = q.cluster_name.is_none().then(|| format!("\"{}\"", listing.revision));
    if let Some(etag) = &etag {
        if req.header("if-none-match") == Some(etag.as_str()) {
            return StatusCode::NOT_MODIFIED.with_header("ETag", etag.clone()).into_response();
        }
    }
    if let (None, Some(body)) = (&q.cluster_name, &listing.body) {
        return Response::builder()
            .content_type("application/json")
            .header("ETag", etag.unwrap_or_default())
            .body(body.clone());
    }
    let items: Vec<&RawValue> = listing
        .records
        .iter()
        .filter(|r| q.cluster_name.as_ref().is_none_or(|c| *c == r.cluster_name))
        .map(|r| r.raw.as_ref())
        .collect();
    let body = bytes::Bytes::from(serde_json::json!({ "revision": listing.revision, "items": items }).to_string());
    let mut resp = Response::builder().content_type("application/json");
    if let Some(etag) = etag {
        resp = resp.header("ETag", etag);
        dir.keep_body(listing.revision, body.clone());
    }
    resp.body(body)
}

#[handler]
async fn get(Data(dir): Data<&Arc<CatalogDir>>, PathParam((cluster, name)): PathParam<(String, String)>) -> Response {
    let listing = match listing(dir).await {
        Ok(l) => l,
        Err(resp) => return resp,
    };
    match listing.records.iter().find(|r| r.cluster_name == cluster && r.name == name) {
        Some(r) => Response::builder().content_type("application/json").body(r.raw.get().to_string()),
        None => error(StatusCode::NOT_FOUND, &format!("backup {name} of cluster {cluster} not found")),
    }
}

/// The catalog server's routes over `dir`.
pub fn app(dir: PathBuf) -> impl poem::Endpoint {
    Route::new()
        .at("/catalog/v1/backups", poem::get(list))
        .at("/catalog/v1/backups/:cluster/:name", poem::get(get))
        .data(Arc::new(CatalogDir { dir, cache: Default::default() }))
        .catch_error(|_: poem::error::NotFoundError| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .catch_error(|_: poem::error::MethodNotAllowedError| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "the catalog is read-only")
        })
}

/// `klio-api catalog serve`.
pub async fn run(args: CatalogServeArgs, shutdown: tokio::sync::watch::Receiver<bool>) -> Result<()> {
    let server = bind(&args).await?;
    tracing::info!(address = %server.local_addr(), dir = %args.dir.display(), "catalog server listening");
    server.serve(app(args.dir.clone()), shutdown).await
}

/// Binds the catalog server (client certificates required).
pub async fn bind(args: &CatalogServeArgs) -> Result<crate::server::HttpsServer> {
    if !args.dir.is_dir() {
        anyhow::bail!("--dir {} is not a directory", args.dir.display());
    }
    let chain = crate::tls::load_certs(&args.tls_cert_file)?;
    let key = crate::tls::load_key(&args.tls_private_key_file)?;
    let cas = crate::tls::load_certs(&args.client_ca_file)?;
    let acceptor = crate::tls::acceptor(&chain, &key, crate::tls::ClientAuth::Required(cas))?;
    crate::server::HttpsServer::bind(args.listen, acceptor).await
}
