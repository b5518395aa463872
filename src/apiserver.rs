//! `klio-api server api-server`: the production entry point. Wires the configuration to its
//! owners: the catalog, the trust store and the delegated authenticator/authorizer, the TLS
//! acceptor (reloaded when the serving certificate files or the trusted CAs change).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use tokio::sync::watch;

use crate::api::{self, AppState, Limits};
use crate::auth::authz::{Authorizer, AuthzOptions};
use crate::auth::trust::{TrustSources, TrustStore};
use crate::auth::{Authenticator, AuthnOptions};
use crate::catalog::{Catalog, ServerConfig};
use crate::config::{ApiServerArgs, AuthArgs};
use crate::kube::KubeClient;
use crate::pki::KeyPair;
use crate::server::HttpsServer;
use crate::tls::{self, AcceptorHandle, ClientAuth};

/// How often the serving certificate files are checked for renewal (cert-manager rewrites them).
const CERT_CHECK_EVERY: Duration = Duration::from_secs(5);
const KUBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the serving certificate comes from.
enum ServingCert {
    Files { cert: PathBuf, key: PathBuf },
    InMemory { chain: Vec<X509>, key: PKey<Private> },
}

impl ServingCert {
    /// The certificate chain and key, and the file contents they were read from (to notice changes).
    fn load(&self) -> Result<(Vec<X509>, PKey<Private>, Vec<u8>)> {
        match self {
            Self::Files { cert, key } => {
                let read = |file: &PathBuf, what: &str| {
                    std::fs::read(file).with_context(|| format!("reading the serving {what} {}", file.display()))
                };
                let bytes = [read(cert, "certificate")?, read(key, "key")?].concat();
                Ok((tls::load_certs(cert)?, tls::load_key(key)?, bytes))
            }
            Self::InMemory { chain, key } => Ok((chain.clone(), key.clone(), vec![])),
        }
    }
}

/// A bound, not yet serving, API service.
pub struct ApiServer {
    server: HttpsServer,
    /// Completed in `serve` with the shutdown channel.
    state: AppState,
    trust: Arc<TrustStore>,
    serving: ServingCert,
    trust_refresh: Duration,
    shutdown_delay: Duration,
    shutdown_grace: Duration,
}

fn kube_client(explicit: Option<&PathBuf>) -> Result<Option<Arc<KubeClient>>> {
    let client = match explicit {
        Some(path) => Some(KubeClient::from_kubeconfig(path, KUBE_TIMEOUT)?),
        None => KubeClient::in_cluster(KUBE_TIMEOUT)?,
    };
    Ok(client.map(Arc::new))
}

fn build_acceptor(serving: &ServingCert, trust: &TrustStore) -> Result<(openssl::ssl::SslAcceptor, Vec<u8>)> {
    let (chain, key, bytes) = serving.load()?;
    let acceptor = tls::acceptor(&chain, &key, ClientAuth::Optional(trust.current().all_cas()))?;
    Ok((acceptor, bytes))
}

impl ApiServer {
    /// Validates the configuration, loads certificates and trust, and binds the port.
    pub async fn bind(args: &ApiServerArgs) -> Result<Self> {
        if let Some(group) = &args.api_group {
            crate::routes::configure_group(group)?;
        }
        let serving = match (&args.tls_cert_file, &args.tls_private_key_file) {
            (Some(cert), Some(key)) => ServingCert::Files { cert: cert.clone(), key: key.clone() },
            _ => {
                tracing::warn!("no serving certificate given (CLIENT_BASE_API_SERVER_CERTFILE / --tls-cert-file): using a self-signed one generated in memory");
                let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
                let pair = KeyPair::new_self_signed_server("klio-api", &["localhost", "127.0.0.1", "::1", &host])?;
                ServingCert::InMemory { chain: vec![pair.cert], key: pair.key }
            }
        };
        let auth = &args.auth;
        let authn_kube = kube_client(auth.authentication_kubeconfig.as_ref().or(auth.kubeconfig.as_ref()))
            .context("configuring the kube-apiserver client for authentication")?;
        let authz_kube = kube_client(auth.authorization_kubeconfig.as_ref().or(auth.kubeconfig.as_ref()))
            .context("configuring the kube-apiserver client for authorization")?;
        match &authn_kube {
            Some(k) => tracing::info!(server = k.server(), "delegating authentication and authorization to the kube-apiserver"),
            None => tracing::warn!("no kube-apiserver configured (not in a cluster, no --kubeconfig): only client certificates authenticate and every authenticated user is authorized"),
        }
        let sources = trust_sources(args, authn_kube.is_some());
        let trust = {
            let kube = authn_kube.clone();
            tokio::task::spawn_blocking(move || TrustStore::load(sources, kube)).await??
        };
        if trust.current().client_ca.is_none() && trust.current().request_header.is_none() && authn_kube.is_none() {
            tracing::warn!("no client CA (--client-ca-file) and no kube-apiserver: no client can authenticate, every API request will be answered 401");
        }
        let (acceptor, _) = build_acceptor(&serving, &trust).context("building the TLS configuration")?;

        let anonymous = auth.anonymous_auth.unwrap_or(authn_kube.is_some());
        let authenticator = Arc::new(Authenticator::new(
            trust.clone(),
            authn_kube,
            AuthnOptions {
                anonymous,
                token_cache_ttl: Duration::from_secs(auth.authentication_token_webhook_cache_ttl_seconds),
            },
        ));
        let authorizer = Arc::new(Authorizer::new(authz_kube, authz_options(auth)));

        let servers = args.klio.resolve()?.iter().map(ServerConfig::new).collect::<Result<Vec<_>>>()?;
        warn_about_credential_files(args);
        let catalog = Arc::new(Catalog::new(servers, args.klio.catalog_options())?);
        let server = HttpsServer::bind(SocketAddr::new(args.bind_address, args.secure_port), acceptor).await?;
        anyhow::ensure!(args.max_requests_inflight > 0, "--max-requests-inflight must be at least 1");
        let limits = Limits {
            in_flight: Arc::new(tokio::sync::Semaphore::new(args.max_requests_inflight)),
            watches: Arc::new(tokio::sync::Semaphore::new(api::MAX_WATCHES)),
            request_timeout: Duration::from_secs(args.request_timeout_seconds.max(1)),
        };
        // The shutdown receiver is replaced in `serve`.
        let state = AppState {
            catalog,
            authenticator,
            authorizer,
            limits,
            shutdown: watch::channel(false).1,
            draining: Default::default(),
            renders: Default::default(),
            objects: Default::default(),
        };
        Ok(Self {
            server,
            state,
            trust,
            serving,
            trust_refresh: Duration::from_secs(auth.authentication_config_refresh_seconds.max(1)),
            shutdown_delay: Duration::from_secs(args.shutdown_delay_seconds),
            shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
        })
    }

    /// The address bound, to learn the port when 0 was asked for (the demo, tests).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Other connection bounds than the defaults (tests use small ones).
    pub fn with_connection_limits(mut self, limits: crate::server::ConnectionLimits) -> Self {
        self.server = self.server.with_limits(limits);
        self
    }

    /// Live counts of this server's connections.
    pub fn connection_stats(&self) -> crate::server::ConnectionStats {
        self.server.stats()
    }

    /// Refreshes the catalog and the trust in the background and serves until `shutdown`.
    /// On `shutdown`: /readyz turns unready, after the shutdown delay the server stops accepting,
    /// open requests and watches end within the grace period, then this returns.
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let (stop_tx, stop) = watch::channel(false);
        let state = Arc::new(AppState { shutdown: stop.clone(), ..self.state });
        let drain_state = state.clone();
        let delay = self.shutdown_delay;
        let drain = tokio::spawn(async move {
            crate::server::stopped(&mut shutdown).await;
            drain_state.draining.store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(delay_seconds = delay.as_secs(), "shutting down: unready now, stopping after the delay");
            tokio::time::sleep(delay).await;
            let _ = stop_tx.send(true);
        });
        spawn_catalog_refresher(state.catalog.clone(), stop.clone())?;
        let tasks = [
            drain,
            tokio::spawn(self.trust.clone().run_refresher(self.trust_refresh)),
            tokio::spawn(reload_acceptor(self.server.acceptor(), self.serving, self.trust.clone())),
        ];
        tracing::info!(address = %self.server.local_addr(), "API service listening");
        let result = self.server.serve_with_grace(api::app(state), stop, self.shutdown_grace).await;
        for t in tasks {
            t.abort();
        }
        result
    }
}

/// Reads the catalog on a thread of its own until `stop` (or its sender is gone): a read allocates and drops megabytes
/// (every listed manifest of every server), all of it on that thread, so the trim after each read
/// gives it back at once (freed across threads, it would wait for each worker to collect), and
/// reads never take a serving worker. The Kopia sessions' own tasks live there too.
fn spawn_catalog_refresher(catalog: Arc<crate::catalog::Catalog>, mut stop: watch::Receiver<bool>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("catalog-refresh".into()).spawn(move || {
        runtime.block_on(async move {
            tokio::select! {
                () = catalog.run_refresher() => {}
                // Stopped, or the server is gone without saying so (its runtime ended).
                _ = stop.wait_for(|&stopped| stopped) => {}
            }
        });
    })?;
    Ok(())
}

/// Startup warnings, each naming its file: a serving or Klio client certificate that has
/// expired or is not valid yet, a private key anyone on the machine may read.
fn warn_about_credential_files(args: &ApiServerArgs) {
    let mut certs: Vec<PathBuf> = args.tls_cert_file.iter().cloned().collect();
    let mut keys: Vec<PathBuf> = args.tls_private_key_file.iter().cloned().collect();
    for server in args.klio.resolve().unwrap_or_default() {
        certs.push(server.client_cert);
        keys.push(server.client_key);
    }
    certs.sort();
    certs.dedup();
    keys.sort();
    keys.dedup();
    let now = openssl::asn1::Asn1Time::days_from_now(0).ok();
    for file in &certs {
        let Ok(chain) = tls::load_certs(file) else { continue };
        let (Some(leaf), Some(now)) = (chain.first(), now.as_ref()) else { continue };
        if leaf.not_after() < now {
            tracing::warn!(file = %file.display(), not_after = %leaf.not_after(), "the certificate has expired");
        } else if leaf.not_before() > now {
            tracing::warn!(file = %file.display(), not_before = %leaf.not_before(), "the certificate is not valid yet");
        }
    }
    #[cfg(unix)]
    for file in &keys {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(file) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o004 != 0 {
                tracing::warn!(
                    file = %file.display(),
                    mode = format!("{mode:04o}"),
                    "the private key file is readable by every user (give it mode 0600 or 0640, or a Secret volume defaultMode of 0440)"
                );
            }
        }
    }
}

fn trust_sources(args: &ApiServerArgs, have_kube: bool) -> TrustSources {
    let auth = &args.auth;
    TrustSources {
        client_ca_file: args.client_ca_file.clone(),
        requestheader_client_ca_file: auth.requestheader_client_ca_file.clone(),
        requestheader_allowed_names: auth.requestheader_allowed_names.clone(),
        requestheader_username_headers: auth.requestheader_username_headers.clone(),
        requestheader_group_headers: auth.requestheader_group_headers.clone(),
        requestheader_extra_headers_prefix: auth.requestheader_extra_headers_prefix.clone(),
        lookup_configmap: have_kube && !auth.authentication_skip_lookup,
    }
}

fn authz_options(auth: &AuthArgs) -> AuthzOptions {
    AuthzOptions {
        allowed_ttl: Duration::from_secs(auth.authorization_webhook_cache_authorized_ttl_seconds),
        denied_ttl: Duration::from_secs(auth.authorization_webhook_cache_unauthorized_ttl_seconds),
        always_allow_paths: auth.authorization_always_allow_paths.clone(),
    }
}

/// Rebuilds the TLS configuration when the serving certificate files change on disk or the
/// trusted client CAs change. Established connections keep the configuration they started with.
async fn reload_acceptor(handle: AcceptorHandle, serving: ServingCert, trust: Arc<TrustStore>) {
    let mut trust_changes = trust.subscribe();
    let mut last = serving.load().map(|(_, _, bytes)| bytes).unwrap_or_default();
    loop {
        let trust_changed = tokio::select! {
            _ = tokio::time::sleep(CERT_CHECK_EVERY) => false,
            changed = trust_changes.changed() => {
                if changed.is_err() {
                    return;
                }
                true
            }
        };
        let current = match serving.load() {
            Ok((_, _, bytes)) => bytes,
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "reading the serving certificate failed; keeping the current one"
                );
                continue;
            }
        };
        if current == last && !trust_changed {
            continue;
        }
        match build_acceptor(&serving, &trust) {
            Ok((acceptor, bytes)) => {
                handle.replace(acceptor);
                if bytes != last {
                    tracing::info!("serving certificate reloaded");
                }
                last = bytes;
            }
            // A half-written pair (certificate renewed, key not yet) is retried at the next tick.
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "the new serving certificate is not usable yet; keeping the current one"
            ),
        }
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
