//! What a run measured: printed as a table and written as JSON.

use serde::Serialize;

/// One measured cell of one server.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Cell {
    /// Requests answered 200.
    pub requests: usize,
    /// Other answers and failed requests.
    pub errors: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// 200s per second of the cell.
    pub rps: f64,
    pub bytes_per_response: usize,
    /// The server's CPU time (user + system, all its threads) per answered request, during the
    /// cell: on a machine shared with the load generator, what the requests per second depend on.
    pub cpu_us_per_request: f64,
}

/// A case at one size and concurrency, ours against nginx.
#[derive(Debug, Serialize)]
pub struct Row {
    pub name: String,
    /// `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    pub backups: usize,
    pub concurrency: usize,
    pub ours: Cell,
    pub nginx: Option<Cell>,
    /// ours p50 / nginx p50
    pub p50_ratio: Option<f64>,
    /// ours p99 / nginx p99
    pub p99_ratio: Option<f64>,
    /// ours rps / nginx rps
    pub rps_ratio: Option<f64>,
    /// ours CPU per request / nginx CPU per request
    pub cpu_ratio: Option<f64>,
}

impl Row {
    pub fn new(
        name: &str,
        protocol: &'static str,
        backups: usize,
        concurrency: usize,
        ours: Cell,
        nginx: Option<Cell>,
    ) -> Self {
        let ratio = |f: fn(&Cell) -> f64| nginx.as_ref().and_then(|n| (f(n) > 0.0).then(|| f(&ours) / f(n)));
        Self {
            name: name.to_string(),
            protocol,
            backups,
            concurrency,
            p50_ratio: ratio(|c| c.p50_ms),
            p99_ratio: ratio(|c| c.p99_ms),
            rps_ratio: ratio(|c| c.rps),
            cpu_ratio: ratio(|c| c.cpu_us_per_request),
            ours,
            nginx,
        }
    }
}

#[derive(Debug, Serialize, Default)]
pub struct Report {
    /// The load generator and the options of the run.
    pub setup: Setup,
    pub rows: Vec<Row>,
    /// backups -> figures about the service process
    pub process: Vec<ProcessFigures>,
}

#[derive(Debug, Serialize, Default)]
pub struct Setup {
    pub load_generator: String,
    pub cell_ms: u64,
    /// Each cell was measured this many times, alternating the servers; the round with the
    /// median p50 is reported for each.
    pub rounds: usize,
}

#[derive(Debug, Serialize, Default, Clone)]
pub struct ProcessFigures {
    pub backups: usize,
    pub start_to_ready_ms: f64,
    /// A whole cold read of the catalog over the Kopia protocol by a reader in this process (new
    /// session, every backup read): the protocol's share of start→ready.
    pub upstream_read_ms: f64,
    /// RSS of the warm service once ready and settled, before any request.
    pub idle_rss_kib: u64,
    /// The highest RSS during the c=64 list cells (HTTP/1.1, JSON and Table).
    pub peak_rss_c64_lists_kib: u64,
    /// The highest RSS of the warm service over all its cells.
    pub peak_rss_kib: u64,
    /// FindManifests the service sent for its first catalog read (one per snapshot kind, 4).
    pub find_manifests_cold_start: u64,
    /// GetManifest and GetContent the service sent for its first read (3 per backup).
    pub reads_cold_start: u64,
    /// Kopia requests of any kind during the warm measurements (refreshes disabled: 0).
    pub upstream_requests_warm: u64,
    /// The service's CPU time (user + system) per refresh that finds nothing new.
    pub idle_refresh_cpu_ms: f64,
}

pub fn print(r: &Report) {
    println!(
        "\n{:<44} {:<8} {:>7} {:>3} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>5} {:>5} {:>5} | {:>7} {:>7}",
        "case",
        "protocol",
        "backups",
        "c",
        "p50 ms",
        "p99 ms",
        "rps",
        "nginx p50",
        "nginx p99",
        "nginx rps",
        "p50x",
        "p99x",
        "rpsx",
        "µs/req",
        "nginx"
    );
    let ratio = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    let cpu = |c: &Cell| if c.cpu_us_per_request > 0.0 { format!("{:.1}", c.cpu_us_per_request) } else { "-".into() };
    for row in &r.rows {
        let (np50, np99, nrps) = row.nginx.as_ref().map_or(("-".into(), "-".into(), "-".into()), |n| {
            (format!("{:.2}", n.p50_ms), format!("{:.2}", n.p99_ms), format!("{:.0}", n.rps))
        });
        let errors = row.ours.errors + row.nginx.as_ref().map_or(0, |n| n.errors);
        println!(
            "{:<44} {:<8} {:>7} {:>3} | {:>9.2} {:>9.2} {:>9.0} | {:>9} {:>9} {:>9} | {:>5} {:>5} {:>5} | {:>7} {:>7}{}",
            row.name,
            row.protocol,
            row.backups,
            row.concurrency,
            row.ours.p50_ms,
            row.ours.p99_ms,
            row.ours.rps,
            np50,
            np99,
            nrps,
            ratio(row.p50_ratio),
            ratio(row.p99_ratio),
            ratio(row.rps_ratio),
            cpu(&row.ours),
            row.nginx.as_ref().map_or("-".into(), cpu),
            if errors > 0 { format!("  ({errors} errors)") } else { String::new() }
        );
    }
    println!(
        "\n{:>8} | {:>14} | {:>13} | {:>17} | {:>19} | {:>13} | {:>18} | {:>9} | {:>19}",
        "backups",
        "start→ready ms",
        "Kopia read ms",
        "idle RSS MiB (MB)",
        "peak RSS c=64 lists",
        "peak RSS MiB",
        "cold: find / reads",
        "warm reqs",
        "idle refresh CPU ms"
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    for p in &r.process {
        println!(
            "{:>8} | {:>14.1} | {:>13.1} | {:>17} | {:>19.1} | {:>13.1} | {:>18} | {:>9} | {:>19.2}",
            p.backups,
            p.start_to_ready_ms,
            p.upstream_read_ms,
            format!("{:.1} ({:.1})", mib(p.idle_rss_kib), p.idle_rss_kib as f64 * 1.024 / 1000.0),
            mib(p.peak_rss_c64_lists_kib),
            mib(p.peak_rss_kib),
            format!("{} / {}", p.find_manifests_cold_start, p.reads_cold_start),
            p.upstream_requests_warm,
            p.idle_refresh_cpu_ms
        );
    }
}
