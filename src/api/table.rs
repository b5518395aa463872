//! Server-side printing: the `meta.k8s.io` Table that `kubectl get` renders. k8s-openapi has no
//! Table types, so they are defined here.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta};
use serde::Serialize;

use crate::model::KlioBackup;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Table<'a> {
    pub kind: &'static str,
    pub api_version: String,
    pub metadata: ListMeta,
    pub column_definitions: &'static [Column],
    pub rows: Vec<Row<'a>>,
}

#[derive(Debug, Serialize)]
pub struct Column {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    pub priority: i32,
}

#[derive(Debug, Serialize)]
pub struct Row<'a> {
    pub cells: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<RowObject<'a>>,
}

/// What each row carries, as `includeObject` asks.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum RowObject<'a> {
    Metadata(PartialObjectMetadata<'a>),
    Object(&'a KlioBackup),
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartialObjectMetadata<'a> {
    pub kind: &'static str,
    pub api_version: String,
    pub metadata: &'a ObjectMeta,
}

/// The `includeObject` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

impl std::str::FromStr for IncludeObject {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "None" => Ok(Self::None),
            "" | "Metadata" => Ok(Self::Metadata),
            "Object" => Ok(Self::Object),
            other => {
                Err(format!("includeObject: unsupported value {other:?}: supported values are None, Metadata, Object"))
            }
        }
    }
}

/// The columns: the product document's four by default, details with `-o wide`.
pub const COLUMNS: &[Column] = &[
    Column {
        name: "Name",
        kind: "string",
        format: "name",
        description: "Name is <clusterName>.<backupID>.",
        priority: 0,
    },
    Column {
        name: "Cluster Name",
        kind: "string",
        format: "",
        description: "The CloudNativePG cluster that was backed up.",
        priority: 0,
    },
    Column { name: "Started At", kind: "string", format: "", description: "When the backup started.", priority: 0 },
    Column { name: "Stopped At", kind: "string", format: "", description: "When the backup ended.", priority: 0 },
    Column {
        name: "Start WAL",
        kind: "string",
        format: "",
        description: "The WAL segment at which the backup started.",
        priority: 1,
    },
    Column {
        name: "End WAL",
        kind: "string",
        format: "",
        description: "The WAL segment at which the backup ended.",
        priority: 1,
    },
    Column {
        name: "Start LSN",
        kind: "string",
        format: "",
        description: "The LSN at which the backup started, in PostgreSQL notation.",
        priority: 1,
    },
    Column {
        name: "End LSN",
        kind: "string",
        format: "",
        description: "The LSN at which the backup ended, in PostgreSQL notation.",
        priority: 1,
    },
    Column { name: "Duration", kind: "string", format: "", description: "How long the backup took.", priority: 1 },
    Column { name: "Tier", kind: "string", format: "", description: "The Klio tiers holding the backup.", priority: 1 },
];

/// `2025-11-13 09:31:37 +0000 UTC`, as Go prints a UTC time.
pub fn go_time(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> String {
    t.0.strftime("%Y-%m-%d %H:%M:%S +0000 UTC").to_string()
}

/// PostgreSQL's `X/X` notation of an LSN.
pub fn pg_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// A duration as Kubernetes prints ages: precise when short, coarser as it grows
/// (`45s`, `3m12s`, `12m`, `2h5m`, `20h`, `3d4h`, `40d`, `2y30d`).
pub fn human_duration(seconds: i64) -> String {
    if seconds < 0 {
        return "0s".into();
    }
    let (s, m, h) = (seconds, seconds / 60, seconds / 3600);
    let (d, y) = (h / 24, h / (24 * 365));
    let pair = |a: i64, ua: &str, b: i64, ub: &str| if b == 0 { format!("{a}{ua}") } else { format!("{a}{ua}{b}{ub}") };
    match () {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => pair(m, "m", s % 60, "s"),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 => pair(h, "h", m % 60, "m"),
        _ if h < 48 => format!("{h}h"),
        _ if h < 24 * 8 => pair(d, "d", h % 24, "h"),
        _ if h < 24 * 365 * 2 => format!("{d}d"),
        _ if h < 24 * 365 * 8 => pair(y, "y", d % 365, "d"),
        _ => format!("{y}y"),
    }
}

fn cells(b: &KlioBackup) -> Vec<serde_json::Value> {
    let status = b.status.as_ref();
    let text = |v: Option<String>| serde_json::Value::String(v.unwrap_or_default());
    let started = status.and_then(|s| s.started_at.as_ref());
    let stopped = status.and_then(|s| s.stopped_at.as_ref());
    let duration = match (started, stopped) {
        (Some(a), Some(b)) => human_duration(b.0.as_second() - a.0.as_second()),
        _ => String::new(),
    };
    let annotations = status.and_then(|s| s.annotations.as_ref());
    let tiers: Vec<&str> = crate::catalog::TIER_ANNOTATIONS
        .iter()
        .filter(|m| annotations.is_some_and(|a| a.contains_key(**m)))
        .map(|m| m.trim_start_matches("klio.io/"))
        .collect();
    vec![
        text(b.metadata.name.clone()),
        text(Some(b.spec.cluster_name.clone())),
        text(started.map(go_time)),
        text(stopped.map(go_time)),
        text(status.and_then(|s| s.start_wal.clone())),
        text(status.and_then(|s| s.end_wal.clone())),
        text(status.and_then(|s| s.start_lsn).map(pg_lsn)),
        text(status.and_then(|s| s.end_lsn).map(pg_lsn)),
        text(Some(duration)),
        text(Some(tiers.join(","))),
    ]
}

/// Renders backups as a Table of the given `meta.k8s.io` version.
pub fn render<'a>(
    version: &str,
    backups: impl Iterator<Item = &'a KlioBackup>,
    metadata: ListMeta,
    include: IncludeObject,
) -> Table<'a> {
    let api_version = format!("meta.k8s.io/{version}");
    let rows = backups
        .map(|b| Row {
            cells: cells(b),
            object: match include {
                IncludeObject::None => None,
                IncludeObject::Metadata => Some(RowObject::Metadata(PartialObjectMetadata {
                    kind: "PartialObjectMetadata",
                    api_version: api_version.clone(),
                    metadata: &b.metadata,
                })),
                IncludeObject::Object => Some(RowObject::Object(b)),
            },
        })
        .collect();
    Table { kind: "Table", api_version, metadata, column_definitions: COLUMNS, rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_like_go() {
        let t =
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::from_second(1_763_026_297).unwrap());
        assert_eq!(go_time(&t), "2025-11-13 09:31:37 +0000 UTC");
    }

    #[test]
    fn lsn_in_postgres_notation() {
        assert_eq!(pg_lsn(117_440_552), "0/7000028");
        assert_eq!(pg_lsn((3u64 << 32) | 0xA0), "3/A0");
    }

    #[test]
    fn durations() {
        let cases = [
            (2, "2s"),
            (119, "119s"),
            (192, "3m12s"),
            (300, "5m"),
            (754, "12m"),
            (7500, "125m"),
            (3 * 3600 + 300, "3h5m"),
            (20 * 3600, "20h"),
            (3 * 86_400 + 4 * 3600 + 5, "3d4h"),
            (40 * 86_400, "40d"),
            ((2 * 365 + 30) * 86_400, "2y30d"),
            (9 * 365 * 86_400, "9y"),
        ];
        for (secs, text) in cases {
            assert_eq!(human_duration(secs), text, "{secs}s");
        }
    }
}
