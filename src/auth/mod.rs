//! Who is asking, and may they: the same chain as a k8s.io/apiserver-based server.
//!
//! Authentication, first success wins: request headers (only behind a client certificate that
//! verifies against the request-header CA and has an allowed CN), client certificates (client
//! CA: user = CN, groups = O), bearer tokens (TokenReview, cached), then anonymous if enabled.
//! Authorization: `system:masters` always, otherwise a SubjectAccessReview (cached), or, with no
//! kube-apiserver to ask, every authenticated user.
//!
//! The trust configuration ([`TrustConfig`]) is swapped at run time when the
//! `extension-apiserver-authentication` ConfigMap or the CA files change.

pub mod authz;
pub mod bounded;
pub mod trust;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poem::http::HeaderMap;

use crate::kube::KubeClient;
use crate::tls::PeerCertificates;
pub use trust::{RequestHeaderConfig, TrustConfig, TrustStore};

/// An authenticated (or anonymous) user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Identity {
    /// The user name (a certificate's CN, a header's, or TokenReview's).
    pub user: String,
    /// The user's UID, when a TokenReview gave one.
    pub uid: Option<String>,
    /// The groups, `system:authenticated` (or `system:unauthenticated`) included.
    pub groups: Vec<String>,
    /// Extra attributes (from `X-Remote-Extra-*` headers or TokenReview), passed on to
    /// SubjectAccessReview.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The user name of requests without credentials, as Kubernetes names them.
pub const ANONYMOUS: &str = "system:anonymous";

impl Identity {
    pub(crate) fn authenticated(
        user: String,
        uid: Option<String>,
        mut groups: Vec<String>,
        extra: BTreeMap<String, Vec<String>>,
    ) -> Self {
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        Self { user, uid, groups, extra }
    }

    fn anonymous() -> Self {
        Self {
            user: ANONYMOUS.into(),
            uid: None,
            groups: vec!["system:unauthenticated".into()],
            extra: BTreeMap::new(),
        }
    }

    /// True for a request without credentials (with no kube-apiserver to ask, it is denied).
    pub fn is_anonymous(&self) -> bool {
        self.user == ANONYMOUS
    }

    /// About how many bytes this identity takes in a cache.
    pub(crate) fn approximate_bytes(&self) -> usize {
        let strings = |v: &[String]| v.iter().map(|s| s.len() + 24).sum::<usize>();
        self.user.len()
            + self.uid.as_ref().map_or(0, String::len)
            + strings(&self.groups)
            + self.extra.iter().map(|(k, v)| k.len() + 64 + strings(v)).sum::<usize>()
            + std::mem::size_of::<Self>()
    }
}

/// What a connection's client certificate was found to be, once per trust generation.
#[derive(Debug)]
pub struct CertVerdicts {
    /// A trusted front proxy? (`None`: no request-header CA configured)
    pub front_proxy: Option<Result<(), String>>,
    /// Signed by the client CA, and who it names? (`None`: no client CA configured)
    pub client: Option<Result<Arc<Identity>, String>>,
}

/// Why a request is not authenticated (always answered 401; the detail is logged, never sent).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthnError {
    /// Nothing to authenticate, and anonymous requests are off.
    #[error("no credentials and anonymous requests are disabled")]
    NoCredentials,
    /// TokenReview refused the token, or could not be asked (the reason).
    #[error("the bearer token was not accepted: {0}")]
    BadToken(String),
    /// A client certificate was presented that no trusted CA verifies (the reasons).
    #[error("the client certificate is not trusted: {0}")]
    BadCertificate(String),
    /// A bearer token came but no kube-apiserver is configured to review it.
    #[error("tokens cannot be verified: no Kubernetes API server is configured")]
    NoTokenReviewer,
    /// Too many TokenReviews in flight: answered 429 with Retry-After, without asking the
    /// kube-apiserver (a flood of made-up tokens must not fan out).
    #[error("too many token reviews in flight")]
    Overloaded,
}

/// Knobs of the authenticator.
#[derive(Debug, Clone)]
pub struct AuthnOptions {
    /// Requests without credentials pass as [`ANONYMOUS`] (`--anonymous-auth`).
    pub anonymous: bool,
    /// How long a TokenReview answer, positive or negative, is reused.
    pub token_cache_ttl: Duration,
}

/// A TokenReview outcome, keyed by the token's SHA-256 (tokens never stay in memory).
type TokenKey = [u8; 32];
type Review = Result<Identity, AuthnError>;

/// TokenReview answers kept (an entry is the key, the identity and bookkeeping).
const TOKEN_CACHE_ENTRIES: usize = 8192;
const TOKEN_CACHE_BYTES: usize = 8 << 20;
/// TokenReviews in flight at once; a request needing another one is answered 429.
pub const MAX_TOKEN_REVIEWS: usize = 32;
/// An error text from the kube-apiserver kept in the cache and logs is cut to this.
const MAX_REASON_BYTES: usize = 512;

/// Authenticates every request (see the module documentation for the chain); shared by all
/// connections, so the token cache and the bound on reviews in flight are process-wide.
pub struct Authenticator {
    trust: Arc<TrustStore>,
    kube: Option<Arc<KubeClient>>,
    options: AuthnOptions,
    tokens: Arc<Mutex<bounded::BoundedCache<TokenKey, Result<Identity, String>>>>,
    reviews: bounded::Flights<TokenKey, Review>,
    review_slots: Arc<tokio::sync::Semaphore>,
}

impl Authenticator {
    /// `kube`: the kube-apiserver for TokenReview; `None` and bearer tokens are refused.
    pub fn new(trust: Arc<TrustStore>, kube: Option<Arc<KubeClient>>, options: AuthnOptions) -> Self {
        Self {
            trust,
            kube,
            options,
            tokens: Arc::new(Mutex::new(bounded::BoundedCache::new(TOKEN_CACHE_ENTRIES, TOKEN_CACHE_BYTES))),
            reviews: Default::default(),
            review_slots: Arc::new(tokio::sync::Semaphore::new(MAX_TOKEN_REVIEWS)),
        }
    }

    /// The identity of a request; headers are only trusted as the request-header rules allow.
    pub async fn authenticate(
        &self,
        peer: &PeerCertificates,
        headers: &HeaderMap,
    ) -> Result<Arc<Identity>, AuthnError> {
        let trust = self.trust.current();
        let mut errors = vec![];
        if let Some(leaf) = peer.leaf() {
            let verdicts = peer.verdicts(trust.generation, || CertVerdicts {
                front_proxy: trust.request_header.as_ref().map(|rh| rh.verify_proxy(leaf, &peer.intermediates)),
                client: trust.client_ca.as_ref().map(|ca| {
                    ca.verify(leaf, &peer.intermediates).map_err(|e| format!("client CA: {e}"))?;
                    // Go's crypto/x509 keeps the last CN of the subject; Kubernetes uses that one.
                    let user = crate::tls::common_name(leaf).unwrap_or_default();
                    if user.is_empty() {
                        return Err("the client certificate has no common name".into());
                    }
                    let groups = crate::tls::name_entries(leaf, openssl::nid::Nid::ORGANIZATIONNAME);
                    Ok(Arc::new(Identity::authenticated(user, None, groups, BTreeMap::new())))
                }),
            });
            // 1. A front proxy (the aggregation layer) vouching for the user in headers.
            match (&trust.request_header, &verdicts.front_proxy) {
                (Some(rh), Some(Ok(()))) => {
                    if let Some(identity) = rh.from_headers(headers) {
                        return Ok(Arc::new(identity));
                    }
                }
                (_, Some(Err(e))) => errors.push(e.clone()),
                _ => {}
            }
            // 2. The client's own certificate.
            match &verdicts.client {
                Some(Ok(identity)) => return Ok(identity.clone()),
                Some(Err(e)) => errors.push(e.clone()),
                None => {}
            }
        }
        // 3. A bearer token.
        if let Some(token) = bearer_token(headers) {
            return self.review_token(token).await.map(Arc::new);
        }
        // A certificate that was presented and not accepted fails the request, anonymous or not
        // (kube's fail-on-error union).
        if !errors.is_empty() {
            return Err(AuthnError::BadCertificate(errors.join("; ")));
        }
        // 4. Nobody.
        if self.options.anonymous {
            Ok(Arc::new(Identity::anonymous()))
        } else {
            Err(AuthnError::NoCredentials)
        }
    }

    /// A cached answer, the review in flight for the same token, or a new review if a slot is
    /// free; otherwise [`AuthnError::Overloaded`] at once.
    async fn review_token(&self, token: &str) -> Result<Identity, AuthnError> {
        let Some(kube) = self.kube.clone() else { return Err(AuthnError::NoTokenReviewer) };
        let key = openssl::sha::sha256(token.as_bytes());
        {
            let mut cache = self.tokens.lock().expect("token cache");
            if let Some((cached, at)) = cache.get(&key) {
                if at.elapsed() < self.options.token_cache_ttl {
                    return cached.clone().map_err(AuthnError::BadToken);
                }
                cache.remove(&key);
            }
        }
        if let Some(flight) = self.reviews.join(&key) {
            return flight.await;
        }
        let Ok(slot) = self.review_slots.clone().try_acquire_owned() else {
            return Err(AuthnError::Overloaded);
        };
        let token = token.to_string();
        let cache = self.tokens.clone();
        let work = async move {
            let _slot = slot;
            let outcome = tokio::task::spawn_blocking(move || kube.token_review(&token))
                .await
                .map_err(|e| AuthnError::BadToken(e.to_string()))?;
            let result = match outcome {
                Ok(status) if status.authenticated == Some(true) => {
                    let user = status.user.unwrap_or_default();
                    let extra = user.extra.unwrap_or_default().into_iter().collect();
                    Ok(Identity::authenticated(
                        user.username.unwrap_or_default(),
                        user.uid,
                        user.groups.unwrap_or_default(),
                        extra,
                    ))
                }
                Ok(status) => Err(bounded_text(
                    status.error.as_deref().unwrap_or("the token is not authenticated"),
                    MAX_REASON_BYTES,
                )),
                // An unreachable kube-apiserver is not a verdict on the token: do not cache it.
                Err(e) => {
                    return Err(AuthnError::BadToken(bounded_text(
                        &format!("TokenReview failed: {e:#}"),
                        MAX_REASON_BYTES,
                    )))
                }
            };
            let bytes = match &result {
                Ok(identity) => identity.approximate_bytes(),
                Err(reason) => reason.len(),
            };
            cache.lock().expect("token cache").insert(key, result.clone(), bytes);
            result.map_err(AuthnError::BadToken)
        };
        self.reviews.start(key, work, |e| Err(AuthnError::BadToken(e))).await
    }
}

/// `text` cut to at most `max` bytes (on a character boundary), saying how long it was.
pub(crate) fn bounded_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
