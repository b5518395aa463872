//! The reference Klio catalog server: the catalog API v1 contract over a directory of backup
//! metadata files (one JSON record per `*.json` file, subfolders allowed), mutual TLS required.
//! The demo and the tests read it; a Klio installation without the contract can run it as a
//! gateway beside its repository dump.
//!
//! The revision changes whenever the content changes (a digest of every record file and its
//! path, so copies that keep old modification times and changes within one millisecond count;
//! a file is read again when its size, inode or times moved, or when it changed within a second
//! of the last read):
//! it becomes the current time in milliseconds, or the previous revision plus one if that is
//! larger. So it only grows, also across restarts (the clock moves on), as the contract asks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// What the last scan found, so that a request reads only the files that changed and an
/// unchanged catalog is not rendered again.
#[derive(Default)]
struct ScanCache {
    files: HashMap<PathBuf, CachedFile>,
    digest: [u8; 32],
    revision: u64,
    body: Option<bytes::Bytes>,
}

struct CachedFile {
    stamp: FileStamp,
    /// When the file was last read: a file changed within a second of that is read again (file
    /// times are coarse; a change in the same tick would otherwise go unseen).
    read_at: SystemTime,
    /// Of the file's bytes.
    digest: [u8; 32],
    record: Option<Arc<Record>>,
}

/// What changes whenever a file's content does: a rewrite moves ctime (which nobody can set
/// back), a copy or rename brings another inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            len: m.len(),
            dev: m.dev(),
            ino: m.ino(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    fn changed_before(&self, t: SystemTime) -> bool {
        let ctime = UNIX_EPOCH + Duration::new(self.ctime.0.max(0) as u64, self.ctime.1.clamp(0, 999_999_999) as u32);
        ctime + Duration::from_secs(1) < t
    }
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
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "unreadable record file");
                    continue;
                }
            };
            let stamp = FileStamp::of(&meta);
            let entry = match cache.files.remove(&path) {
                Some(kept) if kept.stamp == stamp && stamp.changed_before(kept.read_at) => kept,
                kept => {
                    let read_at = SystemTime::now();
                    let text = match std::fs::read_to_string(&path) {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::warn!(file = %path.display(), error = %e, "unreadable record file");
                            continue;
                        }
                    };
                    let file_digest = openssl::sha::sha256(text.as_bytes());
                    let record = match kept {
                        Some(k) if k.digest == file_digest => k.record,
                        _ => decode(&path, &text),
                    };
                    CachedFile { stamp, read_at, digest: file_digest, record }
                }
            };
            digest.update(path.to_string_lossy().as_bytes());
            digest.update(&[0]);
            digest.update(&entry.digest);
            records.extend(entry.record.clone());
            seen.insert(path, entry);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_counts_even_in_place_within_one_tick() {
        let dir = std::env::temp_dir().join(format!("klio-reference-{}-{:?}", std::process::id(), SystemTime::now()));
        std::fs::create_dir_all(dir.join("pg")).unwrap();
        let file = dir.join("pg/b1.json");
        let record = |lsn: u32| format!(r#"{{"clusterName":"pg","name":"b1","endLsn":{lsn}}}"#);
        std::fs::write(&file, record(1000)).unwrap();
        let catalog = CatalogDir { dir: dir.clone(), cache: Default::default() };
        let first = catalog.listing().unwrap();
        assert_eq!(first.records[0].raw.get(), record(1000));
        assert_eq!(catalog.listing().unwrap().revision, first.revision, "nothing changed");
        // Same size, same inode, right away: the times may not move at all.
        std::fs::write(&file, record(2000)).unwrap();
        let second = catalog.listing().unwrap();
        assert_eq!(second.records[0].raw.get(), record(2000));
        assert!(second.revision > first.revision);
        std::fs::remove_file(&file).unwrap();
        let third = catalog.listing().unwrap();
        assert!(third.records.is_empty() && third.revision > second.revision);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
