//! The upstream backup record, field names exactly as Klio writes them. Unknown fields are
//! ignored (Klio adds fields over time), and so are the fields a KlioBackup does not show.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One base backup's metadata, as stored by Klio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// The backup ID, e.g. `backup-20251113093137`.
    pub name: String,
    pub cluster_name: String,
    pub start_lsn: u64,
    pub end_lsn: u64,
    pub start_wal: String,
    pub end_wal: String,
    // tli, segmentSize, backupLabel, tablespaceMap and pgData are part of the record but not of
    // a KlioBackup: they are not kept (the catalog is held in memory for every backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tablespaces: Option<Vec<TablespaceRecord>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds.
    pub stopped_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TablespaceRecord {
    pub name: String,
    #[serde(default)]
    pub oid: String,
    #[serde(default)]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The body of `GET /catalog/v1/backups`. Items stay raw so that one bad record is skipped,
/// not fatal for the whole list.
#[derive(Debug, Deserialize)]
pub struct CatalogPage {
    #[serde(default)]
    pub revision: Option<u64>,
    pub items: Vec<Box<serde_json::value::RawValue>>,
}

/// What the Klio server answers on errors.
#[derive(Debug, Deserialize)]
pub struct UpstreamError {
    pub error: String,
}
