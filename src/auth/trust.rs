//! What client certificates are trusted for: the client CA (users) and the request-header CA
//! (front proxies allowed to name the user in headers), from flags and from the
//! `kube-system/extension-apiserver-authentication` ConfigMap, kept fresh at run time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::X509PurposeId;
use openssl::x509::{X509Ref, X509StoreContext, X509};
use poem::http::HeaderMap;
use tokio::sync::watch;

use super::Identity;
use crate::kube::KubeClient;

/// A set of CA certificates that verify client certificates (purpose: TLS client).
pub struct CaPool {
    /// The CA certificates, also trusted by the TLS handshake (see [`TrustConfig::all_cas`]).
    pub certs: Vec<X509>,
    store: X509Store,
    pem: Vec<u8>,
}

impl std::fmt::Debug for CaPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaPool({} certificates)", self.certs.len())
    }
}

impl CaPool {
    /// Parses a PEM bundle; `what` names it in errors. An empty bundle is an error: it would
    /// silently trust nobody.
    pub fn from_pem(pem: &[u8], what: &str) -> Result<Self> {
        let certs = X509::stack_from_pem(pem).with_context(|| format!("parsing the {what} bundle"))?;
        anyhow::ensure!(!certs.is_empty(), "the {what} bundle holds no certificate");
        let mut b = X509StoreBuilder::new()?;
        for c in &certs {
            b.add_cert(c.clone())?;
        }
        b.set_purpose(X509PurposeId::SSL_CLIENT)?;
        Ok(Self { certs, store: b.build(), pem: pem.to_vec() })
    }

    /// Verifies a client certificate chain against this pool alone (validity, chain, purpose).
    pub fn verify(&self, leaf: &X509Ref, intermediates: &[X509]) -> Result<(), String> {
        let mut chain = Stack::new().map_err(|e| e.to_string())?;
        for c in intermediates {
            chain.push(c.clone()).map_err(|e| e.to_string())?;
        }
        let mut ctx = X509StoreContext::new().map_err(|e| e.to_string())?;
        ctx.init(&self.store, leaf, &chain, |c| {
            Ok(if c.verify_cert()? { Ok(()) } else { Err(c.error().error_string().to_string()) })
        })
        .map_err(|e| e.to_string())?
    }
}

/// The request-header authenticator's configuration.
#[derive(Debug)]
pub struct RequestHeaderConfig {
    /// Verifies front proxies' client certificates.
    pub ca: CaPool,
    /// Common names a front proxy's certificate may have; empty means any.
    pub allowed_names: Vec<String>,
    /// Headers naming the user, tried in order.
    pub username_headers: Vec<String>,
    /// Headers naming the groups, all read.
    pub group_headers: Vec<String>,
    /// Prefixes of headers carrying extra attributes (the rest of the name is the key).
    pub extra_headers_prefixes: Vec<String>,
}

impl RequestHeaderConfig {
    /// Is this certificate a trusted front proxy (request-header CA, allowed CN)?
    pub fn verify_proxy(&self, leaf: &X509Ref, intermediates: &[X509]) -> Result<(), String> {
        self.ca.verify(leaf, intermediates).map_err(|e| format!("request-header CA: {e}"))?;
        if !self.allowed_names.is_empty() {
            let cn = crate::tls::common_name(leaf).unwrap_or_default();
            if !self.allowed_names.contains(&cn) {
                return Err(format!("request-header client certificate CN {cn:?} is not allowed"));
            }
        }
        Ok(())
    }

    /// The user a trusted front proxy names in the headers; `None` when it names none.
    pub fn from_headers(&self, headers: &HeaderMap) -> Option<Identity> {
        // As kube: the first value of each username header, in order; an empty one does not count.
        let first =
            |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
        let user = self.username_headers.iter().find_map(|h| first(h))?.to_string();
        let values = |name: &str| -> Vec<String> {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .collect()
        };
        let groups: Vec<String> = self.group_headers.iter().flat_map(|h| values(h)).collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in headers {
            let name = name.as_str(); // lower case already
            for prefix in &self.extra_headers_prefixes {
                let prefix = prefix.to_ascii_lowercase();
                if let Some(key) = name.strip_prefix(&prefix).filter(|k| !k.is_empty()) {
                    // Lower-cased, then unescaped, as kube does.
                    let key = percent_encoding::percent_decode_str(&key.to_ascii_lowercase())
                        .decode_utf8_lossy()
                        .into_owned();
                    if let Ok(v) = value.to_str() {
                        extra.entry(key).or_default().push(v.to_string());
                    }
                }
            }
        }
        Some(Identity::authenticated(user, None, groups, extra))
    }
}

/// The trust in force.
#[derive(Debug, Default)]
pub struct TrustConfig {
    /// Grows with every change (connections cache their certificate verdicts per generation).
    pub generation: u64,
    /// Verifies users' client certificates; `None`: no client certificate authenticates.
    pub client_ca: Option<CaPool>,
    /// Front proxies allowed to name the user; `None`: request headers are ignored.
    pub request_header: Option<RequestHeaderConfig>,
}

impl TrustConfig {
    /// Every CA a client certificate may chain to (the TLS handshake accepts these).
    pub fn all_cas(&self) -> Vec<X509> {
        let mut all: Vec<X509> = self.client_ca.iter().flat_map(|p| p.certs.iter().cloned()).collect();
        all.extend(self.request_header.iter().flat_map(|r| r.ca.certs.iter().cloned()));
        all
    }

    fn fingerprint(&self) -> String {
        let mut f = String::new();
        if let Some(c) = &self.client_ca {
            f.push_str(&String::from_utf8_lossy(&c.pem));
        }
        if let Some(r) = &self.request_header {
            f.push_str(&format!(
                "|{}|{:?}|{:?}|{:?}|{:?}",
                String::from_utf8_lossy(&r.ca.pem),
                r.allowed_names,
                r.username_headers,
                r.group_headers,
                r.extra_headers_prefixes
            ));
        }
        f
    }
}

/// Where trust comes from.
#[derive(Debug, Clone, Default)]
pub struct TrustSources {
    /// `--client-ca-file`, read instead of the ConfigMap's `client-ca-file`.
    pub client_ca_file: Option<PathBuf>,
    /// `--requestheader-client-ca-file`; when set, the `requestheader_*` flags below apply
    /// instead of the ConfigMap's request-header entries.
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// `--requestheader-allowed-names`.
    pub requestheader_allowed_names: Vec<String>,
    /// `--requestheader-username-headers`.
    pub requestheader_username_headers: Vec<String>,
    /// `--requestheader-group-headers`.
    pub requestheader_group_headers: Vec<String>,
    /// `--requestheader-extra-headers-prefix`.
    pub requestheader_extra_headers_prefix: Vec<String>,
    /// Read `kube-system/extension-apiserver-authentication` (needs a kube client).
    pub lookup_configmap: bool,
}

/// The current [`TrustConfig`], swapped when its sources change.
pub struct TrustStore {
    current: RwLock<Arc<TrustConfig>>,
    changed: watch::Sender<u64>,
    sources: TrustSources,
    kube: Option<Arc<KubeClient>>,
}

fn json_list(text: Option<&String>) -> Result<Vec<String>> {
    match text.map(|t| t.trim()).filter(|t| !t.is_empty()) {
        None => Ok(vec![]),
        Some(t) => serde_json::from_str(t).with_context(|| format!("{t:?} is not a JSON list of strings")),
    }
}

impl TrustStore {
    /// Loads the trust once; fails when a configured source cannot be read.
    pub fn load(sources: TrustSources, kube: Option<Arc<KubeClient>>) -> Result<Arc<Self>> {
        let config = Self::read(&sources, kube.as_deref())?;
        Ok(Arc::new(Self { current: RwLock::new(Arc::new(config)), changed: watch::channel(0).0, sources, kube }))
    }

    /// The trust in force; a caller keeps its `Arc` for one decision while a refresh swaps it.
    pub fn current(&self) -> Arc<TrustConfig> {
        self.current.read().expect("trust").clone()
    }

    /// Ticks whenever the trust changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn read(sources: &TrustSources, kube: Option<&KubeClient>) -> Result<TrustConfig> {
        let data: BTreeMap<String, String> = match (sources.lookup_configmap, kube) {
            (true, Some(kube)) => kube
                .get_configmap("kube-system", "extension-apiserver-authentication")
                .context("reading kube-system/extension-apiserver-authentication")?
                .data
                .unwrap_or_default(),
            _ => BTreeMap::new(),
        };
        let file = |path: &Option<PathBuf>| -> Result<Option<Vec<u8>>> {
            path.as_ref().map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display()))).transpose()
        };
        // Flags win over the ConfigMap, as in k8s.io/apiserver.
        let client_ca_pem =
            file(&sources.client_ca_file)?.or_else(|| data.get("client-ca-file").map(|s| s.clone().into_bytes()));
        let client_ca = client_ca_pem.map(|pem| CaPool::from_pem(&pem, "client CA")).transpose()?;
        let request_header = match file(&sources.requestheader_client_ca_file)? {
            Some(pem) => Some(RequestHeaderConfig {
                ca: CaPool::from_pem(&pem, "request-header CA")?,
                allowed_names: sources.requestheader_allowed_names.clone(),
                username_headers: sources.requestheader_username_headers.clone(),
                group_headers: sources.requestheader_group_headers.clone(),
                extra_headers_prefixes: sources.requestheader_extra_headers_prefix.clone(),
            }),
            None => match data.get("requestheader-client-ca-file") {
                Some(pem) => Some(RequestHeaderConfig {
                    ca: CaPool::from_pem(pem.as_bytes(), "request-header CA")?,
                    allowed_names: json_list(data.get("requestheader-allowed-names"))?,
                    username_headers: json_list(data.get("requestheader-username-headers"))?,
                    group_headers: json_list(data.get("requestheader-group-headers"))?,
                    extra_headers_prefixes: json_list(data.get("requestheader-extra-headers-prefix"))?,
                }),
                None => None,
            },
        };
        Ok(TrustConfig { generation: 0, client_ca, request_header })
    }

    /// Re-reads the sources; swaps and notifies when something changed. A failed read keeps the
    /// trust in force.
    pub fn refresh(&self) {
        match Self::read(&self.sources, self.kube.as_deref()) {
            Ok(fresh) => {
                if fresh.fingerprint() != self.current().fingerprint() {
                    tracing::info!(
                        client_ca = fresh.client_ca.is_some(),
                        request_header = fresh.request_header.is_some(),
                        "client authentication configuration changed"
                    );
                    let generation = self.current().generation + 1;
                    *self.current.write().expect("trust") = Arc::new(TrustConfig { generation, ..fresh });
                    self.changed.send_modify(|v| *v += 1);
                }
            }
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "re-reading the client authentication configuration failed; keeping the current one"
            ),
        }
    }

    /// Refreshes forever.
    pub async fn run_refresher(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.refresh()).await;
        }
    }
}
