//! Immutable views of the catalog and the changes between them.
//!
//! A [`Snapshot`] is built from the records last read from every source (Klio server × tier).
//! Its [`ResourceVersion`] is made of the upstream revisions, so every replica reading the same
//! servers derives the same one. Objects that did not change keep their `Arc` (and their
//! `resourceVersion`) from the previous snapshot; the [`Event`]s from the previous snapshot are
//! computed once, when the snapshot is built, however many watchers there are.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use serde::Serialize;

use super::record::BackupRecord;
use crate::model::{KlioBackup, KlioBackupSpec, KlioBackupStatus, TablespaceLayout};

/// The revisions of every source, in configuration order; printed as `R1.R2...`. Opaque to
/// clients, parseable by any replica.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ResourceVersion(pub Vec<u64>);

impl fmt::Display for ResourceVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl ResourceVersion {
    /// Parses a resourceVersion of a catalog with `sources` sources.
    pub fn parse(text: &str, sources: usize) -> Result<Self, String> {
        let parts: Result<Vec<u64>, _> = text.split('.').map(str::parse::<u64>).collect();
        match parts {
            Ok(p) if p.len() == sources => Ok(Self(p)),
            _ => Err(format!("invalid resource version {text:?}: not one this server issued")),
        }
    }

    /// True when every component is at least the other's: this catalog state includes that one.
    pub fn covers(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && self.0.iter().zip(&other.0).all(|(a, b)| a >= b)
    }
}

/// What kind of change an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change between two consecutive snapshots. `previous` is the object before a change
/// (selectors need it to turn a change into ADDED/DELETED for a watcher that filters).
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventType,
    pub object: Arc<Backup>,
    pub previous: Option<Arc<Backup>>,
}

/// One consistent view of the catalog.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub resource_version: ResourceVersion,
    /// The same, printed once.
    pub resource_version_text: String,
    /// Sorted by name.
    pub backups: Vec<Arc<Backup>>,
    /// The changes from the snapshot before this one.
    pub events: Vec<Event>,
}

impl Snapshot {
    pub fn get(&self, name: &str) -> Option<&Arc<Backup>> {
        self.position(name).ok().map(|i| &self.backups[i])
    }

    /// Where `name` is, or would be, in the sorted list.
    pub fn position(&self, name: &str) -> Result<usize, usize> {
        self.backups.binary_search_by(|b| b.name().cmp(name))
    }
}

/// The label keys the service puts on every object.
pub mod labels {
    pub const CLUSTER: &str = "kliocatalog.enterprisedb.io/cluster";
    pub const SERVER: &str = "kliocatalog.enterprisedb.io/server";
    pub const TIER1: &str = "kliocatalog.enterprisedb.io/tier1";
    pub const TIER2: &str = "kliocatalog.enterprisedb.io/tier2";
}

/// The annotation marking the tier a backup was found on (klio-catalog.md §2).
pub const TIER_ANNOTATIONS: [&str; 2] = ["klio.io/tier1", "klio.io/tier2"];

/// One KlioBackup as the catalog keeps it: the upstream record that won the merge (shared with
/// the source it was read from and with earlier snapshots) and what the service adds to it. It
/// becomes the generated [`KlioBackup`] type only when it is served, so the catalog holds about
/// a fifth of the memory a `KlioBackup` with its label and annotation maps would take.
#[derive(Debug, Clone)]
pub struct Backup {
    name: Box<str>,
    record: Arc<BackupRecord>,
    server: Arc<str>,
    tiers: [bool; 2],
    resource_version: Arc<str>,
}

impl Backup {
    /// `None` (logged) for a record that cannot be shown.
    pub fn new(
        name: Box<str>,
        record: Arc<BackupRecord>,
        server: Arc<str>,
        tiers: [bool; 2],
        resource_version: Arc<str>,
    ) -> Option<Self> {
        if time(record.started_at).is_none() || time(record.stopped_at).is_none() {
            tracing::warn!(cluster = %record.cluster_name, backup = %record.name, "skipping a backup record with an impossible timestamp");
            return None;
        }
        Some(Self { name, record, server, tiers, resource_version })
    }

    /// `metadata.name`: `<clusterName>.<backupID>`, prefixed by the server when there are several.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn record(&self) -> &BackupRecord {
        &self.record
    }

    /// On tier 1, on tier 2.
    pub fn tiers(&self) -> [bool; 2] {
        self.tiers
    }

    /// The revision this object last changed in.
    pub fn resource_version(&self) -> &str {
        &self.resource_version
    }

    /// The same object as of another revision (a deletion is reported with the revision that
    /// deleted it).
    pub fn at_version(&self, resource_version: Arc<str>) -> Self {
        Self { resource_version, ..self.clone() }
    }

    /// One of the labels of [`labels`], without building the label map.
    pub fn label(&self, key: &str) -> Option<&str> {
        match key {
            labels::CLUSTER => Some(&self.record.cluster_name),
            labels::SERVER => Some(&self.server),
            labels::TIER1 => self.tiers[0].then_some("true"),
            labels::TIER2 => self.tiers[1].then_some("true"),
            _ => None,
        }
    }

    pub fn metadata(&self) -> ObjectMeta {
        let labels = [labels::CLUSTER, labels::SERVER, labels::TIER1, labels::TIER2]
            .into_iter()
            .filter_map(|k| self.label(k).map(|v| (k.to_string(), v.to_string())))
            .collect();
        ObjectMeta {
            name: Some(self.name.to_string()),
            labels: Some(labels),
            resource_version: Some(self.resource_version.to_string()),
            ..Default::default()
        }
    }

    /// A backup of the demo's shape, on tier 1 of the server `klio`.
    #[cfg(test)]
    pub(crate) fn sample(cluster: &str, id: &str) -> Self {
        let record = crate::demo::sample_record(cluster, id, 1_763_026_297, 2, 7, false);
        let record = Arc::new(serde_json::from_value(record).expect("the demo record decodes"));
        Self::new(format!("{cluster}.{id}").into(), record, "klio".into(), [true, false], "1".into())
            .expect("the demo record has valid times")
    }

    fn same_content(&self, other: &Self) -> bool {
        (Arc::ptr_eq(&self.record, &other.record) || self.record == other.record)
            && self.tiers == other.tiers
            && self.server == other.server
    }

    /// The mapping of `klio-catalog.md` §2, plus the labels and the server.
    pub fn to_kliobackup(&self) -> KlioBackup {
        let record = &*self.record;
        let mut annotations = record.annotations.to_map();
        for (marker, present) in TIER_ANNOTATIONS.iter().zip(self.tiers) {
            if present {
                annotations.insert(marker.to_string(), "present".into());
            }
        }
        let tablespaces: Vec<TablespaceLayout> = record
            .tablespaces
            .iter()
            .flatten()
            .map(|t| TablespaceLayout {
                name: t.name.to_string(),
                oid: Some(t.oid.to_string()).filter(|s| !s.is_empty()),
                path: Some(t.path.to_string()).filter(|s| !s.is_empty()),
                annotations: Some(t.annotations.to_map()).filter(|a| !a.is_empty()),
            })
            .collect();
        KlioBackup {
            api_version: crate::routes::group_version().to_string(),
            kind: "KlioBackup".to_string(),
            metadata: self.metadata(),
            spec: KlioBackupSpec { backup_id: record.name.to_string(), cluster_name: record.cluster_name.to_string() },
            status: Some(KlioBackupStatus {
                annotations: Some(annotations).filter(|a| !a.is_empty()),
                start_lsn: Some(record.start_lsn),
                end_lsn: Some(record.end_lsn),
                start_wal: Some(record.start_wal.to_string()),
                end_wal: Some(record.end_wal.to_string()),
                started_at: time(record.started_at),
                stopped_at: time(record.stopped_at),
                server: Some(self.server.to_string()),
                tablespaces: Some(tablespaces).filter(|t| !t.is_empty()),
            }),
        }
    }
}

/// Serialized as the `KlioBackup` it stands for.
impl Serialize for Backup {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_kliobackup().serialize(serializer)
    }
}

/// The records one source contributed.
pub struct SourceRecords<'a> {
    pub server: &'a Arc<str>,
    pub tier: usize,
    pub records: &'a [Arc<BackupRecord>],
}

/// Builds the snapshot that follows `previous`.
pub fn build(
    previous: Option<&Snapshot>,
    resource_version: ResourceVersion,
    sources: &[SourceRecords<'_>],
    prefix_server: bool,
) -> Snapshot {
    let rv_text = resource_version.to_string();
    let rv_shared: Arc<str> = rv_text.as_str().into();
    // name -> (record, server, tiers holding it); the first source's record wins.
    type Winner<'a> = (&'a Arc<BackupRecord>, &'a Arc<str>, [bool; 2]);
    let mut merged: BTreeMap<Box<str>, Winner> = BTreeMap::new();
    for source in sources {
        for record in source.records {
            let name = object_name(source.server, record, prefix_server);
            merged.entry(name).or_insert((record, source.server, [false; 2])).2[source.tier] = true;
        }
    }
    let mut backups = Vec::with_capacity(merged.len());
    let mut events = vec![];
    for (name, (record, server, tiers)) in merged {
        let Some(fresh) = Backup::new(name, record.clone(), server.clone(), tiers, rv_shared.clone()) else {
            continue;
        };
        match previous.and_then(|p| p.get(fresh.name())) {
            Some(old) if old.same_content(&fresh) => backups.push(old.clone()),
            old => {
                let fresh = Arc::new(fresh);
                let kind = if old.is_some() { EventType::Modified } else { EventType::Added };
                events.push(Event { kind, object: fresh.clone(), previous: old.cloned() });
                backups.push(fresh);
            }
        }
    }
    let in_snapshot = |b: &Arc<Backup>| backups.binary_search_by(|x| x.name().cmp(b.name())).is_ok();
    let deleted: Vec<Event> = previous
        .into_iter()
        .flat_map(|p| p.backups.iter())
        .filter(|b| !in_snapshot(b))
        .map(|b| Event {
            kind: EventType::Deleted,
            object: Arc::new(b.at_version(rv_shared.clone())),
            previous: Some(b.clone()),
        })
        .collect();
    events.extend(deleted);
    backups.shrink_to_fit();
    Snapshot { resource_version, resource_version_text: rv_text, backups, events }
}

fn object_name(server: &str, record: &BackupRecord, prefix_server: bool) -> Box<str> {
    if prefix_server {
        format!("{server}.{}.{}", record.cluster_name, record.name).into()
    } else {
        format!("{}.{}", record.cluster_name, record.name).into()
    }
}

fn time(seconds: i64) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    jiff::Timestamp::from_second(seconds).ok().map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(cluster: &str, id: &str, end_lsn: u64) -> Arc<BackupRecord> {
        let mut r: BackupRecord =
            serde_json::from_value(crate::demo::sample_record(cluster, id, 1_763_026_297, 2, 7, false)).unwrap();
        r.end_lsn = end_lsn;
        Arc::new(r)
    }

    fn source<'a>(server: &'a Arc<str>, tier: usize, records: &'a [Arc<BackupRecord>]) -> SourceRecords<'a> {
        SourceRecords { server, tier, records }
    }

    fn names(events: &[Event]) -> Vec<(EventType, String)> {
        events.iter().map(|e| (e.kind, e.object.name().to_string())).collect()
    }

    #[test]
    fn resource_versions_print_and_parse() {
        let rv = ResourceVersion(vec![17, 4]);
        assert_eq!(rv.to_string(), "17.4");
        assert_eq!(ResourceVersion::parse("17.4", 2).unwrap(), rv);
        assert!(ResourceVersion::parse("17", 2).is_err());
        assert!(ResourceVersion::parse("17.x", 2).is_err());
        assert!(rv.covers(&ResourceVersion(vec![17, 3])));
        assert!(!rv.covers(&ResourceVersion(vec![18, 3])));
    }

    #[test]
    fn diffs_reuse_unchanged_objects_and_report_changes() {
        let k: Arc<str> = "k".into();
        let t1 = [record("a", "b1", 10), record("a", "b2", 20)];
        let s1 = build(None, ResourceVersion(vec![1]), &[source(&k, 0, &t1)], false);
        assert_eq!(names(&s1.events), [(EventType::Added, "a.b1".into()), (EventType::Added, "a.b2".into())]);
        assert_eq!(s1.backups[0].resource_version(), "1");

        let t2 = [record("a", "b2", 21), record("a", "b3", 30)];
        let s2 = build(Some(&s1), ResourceVersion(vec![2]), &[source(&k, 0, &t2)], false);
        assert_eq!(
            names(&s2.events),
            [
                (EventType::Modified, "a.b2".into()),
                (EventType::Added, "a.b3".into()),
                (EventType::Deleted, "a.b1".into())
            ]
        );
        assert!(s2.events.iter().all(|e| e.object.resource_version() == "2"));

        let s3 = build(Some(&s2), ResourceVersion(vec![3]), &[source(&k, 0, &t2)], false);
        assert!(s3.events.is_empty());
        assert!(Arc::ptr_eq(&s3.backups[0], &s2.backups[0]), "unchanged objects are shared, not copied");
        assert_eq!(s3.backups[0].resource_version(), "2", "an object keeps the version it last changed in");
        let equal_copy = [Arc::new(BackupRecord::clone(&t2[0])), t2[1].clone()];
        let s4 = build(Some(&s3), ResourceVersion(vec![4]), &[source(&k, 0, &equal_copy)], false);
        assert!(s4.events.is_empty(), "an equal record read again is no change");
    }

    #[test]
    fn tiers_merge_and_servers_prefix_names() {
        let t1 = [record("a", "b1", 10)];
        let t2 = [record("a", "b1", 10), record("a", "b0", 5)];
        let east: Arc<str> = "east".into();
        let s = build(None, ResourceVersion(vec![1, 1]), &[source(&east, 0, &t1), source(&east, 1, &t2)], true);
        assert_eq!(s.backups.iter().map(|b| b.name()).collect::<Vec<_>>(), ["east.a.b0", "east.a.b1"]);
        let both = s.get("east.a.b1").unwrap().to_kliobackup();
        let ann = both.status.as_ref().unwrap().annotations.as_ref().unwrap();
        assert_eq!(
            (ann.get("klio.io/tier1").map(String::as_str), ann.get("klio.io/tier2").map(String::as_str)),
            (Some("present"), Some("present"))
        );
        let labels = both.metadata.labels.as_ref().unwrap();
        assert_eq!(labels.get(labels::CLUSTER).map(String::as_str), Some("a"));
        assert_eq!(labels.get(labels::SERVER).map(String::as_str), Some("east"));
        let b0 = s.get("east.a.b0").unwrap();
        assert_eq!(b0.metadata().labels.unwrap().get(labels::TIER1), None);
        assert_eq!((b0.label(labels::TIER1), b0.label(labels::TIER2)), (None, Some("true")));
        assert_eq!(b0.label("other"), None);
    }
}
