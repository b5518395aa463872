//! The blocking HTTPS client of one Klio server (catalog API v1), mutual TLS through openssl
//! ([`crate::upstream_tls`]). Callers run it inside `spawn_blocking`.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use openssl::nid::Nid;

use crate::upstream_tls::{agent_config, ClientTlsConfig, OpensslConnector};

use super::record::{BackupRecord, CatalogPage, Interner, UpstreamError};
use super::CatalogError;

/// A Klio catalog larger than this is refused rather than buffered (about 100 000 records).
const MAX_BODY_BYTES: u64 = 256 * 1024 * 1024;

/// TLS material shared by the clients of every tier.
pub struct ClientTls {
    pub server_cas: Vec<openssl::x509::X509>,
    pub client_chain: Vec<openssl::x509::X509>,
    pub client_key: openssl::pkey::PKey<openssl::pkey::Private>,
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
        let server_cas = openssl::x509::X509::stack_from_pem(&server_ca_pem).unwrap_or_default();
        if server_cas.is_empty() {
            bail!("{} holds no PEM certificate", args.server_cert.display());
        }
        Ok(Self { server_cas, client_chain: certs, client_key: key })
    }
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
        let connector = OpensslConnector::new(&ClientTlsConfig {
            roots: Some(tls.server_cas.clone()),
            identity: Some((tls.client_chain.clone(), tls.client_key.clone())),
        })
        .context("setting up TLS to the Klio server")?;
        let agent = connector.agent(agent_config(timeout));
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
