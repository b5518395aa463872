//! The JSON Kopia stores: snapshot manifests (the payload of a `snapshot` manifest), directory
//! objects (`kopia:directory`) and the index of an indirect object (`kopia:indirect`). Field
//! names are Kopia's; fields a reader does not need are optional, unknown fields are ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A snapshot manifest's payload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotManifest {
    /// Stored empty: the manifest's ID is the one it was asked for by.
    #[serde(default)]
    pub id: String,
    /// Where the snapshot was taken (the same values as the manifest's labels).
    #[serde(default)]
    pub source: SourceInfo,
    /// Free text; Klio writes `metadata for <backup>` and the like.
    #[serde(default)]
    pub description: String,
    /// RFC 3339 with nanoseconds.
    #[serde(default)]
    pub start_time: String,
    /// When the snapshot finished, same format.
    #[serde(default)]
    pub end_time: String,
    /// What the uploader counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<SnapshotStats>,
    /// Non-empty for a checkpoint or an interrupted snapshot: not a backup.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub incomplete: String,
    /// The snapshot's root; its `obj` is what a reader reads next.
    pub root_entry: DirEntry,
    /// Tags, keys with their `tag:` prefix (the same as the manifest's `tag:` labels).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Pins keep a snapshot from expiring; Klio pins `klio.io/tier2` until tier 2 has the backup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pins: Vec<String>,
}

/// Where a snapshot was taken.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceInfo {
    /// The host; for Klio, the PostgreSQL cluster's name.
    #[serde(default)]
    pub host: String,
    /// The user (`klio` for Klio's snapshots).
    #[serde(default)]
    pub user_name: String,
    /// The path snapshotted.
    #[serde(default)]
    pub path: String,
}

/// What an uploader counted (informative only).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStats {
    /// Bytes of the files snapshotted.
    pub total_size: i64,
    /// Bytes of the files excluded by policy.
    pub excluded_total_size: i64,
    /// Files snapshotted.
    pub file_count: i32,
    /// Files taken unchanged from the previous snapshot.
    pub cached_files: i32,
    /// Files read and hashed.
    pub non_cached_files: i32,
    /// Directories snapshotted.
    pub dir_count: i32,
    /// Files excluded by policy.
    pub excluded_file_count: i32,
    /// Directories excluded by policy.
    pub excluded_dir_count: i32,
    /// Errors the policy said to ignore.
    pub ignored_error_count: i32,
    /// Errors met; the entries concerned are missing.
    pub error_count: i32,
}

/// One entry of a directory object, and a snapshot's root.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DirEntry {
    /// The entry's name in its directory (a root's is the source path).
    #[serde(default)]
    pub name: String,
    /// `d` directory, `f` file, `s` symlink.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Octal with a leading 0, e.g. `0644`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    /// A file's size in bytes; omitted when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: i64,
    /// Modification time, Kopia's time format; omitted when zero.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mtime: String,
    /// The object holding the entry's data (see [`super::ids::ObjectId`]).
    #[serde(default)]
    pub obj: String,
    /// A directory's summary; directories only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summ: Option<DirSummary>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// What a directory holds, recursively.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirSummary {
    /// Bytes of every file below.
    pub size: i64,
    /// Files below.
    pub files: i64,
    /// Symbolic links below.
    pub symlinks: i64,
    /// Directories below, this one included.
    pub dirs: i64,
    /// The newest modification time below.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub max_time: String,
    /// Entries that could not be read.
    pub num_failed: i32,
}

/// The `stream` value of a directory object.
pub const DIRECTORY_STREAM: &str = "kopia:directory";
/// The `stream` value of an indirect object's index.
pub const INDIRECT_STREAM: &str = "kopia:indirect";

/// A directory object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Directory {
    /// [`DIRECTORY_STREAM`]; anything else is not a directory.
    pub stream: String,
    /// What the directory holds, one level.
    #[serde(default)]
    pub entries: Vec<DirEntry>,
    /// The same summary as the entry pointing here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<DirSummary>,
}

/// The index of an indirect object: its parts, in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IndirectIndex {
    /// [`INDIRECT_STREAM`]; anything else is not an index.
    pub stream: String,
    /// The parts, in order.
    #[serde(default)]
    pub entries: Vec<IndirectEntry>,
}

/// One part of an indirect object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IndirectEntry {
    /// Offset of the part; omitted when 0.
    #[serde(rename = "s", default, skip_serializing_if = "is_zero")]
    pub start: i64,
    /// Length of the part.
    #[serde(rename = "l")]
    pub length: i64,
    /// The object holding the part's bytes.
    #[serde(rename = "o")]
    pub object: String,
}

/// Kopia's time format: RFC 3339 in UTC with as many fractional digits as needed.
pub fn time_text(nanos_since_epoch: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(nanos_since_epoch))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}
