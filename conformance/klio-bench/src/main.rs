//! The benchmark: the API service against the physical limit of serving the same bytes over
//! TLS on this machine (nginx, static files, same certificate, client certificates verified).
//!
//! In one run on 127.0.0.1, for catalogs of N generated backups: warm list (JSON and Table),
//! cold list (first request after start, concurrent clients), get of one backup, each at several
//! concurrencies; latency p50/p99 and requests per second; idle and peak RSS of the service
//! process; time from process start to /readyz; the Kopia requests the service sends to the
//! catalog server (ours, in this process, over the real protocol); the service's CPU time for a
//! refresh that finds nothing new. Prints a table with our figure, nginx's and the ratio, and
//! writes the same as JSON.
//!
//! `conformance/bench` builds it in release mode and installs nginx when missing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use klio_api::demo::DemoPki;
use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "Benchmark the Klio API service against nginx serving the same bytes over TLS")]
struct Args {
    /// Catalog sizes (number of backups).
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000,100000")]
    sizes: Vec<usize>,
    /// Client concurrencies.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Measuring time per cell, in milliseconds (the largest catalog gets a quarter of it).
    #[arg(long, default_value_t = 1500)]
    cell_ms: u64,
    /// The klio-api binary to measure (default: beside this one).
    #[arg(long)]
    klio_api: Option<PathBuf>,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/latest.json")]
    json: PathBuf,
    /// nginx binary.
    #[arg(long, default_value = "nginx")]
    nginx: String,
}

/// One measured cell.
#[derive(Debug, Clone, Serialize, Default)]
struct Cell {
    requests: usize,
    errors: usize,
    p50_ms: f64,
    p99_ms: f64,
    rps: f64,
    bytes_per_response: usize,
}

#[derive(Debug, Serialize)]
struct Row {
    name: String,
    backups: usize,
    concurrency: usize,
    ours: Cell,
    nginx: Option<Cell>,
    /// ours p50 / nginx p50
    p50_ratio: Option<f64>,
    /// ours rps / nginx rps
    rps_ratio: Option<f64>,
}

#[derive(Debug, Serialize, Default)]
struct Report {
    rows: Vec<Row>,
    /// backups -> figures about the service process
    process: Vec<ProcessFigures>,
}

#[derive(Debug, Serialize, Default, Clone)]
struct ProcessFigures {
    backups: usize,
    start_to_ready_ms: f64,
    /// A whole cold read of the catalog over the Kopia protocol by a reader in this process (new
    /// session, every backup read): the protocol's share of start→ready.
    upstream_read_ms: f64,
    idle_rss_kib: u64,
    peak_rss_kib: u64,
    /// FindManifests the service sent for its first catalog read (one per snapshot kind, 4).
    find_manifests_cold_start: u64,
    /// GetManifest and GetContent the service sent for its first read (3 per backup).
    reads_cold_start: u64,
    /// Kopia requests of any kind during the warm measurements (refreshes disabled: 0).
    upstream_requests_warm: u64,
    /// The service's CPU time (user + system) per refresh that finds nothing new.
    idle_refresh_cpu_ms: f64,
}

/// A TLS client with the admin certificate, HTTP/1.1 keep-alive.
#[derive(Clone)]
struct Client {
    addr: SocketAddr,
    connector: Arc<SslConnector>,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

impl Client {
    fn new(addr: SocketAddr, pki: &DemoPki) -> Result<Self> {
        Self::with_identity(addr, pki, "admin")
    }

    /// A client presenting the demo PKI's certificate `<identity>.crt`.
    fn with_identity(addr: SocketAddr, pki: &DemoPki, identity: &str) -> Result<Self> {
        let mut b = SslConnector::builder(SslMethod::tls_client())?;
        b.set_ca_file(pki.path("ca.crt"))?;
        b.set_certificate_chain_file(pki.path(&format!("{identity}.crt")))?;
        b.set_private_key_file(pki.path(&format!("{identity}.key")), SslFiletype::PEM)?;
        b.set_verify(SslVerifyMode::PEER);
        Ok(Self { addr, connector: Arc::new(b.build()) })
    }

    async fn connect(&self) -> Result<Sender> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let ssl = self.connector.configure()?.into_ssl("localhost")?;
        let mut stream = tokio_openssl::SslStream::new(ssl, tcp)?;
        std::pin::Pin::new(&mut stream).connect().await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// One GET; the body is counted, not kept. Returns (status, bytes).
    async fn get(sender: &mut Sender, path: &str, accept: &str) -> Result<(u16, usize)> {
        sender.ready().await?;
        let req = http::Request::get(path).header("host", "localhost").header("accept", accept).body(Empty::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut bytes = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                bytes += data.len();
            }
        }
        Ok((status, bytes))
    }

    /// The whole body of one GET (to give nginx the very same bytes).
    async fn fetch(&self, path: &str, accept: &str) -> Result<Vec<u8>> {
        let mut s = self.connect().await?;
        let req = http::Request::get(path).header("host", "localhost").header("accept", accept).body(Empty::new())?;
        let resp = s.send_request(req).await?;
        anyhow::ensure!(resp.status() == 200, "GET {path}: {}", resp.status());
        Ok(resp.into_body().collect().await?.to_bytes().to_vec())
    }

    /// `concurrency` connections sending GETs back to back for `time`.
    async fn load(&self, path: &str, accept: &str, concurrency: usize, time: Duration) -> Result<Cell> {
        let deadline = Instant::now() + time;
        let mut workers = tokio::task::JoinSet::new();
        let started = Instant::now();
        for _ in 0..concurrency {
            let (client, path, accept) = (self.clone(), path.to_string(), accept.to_string());
            workers.spawn(async move {
                let mut latencies = vec![];
                let (mut errors, mut size) = (0, 0);
                let mut sender = client.connect().await?;
                // At least one request each, even when a request is longer than the cell.
                while latencies.is_empty() || Instant::now() < deadline {
                    let t = Instant::now();
                    match Client::get(&mut sender, &path, &accept).await {
                        Ok((200, bytes)) => {
                            latencies.push(t.elapsed());
                            size = bytes;
                        }
                        _ => {
                            errors += 1;
                            sender = client.connect().await?;
                            if errors > 1000 {
                                break;
                            }
                        }
                    }
                }
                anyhow::Ok((latencies, errors, size))
            });
        }
        let mut all = vec![];
        let (mut errors, mut size) = (0, 0);
        while let Some(done) = workers.join_next().await {
            let (l, e, s) = done??;
            all.extend(l);
            errors += e;
            size = size.max(s);
        }
        let elapsed = started.elapsed().as_secs_f64();
        all.sort();
        let pct =
            |p: f64| all.get(((all.len() as f64 - 1.0) * p).round() as usize).map_or(0.0, |d| d.as_secs_f64() * 1e3);
        Ok(Cell {
            requests: all.len(),
            errors,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            rps: all.len() as f64 / elapsed,
            bytes_per_response: size,
        })
    }
}

/// The API service as a child process.
struct Service {
    child: Child,
    addr: SocketAddr,
    started: Instant,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

impl Service {
    fn start(binary: &Path, pki: &DemoPki, catalog_url: &str) -> Result<Self> {
        Self::start_refreshing(binary, pki, catalog_url, 3600)
    }

    fn start_refreshing(binary: &Path, pki: &DemoPki, catalog_url: &str, refresh_seconds: u64) -> Result<Self> {
        let port = free_port();
        let started = Instant::now();
        let child = Command::new(binary)
            .args(["server", "api-server", "--bind-address", "127.0.0.1", "--secure-port", &port.to_string()])
            .args(["--catalog-refresh-seconds", &refresh_seconds.to_string()])
            .env("CLIENT_BASE_URL", catalog_url)
            .env("CLIENT_BASE_SERVER_CERT_PATH", pki.path("ca.crt"))
            .env("CLIENT_BASE_CLIENT_CERT_PATH", pki.path("klio-client.crt"))
            .env("CLIENT_BASE_CLIENT_KEY_PATH", pki.path("klio-client.key"))
            .env("CLIENT_BASE_API_SERVER_CERTFILE", pki.path("api-server.crt"))
            .env("CLIENT_BASE_API_SERVER_KEYFILE", pki.path("api-server.key"))
            .env("KLIO_API_CLIENT_CA_FILE", pki.path("ca.crt"))
            .env("KLIO_API_LOG", "error")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), started })
    }

    /// Time from process start until /readyz answers 200.
    async fn wait_ready(&self, client: &Client) -> Result<Duration> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(mut s) = client.connect().await {
                if let Ok((200, _)) = Client::get(&mut s, "/readyz", "*/*").await {
                    return Ok(self.started.elapsed());
                }
            }
            if Instant::now() > deadline {
                bail!("the service did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// (VmRSS, VmHWM) in KiB.
    fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// User + system CPU time so far.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start at ")".
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_micros(ticks * 1_000_000 / hz)
    }
}

/// nginx serving files with the same TLS settings.
struct Nginx {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    fn start(binary: &str, dir: &Path, pki: &DemoPki) -> Result<Self> {
        let port = free_port();
        std::fs::create_dir_all(dir.join("logs"))?;
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_client_certificate {ca};
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        root {dir}/www;
        default_type application/json;
    }}
}}
"#,
            dir = dir.display(),
            cert = pki.path("api-server.crt").display(),
            key = pki.path("api-server.key").display(),
            ca = pki.path("ca.crt").display(),
        );
        std::fs::create_dir_all(dir.join("tmp"))?;
        std::fs::write(dir.join("nginx.conf"), conf)?;
        let child = Command::new(binary)
            .args(["-p", &dir.display().to_string(), "-c", &dir.join("nginx.conf").display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {binary} (install it: apt-get install -y nginx)"))?;
        Ok(Self { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) })
    }
}

const TABLE: &str =
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
const COLLECTION: &str = "/apis/kliocatalog.enterprisedb.io/v1alpha1/kliobackups";

/// A whole cold read of the catalog by a new reader (new session): the median of three.
async fn upstream_read_ms(pki: &DemoPki, catalog_url: &str) -> Result<f64> {
    let resolved = pki.klio_client_args(catalog_url.to_string(), None).resolve()?;
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
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(args))
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
    let nginx_client = Client::new(nginx.addr, &pki)?;
    let mut report = Report::default();

    // Idle, with an empty catalog.
    {
        write_catalog(&catalog_dir, 0)?;
        let svc = Service::start(&binary, &pki, &catalog_url)?;
        let client = Client::new(svc.addr, &pki)?;
        let ready = svc.wait_ready(&client).await?;
        let upstream_read_ms = upstream_read_ms(&pki, &catalog_url).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
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

    for &n in &args.sizes {
        eprintln!("== {n} backups");
        let one = write_catalog(&catalog_dir, n)?.unwrap_or_default();
        let cell = Duration::from_millis(if n >= 100_000 { args.cell_ms / 4 } else { args.cell_ms });

        // Cold: concurrent first requests right after start; one catalog read expected.
        let mut figures = ProcessFigures { backups: n, ..Default::default() };
        for &c in &args.concurrency {
            let before = requests();
            let svc = Service::start(&binary, &pki, &catalog_url)?;
            let client = Client::new(svc.addr, &pki)?;
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
            let pct = |p: f64| {
                lat.get(((lat.len() as f64 - 1.0) * p).round() as usize).map_or(0.0, |d| d.as_secs_f64() * 1e3)
            };
            let after = requests();
            let (find, reads) = (after.0 - before.0, after.1 - before.1);
            report.rows.push(Row {
                name: format!("cold list table (Kopia: {find} find, {reads} reads)"),
                backups: n,
                concurrency: c,
                ours: Cell {
                    requests: lat.len(),
                    errors,
                    p50_ms: pct(0.5),
                    p99_ms: pct(0.99),
                    rps: 0.0,
                    bytes_per_response: size,
                },
                nginx: None,
                p50_ratio: None,
                rps_ratio: None,
            });
            figures.find_manifests_cold_start = figures.find_manifests_cold_start.max(find);
            figures.reads_cold_start = figures.reads_cold_start.max(reads);
        }

        // A refresh that finds nothing new: the service's CPU per refresh, every second.
        {
            let svc = Service::start_refreshing(&binary, &pki, &catalog_url, 1)?;
            let client = Client::new(svc.addr, &pki)?;
            svc.wait_ready(&client).await?;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let (cpu0, find0) = (svc.cpu(), requests().0);
            tokio::time::sleep(Duration::from_secs(6)).await;
            let (cpu1, find1) = (svc.cpu(), requests().0);
            let refreshes = ((find1 - find0) / 4).max(1);
            figures.idle_refresh_cpu_ms = (cpu1 - cpu0).as_secs_f64() * 1e3 / refreshes as f64;
            eprintln!("   idle refresh: {} refreshes, {:.1} ms CPU each", refreshes, figures.idle_refresh_cpu_ms);
        }

        // Warm.
        figures.upstream_read_ms = upstream_read_ms(&pki, &catalog_url).await?;
        let svc = Service::start(&binary, &pki, &catalog_url)?;
        let client = Client::new(svc.addr, &pki)?;
        figures.start_to_ready_ms = svc.wait_ready(&client).await?.as_secs_f64() * 1e3;
        let before = requests();
        tokio::time::sleep(Duration::from_millis(200)).await;
        figures.idle_rss_kib = svc.rss().0;
        let cases = [
            ("list json", COLLECTION.to_string(), "application/json", "list.json"),
            ("list table", COLLECTION.to_string(), TABLE, "table.json"),
            ("get one", format!("{COLLECTION}/{one}"), "application/json", "one.json"),
        ];
        for (name, path, accept, file) in cases {
            // nginx serves exactly the bytes we serve.
            let body = client.fetch(&path, accept).await?;
            std::fs::write(nginx_dir.join("www").join(file), &body)?;
            for &c in &args.concurrency {
                let ours = client.load(&path, accept, c, cell).await?;
                let theirs = nginx_client.load(&format!("/{file}"), "*/*", c, cell).await?;
                eprintln!(
                    "   {name:<10} c={c:<3} ours p50 {:>8.3} ms {:>9.1} rps | nginx p50 {:>8.3} ms {:>9.1} rps",
                    ours.p50_ms, ours.rps, theirs.p50_ms, theirs.rps
                );
                report.rows.push(Row {
                    name: name.to_string(),
                    backups: n,
                    concurrency: c,
                    p50_ratio: (theirs.p50_ms > 0.0).then(|| ours.p50_ms / theirs.p50_ms),
                    rps_ratio: (theirs.rps > 0.0).then(|| ours.rps / theirs.rps),
                    ours,
                    nginx: Some(theirs),
                });
            }
        }
        figures.peak_rss_kib = svc.rss().1;
        let after = requests();
        figures.upstream_requests_warm = after.0 + after.1 - before.0 - before.1;
        report.process.push(figures);
        drop(svc);
    }
    drop(nginx);

    print_report(&report);
    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json, serde_json::to_vec_pretty(&report)?)?;
    eprintln!("\nJSON written to {}", args.json.display());
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn print_report(r: &Report) {
    println!(
        "\n{:<44} {:>8} {:>4} | {:>9} {:>9} {:>10} | {:>9} {:>9} {:>10} | {:>7} {:>7}",
        "case", "backups", "c", "p50 ms", "p99 ms", "rps", "nginx p50", "nginx p99", "nginx rps", "p50 x", "rps x"
    );
    for row in &r.rows {
        let (np50, np99, nrps) = row.nginx.as_ref().map_or(("-".into(), "-".into(), "-".into()), |n| {
            (format!("{:.3}", n.p50_ms), format!("{:.3}", n.p99_ms), format!("{:.1}", n.rps))
        });
        let ratio = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        println!(
            "{:<44} {:>8} {:>4} | {:>9.3} {:>9.3} {:>10.1} | {:>9} {:>9} {:>10} | {:>7} {:>7}",
            row.name,
            row.backups,
            row.concurrency,
            row.ours.p50_ms,
            row.ours.p99_ms,
            row.ours.rps,
            np50,
            np99,
            nrps,
            ratio(row.p50_ratio),
            ratio(row.rps_ratio)
        );
    }
    println!(
        "\n{:>8} | {:>14} | {:>16} | {:>18} | {:>12} | {:>20} | {:>12} | {:>16}",
        "backups",
        "start→ready ms",
        "Kopia read ms",
        "idle RSS MiB (MB)",
        "peak RSS MiB",
        "cold: find / reads",
        "warm reqs",
        "idle refresh CPU ms"
    );
    for p in &r.process {
        println!(
            "{:>8} | {:>14.1} | {:>16.1} | {:>18} | {:>12.1} | {:>20} | {:>12} | {:>16.2}",
            p.backups,
            p.start_to_ready_ms,
            p.upstream_read_ms,
            format!("{:.1} ({:.1})", p.idle_rss_kib as f64 / 1024.0, p.idle_rss_kib as f64 * 1.024 / 1000.0),
            p.peak_rss_kib as f64 / 1024.0,
            format!("{} / {}", p.find_manifests_cold_start, p.reads_cold_start),
            p.upstream_requests_warm,
            p.idle_refresh_cpu_ms
        );
    }
}
