//! The catalog of one Klio server's tier, read incrementally over its Kopia session.
//!
//! A read lists Klio's snapshots with one `FindManifests` (`type: snapshot`; the kind, metadata,
//! PGDATA, pg_control or tablespace, is each entry's `tag:klio.io/content` label), labels only. Everything behind a manifest ID is immutable, so only
//! metadata manifests never seen before are read: `GetManifest`, then `GetContent` of the root
//! directory, then of `metadata.json` (three round trips, pipelined across backups); a manifest
//! whose root directory is already known costs one. IDs that disappear are deletions.
//!
//! Per backup (cluster = the `hostname` label, name = `tag:klio.io/tag`) the newest metadata
//! snapshot that can be read wins; the data snapshots of the same backup only contribute their
//! IDs. A backup that cannot be read is skipped, logged once and counted, and never hides the
//! others; a failure of the session itself fails the whole read (the catalog then keeps
//! serving what it had).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt;

use super::ids::ManifestId;
use super::proto::{ListedManifest, ListedManifestHead};
use super::session::{CallError, Session};
use super::snapshot_read::read_metadata;
pub use super::snapshot_read::{RootKey, Skip};
use super::{labels, SnapshotKind};
use crate::metrics::{metrics, ReadErrorLabels, SourceLabels};
use crate::upstream::record::{BackupRecord, Interner};
use prost::Message;

/// One backup as one tier holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceBackup {
    /// The decoded `metadata.json`, its cluster and name taken from the snapshot's labels (in
    /// the same allocation: one per backup and tier).
    pub record: BackupRecord,
    /// The metadata snapshot it was read from.
    pub manifest: ManifestId,
    /// When that manifest was written (the server's clock, nanoseconds since the epoch): when the
    /// backup entered this tier's catalog.
    pub written_nanos: i64,
    /// Its root directory object (a digest of the ID): a manifest saved again over the same
    /// directory is not read again.
    pub root: RootKey,
    /// The IDs of the backup's data snapshots on this tier.
    pub snapshots: SnapshotIds,
}

/// The manifest IDs of a backup's data snapshots on one tier (what `kopia restore` needs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotIds {
    /// The data directory's snapshot.
    pub pgdata: Option<ManifestId>,
    /// `pg_control`'s snapshot.
    pub controldata: Option<ManifestId>,
    /// By tablespace name, sorted.
    pub tablespaces: Box<[(Box<str>, ManifestId)]>,
}

/// What a read found.
pub enum ReadOutcome {
    /// The same snapshots as the last read: nothing to do.
    Unchanged,
    /// The listings changed (or a backup is being retried): every backup as it now is.
    Changed {
        /// Sorted by (cluster, name). Entries equal to the last read's are the same `Arc`.
        backups: Vec<Arc<SourceBackup>>,
        /// The newest modification time among every listed manifest, 0 when none.
        newest_nanos: i64,
    },
}

/// A metadata snapshot's record during a read: an entry read before, or a record read now.
#[derive(Clone)]
pub(super) enum Known {
    Kept(Arc<SourceBackup>),
    Read(Arc<BackupRecord>),
}

impl Known {
    pub(super) fn record(&self) -> &BackupRecord {
        match self {
            Self::Kept(backup) => &backup.record,
            Self::Read(record) => record,
        }
    }
}

/// A FindManifests entry of a Klio snapshot.
struct Listed {
    id: ManifestId,
    mod_time: i64,
    cluster: Box<str>,
    name: Box<str>,
    tablespace: Option<Box<str>>,
}

/// The incremental reader of one source.
pub struct CatalogReader {
    session: Session,
    labels: SourceLabels,
    window: usize,
    /// Metadata manifests that cannot be read for a reason tied to the manifest itself (logged
    /// and counted once, never read again). What was read is in `last_output`.
    skipped: HashSet<ManifestId>,
    /// The listings of the last complete read: the same again means nothing changed.
    last_fingerprint: Option<Fingerprint>,
    /// A backup could not be read for a passing reason: read again even if nothing changed.
    retry: bool,
    last_output: Vec<Arc<SourceBackup>>,
    /// Listed entries already reported as unusable, and (cluster, name) pairs already reported
    /// as having several metadata snapshots; both bounded by the current listing.
    reported_entries: HashSet<ManifestId>,
    reported_duplicates: HashSet<(Box<str>, Box<str>)>,
    /// Manifests failing for a passing reason, with the reason last reported.
    reported_transient: HashMap<ManifestId, Skip>,
    interner: Interner,
}

impl CatalogReader {
    /// `labels` name the source in metrics; `window` bounds the backups read at once (the
    /// session pipelines that many requests).
    pub fn new(session: Session, labels: SourceLabels, window: usize) -> Self {
        Self {
            session,
            labels,
            window: window.max(1),
            skipped: HashSet::new(),
            last_fingerprint: None,
            retry: false,
            last_output: vec![],
            reported_entries: HashSet::new(),
            reported_duplicates: HashSet::new(),
            reported_transient: HashMap::new(),
            interner: Interner::default(),
        }
    }

    /// The session read through (its URL and timeout describe the source).
    pub fn session(&self) -> &Session {
        &self.session
    }

    fn count(&self, reason: &'static str) {
        let labels = ReadErrorLabels { server: self.labels.server.clone(), tier: self.labels.tier.clone(), reason };
        metrics().read_errors.get_or_create(&labels).inc();
    }

    /// One read: the listings, then whatever is new.
    pub async fn read(&mut self) -> Result<ReadOutcome, CallError> {
        let listing = self.session.find_manifests(&[(labels::TYPE, labels::SNAPSHOT)]).await?;

        // Most reads find nothing new: compare a fingerprint of the listing before building
        // anything from it (an ID's labels never change, so the IDs and times say it all).
        let mut fingerprint = Fingerprint::default();
        for raw in &listing {
            match ListedManifestHead::decode(raw.clone()) {
                Ok(head) => fingerprint.add(&head.id, head.mod_time_nanos),
                Err(_) => fingerprint.add(raw, 0),
            }
        }
        if listing.is_empty() {
            // Perhaps the reader may not see the backups yet: Kopia authorizes a session once,
            // so only a new session sees access granted since.
            self.session.reopen().await;
        }
        if self.last_fingerprint == Some(fingerprint) && !self.retry {
            return Ok(ReadOutcome::Unchanged);
        }

        let mut by_kind: BTreeMap<SnapshotKind, Vec<Listed>> = BTreeMap::new();
        let mut usable_ids = HashSet::new();
        for raw in listing {
            let entry = match ListedManifest::decode(raw) {
                Ok(e) => e,
                Err(e) => {
                    self.count("malformed_manifest");
                    tracing::warn!(server = %self.session.url(), tier = %self.labels.tier, error = %e, "ignoring a listed manifest that does not decode");
                    continue;
                }
            };
            let id = ManifestId::from_hex(&entry.id);
            usable_ids.extend(id);
            // Snapshots that are not Klio's (another content label, or none) are not ours to list.
            let Some(kind) = entry_kind(&entry) else { continue };
            match self.listed(kind, &entry) {
                Ok(l) => by_kind.entry(kind).or_default().push(l),
                Err(why) => {
                    if id.is_none_or(|id| self.reported_entries.insert(id)) {
                        self.count("malformed_manifest");
                        let manifest = String::from_utf8_lossy(&entry.id[..entry.id.len().min(64)]).into_owned();
                        tracing::warn!(server = %self.session.url(), tier = %self.labels.tier, manifest, reason = %why, "ignoring a listed snapshot");
                    }
                }
            }
        }
        self.reported_entries.retain(|id| usable_ids.contains(id));
        let metadata = by_kind.remove(&SnapshotKind::Metadata).unwrap_or_default();
        self.skipped.retain(|id| usable_ids.contains(id));
        self.reported_transient.retain(|id, _| usable_ids.contains(id));
        let mut groups: BTreeMap<(Box<str>, Box<str>), Vec<Listed>> = BTreeMap::new();
        for l in metadata {
            groups.entry((l.cluster.clone(), l.name.clone())).or_default().push(l);
        }
        for candidates in groups.values_mut() {
            // Newest first; equal times by ID, so every replica picks the same.
            candidates.sort_by_key(|c| std::cmp::Reverse((c.mod_time, c.id)));
        }
        self.report_duplicates(&groups);

        // What was read before (immutable: never read again), for this read only.
        let mut read: HashMap<ManifestId, (RootKey, Known)> =
            self.last_output.iter().map(|b| (b.manifest, (b.root, Known::Kept(b.clone())))).collect();
        let mut by_root: HashMap<RootKey, Known> =
            self.last_output.iter().map(|b| (b.root, Known::Kept(b.clone()))).collect();

        // Read the first candidate of each backup that is not settled, until every backup has a
        // readable candidate, has none left, or failed for a passing reason.
        let mut transient: HashSet<ManifestId> = HashSet::new();
        loop {
            let wanted: Vec<(ManifestId, Box<str>, Box<str>)> = groups
                .values()
                .filter_map(|candidates| {
                    candidates
                        .iter()
                        .find(|c| !self.skipped.contains(&c.id))
                        .filter(|c| !read.contains_key(&c.id) && !transient.contains(&c.id))
                        .map(|c| (c.id, c.cluster.clone(), c.name.clone()))
                })
                .collect();
            if wanted.is_empty() {
                break;
            }
            let (roots, session) = (&by_root, &self.session);
            let results: Vec<_> = futures_util::stream::iter(wanted)
                .map(|(id, cluster, name)| async move {
                    let outcome = read_metadata(session, roots, &id).await;
                    (id, cluster, name, outcome)
                })
                .buffer_unordered(self.window)
                .collect()
                .await;
            for (id, cluster, name, outcome) in results {
                match outcome? {
                    Ok((root, record)) => {
                        let record = Known::Read(self.settle_record(record, &cluster, &name));
                        self.reported_transient.remove(&id);
                        by_root.insert(root, record.clone());
                        read.insert(id, (root, record));
                    }
                    Err(skip) => self.skipped(id, &cluster, &name, skip, &mut transient),
                }
            }
        }
        drop(by_root);

        let data = DataSnapshots::index(by_kind);
        let previous: HashMap<(&str, &str), &Arc<SourceBackup>> =
            self.last_output.iter().map(|b| ((&*b.record.cluster_name, &*b.record.name), b)).collect();
        let mut backups = Vec::with_capacity(groups.len());
        for ((cluster, name), candidates) in &groups {
            let winner = candidates.iter().find_map(|c| read.get(&c.id).map(|(root, record)| (c, root, record)));
            let pending = candidates.iter().any(|c| transient.contains(&c.id));
            let fresh = match winner {
                // A newer candidate that failed for a passing reason does not replace what was
                // served: the backup stays as it was until that candidate can be read.
                Some(_) | None if pending => previous.get(&(&**cluster, &**name)).map(|b| (*b).clone()),
                Some((c, root, known)) => {
                    let snapshots = data.ids(cluster, name);
                    Some(match known {
                        // Read before, and its data snapshots have not changed: the same entry.
                        Known::Kept(old) if old.written_nanos == c.mod_time && old.snapshots == snapshots => {
                            old.clone()
                        }
                        _ => Arc::new(SourceBackup {
                            record: known.record().clone(),
                            manifest: c.id,
                            written_nanos: c.mod_time,
                            root: *root,
                            snapshots,
                        }),
                    })
                }
                None => None,
            };
            if let Some(fresh) = fresh {
                match previous.get(&(&**cluster, &**name)) {
                    Some(old) if **old == fresh => backups.push((*old).clone()),
                    _ => backups.push(fresh),
                }
            }
        }
        drop(previous);
        self.retry = !transient.is_empty();
        self.last_fingerprint = (!self.retry).then_some(fingerprint);
        self.last_output = backups.clone();
        Ok(ReadOutcome::Changed { backups, newest_nanos: fingerprint.newest_nanos })
    }

    fn skipped(&mut self, id: ManifestId, cluster: &str, name: &str, skip: Skip, transient: &mut HashSet<ManifestId>) {
        if skip.is_transient() {
            transient.insert(id);
            // Tried again at every read while it fails: reported when the reason changes.
            if self.reported_transient.get(&id) == Some(&skip) {
                return;
            }
            self.reported_transient.insert(id, skip.clone());
        } else {
            self.reported_transient.remove(&id);
            self.skipped.insert(id);
        }
        self.count(skip.reason());
        let (server, tier) = (self.session.url(), &self.labels.tier);
        if skip == Skip::Incomplete {
            tracing::info!(server, tier, manifest = %id, cluster, backup = name, "ignoring an incomplete metadata snapshot");
        } else {
            tracing::warn!(server, tier, manifest = %id, cluster, backup = name, reason = %skip, "skipping a backup that cannot be read");
        }
    }

    /// The record as the catalog keeps it: cluster and name from the snapshot's labels (which
    /// Klio sets from the same certificate and backup name), strings shared.
    fn settle_record(&mut self, record: BackupRecord, cluster: &str, name: &str) -> Arc<BackupRecord> {
        let mut record = record;
        if &*record.cluster_name != cluster || &*record.name != name {
            tracing::info!(
                server = %self.session.url(),
                cluster,
                backup = name,
                record_cluster = %record.cluster_name,
                record_name = %record.name,
                "the record names another cluster or backup than its snapshot; using the snapshot's"
            );
            record.cluster_name = cluster.into();
            record.name = name.into();
        }
        self.interner.record(&mut record);
        Arc::new(record)
    }

    fn report_duplicates(&mut self, groups: &BTreeMap<(Box<str>, Box<str>), Vec<Listed>>) {
        self.reported_duplicates.retain(|k| groups.get(k).is_some_and(|c| c.len() > 1));
        for (key, candidates) in groups {
            if candidates.len() > 1 && self.reported_duplicates.insert(key.clone()) {
                tracing::info!(
                    server = %self.session.url(),
                    tier = %self.labels.tier,
                    cluster = %key.0,
                    backup = %key.1,
                    snapshots = candidates.len(),
                    newest = %candidates[0].id,
                    "several metadata snapshots for one backup; the newest readable one is served"
                );
            }
        }
    }

    /// Checks a listed entry's labels.
    fn listed(&self, kind: SnapshotKind, entry: &ListedManifest) -> Result<Listed, String> {
        let id = ManifestId::from_hex(&entry.id).ok_or("not a manifest ID")?;
        let label = |k: &str| label(entry, k);
        if label(labels::TYPE) != labels::SNAPSHOT || label(labels::CONTENT) != kind.label() {
            return Err(format!(
                "labels type={:?}, {}={:?} do not describe a Klio {} snapshot",
                label(labels::TYPE),
                labels::CONTENT,
                label(labels::CONTENT),
                kind.label()
            ));
        }
        let (cluster, name) = (label(labels::HOSTNAME), label(labels::BACKUP));
        for (what, value) in [("cluster (hostname label)", cluster), ("backup name (tag:klio.io/tag)", name)] {
            if !crate::upstream::record::is_name_part(value) {
                return Err(format!("the {what} {value:?} cannot be part of a Kubernetes object name"));
            }
        }
        let tablespace = match kind {
            SnapshotKind::Tablespace => Some(label(labels::TABLESPACE).into()),
            _ => None,
        };
        Ok(Listed { id, mod_time: entry.mod_time_nanos, cluster: cluster.into(), name: name.into(), tablespace })
    }
}

/// A label's value (empty when absent or not UTF-8).
fn label<'a>(entry: &'a ListedManifest, key: &str) -> &'a str {
    let value = entry.labels.iter().find(|l| l.key == key.as_bytes()).map(|l| &l.value[..]).unwrap_or_default();
    std::str::from_utf8(value).unwrap_or_default()
}

/// Which Klio snapshot an entry is, from its `tag:klio.io/content` label.
fn entry_kind(entry: &ListedManifest) -> Option<SnapshotKind> {
    SnapshotKind::from_label(label(entry, labels::CONTENT))
}

/// What identifies a listing: which IDs, in any order (a keyed mix of
/// each, summed and xored), how many, and the newest modification time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Fingerprint {
    count: u64,
    sum: u64,
    xor: u64,
    newest_nanos: i64,
}

impl Fingerprint {
    fn add(&mut self, id: &[u8], mod_time_nanos: i64) {
        // FNV-1a over the ID, then a splitmix64 finish to spread the bits.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in id {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        self.count += 1;
        self.sum = self.sum.wrapping_add(h);
        self.xor ^= h;
        self.newest_nanos = self.newest_nanos.max(mod_time_nanos);
    }
}

/// Data snapshot IDs by (cluster, backup); the newest per kind (and tablespace) wins.
struct DataSnapshots(HashMap<(Box<str>, Box<str>), Winners>);

#[derive(Default)]
struct Winners {
    pgdata: Option<(i64, ManifestId)>,
    controldata: Option<(i64, ManifestId)>,
    tablespaces: BTreeMap<Box<str>, (i64, ManifestId)>,
}

fn newer(slot: &mut Option<(i64, ManifestId)>, candidate: (i64, ManifestId)) {
    if slot.is_none_or(|s| candidate > s) {
        *slot = Some(candidate);
    }
}

impl DataSnapshots {
    fn index(by_kind: BTreeMap<SnapshotKind, Vec<Listed>>) -> Self {
        let mut map: HashMap<(Box<str>, Box<str>), Winners> = HashMap::new();
        for (kind, entries) in by_kind {
            for l in entries {
                let w = map.entry((l.cluster, l.name)).or_default();
                let candidate = (l.mod_time, l.id);
                match kind {
                    SnapshotKind::Pgdata => newer(&mut w.pgdata, candidate),
                    SnapshotKind::Controldata => newer(&mut w.controldata, candidate),
                    SnapshotKind::Tablespace => {
                        let slot = w.tablespaces.entry(l.tablespace.unwrap_or_default()).or_insert(candidate);
                        if candidate > *slot {
                            *slot = candidate;
                        }
                    }
                    SnapshotKind::Metadata => {}
                }
            }
        }
        Self(map)
    }

    fn ids(&self, cluster: &str, name: &str) -> SnapshotIds {
        let Some(w) = self.0.get(&(Box::from(cluster), Box::from(name))) else { return SnapshotIds::default() };
        SnapshotIds {
            pgdata: w.pgdata.map(|(_, id)| id),
            controldata: w.controldata.map(|(_, id)| id),
            tablespaces: w.tablespaces.iter().map(|(n, (_, id))| (n.clone(), *id)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(id: u8, mod_time: i64, tablespace: Option<&str>) -> Listed {
        Listed {
            id: ManifestId([id; 16]),
            mod_time,
            cluster: "pg".into(),
            name: "b1".into(),
            tablespace: tablespace.map(Into::into),
        }
    }

    #[test]
    fn the_newest_data_snapshot_of_each_kind_wins() {
        let by_kind = BTreeMap::from([
            (SnapshotKind::Pgdata, vec![listed(1, 10, None), listed(2, 30, None), listed(3, 20, None)]),
            (SnapshotKind::Controldata, vec![listed(4, 5, None)]),
            (SnapshotKind::Tablespace, vec![listed(5, 1, Some("b")), listed(6, 2, Some("a")), listed(7, 3, Some("b"))]),
        ]);
        let ids = DataSnapshots::index(by_kind).ids("pg", "b1");
        assert_eq!(ids.pgdata, Some(ManifestId([2; 16])));
        assert_eq!(ids.controldata, Some(ManifestId([4; 16])));
        assert_eq!(&*ids.tablespaces, [("a".into(), ManifestId([6; 16])), ("b".into(), ManifestId([7; 16]))]);
        assert_eq!(DataSnapshots::index(BTreeMap::new()).ids("pg", "b1"), SnapshotIds::default(), "none: no IDs");
    }

    #[test]
    fn fingerprints_ignore_order_and_see_every_change() {
        let fp = |ids: &[u8]| {
            let mut f = Fingerprint::default();
            for id in ids {
                f.add(&[*id; 32], i64::from(*id));
            }
            f
        };
        let base = fp(&[1, 2, 3]);
        assert_eq!(base, fp(&[3, 2, 1]));
        assert_ne!(base, fp(&[1, 2]), "a deletion");
        assert_ne!(base, fp(&[1, 4, 3]), "a replaced ID");
        assert_ne!(fp(&[1, 1]), fp(&[2, 2]), "twice the same ID is not another pair");
        assert_eq!(base.newest_nanos, 3);
    }
}
