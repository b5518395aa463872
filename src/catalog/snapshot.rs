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
    pub object: Arc<KlioBackup>,
    pub previous: Option<Arc<KlioBackup>>,
}

/// One consistent view of the catalog.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub resource_version: ResourceVersion,
    /// The same, printed once.
    pub resource_version_text: String,
    /// Sorted by `metadata.name`.
    pub backups: Vec<Arc<KlioBackup>>,
    /// The changes from the snapshot before this one.
    pub events: Vec<Event>,
}

impl Snapshot {
    pub fn get(&self, name: &str) -> Option<&Arc<KlioBackup>> {
        self.position(name).ok().map(|i| &self.backups[i])
    }

    /// Where `name` is, or would be, in the sorted list.
    pub fn position(&self, name: &str) -> Result<usize, usize> {
        self.backups.binary_search_by(|b| name_of(b).cmp(name))
    }
}

pub fn name_of(b: &KlioBackup) -> &str {
    b.metadata.name.as_deref().unwrap_or_default()
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

/// The records one source contributed.
pub struct SourceRecords<'a> {
    pub server: &'a str,
    pub tier: usize,
    pub records: &'a [BackupRecord],
}

/// Builds the snapshot that follows `previous`.
pub fn build(
    previous: Option<&Snapshot>,
    resource_version: ResourceVersion,
    sources: &[SourceRecords<'_>],
    prefix_server: bool,
) -> Snapshot {
    let rv_text = resource_version.to_string();
    // name -> (record, server, tiers holding it); the first source's record wins.
    let mut merged: BTreeMap<String, (&BackupRecord, &str, [bool; 2])> = BTreeMap::new();
    for source in sources {
        for record in source.records {
            let name = object_name(source.server, record, prefix_server);
            merged.entry(name).or_insert((record, source.server, [false; 2])).2[source.tier] = true;
        }
    }
    let mut backups = Vec::with_capacity(merged.len());
    let mut events = vec![];
    for (name, (record, server, tiers)) in merged {
        let Some(fresh) = to_kliobackup(name, record, server, tiers) else { continue };
        match previous.and_then(|p| p.get(name_of(&fresh))) {
            Some(old) if same_content(old, &fresh) => backups.push(old.clone()),
            old => {
                let mut fresh = fresh;
                fresh.metadata.resource_version = Some(rv_text.clone());
                let fresh = Arc::new(fresh);
                let kind = if old.is_some() { EventType::Modified } else { EventType::Added };
                events.push(Event { kind, object: fresh.clone(), previous: old.cloned() });
                backups.push(fresh);
            }
        }
    }
    let snapshot_names = |b: &Arc<KlioBackup>| backups.binary_search_by(|x| name_of(x).cmp(name_of(b))).is_ok();
    let deleted: Vec<Event> = previous
        .into_iter()
        .flat_map(|p| p.backups.iter())
        .filter(|b| !snapshot_names(b))
        .map(|b| {
            let mut gone = KlioBackup::clone(b);
            gone.metadata.resource_version = Some(rv_text.clone());
            Event { kind: EventType::Deleted, object: Arc::new(gone), previous: Some(b.clone()) }
        })
        .collect();
    events.extend(deleted);
    Snapshot { resource_version, resource_version_text: rv_text, backups, events }
}

fn same_content(a: &KlioBackup, b: &KlioBackup) -> bool {
    a.spec == b.spec && a.status == b.status && a.metadata.labels == b.metadata.labels
}

fn object_name(server: &str, record: &BackupRecord, prefix_server: bool) -> String {
    if prefix_server {
        format!("{server}.{}.{}", record.cluster_name, record.name)
    } else {
        format!("{}.{}", record.cluster_name, record.name)
    }
}

fn time(seconds: i64) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    jiff::Timestamp::from_second(seconds).ok().map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time)
}

/// The mapping of `klio-catalog.md` §2, plus the labels and the server. `None` (logged) for a
/// record that cannot be shown.
pub fn to_kliobackup(name: String, record: &BackupRecord, server: &str, tiers: [bool; 2]) -> Option<KlioBackup> {
    let (Some(started), Some(stopped)) = (time(record.started_at), time(record.stopped_at)) else {
        tracing::warn!(cluster = %record.cluster_name, backup = %record.name, "skipping a backup record with an impossible timestamp");
        return None;
    };
    let mut annotations = record.annotations.clone().unwrap_or_default();
    let mut labels = BTreeMap::from([
        (labels::CLUSTER.to_string(), record.cluster_name.clone()),
        (labels::SERVER.to_string(), server.to_string()),
    ]);
    for ((marker, label), present) in TIER_ANNOTATIONS.iter().zip([labels::TIER1, labels::TIER2]).zip(tiers) {
        if present {
            annotations.insert(marker.to_string(), "present".into());
            labels.insert(label.to_string(), "true".into());
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
        api_version: crate::routes::group_version().to_string(),
        kind: "KlioBackup".to_string(),
        metadata: ObjectMeta { name: Some(name), labels: Some(labels), ..Default::default() },
        spec: KlioBackupSpec { backup_id: record.name.clone(), cluster_name: record.cluster_name.clone() },
        status: Some(KlioBackupStatus {
            annotations: Some(annotations).filter(|a| !a.is_empty()),
            start_lsn: Some(record.start_lsn),
            end_lsn: Some(record.end_lsn),
            start_wal: Some(record.start_wal.clone()),
            end_wal: Some(record.end_wal.clone()),
            started_at: Some(started),
            stopped_at: Some(stopped),
            server: Some(server.to_string()),
            tablespaces: Some(tablespaces).filter(|t| !t.is_empty()),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(cluster: &str, id: &str, end_lsn: u64) -> BackupRecord {
        let mut r: BackupRecord =
            serde_json::from_value(crate::demo::sample_record(cluster, id, 1_763_026_297, 2, 7, false)).unwrap();
        r.end_lsn = end_lsn;
        r
    }

    fn names(events: &[Event]) -> Vec<(EventType, String)> {
        events.iter().map(|e| (e.kind, name_of(&e.object).to_string())).collect()
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
        let t1 = [record("a", "b1", 10), record("a", "b2", 20)];
        let s1 = build(None, ResourceVersion(vec![1]), &[SourceRecords { server: "k", tier: 0, records: &t1 }], false);
        assert_eq!(names(&s1.events), [(EventType::Added, "a.b1".into()), (EventType::Added, "a.b2".into())]);
        assert_eq!(s1.backups[0].metadata.resource_version.as_deref(), Some("1"));

        let t2 = [record("a", "b2", 21), record("a", "b3", 30)];
        let s2 =
            build(Some(&s1), ResourceVersion(vec![2]), &[SourceRecords { server: "k", tier: 0, records: &t2 }], false);
        assert_eq!(
            names(&s2.events),
            [
                (EventType::Modified, "a.b2".into()),
                (EventType::Added, "a.b3".into()),
                (EventType::Deleted, "a.b1".into())
            ]
        );
        assert!(s2.events.iter().all(|e| e.object.metadata.resource_version.as_deref() == Some("2")));

        let s3 =
            build(Some(&s2), ResourceVersion(vec![3]), &[SourceRecords { server: "k", tier: 0, records: &t2 }], false);
        assert!(s3.events.is_empty());
        assert!(Arc::ptr_eq(&s3.backups[0], &s2.backups[0]), "unchanged objects are shared, not copied");
        assert_eq!(
            s3.backups[0].metadata.resource_version.as_deref(),
            Some("2"),
            "an object keeps the version it last changed in"
        );
    }

    #[test]
    fn tiers_merge_and_servers_prefix_names() {
        let t1 = [record("a", "b1", 10)];
        let t2 = [record("a", "b1", 10), record("a", "b0", 5)];
        let s = build(
            None,
            ResourceVersion(vec![1, 1]),
            &[
                SourceRecords { server: "east", tier: 0, records: &t1 },
                SourceRecords { server: "east", tier: 1, records: &t2 },
            ],
            true,
        );
        assert_eq!(s.backups.iter().map(|b| name_of(b)).collect::<Vec<_>>(), ["east.a.b0", "east.a.b1"]);
        let both = s.get("east.a.b1").unwrap();
        let ann = both.status.as_ref().unwrap().annotations.as_ref().unwrap();
        assert_eq!(
            (ann.get("klio.io/tier1").map(String::as_str), ann.get("klio.io/tier2").map(String::as_str)),
            (Some("present"), Some("present"))
        );
        let labels = both.metadata.labels.as_ref().unwrap();
        assert_eq!(labels.get(labels::CLUSTER).map(String::as_str), Some("a"));
        assert_eq!(labels.get(labels::SERVER).map(String::as_str), Some("east"));
        assert_eq!(s.get("east.a.b0").unwrap().metadata.labels.as_ref().unwrap().get(labels::TIER1), None);
    }
}
