//! Klio's backup record (`metadata.json`, Klio's `BackupMetadata`), field names exactly as Klio
//! writes them. Unknown fields are
//! ignored (Klio adds fields over time), and so are the fields a KlioBackup does not show.
//!
//! Records are kept in memory for every backup of every tier, so they are stored compactly:
//! boxed strings, cluster names and annotation keys shared between records ([`Interner`]), and
//! annotations as a sorted slice rather than a map (a `BTreeMap` node is 544 bytes however few
//! entries it holds; a record has two or three).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use compact_str::CompactString;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One base backup's metadata, as stored by Klio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// The backup ID, e.g. `backup-20251113093137`: inside the record up to 24 bytes (Klio's
    /// are 21), so that a record read keeps no small allocation of its own among the read's
    /// short-lived strings (whose pages would then stay resident).
    pub name: CompactString,
    /// The CloudNativePG cluster backed up, shared between records: decoded into the name
    /// already known when there is one ([`shared_cluster_name`]), not allocated per record.
    #[serde(deserialize_with = "shared_cluster_name")]
    pub cluster_name: Arc<str>,
    /// The WAL position (LSN) where the backup started.
    pub start_lsn: u64,
    /// The WAL position where it ended.
    pub end_lsn: u64,
    /// The WAL segment file at the start.
    pub start_wal: WalName,
    /// The WAL segment file at the end.
    pub end_wal: WalName,
    // tli, segmentSize, backupLabel, tablespaceMap and pgData are part of the record but not of
    // a KlioBackup: they are not kept.
    /// The tablespaces backed up with the data directory; absent in records without any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tablespaces: Option<Box<[TablespaceRecord]>>,
    /// Backend metadata Klio attaches (e.g. `klio.io/kopiaManifestID`).
    #[serde(default, skip_serializing_if = "Annotations::is_empty")]
    pub annotations: Annotations,
    /// When the backup started, Unix seconds.
    pub started_at: i64,
    /// When it ended, Unix seconds.
    pub stopped_at: i64,
}

/// One tablespace of a backup, as the record lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TablespaceRecord {
    /// The tablespace's name in PostgreSQL.
    pub name: Box<str>,
    /// Its OID, as a string (as Klio writes it).
    #[serde(default)]
    pub oid: Box<str>,
    /// Its location on the PostgreSQL host.
    #[serde(default)]
    pub path: Box<str>,
    /// Backend metadata Klio attaches to this tablespace.
    #[serde(default, skip_serializing_if = "Annotations::is_empty")]
    pub annotations: Annotations,
}

/// A WAL segment file name. Klio writes 24 upper-case hexadecimal characters (or `""` when the
/// timeline was unknown); those are kept as the 12 bytes they spell, anything else as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalName {
    /// The usual name, as the 12 bytes its hex spells.
    Hex([u8; 12]),
    /// Anything else, verbatim (behind a thin pointer: the name is 16 bytes, not 24).
    #[allow(clippy::box_collection)]
    Text(Box<String>),
}

impl WalName {
    fn parse(text: &str) -> Self {
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        let bytes = text.as_bytes();
        if bytes.len() == 24 {
            let mut out = [0u8; 12];
            if bytes
                .chunks(2)
                .zip(out.iter_mut())
                .all(|(pair, o)| digit(pair[0]).zip(digit(pair[1])).map(|(h, l)| *o = h << 4 | l).is_some())
            {
                return Self::Hex(out);
            }
        }
        Self::Text(Box::new(text.into()))
    }
}

impl fmt::Display for WalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hex(bytes) => bytes.iter().try_for_each(|b| write!(f, "{b:02X}")),
            Self::Text(text) => f.write_str(text),
        }
    }
}

impl Serialize for WalName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WalName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Ok(Self::parse(&text))
    }
}

/// A string map sorted by key. A JSON object with a key twice keeps the last value, as a map
/// would.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations(Box<[(Arc<str>, Box<str>)]>);

impl Annotations {
    /// True without entries (then the field is not written).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value under `key`, by binary search.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok().map(|i| &*self.0[i].1)
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    /// The map the API types want.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }
}

impl<K: Into<Arc<str>>, V: Into<Box<str>>> FromIterator<(K, V)> for Annotations {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        let mut entries: Vec<(Arc<str>, Box<str>)> = vec![];
        for (k, v) in iter {
            let (k, v) = (k.into(), v.into());
            match entries.binary_search_by(|(e, _)| e.cmp(&k)) {
                Ok(i) => entries[i].1 = v,
                Err(i) => entries.insert(i, (k, v)),
            }
        }
        Self(entries.into_boxed_slice())
    }
}

impl Serialize for Annotations {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Annotations {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Annotations;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Annotations, A::Error> {
                let mut entries: Vec<(Box<str>, Box<str>)> = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(entries.into_iter().collect())
            }
            fn visit_unit<E>(self) -> Result<Annotations, E> {
                Ok(Annotations::default())
            }
        }
        deserializer.deserialize_any(Entries)
    }
}

thread_local! {
    /// The cluster names records decoded on this thread named, each once, and the size at which
    /// those no record holds any more are dropped (twice what was left at the last pruning, at
    /// least [`KNOWN_CLUSTERS_PRUNE`]: pruning stays rare however many clusters are live).
    static KNOWN_CLUSTERS: std::cell::RefCell<(HashSet<Arc<str>>, usize)> =
        std::cell::RefCell::new((HashSet::new(), KNOWN_CLUSTERS_PRUNE));
}

/// Known cluster names kept, at least, before the ones no record holds are dropped.
const KNOWN_CLUSTERS_PRUNE: usize = 4096;

/// Decodes a cluster name into the shared one already known, if any: thousands of records name
/// a few hundred clusters.
fn shared_cluster_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<str>, D::Error> {
    struct Shared;
    impl<'de> Visitor<'de> for Shared {
        type Value = Arc<str>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a cluster name")
        }
        fn visit_str<E>(self, name: &str) -> Result<Arc<str>, E> {
            Ok(KNOWN_CLUSTERS.with(|known| {
                let (known, prune_at) = &mut *known.borrow_mut();
                if let Some(shared) = known.get(name) {
                    return shared.clone();
                }
                if known.len() >= *prune_at {
                    known.retain(|n| Arc::strong_count(n) > 1);
                    *prune_at = (2 * known.len()).max(KNOWN_CLUSTERS_PRUNE);
                }
                let shared: Arc<str> = name.into();
                known.insert(shared.clone());
                shared
            }))
        }
    }
    deserializer.deserialize_str(Shared)
}

/// Shares equal strings between records: thousands of backups name a few hundred clusters and a
/// handful of annotation keys.
#[derive(Default)]
pub struct Interner(HashSet<Arc<str>>);

impl Interner {
    fn share(&mut self, s: &mut Arc<str>) {
        match self.0.get(s) {
            Some(shared) => *s = shared.clone(),
            None => {
                self.0.insert(s.clone());
            }
        }
    }

    fn share_keys(&mut self, annotations: &mut Annotations) {
        for (k, _) in annotations.0.iter_mut() {
            self.share(k);
        }
    }

    /// Makes a freshly decoded record share its cluster name and annotation keys with the
    /// records seen before.
    pub fn record(&mut self, r: &mut BackupRecord) {
        self.share(&mut r.cluster_name);
        self.share_keys(&mut r.annotations);
        for t in r.tablespaces.iter_mut().flatten() {
            self.share_keys(&mut t.annotations);
        }
    }
}

/// Whether a cluster or backup name can be part of a KlioBackup's name
/// (`<cluster>.<backup>`): what the API accepts in a name, without the dot that joins them.
pub fn is_name_part(s: &str) -> bool {
    !s.is_empty() && s.len() <= 200 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// One sample record in Klio's format (as Klio 0.0.10 and later write it: the Kopia snapshot
/// IDs are not in the record, the service finds them in the repository).
#[allow(clippy::too_many_arguments)]
pub fn sample_record(
    cluster: &str,
    id: &str,
    started: i64,
    duration: i64,
    segment: u64,
    tablespaces: bool,
) -> serde_json::Value {
    let start_lsn = segment * 0x100_0000 + 0x28;
    let end_lsn = start_lsn + 0xF8;
    let wal = format!("{:08X}{:08X}{:08X}", 1, segment >> 8, segment & 0xFF);
    let mut record = serde_json::json!({
        "name": id,
        "clusterName": cluster,
        "startLsn": start_lsn,
        "endLsn": end_lsn,
        "startWal": wal,
        "endWal": wal,
        "tli": 1,
        "segmentSize": 16_777_216,
        "backupLabel": format!("START WAL LOCATION: {:X}/{:X} (file {wal})\nCHECKPOINT LOCATION: {:X}/{:X}\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: {started}\nLABEL: {id}\nSTART TIMELINE: 1\n", start_lsn >> 32, start_lsn & 0xFFFF_FFFF, start_lsn >> 32, (start_lsn + 0x60) & 0xFFFF_FFFF),
        "tablespaceMap": "",
        "pgData": "/var/lib/postgresql/data/pgdata",
        "startedAt": started,
        "stoppedAt": started + duration,
    });
    if tablespaces {
        record["tablespaceMap"] = serde_json::json!("16385 /var/lib/postgresql/tablespaces/analytics\n");
        // Klio writes a tablespace's `annotations` without omitempty: null when unset.
        record["tablespaces"] = serde_json::json!([{ "name": "analytics", "oid": "16385", "path": "/var/lib/postgresql/tablespaces/analytics", "annotations": null }]);
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_are_a_sorted_map() {
        let a: Annotations = serde_json::from_str(r#"{"b":"2","a":"1","b":"3"}"#).unwrap();
        assert_eq!(a.iter().collect::<Vec<_>>(), [("a", "1"), ("b", "3")]);
        assert_eq!((a.get("a"), a.get("b"), a.get("c")), (Some("1"), Some("3"), None));
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"a":"1","b":"3"}"#);
        let none: Annotations = serde_json::from_str("null").unwrap();
        assert!(none.is_empty());
        assert!(serde_json::from_str::<Annotations>(r#"{"a":1}"#).is_err());
    }

    #[test]
    fn wal_names_round_trip() {
        for text in ["000000010000000000000007", "00000001000000000000002A", "", "00000001000000000000002a", "x"] {
            let wal: WalName = serde_json::from_value(serde_json::json!(text)).unwrap();
            assert_eq!(wal.to_string(), text);
            assert_eq!(serde_json::to_value(&wal).unwrap(), serde_json::json!(text));
            assert_eq!(matches!(wal, WalName::Hex(_)), text.len() == 24 && text != "00000001000000000000002a");
        }
    }

    #[test]
    fn decoding_shares_cluster_names_and_keeps_names_of_any_length() {
        let decode =
            |id: &str| serde_json::from_value::<BackupRecord>(sample_record("pg-shared", id, 1, 2, 3, false)).unwrap();
        let long = "b".repeat(60);
        let (a, b) = (decode("backup-20251113093137"), decode(&long));
        assert!(Arc::ptr_eq(&a.cluster_name, &b.cluster_name));
        assert_eq!((&*a.name, &*b.name), ("backup-20251113093137", long.as_str()));
        assert_eq!(serde_json::to_value(&b).unwrap()["name"], long.as_str());
        let odd = serde_json::from_value::<WalName>(serde_json::json!("x")).unwrap();
        assert_eq!((odd.to_string(), std::mem::size_of::<WalName>()), ("x".to_string(), 16));
    }

    #[test]
    fn interned_strings_are_shared() {
        let sample = |id| {
            let mut record = crate::upstream::record::sample_record("pg", id, 1, 2, 3, false);
            // As records written before Klio 0.0.10 carry them.
            record["annotations"] = serde_json::json!({ "klio.io/kopiaManifestID": id });
            serde_json::from_value::<BackupRecord>(record)
        };
        let (mut a, mut b) = (sample("b1").unwrap(), sample("b2").unwrap());
        let mut interner = Interner::default();
        interner.record(&mut a);
        interner.record(&mut b);
        assert!(Arc::ptr_eq(&a.cluster_name, &b.cluster_name));
        assert!(Arc::ptr_eq(&a.annotations.0[0].0, &b.annotations.0[0].0));
    }
}
