//! A catalog [`Backup`] as the API shows it: the `KlioBackup` object (klio-catalog.md §2), its
//! metadata (labels, uid, creationTimestamp) and the annotations the service adds. The catalog
//! keeps records; this is the only place they become API objects.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::Serialize;

use crate::catalog::Backup;
use crate::model::{KlioBackup, KlioBackupSpec, KlioBackupStatus, TablespaceLayout};
use crate::upstream::kopia::ids::ManifestId;

/// The label keys the service puts on every object.
pub mod labels {
    /// The CloudNativePG cluster backed up: `-l` finds one cluster's backups.
    pub const CLUSTER: &str = "kliocatalog.enterprisedb.io/cluster";
    /// The Klio server (its configured name) the backup is on, where one service reads several.
    pub const SERVER: &str = "kliocatalog.enterprisedb.io/server";
    /// `"true"` on backups found on tier 1, absent on the others: `-l` selects a tier.
    pub const TIER1: &str = "kliocatalog.enterprisedb.io/tier1";
    /// `"true"` on backups found on tier 2, absent on the others.
    pub const TIER2: &str = "kliocatalog.enterprisedb.io/tier2";
}

/// The annotation marking the tier a backup was found on (klio-catalog.md §2).
pub const TIER_ANNOTATIONS: [&str; 2] = ["klio.io/tier1", "klio.io/tier2"];

/// The annotations naming a backup's Kopia snapshots, per tier: the product document's names
/// describe tier 1; tier 2 (where migration gave the snapshots new IDs) has its own.
pub mod snapshot_annotations {
    /// The PGDATA snapshot's manifest ID (also on each tablespace: its snapshot's ID).
    pub const PGDATA: [&str; 2] = ["klio.io/kopiaManifestID", "klio.io/tier2KopiaManifestID"];
    /// The pg_control snapshot's manifest ID.
    pub const CONTROLDATA: [&str; 2] =
        ["klio.io/controlDataKopiaManifestID", "klio.io/tier2ControlDataKopiaManifestID"];
}

impl Backup {
    /// One of the labels of [`labels`], without building the label map.
    pub fn label(&self, key: &str) -> Option<&str> {
        match key {
            labels::CLUSTER => Some(&self.record().cluster_name),
            labels::SERVER => Some(self.server()),
            labels::TIER1 => self.tiers()[0].then_some("true"),
            labels::TIER2 => self.tiers()[1].then_some("true"),
            _ => None,
        }
    }

    /// `metadata` as served: name, labels, resourceVersion, uid, creationTimestamp.
    pub fn metadata(&self) -> ObjectMeta {
        let labels = [labels::CLUSTER, labels::SERVER, labels::TIER1, labels::TIER2]
            .into_iter()
            .filter_map(|k| self.label(k).map(|v| (k.to_string(), v.to_string())))
            .collect();
        ObjectMeta {
            name: Some(self.name().to_string()),
            labels: Some(labels),
            resource_version: Some(self.resource_version().to_string()),
            uid: Some(self.uid()),
            creation_timestamp: self.created(),
            ..Default::default()
        }
    }

    /// `metadata.uid`: a name-based UUID (version 5) of the server, the cluster and the backup
    /// ID, so every replica, and every restart, gives a backup the same one, and two backups
    /// never share one (not even two clusters' backups of the same name).
    pub fn uid(&self) -> String {
        let record = self.record();
        uuid_v5(&[self.server(), &record.cluster_name, &record.name])
    }

    /// `metadata.creationTimestamp`: when the backup completed (its `stoppedAt`), which is when
    /// Klio adds it to its catalog. The same on every tier and replica, and it never changes.
    pub fn created(&self) -> Option<Time> {
        time(self.record().stopped_at)
    }

    /// The mapping of `klio-catalog.md` §2, plus the labels, the server and the Kopia snapshot
    /// IDs of every tier the backup is on (a record that carries them keeps its own).
    pub fn to_kliobackup(&self) -> KlioBackup {
        let record = self.record();
        let mut annotations = record.annotations.to_map();
        let set = |map: &mut BTreeMap<String, String>, key: &str, id: Option<ManifestId>| {
            if let Some(id) = id {
                map.entry(key.to_string()).or_insert_with(|| id.to_string());
            }
        };
        for (tier, marker) in TIER_ANNOTATIONS.iter().enumerate() {
            let Some(source) = self.on_tier(tier) else { continue };
            annotations.insert(marker.to_string(), "present".into());
            set(&mut annotations, snapshot_annotations::PGDATA[tier], source.snapshots.pgdata);
            set(&mut annotations, snapshot_annotations::CONTROLDATA[tier], source.snapshots.controldata);
        }
        let tablespaces: Vec<TablespaceLayout> = record
            .tablespaces
            .iter()
            .flatten()
            .map(|t| {
                let mut ts_annotations = t.annotations.to_map();
                for tier in 0..2 {
                    let id = self.on_tier(tier).and_then(|s| {
                        s.snapshots.tablespaces.iter().find(|(name, _)| **name == *t.name).map(|(_, id)| *id)
                    });
                    set(&mut ts_annotations, snapshot_annotations::PGDATA[tier], id);
                }
                TablespaceLayout {
                    name: t.name.to_string(),
                    oid: Some(t.oid.to_string()).filter(|s| !s.is_empty()),
                    path: Some(t.path.to_string()).filter(|s| !s.is_empty()),
                    annotations: Some(ts_annotations).filter(|a| !a.is_empty()),
                }
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
                server: Some(self.server().to_string()),
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

/// The namespace of KlioBackup UIDs: the UUID v5 of `kliocatalog.enterprisedb.io` in RFC 4122's
/// DNS namespace.
const UID_NAMESPACE: [u8; 16] =
    [0x9d, 0xf1, 0xc5, 0x32, 0x16, 0xda, 0x58, 0xb7, 0x83, 0xfd, 0x3b, 0xf0, 0x3d, 0x07, 0x0d, 0xc1];

/// RFC 4122 version 5: SHA-1 of the namespace and the name, with the version and variant bits
/// set. The name is the parts joined by `/`.
fn uuid_v5(parts: &[&str]) -> String {
    let mut sha = openssl::sha::Sha1::new();
    sha.update(&UID_NAMESPACE);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            sha.update(b"/");
        }
        sha.update(part.as_bytes());
    }
    let mut b = sha.finish();
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!("{}-{}-{}-{}-{}", h(0..4), h(4..6), h(6..8), h(8..10), h(10..16))
}

fn time(seconds: i64) -> Option<Time> {
    jiff::Timestamp::from_second(seconds).ok().map(Time)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::catalog::snapshot::{build, source_backup, SourceRecords};
    use crate::catalog::ResourceVersion;

    #[test]
    fn uids_are_rfc4122_version_5() {
        // Python: uuid.uuid5(uuid.NAMESPACE_DNS, "kliocatalog.enterprisedb.io")
        let namespace: String = UID_NAMESPACE.iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(namespace, "9df1c53216da58b783fd3bf03d070dc1");
        // Python: uuid.uuid5(uuid.UUID("9df1c532-16da-58b7-83fd-3bf03d070dc1"), "klio/pg/b1")
        assert_eq!(uuid_v5(&["klio", "pg", "b1"]), "ade2041b-d97a-50ce-8712-3263ea32f31e");
        assert_ne!(uuid_v5(&["klio", "pg", "b1"]), uuid_v5(&["klio", "pg-b1", ""]));
        let b = Backup::sample("cluster-example", "backup-20251113093137");
        assert_eq!(b.uid(), uuid_v5(&["klio", "cluster-example", "backup-20251113093137"]));
        assert_eq!(b.created().unwrap().0.as_second(), 1_763_026_299);
    }

    #[test]
    fn tier_markers_and_labels_follow_the_tiers() {
        let record = |id: &str, end_lsn: u64| source_backup("a", id, end_lsn);
        let east: Arc<str> = "east".into();
        let t1 = [record("b1", 10)];
        let t2 = [record("b1", 10), record("b0", 5)];
        let sources = [
            SourceRecords { server: &east, tier: 0, backups: &t1 },
            SourceRecords { server: &east, tier: 1, backups: &t2 },
        ];
        let s = build(None, ResourceVersion(vec![1, 1]), &sources, true);
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
        let only2 = b0.to_kliobackup();
        let ann = only2.status.unwrap().annotations.unwrap();
        assert_eq!((ann.get("klio.io/tier1"), ann.get("klio.io/tier2").map(String::as_str)), (None, Some("present")));
    }
}
