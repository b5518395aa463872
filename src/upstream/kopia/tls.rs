//! TLS of the Kopia protocol, through OpenSSL: TLS 1.3 only, ALPN `h2`, mutual TLS.
//!
//! The client trusts the server as Kopia's own client does when Klio hands it
//! `--server-cert-fingerprint`: the SHA-256 of the first certificate in the server-certificate
//! file must equal the SHA-256 of any certificate the server presents (no chain, name or
//! expiry check). It also accepts a server whose chain that file verifies as a CA, with the
//! URL's host name, which is what a CA-issued Klio certificate needs. The files are read again
//! for every connection, so cert-manager rotations are picked up without a restart.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{AlpnError, Ssl, SslAcceptor, SslContextBuilder, SslMethod, SslRef, SslVerifyMode, SslVersion};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyParam;
use openssl::x509::{X509PurposeId, X509StoreContext, X509};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// The files that say whom the client trusts and who it is.
#[derive(Debug, Clone)]
pub struct ClientFiles {
    /// The Klio server's certificate (its pin), or a CA that issued it.
    pub server_cert: PathBuf,
    /// The client certificate (PEM, leaf first) presented to the server.
    pub client_cert: PathBuf,
    /// Its private key (PEM).
    pub client_key: PathBuf,
    /// The identity the client certificate must carry, `snapshot_reader@<hostname>`.
    pub expected_identity: String,
}

/// What [`ClientFiles`] held when they were last read.
pub struct ClientMaterial {
    /// How to check the server.
    pub trust: ServerTrust,
    /// The client certificate chain, leaf first.
    pub chain: Vec<X509>,
    /// Its private key, checked to match the leaf.
    pub key: PKey<Private>,
    /// The two halves of the certificate's `user@host` common name, sent as `kopia-username`
    /// and `kopia-hostname`.
    pub username: String,
    /// The host half.
    pub hostname: String,
}

/// The server-certificate file: its first certificate's SHA-256 (the pin) and every
/// certificate in it (CAs, when it is not the server's own certificate).
pub struct ServerTrust {
    /// The file it was read from, named in errors.
    pub file: PathBuf,
    /// The first certificate's SHA-256: any presented certificate with it is trusted.
    pub pin: [u8; 32],
    /// Every certificate of the file, used as CAs when no presented certificate is the pin.
    pub certs: Vec<X509>,
}

/// The SHA-256 of a certificate's DER encoding.
pub fn fingerprint(cert: &openssl::x509::X509Ref) -> [u8; 32] {
    cert.to_der().map(|der| openssl::sha::sha256(&der)).unwrap_or([0; 32])
}

/// A fingerprint as `ab:cd:...` for messages.
pub fn fingerprint_text(f: &[u8; 32]) -> String {
    f.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

impl ClientFiles {
    /// Reads the three files and checks that the certificate is for the expected identity and
    /// matches the key. Errors name the file at fault.
    pub fn load(&self) -> Result<ClientMaterial> {
        let certs = crate::tls::load_certs(&self.server_cert)
            .with_context(|| format!("reading the Klio server certificate {}", self.server_cert.display()))?;
        let trust = ServerTrust { file: self.server_cert.clone(), pin: fingerprint(&certs[0]), certs };
        let chain = crate::tls::load_certs(&self.client_cert)?;
        let key = crate::tls::load_key(&self.client_key)?;
        let cn = crate::tls::name_entries(&chain[0], Nid::COMMONNAME).pop().unwrap_or_default();
        if cn != self.expected_identity {
            bail!(
                "the Klio client certificate {} has common name {cn:?}, but the Klio server expects {:?} \
                 (set CLIENT_BASE_HOSTNAME, or issue the certificate for {})",
                self.client_cert.display(),
                self.expected_identity,
                self.expected_identity
            );
        }
        let (username, hostname) = split_identity(&cn)
            .with_context(|| format!("the Klio client certificate {}", self.client_cert.display()))?;
        if !chain[0].public_key()?.public_eq(&key) {
            bail!(
                "the Klio client key {} does not match the certificate {}",
                self.client_key.display(),
                self.client_cert.display()
            );
        }
        Ok(ClientMaterial { trust, chain, key, username, hostname })
    }
}

/// Splits `user@host` as Klio does: exactly one `@`, both sides non-empty.
pub fn split_identity(cn: &str) -> Result<(String, String)> {
    match cn.split_once('@') {
        Some((user, host)) if !user.is_empty() && !host.is_empty() && !host.contains('@') => {
            Ok((user.to_string(), host.to_string()))
        }
        _ => bail!("the common name {cn:?} is not of the form user@host"),
    }
}

/// Why a connection could not be set up. The catalog tells them apart in its messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// No TCP connection (refused, no route, name lookup), or no TLS within the timeout.
    #[error("cannot connect: {0}")]
    Unreachable(String),
    /// TCP connected but TLS failed (protocol version, ALPN, our certificate refused).
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    /// The server's certificate is neither the pin nor verified by the file's CAs.
    #[error("{0}")]
    UntrustedServer(String),
}

/// Opens TCP and TLS to `host:port`, presents the client certificate, and checks the server
/// as described in the module documentation. Bounded by `timeout`.
pub async fn connect(
    host: &str,
    port: u16,
    material: &ClientMaterial,
    timeout: Duration,
) -> Result<SslStream<TcpStream>, ConnectError> {
    let handshake = async {
        let tcp = TcpStream::connect((host, port)).await.map_err(|e| ConnectError::Unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let ssl = client_ssl(host, material).map_err(|e| ConnectError::Handshake(format!("{e:#}")))?;
        let mut stream = SslStream::new(ssl, tcp).map_err(|e| ConnectError::Handshake(e.to_string()))?;
        Pin::new(&mut stream).connect().await.map_err(|e| ConnectError::Handshake(e.to_string()))?;
        Ok::<_, ConnectError>(stream)
    };
    let stream = tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| ConnectError::Unreachable(format!("no TLS connection within {}s", timeout.as_secs())))??;
    if stream.ssl().selected_alpn_protocol() != Some(b"h2") {
        return Err(ConnectError::Handshake("the server did not agree to HTTP/2 (ALPN h2)".into()));
    }
    check_server(stream.ssl(), &material.trust, host).map_err(ConnectError::UntrustedServer)?;
    Ok(stream)
}

fn client_ssl(host: &str, material: &ClientMaterial) -> Result<Ssl> {
    // A bare context, not `SslConnector::builder`: that one loads the system's CA bundle (about
    // 150 certificates, parsed on every connection and kept while it lasts), which a server
    // pinned by its own certificate never consults.
    let mut b = SslContextBuilder::new(SslMethod::tls_client())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_3))?;
    // The chain is checked after the handshake, against the pin or the CA (see check_server);
    // the handshake still proves the server holds the certificate's key.
    b.set_verify(SslVerifyMode::NONE);
    b.set_alpn_protos(b"\x02h2")?;
    let (leaf, rest) = material.chain.split_first().context("the client certificate chain is empty")?;
    b.set_certificate(leaf)?;
    for c in rest {
        b.add_extra_chain_cert(c.clone())?;
    }
    b.set_private_key(&material.key)?;
    let mut ssl = Ssl::new(&b.build())?;
    if host.parse::<IpAddr>().is_err() {
        ssl.set_hostname(host)?;
    }
    Ok(ssl)
}

/// Accepts the server when the pin matches any certificate it presented, or when the trust file
/// verifies its chain (as CAs, for a server certificate valid for `host`).
pub fn check_server(ssl: &SslRef, trust: &ServerTrust, host: &str) -> Result<(), String> {
    // On the client side the peer chain starts with the leaf.
    let presented: Vec<X509> =
        ssl.peer_cert_chain().map(|c| c.iter().map(|x| x.to_owned()).collect()).unwrap_or_default();
    let Some(leaf) = presented.first() else {
        return Err("the Klio server presented no certificate".into());
    };
    if presented.iter().any(|c| fingerprint(c) == trust.pin) {
        return Ok(());
    }
    let as_ca = verify_with_cas(leaf, &presented[1..], &trust.certs, host);
    as_ca.map_err(|why| {
        format!(
            "the Klio server presented a certificate with SHA-256 {} that is neither the certificate in {} \
             (SHA-256 {}) nor issued by it ({why}); put the Klio server's own certificate (or its CA) in that file",
            fingerprint_text(&fingerprint(leaf)),
            trust.file.display(),
            fingerprint_text(&trust.pin),
        )
    })
}

fn verify_with_cas(leaf: &X509, intermediates: &[X509], cas: &[X509], host: &str) -> Result<(), String> {
    let inner = || -> Result<Result<(), String>, openssl::error::ErrorStack> {
        let mut store = X509StoreBuilder::new()?;
        for ca in cas {
            store.add_cert(ca.clone())?;
        }
        let mut param = X509VerifyParam::new()?;
        match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) => param.set_ip(ip)?,
            Err(_) => param.set_host(host)?,
        }
        store.set_param(&param)?;
        store.set_purpose(X509PurposeId::SSL_SERVER)?;
        let store = store.build();
        let mut chain = Stack::new()?;
        for c in intermediates {
            chain.push(c.clone())?;
        }
        let mut ctx = X509StoreContext::new()?;
        ctx.init(&store, leaf, &chain, |c| {
            Ok(if c.verify_cert()? { Ok(()) } else { Err(c.error().error_string().to_string()) })
        })
    };
    inner().map_err(|e| e.to_string())?
}

/// The identity of a client of our Kopia server: the common name of its verified certificate
/// (the last CN, as Go and Kubernetes read a subject).
#[derive(Debug, Clone, Default)]
pub struct PeerIdentity {
    /// `None` when the client sent no certificate (or one that did not verify).
    pub common_name: Option<String>,
}

/// A server-side TLS connection, carrying its peer's identity into tonic's request extensions.
pub struct ServerConnection {
    stream: SslStream<TcpStream>,
    peer: PeerIdentity,
}

impl ServerConnection {
    /// Completes the handshake (bounded by `timeout`) and reads the verified peer identity.
    pub async fn accept(acceptor: &SslAcceptor, tcp: TcpStream, timeout: Duration) -> Result<Self> {
        let ssl = Ssl::new(acceptor.context())?;
        let mut stream = SslStream::new(ssl, tcp)?;
        tokio::time::timeout(timeout, Pin::new(&mut stream).accept())
            .await
            .context("TLS handshake timed out")?
            .context("TLS handshake")?;
        let verified = stream.ssl().verify_result() == openssl::x509::X509VerifyResult::OK;
        let common_name = stream
            .ssl()
            .peer_certificate()
            .filter(|_| verified)
            .and_then(|leaf| crate::tls::name_entries(&leaf, Nid::COMMONNAME).pop());
        Ok(Self { stream, peer: PeerIdentity { common_name } })
    }
}

impl tonic::transport::server::Connected for ServerConnection {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> PeerIdentity {
        self.peer.clone()
    }
}

impl AsyncRead for ServerConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServerConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The server side: TLS 1.3 only, ALPN `h2` only, a client certificate verified against
/// `client_cas` required (as a Klio server started with `--tls-ca-file`).
pub fn server_acceptor(cert: &Path, key: &Path, client_cas: &Path) -> Result<SslAcceptor> {
    let chain = crate::tls::load_certs(cert)?;
    let key = crate::tls::load_key(key)?;
    let cas = crate::tls::load_certs(client_cas)?;
    let mut b = SslAcceptor::mozilla_modern_v5(SslMethod::tls_server())?;
    let (leaf, rest) = chain.split_first().context("empty certificate chain")?;
    b.set_certificate(leaf)?;
    for c in rest {
        b.add_extra_chain_cert(c.clone())?;
    }
    b.set_private_key(&key)?;
    b.check_private_key().with_context(|| format!("the key does not match the certificate {}", cert.display()))?;
    for ca in cas {
        b.add_client_ca(&ca)?;
        b.cert_store_mut().add_cert(ca)?;
    }
    b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    b.set_alpn_select_callback(|_, client| openssl::ssl::select_next_proto(b"\x02h2", client).ok_or(AlpnError::NOACK));
    Ok(b.build())
}
