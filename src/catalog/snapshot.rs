//! Immutable views of the catalog and the changes between them.
//!
//! A [`Snapshot`] is built from the backups last read from every source (Klio server × tier).
//! Its [`ResourceVersion`] is made of the sources' revisions (see the catalog module), so
//! replicas reading the same servers derive the same one. Objects that did not change keep their `Arc` (and their
//! `resourceVersion`) from the previous snapshot; the [`Event`]s from the previous snapshot are
//! computed once, when the snapshot is built, however many watchers there are.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::{Arc, OnceLock};

use hashbrown::HashTable;

#[cfg(test)]
use crate::upstream::kopia::ids::ManifestId;
use crate::upstream::kopia::reader::SourceBackup;
use crate::upstream::record::BackupRecord;

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
    /// The object is new (or, for a filtered watch, now matches).
    Added,
    /// The object changed and still exists.
    Modified,
    /// The object is gone (or, for a filtered watch, no longer matches).
    Deleted,
}

impl EventType {
    /// The watch event's `type` as Kubernetes spells it.
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
    /// Added, modified or deleted.
    pub kind: EventType,
    /// The object after the change; for a deletion, the last state with the deleting revision.
    pub object: Arc<Backup>,
    /// The object before the change (for a deletion, as last served); `None` for an addition.
    pub previous: Option<Arc<Backup>>,
}

/// One consistent view of the catalog.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The sources' revisions this view was built from.
    pub resource_version: ResourceVersion,
    /// The same, printed once.
    pub resource_version_text: String,
    /// Sorted by name.
    pub backups: Vec<Arc<Backup>>,
    /// The changes from the snapshot before this one; none for the first snapshot, which no
    /// watch can start before (a client holds no earlier resourceVersion of this catalog).
    pub events: Vec<Event>,
    /// Where each backup is, by name; made by the first [`Snapshot::get`].
    pub(crate) names: OnceLock<NameIndex>,
}

/// The positions of a snapshot's backups by name. A `get` finds its object with one hash and one
/// comparison, where a binary search makes 14 comparisons at 10 000 backups, each reaching the
/// record through a few pointers (a tenth of a small request's instructions). Made on the first
/// lookup, so snapshots that are never asked for one object (older revisions kept for watches)
/// have none: about 8 bytes per backup.
#[derive(Debug)]
pub(crate) struct NameIndex {
    hashing: RandomState,
    positions: HashTable<u32>,
}

impl NameIndex {
    fn new(backups: &[Arc<Backup>]) -> Self {
        let hashing = RandomState::new();
        let mut positions = HashTable::with_capacity(backups.len());
        let hash_at = |i: u32| hash_parts(&hashing, backups[i as usize].name().0);
        for i in 0..backups.len() as u32 {
            positions.insert_unique(hash_at(i), i, |&j| hash_at(j));
        }
        Self { hashing, positions }
    }

    fn find(&self, backups: &[Arc<Backup>], name: &str) -> Option<usize> {
        let found = self.positions.find(hash_parts(&self.hashing, [name]), |&i| backups[i as usize].name() == *name);
        found.map(|&i| i as usize)
    }
}

/// The hash of the string `parts` spell, however it is cut into parts.
fn hash_parts<'a>(hashing: &RandomState, parts: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut hasher = hashing.build_hasher();
    for part in parts {
        hasher.write(part.as_bytes());
    }
    hasher.finish()
}

impl Snapshot {
    /// The backup named `name`, found by the name index (made by the first lookup).
    pub fn get(&self, name: &str) -> Option<&Arc<Backup>> {
        let index = self.names.get_or_init(|| NameIndex::new(&self.backups));
        index.find(&self.backups, name).map(|i| &self.backups[i])
    }

    /// The backup named `name`, spelled from its parts.
    fn get_named(&self, name: &ObjectName<'_>) -> Option<&Arc<Backup>> {
        self.backups.binary_search_by(|b| b.name().cmp(name)).ok().map(|i| &self.backups[i])
    }

    /// Where `name` is, or would be, in the sorted list.
    pub fn position(&self, name: &str) -> Result<usize, usize> {
        self.backups.binary_search_by(|b| b.name().cmp_str(name))
    }
}

/// One backup as the catalog keeps it: what each tier holds of it (shared with the source it
/// was read from and with earlier snapshots), its server and revision. It becomes the generated
/// `KlioBackup` type (in the API layer) only when it is served, so the catalog holds a fraction
/// of the memory a `KlioBackup` with its label and annotation maps would take. Its name is
/// spelled from the record when asked ([`ObjectName`]), not kept: with thin pointers to the
/// shared server and revision, a backup is 32 bytes beside what its tiers hold.
#[derive(Debug, Clone)]
pub struct Backup {
    /// Tier 1, tier 2; at least one is present.
    tiers: [Option<Arc<SourceBackup>>; 2],
    server: Arc<ServerName>,
    resource_version: Arc<String>,
}

/// The Klio server backups are on, shared by all of them.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerName {
    /// Its configured name.
    pub name: Box<str>,
    /// Whether its backups' object names start with it (when several servers are configured).
    pub in_object_names: bool,
}

impl ServerName {
    /// The only server configured: object names do not carry it.
    pub fn single(name: &str) -> Arc<Self> {
        Arc::new(Self { name: name.into(), in_object_names: false })
    }
}

/// A backup's `metadata.name`: `<clusterName>.<backupID>`, prefixed by the server when there are
/// several. Compares and prints as that string without making it.
#[derive(Debug, Clone, Copy)]
pub struct ObjectName<'a>([&'a str; 5]);

impl<'a> ObjectName<'a> {
    /// The name of backup `backup` of cluster `cluster` on `server`.
    pub fn new(server: &'a ServerName, cluster: &'a str, backup: &'a str) -> Self {
        let (server, dot) = if server.in_object_names { (&*server.name, ".") } else { ("", "") };
        Self([server, dot, cluster, ".", backup])
    }

    /// Compares with a name as a string, byte by byte (as `str` orders).
    pub fn cmp_str(&self, other: &str) -> Ordering {
        let mut rest = other.as_bytes();
        for part in self.0 {
            let part = part.as_bytes();
            // Parts are a few bytes: a loop, not a call to memcmp per part (a lookup makes
            // dozens of these comparisons).
            for (i, &byte) in part.iter().enumerate() {
                match rest.get(i) {
                    None => return Ordering::Greater,
                    Some(&theirs) if theirs != byte => return byte.cmp(&theirs),
                    Some(_) => {}
                }
            }
            rest = &rest[part.len()..];
        }
        if rest.is_empty() {
            Ordering::Equal
        } else {
            Ordering::Less
        }
    }

    fn bytes(&self) -> impl Iterator<Item = u8> + '_ {
        self.0.iter().flat_map(|part| part.bytes())
    }
}

impl fmt::Display for ObjectName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|part| f.write_str(part))
    }
}

impl PartialEq<str> for ObjectName<'_> {
    fn eq(&self, other: &str) -> bool {
        self.cmp_str(other) == Ordering::Equal
    }
}

impl PartialEq for ObjectName<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ObjectName<'_> {}

impl PartialOrd for ObjectName<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ObjectName<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.bytes().cmp(other.bytes())
    }
}

impl Backup {
    /// `None` (logged) for a backup that cannot be shown.
    pub fn new(
        tiers: [Option<Arc<SourceBackup>>; 2],
        server: Arc<ServerName>,
        resource_version: Arc<String>,
    ) -> Option<Self> {
        let record = &tiers.iter().flatten().next()?.record;
        let representable = |seconds: i64| jiff::Timestamp::from_second(seconds).is_ok();
        if !representable(record.started_at) || !representable(record.stopped_at) {
            tracing::warn!(cluster = %record.cluster_name, backup = %record.name, "skipping a backup record with an impossible timestamp");
            return None;
        }
        Some(Self { tiers, server, resource_version })
    }

    /// `metadata.name`: `<clusterName>.<backupID>`, prefixed by the server when there are several.
    pub fn name(&self) -> ObjectName<'_> {
        let r = self.record();
        ObjectName::new(&self.server, &r.cluster_name, &r.name)
    }

    /// The record served: tier 1's when the backup is on tier 1.
    pub fn record(&self) -> &BackupRecord {
        &self.tiers.iter().flatten().next().expect("a backup is on a tier").record
    }

    /// The Klio server (its configured name) the backup is on.
    pub fn server(&self) -> &str {
        &self.server.name
    }

    /// On tier 1, on tier 2.
    pub fn tiers(&self) -> [bool; 2] {
        [self.tiers[0].is_some(), self.tiers[1].is_some()]
    }

    /// What tier `tier` (0 or 1) holds of this backup.
    pub fn on_tier(&self, tier: usize) -> Option<&SourceBackup> {
        self.tiers.get(tier)?.as_deref()
    }

    /// The revision this object last changed in.
    pub fn resource_version(&self) -> &str {
        &self.resource_version
    }

    /// The revision this object last changed in, shared (to report another object at it).
    pub fn shared_resource_version(&self) -> Arc<String> {
        self.resource_version.clone()
    }

    /// The same object as of another revision (a deletion is reported with the revision that
    /// deleted it).
    pub fn at_version(&self, resource_version: Arc<String>) -> Self {
        Self { resource_version, ..self.clone() }
    }

    /// A backup of the demo's shape, on tier 1 of the server `klio`.
    #[cfg(test)]
    pub(crate) fn sample(cluster: &str, id: &str) -> Self {
        let record = crate::upstream::record::sample_record(cluster, id, 1_763_026_297, 2, 7, false);
        let record = serde_json::from_value(record).expect("the demo record decodes");
        let source = SourceBackup {
            record,
            manifest: ManifestId([1; 16]),
            written_nanos: 1_763_026_300_000_000_000,
            root: [1; 16],
            snapshots: Default::default(),
        };
        Self::new([Some(Arc::new(source)), None], ServerName::single("klio"), Arc::new("1".into()))
            .expect("the demo record has valid times")
    }

    /// Whether this object is what `tiers` on `server` make (then it is kept as it is).
    fn holds(&self, tiers: &[Option<Arc<SourceBackup>>; 2], server: &ServerName) -> bool {
        let same = |a: &Option<Arc<SourceBackup>>, b: &Option<Arc<SourceBackup>>| match (a, b) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            (None, None) => true,
            _ => false,
        };
        same(&self.tiers[0], &tiers[0]) && same(&self.tiers[1], &tiers[1]) && *self.server == *server
    }
}

/// The backups one source contributed.
pub struct SourceRecords<'a> {
    /// The configured server's name, shared with every backup of it.
    pub server: &'a Arc<str>,
    /// 0 for tier 1, 1 for tier 2.
    pub tier: usize,
    /// Sorted by (cluster, name).
    pub backups: &'a [Arc<SourceBackup>],
}

/// Builds the snapshot that follows `previous`. Tiers of one server merge on (cluster, backup
/// name); the record served is tier 1's when both hold the backup.
pub fn build(
    previous: Option<&Snapshot>,
    resource_version: ResourceVersion,
    sources: &[SourceRecords<'_>],
    prefix_server: bool,
) -> Snapshot {
    let rv_text = resource_version.to_string();
    let rv_shared = Arc::new(rv_text.clone());
    let servers: BTreeMap<&str, Arc<ServerName>> = sources
        .iter()
        .map(|s| (&**s.server, Arc::new(ServerName { name: (**s.server).into(), in_object_names: prefix_server })))
        .collect();
    // (server, cluster, backup) -> (server, what each tier holds)
    type Key<'a> = (&'a str, &'a str, &'a str);
    type Tiers<'a> = (&'a Arc<ServerName>, [Option<Arc<SourceBackup>>; 2]);
    let mut merged: BTreeMap<Key, Tiers> = BTreeMap::new();
    for source in sources {
        let server = &servers[&**source.server];
        for b in source.backups {
            let key = (&**source.server, &*b.record.cluster_name, &*b.record.name);
            merged.entry(key).or_insert((server, [None, None])).1[source.tier] = Some(b.clone());
        }
    }
    let mut backups: Vec<Arc<Backup>> = Vec::with_capacity(merged.len());
    let mut events = vec![];
    for ((_, cluster, name), (server, tiers)) in merged {
        let wanted = ObjectName::new(server, cluster, name);
        let old = previous.and_then(|p| p.get_named(&wanted));
        if let Some(old) = old.filter(|old| old.holds(&tiers, server)) {
            backups.push(old.clone());
            continue;
        }
        let Some(fresh) = Backup::new(tiers, server.clone(), rv_shared.clone()).map(Arc::new) else {
            continue;
        };
        if previous.is_some() {
            let kind = if old.is_some() { EventType::Modified } else { EventType::Added };
            events.push(Event { kind, object: fresh.clone(), previous: old.cloned() });
        }
        backups.push(fresh);
    }
    // Object names sort differently from (cluster, name) pairs ('-' sorts before '.').
    backups.sort_by(|a, b| a.name().cmp(&b.name()));
    events.sort_by(|a, b| a.object.name().cmp(&b.object.name()));
    let in_snapshot = |b: &Arc<Backup>| backups.binary_search_by(|x| x.name().cmp(&b.name())).is_ok();
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
    Snapshot { resource_version, resource_version_text: rv_text, backups, events, names: OnceLock::new() }
}

/// A demo-shaped backup of `cluster` as one tier holds it; `n` sets its end LSN and its IDs.
#[cfg(test)]
pub(crate) fn source_backup(cluster: &str, id: &str, n: u64) -> Arc<SourceBackup> {
    let mut r: BackupRecord =
        serde_json::from_value(crate::upstream::record::sample_record(cluster, id, 1_763_026_297, 2, 7, false))
            .unwrap();
    r.end_lsn = n;
    Arc::new(SourceBackup {
        record: r,
        manifest: ManifestId([n as u8; 16]),
        written_nanos: 1,
        root: [n as u8; 16],
        snapshots: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_order_and_compare_as_the_strings_they_spell() {
        let parts =
            [("", "a", "b"), ("", "a", "b-c"), ("", "a-b", "c"), ("", "a", "bc"), ("s", "a", "b"), ("", "a", "")];
        let servers = [
            ServerName { name: "".into(), in_object_names: false },
            ServerName { name: "s".into(), in_object_names: true },
        ];
        let name = |(server, cluster, backup): (&'static str, &'static str, &'static str)| {
            ObjectName::new(&servers[usize::from(!server.is_empty())], cluster, backup)
        };
        let probes = ["", "a", "a.", "a.b", "a.b-", "a.b-c", "a.bc", "a-b.c", "s.a.b", "a.b.c", "b", "a.a"];
        for x in parts {
            let text = name(x).to_string();
            for probe in probes {
                assert_eq!(name(x).cmp_str(probe), text.as_str().cmp(probe), "{text} vs {probe}");
                assert_eq!(name(x) == *probe, text == probe);
            }
            for y in parts {
                assert_eq!(name(x).cmp(&name(y)), text.cmp(&name(y).to_string()), "{text} vs {}", name(y));
            }
        }
    }

    fn record(cluster: &str, id: &str, end_lsn: u64) -> Arc<SourceBackup> {
        source_backup(cluster, id, end_lsn)
    }

    fn source<'a>(server: &'a Arc<str>, tier: usize, backups: &'a [Arc<SourceBackup>]) -> SourceRecords<'a> {
        SourceRecords { server, tier, backups }
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
        assert!(s1.events.is_empty(), "the first snapshot has no predecessor to differ from");
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
        let equal_copy = [Arc::new(SourceBackup::clone(&t2[0])), t2[1].clone()];
        let s4 = build(Some(&s3), ResourceVersion(vec![4]), &[source(&k, 0, &equal_copy)], false);
        assert!(s4.events.is_empty(), "an equal record read again is no change");
    }

    #[test]
    fn tiers_merge_and_servers_prefix_names() {
        let t1 = [record("a", "b1", 10)];
        let t2 = [record("a", "b1", 10), record("a", "b0", 5)];
        let east: Arc<str> = "east".into();
        let s = build(None, ResourceVersion(vec![1, 1]), &[source(&east, 0, &t1), source(&east, 1, &t2)], true);
        assert_eq!(s.backups.iter().map(|b| b.name().to_string()).collect::<Vec<_>>(), ["east.a.b0", "east.a.b1"]);
        assert_eq!(s.get("east.a.b1").unwrap().tiers(), [true, true]);
        assert_eq!(s.get("east.a.b0").unwrap().tiers(), [false, true]);
        assert_eq!(s.get("east.a.b0").unwrap().server(), "east");
    }

    #[test]
    fn every_object_is_found_by_its_name_and_nothing_else_is() {
        let (east, west): (Arc<str>, Arc<str>) = ("east".into(), "west".into());
        let records = |n: usize| -> Vec<_> {
            (0..n).map(|i| record(&format!("pg-{}", i % 7), &format!("backup-{i:05}"), i as u64)).collect()
        };
        let (e, w) = (records(2000), records(300));
        let s = build(None, ResourceVersion(vec![1, 1]), &[source(&east, 0, &e), source(&west, 0, &w)], true);
        assert_eq!(s.backups.len(), 2300);
        for (i, b) in s.backups.iter().enumerate() {
            let name = b.name().to_string();
            assert!(Arc::ptr_eq(s.get(&name).unwrap(), b), "{name}");
            assert_eq!(s.position(&name), Ok(i), "the index agrees with the order");
        }
        for missing in
            ["", "east", "east.", "east.pg-1", "east.pg-1.backup-0000", "east.pg-1.backup-000011", "pg-1.backup-00001"]
        {
            assert!(s.get(missing).is_none(), "{missing}");
        }
        assert!(s.get("east.pg-1.backup-00001").is_some());
        assert!(s.get("west.pg-1.backup-00001").is_some());
        assert!(s.get("west.pg-1.backup-00300").is_none(), "west has 300");
    }
}
