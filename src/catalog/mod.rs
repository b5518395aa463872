//! The Klio catalog as the API serves it: one owner ([`Catalog`]) of the tier clients and of the
//! last catalog read from each, producing immutable [`Snapshot`]s of `KlioBackup` objects.
//!
//! Each read is conditional (`If-None-Match`), so an unchanged catalog costs one `304` per tier
//! and no decoding; reads are serialized so concurrent requests share the work.

pub mod client;
pub mod record;
pub mod reference_server;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::model::{KlioBackup, KlioBackupSpec, KlioBackupStatus, TablespaceLayout};
use client::{ClientTls, Fetched, KlioClient};
use record::BackupRecord;

/// Why the catalog could not be read. Callers branch on it: 503 versus 502.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CatalogError {
    #[error("the Klio server {server} cannot be reached: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("the Klio server {server} did not answer with a catalog: {reason}")]
    BadResponse { server: String, reason: String },
}

/// One consistent view of the catalog.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The `resourceVersion` of lists read from this snapshot: the upstream revision(s).
    pub resource_version: String,
    /// Sorted by `metadata.name`.
    pub backups: Vec<KlioBackup>,
    /// Problems that did not prevent serving (a tier-2 server down, ...), sent as `Warning` headers.
    pub warnings: Vec<String>,
}

impl Snapshot {
    pub fn get(&self, name: &str) -> Option<&KlioBackup> {
        self.backups
            .binary_search_by(|b| b.metadata.name.as_deref().unwrap_or_default().cmp(name))
            .ok()
            .map(|i| &self.backups[i])
    }
}

/// The annotation marking the tier a backup was found on.
pub const TIER_ANNOTATIONS: [&str; 2] = ["klio.io/tier1", "klio.io/tier2"];

struct Tier {
    index: usize,
    client: Arc<KlioClient>,
}

#[derive(Clone)]
struct TierData {
    etag: Option<String>,
    revision: u64,
    records: Arc<Vec<BackupRecord>>,
}

#[derive(Default)]
struct State {
    tiers: Vec<Option<TierData>>,
    snapshot: Option<Arc<Snapshot>>,
}

pub struct Catalog {
    tiers: Vec<Tier>,
    state: tokio::sync::Mutex<State>,
    ready: AtomicBool,
    /// Revisions of our own for servers that do not send one.
    fallback_revision: AtomicU64,
}

impl Catalog {
    pub fn new(args: &crate::config::KlioClientArgs) -> Result<Self> {
        args.validate()?;
        let tls = ClientTls::load(args)?;
        let timeout = Duration::from_secs(args.timeout_seconds);
        let mut tiers = vec![Tier { index: 0, client: Arc::new(KlioClient::new(&args.url, &tls, timeout)?) }];
        if let Some(url) = &args.tier2_url {
            tiers.push(Tier { index: 1, client: Arc::new(KlioClient::new(url, &tls, timeout)?) });
        }
        let state = State { tiers: vec![None; tiers.len()], snapshot: None };
        Ok(Self {
            tiers,
            state: tokio::sync::Mutex::new(state),
            ready: AtomicBool::new(false),
            fallback_revision: AtomicU64::new(0),
        })
    }

    /// True once the catalog has been read successfully.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Reads the catalog (conditionally) and returns the current snapshot.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, CatalogError> {
        let mut state = self.state.lock().await;
        let fetches = self.tiers.iter().map(|tier| {
            let client = tier.client.clone();
            let etag = state.tiers[tier.index].as_ref().and_then(|t| t.etag.clone());
            tokio::task::spawn_blocking(move || client.fetch_all(etag.as_deref()))
        });
        let results = futures_util::future::join_all(fetches).await;

        let mut changed = state.snapshot.is_none();
        let mut warnings = vec![];
        for (tier, result) in self.tiers.iter().zip(results) {
            let result = result.unwrap_or_else(|join_err| {
                Err(CatalogError::BadResponse {
                    server: tier.client.base_url().to_string(),
                    reason: join_err.to_string(),
                })
            });
            match result {
                Ok(Fetched::NotModified) if state.tiers[tier.index].is_some() => {}
                Ok(Fetched::NotModified) => {
                    // A 304 to a request we made without an ETag: the server is confused.
                    let err = CatalogError::BadResponse {
                        server: tier.client.base_url().to_string(),
                        reason: "304 Not Modified to an unconditional request".into(),
                    };
                    if tier.index == 0 {
                        return Err(err);
                    }
                    warnings.push(err.to_string());
                }
                Ok(Fetched::Catalog { revision, etag, records }) => {
                    let revision = revision.unwrap_or_else(|| {
                        tracing::warn!(server = tier.client.base_url(), "the Klio server sent no catalog revision; using one of our own, so replicas will not agree on resourceVersion");
                        self.fallback_revision.fetch_add(1, Ordering::Relaxed) + 1
                    });
                    state.tiers[tier.index] = Some(TierData { etag, revision, records: Arc::new(records) });
                    changed = true;
                }
                Err(err) if tier.index == 0 => {
                    tracing::warn!(error = %err, "reading the tier-1 catalog failed");
                    return Err(err);
                }
                Err(err) => {
                    // Tier 2 down is not a reason to hide tier 1; say so instead.
                    tracing::warn!(error = %err, "reading the tier-2 catalog failed; serving tier 1 and the last tier-2 catalog read");
                    warnings.push(format!("tier-2 backups may be missing or stale: {err}"));
                }
            }
        }
        let snapshot = match (&state.snapshot, changed) {
            (Some(snap), false) if snap.warnings == warnings => snap.clone(),
            _ => Arc::new(build_snapshot(&state.tiers, warnings)),
        };
        state.snapshot = Some(snapshot.clone());
        self.ready.store(true, Ordering::Relaxed);
        Ok(snapshot)
    }

    /// Reads the catalog until it succeeds once (readiness), backing off up to 5 s between tries.
    pub async fn prime(self: Arc<Self>) {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.snapshot().await {
                Ok(snap) => {
                    tracing::info!(backups = snap.backups.len(), resource_version = %snap.resource_version, "catalog read; ready");
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "catalog not readable yet")
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

fn build_snapshot(tiers: &[Option<TierData>], warnings: Vec<String>) -> Snapshot {
    // (clusterName, backupID) -> (record, tiers holding it); the first tier's record wins.
    let mut merged: BTreeMap<(&str, &str), (&BackupRecord, [bool; 2])> = BTreeMap::new();
    for (index, tier) in tiers.iter().enumerate() {
        for record in tier.iter().flat_map(|t| t.records.iter()) {
            merged.entry((&record.cluster_name, &record.name)).or_insert((record, [false; 2])).1[index] = true;
        }
    }
    let mut backups: Vec<KlioBackup> =
        merged.values().filter_map(|(record, present)| to_kliobackup(record, *present)).collect();
    backups.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    backups.dedup_by(|a, b| a.metadata.name == b.metadata.name);
    let resource_version = tiers
        .iter()
        .map(|t| t.as_ref().map_or("0".to_string(), |t| t.revision.to_string()))
        .collect::<Vec<_>>()
        .join(".");
    Snapshot { resource_version, backups, warnings }
}

fn time(seconds: i64) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    jiff::Timestamp::from_second(seconds).ok().map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time)
}

/// The mapping of `klio-catalog.md` §2. `None` (logged) for a record that cannot be shown.
pub fn to_kliobackup(record: &BackupRecord, tiers: [bool; 2]) -> Option<KlioBackup> {
    let (Some(started), Some(stopped)) = (time(record.started_at), time(record.stopped_at)) else {
        tracing::warn!(cluster = %record.cluster_name, backup = %record.name, "skipping a backup record with an impossible timestamp");
        return None;
    };
    let mut annotations = record.annotations.clone().unwrap_or_default();
    for (marker, present) in TIER_ANNOTATIONS.iter().zip(tiers) {
        if present {
            annotations.insert(marker.to_string(), "present".into());
        }
    }
    let tablespaces: Vec<TablespaceLayout> = record
        .tablespaces
        .iter()
        .flatten()
        .map(|t| TablespaceLayout {
            name: t.name.clone(),
            oid: Some(t.oid.clone()).filter(|s| !s.is_empty()),
            path: Some(t.path.clone()).filter(|s| !s.is_empty()),
            annotations: t.annotations.clone().filter(|a| !a.is_empty()),
        })
        .collect();
    Some(KlioBackup {
        api_version: crate::routes::GROUP_VERSION.to_string(),
        kind: "KlioBackup".to_string(),
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(format!("{}.{}", record.cluster_name, record.name)),
            ..Default::default()
        },
        spec: KlioBackupSpec { backup_id: record.name.clone(), cluster_name: record.cluster_name.clone() },
        status: Some(KlioBackupStatus {
            annotations: Some(annotations).filter(|a| !a.is_empty()),
            start_lsn: Some(record.start_lsn),
            end_lsn: Some(record.end_lsn),
            start_wal: Some(record.start_wal.clone()),
            end_wal: Some(record.end_wal.clone()),
            started_at: Some(started),
            stopped_at: Some(stopped),
            tablespaces: Some(tablespaces).filter(|t| !t.is_empty()),
        }),
    })
}
