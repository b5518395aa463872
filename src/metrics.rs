//! Prometheus metrics, named after kube-apiserver's where they mean the same thing, plus the
//! catalog's own. One process-wide registry; `/metrics` renders it (behind authorization).

use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of `apiserver_request_total`, kube-apiserver's names so the same dashboards work.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The verb in kube-apiserver's upper case (`GET`, `LIST`, `WATCH`, ...) or `other`: a
    /// closed set, so no client can grow the label space.
    pub verb: &'static str,
    /// The API group, empty for non-resource paths (discovery, `/openapi`, `/metrics`).
    pub group: &'static str,
    /// The resource (`unknown` for a resource we do not serve), empty for non-resource paths.
    pub resource: &'static str,
    /// The HTTP status code answered.
    pub code: u16,
}

/// Labels of `apiserver_request_duration_seconds`: [`RequestLabels`] without the code, as
/// kube-apiserver has them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    /// As [`RequestLabels::verb`].
    pub verb: &'static str,
    /// As [`RequestLabels::group`].
    pub group: &'static str,
    /// As [`RequestLabels::resource`].
    pub resource: &'static str,
}

/// Labels of `apiserver_current_inflight_requests`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InflightLabels {
    /// `readOnly` for ordinary requests, `watch` for open watch streams.
    pub request_kind: &'static str,
}

/// Which catalog source a metric is about: one Klio server of one tier.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// The Klio server's configured name.
    pub server: String,
    /// The tier, counted from 1.
    pub tier: String,
}

/// Labels of `klio_catalog_fetches_total`: [`SourceLabels`] plus how the read ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    /// The Klio server's configured name.
    pub server: String,
    /// The tier, counted from 1.
    pub tier: String,
    /// `ok` (200), `not_modified` (304) or `error`.
    pub result: String,
}

/// Labels of `klio_kopia_requests_total`: [`SourceLabels`] plus the request sent.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KopiaRequestLabels {
    /// The Klio server's configured name.
    pub server: String,
    /// The tier, counted from 1.
    pub tier: String,
    /// One of the requests the Kopia client sends (`find_manifests`, `get_manifest`, ...).
    pub request: &'static str,
}

/// Labels of `klio_catalog_read_errors_total`: [`SourceLabels`] plus why the read failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadErrorLabels {
    /// The Klio server's configured name.
    pub server: String,
    /// The tier, counted from 1.
    pub tier: String,
    /// A fixed word per failure kind (see `catalog::ReadFailure::reason`).
    pub reason: &'static str,
}

/// Every metric the service exports, as handles the code updates directly; the help texts
/// are in [`Metrics::new`]'s registrations.
pub struct Metrics {
    registry: Registry,
    /// `apiserver_request_total`: requests answered.
    pub requests: Family<RequestLabels, Counter>,
    /// `apiserver_request_duration_seconds`: latency (watches: until the stream starts).
    pub request_duration: Family<DurationLabels, Histogram>,
    /// `apiserver_current_inflight_requests`: requests being served and watches open.
    pub inflight: Family<InflightLabels, Gauge>,
    /// Its `readOnly` series, kept at hand: every request but a watch moves it.
    pub inflight_read_only: Gauge,
    /// `klio_catalog_fetches_total`: catalog reads by result.
    pub fetches: Family<FetchLabels, Counter>,
    /// `klio_catalog_fetch_duration_seconds`: how long one catalog read took.
    pub fetch_duration: Family<SourceLabels, Histogram>,
    /// `klio_catalog_last_success_timestamp_seconds`: when a source was last read whole.
    pub last_success: Family<SourceLabels, Gauge<f64, AtomicU64>>,
    /// `klio_catalog_backups`: KlioBackups in the published snapshot.
    pub backups: Gauge,
    /// `klio_catalog_snapshots_total`: snapshots published, i.e. catalog changes seen.
    pub snapshots: Counter,
    /// `klio_kopia_requests_total`: requests sent over Kopia sessions.
    pub kopia_requests: Family<KopiaRequestLabels, Counter>,
    /// `klio_kopia_sessions_total`: sessions opened (more than one per source: reconnects).
    pub kopia_sessions: Family<SourceLabels, Counter>,
    /// `klio_catalog_read_errors_total`: failed reads and skipped backups.
    pub read_errors: Family<ReadErrorLabels, Counter>,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0].into_iter()
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, API resource and HTTP response code",
            requests.clone(),
        );
        let request_duration =
            Family::<DurationLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb and resource (watches: until the stream starts)",
            request_duration.clone(),
        );
        let inflight = Family::<InflightLabels, Gauge>::default();
        registry.register(
            "apiserver_current_inflight_requests",
            "Number of requests being served (readOnly) and watches open (watch)",
            inflight.clone(),
        );
        let inflight_read_only = inflight.get_or_create_owned(&InflightLabels { request_kind: "readOnly" });
        let fetches = Family::<FetchLabels, Counter>::default();
        registry.register(
            "klio_catalog_fetches",
            "Reads of a Klio catalog by server, tier and result",
            fetches.clone(),
        );
        let fetch_duration =
            Family::<SourceLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register(
            "klio_catalog_fetch_duration_seconds",
            "Duration of one read of a Klio catalog",
            fetch_duration.clone(),
        );
        let last_success = Family::<SourceLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "klio_catalog_last_success_timestamp_seconds",
            "Unix time of the last successful read of a Klio catalog (the snapshot age is now minus this)",
            last_success.clone(),
        );
        let backups = Gauge::default();
        registry.register("klio_catalog_backups", "Number of KlioBackups in the current snapshot", backups.clone());
        let snapshots = Counter::default();
        registry.register(
            "klio_catalog_snapshots",
            "Catalog snapshots published (catalog changes seen)",
            snapshots.clone(),
        );
        let kopia_requests = Family::<KopiaRequestLabels, Counter>::default();
        registry.register(
            "klio_kopia_requests",
            "Requests sent to a Klio server's Kopia session, by server, tier and request",
            kopia_requests.clone(),
        );
        let kopia_sessions = Family::<SourceLabels, Counter>::default();
        registry.register(
            "klio_kopia_sessions",
            "Kopia sessions established with a Klio server (more than one: the stream was re-opened)",
            kopia_sessions.clone(),
        );
        let read_errors = Family::<ReadErrorLabels, Counter>::default();
        registry.register(
            "klio_catalog_read_errors",
            "Failures reading a Klio catalog: whole reads (unreachable, refused, stream broken) and single backups skipped",
            read_errors.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            inflight,
            inflight_read_only,
            fetches,
            fetch_duration,
            last_success,
            backups,
            snapshots,
            kopia_requests,
            kopia_sessions,
            read_errors,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// Label sets whose handles a thread keeps (see [`record_request`]): a request's labels come from
/// fixed sets, and a thread serves few of them at a time.
const KEPT_LABEL_SETS: usize = 16;

/// Counts an answered request in `apiserver_request_total` and
/// `apiserver_request_duration_seconds`. Each thread keeps the handles of the label sets it
/// counted last (at most [`KEPT_LABEL_SETS`]), so a request finds its series without hashing its
/// labels or taking the families' locks, which both threads serving connections would share.
pub fn record_request(labels: RequestLabels, seconds: f64) {
    struct Kept {
        labels: RequestLabels,
        requests: Counter,
        duration: Histogram,
    }
    thread_local! {
        static KEPT: std::cell::RefCell<(Vec<Kept>, usize)> = const { std::cell::RefCell::new((Vec::new(), 0)) };
    }
    KEPT.with_borrow_mut(|(kept, next)| {
        let at = match kept.iter().position(|k| k.labels == labels) {
            Some(at) => at,
            None => {
                let m = metrics();
                let duration = DurationLabels { verb: labels.verb, group: labels.group, resource: labels.resource };
                let entry = Kept {
                    requests: m.requests.get_or_create_owned(&labels),
                    duration: m.request_duration.get_or_create_owned(&duration),
                    labels,
                };
                if kept.len() < KEPT_LABEL_SETS {
                    kept.push(entry);
                    kept.len() - 1
                } else {
                    let at = *next;
                    kept[at] = entry;
                    *next = (at + 1) % KEPT_LABEL_SETS;
                    at
                }
            }
        };
        kept[at].requests.inc();
        kept[at].duration.observe(seconds);
    });
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_in_their_series_past_the_kept_handles() {
        // Codes no other test answers, more label sets than a thread keeps, each counted three
        // times in turns (every round finds its handle evicted).
        let codes: Vec<u16> = (0..KEPT_LABEL_SETS as u16 + 5).map(|i| 900 + i).collect();
        for round in 0..3 {
            for &code in &codes {
                let labels = RequestLabels { verb: "GET", group: "metrics.test", resource: "kept", code };
                record_request(labels, 0.001 * f64::from(round + 1));
            }
        }
        let text = metrics().render();
        for code in codes {
            let series = format!(
                "apiserver_request_total{{verb=\"GET\",group=\"metrics.test\",resource=\"kept\",code=\"{code}\"}} 3\n"
            );
            assert!(text.contains(&series), "{series} in\n{text}");
        }
        let count = "apiserver_request_duration_seconds_count{verb=\"GET\",group=\"metrics.test\",resource=\"kept\"} ";
        let line = text.lines().find(|l| l.starts_with(count)).expect("the duration series");
        assert_eq!(&line[count.len()..], (3 * (KEPT_LABEL_SETS + 5)).to_string());
        assert!(text.contains("apiserver_current_inflight_requests{request_kind=\"readOnly\"}"), "{text}");
    }
}
