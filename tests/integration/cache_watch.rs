//! The catalog cache and what it makes possible, end to end over TLS: watch (JSON lines and
//! Tables, from a resourceVersion, bookmarks, 410 for revisions no longer kept, selectors),
//! label selectors, paging over a consistent snapshot, resourceVersion semantics, stale data
//! served with a warning while Klio is down, replicas agreeing on resourceVersions, several Klio
//! servers, one upstream read per source on a cold start, and conditional refreshes.
//!
//! The API service reads the catalog again every second here; every wait for a change is a
//! bounded poll (or a bounded wait for a watch event), never a fixed sleep.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::kopia_fakes::{faulty, Fault};
use common::*;
use klio_api::upstream::kopia::proto::error_response::Code;
use serde_json::{json, Value};

const JSON: &str = "application/json";
/// How long a watch event may take: a refresh (1 s) and some slack for a loaded machine.
const EVENT: Duration = Duration::from_secs(10);

fn new_record(cluster: &str, id: &str, segment: u64) -> Value {
    klio_api::demo::sample_record(cluster, id, 1_764_000_000 + segment as i64 * 3600, 30, segment, false)
}

/// The file of `<cluster>.<backupID>` under a tier directory.
fn record_file(dir: &Path, name: &str) -> PathBuf {
    let (cluster, id) = name.split_once('.').unwrap();
    dir.join(cluster).join(format!("{id}.json"))
}

fn has(list: &Value, name: &str) -> bool {
    Harness::names(list).iter().any(|n| n == name)
}

fn summaries(events: &[Value]) -> Vec<(String, String)> {
    events.iter().map(event_summary).collect()
}

fn ev(kind: &str, name: &str) -> (String, String) {
    (kind.to_string(), name.to_string())
}

fn sorted(names: impl IntoIterator<Item = impl Into<String>>) -> Vec<String> {
    let mut v: Vec<String> = names.into_iter().map(Into::into).collect();
    v.sort();
    v
}

/// Lists with `query` (which holds `limit` and any selectors, repeated on every page as kubectl
/// does), starting from `token` if given, following `continue` to the end; returns every page.
fn pages(client: &Client, query: &str, token: Option<&str>, accept: &str) -> Vec<Value> {
    let mut out = vec![];
    let mut token = token.map(str::to_string);
    loop {
        assert!(out.len() <= 20, "paging does not end");
        let path = match &token {
            Some(t) => format!("{COLLECTION}?{query}&continue={t}"),
            None => format!("{COLLECTION}?{query}"),
        };
        let r = client.get_accept(&path, accept);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let body = r.json();
        token = body["metadata"]["continue"].as_str().filter(|t| !t.is_empty()).map(str::to_string);
        out.push(body);
        if token.is_none() {
            return out;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Watch

#[test]
fn a_watch_without_resource_version_starts_with_every_object_added() {
    let h = Harness::sample();
    let list = h.list_json();
    let mut w = h.admin.watch(&format!("{COLLECTION}?watch=true&timeoutSeconds=20"), JSON);
    assert_eq!(w.status, 200);
    assert_eq!(w.content_type(), JSON);
    assert!(w.header_all("warning").is_empty(), "{:?}", w.header_all("warning"));
    let initial = w.events(SAMPLE_TIER1.len(), EVENT);
    assert_eq!(summaries(&initial), SAMPLE_TIER1.iter().map(|n| ev("ADDED", n)).collect::<Vec<_>>());
    for e in &initial {
        let name = e["object"]["metadata"]["name"].as_str().unwrap();
        assert_eq!(&e["object"], item(&list, name), "the full KlioBackup, as listed");
    }
    // Then only changes: the next event is the one for the next change, nothing repeated.
    let added = "pg-new.backup-20251201000000";
    put_record(&h.tier1_dir, &new_record("pg-new", "backup-20251201000000", 0x40));
    assert_eq!(event_summary(&w.event(EVENT)), ev("ADDED", added));
}

#[test]
fn a_watch_from_a_list_resource_version_streams_later_changes_only() {
    let h = Harness::sample();
    let rv1 = rv_of(&h.list_json());
    let mut w = h.admin.watch(&format!("{COLLECTION}?watch=true&resourceVersion={rv1}&timeoutSeconds=20"), JSON);
    assert_eq!(w.status, 200);
    assert_eq!(w.content_type(), JSON);

    // ADDED: a new record file.
    let added = "pg-orders.backup-20251123003000";
    put_record(&h.tier1_dir, &new_record("pg-orders", "backup-20251123003000", 0x12));
    let e = w.event(EVENT);
    assert_eq!(event_summary(&e), ev("ADDED", added), "the first event is the change, not the list again");
    let list2 = h.list_until("the added record", |l| has(l, added));
    let rv2 = rv_of(&list2);
    assert_ne!(rv2, rv1);
    assert_eq!(&e["object"], item(&list2, added), "the event carries the object as listed");
    assert_eq!(rv_of(&e["object"]), rv2, "an event's object carries the resourceVersion of its change");

    // MODIFIED: a record rewritten with another endLsn.
    rewrite(&record_file(&h.tier1_dir, EXAMPLE), |r| r["endLsn"] = json!(117_440_999u64));
    let e = w.event(EVENT);
    assert_eq!(event_summary(&e), ev("MODIFIED", EXAMPLE));
    assert_eq!(e["object"]["status"]["endLSN"], 117_440_999u64);
    assert_eq!(e["object"]["spec"]["clusterName"], "cluster-example");
    let list3 = h.list_until("the modified record", |l| item(l, EXAMPLE)["status"]["endLSN"] == 117_440_999u64);
    assert_eq!(rv_of(&e["object"]), rv_of(&list3));

    // DELETED: a record file removed.
    let removed = "pg-orders.backup-20251122003000";
    std::fs::remove_file(record_file(&h.tier1_dir, removed)).unwrap();
    let e = w.event(EVENT);
    assert_eq!(event_summary(&e), ev("DELETED", removed));
    assert_eq!(e["object"]["spec"]["backupID"], "backup-20251122003000", "the last state of the object");
    let list4 = h.list_until("the removed record to go", |l| !has(l, removed));
    let rv4 = rv_of(&list4);
    assert_eq!(rv_of(&e["object"]), rv4, "a deletion carries the resourceVersion it happened in");

    // A client resuming from the last resourceVersion it saw gets only what came after.
    let mut resumed = h.admin.watch(&format!("{COLLECTION}?watch=true&resourceVersion={rv4}&timeoutSeconds=20"), JSON);
    put_record(&h.tier1_dir, &new_record("pg-orders", "backup-20251124003000", 0x13));
    let next = ev("ADDED", "pg-orders.backup-20251124003000");
    assert_eq!(event_summary(&resumed.event(EVENT)), next);
    assert_eq!(event_summary(&w.event(EVENT)), next, "the first watch goes on too");
}

/// `kubectl get kliobackups -w`: the list as a Table, then a watch with the same Accept.
#[test]
fn a_table_watch_sends_one_row_tables() {
    let h = Harness::sample();
    let table = h.admin.get_accept(&format!("{COLLECTION}?limit=500"), TABLE_ACCEPT);
    assert_eq!(table.status, 200);
    let table = table.json();
    let columns = table["columnDefinitions"].as_array().unwrap().len();
    let rv = rv_of(&table);
    let mut w = h.admin.watch(&format!("{COLLECTION}?resourceVersion={rv}&watch=true"), TABLE_ACCEPT);
    assert_eq!(w.status, 200);
    assert_eq!(w.content_type(), TABLE_CONTENT_TYPE, "the list's Content-Type");

    rewrite(&record_file(&h.tier1_dir, EXAMPLE), |r| r["stoppedAt"] = json!(1_763_026_400));
    let e = w.event(EVENT);
    assert_eq!(event_summary(&e), ev("MODIFIED", EXAMPLE));
    let t = &e["object"];
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    let row = &t["rows"][0];
    assert_eq!(row["cells"].as_array().unwrap().len(), columns, "{row}");
    assert_eq!(row["cells"][1], "cluster-example");
    assert_eq!(row["cells"][3], "2025-11-13 09:33:20 +0000 UTC", "the changed cell");
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(row["object"]["metadata"]["name"], EXAMPLE);
    let list = h.list_until("the change", |l| item(l, EXAMPLE)["status"]["stoppedAt"] == "2025-11-13T09:33:20Z");
    assert_eq!(rv_of(t), rv_of(&list), "the Table's resourceVersion is the change's");

    // Without a resourceVersion the current state comes first, one row per event; includeObject
    // works as for lists.
    let mut w = h.admin.watch(&format!("{COLLECTION}?watch=true&includeObject=Object&timeoutSeconds=20"), TABLE_ACCEPT);
    assert_eq!(w.content_type(), TABLE_CONTENT_TYPE);
    let initial = w.events(SAMPLE_TIER1.len(), EVENT);
    assert_eq!(summaries(&initial), SAMPLE_TIER1.iter().map(|n| ev("ADDED", n)).collect::<Vec<_>>());
    for e in &initial {
        let name = e["object"]["rows"][0]["cells"][0].as_str().unwrap();
        assert_eq!(&e["object"]["rows"][0]["object"], item(&list, name), "includeObject=Object: the full object");
    }
}

#[test]
fn timeout_seconds_ends_the_stream_and_bookmarks_may_be_asked_for() {
    let h = Harness::sample();
    let rv = rv_of(&h.list_json());
    let started = Instant::now();
    let mut plain = h.admin.watch(&format!("{COLLECTION}?watch=true&resourceVersion={rv}&timeoutSeconds=1"), JSON);
    let mut bookmarks = h.admin.watch(
        &format!("{COLLECTION}?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=1"),
        TABLE_ACCEPT,
    );
    assert_eq!((plain.status, bookmarks.status), (200, 200));
    plain.expect_end(Duration::from_secs(6));
    bookmarks.expect_end(Duration::from_secs(6));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "ended after {took:?}, before timeoutSeconds");
    assert!(took < Duration::from_secs(6), "ended after {took:?}");
}

/// An informer's streaming list: `sendInitialEvents=true` sends the state as ADDED events, then
/// a BOOKMARK marked `k8s.io/initial-events-end` at the state's resourceVersion.
#[test]
fn initial_events_end_with_a_bookmark() {
    let h = Harness::sample();
    let rv = rv_of(&h.list_json());
    let mut w = h.admin.watch(
        &format!(
            "{COLLECTION}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=20"
        ),
        JSON,
    );
    assert_eq!(w.status, 200);
    let initial = w.events(SAMPLE_TIER1.len(), EVENT);
    assert_eq!(summaries(&initial), SAMPLE_TIER1.iter().map(|n| ev("ADDED", n)).collect::<Vec<_>>());
    let b = w.event(EVENT);
    assert_eq!(b["type"], "BOOKMARK", "{b}");
    assert_eq!(b["object"]["kind"], "KlioBackup");
    assert_eq!(b["object"]["apiVersion"], GROUP_VERSION);
    assert_eq!(rv_of(&b["object"]), rv);
    assert_eq!(b["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    // Then changes.
    std::fs::remove_file(record_file(&h.tier1_dir, EXAMPLE)).unwrap();
    assert_eq!(event_summary(&w.event(EVENT)), ev("DELETED", EXAMPLE));

    // Without allowWatchBookmarks, no bookmark: the change follows the initial events directly.
    let rv = rv_of(&h.list_until("the deletion", |l| !has(l, EXAMPLE)));
    let mut w = h.admin.watch(
        &format!(
            "{COLLECTION}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion={rv}&timeoutSeconds=20"
        ),
        JSON,
    );
    let rest: Vec<_> = SAMPLE_TIER1.iter().filter(|n| **n != EXAMPLE).map(|n| ev("ADDED", n)).collect();
    assert_eq!(summaries(&w.events(rest.len(), EVENT)), rest);
    put_record(&h.tier1_dir, &new_record("pg-new", "backup-20251201000000", 0x41));
    assert_eq!(event_summary(&w.event(EVENT)), ev("ADDED", "pg-new.backup-20251201000000"));
}

/// kube sends "too old resource version" as an ERROR event in a 200 stream (client-go re-lists).
#[test]
fn a_watch_from_an_unknown_resource_version_is_a_410_error_event() {
    let h = Harness::sample();
    let rv = rv_of(&h.list_json());
    let older: u64 = rv.parse::<u64>().unwrap() - 1;
    for accept in [JSON, TABLE_ACCEPT] {
        let mut w = h.admin.watch(&format!("{COLLECTION}?watch=true&resourceVersion={older}"), accept);
        if w.status != 200 {
            let status = w.status;
            panic!("{status}: {}", w.rest_text(EVENT));
        }
        let e = w.event(EVENT);
        assert_eq!(e["type"], "ERROR", "{e}");
        let s = &e["object"];
        assert_eq!(s["kind"], "Status", "{s}");
        assert_eq!(s["apiVersion"], "v1", "{s}");
        assert_eq!(s["status"], "Failure", "{s}");
        assert_eq!(s["code"], 410, "{s}");
        assert_eq!(s["reason"], "Expired", "{s}");
        assert!(s["message"].as_str().unwrap().contains("too old"), "{s}");
        w.expect_end(EVENT);
    }
    // Not a number at all: a client error, no stream.
    for bad in ["abc", "1.x", "-1", ".", "18446744073709551616"] {
        let r = h.admin.get_accept(&format!("{COLLECTION}?watch=true&resourceVersion={bad}"), JSON);
        r.expect_status(400, "BadRequest");
    }
    // A watch cannot ask for an exact revision, nor for a match without initial events; a list
    // cannot stream initial events: kube's ListOptions validation, 422 Invalid.
    for bad in [
        format!("watch=true&resourceVersion={rv}&resourceVersionMatch=Exact"),
        "watch=true&resourceVersionMatch=NotOlderThan".to_string(),
        "sendInitialEvents=true".to_string(),
    ] {
        h.admin.get_accept(&format!("{COLLECTION}?{bad}"), JSON).expect_status(422, "Invalid");
    }
}

/// A resourceVersion from a replica that is ahead is waited for (bounded); one that no server
/// will reach never hangs the client.
#[test]
fn a_watch_far_ahead_of_the_catalog_is_answered_within_seconds() {
    let h = Harness::sample();
    let future = rv_of(&h.list_json()).parse::<u64>().unwrap() + 1_000_000_000;
    let started = Instant::now();
    let mut w = h.admin.watch(&format!("{COLLECTION}?watch=true&resourceVersion={future}"), JSON);
    if w.status == 200 {
        let e = w.event(Duration::from_secs(8));
        assert_eq!(e["type"], "ERROR", "{e}");
        assert!(matches!(e["object"]["code"].as_u64(), Some(410 | 504)), "{e}");
        w.expect_end(EVENT);
    } else {
        let s: Value = serde_json::from_str(&w.rest_text(EVENT)).unwrap();
        assert_eq!((w.status, s["reason"].as_str()), (504, Some("Timeout")), "{s}");
    }
    assert!(started.elapsed() < Duration::from_secs(8), "answered after {:?}", started.elapsed());
}

/// Two tiers: moving a backup between tiers changes its tier labels. For a watcher with a
/// selector, an object that starts matching is ADDED and one that stops matching is DELETED.
#[test]
fn selectors_on_watch_turn_moves_into_adds_and_deletes() {
    let h = Harness::sample_two_tiers();
    let rv = rv_of(&h.list_json());
    let watch = |selector: &str| {
        let w =
            h.admin.watch(&format!("{COLLECTION}?watch=true&resourceVersion={rv}&timeoutSeconds=20&{selector}"), JSON);
        assert_eq!(w.status, 200);
        w
    };
    let mut tier1 = watch("labelSelector=kliocatalog.enterprisedb.io/tier1");
    let mut tier2 = watch("labelSelector=kliocatalog.enterprisedb.io/tier2%3Dtrue");
    let mut not_tier1 = watch("labelSelector=!kliocatalog.enterprisedb.io/tier1");
    let mut orders = watch("fieldSelector=spec.clusterName%3Dpg-orders");
    let orders_name = "pg-orders.backup-20251122003000";

    // 1. The backup on both tiers leaves tier 1.
    std::fs::remove_file(record_file(&h.tier1_dir, SAMPLE_BOTH_TIERS)).unwrap();
    h.list_until("the backup to leave tier 1", |l| {
        item(l, SAMPLE_BOTH_TIERS)["metadata"]["labels"].get("kliocatalog.enterprisedb.io/tier1").is_none()
    });
    // 2. A tier-1 backup is copied to tier 2.
    std::fs::create_dir_all(h.tier2_dir.join("pg-orders")).unwrap();
    write_atomically(
        &record_file(&h.tier2_dir, orders_name),
        &std::fs::read(record_file(&h.tier1_dir, orders_name)).unwrap(),
    );
    h.list_until("the copy on tier 2", |l| {
        item(l, orders_name)["metadata"]["labels"]["kliocatalog.enterprisedb.io/tier2"] == "true"
    });
    // 3. A tier-1-only backup goes.
    std::fs::remove_file(record_file(&h.tier1_dir, EXAMPLE)).unwrap();
    h.list_until("the deletion", |l| !has(l, EXAMPLE));

    let expected = [
        (&mut tier1, vec![ev("DELETED", SAMPLE_BOTH_TIERS), ev("MODIFIED", orders_name), ev("DELETED", EXAMPLE)]),
        (&mut tier2, vec![ev("MODIFIED", SAMPLE_BOTH_TIERS), ev("ADDED", orders_name)]),
        (&mut not_tier1, vec![ev("ADDED", SAMPLE_BOTH_TIERS)]),
        (&mut orders, vec![ev("MODIFIED", orders_name)]),
    ];
    for (i, (w, events)) in expected.into_iter().enumerate() {
        let got = summaries(&w.events(events.len(), EVENT));
        assert_eq!(got, events, "watcher {i}");
        // Everything above was published before the last list: anything more would be here by now.
        w.expect_quiet(Duration::from_millis(if i == 0 { 300 } else { 20 }));
    }
}

/// kube-apiserver sends the DELETED for an object that stops matching a watcher's selector with the
/// object's previous content (the state that matched) at the change's resourceVersion.
#[test]
fn leaving_a_selector_is_a_delete_with_the_last_matching_state() {
    let h = Harness::sample_two_tiers();
    let rv = rv_of(&h.list_json());
    let mut w = h.admin.watch(
        &format!("{COLLECTION}?watch=true&resourceVersion={rv}&timeoutSeconds=20&labelSelector=kliocatalog.enterprisedb.io/tier1"),
        JSON,
    );
    std::fs::remove_file(record_file(&h.tier1_dir, SAMPLE_BOTH_TIERS)).unwrap();
    let e = w.event(EVENT);
    assert_eq!(event_summary(&e), ev("DELETED", SAMPLE_BOTH_TIERS));
    let list = h.list_until("the move", |l| {
        item(l, SAMPLE_BOTH_TIERS)["metadata"]["labels"].get("kliocatalog.enterprisedb.io/tier1").is_none()
    });
    assert_eq!(rv_of(&e["object"]), rv_of(&list), "the change's resourceVersion");
    assert_eq!(
        e["object"]["metadata"]["labels"]["kliocatalog.enterprisedb.io/tier1"], "true",
        "the object as it last matched the selector: {}",
        e["object"]
    );
}

// ---------------------------------------------------------------------------------------------
// Label selectors on the service's labels

#[test]
fn label_selectors_on_the_service_labels() {
    let h = Harness::sample_two_tiers();
    let all = sorted(SAMPLE_TIER1.iter().copied().chain([SAMPLE_TIER2_ONLY]));
    let only1: Vec<String> =
        all.iter().filter(|n| **n != SAMPLE_TIER2_ONLY && **n != SAMPLE_BOTH_TIERS).cloned().collect();
    let cluster_example = sorted([EXAMPLE, "cluster-example.backup-20251114093000", SAMPLE_TIER2_ONLY]);
    let not_cluster_example: Vec<String> = all.iter().filter(|n| !cluster_example.contains(n)).cloned().collect();
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("kliocatalog.enterprisedb.io/cluster%3Dcluster-example", cluster_example.clone()),
        ("kliocatalog.enterprisedb.io/cluster%3D%3Dcluster-example", cluster_example.clone()),
        ("kliocatalog.enterprisedb.io/cluster!%3Dcluster-example", not_cluster_example.clone()),
        ("kliocatalog.enterprisedb.io/cluster+in+(pg-orders,pg-analytics)", not_cluster_example.clone()),
        ("kliocatalog.enterprisedb.io/cluster+notin+(pg-orders,pg-analytics)", cluster_example.clone()),
        ("kliocatalog.enterprisedb.io/tier2", sorted([SAMPLE_BOTH_TIERS, SAMPLE_TIER2_ONLY])),
        ("kliocatalog.enterprisedb.io/tier2%3Dtrue", sorted([SAMPLE_BOTH_TIERS, SAMPLE_TIER2_ONLY])),
        ("!kliocatalog.enterprisedb.io/tier2", only1.clone()),
        // != and notin also match objects without the label.
        ("kliocatalog.enterprisedb.io/tier2!%3Dtrue", only1.clone()),
        ("kliocatalog.enterprisedb.io/tier1+notin+(true)", vec![SAMPLE_TIER2_ONLY.to_string()]),
        ("!kliocatalog.enterprisedb.io/tier1", vec![SAMPLE_TIER2_ONLY.to_string()]),
        ("kliocatalog.enterprisedb.io/tier1,kliocatalog.enterprisedb.io/tier2", vec![SAMPLE_BOTH_TIERS.to_string()]),
        ("kliocatalog.enterprisedb.io/server%3Dklio", all.clone()),
        ("kliocatalog.enterprisedb.io/server+in+(other)", vec![]),
        ("kliocatalog.enterprisedb.io/tier1%3Dfalse", vec![]),
        ("", all.clone()),
    ];
    for (selector, expected) in cases {
        for accept in [JSON, TABLE_ACCEPT] {
            let r = h.admin.get_accept(&format!("{COLLECTION}?labelSelector={selector}&limit=500"), accept);
            assert_eq!(r.status, 200, "{selector}: {}", r.text());
            assert_eq!(Harness::names(&r.json()), expected, "{selector} ({accept})");
        }
    }
    // With a field selector: both must hold.
    let r = h.admin.get_accept(
        &format!("{COLLECTION}?labelSelector=kliocatalog.enterprisedb.io/tier2&fieldSelector=spec.clusterName%3Dpg-analytics"),
        JSON,
    );
    assert_eq!(Harness::names(&r.json()), [SAMPLE_BOTH_TIERS]);
    // Bad syntax or invalid keys and values: 400 naming the selector problem.
    for bad in [
        "kliocatalog.enterprisedb.io/cluster+in+cluster-example",
        "kliocatalog.enterprisedb.io/cluster+in+(a",
        "kliocatalog.enterprisedb.io/cluster%3Da+b",
        "kliocatalog.enterprisedb.io/cluster%3E1",
        "%3Dx",
        "a%3Db,",
        "a/b/c%3Dx",
        "kliocatalog.enterprisedb.io/cluster%3D-bad-",
    ] {
        for accept in [JSON, TABLE_ACCEPT] {
            let r = h.admin.get_accept(&format!("{COLLECTION}?labelSelector={bad}"), accept);
            let s = r.expect_status(400, "BadRequest");
            let message = s["message"].as_str().unwrap();
            assert!(message.contains("label") || message.contains("unable to parse requirement"), "{bad}: {s}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Paging

#[test]
fn pages_of_two_hold_every_item_once_with_remaining_counts() {
    let h = Harness::sample_two_tiers();
    let all = sorted(SAMPLE_TIER1.iter().copied().chain([SAMPLE_TIER2_ONLY]));
    for accept in [JSON, TABLE_ACCEPT] {
        let bodies = pages(&h.admin, "limit=2", None, accept);
        assert_eq!(bodies.len(), 3, "6 items in pages of 2 ({accept})");
        let rv = rv_of(&bodies[0]);
        let mut names = vec![];
        for (i, body) in bodies.iter().enumerate() {
            assert_eq!(rv_of(body), rv, "every page comes from the same snapshot");
            assert_eq!(Harness::names(body).len(), 2, "page {i}: {body}");
            let remaining = &body["metadata"]["remainingItemCount"];
            if i < 2 {
                assert_eq!(remaining, &json!(4 - 2 * i), "page {i} ({accept})");
                assert!(body["metadata"]["continue"].as_str().is_some_and(|t| !t.is_empty()));
            } else {
                assert!(remaining.is_null(), "the last page has no remainingItemCount: {}", body["metadata"]);
                assert!(body["metadata"].get("continue").is_none(), "{}", body["metadata"]);
            }
            names.extend(Harness::names(body));
        }
        assert_eq!(names, all, "every item exactly once, in order ({accept})");
    }
    // With a selector: pages hold matches only; the remaining count is not known exactly.
    let bodies = pages(&h.admin, "limit=1&labelSelector=kliocatalog.enterprisedb.io/tier2", None, JSON);
    let names: Vec<String> = bodies.iter().flat_map(Harness::names).collect();
    assert_eq!(names, sorted([SAMPLE_BOTH_TIERS, SAMPLE_TIER2_ONLY]));
    assert!(bodies[0]["metadata"]["continue"].is_string());
    assert!(bodies[0]["metadata"].get("remainingItemCount").is_none(), "{}", bodies[0]["metadata"]);
    // The continue token holds the selector's place: the second page has the second match.
    assert_eq!(bodies.len(), 2, "{bodies:?}");
}

#[test]
fn paging_stays_on_its_snapshot_while_the_catalog_changes() {
    let h = Harness::sample();
    let first = h.admin.get_accept(&format!("{COLLECTION}?limit=2"), JSON).json();
    let rv1 = rv_of(&first);
    assert_eq!(Harness::names(&first), SAMPLE_TIER1[..2]);
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    let before = h.list_json();

    // Changes in what the next pages hold: one added, one modified, one removed.
    put_record(&h.tier1_dir, &new_record("pg-analytics", "backup-20251125000000", 0x50));
    rewrite(&record_file(&h.tier1_dir, "pg-analytics.backup-20251121010000"), |r| r["endLsn"] = json!(1u64 << 40));
    std::fs::remove_file(record_file(&h.tier1_dir, "pg-orders.backup-20251122003000")).unwrap();
    let changed = h.list_until("all three changes", |l| {
        has(l, "pg-analytics.backup-20251125000000")
            && !has(l, "pg-orders.backup-20251122003000")
            && item(l, "pg-analytics.backup-20251121010000")["status"]["endLSN"] == 1u64 << 40
    });
    assert_ne!(rv_of(&changed), rv1);

    let mut bodies = vec![first];
    bodies.extend(pages(&h.admin, "limit=2", Some(&token), JSON));
    let mut names = vec![];
    for body in &bodies {
        assert_eq!(rv_of(body), rv1, "continued pages come from the first page's snapshot");
        for i in body["items"].as_array().unwrap() {
            let name = i["metadata"]["name"].as_str().unwrap();
            assert_eq!(i, item(&before, name), "{name} as it was in that snapshot");
            names.push(name.to_string());
        }
    }
    assert_eq!(names, SAMPLE_TIER1, "the catalog as it was when paging began");
}

#[test]
fn a_continue_token_that_is_not_ours_is_a_bad_request() {
    let h = Harness::sample();
    for token in ["garbage", "eyJub3QiOiJhIHRva2VuIn0", "%00%01"] {
        let r = h.admin.get_accept(&format!("{COLLECTION}?continue={token}&limit=2"), JSON);
        let s = r.expect_status(400, "BadRequest");
        assert!(s["message"].as_str().unwrap().contains("continue"), "{s}");
    }
    // A real token with a resourceVersion: refused, as kube does.
    let first = h.admin.get_accept(&format!("{COLLECTION}?limit=2"), JSON).json();
    let token = first["metadata"]["continue"].as_str().unwrap();
    let rv = rv_of(&first);
    let r = h.admin.get_accept(&format!("{COLLECTION}?continue={token}&limit=2&resourceVersion={rv}"), JSON);
    r.expect_status(400, "BadRequest");
}

/// With a history of two snapshots, a third change forgets the first: its continue tokens,
/// `resourceVersionMatch=Exact` and watches from it are 410 Expired; the kept one still works.
#[test]
fn revisions_older_than_the_kept_history_expire() {
    let h = Harness::start(Options { history: 2, ..Default::default() });
    let first = h.admin.get_accept(&format!("{COLLECTION}?limit=2"), JSON).json();
    let rv1 = rv_of(&first);
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();

    let a = "pg-new.backup-20251201000000";
    put_record(&h.tier1_dir, &new_record("pg-new", "backup-20251201000000", 0x60));
    let rv2 = rv_of(&h.list_until("change A", |l| has(l, a)));
    let b = "pg-new.backup-20251202000000";
    put_record(&h.tier1_dir, &new_record("pg-new", "backup-20251202000000", 0x61));
    let rv3 = rv_of(&h.list_until("change B", |l| has(l, b)));
    assert!(rv1 != rv2 && rv2 != rv3, "{rv1} {rv2} {rv3}");

    let r = h.admin.get_accept(&format!("{COLLECTION}?continue={token}&limit=2"), TABLE_ACCEPT);
    let s = r.expect_status(410, "Expired");
    assert!(s["message"].as_str().unwrap().contains("continue"), "{s}");
    let r = h.admin.get_accept(&format!("{COLLECTION}?resourceVersion={rv1}&resourceVersionMatch=Exact"), JSON);
    r.expect_status(410, "Expired");
    let mut w = h.admin.watch(&format!("{COLLECTION}?watch=true&resourceVersion={rv1}"), JSON);
    let e = w.event(EVENT);
    assert_eq!(
        (e["type"].as_str(), e["object"]["code"].as_u64(), e["object"]["reason"].as_str()),
        (Some("ERROR"), Some(410), Some("Expired")),
        "{e}"
    );
    w.expect_end(EVENT);

    // rv2 is still kept: exact list and watch replay work.
    let r = h.admin.get_accept(&format!("{COLLECTION}?resourceVersion={rv2}&resourceVersionMatch=Exact"), JSON);
    assert_eq!(r.status, 200, "{}", r.text());
    let exact = r.json();
    assert_eq!(rv_of(&exact), rv2);
    assert!(has(&exact, a) && !has(&exact, b), "the catalog as it was at {rv2}");
    let mut w = h.admin.watch(&format!("{COLLECTION}?watch=true&resourceVersion={rv2}&timeoutSeconds=20"), JSON);
    assert_eq!(event_summary(&w.event(EVENT)), ev("ADDED", b), "change B replayed");
}

// ---------------------------------------------------------------------------------------------
// resourceVersion on list and get

#[test]
fn list_resource_version_semantics() {
    let h = Harness::sample();
    let rv1 = rv_of(&h.list_json());
    let list = |query: &str| h.admin.get_accept(&format!("{COLLECTION}?{query}"), JSON);
    for query in [
        "resourceVersion=0".to_string(),
        format!("resourceVersion={rv1}"),
        format!("resourceVersion={rv1}&resourceVersionMatch=NotOlderThan"),
        format!("resourceVersion={rv1}&resourceVersionMatch=Exact"),
        "resourceVersion=0&resourceVersionMatch=NotOlderThan".to_string(),
    ] {
        let r = list(&query);
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        let body = r.json();
        assert_eq!(
            (rv_of(&body), Harness::names(&body)),
            (rv1.clone(), SAMPLE_TIER1.iter().map(|s| s.to_string()).collect()),
            "{query}"
        );
    }
    for bad in ["resourceVersion=abc", "resourceVersion=1.x", "resourceVersion=-1"] {
        let s = list(bad).expect_status(400, "BadRequest");
        assert!(s["message"].as_str().unwrap().to_lowercase().contains("resource"), "{bad}: {s}");
    }
    for invalid in [
        "resourceVersionMatch=Exact".to_string(),
        "resourceVersionMatch=NotOlderThan".to_string(),
        format!("resourceVersion={rv1}&resourceVersionMatch=Newest"),
        "resourceVersion=0&resourceVersionMatch=Exact".to_string(),
    ] {
        let s = list(&invalid).expect_status(422, "Invalid");
        assert!(s["message"].as_str().unwrap().starts_with("ListOptions.meta.k8s.io \"\" is invalid: "), "{s}");
    }
    // A number of another form (this catalog has one source; "1.2" is the form of two): a
    // version older than any kept, so NotOlderThan is the current state and Exact is 410.
    let r = list("resourceVersion=1.2");
    assert_eq!((r.status, rv_of(&r.json())), (200, rv1.clone()), "{}", r.text());
    list("resourceVersion=1.2&resourceVersionMatch=Exact").expect_status(410, "Expired");

    let added = "pg-new.backup-20251201000000";
    put_record(&h.tier1_dir, &new_record("pg-new", "backup-20251201000000", 0x70));
    let rv2 = rv_of(&h.list_until("the change", |l| has(l, added)));
    // Exact: that snapshot, also after a change.
    let old = list(&format!("resourceVersion={rv1}&resourceVersionMatch=Exact")).json();
    assert_eq!(rv_of(&old), rv1);
    assert_eq!(Harness::names(&old), SAMPLE_TIER1);
    let r = h.admin.get(&format!("{COLLECTION}/{added}?resourceVersion={rv1}&resourceVersionMatch=Exact"));
    r.expect_status(404, "NotFound");
    let r = h.admin.get(&format!("{COLLECTION}/{added}?resourceVersion={rv2}&resourceVersionMatch=Exact"));
    assert_eq!(r.status, 200, "{}", r.text());
    // Not older than rv1: the current state.
    let current = list(&format!("resourceVersion={rv1}")).json();
    assert_eq!(rv_of(&current), rv2);
    // Exact with a revision this server never had: 410.
    let unknown = rv1.parse::<u64>().unwrap() - 1;
    list(&format!("resourceVersion={unknown}&resourceVersionMatch=Exact")).expect_status(410, "Expired");
    // Far in the future: 504 Timeout after a bounded wait for this replica to catch up.
    let future = rv2.parse::<u64>().unwrap() + 1_000_000_000;
    let started = Instant::now();
    let r = list(&format!("resourceVersion={future}"));
    let took = started.elapsed();
    let s = r.expect_status(504, "Timeout");
    assert_too_large_resource_version(&s, &future.to_string(), &rv2);
    assert_eq!(r.header("retry-after"), Some("1"), "504 tells when to retry");
    assert!(took < Duration::from_secs(8), "answered after {took:?}");
}

// ---------------------------------------------------------------------------------------------
// Stale but available

/// The one Warning header of `r`, checked for kubectl's format, and its text.
fn warning_text(headers: &[String]) -> String {
    assert_eq!(headers.len(), 1, "one Warning header: {headers:?}");
    let w = &headers[0];
    assert!(w.starts_with("299 - \"") && w.ends_with('"') && w.len() > 8, "Warning: 299 - \"<text>\", got {w:?}");
    w[7..w.len() - 1].to_string()
}

/// Tier 1 failing in `how` after a first good read: the last catalog keeps being served, with a
/// warning naming the server, and /readyz stays ready saying the source is stale. Once it answers
/// again the warning clears and changes flow again.
fn serves_stale_then_recovers(how: Up, mentions: &str) {
    let mut h = Harness::sample();
    let before = h.list_json();
    let url = h.tier_url(0);
    match how {
        Up::Down => h.stop_upstream(0),
        other => h.start_upstream(0, &other),
    }
    let r = poll("the stale warning", WAIT, || {
        let r = h.admin.get_accept(COLLECTION, JSON);
        assert_eq!(r.status, 200, "still served: {}", r.text());
        (!r.header_all("warning").is_empty()).then_some(r)
    });
    let text = warning_text(&r.header_all("warning"));
    for needle in ["klio", url.as_str(), mentions] {
        assert!(text.contains(needle), "the warning names {needle}: {text}");
    }
    assert_eq!(r.json(), before, "the last catalog read, unchanged, same resourceVersion");
    for (path, accept) in [(COLLECTION.to_string(), TABLE_ACCEPT), (format!("{COLLECTION}/{EXAMPLE}"), JSON)] {
        let r = h.admin.get_accept(&path, accept);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        warning_text(&r.header_all("warning"));
    }
    let w = h.admin.watch(&format!("{COLLECTION}?watch=true&timeoutSeconds=1"), JSON);
    assert_eq!(w.status, 200);
    warning_text(&w.header_all("warning"));
    let ready = h.anonymous.get("/readyz");
    assert_eq!(ready.status, 200, "stale data keeps the service ready: {}", ready.text());
    assert!(!ready.text().contains(&url), "the open probe does not reveal upstream addresses: {}", ready.text());
    let ready = h.anonymous.get("/readyz?verbose");
    let line = ready.text().lines().find(|l| l.contains("catalog-klio-tier1")).unwrap_or_default().to_string();
    assert!(
        line.starts_with("[+]") && line.contains("stale"),
        "/readyz?verbose reports the source as stale: {}",
        ready.text()
    );
    assert!(!ready.text().contains(&url), "not even verbosely: {}", ready.text());

    h.start_upstream(0, &Up::Kopia);
    poll("the warning to clear", WAIT, || {
        h.admin.get_accept(COLLECTION, JSON).header_all("warning").is_empty().then_some(())
    });
    let ready = h.anonymous.get("/readyz?verbose");
    assert!(!ready.text().contains("stale"), "{}", ready.text());
    let added = "pg-new.backup-20251201000000";
    put_record(&h.tier1_dir, &new_record("pg-new", "backup-20251201000000", 0x80));
    h.list_until("a change after the recovery", |l| has(l, added));
}

#[test]
fn tier1_stopped_after_a_first_read_serves_the_last_catalog_with_a_warning() {
    serves_stale_then_recovers(Up::Down, "cannot be reached");
}

#[test]
fn tier1_refusing_sessions_after_a_first_read_serves_the_last_catalog_with_a_warning() {
    serves_stale_then_recovers(
        faulty(Fault::Refuse(tonic::Code::Unavailable, "not connected to a direct repository")),
        "not connected to a direct repository",
    );
}

#[test]
fn tier1_failing_its_listings_after_a_first_read_serves_the_last_catalog_with_a_warning() {
    serves_stale_then_recovers(
        faulty(Fault::FindError(Code::UnknownError, "the repository is locked")),
        "the repository is locked",
    );
}

#[test]
fn tier1_answering_nonsense_after_a_first_read_serves_the_last_catalog_with_a_warning() {
    serves_stale_then_recovers(faulty(Fault::WrongAnswer), "unexpected answer");
}

// ---------------------------------------------------------------------------------------------
// Replicas

/// Two API services reading the same Klio server derive the same resourceVersions, so a client
/// that a load balancer sends to either one can page and watch across them.
#[test]
fn replicas_agree_on_resource_versions_continue_tokens_and_watches() {
    let h = Harness::sample();
    let b = h.replica(1);
    b.wait_ready();
    let list_a = h.list_json();
    assert_eq!(b.list_json(), list_a, "the same objects under the same resourceVersions");

    let first = h.admin.get_accept(&format!("{COLLECTION}?limit=2"), JSON).json();
    let token = first["metadata"]["continue"].as_str().unwrap();
    let rest = pages(&b.admin, "limit=2", Some(token), JSON);
    let names: Vec<String> = std::iter::once(&first).chain(&rest).flat_map(Harness::names).collect();
    assert_eq!(names, SAMPLE_TIER1, "paged on A, continued on B");
    assert!(rest.iter().all(|p| rv_of(p) == rv_of(&first)));

    // A change, seen by A; a watch on B from A's earlier list replays it.
    let rv1 = rv_of(&list_a);
    let added = "pg-new.backup-20251201000000";
    put_record(&h.tier1_dir, &new_record("pg-new", "backup-20251201000000", 0x90));
    let rv2 = rv_of(&h.list_until("the change on A", |l| has(l, added)));
    let mut w = b.admin.watch(&format!("{COLLECTION}?watch=true&resourceVersion={rv1}&timeoutSeconds=20"), JSON);
    let e = w.event(EVENT);
    assert_eq!(event_summary(&e), ev("ADDED", added));
    assert_eq!(rv_of(&e["object"]), rv2, "B gives the change the resourceVersion A gave it");
    assert_eq!(rv_of(&b.list_until("the change on B", |l| has(l, added))), rv2);
}

/// A replica behind (it has not refreshed yet) catches up, within a bounded wait, when a client
/// brings a resourceVersion it got from a replica that is ahead.
#[test]
fn a_replica_behind_catches_up_with_a_resource_version_seen_elsewhere() {
    let h = Harness::sample();
    let b = h.replica(60);
    b.wait_ready();
    let rv1 = rv_of(&b.list_json());
    let added = "pg-new.backup-20251201000000";
    put_record(&h.tier1_dir, &new_record("pg-new", "backup-20251201000000", 0x91));
    let rv2 = rv_of(&h.list_until("the change on A", |l| has(l, added)));
    assert_eq!(rv_of(&b.list_json()), rv1, "B has not refreshed yet (every 60 s)");

    let r = b.admin.get_accept(&format!("{COLLECTION}?resourceVersion={rv2}"), JSON);
    assert_eq!(r.status, 200, "{}", r.text());
    let caught_up = r.json();
    assert_eq!(rv_of(&caught_up), rv2);
    assert!(has(&caught_up, added));
}

/// `kubectl get --chunk-size` behind a Service with two replicas: the first page from the
/// replica that is ahead, the next from the one behind.
#[test]
fn a_continue_token_from_a_replica_ahead_is_honoured_by_one_behind() {
    let h = Harness::sample();
    let b = h.replica(60);
    b.wait_ready();
    let added = "pg-new.backup-20251201000000";
    put_record(&h.tier1_dir, &new_record("pg-new", "backup-20251201000000", 0x92));
    let rv2 = rv_of(&h.list_until("the change on A", |l| has(l, added)));
    let first = h.admin.get_accept(&format!("{COLLECTION}?limit=2"), JSON).json();
    assert_eq!(rv_of(&first), rv2);
    let token = first["metadata"]["continue"].as_str().unwrap();
    let r = b.admin.get_accept(&format!("{COLLECTION}?continue={token}&limit=2"), JSON);
    assert_eq!(r.status, 200, "continue on the replica behind: {}", r.text());
    assert_eq!(rv_of(&r.json()), rv2);
}

// ---------------------------------------------------------------------------------------------
// Several Klio servers

fn servers(specs: &[(&'static str, bool)]) -> Options {
    Options {
        servers: specs
            .iter()
            .map(|(name, tier2)| ServerOpt { name, tier1: Up::Kopia, tier2: tier2.then_some(Up::Kopia) })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn two_klio_servers_prefix_names_and_label_the_server() {
    let h = Harness::start(servers(&[("east", false), ("west", false)]));
    let list = h.list_json();
    let expected = sorted(["east", "west"].iter().flat_map(|s| SAMPLE_TIER1.iter().map(move |n| format!("{s}.{n}"))));
    assert_eq!(Harness::names(&list), expected);
    for i in list["items"].as_array().unwrap() {
        let name = i["metadata"]["name"].as_str().unwrap();
        let server = name.split('.').next().unwrap();
        assert_eq!(i["status"]["server"], server, "{i}");
        let labels = &i["metadata"]["labels"];
        assert_eq!(labels["kliocatalog.enterprisedb.io/server"], server, "{i}");
        assert_eq!(labels["kliocatalog.enterprisedb.io/cluster"], i["spec"]["clusterName"], "{i}");
        assert_eq!(
            name,
            format!(
                "{server}.{}.{}",
                i["spec"]["clusterName"].as_str().unwrap(),
                i["spec"]["backupID"].as_str().unwrap()
            )
        );
    }
    // resourceVersion: one revision per source, printed R1.R2.
    let rv = rv_of(&list);
    let parts: Vec<u64> = rv.split('.').map(|p| p.parse().unwrap_or_else(|_| panic!("{rv}"))).collect();
    assert_eq!(parts.len(), 2, "{rv}");

    let r = h.admin.get(&format!("{COLLECTION}/east.{EXAMPLE}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"]["server"], "east");
    h.admin.get(&format!("{COLLECTION}/{EXAMPLE}")).expect_status(404, "NotFound");
    let names = |q: &str| Harness::names(&h.admin.get_accept(&format!("{COLLECTION}?{q}"), TABLE_ACCEPT).json());
    assert_eq!(names("labelSelector=kliocatalog.enterprisedb.io/server%3Dwest"), expected[5..]);
    assert_eq!(
        names("fieldSelector=spec.clusterName%3Dpg-orders"),
        ["east.pg-orders.backup-20251122003000", "west.pg-orders.backup-20251122003000"]
    );
    assert_eq!(names(&format!("fieldSelector=metadata.name%3Dwest.{EXAMPLE}")), [format!("west.{EXAMPLE}")]);

    // A change on west moves west's component only, and is watched like any other.
    let mut w = h.admin.watch(&format!("{COLLECTION}?watch=true&resourceVersion={rv}&timeoutSeconds=20"), JSON);
    put_record(&h.dirs[1], &new_record("pg-new", "backup-20251201000000", 0xA0));
    let added = "west.pg-new.backup-20251201000000";
    assert_eq!(event_summary(&w.event(EVENT)), ev("ADDED", added));
    let rv2 = rv_of(&h.list_until("the change on west", |l| has(l, added)));
    let parts2: Vec<u64> = rv2.split('.').map(|p| p.parse().unwrap()).collect();
    assert_eq!(parts2[0], parts[0], "east did not change: {rv} -> {rv2}");
    assert!(parts2[1] > parts[1], "west's revision grew: {rv} -> {rv2}");
}

#[test]
fn a_server_with_two_tiers_beside_another_server() {
    let h = Harness::start(servers(&[("east", true), ("west", false)]));
    let list = h.list_json();
    assert_eq!(rv_of(&list).split('.').count(), 3, "east tier 1, east tier 2, west: {}", rv_of(&list));
    assert!(has(&list, &format!("east.{SAMPLE_TIER2_ONLY}")));
    assert!(!has(&list, &format!("west.{SAMPLE_TIER2_ONLY}")), "west has no tier 2");
    let both = item(&list, &format!("east.{SAMPLE_BOTH_TIERS}"));
    assert_eq!(both["metadata"]["labels"]["kliocatalog.enterprisedb.io/tier2"], "true");
    assert_eq!(both["metadata"]["labels"]["kliocatalog.enterprisedb.io/tier1"], "true");
    let west = item(&list, &format!("west.{SAMPLE_BOTH_TIERS}"));
    assert!(west["metadata"]["labels"].get("kliocatalog.enterprisedb.io/tier2").is_none(), "{west}");
    assert_eq!(Harness::names(&list).len(), 2 * SAMPLE_TIER1.len() + 1);
}

// ---------------------------------------------------------------------------------------------
// Cold start and conditional refreshes

/// Holds the cold-start listings until the test has its requests waiting.
static COLD_RELEASE: AtomicBool = AtomicBool::new(false);

/// Many requests on a cold start wait for the one refresh in flight: one catalog read per
/// source (one FindManifests per snapshot kind), not one per client request. The upstreams hold
/// their listings while the 20 requests come in.
#[test]
fn a_cold_start_reads_each_source_once_however_many_requests_wait() {
    let h = Harness::start(Options {
        tier1: faulty(Fault::HoldFinds(&COLD_RELEASE)),
        tier2: Some(Up::Kopia),
        wait_ready: false,
        refresh_seconds: 60,
        ..Default::default()
    });
    assert_eq!(h.anonymous.get("/readyz").status, 503, "the first refresh is still in flight");
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|_| {
                let h = &h;
                scope.spawn(move || {
                    let r = h.admin.get_accept(COLLECTION, JSON);
                    (r.status, r.json())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        COLD_RELEASE.store(true, Ordering::SeqCst);
        handles.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let rv = rv_of(&answers[0].1);
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(Harness::names(body).len(), SAMPLE_TIER1.len() + 1, "{body}");
        assert_eq!(rv_of(body), rv);
    }
    let (sessions, finds, manifests, contents) = h.upstreams[1].as_ref().unwrap().requests();
    assert_eq!((sessions, finds), (1, 1), "tier 2: one session, one listing (every snapshot kind in it)");
    assert_eq!((manifests, contents), (2, 4), "tier 2: three reads per backup, two backups");
}

/// A refresh that finds nothing new costs its listing only (one FindManifests); a new backup costs three reads (manifest, directory, metadata.json), known ones none.
#[test]
fn refreshes_read_only_what_is_new() {
    let h = Harness::sample();
    let up = |h: &Harness| h.upstreams[0].as_ref().unwrap().requests();
    let (sessions, finds, manifests, contents) = up(&h);
    assert_eq!(sessions, 1, "one long-lived session");
    assert_eq!((manifests, contents), (5, 10), "three reads per backup of the sample");
    poll("two more refreshes", WAIT, || (up(&h).1 >= finds + 2).then_some(()));
    let (_, _, m, c) = up(&h);
    assert_eq!((m, c), (manifests, contents), "nothing read for an unchanged catalog");
    let rv = rv_of(&h.list_json());

    let added = "pg-new.backup-20251201000000";
    put_record(&h.tier1_dir, &new_record("pg-new", "backup-20251201000000", 0x70));
    h.list_until("the new backup", |l| has(l, added));
    let (sessions2, finds2, m, c) = up(&h);
    assert_eq!((m, c), (manifests + 1, contents + 2), "three reads for the one new backup");
    assert_eq!(sessions2, 1, "still the same session");
    assert!(finds2 > finds, "the new backup came with a listing: {finds} then {finds2}");
    assert_ne!(rv_of(&h.list_json()), rv);
    let ready = h.anonymous.get("/readyz?verbose").text();
    assert!(ready.contains("[+]catalog-klio-tier1 ok\n"), "{ready}");
}

// ---------------------------------------------------------------------------------------------
// Issue 13: watch-list (KEP-3157), resourceVersion details, bookmarks

/// client-go's reflector with `WatchListClient` streams its list:
/// `watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true`
/// with no resourceVersion. kube-apiserver answers 200 `application/json`, the current state as
/// ADDED events, then a BOOKMARK of the resource's kind carrying only the state's
/// resourceVersion and the `k8s.io/initial-events-end: "true"` annotation, then changes.
#[test]
fn watch_list_streams_the_state_then_an_initial_events_end_bookmark_then_changes() {
    let h = Harness::sample();
    let list = h.list_json();
    let rv = rv_of(&list);
    const STREAM: &str = "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=30";
    for query in [STREAM.to_string(), format!("{STREAM}&resourceVersion=0"), format!("{STREAM}&resourceVersion={rv}")] {
        let mut w = h.admin.watch(&format!("{COLLECTION}?{query}"), JSON);
        assert_eq!((w.status, w.content_type()), (200, JSON), "{query}");
        let initial = w.events(SAMPLE_TIER1.len(), EVENT);
        assert_eq!(summaries(&initial), SAMPLE_TIER1.iter().map(|n| ev("ADDED", n)).collect::<Vec<_>>(), "{query}");
        for e in &initial {
            let name = e["object"]["metadata"]["name"].as_str().unwrap();
            assert_eq!(&e["object"], item(&list, name), "{query}: the full objects, as listed");
        }
        let b = w.event(EVENT);
        assert_eq!(
            b,
            json!({ "type": "BOOKMARK", "object": {
                "apiVersion": GROUP_VERSION,
                "kind": "KlioBackup",
                "metadata": { "resourceVersion": rv, "annotations": { "k8s.io/initial-events-end": "true" } },
            }}),
            "{query}: the bookmark is at the state's resourceVersion"
        );
        w.expect_quiet(Duration::from_millis(300));
    }
    // Then changes, on a stream opened before them.
    let mut w = h.admin.watch(&format!("{COLLECTION}?{STREAM}"), JSON);
    w.events(SAMPLE_TIER1.len() + 1, EVENT);
    put_record(&h.tier1_dir, &new_record("pg-new", "backup-20251201000000", 0x42));
    assert_eq!(event_summary(&w.event(EVENT)), ev("ADDED", "pg-new.backup-20251201000000"));
}

/// kube-apiserver 1.34+ defaults (`SetListOptionsDefaults`): a watch from no resourceVersion or
/// "0" that names neither option is a streaming watch, so with bookmarks allowed it also marks
/// the end of its initial events. `sendInitialEvents=false` sends changes only.
#[test]
fn watch_list_defaults_and_send_initial_events_false() {
    let h = Harness::sample();
    let rv = rv_of(&h.list_json());
    for from in ["", "&resourceVersion=0"] {
        let mut w =
            h.admin.watch(&format!("{COLLECTION}?watch=1&allowWatchBookmarks=true&timeoutSeconds=30{from}"), JSON);
        assert_eq!(w.status, 200);
        w.events(SAMPLE_TIER1.len(), EVENT);
        let b = w.event(EVENT);
        assert_eq!((b["type"].as_str(), rv_of(&b["object"])), (Some("BOOKMARK"), rv.clone()), "{b}");
        assert_eq!(b["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true", "{b}");
    }
    // Without allowWatchBookmarks, no bookmark (the defaulted case too).
    let mut plain = h.admin.watch(&format!("{COLLECTION}?watch=1&timeoutSeconds=30"), JSON);
    plain.events(SAMPLE_TIER1.len(), EVENT);
    let mut quiet = h.admin.watch(
        &format!("{COLLECTION}?watch=1&sendInitialEvents=false&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=30"),
        JSON,
    );
    assert_eq!(quiet.status, 200);
    plain.expect_quiet(Duration::from_millis(300));
    quiet.expect_quiet(Duration::from_millis(300));
    put_record(&h.tier1_dir, &new_record("pg-new", "backup-20251201000000", 0x43));
    for w in [&mut plain, &mut quiet] {
        assert_eq!(event_summary(&w.event(EVENT)), ev("ADDED", "pg-new.backup-20251201000000"));
    }
}

/// A watch-list from a resourceVersion this replica has not reached: kube's cacher waits 3 s,
/// then refuses the watch inside its 200 stream (`errWatcher`) with the 504 Status of
/// `NewTooLargeResourceVersionError`.
#[test]
fn watch_list_from_a_future_resource_version_is_a_504_error_event() {
    let h = Harness::sample();
    let rv = rv_of(&h.list_json());
    let future = rv.parse::<u64>().unwrap() + 1_000_000_000;
    let started = Instant::now();
    let mut w = h.admin.watch(
        &format!("{COLLECTION}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion={future}"),
        JSON,
    );
    assert_eq!(w.status, 200);
    let e = w.event(Duration::from_secs(8));
    assert_eq!(e["type"], "ERROR", "{e}");
    assert_too_large_resource_version(&e["object"], &future.to_string(), &rv);
    w.expect_end(EVENT);
    assert!(started.elapsed() < Duration::from_secs(8), "answered after {:?}", started.elapsed());
}

/// `sendInitialEvents` without `resourceVersionMatch=NotOlderThan` is refused before any stream,
/// with kube's 422 Invalid ListOptions Status.
#[test]
fn send_initial_events_without_not_older_than_is_kubes_422() {
    let h = Harness::sample();
    for query in ["watch=true&sendInitialEvents=true", "watch=true&sendInitialEvents=true&allowWatchBookmarks=true"] {
        let r = h.admin.get_accept(&format!("{COLLECTION}?{query}"), JSON);
        assert_eq!(r.media_type(), "application/json");
        let s = r.expect_status(422, "Invalid");
        assert_eq!(
            s,
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 422, "reason": "Invalid",
                "message": "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                "details": { "group": "meta.k8s.io", "kind": "ListOptions", "causes": [{
                    "reason": "FieldValueForbidden",
                    "message": "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                    "field": "resourceVersionMatch",
                }]},
            }),
            "{query}"
        );
    }
}

/// The 504 of a resourceVersion not reached, as kube-apiserver words it.
fn assert_too_large_resource_version(status: &Value, asked: &str, current: &str) {
    assert_eq!(
        status,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 504, "reason": "Timeout",
            "message": format!("Timeout: Too large resource version: {asked}, current: {current}"),
            "details": {
                "causes": [{ "reason": "ResourceVersionTooLarge", "message": "Too large resource version" }],
                "retryAfterSeconds": 1,
            },
        })
    );
}

/// Our resourceVersions have one number per source (`R1.R2` here). A number of another form
/// (`1`, which kube takes as a version, or the dotted form of another number of sources) is a
/// version older than any kept: a watch from it is the 410 Expired ERROR event a too old one
/// gets, a NotOlderThan list is the current state, an Exact list is 410.
#[test]
fn resource_versions_of_another_form_are_too_old_not_bad_requests() {
    let h = Harness::sample_two_tiers();
    let list = h.list_json();
    let rv = rv_of(&list);
    assert_eq!(rv.split('.').count(), 2, "two sources: {rv}");
    for other in ["1", "17", "1.2.3", "0.0.0"] {
        for accept in [JSON, TABLE_ACCEPT] {
            let mut w = h.admin.watch(&format!("{COLLECTION}?watch=true&resourceVersion={other}"), accept);
            assert_eq!((w.status, w.content_type().starts_with("application/json")), (200, true), "{other}");
            let e = w.event(EVENT);
            assert_eq!(
                e,
                json!({ "type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 410, "reason": "Expired",
                    "message": format!("too old resource version: {other} ({rv})"),
                }}),
                "{other}"
            );
            w.expect_end(EVENT);
        }
        let r = h.admin.get_accept(&format!("{COLLECTION}?resourceVersion={other}"), JSON);
        assert_eq!((r.status, rv_of(&r.json())), (200, rv.clone()), "{other}: {}", r.text());
        let r = h.admin.get_accept(&format!("{COLLECTION}?resourceVersion={other}&resourceVersionMatch=Exact"), JSON);
        r.expect_status(410, "Expired");
    }
    // Not numbers: still a 400, with no stream.
    for bad in ["abc", "1.", "1..2", "x.1"] {
        h.admin
            .get_accept(&format!("{COLLECTION}?watch=true&resourceVersion={bad}"), JSON)
            .expect_status(400, "BadRequest");
    }
}

/// Besides every 25 s (under the 30 s after which @kubernetes/client-node gives up on a quiet
/// watch; a unit test checks the schedule), kube sends a bookmark 2 s before a watch's deadline
/// so the client resumes from the newest version: with timeoutSeconds=4, one arrives at about
/// 2 s, at the current resourceVersion and unannotated, then the stream ends.
#[test]
fn a_bookmark_comes_just_before_the_watch_deadline() {
    let h = Harness::sample();
    let rv = rv_of(&h.list_json());
    let mut w = h.admin.watch(
        &format!("{COLLECTION}?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=4"),
        JSON,
    );
    assert_eq!(w.status, 200);
    let b = w.event(Duration::from_secs(6));
    assert_eq!(
        b,
        json!({ "type": "BOOKMARK", "object": {
            "apiVersion": GROUP_VERSION, "kind": "KlioBackup", "metadata": { "resourceVersion": rv },
        }})
    );
    w.expect_end(Duration::from_secs(6));
    // Without allowWatchBookmarks, none.
    let mut w = h.admin.watch(&format!("{COLLECTION}?watch=true&resourceVersion={rv}&timeoutSeconds=3"), JSON);
    w.expect_end(Duration::from_secs(6));
}
