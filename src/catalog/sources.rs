//! The catalog's sources: each configured Klio server and tier, its reader, and what the
//! catalog knows of it between reads (its records, its revision, its health).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Result;

use super::CatalogError;
use crate::upstream::kopia::reader::{CatalogReader, SourceBackup};
use crate::upstream::kopia::session::{Session, SessionConfig};
use crate::upstream::kopia::tls::ClientFiles;

/// Requests pipelined on one Kopia session.
pub(super) const SESSION_WINDOW: usize = 64;

/// One configured Klio server, every field resolved (by the configuration) and checked.
#[derive(Debug, Clone)]
pub struct KlioServer {
    /// Unique among the configured servers; the `server` label of its backups.
    pub name: String,
    /// Tier 1's Kopia repository server (`https://host:port`).
    pub url: String,
    /// Tier 2's, when the server has one.
    pub tier2_url: Option<String>,
    /// Pins the server: its certificate (SHA-256 fingerprint) or a CA that verifies it.
    pub server_cert: PathBuf,
    /// The client certificate presented (its CN is the Kopia identity).
    pub client_cert: PathBuf,
    /// The client certificate's key.
    pub client_key: PathBuf,
    /// The Kopia hostname part of `snapshot_reader@<hostname>`.
    pub hostname: String,
    /// Per-request timeout.
    pub timeout_seconds: u64,
}

/// One Klio server of the configuration, with its readers.
pub struct ServerConfig {
    /// Unique; a label and `status.server` on its objects.
    pub name: String,
    /// `snapshot_reader@<hostname>`, the identity its readers present.
    pub identity: String,
    /// Reads the tier-1 repository, the one every server has.
    pub tier1: CatalogReader,
    /// Reads the tier-2 repository, when the server has one.
    pub tier2: Option<CatalogReader>,
}

impl ServerConfig {
    /// Checks the certificate files and sets up the readers of one configured server (they
    /// connect on first use).
    pub fn new(server: &KlioServer) -> Result<Self> {
        let files = ClientFiles {
            server_cert: server.server_cert.clone(),
            client_cert: server.client_cert.clone(),
            client_key: server.client_key.clone(),
            expected_identity: format!("snapshot_reader@{}", server.hostname),
        };
        // Fail at start-up on files that cannot work; they are read again for every connection.
        files.load()?;
        let reader = |url: &str, tier: usize| -> Result<CatalogReader> {
            let labels = crate::metrics::SourceLabels { server: server.name.clone(), tier: tier.to_string() };
            let session = Session::new(SessionConfig {
                url: url.to_string(),
                files: files.clone(),
                request_timeout: Duration::from_secs(server.timeout_seconds),
                window: SESSION_WINDOW,
                labels: labels.clone(),
            })
            .map_err(|e| anyhow::anyhow!("Klio server {}: tier-{tier} URL: {e:#}", server.name))?;
            Ok(CatalogReader::new(session, labels, SESSION_WINDOW))
        };
        Ok(Self {
            name: server.name.clone(),
            identity: files.expected_identity.clone(),
            tier1: reader(&server.url, 1)?,
            tier2: server.tier2_url.as_deref().map(|u| reader(u, 2)).transpose()?,
        })
    }
}

/// One source: a server's tier.
pub(super) struct Source {
    pub(super) server: Arc<str>,
    pub(super) tier: usize,
    pub(super) url: String,
    pub(super) identity: String,
    pub(super) timeout: Duration,
    pub(super) reader: tokio::sync::Mutex<CatalogReader>,
    pub(super) state: Mutex<SourceState>,
}

/// What the catalog knows of one source between reads.
#[derive(Default)]
pub(super) struct SourceState {
    pub(super) revision: u64,
    /// Shared with the snapshots' objects: a backup read again unchanged keeps its `Arc`.
    pub(super) backups: Vec<Arc<SourceBackup>>,
    pub(super) read_once: bool,
    pub(super) last_success: Option<SystemTime>,
    pub(super) failing_since: Option<SystemTime>,
    pub(super) last_error: Option<CatalogError>,
    /// The empty-catalog hint was logged for the current empty spell.
    pub(super) told_empty: bool,
}

impl SourceState {
    /// Takes a read's backups; true when they differ from the last ones. The source's revision
    /// (its part of the resourceVersion, see the module documentation) becomes the newest
    /// manifest's modification time in milliseconds, or one more than before when the change
    /// added no newer manifest (a deletion).
    pub(super) fn accept(&mut self, backups: Vec<Arc<SourceBackup>>, newest_nanos: i64) -> bool {
        let same = self.read_once
            && backups.len() == self.backups.len()
            && backups.iter().zip(&self.backups).all(|(a, b)| Arc::ptr_eq(a, b));
        let first = !self.read_once;
        self.read_once = true;
        if same {
            return false;
        }
        let newest_ms = u64::try_from(newest_nanos / 1_000_000).unwrap_or(0);
        self.revision = if first { newest_ms.max(1) } else { newest_ms.max(self.revision + 1) };
        self.backups = backups;
        true
    }
}

impl Source {
    pub(super) fn labels(&self) -> crate::metrics::SourceLabels {
        crate::metrics::SourceLabels { server: self.server.to_string(), tier: (self.tier + 1).to_string() }
    }
}

/// What a probe or a client should know about one source.
#[derive(Debug, Clone)]
pub struct SourceHealth {
    /// The configured server's name.
    pub server: String,
    /// 1 or 2.
    pub tier: usize,
    /// The Kopia repository server read.
    pub url: String,
    /// Who the service reads as (`snapshot_reader@klio`).
    pub identity: String,
    /// Backups the last read found; 0 after a successful read is worth explaining (see
    /// [`EMPTY_CATALOG_HINT`]).
    pub backups: usize,
    /// When a read last succeeded; `None`: never, so its backups are missing.
    pub last_success: Option<SystemTime>,
    /// The first of the failed reads in a row; `None` while reads succeed.
    pub failing_since: Option<SystemTime>,
    /// Why the last read failed; `None` when it succeeded.
    pub last_error: Option<CatalogError>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::snapshot::source_backup;

    fn backup(n: u64) -> Arc<SourceBackup> {
        source_backup("pg", &format!("backup-{n}"), n)
    }

    #[test]
    fn a_source_revision_is_its_newest_manifest_time_or_one_more() {
        let mut st = SourceState::default();
        let (a, b) = (backup(1), backup(2));
        assert!(st.accept(vec![], 0), "the first read is a change, even when empty");
        assert_eq!(st.revision, 1, "a revision is never 0");
        assert!(st.accept(vec![a.clone(), b.clone()], 5_000_000_000));
        assert_eq!(st.revision, 5_000, "the newest manifest's time, in milliseconds");
        assert!(!st.accept(vec![a.clone(), b.clone()], 5_000_000_000), "the same backups are no change");
        assert_eq!(st.revision, 5_000);
        assert!(st.accept(vec![a.clone()], 5_000_000_000), "a deletion is a change");
        assert_eq!(st.revision, 5_001, "without a newer manifest, one more than before");
        assert!(st.accept(vec![a, b], 4_000_000_000));
        assert_eq!(st.revision, 5_002, "a revision never goes back");
    }
}
