//! Reading one Klio metadata snapshot over a Kopia session: its manifest, its root directory,
//! then `metadata.json` (a direct object, or an `I…` index of parts), and why a backup is
//! skipped when that fails for a reason of its own.

use std::collections::HashMap;

use super::format::{IndirectIndex, DIRECTORY_STREAM, INDIRECT_STREAM};
use super::ids::{ManifestId, ObjectId};
use super::labels;
use super::proto::error_response::Code;
use super::session::{CallError, Session};
use crate::upstream::record::BackupRecord;

/// A `metadata.json` larger than this is not read (Klio's are about a kilobyte).
const MAX_RECORD_BYTES: usize = 16 << 20;

/// Why one backup was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Checkpoint or interrupted snapshot (`incomplete` set).
    Incomplete,
    /// Listed, then gone before it was read (retention): the next read will not list it.
    Vanished,
    /// A content of the snapshot is missing from the repository.
    ContentMissing(String),
    /// The server's ACLs do not let the reader see it.
    AccessDenied,
    /// The manifest's `type` label is not `snapshot`.
    NotASnapshot,
    /// The manifest's JSON is not a snapshot manifest with a directory root (the error).
    MalformedManifest(String),
    /// The root is not a Kopia directory object (the error).
    MalformedDirectory(String),
    /// The root directory has no `metadata.json` file.
    NoMetadataJson,
    /// `metadata.json`'s object is of a form we do not read: compressed, too deep, too large
    /// or inconsistent (what).
    UnsupportedObject(String),
    /// `metadata.json` is not a Klio backup record (the decoding error).
    Undecodable(String),
    /// The cluster or backup name cannot be part of an object name.
    InvalidName(String),
    /// Any other error answer; tried again at the next read.
    ServerError(String),
}

impl Skip {
    /// The metric label, one fixed word per kind.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Incomplete => "incomplete",
            Self::Vanished => "vanished",
            Self::ContentMissing(_) => "content_missing",
            Self::AccessDenied => "access_denied",
            Self::NotASnapshot => "not_a_snapshot",
            Self::MalformedManifest(_) => "malformed_manifest",
            Self::MalformedDirectory(_) => "malformed_directory",
            Self::NoMetadataJson => "no_metadata_json",
            Self::UnsupportedObject(_) => "unsupported_object",
            Self::Undecodable(_) => "undecodable_record",
            Self::InvalidName(_) => "invalid_name",
            Self::ServerError(_) => "server_error",
        }
    }

    /// Worth reading again later: the manifest's content is immutable, so only answers that
    /// are not about the content are.
    pub(super) fn is_transient(&self) -> bool {
        matches!(self, Self::Vanished | Self::ServerError(_))
    }
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Incomplete => f.write_str("the snapshot is incomplete (a checkpoint or an interrupted upload)"),
            Self::Vanished => f.write_str("the manifest was deleted between listing and reading"),
            Self::ContentMissing(id) => write!(f, "content {id} is missing from the repository"),
            Self::AccessDenied => f.write_str("access denied"),
            Self::NotASnapshot => f.write_str("the manifest is not a snapshot"),
            Self::MalformedManifest(e) => write!(f, "malformed snapshot manifest: {e}"),
            Self::MalformedDirectory(e) => write!(f, "malformed directory: {e}"),
            Self::NoMetadataJson => f.write_str("the snapshot's directory holds no metadata.json"),
            Self::UnsupportedObject(e) => write!(f, "unsupported object: {e}"),
            Self::Undecodable(e) => write!(f, "metadata.json does not decode as a backup record: {e}"),
            Self::InvalidName(e) => write!(f, "{e}"),
            Self::ServerError(e) => write!(f, "the server answered: {e}"),
        }
    }
}

/// A root directory object, by a 128-bit digest of its ID (16 bytes per backup instead of the
/// ID's text).
pub type RootKey = [u8; 16];

fn root_key(object_id: &str) -> RootKey {
    let digest = openssl::sha::sha256(object_id.as_bytes());
    digest[..16].try_into().expect("16 bytes")
}

/// What the reader needs of a snapshot manifest, borrowed from its JSON: reading thousands of
/// them at start-up allocates nothing but the record (less garbage, less fragmentation).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestHead<'a> {
    #[serde(default, borrow)]
    incomplete: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    root_entry: EntryHead<'a>,
}

/// A directory entry, borrowed.
#[derive(serde::Deserialize)]
struct EntryHead<'a> {
    #[serde(default, borrow)]
    name: std::borrow::Cow<'a, str>,
    #[serde(rename = "type", default, borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    obj: std::borrow::Cow<'a, str>,
}

/// A directory object, borrowed.
#[derive(serde::Deserialize)]
struct DirectoryHead<'a> {
    #[serde(borrow)]
    stream: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    entries: Vec<EntryHead<'a>>,
}

/// A failed call, for one backup: a skip, or (`Err`) a failure of the whole session.
pub(super) fn per_backup(e: CallError) -> Result<Skip, CallError> {
    match e {
        CallError::Server { code, message } => Ok(match Code::try_from(code) {
            Ok(Code::ManifestNotFound) => Skip::Vanished,
            Ok(Code::ContentNotFound | Code::ObjectNotFound) => Skip::ContentMissing(message),
            Ok(Code::AccessDenied) => Skip::AccessDenied,
            _ => Skip::ServerError(format!("{}: {message}", super::session::code_name(code))),
        }),
        other => Err(other),
    }
}

/// Reads one metadata snapshot: manifest, root directory, `metadata.json`. The outer `Err` is a
/// failure of the session; the inner one a reason to skip this backup.
pub(super) async fn read_metadata(
    session: &Session,
    by_root: &HashMap<RootKey, super::reader::Known>,
    id: &ManifestId,
) -> Result<Result<(RootKey, BackupRecord), Skip>, CallError> {
    let manifest = match session.get_manifest(id).await {
        Ok(m) => m,
        Err(e) => return per_backup(e).map(Err),
    };
    if manifest.metadata.as_ref().and_then(|m| m.labels.get(labels::TYPE)).is_some_and(|t| t != labels::SNAPSHOT) {
        return Ok(Err(Skip::NotASnapshot));
    }
    let snapshot: ManifestHead = match serde_json::from_slice(&manifest.json_data) {
        Ok(s) => s,
        Err(e) => return Ok(Err(Skip::MalformedManifest(e.to_string()))),
    };
    if !snapshot.incomplete.is_empty() {
        return Ok(Err(Skip::Incomplete));
    }
    let root = &snapshot.root_entry;
    if root.kind != "d" {
        return Ok(Err(Skip::MalformedManifest(format!("the root is of type {:?}, not a directory", root.kind))));
    }
    let root_id = root_key(&root.obj);
    if let Some(known) = by_root.get(&root_id) {
        return Ok(Ok((root_id, known.record().clone())));
    }
    let root_obj: ObjectId = match root.obj.parse() {
        Ok(o) => o,
        Err(e) => return Ok(Err(Skip::MalformedManifest(e))),
    };
    let dir_bytes = match read_object(session, &root_obj, MAX_RECORD_BYTES).await? {
        Ok(b) => b,
        Err(skip) => return Ok(Err(skip)),
    };
    let directory: DirectoryHead = match serde_json::from_slice(&dir_bytes) {
        Ok(d) => d,
        Err(e) => return Ok(Err(Skip::MalformedDirectory(e.to_string()))),
    };
    if directory.stream != DIRECTORY_STREAM {
        return Ok(Err(Skip::MalformedDirectory(format!("stream {:?}", directory.stream))));
    }
    let Some(file) = directory.entries.iter().find(|e| e.name == "metadata.json" && e.kind == "f") else {
        return Ok(Err(Skip::NoMetadataJson));
    };
    let file_obj: ObjectId = match file.obj.parse() {
        Ok(o) => o,
        Err(e) => return Ok(Err(Skip::MalformedDirectory(e))),
    };
    let bytes = match read_object(session, &file_obj, MAX_RECORD_BYTES).await? {
        Ok(b) => b,
        Err(skip) => return Ok(Err(skip)),
    };
    Ok(match serde_json::from_slice::<BackupRecord>(&bytes) {
        Ok(record) => Ok((root_id, record)),
        Err(e) => Err(Skip::Undecodable(e.to_string())),
    })
}

/// The bytes of an object: one content, or (`I…`) the parts its index lists, in order.
fn read_object<'a>(
    session: &'a Session,
    id: &'a ObjectId,
    limit: usize,
) -> futures_util::future::BoxFuture<'a, Result<Result<bytes::Bytes, Skip>, CallError>> {
    Box::pin(async move {
        if id.compressed {
            return Ok(Err(Skip::UnsupportedObject(format!(
                "{id} uses object-level compression (repositories without content compression)"
            ))));
        }
        if id.indirection == 0 {
            let data = match session.get_content(&id.content).await {
                Ok(d) => d,
                Err(e) => return per_backup(e).map(Err),
            };
            if data.len() > limit {
                return Ok(Err(Skip::UnsupportedObject(format!("{id} is larger than {limit} bytes"))));
            }
            return Ok(Ok(data));
        }
        if id.indirection > 3 {
            return Ok(Err(Skip::UnsupportedObject(format!("{id} has {} levels of indirection", id.indirection))));
        }
        let index_bytes = match read_object(session, &id.index(), limit).await? {
            Ok(b) => b,
            Err(skip) => return Ok(Err(skip)),
        };
        let index = match serde_json::from_slice::<IndirectIndex>(&index_bytes) {
            Ok(i) if i.stream == INDIRECT_STREAM => i,
            Ok(i) => return Ok(Err(Skip::UnsupportedObject(format!("{id}: index stream {:?}", i.stream)))),
            Err(e) => return Ok(Err(Skip::UnsupportedObject(format!("{id}: index: {e}")))),
        };
        let mut data = Vec::new();
        for part in &index.entries {
            if part.start != data.len() as i64 || part.length < 0 || data.len() + part.length as usize > limit {
                return Ok(Err(Skip::UnsupportedObject(format!("{id}: inconsistent or oversized parts"))));
            }
            let part_id: ObjectId = match part.object.parse() {
                Ok(p) => p,
                Err(e) => return Ok(Err(Skip::UnsupportedObject(format!("{id}: {e}")))),
            };
            let bytes = match read_object(session, &part_id, limit - data.len()).await? {
                Ok(b) => b,
                Err(skip) => return Ok(Err(skip)),
            };
            if bytes.len() as i64 != part.length {
                return Ok(Err(Skip::UnsupportedObject(format!("{id}: a part is not of its stated length"))));
            }
            data.extend_from_slice(&bytes);
        }
        Ok(Ok(data.into()))
    })
}
