//! TLS serving with openssl: the acceptor (TLS 1.2+, Mozilla intermediate ciphers, ALPN h2 and
//! http/1.1, optional client certificates verified against a CA bundle) and the identity a
//! verified client certificate carries.

use std::path::Path;

use anyhow::{bail, Context, Result};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{AlpnError, SslAcceptor, SslMethod, SslRef, SslVerifyMode};
use openssl::x509::X509;

/// Reads a PEM file holding one or more certificates, leaf first.
pub fn load_certs(path: &Path) -> Result<Vec<X509>> {
    let pem = std::fs::read(path).with_context(|| format!("reading certificate file {}", path.display()))?;
    let certs =
        X509::stack_from_pem(&pem).with_context(|| format!("parsing PEM certificates in {}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#1, PKCS#8 or SEC1).
pub fn load_key(path: &Path) -> Result<PKey<Private>> {
    let pem = std::fs::read(path).with_context(|| format!("reading private key file {}", path.display()))?;
    PKey::private_key_from_pem(&pem).with_context(|| format!("parsing the PEM private key in {}", path.display()))
}

/// How client certificates are handled during the handshake.
pub enum ClientAuth {
    /// No certificate is asked for.
    None,
    /// A certificate is asked for and, when sent, must verify against these CAs; a client without
    /// one still connects (and is answered 401 by the API, with a Status body).
    Optional(Vec<X509>),
    /// A certificate verifying against these CAs is required to complete the handshake.
    Required(Vec<X509>),
}

/// Builds the server-side TLS configuration.
pub fn acceptor(chain: &[X509], key: &PKey<Private>, client_auth: ClientAuth) -> Result<SslAcceptor> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    let (leaf, intermediates) = chain.split_first().context("empty certificate chain")?;
    b.set_certificate(leaf)?;
    for c in intermediates {
        b.add_extra_chain_cert(c.clone())?;
    }
    b.set_private_key(key)?;
    b.check_private_key().context("the serving private key does not match the certificate")?;
    let (cas, mode) = match client_auth {
        ClientAuth::None => (vec![], SslVerifyMode::NONE),
        ClientAuth::Optional(cas) => (cas, SslVerifyMode::PEER),
        ClientAuth::Required(cas) => (cas, SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT),
    };
    let mode = if cas.is_empty() { SslVerifyMode::NONE } else { mode };
    for ca in cas {
        b.add_client_ca(&ca)?;
        b.cert_store_mut().add_cert(ca)?;
    }
    b.set_verify(mode);
    // Clients resume TLS sessions on new connections; with client verification on, openssl
    // refuses to resume without a session id context.
    b.set_session_id_context(b"klio-api")?;
    // An idle connection gives its read and write buffers (about 34 KiB) back: thousands of
    // idle keep-alive connections must not pin that much each.
    b.set_mode(openssl::ssl::SslMode::RELEASE_BUFFERS);
    // Read what the socket holds in one go (as nginx does): without it OpenSSL reads each
    // record's 5-byte header and then its body, two system calls for every request.
    b.set_read_ahead(true);
    b.set_alpn_select_callback(|_, client| {
        openssl::ssl::select_next_proto(b"\x02h2\x08http/1.1", client).ok_or(AlpnError::NOACK)
    });
    Ok(b.build())
}

/// The client certificate chain a connection presented (leaf first), verified by the handshake
/// against the union of the trusted CAs. Authentication re-verifies it against each CA pool, so
/// it knows which one vouches for it. Attached to every request of the connection.
#[derive(Debug, Default)]
pub struct PeerCertificates {
    /// The client's leaf certificate, the rest being in `intermediates` (empty: no certificate,
    /// or one the handshake rejected).
    pub chain: Vec<X509>,
    /// The intermediates the client sent with it, to build the path to a CA.
    pub intermediates: Vec<X509>,
    /// What authentication concluded about this chain, per trust generation: verifying a chain
    /// costs signature checks, so it is done once per connection, not once per request.
    verdicts: std::sync::Mutex<Option<(u64, std::sync::Arc<crate::auth::CertVerdicts>)>>,
}

impl PeerCertificates {
    /// Reads the peer chain of a finished handshake; nothing when verification failed.
    pub fn from_ssl(ssl: &SslRef) -> Self {
        if ssl.verify_result() != openssl::x509::X509VerifyResult::OK {
            return Self::default();
        }
        let Some(leaf) = ssl.peer_certificate() else { return Self::default() };
        // On the server side the peer chain does not include the leaf.
        let intermediates: Vec<X509> =
            ssl.peer_cert_chain().map(|c| c.iter().map(|x| x.to_owned()).collect()).unwrap_or_default();
        Self { chain: vec![leaf], intermediates, verdicts: Default::default() }
    }

    /// The certificate that names the user (its CN and O), if the client sent a valid one.
    pub fn leaf(&self) -> Option<&X509> {
        self.chain.first()
    }

    /// The verdicts for trust `generation`, computed by `verify` the first time.
    pub fn verdicts(
        &self,
        generation: u64,
        verify: impl FnOnce() -> crate::auth::CertVerdicts,
    ) -> std::sync::Arc<crate::auth::CertVerdicts> {
        let mut slot = self.verdicts.lock().expect("peer verdicts");
        match &*slot {
            Some((g, v)) if *g == generation => v.clone(),
            _ => {
                let v = std::sync::Arc::new(verify());
                *slot = Some((generation, v.clone()));
                v
            }
        }
    }
}

/// The serving configuration in force, swapped without dropping established connections when the
/// certificate files or the trusted client CAs change.
#[derive(Clone)]
pub struct AcceptorHandle(std::sync::Arc<std::sync::RwLock<std::sync::Arc<SslAcceptor>>>);

impl AcceptorHandle {
    /// Starts with the configuration built at start-up.
    pub fn new(acceptor: SslAcceptor) -> Self {
        Self(std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(acceptor))))
    }

    /// The configuration for the next handshake; connections keep the one they started with.
    pub fn current(&self) -> std::sync::Arc<SslAcceptor> {
        self.0.read().expect("acceptor").clone()
    }

    /// Serves new connections with `acceptor` (reloaded certificates or client CAs).
    pub fn replace(&self, acceptor: SslAcceptor) {
        *self.0.write().expect("acceptor") = std::sync::Arc::new(acceptor);
    }
}

/// The common name a certificate stands for: the last CN of its subject, as Go's crypto/x509
/// (and so Kubernetes) reads a subject with several.
pub fn common_name(cert: &openssl::x509::X509Ref) -> Option<String> {
    name_entries(cert, Nid::COMMONNAME).pop()
}

/// The subject entries of one kind (CN, O, ...) of a certificate, as text.
pub fn name_entries(cert: &openssl::x509::X509Ref, nid: Nid) -> Vec<String> {
    cert.subject_name().entries_by_nid(nid).map(|e| String::from_utf8_lossy(e.data().as_slice()).into_owned()).collect()
}
