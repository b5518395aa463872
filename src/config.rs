//! The command line, in one typed place. Every flag of `server api-server` also reads the
//! environment variable the product document's Deployment sets, so that Deployment works by
//! swapping the image.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "klio-api", version, about = "Kubernetes aggregated API server for the Klio backup catalog")]
pub struct Cli {
    /// Log format: human-readable text, or one JSON object per line (the container default).
    #[arg(long, global = true, env = "KLIO_API_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Servers (`server api-server` is the production entry point).
    Server {
        #[command(subcommand)]
        which: ServerCommand,
    },
    /// The reference Klio catalog server.
    Catalog {
        #[command(subcommand)]
        which: CatalogCommand,
    },
    /// Run a self-contained demo on 127.0.0.1: certificates, a sample catalog, the catalog server,
    /// the API service and a kubeconfig.
    Demo(DemoArgs),
}

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Serve kliobackups.kliocatalog.enterprisedb.io/v1alpha1 over HTTPS.
    ApiServer(ApiServerArgs),
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Serve the catalog contract (GET /catalog/v1/backups) over a directory of backup records.
    Serve(CatalogServeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ApiServerArgs {
    /// Address to listen on.
    #[arg(long, env = "KLIO_API_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// HTTPS port to listen on.
    #[arg(long, env = "KLIO_API_SECURE_PORT", default_value_t = 443)]
    pub secure_port: u16,
    /// Serving certificate (PEM, leaf first). Without it a self-signed one is generated in memory.
    #[arg(long, env = "CLIENT_BASE_API_SERVER_CERTFILE", requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Serving private key (PEM).
    #[arg(long, env = "CLIENT_BASE_API_SERVER_KEYFILE", requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// CA bundle (PEM) that verifies client certificates; the certificate's CN is the user name and
    /// its O entries the groups. Without it no client can authenticate (every API request gets 401).
    #[arg(long, env = "KLIO_API_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,

    #[command(flatten)]
    pub klio: KlioClientArgs,
}

/// How to reach the Klio server(s); names follow the product document's Deployment.
#[derive(Debug, Clone, Args)]
pub struct KlioClientArgs {
    /// Base URL of the (tier-1) Klio server, `https://host:port`.
    #[arg(long = "klio-url", env = "CLIENT_BASE_URL")]
    pub url: String,
    /// Base URL of the tier-2 Klio server, if any.
    #[arg(long = "klio-tier2-url", env = "CLIENT_BASE_TIER2_URL")]
    pub tier2_url: Option<String>,
    /// Trust anchor for the Klio server: a CA or the server's own self-signed certificate (PEM).
    #[arg(long = "klio-server-cert", env = "CLIENT_BASE_SERVER_CERT_PATH")]
    pub server_cert: PathBuf,
    /// Client certificate presented to the Klio server (PEM); its CN must be snapshot_reader@<hostname>.
    #[arg(long = "klio-client-cert", env = "CLIENT_BASE_CLIENT_CERT_PATH")]
    pub client_cert: PathBuf,
    /// Private key of the client certificate (PEM, PKCS#1, PKCS#8 or SEC1).
    #[arg(long = "klio-client-key", env = "CLIENT_BASE_CLIENT_KEY_PATH")]
    pub client_key: PathBuf,
    /// The Klio hostname the client certificate is issued for (`snapshot_reader@<hostname>`).
    #[arg(long = "klio-hostname", env = "CLIENT_BASE_HOSTNAME", default_value = "klio")]
    pub hostname: String,
    /// Timeout of one request to the Klio server, in seconds.
    #[arg(long = "klio-timeout-seconds", env = "KLIO_API_KLIO_TIMEOUT_SECONDS", default_value_t = 30)]
    pub timeout_seconds: u64,
}

#[derive(Debug, Clone, Args)]
pub struct CatalogServeArgs {
    /// Directory of backup metadata records (one JSON record per file, subfolders allowed).
    #[arg(long)]
    pub dir: PathBuf,
    /// Address to listen on, host:port.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: std::net::SocketAddr,
    /// Serving certificate (PEM).
    #[arg(long)]
    pub tls_cert_file: PathBuf,
    /// Serving private key (PEM).
    #[arg(long)]
    pub tls_private_key_file: PathBuf,
    /// CA bundle that client certificates must verify against (they are required).
    #[arg(long)]
    pub client_ca_file: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Where to write certificates, the sample catalog and the kubeconfig (default: a new
    /// directory under the system temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// HTTPS port of the API service (0 picks a free one).
    #[arg(long, default_value_t = 6443)]
    pub port: u16,
}

impl KlioClientArgs {
    /// Checks what can be checked before any connection is made.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, url) in std::iter::once(("CLIENT_BASE_URL", &self.url))
            .chain(self.tier2_url.iter().map(|u| ("CLIENT_BASE_TIER2_URL", u)))
        {
            if !url.starts_with("https://") {
                anyhow::bail!(
                    "{name} must be an https:// URL (got {url:?}): the Klio server is only read over mutual TLS"
                );
            }
        }
        if self.timeout_seconds == 0 {
            anyhow::bail!("--klio-timeout-seconds must be at least 1");
        }
        Ok(())
    }
}
