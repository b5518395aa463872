//! The integration-test harness: per test a temporary directory with the demo PKI, a catalog on
//! disk (tier 1, optionally tier 2), our Kopia-protocol catalog servers (or servers of a test's
//! own making, or nothing listening)
//! and the API service, all on 127.0.0.1 ephemeral ports over TLS, plus blocking HTTPS clients.
//!
//! Every upstream server runs on a runtime of its own, so stopping it (dropping the runtime)
//! also closes the connections it has open; the API service runs on the harness runtime.
//! Every wait is bounded.

#![allow(dead_code)]

pub mod kopia_fakes;
pub mod kube_double;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use klio_api::apiserver::ApiServer;
use klio_api::config::{ApiServerArgs, CatalogServeArgs, KlioClientArgs, ServerSpec};
use klio_api::demo::DemoPki;
use klio_api::upstream::kopia::proto::kopia_repository_server::KopiaRepositoryServer;
use klio_api::upstream::kopia::server::{serve, Acl, Backend, KopiaServer, RequestCounts, SessionService};
use klio_api::upstream::kopia::tls::server_acceptor;
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

/// The item of a list body named `name` (a failure names what the list held).
pub fn item<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in the list: {list}"))
}

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

/// Writes `bytes` to `file` at once: through a hidden temporary file renamed into place, so a
/// catalog server scanning the directory meanwhile never reads a half-written record.
pub fn write_atomically(file: &Path, bytes: &[u8]) {
    let tmp = file.with_file_name(format!(".{}.tmp", file.file_name().unwrap().to_string_lossy()));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// Writes one record as `<dir>/<clusterName>/<name>.json`.
pub fn put_record(dir: &Path, record: &Value) -> PathBuf {
    let cluster = dir.join(record["clusterName"].as_str().expect("record with a clusterName"));
    std::fs::create_dir_all(&cluster).unwrap();
    let file = cluster.join(format!("{}.json", record["name"].as_str().expect("record with a name")));
    write_atomically(&file, &serde_json::to_vec_pretty(record).unwrap());
    file
}

/// Writes arbitrary bytes as a record file.
pub fn put_raw(dir: &Path, rel: &str, bytes: &[u8]) -> PathBuf {
    let file = dir.join(rel);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    write_atomically(&file, bytes);
    file
}

/// Rewrites a record file in place (atomically).
pub fn rewrite(file: &Path, change: impl FnOnce(&mut Value)) {
    let mut record: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    change(&mut record);
    write_atomically(file, &serde_json::to_vec_pretty(&record).unwrap());
}

// ---------------------------------------------------------------------------------------------
// Upstream catalog servers

/// What answers for one tier.
#[derive(Clone)]
pub enum Up {
    /// Our Kopia-protocol catalog server (`klio-api catalog serve`) over the tier's directory.
    Kopia,
    /// The same, its arguments changed first (ACLs, split size).
    KopiaWith(fn(&mut CatalogServeArgs)),
    /// Nothing listens on the tier's port.
    Down,
    /// A server of the test's own making, on the catalog server's port and TLS.
    Custom(Arc<dyn Fn(ServeParts) -> BoxFuture<'static, ()> + Send + Sync>),
}

/// What a custom upstream server gets to serve with.
pub struct ServeParts {
    pub listener: tokio::net::TcpListener,
    pub acceptor: Arc<openssl::ssl::SslAcceptor>,
    pub dir: PathBuf,
    pub stop: watch::Receiver<bool>,
    /// Where the server should count the requests it answers.
    pub counts: Arc<RequestCounts>,
}

impl Up {
    /// A custom server: `serve` runs on the upstream's runtime until the upstream stops.
    pub fn custom(serve: impl Fn(ServeParts) -> BoxFuture<'static, ()> + Send + Sync + 'static) -> Self {
        Self::Custom(Arc::new(serve))
    }

    /// Our server's session semantics over a repository of the test's making.
    pub fn backend(make: fn(&Path) -> Arc<dyn Backend>) -> Self {
        Self::custom(move |parts: ServeParts| {
            let service = SessionService::new(make(&parts.dir), Acl::Readers(vec!["snapshot_reader@klio".into()]))
                .with_counts(parts.counts.clone());
            Box::pin(async move {
                let svc = KopiaRepositoryServer::new(service);
                let _ = serve(parts.listener, parts.acceptor, svc, parts.stop).await;
            })
        })
    }
}

/// One upstream server on its own runtime; dropping it closes its listener and connections.
pub struct Upstream {
    rt: Option<Runtime>,
    shutdown: Option<watch::Sender<bool>>,
    pub addr: SocketAddr,
    /// The requests the server answered (as far as a custom server counts them).
    pub counts: Option<Arc<RequestCounts>>,
}

impl Upstream {
    /// Starts `up` over `dir` on `port` (0: any). A port just released by a stopped server may
    /// take a moment to be free again: binding is retried, bounded.
    pub fn start(pki: &DemoPki, dir: &Path, port: u16, up: &Up) -> Option<Self> {
        if matches!(up, Up::Down) {
            return None;
        }
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let mut args = pki.catalog_serve_args(dir.to_path_buf());
        args.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        if let Up::KopiaWith(change) = up {
            change(&mut args);
        }
        let (tx, rx) = watch::channel(false);
        let up = up.clone();
        let (addr, counts) = rt.block_on(async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            let retry = |e: anyhow::Error| {
                assert!(Instant::now() < deadline, "binding a catalog server on port {port}: {e:#}");
            };
            match up {
                Up::Kopia | Up::KopiaWith(_) => loop {
                    match KopiaServer::bind(&args).await {
                        Ok(server) => {
                            let (addr, counts) = (server.local_addr(), server.counts());
                            tokio::spawn(server.serve(rx));
                            break (addr, Some(counts));
                        }
                        Err(e) => retry(e),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                },
                Up::Custom(serve) => loop {
                    match tokio::net::TcpListener::bind(args.listen).await {
                        Ok(listener) => {
                            let addr = listener.local_addr().unwrap();
                            let acceptor =
                                server_acceptor(&args.tls_cert_file, &args.tls_private_key_file, &args.client_ca_file)
                                    .unwrap();
                            let counts = Arc::new(RequestCounts::default());
                            let parts = ServeParts {
                                listener,
                                acceptor: Arc::new(acceptor),
                                dir: args.dir.clone(),
                                stop: rx,
                                counts: counts.clone(),
                            };
                            tokio::spawn(serve(parts));
                            break (addr, Some(counts));
                        }
                        Err(e) => retry(e.into()),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                },
                Up::Down => unreachable!(),
            }
        });
        Some(Self { rt: Some(rt), shutdown: Some(tx), addr, counts })
    }

    /// `(sessions, find_manifests, get_manifest, get_content)` answered so far.
    pub fn requests(&self) -> (u64, u64, u64, u64) {
        self.counts.as_ref().expect("a running server").snapshot()
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

/// The manifest ID of a backup's snapshot of `kind` (`tag:klio.io/content`) in the repository
/// our Kopia server makes of `dir`, read from the repository itself (what the server holds).
pub fn snapshot_id(dir: &Path, kind: &str, cluster: &str, backup: &str, tablespace: Option<&str>) -> String {
    use klio_api::upstream::kopia::labels;
    let repo = klio_api::upstream::kopia::server::repository::DirRepository::new(dir, 4 << 20, Duration::ZERO).unwrap();
    let view = repo.view();
    let found: Vec<String> = view
        .manifests
        .iter()
        .filter(|m| {
            m.labels.get(labels::CONTENT).map(String::as_str) == Some(kind)
                && m.labels.get(labels::HOSTNAME).map(String::as_str) == Some(cluster)
                && m.labels.get(labels::BACKUP).map(String::as_str) == Some(backup)
                && m.labels.get(labels::TABLESPACE).map(String::as_str) == tablespace
        })
        .map(|m| m.id.to_string())
        .collect();
    assert_eq!(found.len(), 1, "one {kind} snapshot of {cluster}/{backup} in {}: {found:?}", dir.display());
    found[0].clone()
}

// ---------------------------------------------------------------------------------------------
// The API service

/// One API service (the harness's, or another replica) on a runtime of its own.
pub struct ApiService {
    rt: Option<Runtime>,
    shutdown: Option<watch::Sender<bool>>,
    pub base: String,
    /// A client presenting the admin certificate (CN demo-admin, O system:masters).
    pub admin: Client,
    /// A client that trusts the CA but presents no certificate.
    pub anonymous: Client,
}

impl ApiService {
    pub fn start(pki: &DemoPki, klio: KlioClientArgs) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (tx, rx) = watch::channel(false);
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
        Self { rt: Some(rt), shutdown: Some(tx), base, admin, anonymous }
    }

    /// Waits (bounded) until `/readyz` answers 200.
    pub fn wait_ready(&self) {
        poll("/readyz to answer 200", WAIT, || (self.anonymous.get("/readyz").status == 200).then_some(()));
    }

    /// The list as JSON (asserting 200).
    pub fn list_json(&self) -> Value {
        let r = self.admin.get_accept(COLLECTION, "application/json");
        assert_eq!(r.status, 200, "list: {}", r.text());
        r.json()
    }

    /// Polls the list (bounded) until `done` holds for it; returns that list. For changes that
    /// show up with the next catalog refresh.
    pub fn list_until(&self, what: &str, mut done: impl FnMut(&Value) -> bool) -> Value {
        poll(what, WAIT, || {
            let list = self.list_json();
            done(&list).then_some(list)
        })
    }
}

impl Drop for ApiService {
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

/// One Klio server given with `--klio-server`.
#[derive(Clone)]
pub struct ServerOpt {
    pub name: &'static str,
    pub tier1: Up,
    pub tier2: Option<Up>,
}

pub struct Options {
    pub tier1: Up,
    /// `None`: no tier-2 server configured.
    pub tier2: Option<Up>,
    /// When not empty, the API service is configured with these servers only (`--klio-server`
    /// entries, no CLIENT_BASE_URL) and `tier1`/`tier2` are ignored. Server `i`'s tiers get the
    /// directories `catalog/<name>/tier1` and `catalog/<name>/tier2`.
    pub servers: Vec<ServerOpt>,
    /// Write `write_sample_catalog` into the tier directories (of every server).
    pub sample: bool,
    /// Wait for `/readyz` before returning.
    pub wait_ready: bool,
    /// The API service's timeout for one request to a Klio server.
    pub klio_timeout_seconds: u64,
    /// How often the API service reads the catalog again.
    pub refresh_seconds: u64,
    /// How many snapshots the API service keeps (watch replay, continue tokens).
    pub history: usize,
    /// Writes records into the first server's tier directories (tier 1, tier 2) before anything
    /// starts, so the first catalog read sees all of them.
    pub prepare: Option<fn(&Path, &Path)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tier1: Up::Kopia,
            tier2: None,
            servers: vec![],
            sample: true,
            wait_ready: true,
            klio_timeout_seconds: 10,
            // Tests change the catalog and look again: refresh often.
            refresh_seconds: 1,
            history: 100,
            prepare: None,
        }
    }
}

pub struct Harness {
    /// Declared first: stopped before the upstreams and the directory go.
    pub api: ApiService,
    /// One per source (a server's tier), in configuration order; `None` when nothing listens.
    pub upstreams: Vec<Option<Upstream>>,
    /// The ports of the sources (reserved even when nothing listens).
    pub tier_ports: Vec<u16>,
    /// The catalog directories of the sources.
    pub dirs: Vec<PathBuf>,
    /// The first server's tier directories.
    pub tier1_dir: PathBuf,
    pub tier2_dir: PathBuf,
    /// How the API service reaches Klio (to start replicas).
    pub klio: KlioClientArgs,
    pub pki: DemoPki,
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for Harness {
    type Target = ApiService;
    fn deref(&self) -> &ApiService {
        &self.api
    }
}

impl Harness {
    /// The sample catalog on one Kopia server, ready.
    pub fn sample() -> Self {
        Self::start(Options::default())
    }

    /// The sample catalog on two Kopia servers (tier 1 and tier 2), ready.
    pub fn sample_two_tiers() -> Self {
        Self::start(Options { tier2: Some(Up::Kopia), ..Default::default() })
    }

    /// An empty catalog directory on one Kopia server; call `put_record` and so on before
    /// the first request.
    pub fn empty() -> Self {
        Self::start(Options { sample: false, ..Default::default() })
    }

    pub fn start(opts: Options) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let pki = DemoPki::create(dir.path()).expect("writing the demo PKI");
        let catalog = dir.path().join("catalog");
        let servers = if opts.servers.is_empty() {
            vec![(None, opts.tier1.clone(), opts.tier2.clone(), catalog.join("tier1"), catalog.join("tier2"))]
        } else {
            opts.servers
                .iter()
                .map(|s| {
                    let d = catalog.join(s.name);
                    (Some(s.name), s.tier1.clone(), s.tier2.clone(), d.join("tier1"), d.join("tier2"))
                })
                .collect()
        };
        for (_, _, _, t1, t2) in &servers {
            std::fs::create_dir_all(t1).unwrap();
            std::fs::create_dir_all(t2).unwrap();
            if opts.sample {
                klio_api::demo::write_sample_catalog(t1, t2).expect("writing the sample catalog");
            }
        }
        if let (Some(prepare), Some((_, _, _, t1, t2))) = (opts.prepare, servers.first()) {
            prepare(t1, t2);
        }

        let mut tier_ports = vec![];
        let mut upstreams = vec![];
        let mut dirs = vec![];
        let mut specs = vec![];
        let url = |p: u16| format!("https://127.0.0.1:{p}");
        for (name, tier1, tier2, t1, t2) in &servers {
            let mut urls = vec![];
            for (up, tier_dir) in std::iter::once((tier1, t1)).chain(tier2.iter().map(|u| (u, t2))) {
                let upstream = Upstream::start(&pki, tier_dir, 0, up);
                let port = match &upstream {
                    Some(u) => u.addr.port(),
                    None => free_port(),
                };
                urls.push(url(port));
                tier_ports.push(port);
                upstreams.push(upstream);
                dirs.push(tier_dir.clone());
            }
            specs.push((*name, urls));
        }

        let mut klio = if opts.servers.is_empty() {
            let urls = &specs[0].1;
            pki.klio_client_args(urls[0].clone(), urls.get(1).cloned())
        } else {
            let mut k = pki.klio_client_args(String::new(), None);
            k.url = None;
            k.servers = specs
                .iter()
                .map(|(name, urls)| ServerSpec {
                    name: name.unwrap().to_string(),
                    url: urls[0].clone(),
                    tier2_url: urls.get(1).cloned(),
                    server_cert: None,
                    client_cert: None,
                    client_key: None,
                    hostname: None,
                })
                .collect();
            k
        };
        klio.timeout_seconds = opts.klio_timeout_seconds;
        klio.refresh_seconds = opts.refresh_seconds;
        klio.history = opts.history;
        let api = ApiService::start(&pki, klio.clone());
        let (tier1_dir, tier2_dir) = (servers[0].3.clone(), servers[0].4.clone());
        let h = Self { api, upstreams, tier_ports, dirs, tier1_dir, tier2_dir, klio, pki, dir };
        if opts.wait_ready {
            h.wait_ready();
        }
        h
    }

    /// Another API service (replica) reading the same Klio servers, refreshing every
    /// `refresh_seconds`.
    pub fn replica(&self, refresh_seconds: u64) -> ApiService {
        let mut klio = self.klio.clone();
        klio.refresh_seconds = refresh_seconds;
        ApiService::start(&self.pki, klio)
    }

    pub fn tier_url(&self, tier: usize) -> String {
        format!("https://127.0.0.1:{}", self.tier_ports[tier])
    }

    /// Starts (or restarts) the server of source `tier` on its port.
    pub fn start_upstream(&mut self, tier: usize, up: &Up) {
        self.upstreams[tier] = None;
        let port = self.tier_ports[tier];
        self.upstreams[tier] =
            Some(Upstream::start(&self.pki, &self.dirs[tier], port, up).expect("an upstream server"));
    }

    /// Stops the server of source `tier`, closing its open connections.
    pub fn stop_upstream(&mut self, tier: usize) {
        self.upstreams[tier] = None;
    }

    /// A client with another certificate (PEM files).
    pub fn client_with(&self, cert_pem: &[u8], key_pem: &[u8]) -> Client {
        let ca = std::fs::read(self.pki.path("ca.crt")).unwrap();
        Client::new(&self.base, &ca, Some((cert_pem, key_pem)))
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

/// `metadata.resourceVersion` of a list, Table or object.
pub fn rv_of(body: &Value) -> String {
    body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_else(|| panic!("no metadata.resourceVersion: {body}"))
        .to_string()
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

    /// Starts a watch request and returns once the response head is in.
    pub fn watch(&self, path: &str, accept: &str) -> Watch {
        use std::io::BufRead;
        let url = format!("{}{}", self.base, path);
        let resp = self.agent.get(&url).header("Accept", accept).call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let reader = resp.into_body().into_reader();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(reader);
            loop {
                let mut line = String::new();
                let next = match reader.read_line(&mut line) {
                    Ok(0) => Line::End(None),
                    Ok(_) => Line::Text(line),
                    Err(e) => Line::End(Some(e.to_string())),
                };
                let end = matches!(next, Line::End(_));
                if tx.send(next).is_err() || end {
                    return;
                }
            }
        });
        Watch { status, headers, rx, ended: None }
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

// ---------------------------------------------------------------------------------------------
// Watch streams

/// What a watch stream yielded next.
#[derive(Debug)]
pub enum Next {
    /// One `{"type":..,"object":..}` line.
    Event(Value),
    /// The server ended the stream (with the read error, if it was not a clean end).
    End(Option<String>),
    /// Nothing within the time allowed.
    Timeout,
}

enum Line {
    Text(String),
    End(Option<String>),
}

/// A watch response: the head at once, the lines as they arrive (read on a thread of its own,
/// so every wait here is bounded).
pub struct Watch {
    pub status: u16,
    pub headers: http::HeaderMap,
    rx: std::sync::mpsc::Receiver<Line>,
    ended: Option<Option<String>>,
}

impl Watch {
    pub fn content_type(&self) -> &str {
        self.headers.get("content-type").map(|v| v.to_str().unwrap()).unwrap_or_default()
    }

    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers.get_all(name).iter().map(|v| v.to_str().expect("a text header").to_string()).collect()
    }

    /// The next line (an event), the end, or a timeout.
    pub fn next(&mut self, timeout: Duration) -> Next {
        if let Some(end) = &self.ended {
            return Next::End(end.clone());
        }
        match self.rx.recv_timeout(timeout) {
            Ok(Line::Text(line)) => {
                assert!(line.ends_with('\n'), "a watch event is one line ending in a newline: {line:?}");
                let v: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("a watch line is not JSON ({e}): {line:?}"));
                assert!(v["type"].is_string() && v["object"].is_object(), "not a watch event: {v}");
                Next::Event(v)
            }
            Ok(Line::End(err)) => {
                self.ended = Some(err.clone());
                Next::End(err)
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Next::Timeout,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Next::End(Some("reader gone".into())),
        }
    }

    /// The next event; panics on the end of the stream or after `timeout`.
    pub fn event(&mut self, timeout: Duration) -> Value {
        match self.next(timeout) {
            Next::Event(v) => v,
            other => panic!("expected a watch event within {timeout:?}, got {other:?}"),
        }
    }

    /// The next `n` events, each within `timeout`.
    pub fn events(&mut self, n: usize, timeout: Duration) -> Vec<Value> {
        (0..n).map(|_| self.event(timeout)).collect()
    }

    /// Asserts that the stream ends (cleanly) within `timeout`, with no further event.
    pub fn expect_end(&mut self, timeout: Duration) {
        match self.next(timeout) {
            Next::End(None) => {}
            other => panic!("expected the stream to end within {timeout:?}, got {other:?}"),
        }
    }

    /// Asserts that no event arrives during `window` (the stream may stay open).
    pub fn expect_quiet(&mut self, window: Duration) {
        match self.next(window) {
            Next::Timeout => {}
            other => panic!("expected no event for {window:?}, got {other:?}"),
        }
    }

    /// Everything until the end (bounded): for non-200 answers.
    pub fn rest_text(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut text = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Line::Text(line)) => text.push_str(&line),
                Ok(Line::End(_)) | Err(_) => return text,
            }
        }
    }
}

/// `(type, metadata.name)` of an event whose object is a KlioBackup, or a one-row Table.
pub fn event_summary(e: &Value) -> (String, String) {
    let kind = e["type"].as_str().unwrap().to_string();
    let o = &e["object"];
    let name = if o["kind"] == "Table" {
        let rows = o["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), 1, "a watch Table holds one row: {o}");
        rows[0]["cells"][0].as_str().unwrap().to_string()
    } else {
        o["metadata"]["name"].as_str().unwrap_or_default().to_string()
    };
    (kind, name)
}
