//! A minimal HTTPS client of our own, for what a load generator does not do: fetching the exact
//! bytes nginx is then given, waiting for readiness, and the cold cells (the first requests to a
//! service that is still reading its catalog).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use klio_api::demo::DemoPki;
use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};

/// A TLS client with the admin certificate, HTTP/1.1 keep-alive.
#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
    connector: Arc<SslConnector>,
}

pub type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

impl Client {
    pub fn new(addr: SocketAddr, pki: &DemoPki) -> Result<Self> {
        let mut b = SslConnector::builder(SslMethod::tls_client())?;
        b.set_ca_file(pki.path("ca.crt"))?;
        b.set_certificate_chain_file(pki.path("admin.crt"))?;
        b.set_private_key_file(pki.path("admin.key"), SslFiletype::PEM)?;
        b.set_verify(SslVerifyMode::PEER);
        Ok(Self { addr, connector: Arc::new(b.build()) })
    }

    pub async fn connect(&self) -> Result<Sender> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let ssl = self.connector.configure()?.into_ssl("localhost")?;
        let mut stream = tokio_openssl::SslStream::new(ssl, tcp)?;
        std::pin::Pin::new(&mut stream).connect().await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// One GET; the body is counted, not kept. Returns (status, bytes).
    pub async fn get(sender: &mut Sender, path: &str, accept: &str) -> Result<(u16, usize)> {
        sender.ready().await?;
        let req = http::Request::get(path).header("host", "localhost").header("accept", accept).body(Empty::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut bytes = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                bytes += data.len();
            }
        }
        Ok((status, bytes))
    }

    /// The whole body of one GET (to give nginx the very same bytes).
    pub async fn fetch(&self, path: &str, accept: &str) -> Result<Vec<u8>> {
        let mut s = self.connect().await?;
        let req = http::Request::get(path).header("host", "localhost").header("accept", accept).body(Empty::new())?;
        let resp = s.send_request(req).await?;
        anyhow::ensure!(resp.status() == 200, "GET {path}: {}", resp.status());
        Ok(resp.into_body().collect().await?.to_bytes().to_vec())
    }
}
