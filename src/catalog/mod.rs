//! The Klio catalog as the API serves it. One owner, [`Catalog`], holds the sources (every
//! configured Klio server, tier 1 and optionally tier 2, each read by a Kopia
//! [`CatalogReader`]), a background refresher that reads them on an interval, and the published
//! [`Snapshot`]s: the current one and a short history for watches and `continue` tokens.
//!
//! Requests never wait on Klio when a snapshot exists. On a cold start, concurrent requests wait
//! for the one refresh in flight. When a source fails, its last good records keep being served and
//! [`Catalog::warnings`] says how stale they are and why.
//!
//! ## resourceVersion
//!
//! Kopia has no revision, so each source's component is derived from what every replica reading
//! the same server sees alike: the modification time (the Kopia server's clock, in milliseconds)
//! of the newest manifest it lists. A read that changes the catalog without adding a newer
//! manifest (a deletion) moves the component one past the last one. Replicas that observed the
//! same catalogs therefore print the same resourceVersions, and every replica converges on the
//! same one again with the next new backup.

pub mod snapshot;
mod sources;

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Result;
use tokio::sync::{watch, Notify};

use crate::upstream::kopia::reader::ReadOutcome;
use crate::upstream::kopia::session::{CallError, OpenError};
use crate::upstream::kopia::tls::ConnectError;
pub use snapshot::{Backup, Event, EventType, ObjectName, ResourceVersion, ServerName, Snapshot};
pub use sources::{KlioServer, ServerConfig, SourceHealth};
use sources::{Source, SourceState};

/// Why the catalog could not be read. Callers branch on it: 503 versus 502.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogError {
    /// No answer: no connection, the stream broke, or a timeout (a 503: retry later).
    #[error("the Klio server {server} cannot be reached: {reason}")]
    Unreachable {
        /// The source's URL, what an operator can check.
        server: String,
        /// The underlying error, for the message.
        reason: String,
    },
    /// The server answered, but not with a catalog: TLS handshake or certificate trouble, a
    /// refused session, a server error, a protocol violation (a 502: the upstream is at fault).
    #[error("the Klio server {server} did not serve its catalog: {reason}")]
    BadResponse {
        /// The source's URL.
        server: String,
        /// The underlying error, for the message.
        reason: String,
    },
}

impl CatalogError {
    fn from_call(server: &str, e: &CallError) -> Self {
        let server = server.to_string();
        let reason = e.to_string();
        match e {
            CallError::Open(open) => match open.root() {
                OpenError::Connect(ConnectError::Unreachable(_)) => Self::Unreachable { server, reason },
                _ => Self::BadResponse { server, reason },
            },
            CallError::Broken(_) | CallError::Timeout(_) => Self::Unreachable { server, reason },
            CallError::Server { .. } | CallError::Protocol(_) => Self::BadResponse { server, reason },
        }
    }

    /// The fixed word the read-error metric counts this under.
    fn reason(e: &CallError) -> &'static str {
        match e {
            CallError::Open(open) => match open.root() {
                OpenError::Files(_) => "certificate_files",
                OpenError::Connect(ConnectError::Unreachable(_)) => "unreachable",
                OpenError::Connect(ConnectError::Handshake(_)) => "tls_handshake",
                OpenError::Connect(ConnectError::UntrustedServer(_)) => "untrusted_server",
                OpenError::Refused { .. } => "session_refused",
                OpenError::Protocol(_) | OpenError::BackingOff { .. } => "protocol",
            },
            CallError::Broken(_) => "stream_broken",
            CallError::Timeout(_) => "timeout",
            CallError::Server { .. } => "server_error",
            CallError::Protocol(_) => "protocol",
        }
    }
}

/// How the catalog refreshes and how much history it keeps.
#[derive(Debug, Clone)]
pub struct CatalogOptions {
    /// Time between background refreshes (a request for a newer resourceVersion asks earlier).
    pub refresh_interval: Duration,
    /// Snapshots kept for watch replay and `continue` tokens (at least 1).
    pub history: usize,
}

/// The catalog shared by every request handler and the background refresher (behind an `Arc`):
/// the sources, their state and the published snapshots.
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
    /// Some source's last read failed (then requests carry warnings).
    any_failing: AtomicBool,
}

impl Catalog {
    /// Sets up the sources of the configured servers without reading them (the refresher
    /// does); fails on no server or a name used twice, which would make objects collide.
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
            for (tier, reader) in std::iter::once(s.tier1).chain(s.tier2).enumerate() {
                sources.push(Source {
                    server: name.clone(),
                    tier,
                    url: reader.session().url().to_string(),
                    identity: s.identity.clone(),
                    timeout: reader.session().timeout(),
                    reader: tokio::sync::Mutex::new(reader),
                    state: Default::default(),
                });
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
        // A cold read of a large catalog takes a few requests per backup, pipelined.
        let deadline = self.sources.iter().map(|s| s.timeout).max().unwrap_or_default() * 2 + Duration::from_secs(2);
        let _ = tokio::time::timeout(deadline, rounds.wait_for(|r| *r > seen)).await;
        self.latest().ok_or_else(|| self.first_error())
    }

    fn first_error(&self) -> CatalogError {
        self.sources.iter().find_map(|s| s.state.lock().expect("source state").last_error.clone()).unwrap_or_else(
            || CatalogError::Unreachable { server: self.sources[0].url.clone(), reason: "no answer yet".into() },
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

    /// Each source's state, for the readiness probe's checks and the clients' warnings.
    pub fn health(&self) -> Vec<SourceHealth> {
        self.sources
            .iter()
            .map(|s| {
                let st = s.state.lock().expect("source state");
                SourceHealth {
                    server: s.server.to_string(),
                    tier: s.tier + 1,
                    url: s.url.clone(),
                    identity: s.identity.clone(),
                    backups: st.backups.len(),
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
        let results = self.read_sources().await;
        let now = SystemTime::now();
        let mut changed = false;
        for (source, result) in self.sources.iter().zip(results) {
            changed |= self.record_read(source, result, now);
        }
        let any_read = self.sources.iter().any(|s| s.state.lock().expect("source state").read_once);
        if any_read && (changed || self.latest().is_none()) {
            self.publish();
        }
        // Even a read that finds nothing new receives every listed manifest (megabytes at 10 000
        // backups): what it decoded and dropped goes back, or the idle size drifts with each read.
        crate::memory::release_freed_memory();
        let failing = self.sources.iter().any(|s| s.state.lock().expect("source state").last_error.is_some());
        self.any_failing.store(failing, std::sync::atomic::Ordering::Relaxed);
        self.rounds.send_modify(|r| *r += 1);
    }

    /// Reads every source at once (each through its own session), timing each read.
    async fn read_sources(&self) -> Vec<Result<ReadOutcome, CallError>> {
        let reads = self.sources.iter().map(|source| async move {
            let mut reader = source.reader.lock().await;
            let started = std::time::Instant::now();
            let result = reader.read().await;
            crate::metrics::metrics()
                .fetch_duration
                .get_or_create(&source.labels())
                .observe(started.elapsed().as_secs_f64());
            result
        });
        futures_util::future::join_all(reads).await
    }

    /// Applies one source's read to its state, its metrics and its log; true when the backups
    /// it contributes changed.
    fn record_read(&self, source: &Source, result: Result<ReadOutcome, CallError>, now: SystemTime) -> bool {
        let mut st = source.state.lock().expect("source state");
        let labels = source.labels();
        let m = crate::metrics::metrics();
        let outcome = match &result {
            Ok(ReadOutcome::Unchanged) => "not_modified",
            Ok(ReadOutcome::Changed { .. }) => "ok",
            Err(_) => "error",
        };
        m.fetches
            .get_or_create(&crate::metrics::FetchLabels {
                server: labels.server.clone(),
                tier: labels.tier.clone(),
                result: outcome.into(),
            })
            .inc();
        match result {
            Ok(outcome) => {
                let unix = now.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
                m.last_success.get_or_create(&labels).set(unix);
                let changed = match outcome {
                    ReadOutcome::Changed { backups, newest_nanos } => st.accept(backups, newest_nanos),
                    ReadOutcome::Unchanged => false,
                };
                st.last_success = Some(now);
                st.failing_since = None;
                st.last_error = None;
                self.explain_empty(source, &mut st);
                changed
            }
            Err(err) => {
                m.read_errors
                    .get_or_create(&crate::metrics::ReadErrorLabels {
                        server: labels.server.clone(),
                        tier: labels.tier.clone(),
                        reason: CatalogError::reason(&err),
                    })
                    .inc();
                self.failed(source, &mut st, now, CatalogError::from_call(&source.url, &err));
                false
            }
        }
    }

    /// Logs, once per empty spell, why a server may show no backups: since Klio 0.0.13 the
    /// repository grants the reader nothing, and Kopia filters what it may not read silently.
    fn explain_empty(&self, source: &Source, st: &mut SourceState) {
        if !st.backups.is_empty() {
            st.told_empty = false;
            return;
        }
        if !st.told_empty {
            st.told_empty = true;
            tracing::warn!(
                server = %source.server,
                tier = source.tier + 1,
                url = %source.url,
                identity = %source.identity,
                "the Klio server shows no backups to {}. {}",
                source.identity,
                empty_catalog_hint(&source.identity)
            );
        }
    }

    fn failed(&self, source: &Source, st: &mut SourceState, now: SystemTime, err: CatalogError) {
        if st.last_error.as_ref() != Some(&err) {
            tracing::warn!(server = %source.server, tier = source.tier + 1, url = %source.url, error = %err, "reading the Klio catalog failed");
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
            .map(|(s, g)| snapshot::SourceRecords { server: &s.server, tier: s.tier, backups: &g.backups })
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

/// What to do when a Klio server shows no backups although it has some: grant the reader
/// access, as Klio 0.0.7 to 0.0.12 did by itself (see the troubleshooting page).
pub fn empty_catalog_hint(identity: &str) -> String {
    format!(
        "If its repository holds backups, {identity} is not allowed to see them (Klio 0.0.13 and later create \
         repositories without ACLs, and Kopia then hides other hosts' snapshots without an error). In the Klio \
         server's pod, for each tier: `kopia server acl enable` (once), then `kopia server acl add \
         --user={identity} --access=READ --target=type=snapshot`."
    )
}
