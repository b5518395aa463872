//! The integration-test harness: per test a temporary directory with the demo PKI, a catalog on
//! disk (tier 1, optionally tier 2), reference catalog servers (or fakes, or nothing listening)
//! and the API service, all on 127.0.0.1 ephemeral ports over TLS, plus blocking HTTPS clients.
//!
//! Every upstream server runs on a runtime of its own, so stopping it (dropping the runtime)
//! also closes the connections it has open; the API service runs on the harness runtime.
//! Every wait is bounded.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use klio_api::apiserver::ApiServer;
use klio_api::config::ApiServerArgs;
use klio_api::demo::DemoPki;
use poem::endpoint::BoxEndpoint;
use serde_json::Value;
use tokio::runtime::Runtime;
use tokio::sync::watch;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig, TlsProvider};

pub const GROUP: &str = "kliocatalog.enterprisedb.io";
pub const GROUP_VERSION: &str = "kliocatalog.enterprisedb.io/v1alpha1";
pub const COLLECTION: &str = "/apis/kliocatalog.enterprisedb.io/v1alpha1/kliobackups";
/// The product document's backup.
pub const EXAMPLE: &str = "cluster-example.backup-20251113093137";
/// The Accept header `kubectl get` sends.
pub const TABLE_ACCEPT: &str =
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
pub const TABLE_CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// The tier-1 names of `write_sample_catalog`, sorted.
pub const SAMPLE_TIER1: &[&str] = &[
    "cluster-example.backup-20251113093137",
    "cluster-example.backup-20251114093000",
    "pg-analytics.backup-20251120010000",
    "pg-analytics.backup-20251121010000",
    "pg-orders.backup-20251122003000",
];
/// The only tier-2-only backup of `write_sample_catalog`.
pub const SAMPLE_TIER2_ONLY: &str = "cluster-example.backup-20251101020000";
/// The backup of `write_sample_catalog` held by both tiers.
pub const SAMPLE_BOTH_TIERS: &str = "pg-analytics.backup-20251120010000";

pub const WAIT: Duration = Duration::from_secs(15);

/// Polls `f` every 20 ms until it yields `Some`, for at most `timeout`.
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port nothing listens on (bound, read, released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding an ephemeral port");
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// Catalog files

/// Writes one record as `<dir>/<clusterName>/<name>.json`.
pub fn put_record(dir: &Path, record: &Value) -> PathBuf {
    let cluster = dir.join(record["clusterName"].as_str().expect("record with a clusterName"));
    std::fs::create_dir_all(&cluster).unwrap();
    let file = cluster.join(format!("{}.json", record["name"].as_str().expect("record with a name")));
    std::fs::write(&file, serde_json::to_vec_pretty(record).unwrap()).unwrap();
    file
}

/// Writes arbitrary bytes as a record file.
pub fn put_raw(dir: &Path, rel: &str, bytes: &[u8]) -> PathBuf {
    let file = dir.join(rel);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, bytes).unwrap();
    file
}

// ---------------------------------------------------------------------------------------------
// Upstream catalog servers

/// What answers for one tier.
#[derive(Clone)]
pub enum Up {
    /// The reference catalog server over the tier's directory.
    Reference,
    /// Nothing listens on the tier's port.
    Down,
    /// A TLS server (mutual TLS, the catalog server's certificate) answering with this endpoint.
    Custom(fn() -> BoxEndpoint<'static, poem::Response>),
}

/// One upstream server on its own runtime; dropping it closes its listener and connections.
pub struct Upstream {
    rt: Option<Runtime>,
    shutdown: Option<watch::Sender<bool>>,
    pub addr: SocketAddr,
}

impl Upstream {
    pub fn start(pki: &DemoPki, dir: &Path, port: u16, up: &Up) -> Option<Self> {
        if matches!(up, Up::Down) {
            return None;
        }
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let mut args = pki.catalog_serve_args(dir.to_path_buf());
        args.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let (tx, rx) = watch::channel(false);
        let up = up.clone();
        let addr = rt.block_on(async move {
            let server = klio_api::catalog::reference_server::bind(&args).await.expect("binding a catalog server");
            let addr = server.local_addr();
            match up {
                Up::Reference => {
                    tokio::spawn(server.serve(klio_api::catalog::reference_server::app(args.dir.clone()), rx));
                }
                Up::Custom(make) => {
                    tokio::spawn(server.serve(make(), rx));
                }
                Up::Down => unreachable!(),
            }
            addr
        });
        Some(Self { rt: Some(rt), shutdown: Some(tx), addr })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The harness

pub struct Options {
    pub tier1: Up,
    /// `None`: no tier-2 server configured.
    pub tier2: Option<Up>,
    /// Write `write_sample_catalog` into the tier directories.
    pub sample: bool,
    /// Wait for `/readyz` before returning.
    pub wait_ready: bool,
    /// The API service's timeout for one request to a Klio server.
    pub klio_timeout_seconds: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self { tier1: Up::Reference, tier2: None, sample: true, wait_ready: true, klio_timeout_seconds: 10 }
    }
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub pki: DemoPki,
    pub tier1_dir: PathBuf,
    pub tier2_dir: PathBuf,
    /// The ports of the tier servers (reserved even when nothing listens).
    pub tier_ports: Vec<u16>,
    pub upstreams: Vec<Option<Upstream>>,
    pub base: String,
    /// A client presenting the admin certificate (CN demo-admin, O system:masters).
    pub admin: Client,
    /// A client that trusts the CA but presents no certificate.
    pub anonymous: Client,
    rt: Option<Runtime>,
    shutdown: Option<watch::Sender<bool>>,
}

impl Harness {
    /// The sample catalog on one reference server, ready.
    pub fn sample() -> Self {
        Self::start(Options::default())
    }

    /// The sample catalog on two reference servers (tier 1 and tier 2), ready.
    pub fn sample_two_tiers() -> Self {
        Self::start(Options { tier2: Some(Up::Reference), ..Default::default() })
    }

    /// An empty catalog directory on one reference server; call `put_record` and so on before
    /// the first request.
    pub fn empty() -> Self {
        Self::start(Options { sample: false, ..Default::default() })
    }

    pub fn start(opts: Options) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let pki = DemoPki::create(dir.path()).expect("writing the demo PKI");
        let tier1_dir = dir.path().join("catalog/tier1");
        let tier2_dir = dir.path().join("catalog/tier2");
        std::fs::create_dir_all(&tier1_dir).unwrap();
        std::fs::create_dir_all(&tier2_dir).unwrap();
        if opts.sample {
            klio_api::demo::write_sample_catalog(&tier1_dir, &tier2_dir).expect("writing the sample catalog");
        }

        let tiers: Vec<(&Up, &PathBuf)> =
            std::iter::once((&opts.tier1, &tier1_dir)).chain(opts.tier2.iter().map(|u| (u, &tier2_dir))).collect();
        let mut tier_ports = vec![];
        let mut upstreams = vec![];
        for (up, tier_dir) in tiers {
            let upstream = Upstream::start(&pki, tier_dir, if matches!(up, Up::Down) { free_port() } else { 0 }, up);
            let port = match &upstream {
                Some(u) => u.addr.port(),
                None => free_port(),
            };
            tier_ports.push(port);
            upstreams.push(upstream);
        }
        let url = |p: u16| format!("https://127.0.0.1:{p}");

        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (tx, rx) = watch::channel(false);
        let mut klio = pki.klio_client_args(url(tier_ports[0]), tier_ports.get(1).map(|p| url(*p)));
        klio.timeout_seconds = opts.klio_timeout_seconds;
        // Tests change the catalog and look again: refresh often.
        klio.refresh_seconds = 1;
        let args = ApiServerArgs {
            bind_address: Ipv4Addr::LOCALHOST.into(),
            secure_port: 0,
            tls_cert_file: Some(pki.path("api-server.crt")),
            tls_private_key_file: Some(pki.path("api-server.key")),
            client_ca_file: Some(pki.path("ca.crt")),
            auth: klio_api::config::AuthArgs::standalone(),
            max_requests_inflight: 400,
            request_timeout_seconds: 60,
            shutdown_delay_seconds: 0,
            shutdown_grace_seconds: 5,
            api_group: None,
            klio,
        };
        let addr = rt.block_on(async move {
            let api = ApiServer::bind(&args).await.expect("binding the API service");
            let addr = api.local_addr();
            tokio::spawn(api.serve(rx));
            addr
        });
        let base = format!("https://127.0.0.1:{}", addr.port());
        let ca = std::fs::read(pki.path("ca.crt")).unwrap();
        let admin_cert = std::fs::read(pki.path("admin.crt")).unwrap();
        let admin_key = std::fs::read(pki.path("admin.key")).unwrap();
        let admin = Client::new(&base, &ca, Some((&admin_cert, &admin_key)));
        let anonymous = Client::new(&base, &ca, None);
        let h = Self {
            dir,
            pki,
            tier1_dir,
            tier2_dir,
            tier_ports,
            upstreams,
            base,
            admin,
            anonymous,
            rt: Some(rt),
            shutdown: Some(tx),
        };
        if opts.wait_ready {
            h.wait_ready();
        }
        h
    }

    pub fn tier_url(&self, tier: usize) -> String {
        format!("https://127.0.0.1:{}", self.tier_ports[tier])
    }

    /// Waits (bounded) until `/readyz` answers 200.
    pub fn wait_ready(&self) {
        poll("/readyz to answer 200", WAIT, || (self.anonymous.get("/readyz").status == 200).then_some(()));
    }

    /// Starts (or restarts) the reference server of `tier` on its port.
    pub fn start_upstream(&mut self, tier: usize, up: &Up) {
        let dir = if tier == 0 { self.tier1_dir.clone() } else { self.tier2_dir.clone() };
        self.upstreams[tier] = None;
        let port = self.tier_ports[tier];
        self.upstreams[tier] = Some(Upstream::start(&self.pki, &dir, port, up).expect("an upstream server"));
    }

    /// Stops the server of `tier`, closing its open connections.
    pub fn stop_upstream(&mut self, tier: usize) {
        self.upstreams[tier] = None;
    }

    /// A client with another certificate (PEM files).
    pub fn client_with(&self, cert_pem: &[u8], key_pem: &[u8]) -> Client {
        let ca = std::fs::read(self.pki.path("ca.crt")).unwrap();
        Client::new(&self.base, &ca, Some((cert_pem, key_pem)))
    }

    /// The list as JSON (asserting 200).
    pub fn list_json(&self) -> Value {
        let r = self.admin.get_accept(COLLECTION, "application/json");
        assert_eq!(r.status, 200, "list: {}", r.text());
        r.json()
    }

    /// The names of a list body (JSON list or Table).
    pub fn names(body: &Value) -> Vec<String> {
        if body["kind"] == "Table" {
            body["rows"].as_array().expect("rows").iter().map(|r| r["cells"][0].as_str().unwrap().to_string()).collect()
        } else {
            body["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|i| i["metadata"]["name"].as_str().expect("metadata.name").to_string())
                .collect()
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        for u in &mut self.upstreams {
            *u = None;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The HTTPS client

/// A blocking HTTPS client (ureq, native-tls) trusting one CA, optionally with a client certificate.
pub struct Client {
    pub base: String,
    agent: ureq::Agent,
}

fn certificates(pem: &[u8]) -> Vec<Certificate<'static>> {
    ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c.to_owned()),
            _ => None,
        })
        .collect()
}

impl Client {
    pub fn new(base: &str, ca_pem: &[u8], client: Option<(&[u8], &[u8])>) -> Self {
        let roots = certificates(ca_pem);
        assert!(!roots.is_empty(), "no CA certificate");
        let mut tls =
            TlsConfig::builder().provider(TlsProvider::NativeTls).root_certs(RootCerts::Specific(Arc::new(roots)));
        if let Some((cert, key)) = client {
            let chain = certificates(cert);
            let key = PrivateKey::from_pem(key).expect("a PEM private key").to_owned();
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        Self { base: base.to_string(), agent }
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], None)
    }

    pub fn get_accept(&self, path: &str, accept: &str) -> Resp {
        self.request("GET", path, &[("Accept", accept)], None)
    }

    /// Panics when the exchange fails below HTTP (TLS, connection).
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
        self.try_request(method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Result<Resp, ureq::Error> {
        let url = format!("{}{}", self.base, path);
        let body = body.unwrap_or("");
        macro_rules! with_headers {
            ($b:expr) => {{
                let mut b = $b;
                for (k, v) in headers {
                    b = b.header(*k, *v);
                }
                b
            }};
        }
        let resp = match method {
            "GET" => with_headers!(self.agent.get(&url)).call(),
            "HEAD" => with_headers!(self.agent.head(&url)).call(),
            "OPTIONS" => with_headers!(self.agent.options(&url)).call(),
            "DELETE" => with_headers!(self.agent.delete(&url)).force_send_body().send(body),
            "POST" => with_headers!(self.agent.post(&url)).send(body),
            "PUT" => with_headers!(self.agent.put(&url)).send(body),
            "PATCH" => with_headers!(self.agent.patch(&url)).send(body),
            other => panic!("method {other} not supported by the test client"),
        };
        let mut resp = resp?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = if method == "HEAD" || status == 304 { vec![] } else { resp.body_mut().read_to_vec()? };
        Ok(Resp { status, headers, body })
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("a text header"))
    }

    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers.get_all(name).iter().map(|v| v.to_str().expect("a text header").to_string()).collect()
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type")
            .unwrap_or_else(|| panic!("no Content-Type (status {}): {}", self.status, self.text()))
    }

    /// The media type without spaces, lower-cased parameter names kept as sent.
    pub fn media_type(&self) -> String {
        self.content_type()
            .split(';')
            .map(str::trim)
            .filter(|p| !p.starts_with("charset="))
            .collect::<Vec<_>>()
            .join(";")
    }

    /// Asserts that this is a `metav1.Status` failure with this HTTP status and reason, and returns it.
    pub fn expect_status(&self, code: u16, reason: &str) -> Value {
        assert_eq!(self.status, code, "HTTP status; body: {}", self.text());
        assert_eq!(self.media_type(), "application/json", "a Status is JSON; body: {}", self.text());
        let s = self.json();
        assert_eq!(s["kind"], "Status", "{s}");
        assert_eq!(s["apiVersion"], "v1", "{s}");
        assert_eq!(s["status"], "Failure", "{s}");
        assert_eq!(s["code"], u64::from(code), "{s}");
        assert_eq!(s["reason"], reason, "{s}");
        assert!(s["message"].as_str().is_some_and(|m| !m.is_empty()), "a Status has a message: {s}");
        s
    }
}

// ---------------------------------------------------------------------------------------------
// JSON checks

/// Asserts that every field of `expected` is in `actual` with the same value (objects compared
/// field by field, recursively; arrays and scalars compared whole).
pub fn assert_subset(expected: &Value, actual: &Value, at: &str) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                let path = format!("{at}.{k}");
                let got = a.get(k).unwrap_or_else(|| panic!("{path} is missing in {actual}"));
                assert_subset(v, got, &path);
            }
        }
        _ => assert_eq!(expected, actual, "at {at}"),
    }
}
