//! The Klio catalog as the API serves it. One owner, [`Catalog`], holds the sources (every
//! configured Klio server, tier 1 and optionally tier 2), a background refresher that reads them
//! conditionally (`If-None-Match`) on an interval, and the published [`Snapshot`]s: the current one
//! and a short history for watches and `continue` tokens.
//!
//! Requests never wait on Klio when a snapshot exists. On a cold start, concurrent requests wait
//! for the one refresh in flight. When a source fails, its last good records keep being served and
//! [`Catalog::warnings`] says how stale they are and why.

pub mod client;
pub mod record;
pub mod reference_server;
pub mod snapshot;

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Result;
use tokio::sync::{watch, Notify};

use client::{ClientTls, Fetched, KlioClient};
use record::BackupRecord;
pub use snapshot::{Backup, Event, EventType, ResourceVersion, Snapshot, TIER_ANNOTATIONS};

/// Why the catalog could not be read. Callers branch on it: 503 versus 502.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogError {
    #[error("the Klio server {server} cannot be reached: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("the Klio server {server} did not answer with a catalog: {reason}")]
    BadResponse { server: String, reason: String },
}

/// One Klio server of the configuration.
pub struct ServerConfig {
    /// Unique; a label and `status.server` on its objects.
    pub name: String,
    pub tier1: KlioClient,
    pub tier2: Option<KlioClient>,
}

impl ServerConfig {
    /// Loads the certificates and builds the clients of one configured server.
    pub fn new(server: &crate::config::ResolvedServer) -> Result<Self> {
        let tls = ClientTls::load(server)?;
        let timeout = Duration::from_secs(server.timeout_seconds);
        Ok(Self {
            name: server.name.clone(),
            tier1: KlioClient::new(&server.url, &tls, timeout)?,
            tier2: server.tier2_url.as_deref().map(|u| KlioClient::new(u, &tls, timeout)).transpose()?,
        })
    }

    /// Every configured server.
    pub fn all_from_args(args: &crate::config::KlioClientArgs) -> Result<Vec<Self>> {
        args.resolve()?.iter().map(Self::new).collect()
    }
}

/// How the catalog refreshes and how much history it keeps.
#[derive(Debug, Clone)]
pub struct CatalogOptions {
    pub refresh_interval: Duration,
    /// Snapshots kept for watch replay and `continue` tokens (at least 1).
    pub history: usize,
}

impl CatalogOptions {
    pub fn from_args(args: &crate::config::KlioClientArgs) -> Self {
        Self { refresh_interval: Duration::from_secs(args.refresh_seconds), history: args.history }
    }
}

/// One source: a server's tier.
struct Source {
    server: Arc<str>,
    tier: usize,
    client: Arc<KlioClient>,
    state: Mutex<SourceState>,
}

#[derive(Default)]
struct SourceState {
    etag: Option<String>,
    revision: u64,
    /// Shared with the snapshots' objects: a record read again unchanged keeps its `Arc`.
    records: Vec<Arc<BackupRecord>>,
    read_once: bool,
    last_success: Option<SystemTime>,
    failing_since: Option<SystemTime>,
    last_error: Option<CatalogError>,
    attempts: u64,
}

impl Source {
    fn labels(&self) -> crate::metrics::SourceLabels {
        crate::metrics::SourceLabels { server: self.server.to_string(), tier: (self.tier + 1).to_string() }
    }
}

/// What a probe or a client should know about one source.
#[derive(Debug, Clone)]
pub struct SourceHealth {
    pub server: String,
    pub tier: usize,
    pub url: String,
    pub last_success: Option<SystemTime>,
    pub failing_since: Option<SystemTime>,
    pub last_error: Option<CatalogError>,
}

pub struct Catalog {
    sources: Vec<Source>,
    prefix_server: bool,
    options: CatalogOptions,
    /// The current snapshot; `None` until every source was tried once and one succeeded.
    current: watch::Sender<Option<Arc<Snapshot>>>,
    /// Counts finished refresh rounds, so cold-start waiters learn that a round failed.
    rounds: watch::Sender<u64>,
    history: RwLock<VecDeque<Arc<Snapshot>>>,
    refresh_now: Notify,
    /// Revisions of our own for servers that do not send one.
    fallback_revision: std::sync::atomic::AtomicU64,
    /// Some source's last read failed (then requests carry warnings).
    any_failing: AtomicBool,
}

impl Catalog {
    pub fn new(servers: Vec<ServerConfig>, options: CatalogOptions) -> Result<Self> {
        anyhow::ensure!(!servers.is_empty(), "no Klio server configured");
        let mut names = std::collections::HashSet::new();
        for s in &servers {
            anyhow::ensure!(names.insert(s.name.clone()), "the Klio server name {:?} is used twice", s.name);
        }
        let prefix_server = servers.len() > 1;
        let mut sources = vec![];
        for s in servers {
            let name: Arc<str> = s.name.into();
            sources.push(Source {
                server: name.clone(),
                tier: 0,
                client: Arc::new(s.tier1),
                state: Default::default(),
            });
            if let Some(t2) = s.tier2 {
                sources.push(Source { server: name, tier: 1, client: Arc::new(t2), state: Default::default() });
            }
        }
        Ok(Self {
            sources,
            prefix_server,
            // A watcher needs the revision it last sent and the next one.
            options: CatalogOptions { history: options.history.max(2), ..options },
            current: watch::channel(None).0,
            rounds: watch::channel(0).0,
            history: RwLock::new(VecDeque::new()),
            refresh_now: Notify::new(),
            fallback_revision: Default::default(),
            any_failing: AtomicBool::new(false),
        })
    }

    /// Number of sources (components of a resourceVersion).
    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    /// True once a snapshot exists.
    pub fn is_ready(&self) -> bool {
        self.current.borrow().is_some()
    }

    /// The current snapshot, if any, without waiting.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.current.borrow().clone()
    }

    /// Notified whenever a new snapshot is published.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.current.subscribe()
    }

    /// The current snapshot. On a cold start, waits for the refresh in flight (one upstream
    /// request per source, shared by every waiting request); fails when it fails.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, CatalogError> {
        if let Some(s) = self.latest() {
            return Ok(s);
        }
        let mut rounds = self.rounds.subscribe();
        let seen = *rounds.borrow_and_update();
        if seen > 0 {
            // A round already failed: ask for another and wait for its outcome.
            self.refresh_now.notify_one();
        }
        let deadline =
            self.sources.iter().map(|s| s.client.timeout()).max().unwrap_or_default() + Duration::from_secs(2);
        let _ = tokio::time::timeout(deadline, rounds.wait_for(|r| *r > seen)).await;
        self.latest().ok_or_else(|| self.first_error())
    }

    fn first_error(&self) -> CatalogError {
        self.sources.iter().find_map(|s| s.state.lock().expect("source state").last_error.clone()).unwrap_or_else(
            || CatalogError::Unreachable {
                server: self.sources[0].client.base_url().to_string(),
                reason: "no answer yet".into(),
            },
        )
    }

    /// The snapshot with exactly this resourceVersion, if still kept.
    pub fn at(&self, rv: &ResourceVersion) -> Option<Arc<Snapshot>> {
        self.history.read().expect("history").iter().find(|s| &s.resource_version == rv).cloned()
    }

    /// The snapshots published after `rv`, oldest first; `None` when `rv` is no longer kept.
    pub fn since(&self, rv: &ResourceVersion) -> Option<Vec<Arc<Snapshot>>> {
        let history = self.history.read().expect("history");
        let start = history.iter().position(|s| &s.resource_version == rv)?;
        Some(history.iter().skip(start + 1).cloned().collect())
    }

    /// Waits (bounded) until the catalog covers `rv`, asking for an early refresh.
    pub async fn wait_for(&self, rv: &ResourceVersion, limit: Duration) -> Option<Arc<Snapshot>> {
        let mut rx = self.subscribe();
        let covered = |s: &Option<Arc<Snapshot>>| s.as_ref().is_some_and(|s| s.resource_version.covers(rv));
        if !covered(&rx.borrow_and_update()) {
            self.refresh_now.notify_one();
        }
        let result = tokio::time::timeout(limit, rx.wait_for(covered)).await;
        result.ok().and_then(|r| r.ok().and_then(|s| s.clone()))
    }

    pub fn health(&self) -> Vec<SourceHealth> {
        self.sources
            .iter()
            .map(|s| {
                let st = s.state.lock().expect("source state");
                SourceHealth {
                    server: s.server.to_string(),
                    tier: s.tier + 1,
                    url: s.client.base_url().to_string(),
                    last_success: st.last_success,
                    failing_since: st.failing_since,
                    last_error: st.last_error.clone(),
                }
            })
            .collect()
    }

    /// Problems to tell clients about (as `Warning` headers): sources whose last read failed.
    pub fn warnings(&self) -> Vec<String> {
        // The common case, on every request: nothing to say.
        if !self.any_failing.load(std::sync::atomic::Ordering::Relaxed) {
            return vec![];
        }
        let now = SystemTime::now();
        let ago = |t: SystemTime| now.duration_since(t).map(|d| format!("{}s ago", d.as_secs())).unwrap_or_default();
        self.health()
            .into_iter()
            .filter_map(|h| {
                let err = h.last_error?;
                let stale = match h.last_success {
                    Some(t) => format!("serving its catalog as last read {}", ago(t)),
                    None => "its backups are missing".to_string(),
                };
                Some(format!(
                    "Klio server {} (tier {}) failing since {}: {err}; {stale}",
                    h.server,
                    h.tier,
                    h.failing_since.map(ago).unwrap_or_default()
                ))
            })
            .collect()
    }

    /// Refreshes forever: immediately, then every interval or when asked.
    pub async fn run_refresher(self: Arc<Self>) {
        loop {
            self.refresh().await;
            let _ = tokio::time::timeout(self.options.refresh_interval, self.refresh_now.notified()).await;
        }
    }

    /// One refresh round: every source read in parallel, a new snapshot published if anything changed.
    pub async fn refresh(&self) {
        let fetches = self.sources.iter().map(|source| {
            let client = source.client.clone();
            let etag = source.state.lock().expect("source state").etag.clone();
            let labels = source.labels();
            tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                let result = client.fetch_all(etag.as_deref());
                crate::metrics::metrics()
                    .fetch_duration
                    .get_or_create(&labels)
                    .observe(started.elapsed().as_secs_f64());
                result
            })
        });
        let results = futures_util::future::join_all(fetches).await;
        let mut changed = false;
        let now = SystemTime::now();
        for (source, result) in self.sources.iter().zip(results) {
            let result = result.unwrap_or_else(|e| {
                Err(CatalogError::BadResponse { server: source.client.base_url().to_string(), reason: e.to_string() })
            });
            let mut st = source.state.lock().expect("source state");
            st.attempts += 1;
            let outcome = match &result {
                Ok(Fetched::NotModified) => "not_modified",
                Ok(Fetched::Catalog { .. }) => "ok",
                Err(_) => "error",
            };
            let labels = source.labels();
            let m = crate::metrics::metrics();
            m.fetches
                .get_or_create(&crate::metrics::FetchLabels {
                    server: labels.server.clone(),
                    tier: labels.tier.clone(),
                    result: outcome.into(),
                })
                .inc();
            if outcome != "error" {
                let unix = now.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
                m.last_success.get_or_create(&labels).set(unix);
            }
            match result {
                Ok(Fetched::NotModified) if st.read_once => {
                    st.last_success = Some(now);
                    st.failing_since = None;
                    st.last_error = None;
                }
                Ok(Fetched::NotModified) => {
                    self.failed(
                        source,
                        &mut st,
                        now,
                        CatalogError::BadResponse {
                            server: source.client.base_url().to_string(),
                            reason: "304 Not Modified to an unconditional request".into(),
                        },
                    );
                }
                Ok(Fetched::Catalog { revision, etag, records }) => {
                    let records = reuse_unchanged(&st.records, records);
                    let same_records = st.read_once
                        && records.len() == st.records.len()
                        && records.iter().zip(&st.records).all(|(a, b)| Arc::ptr_eq(a, b));
                    let revision = match revision {
                        Some(r) => r,
                        // Our own revision, moved only when the content changes.
                        None if same_records => st.revision,
                        None => {
                            tracing::warn!(server = source.client.base_url(), "the Klio server sent no catalog revision; using one of our own, so replicas will not agree on resourceVersion");
                            self.fallback_revision.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
                        }
                    };
                    if revision < st.revision {
                        tracing::warn!(
                            server = source.client.base_url(),
                            revision,
                            previous = st.revision,
                            "the Klio catalog revision went back; keeping the newer one"
                        );
                    }
                    changed |= !same_records || revision != st.revision;
                    st.revision = st.revision.max(revision);
                    st.etag = etag;
                    st.records = records;
                    st.read_once = true;
                    st.last_success = Some(now);
                    st.failing_since = None;
                    st.last_error = None;
                }
                Err(err) => self.failed(source, &mut st, now, err),
            }
        }
        let any_read = self.sources.iter().any(|s| s.state.lock().expect("source state").read_once);
        if any_read && (changed || self.latest().is_none()) {
            self.publish();
            release_freed_memory();
        }
        let failing = self.sources.iter().any(|s| s.state.lock().expect("source state").last_error.is_some());
        self.any_failing.store(failing, std::sync::atomic::Ordering::Relaxed);
        self.rounds.send_modify(|r| *r += 1);
    }

    fn failed(&self, source: &Source, st: &mut SourceState, now: SystemTime, err: CatalogError) {
        if st.last_error.as_ref() != Some(&err) {
            tracing::warn!(server = %source.server, tier = source.tier + 1, error = %err, "reading the Klio catalog failed");
        }
        st.failing_since.get_or_insert(now);
        st.last_error = Some(err);
    }

    fn publish(&self) {
        let guards: Vec<_> = self.sources.iter().map(|s| s.state.lock().expect("source state")).collect();
        let rv = ResourceVersion(guards.iter().map(|g| g.revision).collect());
        let previous = self.latest();
        if previous.as_ref().is_some_and(|p| p.resource_version == rv) {
            return;
        }
        let records: Vec<snapshot::SourceRecords> = self
            .sources
            .iter()
            .zip(&guards)
            .map(|(s, g)| snapshot::SourceRecords { server: &s.server, tier: s.tier, records: &g.records })
            .collect();
        let snap = Arc::new(snapshot::build(previous.as_deref(), rv, &records, self.prefix_server));
        drop(records);
        drop(guards);
        tracing::info!(resource_version = %snap.resource_version, backups = snap.backups.len(), changes = snap.events.len(), "catalog snapshot published");
        {
            let mut history = self.history.write().expect("history");
            history.push_back(snap.clone());
            while history.len() > self.options.history {
                history.pop_front();
            }
        }
        let m = crate::metrics::metrics();
        m.backups.set(snap.backups.len() as i64);
        m.snapshots.inc();
        self.current.send_replace(Some(snap));
    }
}

/// The records just read, sharing the `Arc` of every record that did not change, so unchanged
/// objects of the snapshots and the source hold one copy between them.
fn reuse_unchanged(kept: &[Arc<BackupRecord>], fresh: Vec<BackupRecord>) -> Vec<Arc<BackupRecord>> {
    let by_identity: std::collections::HashMap<(&str, &str), &Arc<BackupRecord>> =
        kept.iter().map(|r| ((&*r.cluster_name, &*r.name), r)).collect();
    fresh
        .into_iter()
        .map(|r| match by_identity.get(&(&*r.cluster_name, &*r.name)) {
            Some(old) if ***old == r => Arc::clone(old),
            _ => Arc::new(r),
        })
        .collect()
}

/// Gives the memory freed after decoding a catalog (the response body, the previous records) back
/// to the system, so the resident size reflects what is kept, not the peak of a refresh.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
