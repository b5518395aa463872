//! The API service end to end, in-process: discovery, list/get as JSON and Table, errors as
//! Status, field selectors, authentication, tiers, Klio failures, catalog changes, OpenAPI.

use crate::common;

use std::time::Duration;

use common::kopia_fakes::{faulty, Fault};
use common::*;
use klio_api::upstream::kopia::proto::error_response::Code;
use serde_json::{json, Value};

const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
const AGGREGATED_V2BETA1: &str = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// The product document's `kubectl get kliobackups cluster-example.backup-20251113093137 -o yaml`,
/// plus what the service adds: the tier marker, the labels on every object, and the server.
fn product_example() -> Value {
    json!({
        "apiVersion": "kliocatalog.enterprisedb.io/v1alpha1",
        "kind": "KlioBackup",
        "metadata": {
            "name": "cluster-example.backup-20251113093137",
            // A name-based UUID (v5) of server, cluster and backup: Python's
            // uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_DNS, "kliocatalog.enterprisedb.io"),
            //            "klio/cluster-example/backup-20251113093137")
            "uid": "078a4a71-22b6-5d76-8e7e-8bb4f7431141",
            // When the backup completed (status.stoppedAt).
            "creationTimestamp": "2025-11-13T09:31:39Z",
            "labels": {
                "kliocatalog.enterprisedb.io/cluster": "cluster-example",
                "kliocatalog.enterprisedb.io/server": "klio",
                "kliocatalog.enterprisedb.io/tier1": "true"
            }
        },
        "spec": { "backupID": "backup-20251113093137", "clusterName": "cluster-example" },
        "status": {
            "annotations": {
                "klio.io/controlDataKopiaManifestID": "f055f78fb1db512b39e695465fa26ead",
                "klio.io/kopiaManifestID": "2272afec220f48d0fa0064f85b043ac4",
                "klio.io/tier1": "present"
            },
            "endLSN": 117440800,
            "endWAL": "000000010000000000000007",
            "server": "klio",
            "startLSN": 117440552,
            "startWAL": "000000010000000000000007",
            "startedAt": "2025-11-13T09:31:37Z",
            "stoppedAt": "2025-11-13T09:31:39Z"
        }
    })
}

/// Exactly the `-o yaml` shape of the product document plus the service's additions: the same
/// fields and nothing else (nothing empty sent), and `metadata.resourceVersion`, a non-empty
/// string (its value depends on the catalog's revision).
fn assert_product_example(obj: &Value) {
    let mut obj = obj.clone();
    let rv = obj["metadata"].as_object_mut().and_then(|m| m.remove("resourceVersion"));
    assert!(rv.as_ref().and_then(Value::as_str).is_some_and(|rv| !rv.is_empty()), "metadata.resourceVersion: {rv:?}");
    assert_eq!(obj, product_example());
}

// ---------------------------------------------------------------------------------------------
// Discovery

#[test]
fn apis_legacy_group_list() {
    let h = Harness::sample();
    for accept in [None, Some("application/json, */*"), Some("application/json")] {
        let r = match accept {
            Some(a) => h.admin.get_accept("/apis", a),
            None => h.admin.get("/apis"),
        };
        assert_eq!(r.status, 200, "{accept:?}: {}", r.text());
        assert_eq!(r.media_type(), "application/json");
        let gv = json!({ "groupVersion": GROUP_VERSION, "version": "v1alpha1" });
        assert_eq!(
            r.json(),
            json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": [
                { "name": GROUP, "versions": [gv.clone()], "preferredVersion": gv }
            ]}),
            "{accept:?}"
        );
    }
}

fn expected_aggregated(version: &str, verbs: &Value) -> Value {
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": [{
            "metadata": { "name": GROUP },
            "versions": [{ "version": "v1alpha1", "freshness": "Current", "resources": [{
                "resource": "kliobackups",
                "singularResource": "kliobackup",
                "scope": "Cluster",
                "responseKind": { "group": GROUP, "version": "v1alpha1", "kind": "KlioBackup" },
                "verbs": verbs,
                "shortNames": ["kb"],
                "categories": ["klio"]
            }]}]
        }]
    })
}

fn assert_read_only_verbs(verbs: &Value) {
    let verbs: Vec<&str> = verbs.as_array().expect("verbs").iter().map(|v| v.as_str().unwrap()).collect();
    assert!(verbs.contains(&"get") && verbs.contains(&"list"), "{verbs:?}");
    for write in ["create", "update", "patch", "delete", "deletecollection"] {
        assert!(!verbs.contains(&write), "read-only resource advertises {write}: {verbs:?}");
    }
}

#[test]
fn apis_aggregated_discovery_echoes_the_media_type() {
    let h = Harness::sample();
    let cases = [
        // kubectl 1.30-1.33
        (format!("{AGGREGATED_V2},{AGGREGATED_V2BETA1},application/json"), "v2", AGGREGATED_V2),
        // kubectl 1.27-1.29
        (format!("{AGGREGATED_V2BETA1},application/json"), "v2beta1", AGGREGATED_V2BETA1),
        (format!("{AGGREGATED_V2},application/json"), "v2", AGGREGATED_V2),
    ];
    for (accept, version, media) in cases {
        let r = h.admin.get_accept("/apis", &accept);
        assert_eq!(r.status, 200, "{accept}: {}", r.text());
        assert_eq!(r.content_type(), media, "the Content-Type must echo the aggregated media type ({accept})");
        let body = r.json();
        let verbs = &body["items"][0]["versions"][0]["resources"][0]["verbs"];
        assert_read_only_verbs(verbs);
        assert_eq!(body, expected_aggregated(version, verbs), "{accept}");
    }
}

#[test]
fn api_answers_and_stays_consistent_with_apis() {
    let h = Harness::sample();
    let r = h.admin.get_accept("/api", "application/json, */*");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["kind"], "APIVersions");
    // kubectl 1.30+ asks /api for the aggregated form too: it must not get a form it did not ask for.
    let r = h.admin.get_accept("/api", &format!("{AGGREGATED_V2},{AGGREGATED_V2BETA1},application/json"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.content_type(), AGGREGATED_V2);
    assert_eq!(r.json()["kind"], "APIGroupDiscoveryList");
    assert_eq!(r.json()["apiVersion"], "apidiscovery.k8s.io/v2");
}

#[test]
fn group_version_resource_list() {
    let h = Harness::sample();
    let r = h.admin.get_accept("/apis/kliocatalog.enterprisedb.io/v1alpha1", "application/json, */*");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.media_type(), "application/json");
    let body = r.json();
    assert_eq!(body["kind"], "APIResourceList");
    assert_eq!(body["apiVersion"], "v1");
    assert_eq!(body["groupVersion"], GROUP_VERSION);
    let resources = body["resources"].as_array().expect("resources");
    assert_eq!(resources.len(), 1, "{body}");
    let res = &resources[0];
    assert_eq!(res["name"], "kliobackups");
    assert_eq!(res["singularName"], "kliobackup");
    assert_eq!(res["namespaced"], false);
    assert_eq!(res["kind"], "KlioBackup");
    assert_eq!(res["shortNames"], json!(["kb"]));
    assert_eq!(res["categories"], json!(["klio"]));
    assert_read_only_verbs(&res["verbs"]);

    // The same verbs in both discovery forms.
    let agg = h.admin.get_accept("/apis", AGGREGATED_V2).json();
    assert_eq!(agg["items"][0]["versions"][0]["resources"][0]["verbs"], res["verbs"]);

    let r = h.admin.get("/apis/kliocatalog.enterprisedb.io");
    assert_eq!(r.status, 200, "{}", r.text());
    let g = r.json();
    assert_eq!(g["kind"], "APIGroup");
    assert_eq!(g["name"], GROUP);
    assert_eq!(g["preferredVersion"]["groupVersion"], GROUP_VERSION);
}

#[test]
fn version_endpoint() {
    let h = Harness::sample();
    let r = h.admin.get_accept("/version", "application/json, */*");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.media_type(), "application/json");
    let v = r.json();
    assert_eq!(v["major"], "1");
    let minor = v["minor"].as_str().expect("minor is a string");
    assert!(minor.parse::<u32>().is_ok_and(|m| m >= 27), "minor {minor:?}");
    assert!(v["gitVersion"].as_str().is_some_and(|g| g.starts_with(&format!("v1.{minor}."))), "{v}");
    assert!(v["platform"].as_str().is_some_and(|p| p.contains('/')), "{v}");
}

// ---------------------------------------------------------------------------------------------
// List and get as JSON

#[test]
fn list_json_shape_and_product_example() {
    let h = Harness::sample();
    let r = h.admin.get_accept(&format!("{COLLECTION}?limit=500"), "application/json");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.media_type(), "application/json");
    assert!(r.header_all("warning").is_empty(), "no warning when everything is fine: {:?}", r.header_all("warning"));
    let list = r.json();
    assert_eq!(list["kind"], "KlioBackupList");
    assert_eq!(list["apiVersion"], GROUP_VERSION);
    let rv = list["metadata"]["resourceVersion"].as_str().expect("metadata.resourceVersion is a string");
    assert!(!rv.is_empty());
    assert!(list["metadata"].get("continue").is_none(), "one page, no continue token: {}", list["metadata"]);
    assert_eq!(Harness::names(&list), SAMPLE_TIER1, "items sorted by name");
    for i in list["items"].as_array().unwrap() {
        assert_eq!(i["kind"], "KlioBackup");
        assert_eq!(i["apiVersion"], GROUP_VERSION);
        assert_eq!(i["status"]["annotations"]["klio.io/tier1"], "present");
        assert!(i["status"]["annotations"].get("klio.io/tier2").is_none(), "no tier 2 configured: {i}");
        // Nothing changed since the first snapshot: every object carries its resourceVersion.
        assert_eq!(i["metadata"]["resourceVersion"], rv, "{i}");
        assert_eq!(i["status"]["server"], "klio", "{i}");
        assert_eq!(
            i["metadata"]["labels"],
            json!({
                "kliocatalog.enterprisedb.io/cluster": i["spec"]["clusterName"],
                "kliocatalog.enterprisedb.io/server": "klio",
                "kliocatalog.enterprisedb.io/tier1": "true"
            }),
            "the labels the service puts on every object"
        );
    }
    assert_product_example(item(&list, EXAMPLE));

    // A record with a tablespace.
    let analytics = item(&list, "pg-analytics.backup-20251121010000");
    assert_eq!(analytics["spec"], json!({ "backupID": "backup-20251121010000", "clusterName": "pg-analytics" }));
    // The tablespace's snapshot ID, as the repository holds it (the record does not carry it).
    let (cluster, backup) = ("pg-analytics", "backup-20251121010000");
    let tablespace_id = snapshot_id(&h.tier1_dir, "tablespace", cluster, backup, Some("analytics"));
    assert_eq!(
        analytics["status"]["tablespaces"],
        json!([{ "name": "analytics", "oid": "16385", "path": "/var/lib/postgresql/tablespaces/analytics",
                 "annotations": { "klio.io/kopiaManifestID": tablespace_id } }])
    );
    assert_eq!(
        analytics["status"]["annotations"],
        json!({
            "klio.io/kopiaManifestID": snapshot_id(&h.tier1_dir, "pgdata", cluster, backup, None),
            "klio.io/controlDataKopiaManifestID": snapshot_id(&h.tier1_dir, "controldata", cluster, backup, None),
            "klio.io/tier1": "present",
        })
    );
    assert_eq!(analytics["status"]["startedAt"], "2025-11-21T01:00:00Z");
    assert_eq!(analytics["status"]["stoppedAt"], "2025-11-21T01:13:32Z");
}

#[test]
fn get_one_as_json_matches_the_product_document() {
    let h = Harness::sample();
    for accept in ["application/json", "application/json, */*", "*/*"] {
        let r = h.admin.get_accept(&format!("{COLLECTION}/{EXAMPLE}"), accept);
        assert_eq!(r.status, 200, "{accept}: {}", r.text());
        assert_eq!(r.media_type(), "application/json", "{accept}");
        assert_product_example(&r.json());
    }
    // The object a get returns is the one in the list.
    let list = h.list_json();
    let got = h.admin.get(&format!("{COLLECTION}/{EXAMPLE}")).json();
    assert_eq!(&got, item(&list, EXAMPLE));
}

// ---------------------------------------------------------------------------------------------
// Tables

fn assert_columns(table: &Value) -> usize {
    let cols = table["columnDefinitions"].as_array().expect("columnDefinitions");
    let names: Vec<&str> = cols.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        &names[..4],
        ["Name", "Cluster Name", "Started At", "Stopped At"],
        "the product document's columns first"
    );
    for c in &cols[..4] {
        assert_eq!(c["priority"], 0, "{c}");
        assert_eq!(c["type"], "string", "{c}");
    }
    assert_eq!(cols[0]["format"], "name");
    assert!(cols.len() > 4, "-o wide shows more: {names:?}");
    for c in &cols[4..] {
        assert_eq!(c["priority"], 1, "wide-only column: {c}");
    }
    for c in cols {
        assert!(c["description"].as_str().is_some_and(|d| !d.is_empty()), "{c}");
        assert!(c["format"].is_string(), "{c}");
    }
    cols.len()
}

fn row<'a>(table: &'a Value, name: &str) -> &'a Value {
    table["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["cells"][0] == name)
        .unwrap_or_else(|| panic!("no row {name}: {table}"))
}

#[test]
fn list_as_table_like_kubectl_get() {
    let h = Harness::sample();
    let r = h.admin.get_accept(&format!("{COLLECTION}?limit=500"), TABLE_ACCEPT);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.content_type(), TABLE_CONTENT_TYPE);
    let t = r.json();
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(t["metadata"]["resourceVersion"], h.list_json()["metadata"]["resourceVersion"]);
    let ncols = assert_columns(&t);
    assert_eq!(Harness::names(&t), SAMPLE_TIER1, "rows sorted by name");
    for row in t["rows"].as_array().unwrap() {
        assert_eq!(row["cells"].as_array().unwrap().len(), ncols, "one cell per column: {row}");
        // includeObject defaults to Metadata.
        let obj = &row["object"];
        assert_eq!(obj["kind"], "PartialObjectMetadata", "{row}");
        assert_eq!(obj["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(obj["metadata"]["name"], row["cells"][0]);
        assert!(obj.get("spec").is_none() && obj.get("status").is_none(), "metadata only: {obj}");
    }
    let example = row(&t, EXAMPLE);
    assert_eq!(
        example["cells"].as_array().unwrap()[..4],
        [
            json!(EXAMPLE),
            json!("cluster-example"),
            json!("2025-11-13 09:31:37 +0000 UTC"),
            json!("2025-11-13 09:31:39 +0000 UTC")
        ],
        "the product document's row"
    );
    let orders = row(&t, "pg-orders.backup-20251122003000");
    assert_eq!(orders["cells"][2], "2025-11-22 00:30:00 +0000 UTC");
    assert_eq!(orders["cells"][3], "2025-11-22 00:30:41 +0000 UTC");
    // -o wide ends with AGE, a `date` column printed as kube-apiserver prints ages (days
    // between 8 days and 2 years), counted from creationTimestamp to now.
    let cols = t["columnDefinitions"].as_array().unwrap();
    assert_eq!((cols[ncols - 1]["name"].as_str(), cols[ncols - 1]["type"].as_str()), (Some("Age"), Some("date")));
    let stopped = 1_763_771_441; // 2025-11-22T00:30:41Z
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let days = (now - stopped) / 86_400;
    let age = orders["cells"][ncols - 1].as_str().unwrap();
    assert!(age == format!("{days}d") || age == format!("{}d", days + 1), "AGE {age}, {days} days");
}

#[test]
fn table_include_object() {
    let h = Harness::sample();
    let list = h.list_json();

    let t = h.admin.get_accept(&format!("{COLLECTION}?includeObject=Object"), TABLE_ACCEPT);
    assert_eq!(t.status, 200, "{}", t.text());
    let t = t.json();
    assert_eq!(Harness::names(&t), SAMPLE_TIER1);
    for r in t["rows"].as_array().unwrap() {
        let name = r["cells"][0].as_str().unwrap();
        assert_eq!(&r["object"], item(&list, name), "includeObject=Object carries the full KlioBackup");
    }
    assert_product_example(&row(&t, EXAMPLE)["object"]);

    let t = h.admin.get_accept(&format!("{COLLECTION}?includeObject=Metadata"), TABLE_ACCEPT).json();
    assert_eq!(row(&t, EXAMPLE)["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(row(&t, EXAMPLE)["object"]["metadata"], item(&list, EXAMPLE)["metadata"]);

    let t = h.admin.get_accept(&format!("{COLLECTION}?includeObject=None"), TABLE_ACCEPT).json();
    assert_eq!(t["rows"].as_array().unwrap().len(), SAMPLE_TIER1.len());
    for r in t["rows"].as_array().unwrap() {
        assert!(r.get("object").is_none(), "includeObject=None: no object: {r}");
    }

    let bad = h.admin.get_accept(&format!("{COLLECTION}?includeObject=Everything"), TABLE_ACCEPT);
    let s = bad.expect_status(400, "BadRequest");
    assert!(s["message"].as_str().unwrap().contains("includeObject"), "{s}");
}

/// An empty `includeObject` is kube-apiserver's default, Metadata (its `ValidateTableOptions`
/// accepts "" and `asTable` reads it as Metadata), for lists and gets alike; of repeated values
/// the first counts, even when empty.
#[test]
fn an_empty_include_object_is_the_default() {
    let h = Harness::sample();
    let list = h.list_json();
    let metadata_of = |name: &str| json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": item(&list, name)["metadata"]});
    for query in ["includeObject=", "includeObject=&includeObject=Object"] {
        let r = h.admin.get_accept(&format!("{COLLECTION}?{query}"), TABLE_ACCEPT);
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        let t = r.json();
        assert_eq!(Harness::names(&t), SAMPLE_TIER1, "{query}");
        for r in t["rows"].as_array().unwrap() {
            assert_eq!(r["object"], metadata_of(r["cells"][0].as_str().unwrap()), "{query}");
        }

        let r = h.admin.get_accept(&format!("{COLLECTION}/{EXAMPLE}?{query}"), TABLE_ACCEPT);
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        let t = r.json();
        assert_eq!(t["rows"].as_array().map(Vec::len), Some(1), "{query}: {t}");
        assert_eq!(t["rows"][0]["object"], metadata_of(EXAMPLE), "{query}");

        // Without a Table it changes nothing.
        let r = h.admin.get_accept(&format!("{COLLECTION}/{EXAMPLE}?{query}"), "application/json");
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        assert_eq!(&r.json(), item(&list, EXAMPLE), "{query}");
    }
}

#[test]
fn single_get_with_table_accept_is_a_one_row_table() {
    let h = Harness::sample();
    let r = h.admin.get_accept(&format!("{COLLECTION}/{EXAMPLE}"), TABLE_ACCEPT);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.content_type(), TABLE_CONTENT_TYPE);
    let t = r.json();
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    assert_columns(&t);
    assert_eq!(Harness::names(&t), [EXAMPLE]);
    assert_eq!(t["rows"][0]["cells"][1], "cluster-example");
    assert_eq!(t["rows"][0]["cells"][2], "2025-11-13 09:31:37 +0000 UTC");
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(t["rows"][0]["object"]["metadata"]["name"], EXAMPLE);
}

#[test]
fn table_v1beta1_when_only_that_is_accepted() {
    let h = Harness::sample();
    let r = h.admin.get_accept(COLLECTION, "application/json;as=Table;v=v1beta1;g=meta.k8s.io");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.content_type(), "application/json;as=Table;v=v1beta1;g=meta.k8s.io");
    let t = r.json();
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1beta1");
    assert_eq!(Harness::names(&t), SAMPLE_TIER1);
}

// ---------------------------------------------------------------------------------------------
// Errors

#[test]
fn unknown_name_is_a_kube_not_found() {
    let h = Harness::sample();
    // kubectl asks for a Table even for a single get; the error is a Status all the same.
    for accept in ["application/json", TABLE_ACCEPT] {
        let r = h.admin.get_accept(&format!("{COLLECTION}/nope.x"), accept);
        let s = r.expect_status(404, "NotFound");
        assert_eq!(s["message"], "kliobackups.kliocatalog.enterprisedb.io \"nope.x\" not found");
        assert_eq!(s["details"]["name"], "nope.x");
        assert_eq!(s["details"]["group"], GROUP);
        assert_eq!(s["details"]["kind"], "kliobackups");
    }
    // A name of the right shape whose cluster exists.
    let r = h.admin.get(&format!("{COLLECTION}/cluster-example.backup-19700101000000"));
    r.expect_status(404, "NotFound");
}

/// The refusal of a write reaches the client even when its body is not small: the server reads
/// the body it does not use before answering, so closing never resets the connection under the
/// answer.
#[test]
fn a_refused_write_with_a_large_body_still_gets_its_status() {
    let h = Harness::sample();
    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(200_000));
    for path in [COLLECTION.to_string(), format!("{COLLECTION}/{EXAMPLE}"), "/version".to_string()] {
        for _ in 0..3 {
            let r = h.admin.request(
                "PUT",
                &path,
                &[("Accept", "application/json"), ("Content-Type", "application/json")],
                Some(&body),
            );
            r.expect_status(405, "MethodNotAllowed");
        }
    }
}

#[test]
fn write_methods_are_method_not_allowed() {
    let h = Harness::sample();
    let body = product_example().to_string();
    let item_path = format!("{COLLECTION}/{EXAMPLE}");
    let cases: [(&str, &str, Option<&str>); 8] = [
        ("POST", COLLECTION, Some(&body)),
        ("PUT", COLLECTION, Some(&body)),
        ("PATCH", COLLECTION, Some("{}")),
        ("DELETE", COLLECTION, Some("")),
        ("POST", &item_path, Some(&body)),
        ("PUT", &item_path, Some(&body)),
        ("PATCH", &item_path, Some("{\"metadata\":{\"labels\":{\"a\":\"b\"}}}")),
        ("DELETE", &item_path, Some("{\"propagationPolicy\":\"Background\"}")),
    ];
    for (method, path, body) in cases {
        let content_type = if method == "PATCH" { "application/merge-patch+json" } else { "application/json" };
        let r = h.admin.request(method, path, &[("Accept", "application/json"), ("Content-Type", content_type)], body);
        let s = r.expect_status(405, "MethodNotAllowed");
        assert_eq!(s["message"], "the server does not allow this method on the requested resource", "{method} {path}");
        assert_eq!(s["details"]["group"], GROUP, "{method} {path}: {s}");
        assert_eq!(s["details"]["kind"], "kliobackups", "{method} {path}: {s}");
        if path == item_path {
            assert_eq!(s["details"]["name"], EXAMPLE, "{method} {path}: {s}");
        }
    }
    // Methods no route knows, and paths that only have GET: a Status all the same.
    for (method, path) in [("POST", "/apis"), ("DELETE", "/version"), ("PUT", "/openapi/v3"), ("OPTIONS", COLLECTION)] {
        let r = h.admin.request(
            method,
            path,
            &[("Accept", "application/json")],
            if method == "OPTIONS" { None } else { Some("{}") },
        );
        r.expect_status(405, "MethodNotAllowed");
    }
    // Nothing changed.
    assert_eq!(Harness::names(&h.list_json()), SAMPLE_TIER1);
}

#[test]
fn protobuf_only_is_not_acceptable() {
    let h = Harness::sample();
    for path in [COLLECTION.to_string(), format!("{COLLECTION}/{EXAMPLE}")] {
        let r = h.admin.get_accept(&path, "application/vnd.kubernetes.protobuf");
        let s = r.expect_status(406, "NotAcceptable");
        assert!(s["message"].as_str().unwrap().contains("application/json"), "names what is acceptable: {s}");
        // With a JSON fallback, JSON it is.
        let r = h.admin.get_accept(&path, "application/vnd.kubernetes.protobuf, application/json");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.media_type(), "application/json");
    }
}

#[test]
fn discovery_refuses_what_it_cannot_produce() {
    let h = Harness::sample();
    for path in ["/apis", "/apis/kliocatalog.enterprisedb.io/v1alpha1"] {
        let r = h.admin.get_accept(path, "application/vnd.kubernetes.protobuf");
        r.expect_status(406, "NotAcceptable");
    }
}

#[test]
fn bad_names_are_bad_requests() {
    let h = Harness::sample();
    for name in ["..", "a%20b", "a%2Fb", "%C3%A4", &"x".repeat(254)] {
        let r = h.admin.get(&format!("{COLLECTION}/{name}"));
        r.expect_status(400, "BadRequest");
    }
}

#[test]
fn bad_queries_are_bad_requests() {
    let h = Harness::sample();
    // (`watch=maybe` is a watch: apimachinery reads any value but 0 and false as true.)
    for query in ["limit=-1", "limit=x", "timeoutSeconds=-5"] {
        let r = h.admin.get_accept(&format!("{COLLECTION}?{query}"), TABLE_ACCEPT);
        let s = r.expect_status(400, "BadRequest");
        let key = query.split('=').next().unwrap();
        assert!(s["message"].as_str().unwrap().contains(key), "{query}: the message names the parameter: {s}");
    }
    // Combinations kube's ListOptions validation refuses are 422 Invalid (see
    // list_options_are_invalid_as_kube_apiserver_says).
    let r = h.admin.get_accept(&format!("{COLLECTION}?resourceVersionMatch=Exact"), TABLE_ACCEPT);
    r.expect_status(422, "Invalid");
    let r = h.admin.get_accept(&format!("{COLLECTION}?fieldSelector=status.phase%3Dx&limit=500"), TABLE_ACCEPT);
    let s = r.expect_status(400, "BadRequest");
    assert_eq!(s["message"], "field label not supported: status.phase");
    // Fine values still work.
    for query in ["limit=0", "limit=500", "timeoutSeconds=30", "pretty=true", "resourceVersion=0", "unknownParameter=1"]
    {
        let r = h.admin.get(&format!("{COLLECTION}?{query}"));
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        assert_eq!(Harness::names(&r.json()), SAMPLE_TIER1, "{query}");
    }
}

/// `kubectl get --chunk-size=2`: follow `metadata.continue` until it is absent. A server may
/// ignore `limit` (one whole page) or page; either way every backup comes exactly once, in order.
#[test]
fn chunked_listing_like_kubectl_chunk_size() {
    let h = Harness::sample();
    for accept in ["application/json", TABLE_ACCEPT] {
        let mut names = vec![];
        let mut token: Option<String> = None;
        for page in 0.. {
            assert!(page <= SAMPLE_TIER1.len(), "paging does not end");
            let path = match &token {
                Some(t) => format!("{COLLECTION}?continue={t}&limit=2"),
                None => format!("{COLLECTION}?limit=2"),
            };
            let r = h.admin.get_accept(&path, accept);
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            let body = r.json();
            let page_names = Harness::names(&body);
            token = body["metadata"]["continue"].as_str().filter(|t| !t.is_empty()).map(str::to_string);
            if token.is_some() {
                assert!(page_names.len() <= 2, "a page holds at most limit items: {page_names:?}");
            }
            names.extend(page_names);
            if token.is_none() {
                break;
            }
        }
        assert_eq!(names, SAMPLE_TIER1, "{accept}");
    }
}

/// kubectl sends `labelSelector` for `get -l`. Every KlioBackup carries the service's labels
/// (cluster, server, tier1/tier2 = "true") and no other: kube semantics on those, so `a=b` and `a`
/// match nothing for a label no object has, `a!=b` and `!a` match everything.
#[test]
fn label_selectors_follow_kube_semantics() {
    let h = Harness::sample();
    let all = SAMPLE_TIER1.to_vec();
    for (selector, expected) in [
        ("some%3Dlabel", vec![]),
        ("some", vec![]),
        ("some!%3Dlabel", all.clone()),
        ("!some", all.clone()),
        ("env+in+(a,b)", vec![]),
        ("env+notin+(a,b)", all.clone()),
        ("kliocatalog.enterprisedb.io/cluster%3Dpg-orders", vec!["pg-orders.backup-20251122003000"]),
        ("kliocatalog.enterprisedb.io/server%3Dklio,kliocatalog.enterprisedb.io/tier1", all.clone()),
        ("kliocatalog.enterprisedb.io/tier2", vec![]),
    ] {
        for accept in [TABLE_ACCEPT, "application/json"] {
            let r = h.admin.get_accept(&format!("{COLLECTION}?labelSelector={selector}&limit=500"), accept);
            assert_eq!(r.status, 200, "{selector}: {}", r.text());
            assert_eq!(Harness::names(&r.json()), expected, "{selector} ({accept})");
        }
    }
    // `kubectl get --show-labels` reads the labels from the Table rows' objects.
    let t = h.admin.get_accept(&format!("{COLLECTION}?labelSelector=kliocatalog.enterprisedb.io/tier1"), TABLE_ACCEPT);
    let t = t.json();
    assert_eq!(
        row(&t, EXAMPLE)["object"]["metadata"]["labels"]["kliocatalog.enterprisedb.io/cluster"],
        "cluster-example"
    );
    for bad in ["%3D%3D%3D", "a+in+b", "a+in+(b", "a%3Eb", "kliocatalog.enterprisedb.io/cluster%3D-x-"] {
        let r = h.admin.get_accept(&format!("{COLLECTION}?labelSelector={bad}"), TABLE_ACCEPT);
        r.expect_status(400, "BadRequest");
    }
}

/// What poem-openapi refuses (a parameter without the document's type) is a kube Status, in
/// kube's order: the media type is negotiated first (406), a get's name checked first (400 for
/// the name), and a type error comes before the ListOptions validation (422).
#[test]
fn parameters_of_the_wrong_type_are_kube_statuses_in_kubes_order() {
    let h = Harness::sample();
    let r = h.admin.get_accept(&format!("{COLLECTION}?limit=x"), "application/vnd.kubernetes.protobuf");
    r.expect_status(406, "NotAcceptable");
    let r = h.admin.get_accept(&format!("{COLLECTION}/{EXAMPLE}?includeObject=All"), "text/html");
    r.expect_status(406, "NotAcceptable");
    let s = h.admin.get(&format!("{COLLECTION}/..?includeObject=All")).expect_status(400, "BadRequest");
    assert!(s["message"].as_str().unwrap().contains("invalid resource name"), "{s}");
    for (path, key) in [
        (format!("{COLLECTION}?limit=x&resourceVersionMatch=Exact"), "limit"),
        (format!("{COLLECTION}?watch=1&timeoutSeconds=soon"), "timeoutSeconds"),
        (format!("{COLLECTION}/{EXAMPLE}?includeObject=All"), "includeObject"),
        (format!("{COLLECTION}?includeObject=Object&limit=1.5"), "limit"),
    ] {
        let r = h.admin.get_accept(&path, "application/json");
        assert_eq!(r.media_type(), "application/json", "{path}: a Status, never poem's plain text");
        let s = r.expect_status(400, "BadRequest");
        assert!(s["message"].as_str().unwrap().starts_with(&format!("{key}: Invalid value: ")), "{path}: {s}");
    }
    // The first value is the one read, as the guard reads it.
    let r = h.admin.get(&format!("{COLLECTION}?limit=1&limit=x"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(Harness::names(&r.json()).len(), 1);
}

#[test]
fn unknown_paths_are_status_404() {
    let h = Harness::sample();
    for path in [
        "/nope",
        "/apis/other.example.com/v1",
        "/apis/kliocatalog.enterprisedb.io/v1",
        "/apis/kliocatalog.enterprisedb.io/v1alpha1/otherthings",
        "/apis/kliocatalog.enterprisedb.io/v1alpha1/namespaces/default/kliobackups",
        "/apis/kliocatalog.enterprisedb.io/v1alpha1/kliobackups/a/b",
    ] {
        let r = h.admin.get(path);
        let s = r.expect_status(404, "NotFound");
        assert!(s["message"].as_str().unwrap().contains("could not find"), "{path}: {s}");
    }
}

#[test]
fn watch_matches_what_discovery_advertises() {
    let h = Harness::sample();
    let verbs = h.admin.get("/apis/kliocatalog.enterprisedb.io/v1alpha1").json()["resources"][0]["verbs"].clone();
    let rv = h.list_json()["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let path = format!("{COLLECTION}?resourceVersion={rv}&watch=true");
    if verbs.as_array().unwrap().iter().any(|v| v == "watch") {
        // Advertised: the stream must start (headers arrive at once) with the list's Content-Type.
        let r = h
            .admin
            .try_request("GET", &format!("{path}&timeoutSeconds=1"), &[("Accept", "application/json")], None)
            .expect("watch");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.media_type(), "application/json");
    } else {
        // Not advertised: refused at once with a Status, never a hanging request or a plain list.
        for accept in [TABLE_ACCEPT, "application/json"] {
            let r = h.admin.get_accept(&path, accept);
            r.expect_status(405, "MethodNotAllowed");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Field selectors

#[test]
fn field_selectors_filter() {
    let h = Harness::sample();
    let names = |selector: &str, accept: &str| -> Vec<String> {
        let r = h.admin.get_accept(&format!("{COLLECTION}?fieldSelector={selector}&limit=500"), accept);
        assert_eq!(r.status, 200, "{selector}: {}", r.text());
        Harness::names(&r.json())
    };
    for accept in ["application/json", TABLE_ACCEPT] {
        assert_eq!(
            names("spec.clusterName%3Dpg-analytics", accept),
            ["pg-analytics.backup-20251120010000", "pg-analytics.backup-20251121010000"]
        );
        assert_eq!(names("spec.clusterName%3D%3Dpg-orders", accept), ["pg-orders.backup-20251122003000"]);
        assert_eq!(names(&format!("metadata.name%3D{EXAMPLE}"), accept), [EXAMPLE]);
        assert_eq!(names("spec.backupID%3Dbackup-20251114093000", accept), ["cluster-example.backup-20251114093000"]);
        assert_eq!(
            names("spec.clusterName!%3Dcluster-example", accept),
            [
                "pg-analytics.backup-20251120010000",
                "pg-analytics.backup-20251121010000",
                "pg-orders.backup-20251122003000"
            ]
        );
        assert_eq!(
            names("spec.clusterName%3Dpg-analytics,spec.backupID!%3Dbackup-20251120010000", accept),
            ["pg-analytics.backup-20251121010000"]
        );
        assert!(names("spec.clusterName%3Dno-such-cluster", accept).is_empty());
        assert_eq!(names("", accept), SAMPLE_TIER1);
    }
    let r = h.admin.get(&format!("{COLLECTION}?fieldSelector=spec.clusterName"));
    r.expect_status(400, "BadRequest");
}

// ---------------------------------------------------------------------------------------------
// Authentication

#[test]
fn no_client_certificate_is_unauthorized_but_probes_answer() {
    let h = Harness::sample();
    for path in ["/apis", "/api", "/version", "/openapi/v3", COLLECTION, &format!("{COLLECTION}/{EXAMPLE}")] {
        let r = h.anonymous.get_accept(path, "application/json");
        let s = r.expect_status(401, "Unauthorized");
        assert!(s.get("details").is_none_or(|d| d.get("name").is_none()), "nothing about the object leaks: {s}");
    }
    let r = h.anonymous.get_accept(COLLECTION, TABLE_ACCEPT);
    r.expect_status(401, "Unauthorized");
    let r = h.anonymous.request("DELETE", &format!("{COLLECTION}/{EXAMPLE}"), &[], Some(""));
    r.expect_status(401, "Unauthorized");
    for probe in ["/healthz", "/livez", "/readyz"] {
        let r = h.anonymous.get(probe);
        assert_eq!(r.status, 200, "{probe}: {}", r.text());
    }
    // The same paths work with the admin certificate.
    assert_eq!(h.admin.get("/apis").status, 200);
    assert_eq!(h.admin.get(COLLECTION).status, 200);
}

#[test]
fn client_certificate_from_an_unknown_ca_fails_the_handshake() {
    let h = Harness::sample();
    let other_ca = klio_api::pki::KeyPair::new_ca("someone-else").unwrap();
    let intruder = other_ca.issue("demo-admin", &["system:masters"], &[], klio_api::pki::Usage::Client).unwrap();
    let client = h.client_with(&intruder.cert_pem(), &intruder.key_pem());
    for path in ["/apis", COLLECTION, "/healthz"] {
        let result = client.try_request("GET", path, &[], None);
        assert!(
            result.is_err(),
            "{path}: a certificate from an unknown CA must not get an answer, got {:?}",
            result.map(|r| (r.status, r.text()))
        );
    }
    // The server is fine for everyone else.
    assert_eq!(h.admin.get(COLLECTION).status, 200);
}

// ---------------------------------------------------------------------------------------------
// Tiers

#[test]
fn a_backup_on_both_tiers_is_listed_once_with_both_markers() {
    let h = Harness::sample_two_tiers();
    let list = h.list_json();
    let mut expected: Vec<&str> = SAMPLE_TIER1.iter().copied().chain([SAMPLE_TIER2_ONLY]).collect();
    expected.sort();
    assert_eq!(Harness::names(&list), expected, "each backup once, sorted");
    let both = item(&list, SAMPLE_BOTH_TIERS);
    assert_eq!(both["status"]["annotations"]["klio.io/tier1"], "present");
    assert_eq!(both["status"]["annotations"]["klio.io/tier2"], "present");
    let only2 = item(&list, SAMPLE_TIER2_ONLY);
    assert_eq!(only2["status"]["annotations"]["klio.io/tier2"], "present");
    assert!(only2["status"]["annotations"].get("klio.io/tier1").is_none(), "{only2}");
    assert_eq!(only2["status"]["startedAt"], "2025-11-01T02:00:00Z");
    let only1 = item(&list, EXAMPLE);
    assert!(only1["status"]["annotations"].get("klio.io/tier2").is_none(), "{only1}");
    assert_product_example(only1);
    let r = h.admin.get_accept(COLLECTION, "application/json");
    assert!(r.header_all("warning").is_empty(), "{:?}", r.header_all("warning"));
    // A get finds tier-2-only backups too.
    let r = h.admin.get(&format!("{COLLECTION}/{SAMPLE_TIER2_ONLY}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["spec"]["backupID"], "backup-20251101020000");
}

fn assert_warning(r: &Resp, mentions: &str) {
    let warnings = r.header_all("warning");
    assert_eq!(warnings.len(), 1, "one Warning header: {warnings:?}");
    let w = &warnings[0];
    assert!(w.starts_with("299 - \"") && w.ends_with('"') && w.len() > 8, "Warning: 299 - \"<text>\", got {w:?}");
    // A quoted-string (as kube-apiserver writes it): a quote or backslash inside is escaped.
    let text = &w[7..w.len() - 1];
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => assert!(chars.next().is_some_and(|e| e == '"' || e == '\\'), "a stray escape: {w:?}"),
            '"' => panic!("an unescaped quote in the quoted text: {w:?}"),
            c => assert!(!c.is_control(), "a control character in the warning: {w:?}"),
        }
    }
    assert!(w.contains(mentions), "the warning names {mentions}: {w:?}");
}

#[test]
fn tier2_down_serves_tier1_with_a_warning() {
    let h = Harness::start(Options { tier2: Some(Up::Down), ..Default::default() });
    let tier2 = h.tier_url(1);
    for accept in ["application/json", TABLE_ACCEPT] {
        let r = h.admin.get_accept(COLLECTION, accept);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(Harness::names(&r.json()), SAMPLE_TIER1);
        assert_warning(&r, &tier2);
    }
    let r = h.admin.get(&format!("{COLLECTION}/{EXAMPLE}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_product_example(&r.json());
    assert_warning(&r, &tier2);
    assert_eq!(h.anonymous.get("/readyz").status, 200, "tier 1 is enough to be ready");
}

#[test]
fn tier2_going_down_and_coming_back() {
    let mut h = Harness::sample_two_tiers();
    let before = Harness::names(&h.list_json());
    assert!(before.iter().any(|n| n == SAMPLE_TIER2_ONLY));
    h.stop_upstream(1);
    // The next refresh finds it down: from then on every answer carries the warning.
    let r = poll("the warning about tier 2", WAIT, || {
        let r = h.admin.get_accept(COLLECTION, "application/json");
        assert_eq!(r.status, 200, "{}", r.text());
        (!r.header_all("warning").is_empty()).then_some(r)
    });
    assert_warning(&r, &h.tier_url(1));
    // Its backups as last read are still served: the catalog is stale, not gone.
    assert_eq!(Harness::names(&r.json()), before);
    // Back up: the warning goes away.
    h.start_upstream(1, &Up::Kopia);
    let r = poll("the warning to clear", WAIT, || {
        let r = h.admin.get_accept(COLLECTION, "application/json");
        r.header_all("warning").is_empty().then_some(r)
    });
    assert_eq!(r.status, 200);
    assert_eq!(Harness::names(&r.json()), before);
}

// ---------------------------------------------------------------------------------------------
// The Klio server misbehaving

#[test]
fn tier1_unreachable_is_service_unavailable_until_it_answers() {
    let mut h = Harness::start(Options { tier1: Up::Down, wait_ready: false, ..Default::default() });
    let tier1 = h.tier_url(0);
    let r = h.anonymous.get("/readyz");
    assert_eq!(r.status, 503, "not ready before the catalog is read: {}", r.text());
    let r = poll("/readyz to report the failed read", WAIT, || {
        let r = h.anonymous.get("/readyz?verbose");
        r.text().contains("[-]catalog-klio-tier1 failed").then_some(r)
    });
    assert_eq!(r.status, 503);
    assert!(r.text().contains("[-]catalog-snapshot failed"), "/readyz says why it is not ready: {}", r.text());
    assert!(!r.text().contains(&tier1), "the open probe does not reveal upstream addresses: {}", r.text());
    assert_eq!(h.anonymous.get("/healthz").status, 200, "alive all the same");
    assert_eq!(h.anonymous.get("/livez").status, 200);
    for (path, accept) in [
        (COLLECTION.to_string(), "application/json"),
        (COLLECTION.to_string(), TABLE_ACCEPT),
        (format!("{COLLECTION}/{EXAMPLE}"), "application/json"),
    ] {
        let r = h.admin.get_accept(&path, accept);
        let s = r.expect_status(503, "ServiceUnavailable");
        assert!(s["message"].as_str().unwrap().contains(&tier1), "names the Klio server: {s}");
    }
    // Discovery does not depend on the catalog.
    assert_eq!(h.admin.get("/apis").status, 200);
    assert_eq!(h.anonymous.get("/readyz").status, 503);

    h.start_upstream(0, &Up::Kopia);
    let list = poll("the list to succeed", WAIT, || {
        let r = h.admin.get_accept(COLLECTION, "application/json");
        (r.status == 200).then(|| r.json())
    });
    assert_eq!(Harness::names(&list), SAMPLE_TIER1);
    h.wait_ready();
}

#[test]
fn a_tier1_that_does_not_serve_its_catalog_is_bad_gateway() {
    for (up, detail) in [
        (
            faulty(Fault::Refuse(tonic::Code::PermissionDenied, "access denied for snapshot_reader@klio")),
            "access denied for snapshot_reader@klio",
        ),
        (faulty(Fault::FindError(Code::UnknownError, "the repository is locked")), "the repository is locked"),
        (faulty(Fault::WrongAnswer), "unexpected answer"),
    ] {
        let detail = Some(detail);
        let h = Harness::start(Options { tier1: up, wait_ready: false, ..Default::default() });
        let tier1 = h.tier_url(0);
        for accept in ["application/json", TABLE_ACCEPT] {
            let r = h.admin.get_accept(COLLECTION, accept);
            assert_eq!(r.status, 502, "{}", r.text());
            let s = r.json();
            assert_eq!(s["kind"], "Status");
            assert_eq!(s["apiVersion"], "v1");
            assert_eq!(s["status"], "Failure");
            assert_eq!(s["code"], 502);
            assert!(s["reason"].as_str().is_some_and(|r| !r.is_empty()), "{s}");
            let message = s["message"].as_str().unwrap();
            assert!(message.contains(&tier1), "the message names the Klio server: {message}");
            if let Some(detail) = detail {
                assert!(message.contains(detail), "the upstream's error is passed on: {message}");
            }
        }
        assert_eq!(h.anonymous.get("/readyz").status, 503, "not ready on a broken catalog");
    }
}

#[test]
fn undecodable_records_are_skipped_and_unknown_fields_ignored() {
    let h = Harness::start(Options {
        sample: false,
        prepare: Some(|t1, _t2| {
            let good = klio_api::demo::sample_record("pg-good", "backup-20251201000000", 1_764_547_200, 60, 5, false);
            put_record(t1, &good);
            // Fields Klio may add later, at the top and inside tablespaces.
            let mut future =
                klio_api::demo::sample_record("pg-future", "backup-20251202000000", 1_764_633_600, 60, 6, true);
            future["compression"] = json!({ "algorithm": "zstd", "level": 3 });
            future["someNewCounter"] = json!(42);
            future["tablespaces"][0]["sizeBytes"] = json!(123456);
            put_record(t1, &future);
            // Wrong types and missing required fields.
            put_raw(t1, "bad/name-is-a-number.json", br#"{"name": 5, "clusterName": "bad"}"#);
            let mut wrong = klio_api::demo::sample_record("bad", "backup-20251203000000", 1_764_720_000, 60, 7, false);
            wrong["startLsn"] = json!("0/7000028");
            put_raw(t1, "bad/lsn-is-a-string.json", wrong.to_string().as_bytes());
            let mut missing =
                klio_api::demo::sample_record("bad", "backup-20251204000000", 1_764_806_400, 60, 8, false);
            missing.as_object_mut().unwrap().remove("startedAt");
            put_raw(t1, "bad/no-start.json", missing.to_string().as_bytes());
            put_raw(t1, "bad/array.json", b"[1, 2, 3]");
            put_raw(t1, "bad/not-json.json", b"this is not JSON {");
        }),
        ..Default::default()
    });

    let list = h.list_json();
    assert_eq!(Harness::names(&list), ["pg-future.backup-20251202000000", "pg-good.backup-20251201000000"]);
    let f = item(&list, "pg-future.backup-20251202000000");
    assert_eq!(f["spec"], json!({ "backupID": "backup-20251202000000", "clusterName": "pg-future" }));
    assert_eq!(f["status"]["startedAt"], "2025-12-02T00:00:00Z");
    assert_eq!(f["status"]["tablespaces"][0]["name"], "analytics");
    assert!(f.to_string().find("someNewCounter").is_none() && f.to_string().find("sizeBytes").is_none(), "{f}");
    let r = h.admin.get(&format!("{COLLECTION}/bad.backup-20251203000000"));
    r.expect_status(404, "NotFound");
}

/// The catalog is read again in the background (every second in these tests): a change shows up
/// with the next refresh, under a new resourceVersion, and never partially.
#[test]
fn catalog_changes_show_up_after_the_next_refresh() {
    let h = Harness::sample();
    let first = h.list_json();
    let rv1 = rv_of(&first);
    // Nothing changed: same resourceVersion.
    assert_eq!(rv_of(&h.list_json()), rv1);

    let added = "pg-orders.backup-20251123003000";
    put_record(
        &h.tier1_dir,
        &klio_api::demo::sample_record("pg-orders", "backup-20251123003000", 1_763_857_800, 40, 0x12, false),
    );
    let second = h.list_until("the new record", |l| Harness::names(l).iter().any(|n| n == added));
    let rv2 = rv_of(&second);
    let mut expected: Vec<&str> = SAMPLE_TIER1.iter().copied().chain([added]).collect();
    expected.sort();
    assert_eq!(Harness::names(&second), expected, "the new record, and nothing else changed");
    assert_ne!(rv2, rv1, "a changed catalog has a new resourceVersion");
    let r = h.admin.get(&format!("{COLLECTION}/{added}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(rv_of(&r.json()), rv2, "a changed object carries the resourceVersion it changed in");
    // An unchanged object keeps the resourceVersion it last changed in.
    assert_eq!(rv_of(item(&second, EXAMPLE)), rv1);

    std::fs::remove_file(h.tier1_dir.join("cluster-example/backup-20251113093137.json")).unwrap();
    let third = h.list_until("the removed record to go", |l| !Harness::names(l).iter().any(|n| n == EXAMPLE));
    let rv3 = rv_of(&third);
    assert_eq!(Harness::names(&third).len(), SAMPLE_TIER1.len());
    assert_ne!(rv3, rv2);
    assert_ne!(rv3, rv1);
    h.admin.get(&format!("{COLLECTION}/{EXAMPLE}")).expect_status(404, "NotFound");
}

/// `rsync -a`, `cp -p` and `tar x` keep the source's modification times, of files and folders.
/// A record copied in that way changes the catalog, so the revision (and resourceVersion) must
/// change; so must a record rewritten in place with its old modification time.
#[test]
fn a_change_with_preserved_mtimes_changes_the_resource_version() {
    let h = Harness::sample();
    let rv1 = rv_of(&h.list_json());
    let cluster_dir = h.tier1_dir.join("cluster-example");
    let dir_mtime = std::fs::metadata(&cluster_dir).unwrap().modified().unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let file = put_record(
        &h.tier1_dir,
        &klio_api::demo::sample_record("cluster-example", "backup-20231114221320", 1_700_000_000, 5, 2, false),
    );
    std::fs::File::options().write(true).open(&file).unwrap().set_modified(old).unwrap();
    std::fs::File::open(&cluster_dir).unwrap().set_modified(dir_mtime).unwrap();

    let second = h.list_until("the copied record", |l| Harness::names(l).len() == SAMPLE_TIER1.len() + 1);
    let rv2 = rv_of(&second);
    assert_ne!(rv2, rv1, "a different list under the same resourceVersion");

    // Rewritten, same size, the old modification times again.
    let end = item(&second, "cluster-example.backup-20231114221320")["status"]["endLSN"].as_u64().unwrap();
    rewrite(&file, |r| r["endLsn"] = json!(end + 1));
    std::fs::File::options().write(true).open(&file).unwrap().set_modified(old).unwrap();
    std::fs::File::open(&cluster_dir).unwrap().set_modified(dir_mtime).unwrap();
    let name = "cluster-example.backup-20231114221320";
    let third = h.list_until("the rewritten record", |l| item(l, name)["status"]["endLSN"] == end + 1);
    assert_ne!(rv_of(&third), rv2, "a different object under the same resourceVersion");
}

// ---------------------------------------------------------------------------------------------
// OpenAPI

#[test]
fn openapi_v3_index_and_immutable_group_document() {
    let h = Harness::sample();
    let r = h.admin.get_accept("/openapi/v3", "application/json, */*");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.media_type(), "application/json");
    let index = r.json();
    let url = index["paths"]["apis/kliocatalog.enterprisedb.io/v1alpha1"]["serverRelativeURL"]
        .as_str()
        .unwrap_or_else(|| panic!("no serverRelativeURL: {index}"));
    assert!(url.starts_with("/openapi/v3/apis/kliocatalog.enterprisedb.io/v1alpha1?hash="), "{url}");
    assert!(url.len() > "/openapi/v3/apis/kliocatalog.enterprisedb.io/v1alpha1?hash=".len() + 8, "{url}");

    let r = h.admin.get_accept(&format!("{url}&timeout=32s"), "application/json");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.media_type(), "application/json");
    let etag = r.header("etag").expect("an ETag").to_string();
    let cache = r.header("cache-control").expect("Cache-Control");
    assert!(cache.contains("immutable"), "{cache}");
    let doc = r.json();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
    let schemas = doc["components"]["schemas"].as_object().expect("components.schemas");
    let gvk = json!({ "group": GROUP, "version": "v1alpha1", "kind": "KlioBackup" });
    assert!(
        schemas.values().any(|s| s["x-kubernetes-group-version-kind"].as_array().is_some_and(|a| a.contains(&gvk))),
        "a schema carries the KlioBackup group-version-kind"
    );
    // kubectl explain maps the resource through paths.
    let list_op = &doc["paths"]["/apis/kliocatalog.enterprisedb.io/v1alpha1/kliobackups"]["get"];
    assert_eq!(list_op["x-kubernetes-group-version-kind"], gvk, "{list_op}");
    // Every $ref resolves inside the document.
    let text = doc.to_string();
    for piece in text.split("\"$ref\":\"#/components/").skip(1) {
        let target = &piece[..piece.find('"').unwrap()];
        let (section, name) = target.split_once('/').unwrap();
        assert!(doc["components"][section].get(name).is_some(), "dangling $ref {target}");
    }

    // An outdated hash sends the client to the current document.
    let r = h.admin.get("/openapi/v3/apis/kliocatalog.enterprisedb.io/v1alpha1?hash=0123456789ABCDEF");
    assert!(matches!(r.status, 301 | 302 | 307 | 308), "{} {}", r.status, r.text());
    assert_eq!(r.header("location"), Some(url));

    let r = h.admin.request("GET", url, &[("If-None-Match", &etag), ("Accept", "application/json")], None);
    assert_eq!(r.status, 304, "{}", r.text());
    assert!(r.body.is_empty());
    let r =
        h.admin.request("GET", url, &[("If-None-Match", "\"something-else\""), ("Accept", "application/json")], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), doc);
}

#[test]
fn openapi_v2_protobuf_and_json() {
    let h = Harness::sample();
    let r = h.admin.get_accept("/openapi/v2?timeout=32s", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.content_type(), "application/com.github.proto-openapi.spec.v2.v1.0+protobuf");
    assert!(!r.body.is_empty());
    // gnostic Document: field 1 (swagger, a string) comes first and says "2.0".
    assert_eq!(&r.body[..5], b"\x0a\x032.0", "a gnostic protobuf document starting with swagger=\"2.0\"");
    let needle = b"KlioBackup";
    assert!(r.body.windows(needle.len()).any(|w| w == needle), "the protobuf holds the KlioBackup definition");

    let r = h.admin.get_accept("/openapi/v2", "application/json");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.media_type(), "application/json");
    let doc = r.json();
    assert_eq!(doc["swagger"], "2.0");
    let definitions = doc["definitions"].as_object().expect("definitions");
    let gvk = json!({ "group": GROUP, "version": "v1alpha1", "kind": "KlioBackup" });
    let (name, def) = definitions
        .iter()
        .find(|(_, d)| d["x-kubernetes-group-version-kind"].as_array().is_some_and(|a| a.contains(&gvk)))
        .expect("a definition with the KlioBackup group-version-kind");
    for field in ["apiVersion", "kind", "metadata", "spec", "status"] {
        assert!(def["properties"].get(field).is_some(), "{name}.{field}");
    }
    assert!(!doc.to_string().contains("#/components/"), "v2 references #/definitions/, not v3 components");
}

// ---------------------------------------------------------------------------------------------
// More catalog behaviour

#[test]
fn tier1_record_wins_when_both_tiers_hold_a_backup() {
    let h = Harness::start(Options {
        sample: false,
        tier2: Some(Up::Kopia),
        prepare: Some(|t1, t2| {
            let mut on1 = klio_api::demo::sample_record("pg-x", "backup-20251205000000", 1_764_892_800, 30, 9, false);
            on1["annotations"] = json!({ "klio.io/kopiaManifestID": "from-tier-1" });
            let mut on2 = on1.clone();
            on2["annotations"] = json!({ "klio.io/kopiaManifestID": "from-tier-2" });
            put_record(t1, &on1);
            put_record(t2, &on2);
        }),
        ..Default::default()
    });
    let list = h.list_json();
    assert_eq!(Harness::names(&list), ["pg-x.backup-20251205000000"]);
    // The record's own annotation wins; the other IDs come from each tier's repository.
    let id = |dir: &std::path::Path, kind| snapshot_id(dir, kind, "pg-x", "backup-20251205000000", None);
    assert_eq!(
        list["items"][0]["status"]["annotations"],
        json!({
            "klio.io/kopiaManifestID": "from-tier-1",
            "klio.io/controlDataKopiaManifestID": id(&h.tier1_dir, "controldata"),
            "klio.io/tier2KopiaManifestID": id(&h.tier2_dir, "pgdata"),
            "klio.io/tier2ControlDataKopiaManifestID": id(&h.tier2_dir, "controldata"),
            "klio.io/tier1": "present",
            "klio.io/tier2": "present",
        })
    );
    assert_ne!(id(&h.tier1_dir, "pgdata"), id(&h.tier2_dir, "pgdata"), "each tier's repository has IDs of its own");
}

#[test]
fn records_with_impossible_timestamps_are_skipped() {
    let h = Harness::start(Options {
        sample: false,
        prepare: Some(|t1, _t2| {
            put_record(t1, &klio_api::demo::sample_record("pg-ok", "backup-1", 0, 1, 1, false));
            let mut far = klio_api::demo::sample_record("pg-far", "backup-2", 1_764_892_800, 1, 2, false);
            far["stoppedAt"] = json!(i64::MAX);
            put_record(t1, &far);
        }),
        ..Default::default()
    });
    let list = h.list_json();
    assert_eq!(Harness::names(&list), ["pg-ok.backup-1"]);
    assert_eq!(list["items"][0]["status"]["startedAt"], "1970-01-01T00:00:00Z");
    let t = h.admin.get_accept(COLLECTION, TABLE_ACCEPT).json();
    assert_eq!(t["rows"][0]["cells"][2], "1970-01-01 00:00:00 +0000 UTC");
}

#[test]
fn a_silent_klio_server_is_bounded_by_the_client_timeout() {
    let h = Harness::start(Options {
        tier1: faulty(Fault::Silent),
        wait_ready: false,
        klio_timeout_seconds: 1,
        ..Default::default()
    });
    let started = std::time::Instant::now();
    let r = h.admin.get_accept(COLLECTION, "application/json");
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(8), "answered after {took:?}");
    assert!(r.status == 502 || r.status == 503 || r.status == 504, "{} {}", r.status, r.text());
    let s = r.json();
    assert_eq!(s["kind"], "Status");
    assert_eq!(s["code"], r.status);
    assert!(s["message"].as_str().unwrap().contains(&h.tier_url(0)), "{s}");
    assert_eq!(h.anonymous.get("/readyz").status, 503);
}

#[test]
fn concurrent_requests_agree() {
    let h = Harness::sample();
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let h = &h;
                scope.spawn(move || {
                    let accept = if i % 2 == 0 { "application/json" } else { TABLE_ACCEPT };
                    let r = h.admin.get_accept(COLLECTION, accept);
                    (r.status, r.json())
                })
            })
            .collect();
        handles.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let rv = answers[0].1["metadata"]["resourceVersion"].clone();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(Harness::names(body), SAMPLE_TIER1);
        assert_eq!(body["metadata"]["resourceVersion"], rv);
    }
}

#[test]
fn many_records_are_listed_sorted() {
    let h = Harness::start(Options { sample: false, wait_ready: false, ..Default::default() });
    let mut expected = vec![];
    for c in 0..12 {
        for b in 0..25 {
            let cluster = format!("pg-{:02}", (c * 7) % 12);
            let id = format!("backup-2025110{}{:06}", c % 10, (b * 37) % 100);
            let record = klio_api::demo::sample_record(&cluster, &id, 1_762_000_000 + b * 3600, 10, 1, false);
            put_record(&h.tier1_dir, &record);
            expected.push(format!("{cluster}.{id}"));
        }
    }
    expected.sort();
    expected.dedup();
    h.wait_ready();
    // The service may have read the catalog while the records were being written.
    let list = h.list_until("every record", |l| Harness::names(l).len() == expected.len());
    assert_eq!(Harness::names(&list), expected);
    let t = h.admin.get_accept(COLLECTION, TABLE_ACCEPT).json();
    assert_eq!(Harness::names(&t), expected);
}

#[test]
fn tier2_answering_nonsense_serves_tier1_with_a_warning() {
    let h = Harness::start(Options {
        tier2: Some(faulty(Fault::FindError(Code::UnknownError, "\"quoted\"\r\nnot a catalog"))),
        ..Default::default()
    });
    let r = h.admin.get_accept(COLLECTION, TABLE_ACCEPT);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(Harness::names(&r.json()), SAMPLE_TIER1);
    assert_warning(&r, &h.tier_url(1));
}

#[test]
fn only_valid_client_certificates_authenticate() {
    let h = Harness::sample();
    let ca = std::fs::read(h.pki.path("ca.crt")).unwrap();
    let ca_key = std::fs::read(h.pki.path("ca.key")).unwrap();
    let ca = klio_api::pki::KeyPair {
        cert: openssl::x509::X509::from_pem(&ca).unwrap(),
        key: openssl::pkey::PKey::private_key_from_pem(&ca_key).unwrap(),
    };
    let expired =
        ca.issue_with_validity("demo-admin", &["system:masters"], &[], klio_api::pki::Usage::Client, -10, 1).unwrap();
    let server_only =
        (std::fs::read(h.pki.path("api-server.crt")).unwrap(), std::fs::read(h.pki.path("api-server.key")).unwrap());
    for (what, cert, key) in
        [("expired", expired.cert_pem(), expired.key_pem()), ("serverAuth-only", server_only.0, server_only.1)]
    {
        let client = h.client_with(&cert, &key);
        // Either the handshake fails or the request is anonymous: never an answer with data.
        if let Ok(r) = client.try_request("GET", COLLECTION, &[("Accept", "application/json")], None) {
            assert_eq!(r.status, 401, "{what} certificate: {}", r.text());
            r.expect_status(401, "Unauthorized");
        }
    }
    // A fresh client certificate of the same CA, any name: authenticated.
    let fresh = ca.issue("someone", &[], &[], klio_api::pki::Usage::Client).unwrap();
    let r = h.client_with(&fresh.cert_pem(), &fresh.key_pem()).get(COLLECTION);
    assert_eq!(r.status, 200, "{}", r.text());
}

// ---------------------------------------------------------------------------------------------
// Issue 13: metadata-only responses, YAML, discovery edges

/// client-go's metadata client (k8s.io/client-go/metadata) sends these, protobuf first.
const METADATA_LIST: &str = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
const METADATA_ONE: &str = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";

/// kube's `asPartialObjectMetadata`: the object's whole metadata, typed PartialObjectMetadata.
fn partial(version: &str, object: &Value) -> Value {
    json!({ "kind": "PartialObjectMetadata", "apiVersion": format!("meta.k8s.io/{version}"), "metadata": object["metadata"] })
}

/// Lists as `PartialObjectMetadataList` (v1 and v1beta1) carry the list's metadata and each
/// item's, typed; kube sends them as `application/json`.
#[test]
fn metadata_only_lists_as_the_metadata_client_asks() {
    let h = Harness::sample();
    let full = h.list_json();
    let items = full["items"].as_array().unwrap();
    for (accept, version) in
        [(METADATA_LIST, "v1"), ("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1beta1", "v1beta1")]
    {
        let r = h.admin.get_accept(COLLECTION, accept);
        assert_eq!((r.status, r.content_type()), (200, "application/json"), "{}", r.text());
        assert_eq!(
            r.json(),
            json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": format!("meta.k8s.io/{version}"),
                "metadata": { "resourceVersion": rv_of(&full) },
                "items": items.iter().map(|i| partial(version, i)).collect::<Vec<_>>(),
            }),
            "{accept}"
        );
    }
    // Paging and selectors work as for objects: continue and remainingItemCount.
    let r = h.admin.get_accept(&format!("{COLLECTION}?limit=2"), METADATA_LIST);
    let page = r.json();
    assert_eq!(page["items"], json!(items[..2].iter().map(|i| partial("v1", i)).collect::<Vec<_>>()));
    assert!(page["metadata"]["continue"].is_string(), "{page}");
    assert_eq!(page["metadata"]["remainingItemCount"], items.len() - 2);
    let r = h.admin.get_accept(
        &format!("{COLLECTION}?labelSelector=kliocatalog.enterprisedb.io%2Fcluster%3Dpg-orders"),
        METADATA_LIST,
    );
    assert_eq!(Harness::names(&r.json()), ["pg-orders.backup-20251122003000"]);
}

#[test]
fn metadata_only_get_and_kubes_406_for_the_wrong_kind() {
    let h = Harness::sample();
    let object = h.admin.get(&format!("{COLLECTION}/{EXAMPLE}")).json();
    let r = h.admin.get_accept(&format!("{COLLECTION}/{EXAMPLE}"), METADATA_ONE);
    assert_eq!((r.status, r.content_type()), (200, "application/json"), "{}", r.text());
    assert_eq!(r.json(), partial("v1", &object));
    let r = h.admin.get_accept(
        &format!("{COLLECTION}/{EXAMPLE}"),
        "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1beta1",
    );
    assert_eq!(r.json(), partial("v1beta1", &object));
    // A list of one object, or one object of a list, is kube's 406 (after the read: an unknown
    // name is still a 404), even with a plain JSON fallback in the header.
    let r = h.admin.get_accept(&format!("{COLLECTION}/{EXAMPLE}"), METADATA_LIST);
    let s = r.expect_status(406, "NotAcceptable");
    assert_eq!(
        s["message"],
        "you requested PartialObjectMetadataList, but the requested object is not a list (*v1alpha1.KlioBackup)"
    );
    let s = h.admin.get_accept(COLLECTION, METADATA_ONE).expect_status(406, "NotAcceptable");
    assert_eq!(
        s["message"],
        "you requested PartialObjectMetadata, but the requested object is a list (*v1alpha1.KlioBackupList)"
    );
    h.admin.get_accept(&format!("{COLLECTION}/nonexistent"), METADATA_LIST).expect_status(404, "NotFound");
    // Other versions of the metadata kinds are not produced: 406 without a fallback.
    let r = h.admin.get_accept(COLLECTION, "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v2");
    r.expect_status(406, "NotAcceptable");
}

/// A metadata watch (the metadata informer's): every event's object, bookmarks included, is
/// PartialObjectMetadata; ERROR events stay Status.
#[test]
fn metadata_only_watch() {
    let h = Harness::sample();
    let full = h.list_json();
    let mut w =
        h.admin.watch(&format!("{COLLECTION}?watch=true&allowWatchBookmarks=true&timeoutSeconds=20"), METADATA_ONE);
    assert_eq!((w.status, w.content_type()), (200, "application/json"));
    for expected in full["items"].as_array().unwrap() {
        assert_eq!(w.event(Duration::from_secs(10)), json!({ "type": "ADDED", "object": partial("v1", expected) }));
    }
    assert_eq!(
        w.event(Duration::from_secs(10)),
        json!({ "type": "BOOKMARK", "object": {
            "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": { "resourceVersion": rv_of(&full), "annotations": { "k8s.io/initial-events-end": "true" } },
        }})
    );
    let older = rv_of(&full).parse::<u64>().unwrap() - 1;
    let mut w = h.admin.watch(&format!("{COLLECTION}?watch=true&resourceVersion={older}"), METADATA_ONE);
    let e = w.event(Duration::from_secs(10));
    assert_eq!(
        (e["type"].as_str(), e["object"]["kind"].as_str(), e["object"]["code"].as_u64()),
        (Some("ERROR"), Some("Status"), Some(410))
    );
}

/// `Accept: application/yaml`: kube-apiserver serves YAML for get and list, the keys sorted as
/// its JSON-to-YAML conversion leaves them, which is also what `kubectl -o yaml` prints.
#[test]
fn yaml_for_get_and_list() {
    let h = Harness::sample();
    let r = h.admin.get_accept(&format!("{COLLECTION}/{EXAMPLE}"), "application/yaml");
    assert_eq!((r.status, r.content_type()), (200, "application/yaml"), "{}", r.text());
    let object = h.admin.get(&format!("{COLLECTION}/{EXAMPLE}")).json();
    assert_eq!(serde_saphyr::from_str::<Value>(&r.text()).unwrap(), object);
    // Byte for byte kubectl's `-o yaml` of the same object (conformance/expected/get-yaml.out),
    // the resourceVersion normalized as kubectl.sh does; uid and creationTimestamp lines, where
    // present, are left out on both sides.
    let rv = rv_of(&object);
    let normalize = |text: &str| -> String {
        text.replace(&format!("resourceVersion: \"{rv}\""), "resourceVersion: \"<RV1>\"")
            .lines()
            .filter(|l| !l.trim_start().starts_with("uid:") && !l.trim_start().starts_with("creationTimestamp:"))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let kubectl =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conformance/expected/get-yaml.out")).unwrap();
    assert_eq!(normalize(&r.text()), normalize(&kubectl));

    let list = h.list_json();
    let r = h.admin.get_accept(COLLECTION, "application/yaml");
    assert_eq!((r.status, r.content_type()), (200, "application/yaml"));
    assert!(
        r.text().starts_with("apiVersion: kliocatalog.enterprisedb.io/v1alpha1\nitems:\n- apiVersion: "),
        "{}",
        r.text()
    );
    assert_eq!(serde_saphyr::from_str::<Value>(&r.text()).unwrap(), list);
    // Twice: the second comes from the rendered-list cache, the same bytes.
    assert_eq!(h.admin.get_accept(COLLECTION, "application/yaml").body, r.body);
    // The other representations in YAML too: a Table, metadata only.
    let table = h.admin.get_accept(COLLECTION, TABLE_ACCEPT).json();
    let r = h.admin.get_accept(COLLECTION, "application/yaml;as=Table;v=v1;g=meta.k8s.io");
    assert_eq!((r.status, r.content_type()), (200, "application/yaml"));
    assert_eq!(serde_saphyr::from_str::<Value>(&r.text()).unwrap(), table);
    let r = h.admin.get_accept(COLLECTION, "application/yaml;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io");
    assert_eq!(serde_saphyr::from_str::<Value>(&r.text()).unwrap()["kind"], "PartialObjectMetadataList");
}

/// Errors are negotiated as kube's `ErrorNegotiated` does: a Status in YAML for a YAML client
/// (authentication, not found, 406), JSON when the only acceptable types are conversions. A
/// YAML watch is kube's 406 (YAML has no stream framing), in YAML.
#[test]
fn yaml_errors_and_yaml_watches() {
    let h = Harness::sample();
    let yaml_status = |r: &Resp, code: u16, reason: &str| -> Value {
        assert_eq!((r.status, r.content_type()), (code, "application/yaml"), "{}", r.text());
        let s: Value = serde_saphyr::from_str(&r.text()).unwrap();
        assert_eq!((s["kind"].as_str(), s["apiVersion"].as_str()), (Some("Status"), Some("v1")), "{s}");
        assert_eq!((s["code"].as_u64(), s["reason"].as_str()), (Some(u64::from(code)), Some(reason)), "{s}");
        s
    };
    let r = h.admin.get_accept(&format!("{COLLECTION}/nonexistent"), "application/yaml");
    let s = yaml_status(&r, 404, "NotFound");
    assert_eq!(s, h.admin.get(&format!("{COLLECTION}/nonexistent")).json(), "the same Status as in JSON");
    let r = h.anonymous.get_accept(COLLECTION, "application/yaml");
    yaml_status(&r, 401, "Unauthorized");
    for watch in ["watch=true", "watch=true&resourceVersion=0&timeoutSeconds=5"] {
        let r = h.admin.get_accept(&format!("{COLLECTION}?{watch}"), "application/yaml");
        let s = yaml_status(&r, 406, "NotAcceptable");
        assert_eq!(s["message"], "only the following media types are accepted: application/json;stream=watch");
        let r = h.admin.get_accept(&format!("{COLLECTION}?{watch}"), "application/yaml;as=Table;v=v1;g=meta.k8s.io");
        r.expect_status(406, "NotAcceptable");
    }
    // Nothing acceptable: kube's 406 names what it serves, in JSON.
    let s = h.admin.get_accept(COLLECTION, "text/html").expect_status(406, "NotAcceptable");
    assert_eq!(s["message"], "only the following media types are accepted: application/json, application/yaml");
    let r = h.admin.get_accept(&format!("{COLLECTION}/nonexistent"), "application/yaml;as=Table;v=v1;g=meta.k8s.io");
    r.expect_status(404, "NotFound");
}

/// The demo's discovery edges, as kube-apiserver answers them: `/api/` and `/apis/` are `/api`
/// and `/apis`, `/api/v1` is the core group's APIResourceList (empty here).
#[test]
fn discovery_edges_answer_as_kube_apiserver_does() {
    let h = Harness::sample();
    for (path, same_as) in [("/api/", "/api"), ("/apis/", "/apis")] {
        let r = h.admin.get(path);
        assert_eq!((r.status, r.media_type()), (200, "application/json".to_string()), "{path}: {}", r.text());
        assert_eq!(r.json(), h.admin.get(same_as).json(), "{path}");
        let r = h.admin.get_accept(path, AGGREGATED_V2);
        assert_eq!(r.content_type(), AGGREGATED_V2, "{path}");
    }
    let r = h.admin.get("/api/v1");
    assert_eq!((r.status, r.media_type()), (200, "application/json".to_string()), "{}", r.text());
    assert_eq!(r.json(), json!({ "kind": "APIResourceList", "groupVersion": "v1", "resources": [] }));
    // Below them, still kube's 404.
    h.admin.get("/api/v1/pods").expect_status(404, "NotFound");
}
