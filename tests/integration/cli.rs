//! The built binary, configured the way the product document's Deployment configures it:
//! `server api-server` with only the CLIENT_BASE_* environment variables.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;
use klio_api::demo::DemoPki;
use klio_api::pki::{KeyPair, Usage};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

const BIN: &str = env!("CARGO_BIN_EXE_klio-api");

/// A spawned process, killed and reaped when dropped; its output goes to a log file.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(cmd: &mut Command, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().expect("spawning klio-api");
        Self { child, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status, if the process ended within `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory with the demo PKI and a reference catalog server over the sample catalog.
struct Setup {
    dir: tempfile::TempDir,
    pki: DemoPki,
    catalog: Upstream,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = DemoPki::create(dir.path()).unwrap();
        let (tier1, tier2) = (dir.path().join("tier1"), dir.path().join("tier2"));
        std::fs::create_dir_all(&tier1).unwrap();
        std::fs::create_dir_all(&tier2).unwrap();
        klio_api::demo::write_sample_catalog(&tier1, &tier2).unwrap();
        let catalog = Upstream::start(&pki, &tier1, 0, &Up::Kopia).unwrap();
        Self { dir, pki, catalog }
    }

    fn catalog_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.catalog.addr.port())
    }

    /// The product document's Deployment environment, pointing at this setup's files.
    fn product_env(&self) -> Vec<(&'static str, String)> {
        let p = |n: &str| self.pki.path(n).display().to_string();
        vec![
            ("CLIENT_BASE_HOSTNAME", "klio".into()),
            ("CLIENT_BASE_URL", self.catalog_url()),
            ("CLIENT_BASE_SERVER_CERT_PATH", p("ca.crt")),
            ("CLIENT_BASE_API_SERVER_CERTFILE", p("api-server.crt")),
            ("CLIENT_BASE_API_SERVER_KEYFILE", p("api-server.key")),
            ("CLIENT_BASE_CLIENT_CERT_PATH", p("klio-client.crt")),
            ("CLIENT_BASE_CLIENT_KEY_PATH", p("klio-client.key")),
            ("TMPDIR", self.dir.path().display().to_string()),
        ]
    }

    fn command(&self, env: &[(&str, String)], args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_clear().args(["server", "api-server"]).args(args).current_dir(self.dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts `server api-server` on a free port and waits (bounded) for `/readyz` 200. Retries
    /// on another port if the one picked was taken in between.
    fn start_ready(&self, env: &[(&str, String)], extra_args: &[&str]) -> (Proc, Client) {
        let ca = std::fs::read(self.pki.path("ca.crt")).unwrap();
        for attempt in 0..3 {
            let port = free_port().to_string();
            let log = self.dir.path().join(format!("api-server-{attempt}.log"));
            let mut args = vec!["--secure-port", &port, "--bind-address", "127.0.0.1"];
            args.extend_from_slice(extra_args);
            let mut proc = Proc::spawn(&mut self.command(env, &args), log);
            let client = Client::new(&format!("https://127.0.0.1:{port}"), &ca, None);
            let deadline = Instant::now() + WAIT;
            loop {
                if let Some(status) = proc.exited() {
                    let out = proc.output();
                    if out.contains("listening on") && attempt < 2 {
                        break; // the port was taken meanwhile: try another
                    }
                    panic!("klio-api exited with {status} before it was ready:\n{out}");
                }
                if let Ok(r) = client.try_request("GET", "/readyz", &[], None) {
                    if r.status == 200 {
                        return (proc, client);
                    }
                }
                assert!(Instant::now() < deadline, "klio-api not ready within {WAIT:?}:\n{}", proc.output());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        unreachable!()
    }

    /// Runs `server api-server` expecting it to refuse to start; returns its output.
    fn expect_startup_failure(&self, env: &[(&str, String)]) -> String {
        let port = free_port().to_string();
        let log = self.dir.path().join("failing.log");
        let mut proc =
            Proc::spawn(&mut self.command(env, &["--secure-port", &port, "--bind-address", "127.0.0.1"]), log);
        let status = proc.wait_exit(WAIT).unwrap_or_else(|| panic!("klio-api kept running:\n{}", proc.output()));
        let out = proc.output();
        assert!(!status.success(), "klio-api started although misconfigured:\n{out}");
        // And it never served.
        let ca = std::fs::read(self.pki.path("ca.crt")).unwrap();
        let client = Client::new(&format!("https://127.0.0.1:{port}"), &ca, None);
        assert!(client.try_request("GET", "/readyz", &[], None).is_err());
        out
    }

    fn ca(&self) -> KeyPair {
        let cert = X509::from_pem(&std::fs::read(self.pki.path("ca.crt")).unwrap()).unwrap();
        let key = PKey::private_key_from_pem(&std::fs::read(self.pki.path("ca.key")).unwrap()).unwrap();
        KeyPair { cert, key }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

fn set(env: &mut [(&'static str, String)], key: &str, value: impl Into<String>) {
    env.iter_mut().find(|(k, _)| *k == key).unwrap_or_else(|| panic!("{key} not in the environment")).1 = value.into();
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn help_documents_flags_and_environment() {
    let out = Command::new(BIN).env_clear().args(["server", "api-server", "--help"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--secure-port",
        "--bind-address",
        "--client-ca-file",
        "--tls-cert-file",
        "--tls-private-key-file",
        "CLIENT_BASE_URL",
        "CLIENT_BASE_HOSTNAME",
        "CLIENT_BASE_SERVER_CERT_PATH",
        "CLIENT_BASE_API_SERVER_CERTFILE",
        "CLIENT_BASE_API_SERVER_KEYFILE",
        "CLIENT_BASE_CLIENT_CERT_PATH",
        "CLIENT_BASE_CLIENT_KEY_PATH",
    ] {
        assert!(text.contains(needle), "--help does not mention {needle}:\n{text}");
    }
}

#[test]
fn starts_with_only_the_product_environment_and_stops_on_sigterm() {
    let s = Setup::new();
    let (mut proc, client) = s.start_ready(&s.product_env(), &[]);
    // The client trusts only ca.crt: the handshake proves the CLIENT_BASE_API_SERVER_CERTFILE
    // certificate is served (not a generated one).
    for probe in ["/healthz", "/livez", "/readyz"] {
        let r = client.get(probe);
        assert_eq!(r.status, 200, "{probe}: {}", r.text());
    }
    // SIGTERM (what the kubelet sends) ends it cleanly.
    let pid = proc.child.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    let status = proc
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running after SIGTERM:\n{}", proc.output()));
    assert!(status.success(), "exit {status} after SIGTERM:\n{}", proc.output());
}

#[test]
fn a_client_certificate_with_the_wrong_common_name_is_refused_at_startup() {
    let s = Setup::new();
    let wrong = s.ca().issue("snapshot_reader@elsewhere", &[], &[], Usage::Client).unwrap();
    let mut env = s.product_env();
    set(&mut env, "CLIENT_BASE_CLIENT_CERT_PATH", path_str(&s.write("wrong.crt", &wrong.cert_pem())));
    set(&mut env, "CLIENT_BASE_CLIENT_KEY_PATH", path_str(&s.write("wrong.key", &wrong.key_pem())));
    let out = s.expect_startup_failure(&env);
    assert!(out.contains("snapshot_reader@klio"), "the message names the expected CN:\n{out}");
    assert!(out.contains("snapshot_reader@elsewhere"), "the message names the CN found:\n{out}");

    // The other way round: the default certificate, another hostname.
    let mut env = s.product_env();
    set(&mut env, "CLIENT_BASE_HOSTNAME", "klio-prod");
    let out = s.expect_startup_failure(&env);
    assert!(out.contains("snapshot_reader@klio-prod"), "the message names the expected CN:\n{out}");
}

#[test]
fn a_matching_hostname_and_certificate_start() {
    let s = Setup::new();
    let other = s.ca().issue("snapshot_reader@klio-prod", &[], &[], Usage::Client).unwrap();
    let mut env = s.product_env();
    set(&mut env, "CLIENT_BASE_HOSTNAME", "klio-prod");
    set(&mut env, "CLIENT_BASE_CLIENT_CERT_PATH", path_str(&s.write("prod.crt", &other.cert_pem())));
    set(&mut env, "CLIENT_BASE_CLIENT_KEY_PATH", path_str(&s.write("prod.key", &other.key_pem())));
    let (_proc, client) = s.start_ready(&env, &[]);
    assert_eq!(client.get("/readyz").status, 200);
}

#[test]
fn a_non_https_klio_url_is_refused() {
    let s = Setup::new();
    let mut env = s.product_env();
    set(&mut env, "CLIENT_BASE_URL", format!("http://127.0.0.1:{}", s.catalog.addr.port()));
    let out = s.expect_startup_failure(&env);
    assert!(out.contains("CLIENT_BASE_URL"), "names the variable:\n{out}");
    assert!(out.contains("https://"), "says what is expected:\n{out}");
}

#[test]
fn a_client_key_that_does_not_match_the_certificate_is_refused() {
    let s = Setup::new();
    let mut env = s.product_env();
    set(&mut env, "CLIENT_BASE_CLIENT_KEY_PATH", path_str(&s.pki.path("admin.key")));
    let out = s.expect_startup_failure(&env);
    assert!(out.contains("does not match"), "{out}");
    assert!(out.contains("klio-client.crt"), "names the certificate file:\n{out}");
}

/// A client certificate for `snapshot_reader@klio` with an RSA key written as PKCS#1.
fn rsa_pkcs1_client(ca: &KeyPair) -> (Vec<u8>, Vec<u8>) {
    let rsa = Rsa::generate(2048).unwrap();
    let key_pem = rsa.private_key_to_pem().unwrap();
    let key = PKey::from_rsa(rsa).unwrap();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(127, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, "snapshot_reader@klio").unwrap();
    b.set_subject_name(&name.build()).unwrap();
    b.set_issuer_name(ca.cert.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap()).unwrap();
    b.append_extension(BasicConstraints::new().critical().build().unwrap()).unwrap();
    b.append_extension(KeyUsage::new().critical().digital_signature().key_encipherment().build().unwrap()).unwrap();
    b.append_extension(ExtendedKeyUsage::new().client_auth().build().unwrap()).unwrap();
    b.sign(&ca.key, MessageDigest::sha256()).unwrap();
    (b.build().to_pem().unwrap(), key_pem)
}

#[test]
fn a_pkcs1_rsa_client_key_works() {
    let s = Setup::new();
    let (cert, key) = rsa_pkcs1_client(&s.ca());
    assert!(String::from_utf8_lossy(&key).starts_with("-----BEGIN RSA PRIVATE KEY-----"), "the key really is PKCS#1");
    let mut env = s.product_env();
    set(&mut env, "CLIENT_BASE_CLIENT_CERT_PATH", path_str(&s.write("rsa.crt", &cert)));
    set(&mut env, "CLIENT_BASE_CLIENT_KEY_PATH", path_str(&s.write("rsa.key", &key)));
    // Ready means the catalog was read over mutual TLS with that key.
    let (_proc, client) = s.start_ready(&env, &[]);
    assert_eq!(client.get("/readyz").status, 200);
}

#[test]
fn the_served_api_answers_kubectl_with_a_client_ca() {
    // The product environment plus --client-ca-file: the whole path through the binary, as
    // kube-aggregator (or kubectl) with a client certificate sees it.
    let s = Setup::new();
    let ca_file = path_str(&s.pki.path("ca.crt"));
    let (_proc, anonymous) = s.start_ready(&s.product_env(), &["--client-ca-file", &ca_file]);
    let ca = std::fs::read(s.pki.path("ca.crt")).unwrap();
    let admin = Client::new(
        &anonymous.base,
        &ca,
        Some((&std::fs::read(s.pki.path("admin.crt")).unwrap(), &std::fs::read(s.pki.path("admin.key")).unwrap())),
    );
    let r = admin.get_accept(&format!("{COLLECTION}?limit=500"), TABLE_ACCEPT);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.content_type(), TABLE_CONTENT_TYPE);
    let t = r.json();
    assert_eq!(Harness::names(&t), SAMPLE_TIER1);
    assert_eq!(t["rows"][0]["cells"][2], "2025-11-13 09:31:37 +0000 UTC");
    anonymous.get(COLLECTION).expect_status(401, "Unauthorized");
}

/// `--api-group` (one API service per Klio server, as the product document's Limitations
/// section suggests): discovery, paths, objects, errors and the OpenAPI documents all name the
/// configured group, and the default group is not served at all. The group is chosen once per
/// process, so this runs the binary.
#[test]
fn a_configured_api_group_is_served_instead_of_the_default() {
    const CUSTOM: &str = "klio-east.example.com";
    let s = Setup::new();
    let ca_file = path_str(&s.pki.path("ca.crt"));
    let (_proc, anonymous) = s.start_ready(&s.product_env(), &["--client-ca-file", &ca_file, "--api-group", CUSTOM]);
    let ca = std::fs::read(s.pki.path("ca.crt")).unwrap();
    let admin = Client::new(
        &anonymous.base,
        &ca,
        Some((&std::fs::read(s.pki.path("admin.crt")).unwrap(), &std::fs::read(s.pki.path("admin.key")).unwrap())),
    );
    let gv = format!("{CUSTOM}/v1alpha1");
    let collection = format!("/apis/{gv}/kliobackups");

    // Discovery, legacy and aggregated.
    let groups = admin.get_accept("/apis", "application/json").json();
    assert_eq!(groups["groups"][0]["name"], CUSTOM, "{groups}");
    assert_eq!(groups["groups"][0]["preferredVersion"]["groupVersion"], gv.as_str());
    assert_eq!(groups["groups"].as_array().unwrap().len(), 1, "only the configured group: {groups}");
    let agg = admin.get_accept("/apis", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList");
    assert_eq!(agg.status, 200, "{}", agg.text());
    let agg = agg.json();
    assert_eq!(agg["items"][0]["metadata"]["name"], CUSTOM);
    assert_eq!(agg["items"][0]["versions"][0]["resources"][0]["responseKind"]["group"], CUSTOM);
    let resources = admin.get_accept(&format!("/apis/{gv}"), "application/json, */*");
    assert_eq!(resources.status, 200, "{}", resources.text());
    assert_eq!(resources.json()["groupVersion"], gv.as_str());
    assert_eq!(admin.get(&format!("/apis/{CUSTOM}")).json()["name"], CUSTOM);

    // The resource under the new path; objects and lists carry the new apiVersion.
    let list = admin.get_accept(&collection, "application/json");
    assert_eq!(list.status, 200, "{}", list.text());
    let list = list.json();
    assert_eq!(list["apiVersion"], gv.as_str());
    assert_eq!(Harness::names(&list), SAMPLE_TIER1);
    assert!(list["items"].as_array().unwrap().iter().all(|i| i["apiVersion"] == gv.as_str()), "{list}");
    let one = admin.get(&format!("{collection}/{EXAMPLE}"));
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.json()["apiVersion"], gv.as_str());
    let t = admin.get_accept(&collection, TABLE_ACCEPT);
    assert_eq!((t.status, t.content_type()), (200, TABLE_CONTENT_TYPE));
    let missing = admin.get(&format!("{collection}/nope.x")).expect_status(404, "NotFound");
    assert_eq!(missing["message"], format!("kliobackups.{CUSTOM} \"nope.x\" not found"));
    assert_eq!(missing["details"]["group"], CUSTOM);
    let mut w = admin.watch(&format!("{collection}?watch=true&timeoutSeconds=5"), "application/json");
    assert_eq!(w.status, 200);
    assert_eq!(w.event(Duration::from_secs(10))["object"]["apiVersion"], gv.as_str());

    // OpenAPI v3: the index key and the document follow the group.
    let index = admin.get_accept("/openapi/v3", "application/json, */*").json();
    let paths = index["paths"].as_object().expect("paths");
    let key = format!("apis/{gv}");
    assert!(paths.contains_key(&key), "{index}");
    assert!(!paths.contains_key("apis/kliocatalog.enterprisedb.io/v1alpha1"), "{index}");
    let url = paths[&key]["serverRelativeURL"].as_str().unwrap();
    assert!(url.starts_with(&format!("/openapi/v3/{key}?hash=")), "{url}");
    let doc = admin.get_accept(url, "application/json");
    assert_eq!(doc.status, 200, "{}", doc.text());
    let doc = doc.json();
    let gvk = serde_json::json!({ "group": CUSTOM, "version": "v1alpha1", "kind": "KlioBackup" });
    assert_eq!(
        doc["paths"][collection.as_str()]["get"]["x-kubernetes-group-version-kind"],
        gvk,
        "kubectl explain maps the resource through paths"
    );
    assert!(!doc.to_string().contains("kliocatalog.enterprisedb.io/v1alpha1"), "no trace of the default group's paths");
    let v2 = admin.get_accept("/openapi/v2", "application/json").json();
    assert!(
        v2["definitions"]
            .as_object()
            .unwrap()
            .values()
            .any(|d| d["x-kubernetes-group-version-kind"].as_array().is_some_and(|a| a.contains(&gvk))),
        "the v2 document names the configured group"
    );

    // The default group is not served.
    for path in [
        "/apis/kliocatalog.enterprisedb.io/v1alpha1/kliobackups".to_string(),
        format!("/apis/kliocatalog.enterprisedb.io/v1alpha1/kliobackups/{EXAMPLE}"),
        "/apis/kliocatalog.enterprisedb.io/v1alpha1".to_string(),
        "/apis/kliocatalog.enterprisedb.io".to_string(),
        "/openapi/v3/apis/kliocatalog.enterprisedb.io/v1alpha1".to_string(),
    ] {
        admin.get_accept(&path, "application/json").expect_status(404, "NotFound");
    }
}

#[test]
fn an_invalid_api_group_is_refused_at_startup() {
    let s = Setup::new();
    let mut env = s.product_env();
    env.push(("KLIO_API_GROUP", "Not_A_Group".into()));
    let out = s.expect_startup_failure(&env);
    assert!(out.contains("Not_A_Group") && out.contains("API group"), "{out}");
}

/// The admin client of a started service (client certificate from the CA given with --client-ca-file).
fn admin_of(s: &Setup, anonymous: &Client) -> Client {
    let ca = std::fs::read(s.pki.path("ca.crt")).unwrap();
    Client::new(
        &anonymous.base,
        &ca,
        Some((&std::fs::read(s.pki.path("admin.crt")).unwrap(), &std::fs::read(s.pki.path("admin.key")).unwrap())),
    )
}

#[test]
fn sigterm_turns_unready_first_then_drains_watches_and_exits_zero() {
    let s = Setup::new();
    let ca_file = path_str(&s.pki.path("ca.crt"));
    let (mut proc, anonymous) =
        s.start_ready(&s.product_env(), &["--client-ca-file", &ca_file, "--shutdown-delay-seconds", "2"]);
    let admin = admin_of(&s, &anonymous);
    let mut watch = admin.watch(&format!("{COLLECTION}?watch=true"), "application/json");
    assert_eq!(watch.status, 200);
    watch.events(SAMPLE_TIER1.len(), Duration::from_secs(5));

    let pid = proc.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let signalled = Instant::now();
    // Unready at once, while requests are still served during the delay.
    poll("/readyz to turn unready", Duration::from_secs(1), || (anonymous.get("/readyz").status == 503).then_some(()));
    assert!(signalled.elapsed() < Duration::from_secs(2), "unready before the server stops accepting");
    assert_eq!(admin.get_accept(COLLECTION, "application/json").status, 200, "still serving during the delay");
    // Then the open watch ends cleanly and the process exits 0.
    watch.expect_end(Duration::from_secs(10));
    let status = proc.wait_exit(Duration::from_secs(10)).unwrap_or_else(|| panic!("still running:\n{}", proc.output()));
    assert!(status.success(), "exit {status}:\n{}", proc.output());
    assert!(signalled.elapsed() >= Duration::from_secs(2), "the shutdown delay was honoured");
}

#[test]
fn metrics_are_served_to_authorized_clients_and_name_kube_series() {
    let s = Setup::new();
    let ca_file = path_str(&s.pki.path("ca.crt"));
    let (_proc, anonymous) = s.start_ready(&s.product_env(), &["--client-ca-file", &ca_file]);
    let admin = admin_of(&s, &anonymous);
    assert_eq!(admin.get_accept(COLLECTION, TABLE_ACCEPT).status, 200);
    admin.get(&format!("{COLLECTION}/nope.x")).expect_status(404, "NotFound");
    anonymous.get("/metrics").expect_status(401, "Unauthorized");
    let r = admin.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(r.content_type().starts_with("application/openmetrics-text"), "{}", r.content_type());
    let text = r.text();
    for series in [
        r#"apiserver_request_total{verb="LIST",group="kliocatalog.enterprisedb.io",resource="kliobackups",code="200"} 1"#,
        r#"apiserver_request_total{verb="GET",group="kliocatalog.enterprisedb.io",resource="kliobackups",code="404"} 1"#,
        r#"apiserver_request_duration_seconds_count{verb="LIST",group="kliocatalog.enterprisedb.io",resource="kliobackups"} 1"#,
        r#"apiserver_current_inflight_requests{request_kind="readOnly"} 1"#,
        r#"klio_catalog_fetches_total{server="klio",tier="1",result="ok"}"#,
        r#"klio_catalog_fetch_duration_seconds_count{server="klio",tier="1"}"#,
        r#"klio_catalog_last_success_timestamp_seconds{server="klio",tier="1"}"#,
        &format!("klio_catalog_backups {}", SAMPLE_TIER1.len()),
        "klio_catalog_snapshots_total 1",
    ] {
        assert!(text.contains(series), "missing {series} in:\n{text}");
    }
    // Cardinality stays bounded: made-up resources are one series.
    admin.get("/apis/kliocatalog.enterprisedb.io/v1alpha1/whatever1");
    admin.get("/apis/kliocatalog.enterprisedb.io/v1alpha1/whatever2");
    let text = admin.get("/metrics").text();
    assert!(text.contains(r#"resource="unknown",code="404"} 2"#), "{text}");
    assert!(!text.contains("whatever"), "{text}");
}

#[test]
fn access_logs_name_the_user_and_never_a_credential() {
    let s = Setup::new();
    let ca_file = path_str(&s.pki.path("ca.crt"));
    let (proc, anonymous) = s.start_ready(&s.product_env(), &["--client-ca-file", &ca_file]);
    let admin = admin_of(&s, &anonymous);
    let secret = "s3cr3t-token-that-must-not-leak";
    let r = admin.request(
        "GET",
        &format!("{COLLECTION}/{EXAMPLE}"),
        &[("Authorization", &format!("Bearer {secret}")), ("X-Remote-User", "mallory"), ("Accept", "application/json")],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    anonymous.request("GET", COLLECTION, &[("Authorization", &format!("Bearer {secret}"))], None);
    let path = format!("{COLLECTION}/{EXAMPLE}");
    let out = poll("the access line", Duration::from_secs(5), || {
        let out = proc.output();
        out.lines().any(|l| l.contains("\"target\":\"access\"") && l.contains(&path)).then_some(out)
    });
    let line = out.lines().find(|l| l.contains("\"target\":\"access\"") && l.contains(&path)).unwrap();
    let entry: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("a JSON log line: {e}: {line}"));
    assert_eq!(entry["user"], "demo-admin", "{entry}");
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["code"], 200);
    assert!(entry["latency_us"].is_u64(), "{entry}");
    assert!(!out.contains(secret), "a bearer token reached the log:\n{out}");
    assert!(!out.contains("mallory"), "an unverified identity reached the log:\n{out}");
    assert!(!out.contains("PRIVATE KEY"), "key material reached the log:\n{out}");
}

// ---------------------------------------------------------------------------------------------
// Credentials and the files that hold them (issue 12)

#[test]
fn a_missing_serving_certificate_names_the_file() {
    let s = Setup::new();
    let missing = s.dir.path().join("no-such-dir/tls.crt");
    let mut env = s.product_env();
    set(&mut env, "CLIENT_BASE_API_SERVER_CERTFILE", path_str(&missing));
    let out = s.expect_startup_failure(&env);
    assert!(out.contains(&path_str(&missing)), "the error names the missing file:\n{out}");
}

#[test]
fn a_klio_url_with_a_password_is_refused_without_repeating_it() {
    let s = Setup::new();
    let mut env = s.product_env();
    set(&mut env, "CLIENT_BASE_URL", format!("https://reader:hunter2-pw@127.0.0.1:{}", s.catalog.addr.port()));
    let out = s.expect_startup_failure(&env);
    assert!(out.contains("CLIENT_BASE_URL") && out.contains("user:password@"), "says what is wrong:\n{out}");
    assert!(!out.contains("hunter2"), "the password reached the output:\n{out}");
}

/// Waits (bounded) for a log line holding every one of `needles`; returns it.
fn log_line(proc: &Proc, needles: &[&str]) -> String {
    poll(&format!("a log line with {needles:?}"), WAIT, || {
        proc.output().lines().find(|l| needles.iter().all(|n| l.contains(n))).map(str::to_string)
    })
}

#[test]
fn expired_certificates_and_readable_keys_are_warned_about_by_file() {
    let s = Setup::new();
    let ca = s.ca();
    let serving = ca.issue_with_validity("klio-api", &[], &["localhost", "127.0.0.1"], Usage::Server, -30, 10).unwrap();
    let client = ca.issue_with_validity("snapshot_reader@klio", &[], &[], Usage::Client, -30, 10).unwrap();
    let (serving_crt, serving_key) =
        (s.write("expired-serving.crt", &serving.cert_pem()), s.write("serving.key", &serving.key_pem()));
    let client_crt = s.write("expired-client.crt", &client.cert_pem());
    let client_key = s.write("client.key", &client.key_pem());
    for key in [&serving_key, &client_key] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut env = s.product_env();
    set(&mut env, "CLIENT_BASE_API_SERVER_CERTFILE", path_str(&serving_crt));
    set(&mut env, "CLIENT_BASE_API_SERVER_KEYFILE", path_str(&serving_key));
    set(&mut env, "CLIENT_BASE_CLIENT_CERT_PATH", path_str(&client_crt));
    set(&mut env, "CLIENT_BASE_CLIENT_KEY_PATH", path_str(&client_key));
    let port = free_port().to_string();
    let proc = Proc::spawn(
        &mut s.command(&env, &["--secure-port", &port, "--bind-address", "127.0.0.1"]),
        s.dir.path().join("expired.log"),
    );
    for file in [&serving_crt, &client_crt] {
        let line = log_line(&proc, &[&path_str(file), "expired"]);
        assert!(line.contains("WARN"), "{line}");
    }
    for file in [&serving_key, &client_key] {
        let line = log_line(&proc, &[&path_str(file), "readable by every user"]);
        assert!(line.contains("0644"), "{line}");
    }
    // The demo's own files (keys 0600, certificates valid) draw no such warning.
    let (proc, _) = s.start_ready(&s.product_env(), &[]);
    std::thread::sleep(Duration::from_millis(300));
    let out = proc.output();
    assert!(!out.contains("expired") && !out.contains("readable by every user"), "{out}");
}

use crate::common::kube_double;

#[test]
fn trace_logs_never_hold_a_bearer_token() {
    let s = Setup::new();
    let kube = kube_double::KubeDouble::start();
    let kubeconfig = kube.write_kubeconfig(s.dir.path());
    let user_token = "Zq7Xk2Lw9Pv4Rt6Ym1Nb8Hc3Jd5Fs0Ga";
    kube.add_token(user_token, kube_double::TokenUser::new("tina", &[]));
    kube.set_sar_rule(|_| kube_double::SarAnswer::allow());
    let mut env = s.product_env();
    env.push(("KLIO_API_LOG", "trace".into()));
    env.push(("KLIO_API_KUBECONFIG", path_str(&kubeconfig)));
    let ca_file = path_str(&s.pki.path("ca.crt"));
    let (proc, client) = s.start_ready(&env, &["--client-ca-file", &ca_file]);
    let auth = format!("Bearer {user_token}");
    let r = client.request("GET", COLLECTION, &[("Authorization", &auth)], None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(kube.token_reviews(), 1);
    let out = proc.output();
    // The low levels really were on: ureq logs its requests at debug, headers redacted.
    assert!(out.contains("POST https://127.0.0.1:"), "the TokenReview is logged:\n{}", &out[..out.len().min(4000)]);
    assert!(out.contains("HEADERS ARE REDACTED"), "{}", &out[..out.len().min(4000)]);
    // Neither the user's token nor the service's own, not even a piece of either (a hex dump
    // splits them into rows of 16 bytes).
    for secret in [user_token, kube.service_token.as_str()] {
        for piece in secret.as_bytes().windows(8) {
            let piece = std::str::from_utf8(piece).unwrap();
            assert!(!out.contains(piece), "a piece of a token ({piece}) reached the trace log");
        }
    }
}
