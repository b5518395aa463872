//! The benchmark: the API service against the physical limit of serving the same bytes over
//! TLS on this machine (nginx, static files, same certificate, client certificates verified).
//!
//! In one run on 127.0.0.1, for catalogs of N generated backups: warm list (JSON and Table) and
//! get of one backup at several concurrencies over HTTP/1.1, the lists over HTTP/2 (one
//! connection per client), and the cold list (first requests after start, concurrent clients).
//! The warm cells are driven by `oha` ([`oha`]), the same way for both servers; this program only
//! orchestrates: it starts the servers, gives nginx the very bytes the service answered, samples
//! the service's RSS (idle, and the peak during the c=64 lists), its time from start to /readyz,
//! the Kopia requests it sends to the catalog server (ours, in this process, over the real
//! protocol) and its CPU time for a refresh that finds nothing new. Prints a table with our
//! figure, nginx's and the ratios, and writes the same as JSON.
//!
//! `conformance/bench` builds it in release mode and installs nginx and oha when missing.

mod client;
mod oha;
mod report;
mod servers;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use klio_api::demo::DemoPki;

use client::Client;
use oha::{Load, Oha};
use report::{Cell, ProcessFigures, Report, Row, Setup};
use servers::{Nginx, Service};

#[derive(Parser, Debug)]
#[command(about = "Benchmark the Klio API service against nginx serving the same bytes over TLS")]
struct Args {
    /// Catalog sizes (number of backups).
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000,100000")]
    sizes: Vec<usize>,
    /// Client concurrencies over HTTP/1.1 (one connection per client).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Client concurrencies of the list cells over HTTP/2 (one connection per client; none: no
    /// HTTP/2 cells).
    #[arg(long, value_delimiter = ',', default_value = "16")]
    h2_concurrency: Vec<usize>,
    /// Measuring time per cell, in milliseconds (the largest catalog gets a quarter of it).
    /// Requests still running at its end are finished and counted.
    #[arg(long, default_value_t = 1500)]
    cell_ms: u64,
    /// Times each cell is measured, alternating the servers; the round with the median p50 is
    /// reported for each.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// The klio-api binary to measure (default: beside this one).
    #[arg(long)]
    klio_api: Option<PathBuf>,
    /// The oha binary (default: on the PATH, else target/tools/bin/oha).
    #[arg(long)]
    oha: Option<PathBuf>,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/latest.json")]
    json: PathBuf,
    /// nginx binary.
    #[arg(long, default_value = "nginx")]
    nginx: String,
    /// Keep the service and nginx of the first size running this many seconds, right after the
    /// idle RSS is read and before any request (to profile them by hand); prints where they are.
    #[arg(long)]
    hold: Option<u64>,
}

const TABLE: &str =
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
const COLLECTION: &str = "/apis/kliocatalog.enterprisedb.io/v1alpha1/kliobackups";

/// A whole cold read of the catalog by a new reader (new session): the median of three.
async fn upstream_read_ms(pki: &DemoPki, catalog_url: &str) -> Result<f64> {
    let mut resolved = pki.klio_client_args(catalog_url.to_string(), None).resolve()?;
    // The first listing after the catalog changed makes the server scan every record file: at
    // 100 000 backups on a busy machine, longer than the service's default 10 s per request.
    resolved[0].timeout_seconds = 120;
    let mut times = vec![];
    for _ in 0..3 {
        let mut reader = klio_api::catalog::ServerConfig::new(&resolved[0])?.tier1;
        let t = Instant::now();
        reader.read().await.map_err(|e| anyhow::anyhow!("reading the catalog: {e}"))?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[1])
}

fn write_catalog(dir: &Path, n: usize) -> Result<Option<String>> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let mut one = None;
    for i in 0..n {
        let cluster = format!("pg-{:04}", i % 500);
        let id = format!("backup-{:08}", i);
        let record = klio_api::demo::sample_record(
            &cluster,
            &id,
            1_700_000_000 + i as i64 * 60,
            30 + (i % 600) as i64,
            (i % 250) as u64 + 1,
            i % 7 == 0,
        );
        let cdir = dir.join(&cluster);
        std::fs::create_dir_all(&cdir)?;
        std::fs::write(cdir.join(format!("{id}.json")), serde_json::to_vec(&record)?)?;
        if i == n / 2 {
            one = Some(format!("{cluster}.{id}"));
        }
    }
    Ok(one)
}

fn main() -> Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(args))
}

/// A warm case: what is asked, and the file nginx serves it from.
struct Case {
    name: &'static str,
    path: String,
    accept: &'static str,
    file: &'static str,
    list: bool,
}

/// Measures one cell on both servers, `rounds` times, alternating which goes first; for each,
/// the round with the median p50.
fn measure(oha: &Oha, ours: &Load<'_>, nginx: &Load<'_>, rounds: usize) -> Result<(Cell, Cell)> {
    let (mut a, mut b) = (vec![], vec![]);
    for round in 0..rounds {
        if round % 2 == 0 {
            a.push(oha.run(ours)?);
            b.push(oha.run(nginx)?);
        } else {
            b.push(oha.run(nginx)?);
            a.push(oha.run(ours)?);
        }
    }
    let median = |mut cells: Vec<Cell>| {
        cells.sort_by(|x, y| x.p50_ms.total_cmp(&y.p50_ms));
        cells.swap_remove((cells.len() - 1) / 2)
    };
    Ok((median(a), median(b)))
}

async fn run(args: Args) -> Result<()> {
    let work = std::env::temp_dir().join(format!("klio-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let pki = DemoPki::create(&work)?;
    let binary = match &args.klio_api {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("klio-api"),
    };
    anyhow::ensure!(binary.exists(), "{} not found (build it: cargo build --release)", binary.display());
    let oha = Oha::locate(args.oha.clone(), &pki)?;

    // Our Kopia-protocol catalog server, in this process, counting the requests it gets.
    let catalog_dir = work.join("catalog");
    std::fs::create_dir_all(&catalog_dir)?;
    let catalog_args = pki.catalog_serve_args(catalog_dir.clone());
    let catalog = klio_api::upstream::kopia::server::KopiaServer::bind(&catalog_args).await?;
    let catalog_url = format!("https://127.0.0.1:{}", catalog.local_addr().port());
    let counts = catalog.counts();
    let requests = move || {
        let (_, find, manifests, contents) = counts.snapshot();
        (find, manifests + contents)
    };
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(catalog.serve(stop));

    let nginx_dir = work.join("nginx");
    std::fs::create_dir_all(nginx_dir.join("www"))?;
    let nginx = Nginx::start(&args.nginx, &nginx_dir, &pki)?;
    let mut report = Report {
        setup: Setup { load_generator: oha.version(), cell_ms: args.cell_ms, rounds: args.rounds },
        ..Default::default()
    };

    // Idle, with an empty catalog.
    {
        write_catalog(&catalog_dir, 0)?;
        let svc = Service::start(&binary, &pki, &catalog_url)?;
        let client = Client::new(svc.addr, &pki)?;
        let ready = svc.wait_ready(&client).await?;
        let upstream_read_ms = upstream_read_ms(&pki, &catalog_url).await?;
        tokio::time::sleep(SETTLE).await;
        let (rss, hwm) = svc.rss();
        report.process.push(ProcessFigures {
            backups: 0,
            start_to_ready_ms: ready.as_secs_f64() * 1e3,
            upstream_read_ms,
            idle_rss_kib: rss,
            peak_rss_kib: hwm,
            ..Default::default()
        });
    }

    let mut held = false;
    for &n in &args.sizes {
        eprintln!("== {n} backups");
        let one = write_catalog(&catalog_dir, n)?.unwrap_or_default();
        let cell = Duration::from_millis(if n >= 100_000 { args.cell_ms / 4 } else { args.cell_ms });
        let mut figures = ProcessFigures { backups: n, ..Default::default() };
        cold_cells(&args, &binary, &pki, &catalog_url, n, &requests, &mut report, &mut figures).await?;

        // A refresh that finds nothing new: the service's CPU per refresh, every second.
        {
            let svc = Service::start_refreshing(&binary, &pki, &catalog_url, 1)?;
            let client = Client::new(svc.addr, &pki)?;
            svc.wait_ready(&client).await?;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let (cpu0, find0) = (svc.cpu(), requests().0);
            tokio::time::sleep(Duration::from_secs(6)).await;
            let (cpu1, find1) = (svc.cpu(), requests().0);
            let refreshes = (find1 - find0).max(1); // one FindManifests per refresh
            figures.idle_refresh_cpu_ms = (cpu1 - cpu0).as_secs_f64() * 1e3 / refreshes as f64;
            eprintln!("   idle refresh: {} refreshes, {:.1} ms CPU each", refreshes, figures.idle_refresh_cpu_ms);
        }

        // Warm.
        figures.upstream_read_ms = upstream_read_ms(&pki, &catalog_url).await?;
        let svc = Service::start(&binary, &pki, &catalog_url)?;
        let client = Client::new(svc.addr, &pki)?;
        figures.start_to_ready_ms = svc.wait_ready(&client).await?.as_secs_f64() * 1e3;
        let before = requests();
        tokio::time::sleep(SETTLE).await;
        figures.idle_rss_kib = svc.rss().0;
        if let (Some(seconds), false) = (args.hold, held) {
            held = true;
            eprintln!("   holding {seconds} s: service pid {} on {}, nginx on {}", svc.pid(), svc.addr, nginx.addr);
            eprintln!("   e.g. oha ... -H 'Accept: {TABLE}' https://localhost:{}{COLLECTION}", svc.addr.port());
            tokio::time::sleep(Duration::from_secs(seconds)).await;
        }
        let cases = [
            Case {
                name: "list json",
                path: COLLECTION.into(),
                accept: "application/json",
                file: "list.json",
                list: true,
            },
            Case { name: "list table", path: COLLECTION.into(), accept: TABLE, file: "table.json", list: true },
            Case {
                name: "get one",
                path: format!("{COLLECTION}/{one}"),
                accept: "application/json",
                file: "one.json",
                list: false,
            },
        ];
        // nginx serves exactly the bytes we serve.
        for case in &cases {
            let body = client.fetch(&case.path, case.accept).await?;
            std::fs::write(nginx_dir.join("www").join(case.file), &body)?;
        }
        let mut peak = svc.rss().1;
        let cells = args.concurrency.iter().map(|&c| (c, false)).chain(args.h2_concurrency.iter().map(|&c| (c, true)));
        for (c, http2) in cells {
            for case in cases.iter().filter(|case| case.list || !http2) {
                let ours = Load {
                    addr: svc.addr,
                    pid: svc.pid(),
                    path: &case.path,
                    accept: case.accept,
                    concurrency: c,
                    http2,
                    time: cell,
                };
                let file = format!("/{}", case.file);
                let theirs = Load { addr: nginx.addr, pid: nginx.pid(), path: &file, accept: "*/*", ..ours };
                let lists64 = case.list && c >= 64 && !http2;
                if lists64 {
                    peak = peak.max(svc.rss().1);
                    svc.reset_peak()?;
                }
                let (ours, theirs) = tokio::task::block_in_place(|| measure(&oha, &ours, &theirs, args.rounds))?;
                if lists64 {
                    figures.peak_rss_c64_lists_kib = figures.peak_rss_c64_lists_kib.max(svc.rss().1);
                }
                let protocol = if http2 { "HTTP/2" } else { "HTTP/1.1" };
                eprintln!(
                    "   {:<10} {protocol:<8} c={c:<3} ours p50 {:>8.2} p99 {:>8.2} ms {:>8.0} rps {:>7.1} µs CPU/req | nginx p50 {:>8.2} p99 {:>8.2} ms {:>8.0} rps {:>7.1} µs CPU/req",
                    case.name, ours.p50_ms, ours.p99_ms, ours.rps, ours.cpu_us_per_request, theirs.p50_ms, theirs.p99_ms, theirs.rps, theirs.cpu_us_per_request
                );
                report.rows.push(Row::new(case.name, protocol, n, c, ours, Some(theirs)));
            }
        }
        figures.peak_rss_kib = peak.max(svc.rss().1);
        let after = requests();
        figures.upstream_requests_warm = after.0 + after.1 - before.0 - before.1;
        report.process.push(figures);
        drop(svc);
    }
    drop(nginx);

    report::print(&report);
    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json, serde_json::to_vec_pretty(&report)?)?;
    eprintln!("\nJSON written to {}", args.json.display());
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// How long a service that became ready sits before its idle RSS is read.
const SETTLE: Duration = Duration::from_secs(1);

/// Cold: concurrent first requests right after start (one catalog read expected), with our own
/// client: each connects as soon as the port accepts.
#[allow(clippy::too_many_arguments)]
async fn cold_cells(
    args: &Args,
    binary: &Path,
    pki: &DemoPki,
    catalog_url: &str,
    n: usize,
    requests: &impl Fn() -> (u64, u64),
    report: &mut Report,
    figures: &mut ProcessFigures,
) -> Result<()> {
    for &c in &args.concurrency {
        let before = requests();
        let svc = Service::start(binary, pki, catalog_url)?;
        let client = Client::new(svc.addr, pki)?;
        // Wait for the port, not for readiness.
        let t0 = Instant::now();
        while client.connect().await.is_err() {
            anyhow::ensure!(t0.elapsed() < Duration::from_secs(30), "the service did not start");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut firsts = tokio::task::JoinSet::new();
        for _ in 0..c {
            let client = client.clone();
            firsts.spawn(async move {
                let t = Instant::now();
                let mut s = client.connect().await?;
                let (status, bytes) = Client::get(&mut s, COLLECTION, TABLE).await?;
                anyhow::Ok((status, bytes, t.elapsed()))
            });
        }
        let mut lat = vec![];
        let (mut errors, mut size) = (0, 0);
        while let Some(r) = firsts.join_next().await {
            match r? {
                Ok((200, b, d)) => {
                    lat.push(d);
                    size = b;
                }
                _ => errors += 1,
            }
        }
        lat.sort();
        let pct =
            |p: f64| lat.get(((lat.len() as f64 - 1.0) * p).round() as usize).map_or(0.0, |d| d.as_secs_f64() * 1e3);
        let after = requests();
        let (find, reads) = (after.0 - before.0, after.1 - before.1);
        let cell = Cell {
            requests: lat.len(),
            errors,
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
            rps: 0.0,
            bytes_per_response: size,
            // Not measured: the catalog's cold read is part of each of these requests.
            cpu_us_per_request: 0.0,
        };
        let name = format!("cold list table (Kopia: {find} find, {reads} reads)");
        report.rows.push(Row::new(&name, "HTTP/1.1", n, c, cell, None));
        figures.find_manifests_cold_start = figures.find_manifests_cold_start.max(find);
        figures.reads_cold_start = figures.reads_cold_start.max(reads);
    }
    Ok(())
}
