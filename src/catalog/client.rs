//! The blocking HTTPS client of one Klio server (catalog API v1), mutual TLS through openssl
//! (ureq's native-tls backend). Callers run it inside `spawn_blocking`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use openssl::nid::Nid;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};

use super::record::{BackupRecord, CatalogPage, Interner, UpstreamError};
use super::CatalogError;

/// A Klio catalog larger than this is refused rather than buffered (about 100 000 records).
const MAX_BODY_BYTES: u64 = 256 * 1024 * 1024;

/// TLS material and limits shared by the clients of every tier.
pub struct ClientTls {
    pub server_ca_pem: Vec<u8>,
    pub client_cert_pem: Vec<u8>,
    pub client_key_pem: Vec<u8>,
}

impl ClientTls {
    /// Loads the files and checks the client certificate's CN against `snapshot_reader@<hostname>`.
    pub fn load(args: &crate::config::ResolvedServer) -> Result<Self> {
        let server_ca_pem = std::fs::read(&args.server_cert)
            .with_context(|| format!("reading the Klio server certificate {}", args.server_cert.display()))?;
        let certs = crate::tls::load_certs(&args.client_cert)?;
        let key = crate::tls::load_key(&args.client_key)?;
        let expected = format!("snapshot_reader@{}", args.hostname);
        let cn = crate::tls::name_entries(&certs[0], Nid::COMMONNAME).into_iter().next().unwrap_or_default();
        if cn != expected {
            bail!(
                "the Klio client certificate {} has common name {cn:?}, but the Klio server expects {expected:?} \
                 (set CLIENT_BASE_HOSTNAME, or issue the certificate for {expected})",
                args.client_cert.display()
            );
        }
        if !certs[0].public_key()?.public_eq(&key) {
            bail!(
                "the Klio client key {} does not match the certificate {}",
                args.client_key.display(),
                args.client_cert.display()
            );
        }
        let mut client_cert_pem = vec![];
        for c in &certs {
            client_cert_pem.extend(c.to_pem()?);
        }
        // native-tls only takes PKCS#8; convert whatever form the file has.
        let client_key_pem = key.private_key_to_pem_pkcs8()?;
        if openssl::x509::X509::stack_from_pem(&server_ca_pem).map_or(true, |certs| certs.is_empty()) {
            bail!("{} holds no PEM certificate", args.server_cert.display());
        }
        Ok(Self { server_ca_pem, client_cert_pem, client_key_pem })
    }
}

/// The certificates of a PEM bundle, for ureq (other PEM items are skipped).
pub fn pem_certificates(pem: &[u8]) -> Vec<Certificate<'static>> {
    ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect()
}

/// A blocking HTTPS agent as every upstream call here wants it: this TLS configuration, one
/// overall timeout, no redirects, HTTP errors as answers (callers read the Status or error body).
pub fn agent(tls: TlsConfig, timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .user_agent(concat!("klio-api/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// One Klio server.
pub struct KlioClient {
    base_url: String,
    agent: ureq::Agent,
    timeout: Duration,
}

/// The answer to a catalog read.
pub enum Fetched {
    /// `304`: the catalog did not change since the ETag we sent.
    NotModified,
    Catalog {
        revision: Option<u64>,
        etag: Option<String>,
        records: Vec<BackupRecord>,
    },
}

impl KlioClient {
    pub fn new(base_url: &str, tls: &ClientTls, timeout: Duration) -> Result<Self> {
        let roots = pem_certificates(&tls.server_ca_pem);
        let chain = pem_certificates(&tls.client_cert_pem);
        let key = PrivateKey::from_pem(&tls.client_key_pem).context("loading the Klio client key")?;
        let tls_config = TlsConfig::builder()
            .provider(TlsProvider::NativeTls)
            .root_certs(RootCerts::Specific(Arc::new(roots)))
            .client_cert(Some(ClientCert::new_with_certs(&chain, key)))
            .build();
        let agent = agent(tls_config, timeout);
        Ok(Self { base_url: base_url.trim_end_matches('/').to_string(), agent, timeout })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `GET /catalog/v1/backups`, conditional on `etag`. Records that do not decode are skipped
    /// and logged.
    pub fn fetch_all(&self, etag: Option<&str>) -> Result<Fetched, CatalogError> {
        let url = format!("{}/catalog/v1/backups", self.base_url);
        let mut req = self.agent.get(&url).header("Accept", "application/json");
        if let Some(etag) = etag {
            req = req.header("If-None-Match", etag);
        }
        let mut resp = req
            .call()
            .map_err(|e| CatalogError::Unreachable { server: self.base_url.clone(), reason: e.to_string() })?;
        let status = resp.status().as_u16();
        if status == 304 {
            return Ok(Fetched::NotModified);
        }
        let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = resp.body_mut().with_config().limit(MAX_BODY_BYTES).read_to_vec().map_err(|e| {
            CatalogError::BadResponse { server: self.base_url.clone(), reason: format!("reading the response: {e}") }
        })?;
        if status != 200 {
            let reason = match serde_json::from_slice::<UpstreamError>(&body) {
                Ok(e) => format!("HTTP {status}: {}", e.error),
                Err(_) => format!("HTTP {status}"),
            };
            return Err(CatalogError::BadResponse { server: self.base_url.clone(), reason });
        }
        let page: CatalogPage = serde_json::from_slice(&body).map_err(|e| CatalogError::BadResponse {
            server: self.base_url.clone(),
            reason: format!("the answer is not a catalog: {e}"),
        })?;
        let mut records = Vec::with_capacity(page.items.len());
        let mut interner = Interner::default();
        for (index, raw) in page.items.iter().enumerate() {
            match serde_json::from_str::<BackupRecord>(raw.get()) {
                Ok(mut r) => {
                    interner.record(&mut r);
                    records.push(r)
                }
                Err(e) => {
                    tracing::warn!(server = %self.base_url, index, error = %e, "skipping a backup record that does not decode")
                }
            }
        }
        Ok(Fetched::Catalog { revision: page.revision, etag, records })
    }
}
