//! A Kopia repository as Klio fills it, made from a directory of backup records: per record
//! file `<cluster>/<backup>.json` (the backup's `metadata.json`), the four kinds of snapshot
//! Klio takes (metadata, PGDATA, pg_control, one per tablespace), with Klio's labels and tags,
//! snapshot manifest JSON, `k` directory objects, file contents, and indirect objects for files
//! larger than the split size.
//!
//! IDs are keyed hashes (HMAC-SHA256, 128 bits) under the repository's own key, kept in
//! `.repository-key` (made at first start), so they are stable across restarts and differ
//! between directories, as two repositories' do. A
//! metadata manifest's ID covers the record's bytes: rewriting a record is a new snapshot (a new
//! ID), as it is in Kopia. A record that is not JSON is still served (its labels come from its
//! path), so readers meet undecodable records as they would in a damaged repository.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::Deserialize;

pub use super::files::write_key;
use super::files::{record_files, repository_key, FileStamp};
use crate::upstream::kopia::format::{
    time_text, DirEntry, DirSummary, Directory, IndirectEntry, IndirectIndex, SnapshotManifest, SnapshotStats,
    SourceInfo, DIRECTORY_STREAM, INDIRECT_STREAM,
};
use crate::upstream::kopia::ids::{ContentId, ManifestId, ObjectId};
use crate::upstream::kopia::{labels, SnapshotKind};

/// The file that fixes data snapshot IDs (hidden: never read as a record).
pub const SNAPSHOT_IDS_FILE: &str = ".snapshot-ids.json";

/// The repository's hash key, 32 bytes in hex (hidden: never read as a record).
pub const KEY_FILE: &str = ".repository-key";

/// The user part of every snapshot source (Klio's clients connect as `klio@<cluster>`).
const SOURCE_USER: &str = "klio";

/// A manifest as the repository stores it.
#[derive(Debug)]
pub struct StoredManifest {
    /// Its ID, what `GetManifest` asks for.
    pub id: ManifestId,
    /// When it was written, nanoseconds since the epoch (FindManifests reports it; readers
    /// derive resourceVersions from it).
    pub mod_time_nanos: i64,
    /// Its labels, what `FindManifests` matches.
    pub labels: BTreeMap<String, String>,
    /// Its JSON payload (a snapshot manifest).
    pub json: Bytes,
}

/// Everything readable at one moment.
#[derive(Default)]
pub struct View {
    /// Oldest first (Kopia's FindManifests order), then by ID.
    pub manifests: Vec<Arc<StoredManifest>>,
    /// The same manifests by ID.
    pub by_id: HashMap<ManifestId, Arc<StoredManifest>>,
    /// Every content of every snapshot, plain.
    pub contents: HashMap<ContentId, Bytes>,
}

/// The directory, scanned at most every `rescan` (requests in between see the same view).
pub struct DirRepository {
    dir: PathBuf,
    key: openssl::pkey::PKey<openssl::pkey::Private>,
    split_bytes: usize,
    rescan: Duration,
    state: Mutex<ScanState>,
}

#[derive(Default)]
struct ScanState {
    at: Option<Instant>,
    files: HashMap<PathBuf, ScannedFile>,
    ids: Option<(FileStamp, IdOverrides)>,
    view: Arc<View>,
}

struct ScannedFile {
    stamp: FileStamp,
    read_at: SystemTime,
    built: Arc<BuiltRecord>,
}

/// The snapshots one record file stands for.
struct BuiltRecord {
    manifests: Vec<Arc<StoredManifest>>,
    contents: Vec<(ContentId, Bytes)>,
}

/// `.snapshot-ids.json`: data snapshot IDs by `<cluster>/<backup>`.
type IdOverrides = HashMap<String, FixedIds>;

#[derive(Debug, Default, Clone, Deserialize)]
struct FixedIds {
    pgdata: Option<String>,
    controldata: Option<String>,
    #[serde(default)]
    tablespaces: HashMap<String, String>,
}

/// What the server needs from a record to name its snapshots; a record that does not decode
/// this far is named after its path.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordShape {
    name: String,
    cluster_name: String,
    #[serde(default)]
    pg_data: String,
    #[serde(default)]
    started_at: i64,
    #[serde(default)]
    stopped_at: i64,
    #[serde(default)]
    tablespaces: Option<Vec<TablespaceShape>>,
}

#[derive(Deserialize)]
struct TablespaceShape {
    name: String,
    #[serde(default)]
    path: String,
}

impl DirRepository {
    /// A repository over the existing directory `dir` (its key file is written when missing);
    /// files larger than `split_bytes` become indirect objects; the directory is scanned again
    /// at most every `rescan`.
    pub fn new(dir: &Path, split_bytes: usize, rescan: Duration) -> anyhow::Result<Self> {
        anyhow::ensure!(dir.is_dir(), "--dir {} is not a directory", dir.display());
        let secret = repository_key(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            key: openssl::pkey::PKey::hmac(&secret)?,
            split_bytes: split_bytes.max(64),
            rescan,
            state: Default::default(),
        })
    }

    /// The key of the content hash, announced to clients as `hmac_secret`.
    pub fn hmac_secret(&self) -> Vec<u8> {
        self.key.raw_private_key().unwrap_or_default()
    }

    /// The view of the last scan (made now if there was none), without looking at the
    /// directory: what manifests and contents are read from between listings.
    pub fn current(&self) -> Arc<View> {
        {
            let state = self.state.lock().expect("repository scan");
            if state.at.is_some() {
                return state.view.clone();
            }
        }
        self.view()
    }

    /// The current view: the last one, or a new scan when it is older than `rescan`.
    pub fn view(&self) -> Arc<View> {
        let mut state = self.state.lock().expect("repository scan");
        if state.at.is_some_and(|at| at.elapsed() < self.rescan) {
            return state.view.clone();
        }
        if let Err(e) = self.scan(&mut state) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "scanning the catalog directory failed; serving the last scan");
        }
        state.at = Some(Instant::now());
        state.view.clone()
    }

    fn scan(&self, state: &mut ScanState) -> std::io::Result<()> {
        let ids_changed = self.read_ids(state);
        let overrides = state.ids.as_ref().map(|(_, ids)| ids.clone()).unwrap_or_default();
        let files = record_files(&self.dir)?;
        let mut changed = ids_changed || files.len() != state.files.len();
        let mut seen = HashMap::with_capacity(files.len());
        for path in files {
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            let stamp = FileStamp::of(&meta);
            let kept = state.files.remove(&path);
            let entry = match kept {
                Some(k) if !ids_changed && k.stamp == stamp && stamp.changed_before(k.read_at) => k,
                kept => {
                    let read_at = SystemTime::now();
                    let bytes = match std::fs::read(&path) {
                        Ok(b) => b,
                        Err(e) => {
                            tracing::warn!(file = %path.display(), error = %e, "unreadable record file");
                            continue;
                        }
                    };
                    let built = Arc::new(self.build(&path, &bytes, &stamp, &overrides));
                    let same = kept.as_ref().is_some_and(|k| same_manifests(&k.built, &built));
                    changed |= !same;
                    ScannedFile { stamp, read_at, built: if same { kept.expect("kept").built } else { built } }
                }
            };
            seen.insert(path, entry);
        }
        changed |= !state.files.is_empty(); // files that went away
        state.files = seen;
        if changed || state.at.is_none() {
            state.view = Arc::new(assemble(state.files.values().map(|f| &*f.built)));
        }
        Ok(())
    }

    /// Re-reads `.snapshot-ids.json` when it changed; true when it did.
    fn read_ids(&self, state: &mut ScanState) -> bool {
        let path = self.dir.join(SNAPSHOT_IDS_FILE);
        let stamp = std::fs::metadata(&path).ok().map(|m| FileStamp::of(&m));
        match (&state.ids, stamp) {
            (Some((old, _)), Some(new)) if *old == new => false,
            (None, None) => false,
            (_, None) => {
                state.ids = None;
                true
            }
            (_, Some(new)) => {
                let ids = std::fs::read(&path).ok().and_then(|b| match serde_json::from_slice::<IdOverrides>(&b) {
                    Ok(ids) => Some(ids),
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable snapshot ID file");
                        None
                    }
                });
                state.ids = Some((new, ids.unwrap_or_default()));
                true
            }
        }
    }

    fn hash(&self, parts: &[&[u8]]) -> [u8; 16] {
        let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &self.key)
            .expect("an HMAC-SHA256 signer");
        for p in parts {
            signer.update(p).expect("hashing");
            signer.update(&[0]).expect("hashing");
        }
        let mac = signer.sign_to_vec().expect("hashing");
        let mut out = [0; 16];
        out.copy_from_slice(&mac[..16]);
        out
    }

    fn content(&self, prefix: Option<char>, data: &[u8], contents: &mut Vec<(ContentId, Bytes)>) -> ContentId {
        let id = ContentId::new(prefix, &self.hash(&[data]));
        contents.push((id.clone(), Bytes::copy_from_slice(data)));
        id
    }

    /// Stores a file's bytes: one content, or parts and an index (an `I` object).
    fn object(&self, data: &[u8], contents: &mut Vec<(ContentId, Bytes)>) -> ObjectId {
        if data.len() <= self.split_bytes {
            return ObjectId::direct(self.content(None, data, contents));
        }
        let mut entries = vec![];
        for (i, part) in data.chunks(self.split_bytes).enumerate() {
            let id = self.content(None, part, contents);
            entries.push(IndirectEntry {
                start: (i * self.split_bytes) as i64,
                length: part.len() as i64,
                object: id.to_string(),
            });
        }
        let index = IndirectIndex { stream: INDIRECT_STREAM.into(), entries };
        let mut json = serde_json::to_vec(&index).expect("an indirect index");
        json.push(b'\n');
        let index_id = self.content(Some('x'), &json, contents);
        ObjectId { indirection: 1, compressed: false, content: index_id }
    }

    fn directory(&self, entries: Vec<DirEntry>, contents: &mut Vec<(ContentId, Bytes)>) -> (ObjectId, DirSummary) {
        let summary = DirSummary {
            size: entries.iter().map(|e| e.size).sum(),
            files: entries.iter().filter(|e| e.kind == "f").count() as i64,
            symlinks: 0,
            dirs: 1,
            max_time: entries.iter().map(|e| e.mtime.clone()).max().unwrap_or_default(),
            num_failed: 0,
        };
        let dir = Directory { stream: DIRECTORY_STREAM.into(), entries, summary: Some(summary.clone()) };
        let mut json = serde_json::to_vec(&dir).expect("a directory");
        json.push(b'\n');
        (ObjectId::direct(self.content(Some('k'), &json, contents)), summary)
    }

    fn build(&self, path: &Path, bytes: &[u8], stamp: &FileStamp, overrides: &IdOverrides) -> BuiltRecord {
        let rel = path.strip_prefix(&self.dir).unwrap_or(path);
        let shape = serde_json::from_slice::<RecordShape>(bytes).ok();
        let (cluster, backup) = match &shape {
            Some(s) => (s.cluster_name.clone(), s.name.clone()),
            None => (
                rel.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                rel.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            ),
        };
        let pg_data = shape
            .as_ref()
            .map(|s| s.pg_data.trim_end_matches('/').to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/var/lib/postgresql/data/pgdata".into());
        let written = stamp.mtime_nanos();
        let (started, stopped) = shape
            .as_ref()
            .map(|s| (s.started_at.saturating_mul(1_000_000_000), s.stopped_at.saturating_mul(1_000_000_000)))
            .unwrap_or((written, written));
        let mut contents = vec![];
        let mut manifests = vec![];
        let fixed = overrides.get(&format!("{cluster}/{backup}")).cloned().unwrap_or_default();
        let manifest_id = |fixed: Option<&String>, parts: &[&[u8]]| -> ManifestId {
            fixed.and_then(|f| f.parse().ok()).unwrap_or_else(|| ManifestId(self.hash(parts)))
        };
        let mut snapshot = |kind: SnapshotKind,
                            id: ManifestId,
                            mod_time: i64,
                            source_path: String,
                            root: DirEntry,
                            times: (i64, i64),
                            tablespace: Option<&str>| {
            let mut tags = BTreeMap::from([
                (labels::CONTENT.to_string(), kind.label().to_string()),
                (labels::BACKUP.to_string(), backup.clone()),
            ]);
            if let Some(t) = tablespace {
                tags.insert(labels::TABLESPACE.to_string(), t.to_string());
            }
            let mut labels_map = tags.clone();
            labels_map.insert(labels::TYPE.into(), labels::SNAPSHOT.into());
            labels_map.insert(labels::HOSTNAME.into(), cluster.clone());
            labels_map.insert(labels::USERNAME.into(), SOURCE_USER.into());
            labels_map.insert(labels::PATH.into(), source_path.clone());
            let manifest = SnapshotManifest {
                id: String::new(),
                source: SourceInfo { host: cluster.clone(), user_name: SOURCE_USER.into(), path: source_path },
                description: format!("{} for {backup}", kind.label()),
                start_time: time_text(times.0),
                end_time: time_text(times.1),
                stats: Some(SnapshotStats {
                    total_size: root.size.max(root.summ.as_ref().map_or(0, |s| s.size)),
                    file_count: root.summ.as_ref().map_or(1, |s| s.files as i32),
                    non_cached_files: 1,
                    dir_count: root.summ.as_ref().map_or(0, |s| s.dirs as i32),
                    ..Default::default()
                }),
                incomplete: String::new(),
                root_entry: root,
                tags,
                pins: vec![],
            };
            manifests.push(Arc::new(StoredManifest {
                id,
                mod_time_nanos: mod_time,
                labels: labels_map,
                json: Bytes::from(serde_json::to_vec(&manifest).expect("a snapshot manifest")),
            }));
        };

        // The data snapshots, written before the metadata snapshot.
        if let Some(shape) = &shape {
            let data_file = |name: &str, data: &[u8], contents: &mut Vec<(ContentId, Bytes)>| DirEntry {
                name: name.into(),
                kind: "f".into(),
                mode: "0600".into(),
                size: data.len() as i64,
                mtime: time_text(stopped),
                obj: self.object(data, contents).to_string(),
                summ: None,
            };
            let version = data_file("PG_VERSION", b"17\n", &mut contents);
            let (obj, summ) = self.directory(vec![version], &mut contents);
            let root = |name: &str, obj: &ObjectId, summ: &DirSummary| DirEntry {
                name: name.into(),
                kind: "d".into(),
                mode: "0700".into(),
                mtime: time_text(stopped),
                obj: obj.to_string(),
                summ: Some(summ.clone()),
                ..Default::default()
            };
            let id = manifest_id(fixed.pgdata.as_ref(), &[b"pgdata", cluster.as_bytes(), backup.as_bytes()]);
            snapshot(
                SnapshotKind::Pgdata,
                id,
                written - 3_000_000,
                pg_data.clone(),
                root(&pg_data, &obj, &summ),
                (started, stopped),
                None,
            );
            let control = data_file(&format!("{pg_data}/global/pg_control"), &[0; 8192], &mut contents);
            let id = manifest_id(fixed.controldata.as_ref(), &[b"controldata", cluster.as_bytes(), backup.as_bytes()]);
            snapshot(
                SnapshotKind::Controldata,
                id,
                written - 2_000_000,
                format!("{pg_data}/global/pg_control"),
                control,
                (stopped, stopped),
                None,
            );
            for t in shape.tablespaces.iter().flatten() {
                let (obj, summ) = self.directory(vec![], &mut contents);
                let id = manifest_id(
                    fixed.tablespaces.get(&t.name),
                    &[b"tablespace", cluster.as_bytes(), backup.as_bytes(), t.name.as_bytes()],
                );
                snapshot(
                    SnapshotKind::Tablespace,
                    id,
                    written - 1_000_000,
                    t.path.clone(),
                    root(&t.path, &obj, &summ),
                    (started, stopped),
                    Some(&t.name),
                );
            }
        }

        // The metadata snapshot: a virtual directory holding metadata.json.
        let file = DirEntry {
            name: "metadata.json".into(),
            kind: "f".into(),
            mode: "0644".into(),
            size: bytes.len() as i64,
            mtime: time_text(written),
            obj: self.object(bytes, &mut contents).to_string(),
            summ: None,
        };
        let (obj, summ) = self.directory(vec![file], &mut contents);
        let source_path = format!("{pg_data}_meta");
        let root = DirEntry {
            name: source_path.clone(),
            kind: "d".into(),
            mode: "0777".into(),
            // Go's zero time, as Kopia records the virtual directory of a stdin snapshot.
            mtime: "1754-08-30T22:43:41.128654848Z".into(),
            obj: obj.to_string(),
            summ: Some(summ),
            ..Default::default()
        };
        let id = ManifestId(self.hash(&[b"metadata", rel.to_string_lossy().as_bytes(), &openssl::sha::sha256(bytes)]));
        snapshot(SnapshotKind::Metadata, id, written, source_path, root, (written, written), None);
        BuiltRecord { manifests, contents }
    }
}

fn same_manifests(a: &BuiltRecord, b: &BuiltRecord) -> bool {
    a.manifests.len() == b.manifests.len()
        && a.manifests
            .iter()
            .zip(&b.manifests)
            .all(|(x, y)| x.id == y.id && x.mod_time_nanos == y.mod_time_nanos && x.json == y.json)
}

fn assemble<'a>(records: impl Iterator<Item = &'a BuiltRecord>) -> View {
    let mut view = View::default();
    for r in records {
        for m in &r.manifests {
            view.by_id.insert(m.id, m.clone());
            view.manifests.push(m.clone());
        }
        for (id, data) in &r.contents {
            view.contents.entry(id.clone()).or_insert_with(|| data.clone());
        }
    }
    view.manifests.sort_by_key(|m| (m.mod_time_nanos, m.id));
    view.manifests.dedup_by(|a, b| a.id == b.id);
    view
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository directory with a cluster directory `pg` (removed when dropped).
    fn temp_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pg")).unwrap();
        dir
    }

    #[test]
    fn every_change_is_a_new_manifest_even_in_place_within_one_tick() {
        let tmp = temp_dir();
        let dir = tmp.path();
        let file = dir.join("pg/b1.json");
        let record = |lsn: u32| format!(r#"{{"clusterName":"pg","name":"b1","endLsn":{lsn}}}"#);
        std::fs::write(&file, record(1000)).unwrap();
        let repo = DirRepository::new(dir, 1 << 20, Duration::ZERO).unwrap();
        let metadata_ids = |v: &View| -> Vec<ManifestId> {
            v.manifests.iter().filter(|m| m.labels[labels::CONTENT] == "metadata").map(|m| m.id).collect()
        };
        let first = repo.view();
        assert_eq!(first.manifests.len(), 3, "metadata, pgdata and controldata");
        assert!(Arc::ptr_eq(&repo.view(), &first), "nothing changed: the same view");
        // Same size, same inode, right away: the times may not move at all.
        std::fs::write(&file, record(2000)).unwrap();
        let second = repo.view();
        assert_ne!(metadata_ids(&second), metadata_ids(&first));
        std::fs::remove_file(&file).unwrap();
        assert!(repo.view().manifests.is_empty());
    }

    #[test]
    fn large_files_are_indirect_objects_and_ids_can_be_fixed() {
        let tmp = temp_dir();
        let dir = tmp.path();
        let record = serde_json::json!({"clusterName": "pg", "name": "b1", "backupLabel": "x".repeat(300),
            "tablespaces": [{"name": "ts", "oid": "1", "path": "/ts"}]});
        std::fs::write(dir.join("pg/b1.json"), record.to_string()).unwrap();
        std::fs::write(
            dir.join(SNAPSHOT_IDS_FILE),
            r#"{"pg/b1": {"pgdata": "2272afec220f48d0fa0064f85b043ac4", "tablespaces": {"ts": "7f1c2d3e4a5b6c7d8e9f0a1b2c3d4e5f"}}}"#,
        )
        .unwrap();
        let repo = DirRepository::new(dir, 128, Duration::ZERO).unwrap();
        let view = repo.view();
        let kinds: BTreeMap<&str, &StoredManifest> =
            view.manifests.iter().map(|m| (m.labels[labels::CONTENT].as_str(), &**m)).collect();
        assert_eq!(kinds.keys().copied().collect::<Vec<_>>(), ["controldata", "metadata", "pgdata", "tablespace"]);
        assert_eq!(kinds["pgdata"].id.to_string(), "2272afec220f48d0fa0064f85b043ac4");
        assert_eq!(kinds["tablespace"].id.to_string(), "7f1c2d3e4a5b6c7d8e9f0a1b2c3d4e5f");
        assert_eq!(kinds["tablespace"].labels[labels::TABLESPACE], "ts");
        // metadata -> directory -> I-object -> parts
        let manifest: SnapshotManifest = serde_json::from_slice(&kinds["metadata"].json).unwrap();
        let dir_obj: ObjectId = manifest.root_entry.obj.parse().unwrap();
        let directory: Directory = serde_json::from_slice(&view.contents[&dir_obj.content]).unwrap();
        let file: ObjectId = directory.entries[0].obj.parse().unwrap();
        assert_eq!(file.indirection, 1);
        let index: IndirectIndex = serde_json::from_slice(&view.contents[&file.content]).unwrap();
        let whole: Vec<u8> = index
            .entries
            .iter()
            .flat_map(|e| view.contents[&e.object.parse::<ContentId>().unwrap()].to_vec())
            .collect();
        assert_eq!(whole, record.to_string().as_bytes());
    }
}
