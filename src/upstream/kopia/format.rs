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
    #[serde(default)]
    pub source: SourceInfo,
    #[serde(default)]
    pub description: String,
    /// RFC 3339 with nanoseconds.
    #[serde(default)]
    pub start_time: String,
    #[serde(default)]
    pub end_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<SnapshotStats>,
    /// Non-empty for a checkpoint or an interrupted snapshot: not a backup.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub incomplete: String,
    pub root_entry: DirEntry,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pins: Vec<String>,
}

/// Where a snapshot was taken.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceInfo {
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub user_name: String,
    #[serde(default)]
    pub path: String,
}

/// What an uploader counted (informative only).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStats {
    pub total_size: i64,
    pub excluded_total_size: i64,
    pub file_count: i32,
    pub cached_files: i32,
    pub non_cached_files: i32,
    pub dir_count: i32,
    pub excluded_file_count: i32,
    pub excluded_dir_count: i32,
    pub ignored_error_count: i32,
    pub error_count: i32,
}

/// One entry of a directory object, and a snapshot's root.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DirEntry {
    #[serde(default)]
    pub name: String,
    /// `d` directory, `f` file, `s` symlink.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Octal with a leading 0, e.g. `0644`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mtime: String,
    /// The object holding the entry's data (see [`super::ids::ObjectId`]).
    #[serde(default)]
    pub obj: String,
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
    pub size: i64,
    pub files: i64,
    pub symlinks: i64,
    pub dirs: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub max_time: String,
    pub num_failed: i32,
}

/// The `stream` value of a directory object.
pub const DIRECTORY_STREAM: &str = "kopia:directory";
/// The `stream` value of an indirect object's index.
pub const INDIRECT_STREAM: &str = "kopia:indirect";

/// A directory object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Directory {
    pub stream: String,
    #[serde(default)]
    pub entries: Vec<DirEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<DirSummary>,
}

/// The index of an indirect object: its parts, in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IndirectIndex {
    pub stream: String,
    #[serde(default)]
    pub entries: Vec<IndirectEntry>,
}

/// One part of an indirect object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IndirectEntry {
    /// Offset of the part; omitted when 0.
    #[serde(rename = "s", default, skip_serializing_if = "is_zero")]
    pub start: i64,
    #[serde(rename = "l")]
    pub length: i64,
    #[serde(rename = "o")]
    pub object: String,
}

/// Kopia's time format: RFC 3339 in UTC with as many fractional digits as needed.
pub fn time_text(nanos_since_epoch: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(nanos_since_epoch))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}
