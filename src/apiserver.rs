//! `klio-api server api-server`: the production entry point.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::watch;

use crate::api::{self, AppState};
use crate::catalog::{Catalog, CatalogOptions, ServerConfig};
use crate::config::ApiServerArgs;
use crate::pki::KeyPair;
use crate::server::HttpsServer;
use crate::tls::{self, ClientAuth};

/// A bound, not yet serving, API service.
pub struct ApiServer {
    server: HttpsServer,
    catalog: Arc<Catalog>,
}

impl ApiServer {
    /// Validates the configuration, loads the certificates and binds the port.
    pub async fn bind(args: &ApiServerArgs) -> Result<Self> {
        if let Some(group) = &args.api_group {
            crate::routes::configure_group(group)?;
        }
        let (chain, key) = match (&args.tls_cert_file, &args.tls_private_key_file) {
            (Some(cert), Some(key)) => (tls::load_certs(cert)?, tls::load_key(key)?),
            _ => {
                tracing::warn!("no serving certificate given (CLIENT_BASE_API_SERVER_CERTFILE / --tls-cert-file): using a self-signed one generated in memory");
                let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
                let pair = KeyPair::new_self_signed_server("klio-api", &["localhost", "127.0.0.1", "::1", &host])?;
                (vec![pair.cert], pair.key)
            }
        };
        let client_auth = match &args.client_ca_file {
            Some(path) => ClientAuth::Optional(tls::load_certs(path)?),
            None => {
                tracing::warn!(
                    "no --client-ca-file: no client can authenticate, every API request will be answered 401"
                );
                ClientAuth::None
            }
        };
        let acceptor = tls::acceptor(&chain, &key, client_auth).context("building the TLS configuration")?;
        let servers = ServerConfig::all_from_args(&args.klio)?;
        let catalog = Arc::new(Catalog::new(servers, CatalogOptions::from_args(&args.klio))?);
        let server = HttpsServer::bind(SocketAddr::new(args.bind_address, args.secure_port), acceptor).await?;
        Ok(Self { server, catalog })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Refreshes the catalog in the background and serves until `shutdown`.
    pub async fn serve(self, shutdown: watch::Receiver<bool>) -> Result<()> {
        let refresher = tokio::spawn(self.catalog.clone().run_refresher());
        tracing::info!(address = %self.server.local_addr(), "API service listening");
        let state = Arc::new(AppState { catalog: self.catalog, shutdown: shutdown.clone() });
        let result = self.server.serve(api::app(state), shutdown).await;
        refresher.abort();
        result
    }
}

/// A channel that turns true on SIGTERM or Ctrl-C.
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        let _ = tx.send(true);
    });
    rx
}
