//! The two servers measured side by side: the API service (a child process) and nginx serving
//! the same bytes as static files, with the same certificate and client-certificate
//! verification, HTTP/1.1 and HTTP/2 by ALPN on both.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use klio_api::demo::DemoPki;

use crate::client::Client;

/// The API service as a child process.
pub struct Service {
    child: Child,
    pub addr: SocketAddr,
    started: Instant,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

impl Service {
    /// A service that does not refresh its catalog while measured.
    pub fn start(binary: &Path, pki: &DemoPki, catalog_url: &str) -> Result<Self> {
        Self::start_refreshing(binary, pki, catalog_url, 3600)
    }

    pub fn start_refreshing(binary: &Path, pki: &DemoPki, catalog_url: &str, refresh_seconds: u64) -> Result<Self> {
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Time from process start until /readyz answers 200.
    pub async fn wait_ready(&self, client: &Client) -> Result<Duration> {
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
    pub fn rss(&self) -> (u64, u64) {
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

    /// Starts a new peak: VmHWM becomes the current RSS (`clear_refs` 5).
    pub fn reset_peak(&self) -> Result<()> {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5").context("resetting the peak RSS")
    }

    /// User + system CPU time so far.
    pub fn cpu(&self) -> Duration {
        process_cpu(self.child.id())
    }
}

/// User + system CPU time of process `pid` so far (all its threads).
pub fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ")".
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// nginx serving files with the same TLS settings.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// Its one process (no master: the worker itself).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One worker (the service has one process too), files from `dir/www`, HTTP/1.1 and HTTP/2.
    pub fn start(binary: &str, dir: &Path, pki: &DemoPki) -> Result<Self> {
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
        listen 127.0.0.1:{port} ssl http2;
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
            .with_context(|| format!("starting {binary} (install it: apt-get install -y nginx-light)"))?;
        Ok(Self { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) })
    }
}
