//! TLS for the blocking upstream clients (Klio servers, the kube-apiserver): an OpenSSL connector
//! plugged into ureq's transport chain.
//!
//! ureq's native-tls backend loads the system's whole CA bundle (twice) for every connector,
//! then throws it away when specific roots are configured. With OpenSSL 3 that took 50 ms of
//! start-up and about 1 MiB of resident memory for trust we never use. This connector trusts
//! exactly the configured roots, and the system's only when none are configured.

use std::fmt;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use openssl::pkey::{PKey, Private};
use openssl::ssl::{HandshakeError, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslStream};
use openssl::ssl::{SslVerifyMode, SslVersion};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;
use ureq::unversioned::transport::{
    Buffers, ConnectProxyConnector, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, TcpConnector,
    Transport, TransportAdapter,
};

/// Whom an upstream client trusts and how it proves who it is.
pub struct ClientTlsConfig {
    /// `None`: the system's trust store.
    pub roots: Option<Vec<X509>>,
    /// Certificate chain (leaf first) and key.
    pub identity: Option<(Vec<X509>, PKey<Private>)>,
}

/// Wraps a connection in TLS: TLS 1.2 or later, the server's certificate verified against the
/// configured roots and the host name (or IP address) of the URL.
#[derive(Clone)]
pub struct OpensslConnector {
    context: SslContext,
}

impl fmt::Debug for OpensslConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpensslConnector")
    }
}

impl OpensslConnector {
    /// Builds the TLS context once; every connection of the agent reuses it.
    pub fn new(config: &ClientTlsConfig) -> Result<Self> {
        let mut b = SslContextBuilder::new(SslMethod::tls_client())?;
        b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
        b.set_verify(SslVerifyMode::PEER);
        // A server that closes without close_notify after a complete response is not an error
        // worth failing a read for; the HTTP framing says whether the body is complete.
        b.set_options(SslOptions::IGNORE_UNEXPECTED_EOF);
        match &config.roots {
            Some(roots) => {
                let mut store = X509StoreBuilder::new()?;
                for root in roots {
                    store.add_cert(root.clone()).context("adding a trusted CA certificate")?;
                }
                b.set_cert_store(store.build());
            }
            None => b.set_default_verify_paths()?,
        }
        if let Some((chain, key)) = &config.identity {
            let (leaf, rest) = chain.split_first().context("the client certificate chain is empty")?;
            b.set_certificate(leaf)?;
            for c in rest {
                b.add_extra_chain_cert(c.clone())?;
            }
            b.set_private_key(key)?;
            b.check_private_key().context("the client key does not match its certificate")?;
        }
        Ok(Self { context: b.build() })
    }

    /// A ureq agent connecting through this connector (HTTP `CONNECT` proxies included).
    pub fn agent(self, config: ureq::config::Config) -> ureq::Agent {
        let connector = ().chain(ConnectProxyConnector::default()).chain(TcpConnector::default()).chain(self);
        ureq::Agent::with_parts(config, connector, ureq::unversioned::resolver::DefaultResolver::default())
    }
}

fn tls_error(host: &str, what: impl fmt::Display) -> ureq::Error {
    ureq::Error::Io(std::io::Error::other(format!("TLS with {host}: {what}")))
}

impl<In: Transport> Connector<In> for OpensslConnector {
    type Out = Either<In, OpensslTransport>;

    fn connect(&self, details: &ConnectionDetails, chained: Option<In>) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else { return Ok(None) };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details.uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
        let mut ssl = Ssl::new(&self.context).map_err(|e| tls_error(&host, e))?;
        match host.parse::<IpAddr>() {
            Ok(ip) => ssl.param_mut().set_ip(ip),
            Err(_) => ssl.set_hostname(&host).and_then(|()| ssl.param_mut().set_host(&host)),
        }
        .map_err(|e| tls_error(&host, e))?;
        let mut adapter = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        adapter.set_timeout(details.timeout);
        let stream = ssl.connect(adapter).map_err(|e| match e {
            HandshakeError::Failure(mid) => {
                let verify = mid.ssl().verify_result();
                match mid.into_error().into_io_error() {
                    Ok(io) => ureq::Error::Io(io),
                    Err(ssl) if verify != openssl::x509::X509VerifyResult::OK => {
                        tls_error(&host, format!("{ssl} (certificate verify failed: {verify})"))
                    }
                    Err(ssl) => tls_error(&host, ssl),
                }
            }
            HandshakeError::SetupFailure(e) => tls_error(&host, e),
            HandshakeError::WouldBlock(_) => tls_error(&host, "the handshake would block"),
        })?;
        let buffers = LazyBuffers::new(details.config.input_buffer_size(), details.config.output_buffer_size());
        Ok(Some(Either::B(OpensslTransport { buffers, stream })))
    }
}

/// An established TLS connection.
pub struct OpensslTransport {
    buffers: LazyBuffers,
    stream: SslStream<TransportAdapter>,
}

impl fmt::Debug for OpensslTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpensslTransport")
    }
}

impl Transport for OpensslTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        self.stream.write_all(&self.buffers.output()[..amount])?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let amount = self.stream.read(self.buffers.input_append_buf())?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

/// Reads PEM certificates (other PEM items are skipped).
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<X509>> {
    X509::stack_from_pem(pem).context("reading PEM certificates")
}

/// The agent configuration every upstream call here wants: one overall timeout, no redirects,
/// HTTP errors as answers (callers read the Status or error body).
pub fn agent_config(timeout: Duration) -> ureq::config::Config {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .user_agent(concat!("klio-api/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{KeyPair, Usage};
    use openssl::ssl::{SslAcceptor, SslMethod as M};

    /// A one-shot HTTPS server on all loopback addresses, answering `200 ok` to every connection.
    fn serve(server: &KeyPair, connections: usize) -> u16 {
        let mut b = SslAcceptor::mozilla_intermediate_v5(M::tls_server()).unwrap();
        b.set_certificate(&server.cert).unwrap();
        b.set_private_key(&server.key).unwrap();
        let acceptor = b.build();
        let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(connections) {
                let Ok(mut tls) = acceptor.accept(stream.unwrap()) else { continue };
                let mut request = [0u8; 4096];
                let _ = tls.read(&mut request);
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
                let _ = tls.shutdown();
            }
        });
        port
    }

    fn get(roots: &KeyPair, url: &str) -> Result<String, ureq::Error> {
        let config = ClientTlsConfig { roots: Some(vec![roots.cert.clone()]), identity: None };
        let agent = OpensslConnector::new(&config).unwrap().agent(agent_config(Duration::from_secs(5)));
        agent.get(url).call()?.body_mut().read_to_string()
    }

    #[test]
    fn verifies_the_issuer_and_the_name_of_the_server() {
        let ca = KeyPair::new_ca("test CA").unwrap();
        let server = ca.issue("klio", &[], &["localhost", "127.0.0.1"], Usage::Server).unwrap();
        let port = serve(&server, 4);
        assert_eq!(get(&ca, &format!("https://localhost:{port}/")).unwrap(), "ok");
        assert_eq!(get(&ca, &format!("https://127.0.0.1:{port}/")).unwrap(), "ok");
        // Reachable, but not a name the certificate holds.
        let err = get(&ca, &format!("https://127.0.0.2:{port}/")).unwrap_err().to_string();
        assert!(err.contains("certificate verify failed"), "{err}");
        // Another CA.
        let other = KeyPair::new_ca("other CA").unwrap();
        let err = get(&other, &format!("https://localhost:{port}/")).unwrap_err().to_string();
        assert!(err.contains("certificate verify failed"), "{err}");
    }
}
