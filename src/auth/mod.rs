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
pub mod trust;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use poem::http::HeaderMap;

use crate::kube::KubeClient;
use crate::tls::PeerCertificates;
pub use trust::{RequestHeaderConfig, TrustConfig, TrustStore};

/// An authenticated (or anonymous) user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Identity {
    pub user: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

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

    pub fn is_anonymous(&self) -> bool {
        self.user == ANONYMOUS
    }
}

/// What a connection's client certificate was found to be, once per trust generation.
#[derive(Debug)]
pub struct CertVerdicts {
    /// A trusted front proxy? (`None`: no request-header CA configured)
    pub front_proxy: Option<Result<(), String>>,
    /// Signed by the client CA? (`None`: no client CA configured)
    pub client: Option<Result<(), String>>,
}

/// Why a request is not authenticated (always answered 401; the detail is logged, never sent).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthnError {
    #[error("no credentials and anonymous requests are disabled")]
    NoCredentials,
    #[error("the bearer token was not accepted: {0}")]
    BadToken(String),
    #[error("the client certificate is not trusted: {0}")]
    BadCertificate(String),
    #[error("tokens cannot be verified: no Kubernetes API server is configured")]
    NoTokenReviewer,
}

/// Knobs of the authenticator.
#[derive(Debug, Clone)]
pub struct AuthnOptions {
    pub anonymous: bool,
    pub token_cache_ttl: Duration,
}

/// Cached TokenReview outcomes, keyed by the token's SHA-256 (tokens never stay in memory).
type TokenCache = HashMap<[u8; 32], (Instant, Result<Identity, String>)>;
const CACHE_LIMIT: usize = 10_000;

pub struct Authenticator {
    trust: Arc<TrustStore>,
    kube: Option<Arc<KubeClient>>,
    options: AuthnOptions,
    tokens: Mutex<TokenCache>,
}

impl Authenticator {
    pub fn new(trust: Arc<TrustStore>, kube: Option<Arc<KubeClient>>, options: AuthnOptions) -> Self {
        Self { trust, kube, options, tokens: Mutex::new(HashMap::new()) }
    }

    /// The identity of a request; headers are only trusted as the request-header rules allow.
    pub async fn authenticate(&self, peer: &PeerCertificates, headers: &HeaderMap) -> Result<Identity, AuthnError> {
        let trust = self.trust.current();
        let mut errors = vec![];
        if let Some(leaf) = peer.leaf() {
            let verdicts = peer.verdicts(trust.generation, || CertVerdicts {
                front_proxy: trust.request_header.as_ref().map(|rh| rh.verify_proxy(leaf, &peer.intermediates)),
                client: trust
                    .client_ca
                    .as_ref()
                    .map(|ca| ca.verify(leaf, &peer.intermediates).map_err(|e| format!("client CA: {e}"))),
            });
            // 1. A front proxy (the aggregation layer) vouching for the user in headers.
            match (&trust.request_header, &verdicts.front_proxy) {
                (Some(rh), Some(Ok(()))) => {
                    if let Some(identity) = rh.from_headers(headers) {
                        return Ok(identity);
                    }
                }
                (_, Some(Err(e))) => errors.push(e.clone()),
                _ => {}
            }
            // 2. The client's own certificate.
            match &verdicts.client {
                Some(Ok(())) => {
                    let names = |nid| crate::tls::name_entries(leaf, nid);
                    let user = names(openssl::nid::Nid::COMMONNAME).into_iter().next().unwrap_or_default();
                    if !user.is_empty() {
                        return Ok(Identity::authenticated(
                            user,
                            None,
                            names(openssl::nid::Nid::ORGANIZATIONNAME),
                            BTreeMap::new(),
                        ));
                    }
                    errors.push("the client certificate has no common name".into());
                }
                Some(Err(e)) => errors.push(e.clone()),
                None => {}
            }
        }
        // 3. A bearer token.
        if let Some(token) = bearer_token(headers) {
            return self.review_token(token).await;
        }
        // A certificate that was presented and not accepted fails the request, anonymous or not
        // (kube's fail-on-error union).
        if !errors.is_empty() {
            return Err(AuthnError::BadCertificate(errors.join("; ")));
        }
        // 4. Nobody.
        if self.options.anonymous {
            Ok(Identity::anonymous())
        } else {
            Err(AuthnError::NoCredentials)
        }
    }

    async fn review_token(&self, token: &str) -> Result<Identity, AuthnError> {
        let Some(kube) = self.kube.clone() else { return Err(AuthnError::NoTokenReviewer) };
        let key = openssl::sha::sha256(token.as_bytes());
        if let Some((at, cached)) = self.tokens.lock().expect("token cache").get(&key) {
            if at.elapsed() < self.options.token_cache_ttl {
                return cached.clone().map_err(AuthnError::BadToken);
            }
        }
        let token = token.to_string();
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
            Ok(status) => Err(status.error.unwrap_or_else(|| "the token is not authenticated".into())),
            // An unreachable kube-apiserver is not a verdict on the token: do not cache it.
            Err(e) => return Err(AuthnError::BadToken(format!("TokenReview failed: {e:#}"))),
        };
        let mut cache = self.tokens.lock().expect("token cache");
        if cache.len() >= CACHE_LIMIT {
            let ttl = self.options.token_cache_ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), result.clone()));
        result.map_err(AuthnError::BadToken)
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
