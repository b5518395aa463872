//! The load generator of the throughput and concurrency cells: `oha` (a Rust HTTP load
//! generator from crates.io that presents client certificates, speaks HTTP/1.1 and HTTP/2, and
//! reports percentiles as JSON). It drives both servers the same way; this module only builds
//! its command line and reads its report.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use klio_api::demo::DemoPki;
use serde_json::Value;

use crate::report::Cell;

/// Where `oha` is and the client identity it presents.
pub struct Oha {
    bin: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// One cell: `concurrency` connections (each with one request at a time) for `time`.
pub struct Load<'a> {
    pub addr: SocketAddr,
    /// The server's process, whose CPU time the cell reads.
    pub pid: u32,
    pub path: &'a str,
    pub accept: &'a str,
    pub concurrency: usize,
    /// HTTP/2 (one connection per client) rather than HTTP/1.1.
    pub http2: bool,
    pub time: Duration,
}

/// A request that takes this long is an error (a hung server does not hang the bench).
const REQUEST_TIMEOUT: &str = "300s";

impl Oha {
    /// `explicit`, else `oha` on the PATH, else where `conformance/bench` installs it.
    pub fn locate(explicit: Option<PathBuf>, pki: &DemoPki) -> Result<Self> {
        let bin = match explicit {
            Some(p) => p,
            None => {
                let on_path = std::env::var_os("PATH")
                    .map(|p| std::env::split_paths(&p).map(|d| d.join("oha")).find(|f| f.is_file()))
                    .unwrap_or_default();
                on_path.unwrap_or_else(|| PathBuf::from("target/tools/bin/oha"))
            }
        };
        if !bin.is_file() {
            bail!("{} not found: conformance/bench installs it (cargo install --locked oha)", bin.display());
        }
        Ok(Self { bin, ca: pki.path("ca.crt"), cert: pki.path("admin.crt"), key: pki.path("admin.key") })
    }

    /// `oha <version>`, as it says.
    pub fn version(&self) -> String {
        Command::new(&self.bin)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|_| "oha".into())
    }

    pub fn run(&self, load: &Load<'_>) -> Result<Cell> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--no-tui", "--output-format", "json", "--ipv4", "-t", REQUEST_TIMEOUT])
            .arg("--cacert")
            .arg(&self.ca)
            .arg("--cert")
            .arg(&self.cert)
            .arg("--key")
            .arg(&self.key)
            .args(["-z", &format!("{}ms", load.time.as_millis()), "-c", &load.concurrency.to_string()])
            .args(["-H", &format!("Accept: {}", load.accept)]);
        // Requests running at the end of the cell are finished and counted, not aborted.
        cmd.arg("-w");
        if load.http2 {
            // One stream at a time on each client's connection.
            cmd.args(["--http2", "-p", "1"]);
        }
        cmd.arg(format!("https://localhost:{}{}", load.addr.port(), load.path));
        let cpu_before = crate::servers::process_cpu(load.pid);
        let out = cmd.output().with_context(|| format!("running {}", self.bin.display()))?;
        let cpu = crate::servers::process_cpu(load.pid).saturating_sub(cpu_before);
        if !out.status.success() {
            bail!("oha failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        let report: Value = serde_json::from_slice(&out.stdout).context("reading oha's JSON report")?;
        let mut cell = parse(&report)?;
        let answered = cell.requests + cell.errors;
        cell.cpu_us_per_request = if answered > 0 { cpu.as_secs_f64() * 1e6 / answered as f64 } else { 0.0 };
        Ok(cell)
    }
}

/// A [`Cell`] from oha's JSON report: only 200s count as requests; other statuses and
/// connection errors are errors.
fn parse(report: &Value) -> Result<Cell> {
    let count = |v: &Value| v.as_u64().unwrap_or(0) as usize;
    let statuses = report["statusCodeDistribution"].as_object().context("no statusCodeDistribution")?;
    let ok = statuses.get("200").map_or(0, count);
    let other: usize = statuses.iter().filter(|(k, _)| *k != "200").map(|(_, v)| count(v)).sum();
    let failed: usize = report["errorDistribution"].as_object().map_or(0, |e| e.values().map(count).sum());
    let seconds = |v: &Value| v.as_f64().unwrap_or(0.0);
    let total = seconds(&report["summary"]["total"]);
    let percentile = |p: &str| seconds(&report["latencyPercentiles"][p]) * 1e3;
    Ok(Cell {
        requests: ok,
        errors: other + failed,
        p50_ms: percentile("p50"),
        p99_ms: percentile("p99"),
        rps: if total > 0.0 { ok as f64 / total } else { 0.0 },
        bytes_per_response: report["summary"]["sizePerRequest"].as_u64().unwrap_or(0) as usize,
        cpu_us_per_request: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_oha_json() {
        let report = serde_json::json!({
            "summary": {"total": 2.0, "sizePerRequest": 833},
            "latencyPercentiles": {"p50": 0.0015, "p99": 0.004},
            "statusCodeDistribution": {"200": 100, "503": 2},
            "errorDistribution": {"aborted due to deadline": 1}
        });
        let cell = parse(&report).unwrap();
        assert_eq!((cell.requests, cell.errors, cell.bytes_per_response), (100, 3, 833));
        assert!((cell.p50_ms - 1.5).abs() < 1e-9 && (cell.p99_ms - 4.0).abs() < 1e-9);
        assert!((cell.rps - 50.0).abs() < 1e-9);
    }
}
