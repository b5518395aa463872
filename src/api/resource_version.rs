//! The one resourceVersion resolver of list, get and watch: which catalog snapshot a request is
//! served from, or after which version a watch streams changes, following kube-apiserver's
//! resourceVersion semantics. A version this replica has not reached (the client saw it on a
//! replica ahead, or the upstream moved on) is waited for once, up to [`CATCH_UP`]; every error
//! about versions is worded here.

use std::sync::Arc;
use std::time::Duration;

use super::params::{Params, RvMatch};
use super::status::ApiError;
use crate::catalog::{Catalog, ResourceVersion, Snapshot};

/// How long a request may wait for this replica to catch up with a resourceVersion a client
/// saw elsewhere (another replica, a newer upstream revision).
pub const CATCH_UP: Duration = Duration::from_secs(3);

/// A resourceVersion a client sent, as far as this replica can place it.
#[derive(Debug, Clone)]
pub enum Requested {
    /// One of this catalog's (one number per source).
    Ours(ResourceVersion),
    /// A number kube would accept that this catalog never issued (`1` where there are two
    /// sources, or the dotted form of another number of sources): older than anything kept,
    /// so a NotOlderThan read is served the current state, and a watch or an Exact read from
    /// it is 410 Expired, as a version compacted away is in kube.
    Foreign,
}

/// A resourceVersion given by a client: its text and where it stands.
#[derive(Debug, Clone)]
pub struct Version<'a> {
    /// As sent (error messages quote it).
    pub text: &'a str,
    /// As placed.
    pub requested: Requested,
}

impl<'a> Version<'a> {
    /// Reads `text`: none for "" and "0" (no particular version: the newest state), a 400 for
    /// what is not a resourceVersion at all.
    pub fn read(catalog: &Catalog, text: Option<&'a str>) -> Result<Option<Self>, ApiError> {
        let Some(text) = text.filter(|t| !t.is_empty() && *t != "0") else { return Ok(None) };
        let requested = match ResourceVersion::parse(text, catalog.source_count()) {
            Ok(rv) => Requested::Ours(rv),
            Err(_) if text.split('.').all(|part| part.parse::<u64>().is_ok_and(|_| !part.starts_with('+'))) => {
                Requested::Foreign
            }
            Err(message) => return Err(ApiError::bad_request(message)),
        };
        Ok(Some(Self { text, requested }))
    }
}

/// Why a version cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
    /// No longer kept (or never this catalog's).
    Expired,
    /// Not reached, even after waiting.
    TooLarge,
}

/// kube's 410 for a watcher whose next changes are no longer kept: it must list again.
pub fn fell_behind(last: &ResourceVersion) -> ApiError {
    ApiError::gone(format!("too old resource version: {last}: the watch fell behind"))
}

/// Where a watch starts.
pub enum Start {
    /// ADDED events for this snapshot's objects, then its changes.
    State(Arc<Snapshot>),
    /// Changes after this resourceVersion.
    After(ResourceVersion),
    /// This ERROR event alone: kube refuses a watch that passed validation inside its 200
    /// stream (its cacher's `errWatcher`), and client-go lists again.
    Error(ApiError),
}

/// Resolves versions against the catalog as it is when the request is served.
pub struct Resolver<'a> {
    catalog: &'a Catalog,
    /// The newest snapshot this replica has.
    pub current: Arc<Snapshot>,
}

impl<'a> Resolver<'a> {
    /// Against the catalog's newest snapshot (waiting for a first one, or 503).
    pub async fn new(catalog: &'a Catalog) -> Result<Self, ApiError> {
        Ok(Self { catalog, current: catalog.snapshot().await? })
    }

    /// The snapshot kept at exactly `rv`, after catching up with it when this replica has not
    /// reached it.
    async fn exactly(&self, rv: &ResourceVersion) -> Result<Arc<Snapshot>, Missing> {
        if let Some(kept) = self.catalog.at(rv) {
            return Ok(kept);
        }
        if self.current.resource_version.covers(rv) {
            return Err(Missing::Expired);
        }
        self.catch_up(rv).await?;
        self.catalog.at(rv).ok_or(Missing::Expired)
    }

    /// The first state not older than `rv`: the current one, or, when this replica is behind,
    /// the one it catches up to.
    async fn not_older_than(&self, rv: &ResourceVersion) -> Result<Arc<Snapshot>, Missing> {
        if self.current.resource_version.covers(rv) {
            return Ok(self.current.clone());
        }
        self.catch_up(rv).await
    }

    /// The one wait: for this replica to reach `rv`, up to [`CATCH_UP`]; the first snapshot
    /// that covers it.
    async fn catch_up(&self, rv: &ResourceVersion) -> Result<Arc<Snapshot>, Missing> {
        self.catalog.wait_for(rv, CATCH_UP).await.ok_or(Missing::TooLarge)
    }

    /// kube's 410 for a version no longer kept.
    pub fn too_old(&self, text: &str) -> ApiError {
        ApiError::gone(format!("too old resource version: {text} ({})", self.current.resource_version_text))
    }

    /// kube's 504 for a version not reached.
    fn too_large(&self, text: &str) -> ApiError {
        ApiError::too_large_resource_version(text, &self.current.resource_version_text)
    }

    /// The snapshot a list or a get is served from: where its continue token was minted, else
    /// by `resourceVersion` and `resourceVersionMatch` (none or "0": the newest; NotOlderThan
    /// or unset: not older than it, 504 if not reached; Exact: that one, 410 if not kept).
    pub async fn read(&self, p: &Params) -> Result<Arc<Snapshot>, ApiError> {
        if let Some(token) = &p.continue_token {
            let expired = || {
                ApiError::gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.")
            };
            return match Version::read(self.catalog, Some(&token.rv))?.map(|v| v.requested) {
                Some(Requested::Ours(rv)) => self.exactly(&rv).await.map_err(|_| expired()),
                _ => Err(expired()),
            };
        }
        let Some(v) = Version::read(self.catalog, p.resource_version.as_deref())? else {
            return Ok(self.current.clone());
        };
        match (p.rv_match, v.requested) {
            (Some(RvMatch::Exact), Requested::Foreign) => Err(self.too_old(v.text)),
            (_, Requested::Foreign) => Ok(self.current.clone()),
            (Some(RvMatch::Exact), Requested::Ours(rv)) => self.exactly(&rv).await.map_err(|_| self.too_old(v.text)),
            (_, Requested::Ours(rv)) => self.not_older_than(&rv).await.map_err(|_| self.too_large(v.text)),
        }
    }

    /// Where a watch starts, by KEP-3157's rules as kube-apiserver's cacher applies them
    /// (`getWatchCacheResourceVersion`, `waitUntilWatchCacheFreshAndForceAllEvents`,
    /// `getAllEventsSinceLocked`), after the options were defaulted and validated:
    ///
    /// - `sendInitialEvents=true`: the state as ADDED events, then changes; the state not older
    ///   than the version (the newest for none, "0" or a foreign one; a 504 ERROR event when
    ///   not reached);
    /// - `sendInitialEvents=false`: changes only, after the newest state for no version, else
    ///   after the given one;
    /// - a version without `sendInitialEvents`: the changes after it; a 410 ERROR event when it
    ///   is no longer kept (or was never this catalog's); a 504 Status when not reached.
    pub async fn watch(&self, p: &Params, version: Option<Version<'_>>) -> Result<Start, ApiError> {
        let current = || Start::State(self.current.clone());
        Ok(match (p.send_initial_events, version) {
            (Some(true) | None, None) => current(),
            (Some(true), Some(Version { requested: Requested::Foreign, .. })) => current(),
            (Some(true), Some(Version { text, requested: Requested::Ours(rv) })) => {
                match self.not_older_than(&rv).await {
                    Ok(snapshot) => Start::State(snapshot),
                    Err(_) => Start::Error(self.too_large(text)),
                }
            }
            (Some(false), None) => Start::After(self.current.resource_version.clone()),
            (_, Some(Version { text, requested: Requested::Foreign })) => Start::Error(self.too_old(text)),
            (_, Some(Version { text, requested: Requested::Ours(rv) })) => match self.exactly(&rv).await {
                Ok(_) => Start::After(rv),
                Err(Missing::Expired) => Start::Error(self.too_old(text)),
                Err(Missing::TooLarge) => return Err(self.too_large(text)),
            },
        })
    }
}
