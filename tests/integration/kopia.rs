//! The Kopia protocol path end to end: the API service reading our Kopia-protocol catalog server
//! (and misbehaving ones) over TLS 1.3 with mutual TLS. What is read and how often (counted on
//! the server), paging of large listings, indirect objects, incomplete and duplicate snapshots,
//! tiers, server identity (pin, CA, rotation), the server's own checks, restarts and broken
//! streams, and the empty catalog of a repository without ACLs.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::kopia_fakes::{faulty, Changed, Fault};
use common::*;
use klio_api::upstream::kopia::ids::ManifestId;
use klio_api::upstream::kopia::labels;
use klio_api::upstream::kopia::server::repository::{DirRepository, StoredManifest};
use klio_api::upstream::kopia::server::Backend;
use serde_json::{json, Value};

const JSON: &str = "application/json";

fn record(cluster: &str, id: &str, segment: u64) -> Value {
    klio_api::demo::sample_record(cluster, id, 1_764_547_200 + segment as i64 * 60, 30, segment, false)
}

/// The value of the first `/metrics` line starting with `series`.
fn metric(h: &Harness, series: &str) -> Option<f64> {
    let text = h.admin.get("/metrics").text();
    text.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn tier1(h: &Harness) -> (u64, u64, u64, u64) {
    h.upstreams[0].as_ref().expect("tier 1 runs our Kopia server").requests()
}

#[test]
fn more_than_a_thousand_backups_are_listed_in_pages() {
    let h = Harness::start(Options {
        sample: false,
        prepare: Some(|t1, _| {
            for i in 0..1500u64 {
                put_record(t1, &record(&format!("pg-{:02}", i % 30), &format!("backup-{i:06}"), i % 200 + 1));
            }
        }),
        ..Default::default()
    });
    let list = h.list_json();
    assert_eq!(Harness::names(&list).len(), 1500);
    let (sessions, finds, manifests, contents) = tier1(&h);
    assert_eq!(sessions, 1);
    assert!(finds >= 1, "{finds}");
    assert_eq!((manifests, contents), (1500, 3000), "three reads per backup, each once");
}

#[test]
fn large_records_are_read_through_indirect_objects() {
    let h = Harness::start(Options { tier1: Up::KopiaWith(|a| a.split_bytes = 200), ..Default::default() });
    let list = h.list_json();
    assert_eq!(Harness::names(&list), SAMPLE_TIER1);
    let example = item(&list, EXAMPLE);
    assert_eq!(example["status"]["endLSN"], 117_440_800u64);
    assert_eq!(example["status"]["annotations"]["klio.io/kopiaManifestID"], "2272afec220f48d0fa0064f85b043ac4");
    let (_, _, manifests, contents) = tier1(&h);
    assert_eq!(manifests, 5);
    // Each record of about a kilobyte: the directory, the index, then its parts.
    assert!(contents > 5 * 4, "the parts were read one by one: {contents} contents");
}

/// `changed` for the tests below: an incomplete, newer copy of the example's metadata snapshot
/// (a checkpoint) and pg-orders's only metadata snapshot replaced by an incomplete one.
fn with_incomplete(manifests: Vec<Arc<StoredManifest>>) -> Vec<Arc<StoredManifest>> {
    let mut out = vec![];
    for m in manifests {
        let is_metadata = m.labels.get(labels::CONTENT).map(String::as_str) == Some("metadata");
        let cluster = m.labels.get(labels::HOSTNAME).cloned().unwrap_or_default();
        let incomplete = |m: &StoredManifest, id: u8| {
            let mut payload: Value = serde_json::from_slice(&m.json).unwrap();
            payload["incomplete"] = json!("checkpoint");
            Arc::new(StoredManifest {
                id: ManifestId([id; 16]),
                mod_time_nanos: m.mod_time_nanos + 10_000_000_000,
                labels: m.labels.clone(),
                json: serde_json::to_vec(&payload).unwrap().into(),
            })
        };
        if is_metadata && cluster == "cluster-example" && m.labels[labels::BACKUP] == "backup-20251113093137" {
            out.push(incomplete(&m, 0xC1));
            out.push(m);
        } else if is_metadata && cluster == "pg-orders" {
            out.push(incomplete(&m, 0xC2));
        } else {
            out.push(m);
        }
    }
    out.sort_by_key(|m| (m.mod_time_nanos, m.id));
    out
}

/// `changed` for the test below: snapshots in the repository that are not Klio's, one without a
/// `tag:klio.io/content` label (someone's `kopia snapshot create /etc`) and one of a kind this
/// service does not know, both newer than everything else.
fn with_foreign(manifests: Vec<Arc<StoredManifest>>) -> Vec<Arc<StoredManifest>> {
    let template =
        manifests.iter().find(|m| m.labels.get(labels::CONTENT).is_some_and(|c| c == "metadata")).unwrap().clone();
    let newest = manifests.iter().map(|m| m.mod_time_nanos).max().unwrap_or_default();
    let foreign = |id: u8, content: Option<&str>| {
        // The snapshot's identity (who may see it) stays; Klio's tags go.
        let mut kept = template.labels.clone();
        kept.retain(|k, _| [labels::TYPE, labels::HOSTNAME, labels::USERNAME, labels::PATH].contains(&k.as_str()));
        if let Some(content) = content {
            kept.insert(labels::CONTENT.to_string(), content.to_string());
        }
        Arc::new(StoredManifest {
            id: ManifestId([id; 16]),
            mod_time_nanos: newest + i64::from(id),
            labels: kept,
            json: template.json.clone(),
        })
    };
    let mut out = manifests;
    out.push(foreign(0xF1, None));
    out.push(foreign(0xF2, Some("wal-archive")));
    out
}

/// A harness whose only server, `name` (its own metrics series: the registry is the process's),
/// has a tier 1 made by `backend` and no tier 2.
fn one_tier1(name: &'static str, backend: fn(&Path) -> Arc<dyn Backend>) -> Harness {
    Harness::start(Options {
        servers: vec![ServerOpt { name, tier1: Up::backend(backend), tier2: None }],
        ..Default::default()
    })
}

#[test]
fn snapshots_that_are_not_klios_are_listed_but_never_read() {
    let h = one_tier1("foreign", |dir: &Path| Changed::over(dir, with_foreign));
    assert_eq!(Harness::names(&h.list_json()), SAMPLE_TIER1);
    let (_, finds, manifests, contents) = tier1(&h);
    assert!(finds >= 1);
    assert_eq!((manifests, contents), (5, 10), "three reads per Klio backup, none for the others");
    let malformed = r#"klio_catalog_read_errors_total{server="foreign",tier="1",reason="malformed_manifest"}"#;
    assert_eq!(metric(&h, malformed), None, "not Klio's is not malformed");
}

#[test]
fn incomplete_snapshots_are_ignored() {
    // A server name of its own: the metrics registry is the process's, shared with other tests.
    let h = one_tier1("incomplete", |dir: &Path| Changed::over(dir, with_incomplete));
    let list = h.list_json();
    let expected: Vec<&str> = SAMPLE_TIER1.iter().copied().filter(|n| !n.starts_with("pg-orders")).collect();
    assert_eq!(Harness::names(&list), expected, "pg-orders has only an incomplete snapshot");
    assert_eq!(item(&list, EXAMPLE)["status"]["endLSN"], 117_440_800u64, "served from the complete snapshot");
    let series = r#"klio_catalog_read_errors_total{server="incomplete",tier="1",reason="incomplete"}"#;
    assert_eq!(metric(&h, series), Some(2.0), "each incomplete snapshot counted once");
    // Refreshes do not read them again.
    let before = h.requests_after_refreshes(2);
    assert_eq!(metric(&h, series), Some(2.0));
    assert_eq!(before.2, h.requests_after_refreshes(1).2, "nothing read again");
}

trait Refreshes {
    /// Waits for `n` more refreshes of tier 1 (four listings each); returns tier 1's counts.
    fn requests_after_refreshes(&self, n: u64) -> (u64, u64, u64, u64);
}

impl Refreshes for Harness {
    fn requests_after_refreshes(&self, n: u64) -> (u64, u64, u64, u64) {
        let seen = tier1(self).1;
        poll("more refreshes", WAIT, || (tier1(self).1 >= seen + 4 * n).then_some(()));
        tier1(self)
    }
}

#[test]
fn the_newest_of_several_metadata_snapshots_of_one_backup_wins() {
    let h = Harness::start(Options {
        sample: false,
        prepare: Some(|t1, _| {
            let mut first = record("pg-dup", "backup-20251201000000", 3);
            first["endLsn"] = json!(111u64);
            let older = put_raw(t1, "pg-dup/first-attempt.json", first.to_string().as_bytes());
            let old = std::time::SystemTime::now() - Duration::from_secs(3600);
            std::fs::File::options().write(true).open(&older).unwrap().set_modified(old).unwrap();
            let mut second = first.clone();
            second["endLsn"] = json!(222u64);
            put_raw(t1, "pg-dup/second-attempt.json", second.to_string().as_bytes());
        }),
        ..Default::default()
    });
    let list = h.list_json();
    assert_eq!(Harness::names(&list), ["pg-dup.backup-20251201000000"]);
    assert_eq!(list["items"][0]["status"]["endLSN"], 222u64, "the newer snapshot");
    let replica = h.replica(1);
    replica.wait_ready();
    assert_eq!(replica.list_json(), list, "another replica picks the same one");
}

#[test]
fn two_clusters_sharing_a_backup_name_stay_apart_across_tiers() {
    let h = Harness::start(Options {
        sample: false,
        tier2: Some(Up::Kopia),
        prepare: Some(|t1, t2| {
            put_record(t1, &record("pg-a", "backup-20251201000000", 1));
            put_record(t2, &record("pg-a", "backup-20251201000000", 1));
            put_record(t2, &record("pg-b", "backup-20251201000000", 2));
        }),
        ..Default::default()
    });
    let list = h.list_json();
    assert_eq!(Harness::names(&list), ["pg-a.backup-20251201000000", "pg-b.backup-20251201000000"]);
    let a = item(&list, "pg-a.backup-20251201000000");
    let b = item(&list, "pg-b.backup-20251201000000");
    assert_eq!(a["metadata"]["labels"]["kliocatalog.enterprisedb.io/tier1"], "true");
    assert_eq!(a["metadata"]["labels"]["kliocatalog.enterprisedb.io/tier2"], "true");
    assert!(b["metadata"]["labels"].get("kliocatalog.enterprisedb.io/tier1").is_none(), "{b}");
    assert_eq!(b["spec"]["clusterName"], "pg-b");
    // Each tier's snapshot IDs, as its repository holds them.
    let (dir1, dir2) = (&h.tier1_dir, &h.tier2_dir);
    let ann = &a["status"]["annotations"];
    assert_eq!(ann["klio.io/kopiaManifestID"], snapshot_id(dir1, "pgdata", "pg-a", "backup-20251201000000", None));
    assert_eq!(ann["klio.io/tier2KopiaManifestID"], snapshot_id(dir2, "pgdata", "pg-a", "backup-20251201000000", None));
    assert_eq!(
        b["status"]["annotations"],
        json!({
            "klio.io/tier2": "present",
            "klio.io/tier2KopiaManifestID": snapshot_id(dir2, "pgdata", "pg-b", "backup-20251201000000", None),
            "klio.io/tier2ControlDataKopiaManifestID": snapshot_id(dir2, "controldata", "pg-b", "backup-20251201000000", None),
        }),
        "a backup on tier 2 only has tier-2 IDs only"
    );
}

/// The resourceVersion component of a tier: the newest manifest's modification time in ms, one
/// more when a change adds nothing newer (a deletion).
#[test]
fn resource_versions_come_from_the_repository() {
    let h = Harness::sample();
    let newest = |dir: &Path| {
        let repo = DirRepository::new(dir, 4 << 20, Duration::ZERO).unwrap();
        repo.view().manifests.iter().map(|m| m.mod_time_nanos).max().unwrap() / 1_000_000
    };
    let rv1 = rv_of(&h.list_json());
    assert_eq!(rv1, newest(&h.tier1_dir).to_string());
    std::fs::remove_file(h.tier1_dir.join("pg-orders/backup-20251122003000.json")).unwrap();
    let after = h.list_until("the deletion", |l| Harness::names(l).len() == SAMPLE_TIER1.len() - 1);
    let rv2: u64 = rv_of(&after).parse().unwrap();
    assert_eq!(rv2, rv1.parse::<u64>().unwrap() + 1, "a deletion moves the revision by one");
}

#[test]
fn the_server_certificate_can_be_pinned_and_another_one_is_refused() {
    let h = Harness::sample();
    // Kopia's way: the server's own certificate in CLIENT_BASE_SERVER_CERT_PATH.
    let mut pinned = h.klio.clone();
    pinned.server_cert = Some(h.pki.path("catalog-server.crt"));
    let service = ApiService::start(&h.pki, pinned.clone());
    service.wait_ready();
    assert_eq!(Harness::names(&service.list_json()), SAMPLE_TIER1);
    drop(service);

    // Another certificate: refused, the message names the file; fixed when the file is.
    let pin = h.dir.path().join("pin.crt");
    let other = klio_api::pki::KeyPair::new_self_signed_server("impostor", &["localhost"]).unwrap();
    std::fs::write(&pin, other.cert_pem()).unwrap();
    pinned.server_cert = Some(pin.clone());
    let service = ApiService::start(&h.pki, pinned);
    let r = service.admin.get_accept(COLLECTION, JSON);
    let s = r.expect_status(502, "InternalError");
    let message = s["message"].as_str().unwrap();
    assert!(message.contains(&pin.display().to_string()) && message.contains("SHA-256"), "{message}");
    assert_eq!(service.anonymous.get("/readyz").status, 503);
    std::fs::copy(h.pki.path("catalog-server.crt"), &pin).unwrap();
    service.wait_ready();
    assert_eq!(Harness::names(&service.list_json()), SAMPLE_TIER1, "the file is read again (rotation)");
}

/// The server checks the session's identity against the client certificate, as the Klio fork
/// does: missing headers and another user@host are refused before anything is read.
#[test]
fn the_server_refuses_sessions_that_do_not_match_the_certificate() {
    let h = Harness::sample();
    let port = h.upstreams[0].as_ref().unwrap().addr.port();
    let files = klio_api::upstream::kopia::tls::ClientFiles {
        server_cert: h.pki.path("ca.crt"),
        client_cert: h.pki.path("klio-client.crt"),
        client_key: h.pki.path("klio-client.key"),
        expected_identity: "snapshot_reader@klio".into(),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let open = |headers: &'static [(&'static str, &'static str)]| {
        let files = files.clone();
        rt.block_on(async move {
            let material = files.load().unwrap();
            let stream = klio_api::upstream::kopia::tls::connect("127.0.0.1", port, &material, Duration::from_secs(5))
                .await
                .unwrap();
            let slot = std::sync::Mutex::new(Some(hyper_util::rt::TokioIo::new(stream)));
            let slot = Arc::new(slot);
            let connector = tower::service_fn(move |_: http::Uri| {
                let io = slot.lock().unwrap().take();
                async move { io.ok_or_else(|| std::io::Error::other("used")) }
            });
            let channel = tonic::transport::Endpoint::from_static("https://127.0.0.1")
                .connect_with_connector(connector)
                .await
                .unwrap();
            let mut client =
                klio_api::upstream::kopia::proto::kopia_repository_client::KopiaRepositoryClient::new(channel);
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let init = klio_api::upstream::kopia::proto::SessionRequest {
                request_id: 1,
                request: Some(klio_api::upstream::kopia::proto::session_request::Request::InitializeSession(
                    Default::default(),
                )),
                ..Default::default()
            };
            tx.send(init).await.unwrap();
            let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            for (k, v) in headers {
                request.metadata_mut().append(*k, v.parse().unwrap());
            }
            let result = match client.session(request).await {
                Ok(r) => r.into_inner().message().await.map(|m| m.is_some()),
                Err(s) => Err(s),
            };
            drop(tx);
            result
        })
    };
    let ok = open(&[("kopia-username", "snapshot_reader"), ("kopia-hostname", "klio"), ("kopia-password", "x")]);
    assert!(ok.unwrap(), "the certificate's own identity is accepted");
    let refused = open(&[("kopia-username", "snapshot_reader"), ("kopia-hostname", "other"), ("kopia-password", "x")])
        .unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (tonic::Code::PermissionDenied, "access denied for snapshot_reader@other")
    );
    let missing = open(&[("kopia-username", "snapshot_reader"), ("kopia-hostname", "klio")]).unwrap_err();
    assert_eq!((missing.code(), missing.message()), (tonic::Code::PermissionDenied, "missing credentials"));
    let twice = open(&[
        ("kopia-username", "snapshot_reader"),
        ("kopia-hostname", "klio"),
        ("kopia-hostname", "klio"),
        ("kopia-password", "x"),
    ])
    .unwrap_err();
    assert_eq!(twice.message(), "missing credentials", "a repeated header is refused");
}

#[test]
fn a_restarted_server_is_read_again_without_reading_known_backups() {
    let mut h = Harness::sample();
    let before = h.list_json();
    h.stop_upstream(0);
    poll("the stale warning", WAIT, || {
        (!h.admin.get_accept(COLLECTION, JSON).header_all("warning").is_empty()).then_some(())
    });
    assert_eq!(h.list_json()["items"], before["items"], "the last catalog is served meanwhile");
    h.start_upstream(0, &Up::Kopia);
    poll("the warning to clear", WAIT, || {
        h.admin.get_accept(COLLECTION, JSON).header_all("warning").is_empty().then_some(())
    });
    let (sessions, finds, manifests, contents) = tier1(&h);
    assert_eq!(sessions, 1, "a new session on the new server");
    assert!(finds >= 1);
    assert_eq!((manifests, contents), (0, 0), "manifest IDs survive a restart: nothing is read again");
    assert_eq!(h.list_json(), before, "same objects, same resourceVersions");
}

#[test]
fn a_server_that_ends_the_stream_early_is_survived() {
    let mut h = Harness::sample();
    // The listing (one answer) is served, anything more ends the stream.
    h.start_upstream(0, &faulty(Fault::EndAfter(1)));
    let added = "pg-new.backup-20251201000000";
    put_record(&h.tier1_dir, &record("pg-new", "backup-20251201000000", 9));
    let r = poll("the warning", WAIT, || {
        let r = h.admin.get_accept(COLLECTION, JSON);
        assert_eq!(r.status, 200, "{}", r.text());
        (!r.header_all("warning").is_empty()).then_some(r)
    });
    assert!(r.header_all("warning")[0].contains("the session stream broke"), "{:?}", r.header_all("warning"));
    assert_eq!(Harness::names(&r.json()), SAMPLE_TIER1, "the last good catalog");
    h.start_upstream(0, &Up::Kopia);
    h.list_until("the new backup", |l| Harness::names(l).iter().any(|n| n == added));
}

#[test]
fn answers_to_requests_nobody_sent_are_ignored() {
    let h = Harness::start(Options { tier1: faulty(Fault::StrayIds), ..Default::default() });
    assert_eq!(Harness::names(&h.list_json()), SAMPLE_TIER1);
    let stray = metric(&h, r#"klio_catalog_read_errors_total{server="klio",tier="1",reason="stray_answer"}"#);
    // The session's start, its listing and three reads for each of the five backups: 17 answers,
    // each followed by a stray one (the last perhaps not yet counted).
    assert!(stray.is_some_and(|n| n >= 16.0), "every stray answer counted: {stray:?}");
}

/// Klio 0.0.13 and later: no ACLs, so the reader sees nothing, without an error. The service is
/// ready (an empty catalog is a catalog), and says what to do.
#[test]
fn a_repository_without_acls_shows_no_backups_and_says_how_to_grant_access() {
    let mut h = Harness::start(Options { tier1: Up::KopiaWith(|a| a.no_acl = true), ..Default::default() });
    assert!(Harness::names(&h.list_json()).is_empty());
    let ready = h.anonymous.get("/readyz?verbose");
    assert_eq!(ready.status, 200);
    let text = ready.text();
    assert!(text.contains("no backups visible to snapshot_reader@klio"), "{text}");
    assert!(
        text.contains("kopia server acl add --user=snapshot_reader@klio --access=READ --target=type=snapshot"),
        "{text}"
    );
    // Access granted (the server restarted with ACLs): the backups show up.
    h.start_upstream(0, &Up::Kopia);
    h.list_until("the backups", |l| Harness::names(l) == SAMPLE_TIER1);
    assert!(!h.anonymous.get("/readyz?verbose").text().contains("no backups visible"));
}

#[test]
fn an_undecodable_record_is_skipped_logged_and_counted_once() {
    // A server name of its own: the metrics registry is the process's, shared with other tests.
    let h = Harness::start(Options {
        servers: vec![ServerOpt { name: "undecodable", tier1: Up::Kopia, tier2: None }],
        prepare: Some(|t1, _| {
            put_raw(t1, "pg-bad/backup-20251201000000.json", b"{ this is not a record");
        }),
        ..Default::default()
    });
    assert_eq!(Harness::names(&h.list_json()), SAMPLE_TIER1, "one bad backup hides no other");
    let series = r#"klio_catalog_read_errors_total{server="undecodable",tier="1",reason="undecodable_record"}"#;
    assert_eq!(metric(&h, series), Some(1.0));
    let (_, _, manifests, _) = h.requests_after_refreshes(2);
    assert_eq!(manifests, 6, "read once, not at every refresh");
    assert_eq!(metric(&h, series), Some(1.0));
}

/// A snapshot saved again (a new manifest ID over the same root directory, as Kopia does when a
/// pin changes) costs one read, not three.
#[test]
fn a_manifest_over_a_known_root_directory_costs_one_read() {
    let h = Harness::sample();
    let before = tier1(&h);
    let rv = rv_of(&h.list_json());
    // Same bytes, same modification time, another file name: another manifest ID, the same
    // directory object.
    let dir = h.tier1_dir.join("pg-orders");
    std::fs::rename(dir.join("backup-20251122003000.json"), dir.join("backup-20251122003000-resaved.json")).unwrap();
    let after = h.list_until("the new revision", |l| rv_of(l) != rv);
    assert_eq!(Harness::names(&after), SAMPLE_TIER1, "the same backups");
    let (_, _, manifests, contents) = tier1(&h);
    assert_eq!((manifests - before.2, contents - before.3), (1, 0), "one GetManifest, no GetContent");
}
