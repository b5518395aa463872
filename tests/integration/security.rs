//! Delegated authentication and authorization, attacked from outside: the real API service
//! (`ApiServer::bind` + `serve`) on 127.0.0.1, our Kopia-protocol catalog server behind it, and a
//! kube-apiserver double (tests/integration/common/kube_double.rs) that serves the
//! `extension-apiserver-authentication` ConfigMap, TokenReviews and SubjectAccessReviews.
//!
//! The identity the service settles on is observed where kube-apiserver would see it: in the
//! SubjectAccessReview specs the double records (user, uid, groups, extra), and in the HTTP
//! answer. Clients are raw HTTP/1.1 over openssl, so the tests control the exact header bytes,
//! the client certificate chain, and which TLS connection carries a request.
//!
//! Self-contained (the shared harness in common/ is not used). Every wait is bounded.

use crate::common::kube_double;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use k8s_openapi::api::authorization::v1::SubjectAccessReviewSpec;
use klio_api::config::{ApiServerArgs, AuthArgs};
use klio_api::demo::DemoPki;
use klio_api::pki::{KeyPair, Usage};
use kube_double::{KubeDouble, SarAnswer, TokenUser};
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslConnector, SslMethod, SslStream};
use openssl::x509::X509;
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use tokio::sync::watch;

const GROUP: &str = "kliocatalog.enterprisedb.io";
const COLLECTION: &str = "/apis/kliocatalog.enterprisedb.io/v1alpha1/kliobackups";
const EXAMPLE: &str = "cluster-example.backup-20251113093137";
const PROXY_CN: &str = "front-proxy-client";
const WAIT: Duration = Duration::from_secs(15);

/// Polls `f` every 50 ms until it yields `Some`, for at most `timeout`.
fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// A raw HTTPS client

/// A client certificate, its key, and the intermediates sent with it.
#[derive(Clone)]
struct Cred {
    cert: X509,
    key: PKey<Private>,
    chain: Vec<X509>,
}

impl From<&KeyPair> for Cred {
    fn from(p: &KeyPair) -> Self {
        Self { cert: p.cert.clone(), key: p.key.clone(), chain: vec![] }
    }
}

/// One TLS connection speaking HTTP/1.1 (keep-alive).
struct Conn {
    reader: BufReader<SslStream<TcpStream>>,
    port: u16,
    /// The serial of the serving certificate this connection was set up with (hex).
    server_serial: String,
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Asserts a `metav1.Status` failure with this code, reason and message; returns it.
    fn expect_status(&self, code: u16, reason: &str, message: &str) -> Value {
        assert_eq!(self.status, code, "HTTP status; body: {}", self.text());
        let ct = self.header("content-type").unwrap_or_default();
        assert!(ct.starts_with("application/json"), "a Status is JSON, got {ct:?}: {}", self.text());
        let s = self.json();
        assert_eq!(s["kind"], "Status", "{s}");
        assert_eq!(s["apiVersion"], "v1", "{s}");
        assert_eq!(s["status"], "Failure", "{s}");
        assert_eq!(s["code"], code, "{s}");
        assert_eq!(s["reason"], reason, "{s}");
        assert_eq!(s["message"], message, "{s}");
        s
    }

    /// kubectl's 401: `error: You must be logged in to the server (Unauthorized)`.
    fn expect_unauthorized(&self) {
        let s = self.expect_status(401, "Unauthorized", "Unauthorized");
        assert!(s.get("details").is_none(), "a 401 says nothing more: {s}");
    }
}

fn connect(addr: SocketAddr, server_ca: &X509, cred: Option<&Cred>) -> Result<Conn, String> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    b.cert_store_mut().add_cert(server_ca.clone()).map_err(|e| e.to_string())?;
    if let Some(c) = cred {
        b.set_certificate(&c.cert).map_err(|e| e.to_string())?;
        b.set_private_key(&c.key).map_err(|e| e.to_string())?;
        for x in &c.chain {
            b.add_extra_chain_cert(x.clone()).map_err(|e| e.to_string())?;
        }
    }
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let stream = b.build().connect("127.0.0.1", tcp).map_err(|e| format!("TLS handshake: {e}"))?;
    let server_serial = stream
        .ssl()
        .peer_certificate()
        .expect("a serving certificate")
        .serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string();
    Ok(Conn { reader: BufReader::new(stream), port: addr.port(), server_serial })
}

impl Conn {
    /// Sends one request, header lines written exactly as given, and reads the answer.
    fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Result<Resp, String> {
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: security-test\r\n", self.port);
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("accept")) {
            req.push_str("Accept: application/json\r\n");
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if method != "GET" && method != "HEAD" {
            req.push_str("Content-Length: 0\r\n");
        }
        req.push_str("\r\n");
        let io = |e: std::io::Error| format!("{method} {path}: {e}");
        self.reader.get_mut().write_all(req.as_bytes()).map_err(io)?;
        self.reader.get_mut().flush().map_err(io)?;

        let mut line = String::new();
        if self.reader.read_line(&mut line).map_err(io)? == 0 {
            return Err(format!("{method} {path}: the connection was closed without an answer"));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut headers = vec![];
        loop {
            line.clear();
            self.reader.read_line(&mut line).map_err(io)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').ok_or_else(|| format!("bad header line {l:?}"))?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let get = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
        let mut body = vec![];
        if method == "HEAD" || status == 304 || status == 204 {
        } else if let Some(len) = get("content-length") {
            let len: usize = len.parse().map_err(|_| format!("bad Content-Length {len:?}"))?;
            body.resize(len, 0);
            self.reader.read_exact(&mut body).map_err(io)?;
        } else if get("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
            loop {
                line.clear();
                self.reader.read_line(&mut line).map_err(io)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or_default(), 16)
                    .map_err(|_| format!("bad chunk size {line:?}"))?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk).map_err(io)?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            self.reader.read_to_end(&mut body).map_err(io)?;
        }
        Ok(Resp { status, headers, body })
    }
}

// ---------------------------------------------------------------------------------------------
// The stack under test

struct Opts {
    anonymous: Option<bool>,
    max_inflight: usize,
    token_ttl: u64,
    allowed_ttl: u64,
    denied_ttl: u64,
    refresh: u64,
    /// Connection bounds other than the defaults.
    limits: Option<klio_api::server::ConnectionLimits>,
    /// Backups added to the sample catalog, each with `BIG_ANNOTATION` bytes of annotation
    /// (enough of them and a list or a watch outgrows every socket buffer).
    big_backups: usize,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            anonymous: None,
            max_inflight: 400,
            token_ttl: 10,
            allowed_ttl: 10,
            denied_ttl: 10,
            refresh: 30,
            limits: None,
            big_backups: 0,
        }
    }
}

const BIG_ANNOTATION: usize = 8 * 1024;

/// `ApiServerArgs` with every default, as the command line would give them (robust to new flags).
#[derive(Parser)]
struct Cmd {
    #[command(flatten)]
    args: ApiServerArgs,
}

/// The API service delegating to a kube-apiserver double, a catalog server, and the PKI:
/// the demo CA (serving and catalog certificates), a client CA for users and a front-proxy CA,
/// both published in the double's `extension-apiserver-authentication` ConfigMap.
struct Stack {
    _dir: tempfile::TempDir,
    pki: DemoPki,
    kube: KubeDouble,
    user_ca: KeyPair,
    proxy_ca: KeyPair,
    /// The aggregation layer's certificate (an allowed name).
    proxy: Cred,
    /// The CA the serving certificate chains to.
    server_ca: X509,
    addr: SocketAddr,
    /// The API service's open connections.
    connections: klio_api::server::ConnectionStats,
    runtimes: Vec<(Runtime, watch::Sender<bool>)>,
}

fn json_list(items: &[&str]) -> String {
    serde_json::to_string(items).unwrap()
}

impl Stack {
    fn start() -> Self {
        Self::with(Opts::default())
    }

    fn with(opts: Opts) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = DemoPki::create(dir.path()).unwrap();
        let tier1 = dir.path().join("tier1");
        let tier2 = dir.path().join("tier2");
        std::fs::create_dir_all(&tier1).unwrap();
        std::fs::create_dir_all(&tier2).unwrap();
        klio_api::demo::write_sample_catalog(&tier1, &tier2).unwrap();
        for i in 0..opts.big_backups {
            let mut record =
                klio_api::demo::sample_record("pg-big", &format!("backup-{i:06}"), 1_700_000_000, 60, 9, false);
            record["annotations"]["example.com/padding"] = json!("p".repeat(BIG_ANNOTATION));
            let dir = tier1.join("pg-big");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("backup-{i:06}.json")), record.to_string()).unwrap();
        }

        // The catalog server, on a runtime of its own.
        let catalog_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (catalog_tx, catalog_rx) = watch::channel(false);
        let serve_args = pki.catalog_serve_args(tier1.clone());
        let catalog_addr = catalog_rt.block_on(async move {
            let server = klio_api::upstream::kopia::server::KopiaServer::bind(&serve_args).await.unwrap();
            let addr = server.local_addr();
            tokio::spawn(server.serve(catalog_rx));
            addr
        });

        let user_ca = KeyPair::new_ca("klio-test-user-ca").unwrap();
        let proxy_ca = KeyPair::new_ca("klio-test-front-proxy-ca").unwrap();
        let proxy = Cred::from(&proxy_ca.issue(PROXY_CN, &[], &[], Usage::Client).unwrap());
        let kube = KubeDouble::start();
        let pem = |p: &KeyPair| String::from_utf8(p.cert_pem()).unwrap();
        let data: BTreeMap<String, String> = [
            ("client-ca-file", pem(&user_ca)),
            ("requestheader-client-ca-file", pem(&proxy_ca)),
            ("requestheader-allowed-names", json_list(&[PROXY_CN])),
            ("requestheader-username-headers", json_list(&["X-Remote-User"])),
            ("requestheader-group-headers", json_list(&["X-Remote-Group"])),
            ("requestheader-extra-headers-prefix", json_list(&["X-Remote-Extra-"])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        kube.set_configmap(Some(data));
        kube.set_sar_rule(|_| SarAnswer::allow());

        let mut args = Cmd::try_parse_from(["klio-api"]).expect("default arguments").args;
        args.bind_address = Ipv4Addr::LOCALHOST.into();
        args.secure_port = 0;
        args.tls_cert_file = Some(pki.path("api-server.crt"));
        args.tls_private_key_file = Some(pki.path("api-server.key"));
        args.client_ca_file = None; // from the ConfigMap
        args.api_group = None;
        args.max_requests_inflight = opts.max_inflight;
        args.request_timeout_seconds = 60;
        args.auth = AuthArgs {
            kubeconfig: Some(kube.write_kubeconfig(dir.path())),
            authentication_skip_lookup: false,
            authentication_config_refresh_seconds: opts.refresh,
            authentication_token_webhook_cache_ttl_seconds: opts.token_ttl,
            authorization_webhook_cache_authorized_ttl_seconds: opts.allowed_ttl,
            authorization_webhook_cache_unauthorized_ttl_seconds: opts.denied_ttl,
            anonymous_auth: opts.anonymous,
            ..AuthArgs::standalone()
        };
        let mut klio = pki.klio_client_args(format!("https://127.0.0.1:{}", catalog_addr.port()), None);
        klio.refresh_seconds = 1;
        args.klio = klio;

        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (tx, rx) = watch::channel(false);
        let (addr, connections) = rt.block_on(async move {
            let mut api = klio_api::apiserver::ApiServer::bind(&args).await.expect("binding the API service");
            if let Some(limits) = opts.limits {
                api = api.with_connection_limits(limits);
            }
            let addr = api.local_addr();
            let connections = api.connection_stats();
            tokio::spawn(api.serve(rx));
            (addr, connections)
        });
        let server_ca = X509::from_pem(&std::fs::read(pki.path("ca.crt")).unwrap()).unwrap();
        let stack = Self {
            _dir: dir,
            pki,
            kube,
            user_ca,
            proxy_ca,
            proxy,
            server_ca,
            addr,
            connections,
            runtimes: vec![(rt, tx), (catalog_rt, catalog_tx)],
        };
        poll("/readyz to answer 200", WAIT, || {
            stack.request(None, "GET", "/readyz", &[]).ok().filter(|r| r.status == 200).map(|_| ())
        });
        stack
    }

    fn connect(&self, cred: Option<&Cred>) -> Result<Conn, String> {
        connect(self.addr, &self.server_ca, cred)
    }

    /// One request on a new connection. `Err` when TLS (or the connection) failed.
    fn request(&self, cred: Option<&Cred>, method: &str, path: &str, headers: &[(&str, &str)]) -> Result<Resp, String> {
        let mut conn = self.connect(cred)?;
        let mut all = headers.to_vec();
        all.push(("Connection", "close"));
        conn.send(method, path, &all)
    }

    /// As `request`, asserting that TLS and HTTP worked.
    fn get(&self, cred: Option<&Cred>, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.request(cred, "GET", path, headers).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// A user certificate from the client CA.
    fn user(&self, cn: &str, groups: &[&str]) -> Cred {
        Cred::from(&self.user_ca.issue(cn, groups, &[], Usage::Client).unwrap())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for (rt, tx) in self.runtimes.drain(..) {
            let _ = tx.send(true);
            rt.shutdown_background();
        }
    }
}

/// The identity a SubjectAccessReview asked about.
#[derive(Debug, PartialEq, Eq)]
struct Who {
    user: String,
    uid: Option<String>,
    groups: Vec<String>,
    extra: BTreeMap<String, Vec<String>>,
}

fn who(spec: &SubjectAccessReviewSpec) -> Who {
    Who {
        user: spec.user.clone().unwrap_or_default(),
        uid: spec.uid.clone(),
        groups: spec.groups.clone().unwrap_or_default(),
        extra: spec.extra.clone().unwrap_or_default().into_iter().collect(),
    }
}

fn who_is(user: &str, groups: &[&str], extra: &[(&str, &[&str])]) -> Who {
    Who {
        user: user.into(),
        uid: None,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        extra: extra.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect(),
    }
}

fn list_forbidden(user: &str) -> String {
    format!(
        "kliobackups.{GROUP} is forbidden: User \"{user}\" cannot list resource \"kliobackups\" in API group \"{GROUP}\" at the cluster scope"
    )
}

// ---------------------------------------------------------------------------------------------
// Probes

#[test]
fn probes_answer_without_credentials_and_without_reviews() {
    let s = Stack::with(Opts { anonymous: Some(false), ..Default::default() });
    s.kube.set_sar_rule(|_| SarAnswer::deny("nobody"));
    for probe in ["/healthz", "/livez", "/readyz"] {
        let r = s.get(None, probe, &[]);
        assert_eq!(r.status, 200, "{probe}: {}", r.text());
    }
    // Everything else needs credentials (anonymous is off here).
    for path in ["/apis", "/version", COLLECTION, &format!("{COLLECTION}/{EXAMPLE}")] {
        s.get(None, path, &[]).expect_unauthorized();
    }
    assert_eq!(s.kube.sar_count(), 0, "probes are always allowed, 401s are never authorized");
    assert_eq!(s.kube.token_reviews(), 0);
}

// ---------------------------------------------------------------------------------------------
// Request headers: only a trusted front proxy may name the user

#[test]
fn request_headers_without_a_client_certificate_are_not_trusted() {
    let spoof: &[(&str, &str)] =
        &[("X-Remote-User", "admin"), ("X-Remote-Group", "system:masters"), ("X-Remote-Extra-Scopes", "everything")];
    // Anonymous on (the default with a kube-apiserver): the request is system:anonymous, and
    // the SubjectAccessReview decides, not the spoofed system:masters group.
    let s = Stack::start();
    s.kube.set_sar_rule(|_| SarAnswer::no_opinion(""));
    s.get(None, COLLECTION, spoof).expect_status(403, "Forbidden", &list_forbidden("system:anonymous"));
    assert_eq!(s.kube.sar_count(), 1);
    assert_eq!(who(&s.kube.last_sar()), who_is("system:anonymous", &["system:unauthenticated"], &[]));

    // Anonymous off: 401, and nothing is asked of the kube-apiserver.
    let s = Stack::with(Opts { anonymous: Some(false), ..Default::default() });
    s.get(None, COLLECTION, spoof).expect_unauthorized();
    s.get(None, "/apis", spoof).expect_unauthorized();
    assert_eq!(s.kube.sar_count(), 0);
}

#[test]
fn request_headers_behind_a_client_ca_certificate_are_ignored() {
    let s = Stack::start();
    let spoof: &[(&str, &str)] =
        &[("X-Remote-User", "admin"), ("X-Remote-Group", "system:masters"), ("X-Remote-Extra-Scopes", "all")];
    let alice = s.user("alice", &["dev"]);
    let r = s.get(Some(&alice), COLLECTION, spoof);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(who(&s.kube.last_sar()), who_is("alice", &["dev", "system:authenticated"], &[]));

    // A client-CA certificate carrying the front proxy's allowed name is still just a user:
    // the allowed names only apply to certificates of the request-header CA.
    let lookalike = s.user(PROXY_CN, &[]);
    let r = s.get(Some(&lookalike), COLLECTION, spoof);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(who(&s.kube.last_sar()), who_is(PROXY_CN, &["system:authenticated"], &[]));
    assert_eq!(s.kube.sar_count(), 2);
}

#[test]
fn front_proxy_certificate_with_a_name_not_allowed_is_unauthorized() {
    let s = Stack::start();
    let rogue = Cred::from(&s.proxy_ca.issue("rogue-proxy", &[], &[], Usage::Client).unwrap());
    let headers: &[(&str, &str)] = &[("X-Remote-User", "bob"), ("X-Remote-Group", "system:masters")];
    s.get(Some(&rogue), COLLECTION, headers).expect_unauthorized();
    s.get(Some(&rogue), "/apis", headers).expect_unauthorized();
    // Nor does it pass as anonymous without headers: a presented certificate that is not
    // accepted fails the request.
    s.get(Some(&rogue), COLLECTION, &[]).expect_unauthorized();
    // The allowed front proxy naming nobody is not a user either.
    s.get(Some(&s.proxy), COLLECTION, &[]).expect_unauthorized();
    assert_eq!(s.kube.sar_count(), 0);
}

#[test]
fn front_proxy_names_the_user_groups_and_extra() {
    let s = Stack::start();
    let r = s.get(
        Some(&s.proxy),
        COLLECTION,
        &[
            ("X-Remote-User", "bob"),
            ("X-Remote-Group", "team-a"),
            ("X-Remote-Group", "team-b,team-c"),
            ("X-Remote-Extra-Scopes", "read"),
            ("X-Remote-Extra-Scopes", "write"),
            ("X-Remote-Extra-Example.com%2fTeam", "Blue"),
            // A token next to the proxy's word is not reviewed: request headers come first.
            ("Authorization", "Bearer not-a-token"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        who(&s.kube.last_sar()),
        who_is(
            "bob",
            &["team-a", "team-b,team-c", "system:authenticated"],
            &[("scopes", &["read", "write"]), ("example.com/team", &["Blue"])]
        ),
        "groups from every X-Remote-Group value (not split on commas), extra keys lower-cased and %-decoded"
    );
    assert_eq!(s.kube.token_reviews(), 0);

    // Denied: the 403 names the header user, not the proxy.
    s.kube.set_sar_rule(|spec| {
        if spec.user.as_deref() == Some("bob") {
            SarAnswer::allow()
        } else {
            SarAnswer::no_opinion("")
        }
    });
    s.get(Some(&s.proxy), COLLECTION, &[("X-Remote-User", "carol")]).expect_status(
        403,
        "Forbidden",
        &list_forbidden("carol"),
    );
    assert_eq!(who(&s.kube.last_sar()), who_is("carol", &["system:authenticated"], &[]));
}

#[test]
fn front_proxy_header_names_are_case_insensitive_and_first_user_wins() {
    let s = Stack::start();
    let r = s.get(
        Some(&s.proxy),
        COLLECTION,
        &[
            ("x-remote-USER", "carol"),
            ("X-REMOTE-USER", "mallory"),
            ("x-Remote-Group", "g1"),
            ("X-Remote-Group", ""),
            ("X-REMOTE-GROUP", "g2"),
            ("X-REMOTE-EXTRA-Acme.IO%2FRole", "Admin"),
            ("x-remote-extra-acme.io%2frole", "Viewer"),
            ("X-Remote-Extra-", "no key"),
            ("X-Not-Remote-Extra-Scopes", "lookalike"),
            ("X-Remote-Extras", "lookalike"),
            ("X-Remote-Users", "lookalike"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        who(&s.kube.last_sar()),
        who_is("carol", &["g1", "g2", "system:authenticated"], &[("acme.io/role", &["Admin", "Viewer"])]),
        "the first user header wins, empty groups are dropped, values keep their case, lookalike headers are ignored"
    );
}

// ---------------------------------------------------------------------------------------------
// Certificates that must never authenticate

#[test]
fn invalid_certificates_never_authenticate() {
    let s = Stack::start();
    let proxy_headers: &[(&str, &str)] = &[("X-Remote-User", "bob"), ("X-Remote-Group", "system:masters")];
    let user_ca = &s.user_ca;
    let proxy_ca = &s.proxy_ca;
    let stranger_ca = KeyPair::new_ca("klio-test-user-ca").unwrap(); // same name, other key
    let alice = user_ca.issue("alice", &[], &[], Usage::Client).unwrap();
    // A "CA" that is a user certificate: basicConstraints CA:FALSE.
    let mut signed_by_leaf = Cred::from(&alice.issue(PROXY_CN, &["system:masters"], &[], Usage::Client).unwrap());
    signed_by_leaf.chain = vec![alice.cert.clone()];
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let cases: Vec<(&str, Cred, Headers)> = vec![
        (
            "expired user",
            Cred::from(&user_ca.issue_with_validity("alice", &[], &[], Usage::Client, -10, 1).unwrap()),
            &[],
        ),
        (
            "not-yet-valid user",
            Cred::from(&user_ca.issue_with_validity("alice", &[], &[], Usage::Client, 2, 30).unwrap()),
            &[],
        ),
        (
            "expired front proxy",
            Cred::from(&proxy_ca.issue_with_validity(PROXY_CN, &[], &[], Usage::Client, -10, 1).unwrap()),
            proxy_headers,
        ),
        (
            "not-yet-valid front proxy",
            Cred::from(&proxy_ca.issue_with_validity(PROXY_CN, &[], &[], Usage::Client, 2, 30).unwrap()),
            proxy_headers,
        ),
        (
            "server-only front proxy",
            Cred::from(&proxy_ca.issue(PROXY_CN, &[], &["localhost"], Usage::Server).unwrap()),
            proxy_headers,
        ),
        (
            "unknown CA with the client CA's name",
            Cred::from(&stranger_ca.issue("alice", &["system:masters"], &[], Usage::Client).unwrap()),
            proxy_headers,
        ),
        ("signed by a user certificate", signed_by_leaf, proxy_headers),
    ];
    for (what, cred, headers) in &cases {
        for path in [COLLECTION, "/apis"] {
            match s.request(Some(cred), "GET", path, headers) {
                // Refused in the handshake (or, TLS 1.3, by an alert right after it).
                Err(e) => eprintln!("{what}, {path}: refused by TLS: {e}"),
                Ok(r) => {
                    eprintln!("{what}, {path}: HTTP {}", r.status);
                    assert_eq!(r.status, 401, "{what} certificate, {path}: must never authenticate: {}", r.text());
                    r.expect_unauthorized();
                }
            }
        }
    }
    assert_eq!(s.kube.sar_count(), 0, "no invalid certificate reached authorization: {:?}", s.kube.sars());
    // The server is fine afterwards.
    let r = s.get(Some(&s.user("alice", &[])), COLLECTION, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
}

// ---------------------------------------------------------------------------------------------
// Bearer tokens

#[test]
fn tokens_are_reviewed_and_rejected_tokens_are_unauthorized() {
    let s = Stack::start(); // anonymous on
    let mut tina = TokenUser::new("tina", &["team-a"]);
    tina.uid = Some("uid-tina".into());
    tina.extra.insert("authentication.kubernetes.io/credential-id".into(), vec!["JTI=1".into()]);
    s.kube.add_token("good-token", tina);

    // Rejected: 401 even though anonymous requests are allowed.
    s.get(None, COLLECTION, &[("Authorization", "Bearer bad-token")]).expect_unauthorized();
    s.get(None, "/apis", &[("Authorization", "Bearer bad-token")]).expect_unauthorized();
    assert_eq!(s.kube.sar_count(), 0);
    assert_eq!(s.kube.reviewed_tokens(), ["bad-token"], "the rejection is cached too");

    // Accepted: that user, with uid, groups and extra from the TokenReview.
    let r = s.get(None, COLLECTION, &[("Authorization", "Bearer good-token")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        who(&s.kube.last_sar()),
        Who {
            uid: Some("uid-tina".into()),
            ..who_is(
                "tina",
                &["team-a", "system:authenticated"],
                &[("authentication.kubernetes.io/credential-id", &["JTI=1"])]
            )
        }
    );
    assert_eq!(s.kube.reviewed_tokens(), ["bad-token", "good-token"]);

    // A client certificate comes before a token: the token is not even reviewed.
    let r = s.get(Some(&s.user("alice", &[])), COLLECTION, &[("Authorization", "Bearer other-bad-token")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(who(&s.kube.last_sar()).user, "alice");
    assert_eq!(s.kube.token_reviews(), 2);
    assert_eq!(s.kube.unauthenticated_calls(), 0, "the service presents its kubeconfig token");
}

#[test]
fn token_reviews_are_cached_for_the_ttl() {
    let ttl = Duration::from_secs(3);
    let s = Stack::with(Opts { token_ttl: ttl.as_secs(), ..Default::default() });
    s.kube.add_token("t", TokenUser::new("tina", &[]));
    let auth: &[(&str, &str)] = &[("Authorization", "Bearer t")];
    let started = Instant::now();
    assert_eq!(s.get(None, COLLECTION, auth).status, 200);
    assert_eq!(s.kube.token_reviews(), 1);
    // Revoked in the kube-apiserver: still honoured from the cache until the TTL ends.
    s.kube.remove_token("t");
    let r = s.get(None, "/apis", auth);
    if started.elapsed() < ttl {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(s.kube.token_reviews(), 1, "a second request within the TTL makes no TokenReview");
    } else {
        eprintln!("note: the machine is too slow to check the cache hit within {ttl:?}");
    }
    let r = poll("the revoked token to be refused", ttl + Duration::from_secs(5), || {
        let r = s.get(None, COLLECTION, auth);
        (r.status != 200).then_some(r)
    });
    r.expect_unauthorized();
    assert!(started.elapsed() >= ttl, "the cached answer was dropped before its TTL");
    assert_eq!(s.kube.token_reviews(), 2, "one new TokenReview after the TTL");
}

// ---------------------------------------------------------------------------------------------
// Authorization

#[test]
fn denials_are_worded_like_kube_apiserver() {
    let s = Stack::start();
    s.kube.set_sar_rule(|spec| match spec.resource_attributes.as_ref().and_then(|r| r.verb.as_deref()) {
        Some("get") => SarAnswer::deny("no RBAC policy matched"),
        _ => SarAnswer::no_opinion(""),
    });
    let u = s.user("u", &[]);

    let st = s.get(Some(&u), COLLECTION, &[]).expect_status(403, "Forbidden", &list_forbidden("u"));
    assert_eq!(st["details"], json!({ "group": GROUP, "kind": "kliobackups" }), "{st}");

    let st = s.get(Some(&u), &format!("{COLLECTION}/{EXAMPLE}"), &[]).expect_status(
        403,
        "Forbidden",
        &format!("kliobackups.{GROUP} \"{EXAMPLE}\" is forbidden: User \"u\" cannot get resource \"kliobackups\" in API group \"{GROUP}\" at the cluster scope: no RBAC policy matched"),
    );
    assert_eq!(st["details"], json!({ "group": GROUP, "kind": "kliobackups", "name": EXAMPLE }), "{st}");

    s.get(Some(&u), &format!("{COLLECTION}?watch=true"), &[]).expect_status(
        403,
        "Forbidden",
        &format!("kliobackups.{GROUP} is forbidden: User \"u\" cannot watch resource \"kliobackups\" in API group \"{GROUP}\" at the cluster scope"),
    );

    let st = s.get(Some(&u), "/apis", &[]).expect_status(
        403,
        "Forbidden",
        "forbidden: User \"u\" cannot get path \"/apis\"",
    );
    assert!(st.get("details").is_none(), "{st}");

    // What was asked: kube's attributes for each request.
    let asked: Vec<Value> = s
        .kube
        .sars()
        .iter()
        .map(|spec| {
            let mut v = serde_json::to_value(spec).unwrap();
            v.as_object_mut().unwrap().retain(|k, _| k.ends_with("Attributes"));
            v
        })
        .collect();
    let ra = |verb: &str, name: Option<&str>| {
        let mut a = json!({ "verb": verb, "group": GROUP, "version": "v1alpha1", "resource": "kliobackups" });
        if let Some(n) = name {
            a["name"] = json!(n);
        }
        json!({ "resourceAttributes": a })
    };
    assert_eq!(
        asked,
        [
            ra("list", None),
            ra("get", Some(EXAMPLE)),
            ra("watch", None),
            json!({ "nonResourceAttributes": { "verb": "get", "path": "/apis" } })
        ]
    );
    assert!(s.kube.sars().iter().all(|spec| who(spec) == who_is("u", &["system:authenticated"], &[])));
}

#[test]
fn authorization_is_asked_about_the_object_that_is_served() {
    let s = Stack::start();
    // An authorizer that denies one object by name (a webhook authorizer may answer denied).
    s.kube.set_sar_rule(|spec| match spec.resource_attributes.as_ref().and_then(|r| r.name.as_deref()) {
        Some(EXAMPLE) => SarAnswer::deny("this backup is restricted"),
        _ => SarAnswer::allow(),
    });
    let u = s.user("u", &[]);
    let denied = format!(
        "kliobackups.{GROUP} \"{EXAMPLE}\" is forbidden: User \"u\" cannot get resource \"kliobackups\" in API group \"{GROUP}\" at the cluster scope: this backup is restricted"
    );
    s.get(Some(&u), &format!("{COLLECTION}/{EXAMPLE}"), &[]).expect_status(403, "Forbidden", &denied);
    // The same object with its last character percent-encoded ('7' is %37): kube-apiserver
    // decodes the path before it builds the attributes, so it asks about the same name.
    let encoded = format!("{COLLECTION}/{}%37", EXAMPLE.strip_suffix('7').unwrap());
    let r = s.get(Some(&u), &encoded, &[]);
    let asked = s.kube.last_sar().resource_attributes.and_then(|a| a.name);
    assert_eq!(asked.as_deref(), Some(EXAMPLE), "the SubjectAccessReview names the object served (HTTP {})", r.status);
    r.expect_status(403, "Forbidden", &denied);
}

#[test]
fn system_masters_never_triggers_a_review() {
    let s = Stack::start();
    s.kube.set_sar_rule(|_| SarAnswer::deny("must not be asked"));
    let root = s.user("root", &["system:masters"]);
    for path in [COLLECTION, "/apis", "/version", &format!("{COLLECTION}/{EXAMPLE}")] {
        let r = s.get(Some(&root), path, &[]);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    // The same group named by the trusted front proxy.
    let r = s.get(Some(&s.proxy), COLLECTION, &[("X-Remote-User", "ops"), ("X-Remote-Group", "system:masters")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.kube.sar_count(), 0, "{:?}", s.kube.sars());
    assert_eq!(s.kube.sars_started(), 0);
}

#[test]
fn authorization_decisions_are_cached_for_their_ttls() {
    let ttl = Duration::from_secs(2);
    let s = Stack::with(Opts { allowed_ttl: ttl.as_secs(), denied_ttl: ttl.as_secs(), ..Default::default() });
    let allow = Arc::new(AtomicBool::new(false));
    let a = allow.clone();
    s.kube.set_sar_rule(move |_| if a.load(Ordering::SeqCst) { SarAnswer::allow() } else { SarAnswer::no_opinion("") });
    let flip = s.user("flip", &[]);

    // Denied, cached; then allowed after the denied TTL.
    let started = Instant::now();
    s.get(Some(&flip), COLLECTION, &[]).expect_status(403, "Forbidden", &list_forbidden("flip"));
    assert_eq!(s.kube.sar_count(), 1);
    allow.store(true, Ordering::SeqCst);
    let r = s.get(Some(&flip), COLLECTION, &[]);
    if started.elapsed() < ttl {
        assert_eq!(r.status, 403, "the denial is cached: {}", r.text());
        assert_eq!(s.kube.sar_count(), 1);
    }
    poll("the denial to expire", ttl + Duration::from_secs(5), || {
        (s.get(Some(&flip), COLLECTION, &[]).status == 200).then_some(())
    });
    assert!(started.elapsed() >= ttl, "the denial was dropped before its TTL");
    assert_eq!(s.kube.sar_count(), 2);

    // Allowed, cached; then denied after the allowed TTL.
    let allowed_at = Instant::now();
    allow.store(false, Ordering::SeqCst);
    let r = s.get(Some(&flip), COLLECTION, &[]);
    if allowed_at.elapsed() < Duration::from_millis(500) {
        assert_eq!(r.status, 200, "the allow is cached: {}", r.text());
        assert_eq!(s.kube.sar_count(), 2);
    }
    poll("the allow to expire", ttl + Duration::from_secs(5), || {
        (s.get(Some(&flip), COLLECTION, &[]).status == 403).then_some(())
    });
    assert_eq!(s.kube.sar_count(), 3);
}

// ---------------------------------------------------------------------------------------------
// Trust and certificates changing at run time

#[test]
fn configmap_changes_take_effect_without_restart() {
    let s = Stack::with(Opts { refresh: 1, ..Default::default() });
    let alice = s.user("alice", &[]);
    assert_eq!(s.get(Some(&alice), COLLECTION, &[]).status, 200);
    let new_ca = KeyPair::new_ca("klio-test-user-ca-2").unwrap();
    let carl = Cred::from(&new_ca.issue("carl", &["ops"], &[], Usage::Client).unwrap());
    if let Ok(r) = s.request(Some(&carl), "GET", COLLECTION, &[]) {
        r.expect_unauthorized();
    }

    // The client CA is rotated in the ConfigMap: the new CA's users get in, the old one's not.
    s.kube.set_configmap_key("client-ca-file", &String::from_utf8(new_ca.cert_pem()).unwrap());
    let started = Instant::now();
    poll("a certificate of the new client CA to be accepted", Duration::from_secs(10), || {
        s.request(Some(&carl), "GET", COLLECTION, &[]).ok().filter(|r| r.status == 200)
    });
    assert_eq!(who(&s.kube.last_sar()), who_is("carl", &["ops", "system:authenticated"], &[]));
    eprintln!("new client CA in force after {:?}", started.elapsed());
    poll("the old client CA to stop being trusted", Duration::from_secs(5), || {
        match s.request(Some(&alice), "GET", COLLECTION, &[]) {
            Err(_) => Some(()),
            Ok(r) if r.status == 401 => Some(()),
            Ok(_) => None,
        }
    });
    // The front proxy (unchanged part of the ConfigMap) still works.
    let r = s.get(Some(&s.proxy), COLLECTION, &[("X-Remote-User", "bob")]);
    assert_eq!(r.status, 200, "{}", r.text());

    // The allowed names change: the old proxy name is refused.
    s.kube.set_configmap_key("requestheader-allowed-names", &json_list(&["another-proxy"]));
    poll("the front proxy's name to be refused", Duration::from_secs(10), || {
        (s.get(Some(&s.proxy), COLLECTION, &[("X-Remote-User", "bob")]).status == 401).then_some(())
    });
    assert!(s.kube.configmap_gets() >= 3, "the ConfigMap is re-read: {}", s.kube.configmap_gets());
    assert_eq!(s.kube.unauthenticated_calls(), 0);
}

#[test]
fn serving_certificate_rotation_reaches_new_connections_and_spares_open_ones() {
    let s = Stack::start();
    let alice = s.user("alice", &[]);
    let mut open = s.connect(Some(&alice)).unwrap();
    let old_serial = open.server_serial.clone();
    let r = open.send("GET", COLLECTION, &[]).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // cert-manager style: the same files rewritten in place with a new certificate of the same CA.
    let ca = KeyPair {
        cert: X509::from_pem(&std::fs::read(s.pki.path("ca.crt")).unwrap()).unwrap(),
        key: PKey::private_key_from_pem(&std::fs::read(s.pki.path("ca.key")).unwrap()).unwrap(),
    };
    let renewed = ca.issue("klio-api", &[], &["localhost", "127.0.0.1"], Usage::Server).unwrap();
    let new_serial = renewed.cert.serial_number().to_bn().unwrap().to_hex_str().unwrap().to_string();
    assert_ne!(new_serial, old_serial);
    std::fs::write(s.pki.path("api-server.crt"), renewed.cert_pem()).unwrap();
    std::fs::write(s.pki.path("api-server.key"), renewed.key_pem()).unwrap();
    let rewritten = Instant::now();

    // Traffic continues meanwhile; new connections see the new certificate within ~10 s.
    let mut requests = 0;
    poll("new connections to get the renewed certificate", WAIT, || {
        let mut c = s.connect(Some(&alice)).expect("new connections keep working during the rotation");
        let r = c.send("GET", COLLECTION, &[("Connection", "close")]).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        requests += 1;
        (c.server_serial == new_serial).then_some(())
    });
    let took = rewritten.elapsed();
    assert!(took < Duration::from_secs(11), "the renewed certificate took {took:?}");
    eprintln!("renewed serving certificate in use after {took:?} ({requests} connections meanwhile)");

    // The connection opened before the rotation still works, still with the old certificate.
    for _ in 0..2 {
        let r = open.send("GET", COLLECTION, &[]).expect("the open keep-alive connection survives the rotation");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(open.server_serial, old_serial);
    // And new connections keep working (the key matches the certificate).
    let r = s.get(Some(&alice), "/apis", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
}

// ---------------------------------------------------------------------------------------------
// The in-flight cap

/// A stack with one request slot, and a request parked in a slow SubjectAccessReview holding it.
fn with_the_only_slot_taken<T>(check: impl FnOnce(&Stack) -> T) -> T {
    let s = Stack::with(Opts { max_inflight: 1, ..Default::default() });
    s.kube.set_sar_delay(Duration::from_millis(1500));
    let slow_user = s.user("slow", &[]);
    std::thread::scope(|scope| {
        let slow = scope.spawn(|| s.get(Some(&slow_user), COLLECTION, &[]));
        poll("the slow request to reach the SubjectAccessReview", WAIT, || (s.kube.sars_started() == 1).then_some(()));
        let out = check(&s);
        let r = slow.join().unwrap();
        assert_eq!(r.status, 200, "the request holding the slot finishes normally: {}", r.text());
        s.kube.set_sar_delay(Duration::ZERO);
        // The slot is free again.
        let r = s.get(Some(&s.user("after", &[])), COLLECTION, &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        out
    })
}

#[test]
fn the_in_flight_cap_answers_429_with_retry_after() {
    with_the_only_slot_taken(|s| {
        let started = s.kube.sars_started();
        for (who, cred) in [("a user", Some(s.user("eve", &[]))), ("anonymous", None)] {
            let r = s.get(cred.as_ref(), COLLECTION, &[]);
            let st = r.expect_status(429, "TooManyRequests", "Too many requests, please try again later.");
            assert_eq!(r.header("retry-after"), Some("1"), "{who}");
            assert_eq!(st["details"]["retryAfterSeconds"], 1, "{who}: {st}");
        }
        assert_eq!(s.kube.sars_started(), started, "a refused request costs no review");
    });
}

#[test]
fn probes_are_not_refused_by_the_in_flight_cap() {
    with_the_only_slot_taken(|s| {
        for probe in ["/livez", "/readyz", "/healthz"] {
            let r = s.get(None, probe, &[]);
            assert_eq!(r.status, 200, "{probe}: {}", r.text());
        }
    });
}

#[test]
fn system_masters_is_not_refused_by_the_in_flight_cap() {
    with_the_only_slot_taken(|s| {
        let r = s.get(Some(&s.user("root", &["system:masters"])), COLLECTION, &[]);
        assert_eq!(r.status, 200, "{}", r.text());
    });
}

// ---------------------------------------------------------------------------------------------
// Hostile clients (issue 12): one parsed request for authorization and serving, bounded state

/// Names a list (JSON) or a watch stream (JSON lines) served, and whether it was a watch.
fn served(r: &Resp) -> (bool, Vec<String>) {
    let text = r.text();
    if let Ok(list) = serde_json::from_str::<Value>(&text) {
        if list["kind"] == "KlioBackupList" {
            let names = list["items"].as_array().unwrap().iter();
            return (false, names.map(|i| i["metadata"]["name"].as_str().unwrap().to_string()).collect());
        }
    }
    let names = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("neither a list nor a watch ({e}): {text}"))
        })
        .filter(|e| e["type"] == "ADDED" || e["type"] == "MODIFIED")
        .map(|e| e["object"]["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    (true, names)
}

#[test]
fn repeated_query_parameters_never_widen_what_rbac_allows() {
    let s = Stack::start();
    // RBAC: rita may list, watch and get `resourceNames: [EXAMPLE]` only.
    s.kube.set_sar_rule(|spec| match spec.resource_attributes.as_ref() {
        Some(a)
            if a.name.as_deref() == Some(EXAMPLE) && matches!(a.verb.as_deref(), Some("list" | "watch" | "get")) =>
        {
            SarAnswer::allow()
        }
        _ => SarAnswer::no_opinion(""),
    });
    let rita = s.user("rita", &[]);
    let x = format!("metadata.name%3D{EXAMPLE}");
    let other = "pg-orders.backup-20251122003000";
    let selectors = [
        String::new(),
        format!("fieldSelector={x}"),
        format!("fieldSelector={x}&fieldSelector="),
        format!("fieldSelector=&fieldSelector={x}"),
        format!("fieldSelector={x}&fieldSelector=metadata.name%3D{other}"),
        format!("fieldSelector=metadata.name%3D{other}&fieldSelector={x}"),
        format!("fieldSelector={x}%2Cspec.clusterName%3Dcluster-example"),
        format!("fieldSelector=metadata.name!%3D{other}&fieldSelector={x}"),
        format!("fieldSelector=metadata.name%3D%3D{EXAMPLE}&fieldSelector="),
        format!("field%53elector={x}&fieldSelector="),
        format!("fieldSelector={x};fieldSelector="),
        format!("fieldSelector={x}&limit=1&fieldSelector=&limit=500"),
        format!("fieldSelector={x}&labelSelector=&fieldSelector=&labelSelector=x%3Dy"),
        "fieldSelector=metadata.name%3D..&fieldSelector=".to_string(),
        format!("fieldSelector=metadata.name%3D{EXAMPLE}%25&fieldSelector="),
    ];
    let watches = [
        "",
        "watch=1&",
        "watch=1&watch=0&",
        "watch=0&watch=1&",
        "watch=&",
        "watch=true&watch=false&",
        "watch=FALSE&watch=1&",
    ];
    // Every form at once (an allowed watch lasts its timeoutSeconds).
    let answers: Vec<(&str, String, Resp)> = std::thread::scope(|scope| {
        let threads: Vec<_> = selectors
            .iter()
            .flat_map(|selector| {
                watches.iter().map(move |watch| (*watch, format!("{watch}{selector}&timeoutSeconds=1")))
            })
            .map(|(watch, query)| {
                let (s, rita) = (&s, &rita);
                scope.spawn(move || {
                    let r = s.get(Some(rita), &format!("{COLLECTION}?{query}"), &[]);
                    (watch, query, r)
                })
            })
            .collect();
        let mut answers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        // Go drops a pair with a bad escape or a ';': the first value read is the next one given
        // (served as read, or refused as a 500 if the operation read another; one at a time, so
        // the batch above stays the size it was).
        for watch in ["", "watch=1&watch=0&"] {
            for selector in [
                format!("fieldSelector=metadata.name%3D{other}%zz&fieldSelector={x}"),
                format!("fieldSelector=metadata.name%3D{other};&fieldSelector={x}"),
            ] {
                let query = format!("{watch}{selector}&timeoutSeconds=1");
                let r = s.get(Some(&rita), &format!("{COLLECTION}?{query}"), &[]);
                answers.push((watch, query, r));
            }
        }
        answers
    });
    let (mut requests, mut allowed, mut bypasses) = (0, 0, vec![]);
    for (watch, query, r) in answers {
        {
            requests += 1;
            // kube-apiserver's rule: the first `watch` value, false only for 0 and false.
            let first_watch = watch.strip_prefix("watch=").map(|w| w.split('&').next().unwrap());
            let is_watch = first_watch.is_some_and(|w| w != "0" && !w.eq_ignore_ascii_case("false"));
            match r.status {
                403 => {
                    let verb = if is_watch { "watch" } else { "list" };
                    let message = r.json()["message"].as_str().unwrap().to_string();
                    assert!(
                        message.contains(&format!("cannot {verb} resource")),
                        "{query}: denied as the wrong verb: {message}"
                    );
                }
                200 => {
                    allowed += 1;
                    let (served_watch, names) = served(&r);
                    if served_watch != is_watch || names.iter().any(|n| n != EXAMPLE) {
                        bypasses.push(format!("{query}: served watch={served_watch} {names:?}"));
                    }
                }
                400 => {}
                other => panic!("{query}: HTTP {other}: {}", r.text()),
            }
        }
    }
    // A get by name with a selector for another object is a get of that name.
    s.get(Some(&rita), &format!("{COLLECTION}/{other}?fieldSelector={x}"), &[]).expect_status(
        403,
        "Forbidden",
        &format!("kliobackups.{GROUP} \"{other}\" is forbidden: User \"rita\" cannot get resource \"kliobackups\" in API group \"{GROUP}\" at the cluster scope"),
    );
    eprintln!("RBAC bypasses: {} in {requests} requests ({allowed} allowed)", bypasses.len());
    assert!(bypasses.is_empty(), "served more than authorized: {bypasses:#?}");
    assert!(allowed >= 20, "the allowed forms were exercised too ({allowed})");
}

#[test]
fn every_list_and_watch_takes_an_in_flight_slot() {
    with_the_only_slot_taken(|s| {
        let eve = s.user("eve", &[]);
        for q in ["", "?watch=1", "?watch=1&watch=0", "?watch=0&watch=1", "?watch=", "?watch=true&timeoutSeconds=1"] {
            let r = s.get(Some(&eve), &format!("{COLLECTION}{q}"), &[]);
            r.expect_status(429, "TooManyRequests", "Too many requests, please try again later.");
        }
    });
}

#[test]
fn a_watch_is_served_and_timed_as_the_first_watch_value_says() {
    let s = Stack::start();
    let u = s.user("u", &[]);
    let started = Instant::now();
    let r = s.get(Some(&u), &format!("{COLLECTION}?watch=1&watch=0&timeoutSeconds=1"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let took = started.elapsed();
    let (watch, names) = served(&r);
    assert!(watch && names.contains(&EXAMPLE.to_string()), "served as a watch: {}", r.text());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "ended at its timeoutSeconds: {took:?}"
    );
    let r = s.get(Some(&u), &format!("{COLLECTION}?watch=0&watch=1&timeoutSeconds=1"), &[]);
    assert!(!served(&r).0, "served as a list: {}", r.text());
    assert_eq!(
        s.kube.sars().iter().filter_map(|a| a.resource_attributes.clone()?.verb).collect::<Vec<_>>(),
        ["watch", "list"]
    );
}

/// Opens a connection with a tiny receive buffer, sends `GET path`, and never reads.
fn unread_request(s: &Stack, cred: Option<&Cred>, path: &str) -> Conn {
    use std::os::fd::AsRawFd;
    let mut conn = s.connect(cred).unwrap();
    let fd = conn.reader.get_ref().get_ref().as_raw_fd();
    let size: libc::c_int = 4096;
    // SAFETY: setsockopt on a socket this test owns, with a valid pointer and length.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n");
    conn.reader.get_mut().write_all(req.as_bytes()).unwrap();
    conn
}

/// Waits until the server has closed every connection but `keep` (bounded); how long it took.
fn until_closed(s: &Stack, keep: usize, within: Duration) -> Duration {
    let started = Instant::now();
    poll("the server to close the connection", within, || (s.connections.open() <= keep).then_some(()));
    started.elapsed()
}

#[test]
fn a_watch_whose_client_never_reads_is_closed_at_its_timeout() {
    // 800 backups of 8 KiB: the initial events outgrow the socket buffers on both sides.
    let s = Stack::with(Opts { big_backups: 800, ..Default::default() });
    let u = s.user("u", &[]);
    let _conn = unread_request(&s, Some(&u), &format!("{COLLECTION}?watch=1&timeoutSeconds=2"));
    let sent = Instant::now();
    poll("the watch to start", WAIT, || (s.connections.open() == 1).then_some(()));
    let took = sent.elapsed() + until_closed(&s, 0, Duration::from_secs(10));
    eprintln!("a watch with timeoutSeconds=2 whose client does not read: closed after {took:?}");
    assert!(took >= Duration::from_secs(2), "not before its timeout: {took:?}");
    // (its connection is checked every second; a loaded machine may add a little)
    assert!(took < Duration::from_secs(2) + klio_api::server::OVERDUE_GRACE + Duration::from_secs(4), "{took:?}");
    assert_eq!(s.get(Some(&u), COLLECTION, &[]).status, 200, "still serving");
}

#[test]
fn a_list_whose_client_never_reads_gives_its_slot_back_at_the_write_stall_timeout() {
    let limits =
        klio_api::server::ConnectionLimits { write_stall_timeout: Duration::from_secs(2), ..Default::default() };
    let s = Stack::with(Opts { big_backups: 800, max_inflight: 1, limits: Some(limits), ..Default::default() });
    let u = s.user("u", &[]);
    let _conn = unread_request(&s, Some(&u), COLLECTION);
    let sent = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    // Its slot stays taken while the body is unwritten (the cap counts until the response ends).
    s.get(Some(&u), "/apis", &[]).expect_status(429, "TooManyRequests", "Too many requests, please try again later.");
    let took = sent.elapsed() + until_closed(&s, 0, Duration::from_secs(10));
    eprintln!("a 6 MB list whose client does not read: closed after {took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert_eq!(s.get(Some(&u), "/apis", &[]).status, 200, "the slot is free again");
}

#[test]
fn at_the_connection_cap_the_longest_idle_connection_makes_room() {
    let limits = klio_api::server::ConnectionLimits { max_connections: 4, ..Default::default() };
    let s = Stack::with(Opts { limits: Some(limits), ..Default::default() });
    let u = s.user("u", &[]);
    let mut idle: Vec<Conn> = (0..4).map(|_| s.connect(Some(&u)).unwrap()).collect();
    // A fifth client is served: the oldest idle connection was closed for it.
    let r = s.get(Some(&u), COLLECTION, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    // Three left: the fifth one is done (Connection: close) and the oldest was closed for it.
    poll("the evicted connection to be closed", WAIT, || (s.connections.open() <= 3).then_some(()));
    let r = idle.remove(0).send("GET", "/apis", &[]);
    assert!(r.is_err(), "the oldest idle connection was closed: {r:?}");
    let r = idle[0].send("GET", "/apis", &[]).expect("a younger idle connection still serves");
    assert_eq!(r.status, 200);
    // Connections busy with watches are never closed for newcomers: at the cap, a new one is.
    drop(idle);
    let watches: Vec<Conn> =
        (0..4).map(|_| unread_request(&s, Some(&u), &format!("{COLLECTION}?watch=1&timeoutSeconds=30"))).collect();
    std::thread::sleep(Duration::from_millis(300));
    let refused = s.request(Some(&u), "GET", COLLECTION, &[]);
    assert!(refused.is_err(), "a fifth connection while four are busy is closed: {refused:?}");
    drop(watches);
    poll("room again once the watches are gone", WAIT, || {
        s.request(Some(&u), "GET", COLLECTION, &[]).ok().filter(|r| r.status == 200)
    });
}

#[test]
fn token_floods_are_bounded_and_one_review_serves_every_request_with_the_token() {
    let s = Stack::start();
    s.kube.set_token_delay(Duration::from_millis(1500));
    s.kube.add_token("shared", TokenUser::new("tina", &[]));
    let alice = s.user("alice", &[]);
    let outcomes: Vec<u16> = std::thread::scope(|scope| {
        // 40 requests with one token: its review starts, and the others join it.
        let shared: Vec<_> = (0..40)
            .map(|_| scope.spawn(|| s.get(None, COLLECTION, &[("Authorization", "Bearer shared")]).status))
            .collect();
        poll("the shared token's review to start", WAIT, || (s.kube.max_concurrent_token_reviews() >= 1).then_some(()));
        let flood: Vec<_> = (0..120)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    let auth = format!("Bearer made-up-token-{i}");
                    s.get(None, COLLECTION, &[("Authorization", &auth)]).status
                })
            })
            .collect();
        // A client certificate needs no review: served during the flood.
        std::thread::sleep(Duration::from_millis(300));
        let r = s.get(Some(&alice), COLLECTION, &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        let shared: Vec<u16> = shared.into_iter().map(|t| t.join().unwrap()).collect();
        // Those that arrived while the review was in flight shared it; any that arrived after it
        // ended found its answer cached.
        assert!(shared.iter().all(|c| *c == 200), "{shared:?}");
        flood.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let refused = outcomes.iter().filter(|c| **c == 429).count();
    let reviewed = s.kube.token_reviews();
    eprintln!(
        "120 made-up tokens: {refused} answered 429, {} answered 401; {reviewed} TokenReviews, at most {} at once",
        outcomes.iter().filter(|c| **c == 401).count(),
        s.kube.max_concurrent_token_reviews()
    );
    assert!(outcomes.iter().all(|c| *c == 401 || *c == 429), "{outcomes:?}");
    assert!(s.kube.max_concurrent_token_reviews() <= klio_api::auth::MAX_TOKEN_REVIEWS);
    // Every 401 cost one review, every other request none: it was refused at once.
    let made_up = s.kube.reviewed_tokens().iter().filter(|t| t.starts_with("made-up-token-")).count();
    assert_eq!(made_up, outcomes.iter().filter(|c| **c == 401).count());
    assert!(refused > 0, "the flood went past the bound");
    let shared_reviews = s.kube.reviewed_tokens().iter().filter(|t| *t == "shared").count();
    assert_eq!(shared_reviews, 1, "one review for 40 requests with the same token");
    // A 429 says when to come back.
    s.kube.set_token_delay(Duration::from_secs(3));
    std::thread::scope(|scope| {
        for i in 0..klio_api::auth::MAX_TOKEN_REVIEWS {
            let s = &s;
            scope.spawn(move || s.get(None, "/apis", &[("Authorization", &format!("Bearer busy-{i}"))]));
        }
        poll("the review slots to fill", WAIT, || {
            (s.kube.token_reviews_in_flight() == klio_api::auth::MAX_TOKEN_REVIEWS).then_some(())
        });
        let r = s.get(None, "/apis", &[("Authorization", "Bearer one-more")]);
        r.expect_status(429, "TooManyRequests", "Too many requests, please try again later.");
        assert_eq!(r.header("retry-after"), Some("1"));
    });
}

#[test]
fn invented_methods_never_become_metric_labels() {
    let s = Stack::with(Opts { anonymous: Some(false), ..Default::default() });
    let root = s.user("root", &["system:masters"]);
    let before = s.get(Some(&root), "/metrics", &[]).body.len();
    let mut conn = s.connect(None).unwrap();
    for i in 0..300 {
        let method = format!("XMETHOD{i:04}{}", "Y".repeat(200));
        let path = if i % 2 == 0 { "/apis".to_string() } else { format!("{COLLECTION}?x={i}") };
        let r = conn.send(&method, &path, &[]).unwrap_or_else(|e| panic!("{method}: {e}"));
        assert_eq!(r.status, 401, "{method}: {}", r.text());
    }
    let text = s.get(Some(&root), "/metrics", &[]).text();
    assert!(!text.contains("XMETHOD"), "a method name became a label");
    assert!(text.contains(r#"verb="other""#), "unknown methods are counted as other");
    assert!(text.len() < before + 16 * 1024, "/metrics grew from {before} to {} bytes", text.len());
}

/// A client certificate of the user CA whose subject holds several CNs, in this order.
fn with_common_names(ca: &KeyPair, cns: &[&str]) -> Cred {
    use openssl::asn1::Asn1Time;
    use openssl::bn::{BigNum, MsbOption};
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage};
    use openssl::x509::{X509Builder, X509NameBuilder};
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(127, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    for cn in cns {
        name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    }
    b.set_subject_name(&name.build()).unwrap();
    b.set_issuer_name(ca.cert.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap()).unwrap();
    b.append_extension(BasicConstraints::new().critical().build().unwrap()).unwrap();
    b.append_extension(KeyUsage::new().critical().digital_signature().build().unwrap()).unwrap();
    b.append_extension(ExtendedKeyUsage::new().client_auth().build().unwrap()).unwrap();
    b.sign(&ca.key, MessageDigest::sha256()).unwrap();
    Cred { cert: b.build(), key, chain: vec![] }
}

#[test]
fn a_certificate_with_several_common_names_is_its_last_one() {
    let s = Stack::start();
    let r = s.get(Some(&with_common_names(&s.user_ca, &["mallory", "alice"])), COLLECTION, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(who(&s.kube.last_sar()).user, "alice", "as Kubernetes (Go's crypto/x509) reads the subject");
    // The same rule for a front proxy's allowed name.
    let headers: &[(&str, &str)] = &[("X-Remote-User", "bob")];
    let r = s.get(Some(&with_common_names(&s.proxy_ca, &["rogue-proxy", PROXY_CN])), COLLECTION, headers);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(who(&s.kube.last_sar()).user, "bob");
    s.get(Some(&with_common_names(&s.proxy_ca, &[PROXY_CN, "rogue-proxy"])), COLLECTION, headers).expect_unauthorized();
}

#[test]
fn abandoned_requests_cannot_queue_authorization_reviews_without_end() {
    use klio_api::auth::authz::{Attributes, Authorizer, AuthzError, AuthzOptions, MAX_PENDING_REVIEWS};
    let dir = tempfile::tempdir().unwrap();
    let kube = KubeDouble::start();
    kube.set_sar_delay(Duration::from_secs(60));
    let client = klio_api::kube::KubeClient::from_kubeconfig(&kube.write_kubeconfig(dir.path()), WAIT).unwrap();
    let options = AuthzOptions {
        allowed_ttl: Duration::from_secs(10),
        denied_ttl: Duration::from_secs(10),
        always_allow_paths: vec![],
    };
    let authorizer = Arc::new(Authorizer::new(Some(Arc::new(client)), options));
    let who = klio_api::auth::Identity { user: "system:anonymous".into(), ..Default::default() };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        // Requests that start a review each (distinct paths) and go away (an HTTP/2 client
        // resetting its streams): their reviews go on, bounded.
        for i in 0..MAX_PENDING_REVIEWS {
            let what = Attributes::of("GET", &format!("/made-up/{i}"), None);
            // Polled once (it starts its review and waits for it), then dropped.
            let mut asked = Box::pin(authorizer.authorize(&who, &what));
            std::future::poll_fn(|cx| {
                assert!(std::future::Future::poll(asked.as_mut(), cx).is_pending(), "the review takes a minute");
                std::task::Poll::Ready(())
            })
            .await;
        }
        let what = Attributes::of("GET", "/one-more", None);
        let started = std::time::Instant::now();
        assert_eq!(authorizer.authorize(&who, &what).await, Err(AuthzError::Overloaded));
        assert!(started.elapsed() < Duration::from_secs(1), "refused at once");
    });
    assert!(kube.sars_started() <= klio_api::auth::authz::MAX_SUBJECT_ACCESS_REVIEWS, "{}", kube.sars_started());
    // The reviews still waiting end with the double; nothing waits for them.
    drop(kube);
    rt.shutdown_background();
}
