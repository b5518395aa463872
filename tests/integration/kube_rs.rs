//! kube-rs (the Rust client) against the built binary: `klio-api demo --port 0` in a temporary
//! directory, reached through the kubeconfig the demo writes (admin client certificate).
//!
//! Discovery (legacy, aggregated, one-shot), `Api<DynamicObject>` list/get, the NotFound error,
//! label and field selectors, paging, and `kube::runtime::watcher` seeing a record that the test
//! adds to the catalog while it watches. Every wait is bounded.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{self, verbs, Discovery, Scope};
use kube::runtime::watcher;
use kube::{Client, Config, ResourceExt};

const BIN: &str = env!("CARGO_BIN_EXE_klio-api");
const GROUP: &str = "kliocatalog.enterprisedb.io";
const VERSION: &str = "v1alpha1";
const EXAMPLE: &str = "cluster-example.backup-20251113093137";
/// What the demo catalog holds (tier 1 and tier 2 merged), sorted by name.
const DEMO_NAMES: &[&str] = &[
    "cluster-example.backup-20251101020000",
    "cluster-example.backup-20251113093137",
    "cluster-example.backup-20251114093000",
    "pg-analytics.backup-20251120010000",
    "pg-analytics.backup-20251121010000",
    "pg-orders.backup-20251122003000",
];
/// The bound on every single client call.
const CALL: Duration = Duration::from_secs(20);

/// `klio-api demo` in a temporary directory; killed and reaped when dropped.
struct Demo {
    child: Child,
    dir: tempfile::TempDir,
    client: Client,
}

impl Demo {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("demo.log")).unwrap();
        let child = Command::new(BIN)
            .args(["demo", "--dir"])
            .arg(dir.path().join("demo"))
            .args(["--port", "0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning klio-api demo");
        let mut demo = Self { child, client: placeholder_client(), dir };
        demo.client = demo.connect().await;
        demo
    }

    fn demo_dir(&self) -> PathBuf {
        self.dir.path().join("demo")
    }

    /// Another client from the kubeconfig, with its own connection pool and TLS session cache.
    ///
    /// The watch tests need a second connection while (or after) a watch holds the first one.
    /// A `kube::Client` resumes its TLS session on a new connection, and the server refuses
    /// resumed handshakes (see `tls_session_resumption_on_a_second_connection`), so each phase
    /// gets a client of its own: these tests check the watch, that test checks the resumption.
    async fn fresh_client(&self) -> Client {
        try_client(&self.demo_dir().join("kubeconfig")).await.expect("a client from the demo's kubeconfig")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("demo.log")).unwrap_or_default()
    }

    /// Waits (bounded) for the kubeconfig and a ready service, then builds a client from it.
    async fn connect(&mut self) -> Client {
        let path = self.demo_dir().join("kubeconfig");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::from("kubeconfig not written");
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the demo exited ({status}) before it was ready:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "the demo was not ready within 30s: {last}\n{}", self.log());
            match try_client(&path).await {
                Ok(client) => {
                    let readyz = http::Request::get("/readyz").body(vec![]).unwrap();
                    match tokio::time::timeout(Duration::from_secs(2), client.request_text(readyz)).await {
                        Ok(Ok(body)) if body.trim() == "ok" => return client,
                        Ok(Ok(body)) => last = format!("/readyz answered {body:?}"),
                        Ok(Err(e)) => last = format!("/readyz: {e}"),
                        Err(_) => last = "/readyz timed out".into(),
                    }
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Adds a tier-1 record the way Klio writes one: `catalog/tier1/<cluster>/<id>.json`
    /// (written beside it first, then renamed, so the catalog server never reads half a file).
    fn add_tier1_record(&self, cluster: &str, id: &str, started: i64) -> String {
        let record = klio_api::demo::sample_record(cluster, id, started, 60, 0x55, false);
        let dir = self.demo_dir().join("catalog/tier1").join(cluster);
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(format!(".{id}.partial"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(&record).unwrap()).unwrap();
        std::fs::rename(&tmp, dir.join(format!("{id}.json"))).unwrap();
        format!("{cluster}.{id}")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- demo log ----\n{}", self.log());
        }
    }
}

/// A client that is never used (replaced in `Demo::start` before anything runs).
fn placeholder_client() -> Client {
    let config = Config::new("https://127.0.0.1:9".parse().unwrap());
    Client::try_from(config).expect("a placeholder client")
}

async fn try_client(path: &Path) -> Result<Client, String> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| format!("reading the kubeconfig: {e}"))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("loading the kubeconfig: {e}"))?;
    Client::try_from(config).map_err(|e| format!("building a client: {e}"))
}

/// Bounds one client call.
async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(CALL, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {CALL:?}"),
    }
}

fn gvk() -> GroupVersionKind {
    GroupVersionKind::gvk(GROUP, VERSION, "KlioBackup")
}

fn assert_kliobackups(ar: &ApiResource, caps: &discovery::ApiCapabilities, how: &str) {
    assert_eq!(ar.group, GROUP, "{how}: group");
    assert_eq!(ar.version, VERSION, "{how}: version");
    assert_eq!(ar.api_version, format!("{GROUP}/{VERSION}"), "{how}: apiVersion");
    assert_eq!(ar.kind, "KlioBackup", "{how}: kind");
    assert_eq!(ar.plural, "kliobackups", "{how}: plural");
    assert_eq!(caps.scope, Scope::Cluster, "{how}: scope");
    for verb in [verbs::GET, verbs::LIST, verbs::WATCH] {
        assert!(caps.supports_operation(verb), "{how}: verb {verb} missing: {:?}", caps.operations);
    }
    for verb in [verbs::CREATE, verbs::DELETE, verbs::PATCH, verbs::UPDATE] {
        assert!(!caps.supports_operation(verb), "{how}: a read-only resource announces {verb}: {:?}", caps.operations);
    }
}

async fn api(client: &Client) -> Api<DynamicObject> {
    let (ar, _) = bounded("pinned_kind", discovery::pinned_kind(client, &gvk())).await.expect("pinned_kind");
    Api::all_with(client.clone(), &ar)
}

fn names(objects: &[DynamicObject]) -> Vec<String> {
    objects.iter().map(|o| o.name_any()).collect()
}

#[tokio::test]
async fn discovery_resolves_kliobackups() {
    let demo = Demo::start().await;
    let client = &demo.client;

    // Full discovery of every group: /apis, each group version's APIResourceList, then /api (the
    // core group). The standalone demo serves no core group (`/api` is an empty APIVersions; behind
    // kube-apiserver `/api` comes from kube-apiserver), which kube-rs reports as EmptyApiGroup("").
    match bounded("Discovery::run", Discovery::new(client.clone()).run()).await {
        Ok(all) => {
            let (ar, caps) = all.resolve_gvk(&gvk()).expect("Discovery::run resolves KlioBackup");
            assert_kliobackups(&ar, &caps, "Discovery::run (all groups)");
        }
        Err(kube::Error::Discovery(kube::error::DiscoveryError::EmptyApiGroup(g))) if g.is_empty() => {
            eprintln!(
                "note: unfiltered Discovery::run fails on the demo's empty core group (/api), as expected standalone"
            )
        }
        Err(e) => panic!("Discovery::run (all groups): {e:?}"),
    }
    // Discovery of the non-core groups: /apis and the group version's APIResourceList.
    let full = bounded("Discovery::run", Discovery::new(client.clone()).exclude(&[""]).run())
        .await
        .expect("Discovery::run excluding the core group");
    assert!(full.has_group(GROUP), "groups: {:?}", full.groups().map(|g| g.name().to_string()).collect::<Vec<_>>());
    let (ar, caps) = full.resolve_gvk(&gvk()).expect("Discovery::run resolves KlioBackup");
    assert_kliobackups(&ar, &caps, "Discovery::run");
    let group = full.get(GROUP).unwrap();
    assert_eq!(group.preferred_version(), Some(VERSION));
    let (ar, caps) = group.recommended_kind("KlioBackup").expect("recommended_kind");
    assert_kliobackups(&ar, &caps, "ApiGroup::recommended_kind");

    // Aggregated discovery (apidiscovery.k8s.io/v2 on /apis and /api).
    let agg = bounded("Discovery::run_aggregated", Discovery::new(client.clone()).run_aggregated())
        .await
        .expect("Discovery::run_aggregated");
    let (ar, caps) = agg.resolve_gvk(&gvk()).expect("run_aggregated resolves KlioBackup");
    assert_kliobackups(&ar, &caps, "Discovery::run_aggregated");

    // One-shot helpers.
    let (ar, caps) = bounded("pinned_kind", discovery::pinned_kind(client, &gvk())).await.expect("pinned_kind");
    assert_kliobackups(&ar, &caps, "discovery::pinned_kind");
    let group = bounded("oneshot::group", discovery::group(client, GROUP)).await.expect("discovery::group");
    let (ar, caps) = group.recommended_kind("KlioBackup").expect("discovery::group has KlioBackup");
    assert_kliobackups(&ar, &caps, "discovery::group");
}

#[tokio::test]
async fn list_and_get_dynamic_objects() {
    let demo = Demo::start().await;
    let api = api(&demo.client).await;

    let list = bounded("list", api.list(&ListParams::default())).await.expect("list");
    assert_eq!(names(&list.items), DEMO_NAMES);
    assert!(list.metadata.resource_version.as_deref().is_some_and(|rv| !rv.is_empty()), "list RV: {:?}", list.metadata);
    assert!(list.metadata.continue_.as_deref().unwrap_or_default().is_empty(), "an unpaged list has no continue");
    for item in &list.items {
        let types = item.types.as_ref().expect("items carry apiVersion and kind");
        assert_eq!(
            (types.api_version.as_str(), types.kind.as_str()),
            ("kliocatalog.enterprisedb.io/v1alpha1", "KlioBackup")
        );
        let (cluster, id) = item.name_any().split_once('.').map(|(c, i)| (c.to_string(), i.to_string())).unwrap();
        assert_eq!(item.data["spec"]["clusterName"], cluster.as_str(), "{}", item.name_any());
        assert_eq!(item.data["spec"]["backupID"], id.as_str(), "{}", item.name_any());
        assert_eq!(
            item.labels().get("kliocatalog.enterprisedb.io/cluster").map(String::as_str),
            Some(cluster.as_str())
        );
        assert!(item.metadata.namespace.is_none(), "cluster-scoped objects have no namespace");
    }

    let obj = bounded("get", api.get(EXAMPLE)).await.expect("get the product document's backup");
    assert_eq!(obj.name_any(), EXAMPLE);
    assert_eq!(obj.data["spec"]["clusterName"], "cluster-example");
    assert_eq!(obj.data["spec"]["backupID"], "backup-20251113093137");
    assert_eq!(obj.data["status"]["startWAL"], "000000010000000000000007");
    assert_eq!(obj.data["status"]["startLSN"], 117_440_552u64);
    assert_eq!(obj.data["status"]["startedAt"], "2025-11-13T09:31:37Z");
    assert_eq!(obj.data["status"]["stoppedAt"], "2025-11-13T09:31:39Z");
    assert_eq!(obj.labels().get("kliocatalog.enterprisedb.io/tier1").map(String::as_str), Some("true"));

    // get_opt: None for a missing name; get: kube::Error::Api with the server's Status.
    let missing = bounded("get_opt", api.get_opt("nonexistent")).await.expect("get_opt of a missing name");
    assert!(missing.is_none());
    match bounded("get", api.get("nonexistent")).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 404, "{status:?}");
            assert_eq!(status.reason, "NotFound", "{status:?}");
            assert!(status.is_not_found());
            assert_eq!(status.message, "kliobackups.kliocatalog.enterprisedb.io \"nonexistent\" not found");
        }
        other => panic!("expected kube::Error::Api(404 NotFound), got {other:?}"),
    }

    // Writes are refused with 405 MethodNotAllowed.
    match bounded("delete", api.delete(EXAMPLE, &Default::default())).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (405, "MethodNotAllowed"), "{status:?}")
        }
        other => panic!("expected kube::Error::Api(405), got {other:?}"),
    }
}

#[tokio::test]
async fn selectors_and_paging() {
    let demo = Demo::start().await;
    let api = api(&demo.client).await;
    let list = |lp: ListParams| {
        let api = api.clone();
        async move { bounded("list", api.list(&lp)).await }
    };

    let by_field = list(ListParams::default().fields("spec.clusterName=pg-analytics")).await.unwrap();
    assert_eq!(names(&by_field.items), ["pg-analytics.backup-20251120010000", "pg-analytics.backup-20251121010000"]);
    let by_name = list(ListParams::default().fields(&format!("metadata.name={EXAMPLE}"))).await.unwrap();
    assert_eq!(names(&by_name.items), [EXAMPLE]);
    let by_id = list(ListParams::default().fields("spec.backupID=backup-20251122003000")).await.unwrap();
    assert_eq!(names(&by_id.items), ["pg-orders.backup-20251122003000"]);
    let not_orders =
        list(ListParams::default().fields("spec.clusterName!=pg-orders,spec.clusterName!=cluster-example"))
            .await
            .unwrap();
    assert_eq!(names(&not_orders.items), ["pg-analytics.backup-20251120010000", "pg-analytics.backup-20251121010000"]);

    let by_label =
        list(ListParams::default().labels("kliocatalog.enterprisedb.io/cluster=cluster-example")).await.unwrap();
    assert_eq!(names(&by_label.items), &DEMO_NAMES[..3]);
    let tier2 = list(ListParams::default().labels("kliocatalog.enterprisedb.io/tier2")).await.unwrap();
    assert_eq!(names(&tier2.items), ["cluster-example.backup-20251101020000", "pg-analytics.backup-20251120010000"]);
    let tier1_only =
        list(ListParams::default().labels("kliocatalog.enterprisedb.io/tier1,!kliocatalog.enterprisedb.io/tier2"))
            .await
            .unwrap();
    assert_eq!(
        names(&tier1_only.items),
        [
            "cluster-example.backup-20251113093137",
            "cluster-example.backup-20251114093000",
            "pg-analytics.backup-20251121010000",
            "pg-orders.backup-20251122003000",
        ]
    );
    let set = list(ListParams::default().labels("kliocatalog.enterprisedb.io/cluster in (pg-orders,pg-analytics)"))
        .await
        .unwrap();
    assert_eq!(names(&set.items), &DEMO_NAMES[3..]);
    let server = list(ListParams::default().labels("kliocatalog.enterprisedb.io/server=klio")).await.unwrap();
    assert_eq!(names(&server.items), DEMO_NAMES);
    let both = list(
        ListParams::default()
            .labels("kliocatalog.enterprisedb.io/cluster=pg-analytics")
            .fields("spec.backupID=backup-20251121010000"),
    )
    .await
    .unwrap();
    assert_eq!(names(&both.items), ["pg-analytics.backup-20251121010000"]);

    // Unsupported field selectors and malformed label selectors are 400 BadRequest Statuses.
    for lp in [ListParams::default().fields("status.phase=x"), ListParams::default().labels("a in (b")] {
        match list(lp.clone()).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"), "{lp:?}: {status:?}")
            }
            other => panic!("{lp:?}: expected a 400 Status, got {other:?}"),
        }
    }

    // Paging: limit(2) and the continue token until it is absent, every page from one snapshot.
    let mut pages = vec![];
    let mut lp = ListParams::default().limit(2);
    loop {
        let page = list(lp.clone()).await.expect("a page");
        assert!(page.items.len() <= 2, "page of {}", page.items.len());
        pages.push(names(&page.items));
        match page.metadata.continue_.as_deref() {
            Some(token) if !token.is_empty() => {
                let remaining = page.metadata.remaining_item_count.expect("remainingItemCount with continue");
                assert_eq!(remaining as usize, DEMO_NAMES.len() - pages.concat().len());
                lp = ListParams::default().limit(2).continue_token(token);
            }
            _ => break,
        }
        assert!(pages.len() <= DEMO_NAMES.len(), "paging does not end: {pages:?}");
    }
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert_eq!(pages.concat(), DEMO_NAMES);

    // Paging combined with a selector.
    let first = list(ListParams::default().limit(1).fields("spec.clusterName=cluster-example")).await.unwrap();
    assert_eq!(names(&first.items), &DEMO_NAMES[..1]);
    let token = first.metadata.continue_.expect("more pages");
    let rest =
        list(ListParams::default().fields("spec.clusterName=cluster-example").continue_token(&token)).await.unwrap();
    assert_eq!(names(&rest.items), &DEMO_NAMES[1..3]);
}

/// Runs a watcher until `want` returns true for an event; returns every event seen (debug form).
async fn watch_until(
    api: Api<DynamicObject>,
    config: watcher::Config,
    limit: Duration,
    mut on_event: impl FnMut(&watcher::Event<DynamicObject>) -> bool,
) -> Vec<String> {
    let mut stream = watcher(api, config).boxed();
    let mut seen = vec![];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        match next {
            Err(_) => panic!("the watcher did not deliver the expected event within {limit:?}; events seen: {seen:#?}"),
            Ok(None) => panic!("the watcher stream ended; events seen: {seen:#?}"),
            Ok(Some(Err(e))) => panic!("watcher error: {e}; events seen: {seen:#?}"),
            Ok(Some(Ok(event))) => {
                seen.push(describe(&event));
                if on_event(&event) {
                    return seen;
                }
            }
        }
    }
}

fn describe(event: &watcher::Event<DynamicObject>) -> String {
    match event {
        watcher::Event::Apply(o) => format!("Apply {}", o.name_any()),
        watcher::Event::Delete(o) => format!("Delete {}", o.name_any()),
        watcher::Event::Init => "Init".into(),
        watcher::Event::InitApply(o) => format!("InitApply {}", o.name_any()),
        watcher::Event::InitDone => "InitDone".into(),
    }
}

/// The initial objects, then an Apply (an ADDED on the wire) for a record added to tier 1, then a
/// Delete when it is removed again.
async fn watch_sees_added_record(config: watcher::Config, id: &str) {
    let demo = Demo::start().await;
    let api = api(&demo.client).await;

    let added = format!("cluster-example.{id}");
    let mut initial = vec![];
    let mut init_done = false;
    let mut wrote = false;
    let seen = watch_until(api.clone(), config.clone(), Duration::from_secs(45), |event| {
        match event {
            watcher::Event::InitApply(o) => initial.push(o.name_any()),
            watcher::Event::InitDone => {
                init_done = true;
                assert_eq!(initial, DEMO_NAMES, "the initial objects");
                demo.add_tier1_record("cluster-example", id, 1_764_547_200);
                wrote = true;
            }
            watcher::Event::Apply(o) if o.name_any() == added => {
                assert!(wrote && init_done, "Apply before the record was written");
                assert_eq!(o.data["spec"]["clusterName"], "cluster-example");
                assert_eq!(o.data["spec"]["backupID"], id);
                return true;
            }
            _ => {}
        }
        false
    })
    .await;
    assert!(seen.iter().any(|e| e == "Init"), "{seen:?}");

    // The new object is also visible to get and list.
    let api = self::api(&demo.fresh_client().await).await;
    let obj = bounded("get", api.get(&added)).await.expect("get the added record");
    assert_eq!(obj.data["spec"]["backupID"], id);

    // Removing the record is a Delete (DELETED on the wire); a fresh watcher sees it.
    let file = demo.demo_dir().join("catalog/tier1/cluster-example").join(format!("{id}.json"));
    let mut removed = false;
    let api = self::api(&demo.fresh_client().await).await;
    watch_until(api, config, Duration::from_secs(45), |event| {
        match event {
            watcher::Event::InitDone if !removed => {
                std::fs::remove_file(&file).unwrap();
                removed = true;
            }
            watcher::Event::Delete(o) if o.name_any() == added => return true,
            _ => {}
        }
        false
    })
    .await;
}

#[tokio::test]
async fn watcher_list_watch_sees_added_record() {
    watch_sees_added_record(watcher::Config::default().timeout(30), "backup-20251201000000").await;
}

#[tokio::test]
async fn watcher_streaming_list_sees_added_record() {
    watch_sees_added_record(watcher::Config::default().streaming_lists().timeout(30), "backup-20251202000000").await;
}

#[tokio::test]
async fn raw_watch_events_are_typed() {
    // Api::watch (no runtime): an explicit resourceVersion from a list, then a change.
    let demo = Demo::start().await;
    let api = api(&demo.client).await;
    let list = bounded("list", api.list(&ListParams::default())).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let params = kube::api::WatchParams::default().timeout(20);
    let mut stream = bounded("watch", api.watch(&params, &rv)).await.expect("watch").boxed();
    let added = demo.add_tier1_record("pg-orders", "backup-20251203000000", 1_764_720_000);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    let mut seen = vec![];
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => panic!("no ADDED for {added} within 25s: {seen:?}"),
            Ok(None) => panic!("the watch ended without an ADDED for {added}: {seen:?}"),
            Ok(Some(Err(e))) => panic!("watch error: {e}; seen {seen:?}"),
            Ok(Some(Ok(kube::api::WatchEvent::Added(o)))) if o.name_any() == added => break,
            Ok(Some(Ok(event))) => seen.push(format!("{event:?}")),
        }
    }
    assert!(
        seen.iter().all(|e| e.starts_with("Bookmark")),
        "only bookmarks may come before the change after the list's resourceVersion: {seen:?}"
    );
}

/// SERVER BUG check: one `kube::Client` opening a second connection (here: a get while a watch
/// holds the first connection) resumes its TLS session, and the server must accept that.
/// At the time of writing the server answers the resumed handshake with a TLS alert
/// `internal_error` (OpenSSL: a server that verifies client certificates needs a session id
/// context, `SslAcceptorBuilder::set_session_id_context`, or session caching and tickets off).
#[tokio::test]
async fn tls_session_resumption_on_a_second_connection() {
    let demo = Demo::start().await;
    let api = api(&demo.client).await;
    let mut watch =
        bounded("watch", api.watch(&kube::api::WatchParams::default().timeout(20), "0")).await.expect("watch").boxed();
    // The first event arrives on the first connection, which the watch keeps.
    let first =
        tokio::time::timeout(CALL, watch.next()).await.expect("a first watch event").expect("the stream is open");
    assert!(first.is_ok(), "{first:?}");
    // Now a get needs a second connection: a new TLS handshake resuming the first one's session.
    match bounded("get on a second connection", api.get(EXAMPLE)).await {
        Ok(obj) => assert_eq!(obj.name_any(), EXAMPLE),
        Err(e) => panic!(
            "SERVER BUG: a second connection from the same kube::Client failed: the server refuses TLS \
             session resumption with client certificates (OpenSSL alert internal_error; \
             src/tls.rs sets a verify mode but no session id context): {e:?}"
        ),
    }
    drop(watch);
}
