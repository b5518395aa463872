//! The command line, in one typed place. Every flag of `server api-server` also reads the
//! environment variable the product document's Deployment sets, so that Deployment works by
//! swapping the image.

use std::net::IpAddr;
use std::path::PathBuf;

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::catalog::{CatalogOptions, KlioServer};

/// The whole command line: a global log format and one subcommand.
#[derive(Debug, Parser)]
#[command(name = "klio-api", version, about = "Kubernetes aggregated API server for the Klio backup catalog")]
pub struct Cli {
    /// Log format: human-readable text, or one JSON object per line (the container default).
    #[arg(long, global = true, env = "KLIO_API_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written (see [`crate::logging`]).
///
/// The variants' doc comments are for readers of the code only: clap would make them help
/// texts of the possible values, which switches every `--help` to its long layout, so each
/// variant resets that help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    #[value(help = None::<&'static str>)]
    Text,
    /// One JSON object per line, for log collectors.
    #[value(help = None::<&'static str>)]
    Json,
}

/// The subcommands: the product server, the reference Klio server, the demo.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Servers (`server api-server` is the production entry point).
    Server {
        /// Which server.
        #[command(subcommand)]
        which: ServerCommand,
    },
    /// The reference Klio catalog server.
    Catalog {
        /// What to do with a catalog.
        #[command(subcommand)]
        which: CatalogCommand,
    },
    /// Run a self-contained demo on 127.0.0.1: certificates, a sample catalog, the catalog server,
    /// the API service and a kubeconfig.
    Demo(DemoArgs),
}

/// The servers of `klio-api server` (one today).
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Serve kliobackups.kliocatalog.enterprisedb.io/v1alpha1 over HTTPS.
    ApiServer(Box<ApiServerArgs>),
}

/// The subcommands of `klio-api catalog`.
#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Serve a directory of backup records over Kopia's repository protocol, as a Klio server does.
    Serve(CatalogServeArgs),
}

/// `server api-server`'s flags: serving, delegated auth, limits and the Klio servers to read.
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
    /// CA bundle (PEM) that verifies client certificates (CN = user, O = groups); overrides the
    /// client-ca-file of the extension-apiserver-authentication ConfigMap. Re-read when it changes.
    #[arg(long, env = "KLIO_API_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,

    /// Delegated authentication and authorization.
    #[command(flatten)]
    pub auth: AuthArgs,

    /// Requests served at once (watches excepted); more are answered 429 with Retry-After.
    #[arg(long, env = "KLIO_API_MAX_REQUESTS_INFLIGHT", default_value_t = 400)]
    pub max_requests_inflight: usize,
    /// A request (other than a watch) taking longer is answered 504.
    #[arg(long, env = "KLIO_API_REQUEST_TIMEOUT_SECONDS", default_value_t = 60)]
    pub request_timeout_seconds: u64,
    /// On SIGTERM, how long /readyz reports unready before the server stops accepting (lets
    /// endpoints and the aggregation layer move traffic away first).
    #[arg(long, env = "KLIO_API_SHUTDOWN_DELAY_SECONDS", default_value_t = 0)]
    pub shutdown_delay_seconds: u64,
    /// Then how long open requests and watches get to finish before the process exits.
    #[arg(long, env = "KLIO_API_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,

    /// The API group to serve instead of kliocatalog.enterprisedb.io (for one service per Klio
    /// server); the APIService must name the same group.
    #[arg(long, env = "KLIO_API_GROUP")]
    pub api_group: Option<String>,

    /// The Klio servers read and how often.
    #[command(flatten)]
    pub klio: KlioClientArgs,
}

/// Delegated authentication and authorization, named as in k8s.io/apiserver. With a
/// kube-apiserver (in-cluster service account, or a kubeconfig), client CAs come from the
/// `kube-system/extension-apiserver-authentication` ConfigMap, tokens are checked with
/// TokenReview and every request with SubjectAccessReview. Without one, only client
/// certificates authenticate and every authenticated user is allowed.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// kubeconfig for the kube-apiserver used for both delegations (default: in-cluster).
    #[arg(long, env = "KLIO_API_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig for TokenReview and the authentication ConfigMap (default: --kubeconfig).
    #[arg(long)]
    pub authentication_kubeconfig: Option<PathBuf>,
    /// kubeconfig for SubjectAccessReview (default: --kubeconfig).
    #[arg(long)]
    pub authorization_kubeconfig: Option<PathBuf>,
    /// Do not read the extension-apiserver-authentication ConfigMap.
    #[arg(long)]
    pub authentication_skip_lookup: bool,
    /// How often the client CAs (ConfigMap and files) are re-read, in seconds.
    #[arg(long, default_value_t = 30)]
    pub authentication_config_refresh_seconds: u64,
    /// How long TokenReview answers are cached, in seconds.
    #[arg(long, default_value_t = 10)]
    pub authentication_token_webhook_cache_ttl_seconds: u64,
    /// How long an allowed SubjectAccessReview is cached, in seconds.
    #[arg(long, default_value_t = 10)]
    pub authorization_webhook_cache_authorized_ttl_seconds: u64,
    /// How long a denied SubjectAccessReview is cached, in seconds.
    #[arg(long, default_value_t = 10)]
    pub authorization_webhook_cache_unauthorized_ttl_seconds: u64,
    /// Paths anyone may GET without authorization (`prefix*` allowed).
    #[arg(long, value_delimiter = ',', default_value = "/healthz,/livez,/readyz")]
    pub authorization_always_allow_paths: Vec<String>,
    /// Let requests without credentials through as system:anonymous (then authorization
    /// decides). Default: true with a kube-apiserver (as kube), false without one.
    #[arg(long, env = "KLIO_API_ANONYMOUS_AUTH")]
    pub anonymous_auth: Option<bool>,
    /// CA bundle verifying front proxies (the aggregation layer) allowed to name the user in
    /// request headers; overrides the ConfigMap's.
    #[arg(long, env = "KLIO_API_REQUESTHEADER_CLIENT_CA_FILE")]
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// Common names a front proxy certificate may have (empty: any signed by that CA).
    #[arg(long, value_delimiter = ',')]
    pub requestheader_allowed_names: Vec<String>,
    /// Headers naming the user; the first one present with a value wins.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-User")]
    pub requestheader_username_headers: Vec<String>,
    /// Headers naming the groups.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-Group")]
    pub requestheader_group_headers: Vec<String>,
    /// Prefixes of headers carrying extra user attributes.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-Extra-")]
    pub requestheader_extra_headers_prefix: Vec<String>,
}

/// How to reach the Klio server(s); names follow the product document's Deployment. The
/// `CLIENT_BASE_*` variables describe one server; `--klio-server` adds more (or replaces it).
#[derive(Debug, Clone, Args)]
pub struct KlioClientArgs {
    /// Base URL of the (tier-1) Klio server, `https://host:port`.
    #[arg(long = "klio-url", env = "CLIENT_BASE_URL")]
    pub url: Option<String>,
    /// Base URL of the tier-2 Klio server, if any.
    #[arg(long = "klio-tier2-url", env = "CLIENT_BASE_TIER2_URL")]
    pub tier2_url: Option<String>,
    /// Trust anchor for the Klio server: a CA or the server's own self-signed certificate (PEM).
    #[arg(long = "klio-server-cert", env = "CLIENT_BASE_SERVER_CERT_PATH")]
    pub server_cert: Option<PathBuf>,
    /// Client certificate presented to the Klio server (PEM); its CN must be snapshot_reader@<hostname>.
    #[arg(long = "klio-client-cert", env = "CLIENT_BASE_CLIENT_CERT_PATH")]
    pub client_cert: Option<PathBuf>,
    /// Private key of the client certificate (PEM, PKCS#1, PKCS#8 or SEC1).
    #[arg(long = "klio-client-key", env = "CLIENT_BASE_CLIENT_KEY_PATH")]
    pub client_key: Option<PathBuf>,
    /// The Klio hostname the client certificate is issued for (`snapshot_reader@<hostname>`); also
    /// the server's name in labels and `status.server`.
    #[arg(long = "klio-hostname", env = "CLIENT_BASE_HOSTNAME", default_value = "klio")]
    pub hostname: String,
    /// Another Klio server: `name=N,url=https://...[,tier2-url=...][,server-cert=F][,client-cert=F]
    /// [,client-key=F][,hostname=H]`; omitted files and hostname default to the CLIENT_BASE_* ones.
    /// Repeatable. With more than one server, object names are `<server>.<cluster>.<backupID>`.
    #[arg(long = "klio-server", env = "KLIO_API_KLIO_SERVERS", value_delimiter = ';', value_parser = parse_server_spec)]
    pub servers: Vec<ServerSpec>,
    /// Timeout of one request to the Klio server, in seconds.
    #[arg(long = "klio-timeout-seconds", env = "KLIO_API_KLIO_TIMEOUT_SECONDS", default_value_t = 30)]
    pub timeout_seconds: u64,
    /// How often the catalog is read again, in seconds (conditional requests: an unchanged catalog
    /// costs a 304).
    #[arg(long = "catalog-refresh-seconds", env = "KLIO_API_CATALOG_REFRESH_SECONDS", default_value_t = 10)]
    pub refresh_seconds: u64,
    /// How many catalog revisions are kept for watches and continue tokens.
    #[arg(long = "catalog-history", env = "KLIO_API_CATALOG_HISTORY", default_value_t = 100)]
    pub history: usize,
}

/// One Klio server as given with `--klio-server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// `name=`: the server's label value, and the object name prefix with several servers.
    pub name: String,
    /// `url=`: tier 1's Kopia repository server.
    pub url: String,
    /// `tier2-url=`.
    pub tier2_url: Option<String>,
    /// `server-cert=`; `None`: `--klio-server-cert`.
    pub server_cert: Option<PathBuf>,
    /// `client-cert=`; `None`: `--klio-client-cert`.
    pub client_cert: Option<PathBuf>,
    /// `client-key=`; `None`: `--klio-client-key`.
    pub client_key: Option<PathBuf>,
    /// `hostname=`; `None`: `--klio-hostname`.
    pub hostname: Option<String>,
}

fn parse_server_spec(text: &str) -> Result<ServerSpec, String> {
    let mut spec = ServerSpec {
        name: String::new(),
        url: String::new(),
        tier2_url: None,
        server_cert: None,
        client_cert: None,
        client_key: None,
        hostname: None,
    };
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or_else(|| format!("{pair:?} is not key=value"))?;
        let value = value.trim().to_string();
        match key.trim() {
            "name" => spec.name = value,
            "url" => spec.url = value,
            "tier2-url" => spec.tier2_url = Some(value),
            "server-cert" => spec.server_cert = Some(value.into()),
            "client-cert" => spec.client_cert = Some(value.into()),
            "client-key" => spec.client_key = Some(value.into()),
            "hostname" => spec.hostname = Some(value),
            other => {
                return Err(format!(
                "unknown key {other:?} (known: name, url, tier2-url, server-cert, client-cert, client-key, hostname)"
            ))
            }
        }
    }
    if !is_label_value(&spec.name) {
        return Err(format!(
            "name {:?} must be a valid label value (letters, digits, '-', '_', '.', at most 63)",
            spec.name
        ));
    }
    if spec.url.is_empty() {
        return Err("url is required".into());
    }
    Ok(spec)
}

/// A Kubernetes label value (and so usable in names and selectors).
pub fn is_label_value(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 63
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && v.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// A Klio URL must not carry `user:password@`: the client certificate is the credential, and a
/// password in a URL ends up in error messages and logs. The URL itself is not repeated.
fn refuse_credentials_in_url(what: &str, url: &str) -> anyhow::Result<()> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        anyhow::bail!(
            "{what} must not hold user information (user:password@): the Klio server is read with the client certificate"
        );
    }
    Ok(())
}

/// `catalog serve`'s flags: the records directory, TLS and the repository's ACLs.
#[derive(Debug, Clone, Args)]
pub struct CatalogServeArgs {
    /// Directory of backup metadata records: `<cluster>/<backup>.json`, each the `metadata.json`
    /// of one backup as Klio writes it. Served as Klio's snapshots of each backup (metadata,
    /// PGDATA, pg_control, one per tablespace). An optional `.snapshot-ids.json` fixes the
    /// manifest IDs of data snapshots: `{"<cluster>/<backup>": {"pgdata": ID, "controldata": ID,
    /// "tablespaces": {"<name>": ID}}}`; other IDs are derived from the directory and the records.
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
    /// Users (`user@host`) granted READ on every snapshot, as Klio 0.0.7 to 0.0.12 set up its
    /// repositories' ACLs. Everyone else sees only the snapshots of their own user and host.
    #[arg(long, value_delimiter = ',', default_value = "snapshot_reader@klio")]
    pub acl_readers: Vec<String>,
    /// Serve a repository without ACL entries, as Klio 0.0.13 and later create them: every user
    /// sees only the snapshots of their own user and host (the reader sees none).
    #[arg(long, conflicts_with = "acl_readers")]
    pub no_acl: bool,
    /// Files larger than this are stored as indirect objects (parts of this size and an index).
    #[arg(long, default_value_t = 4 << 20, value_parser = clap::value_parser!(u64).range(64..=(16 << 20)))]
    pub split_bytes: u64,
}

/// `demo`'s flags.
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

impl AuthArgs {
    /// No kube-apiserver: client certificates from `--client-ca-file` only (the demo, tests).
    pub fn standalone() -> Self {
        Self {
            kubeconfig: None,
            authentication_kubeconfig: None,
            authorization_kubeconfig: None,
            authentication_skip_lookup: true,
            authentication_config_refresh_seconds: 30,
            authentication_token_webhook_cache_ttl_seconds: 10,
            authorization_webhook_cache_authorized_ttl_seconds: 10,
            authorization_webhook_cache_unauthorized_ttl_seconds: 10,
            authorization_always_allow_paths: vec!["/healthz".into(), "/livez".into(), "/readyz".into()],
            anonymous_auth: None,
            requestheader_client_ca_file: None,
            requestheader_allowed_names: vec![],
            requestheader_username_headers: vec!["X-Remote-User".into()],
            requestheader_group_headers: vec!["X-Remote-Group".into()],
            requestheader_extra_headers_prefix: vec!["X-Remote-Extra-".into()],
        }
    }
}

impl KlioClientArgs {
    /// How the catalog refreshes and how much history it keeps.
    pub fn catalog_options(&self) -> CatalogOptions {
        CatalogOptions { refresh_interval: Duration::from_secs(self.refresh_seconds), history: self.history }
    }

    /// The configured servers, every field resolved and checked, before any connection is made.
    pub fn resolve(&self) -> anyhow::Result<Vec<KlioServer>> {
        if self.timeout_seconds == 0 {
            anyhow::bail!("--klio-timeout-seconds must be at least 1");
        }
        if self.refresh_seconds == 0 {
            anyhow::bail!("--catalog-refresh-seconds must be at least 1");
        }
        let mut specs = self.servers.clone();
        for (name, url) in
            [("CLIENT_BASE_URL (--klio-url)", &self.url), ("CLIENT_BASE_TIER2_URL (--klio-tier2-url)", &self.tier2_url)]
        {
            if let Some(url) = url {
                refuse_credentials_in_url(name, url)?;
            }
            if let Some(url) = url.as_ref().filter(|u| !u.starts_with("https://")) {
                anyhow::bail!(
                    "{name} must be an https:// URL (got {url:?}): the Klio server is only read over mutual TLS"
                );
            }
        }
        if let Some(url) = &self.url {
            if !is_label_value(&self.hostname) {
                anyhow::bail!("CLIENT_BASE_HOSTNAME {:?} must be a valid label value", self.hostname);
            }
            specs.insert(
                0,
                ServerSpec {
                    name: self.hostname.clone(),
                    url: url.clone(),
                    tier2_url: self.tier2_url.clone(),
                    server_cert: None,
                    client_cert: None,
                    client_key: None,
                    hostname: None,
                },
            );
        } else if self.tier2_url.is_some() {
            anyhow::bail!("CLIENT_BASE_TIER2_URL is set without CLIENT_BASE_URL");
        }
        if specs.is_empty() {
            anyhow::bail!("no Klio server configured: set CLIENT_BASE_URL (--klio-url) or --klio-server");
        }
        let mut resolved = vec![];
        for spec in specs {
            for (what, url) in
                std::iter::once(("url", &spec.url)).chain(spec.tier2_url.iter().map(|u| ("tier-2 url", u)))
            {
                refuse_credentials_in_url(&format!("Klio server {}: the {what}", spec.name), url)?;
                if !url.starts_with("https://") {
                    anyhow::bail!(
                        "Klio server {}: the {what} must be an https:// URL (got {url:?}): the Klio server is only read over mutual TLS",
                        spec.name
                    );
                }
            }
            let file = |own: &Option<PathBuf>, global: &Option<PathBuf>, what: &str| {
                own.clone().or_else(|| global.clone()).ok_or_else(|| {
                    anyhow::anyhow!(
                        "Klio server {}: no {what} (set it in --klio-server or with the CLIENT_BASE_* variable)",
                        spec.name
                    )
                })
            };
            resolved.push(KlioServer {
                server_cert: file(
                    &spec.server_cert,
                    &self.server_cert,
                    "server certificate (CLIENT_BASE_SERVER_CERT_PATH)",
                )?,
                client_cert: file(
                    &spec.client_cert,
                    &self.client_cert,
                    "client certificate (CLIENT_BASE_CLIENT_CERT_PATH)",
                )?,
                client_key: file(&spec.client_key, &self.client_key, "client key (CLIENT_BASE_CLIENT_KEY_PATH)")?,
                hostname: spec.hostname.clone().unwrap_or_else(|| self.hostname.clone()),
                name: spec.name,
                url: spec.url,
                tier2_url: spec.tier2_url,
                timeout_seconds: self.timeout_seconds,
            });
        }
        Ok(resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_specs() {
        let s = parse_server_spec("name=east,url=https://a:1,tier2-url=https://b:2,client-cert=/c").unwrap();
        assert_eq!(
            (s.name.as_str(), s.url.as_str(), s.tier2_url.as_deref()),
            ("east", "https://a:1", Some("https://b:2"))
        );
        assert_eq!(s.client_cert, Some(PathBuf::from("/c")));
        assert!(parse_server_spec("url=https://a").unwrap_err().contains("name"));
        assert!(parse_server_spec("name=x").unwrap_err().contains("url is required"));
        assert!(parse_server_spec("name=x,url=https://a,colour=red").unwrap_err().contains("unknown key"));
        assert!(parse_server_spec("name=-x,url=https://a").is_err());
    }

    #[test]
    fn urls_with_credentials_are_refused_without_repeating_them() {
        assert!(refuse_credentials_in_url("u", "https://klio:8443/catalog").is_ok());
        assert!(refuse_credentials_in_url("u", "https://klio:8443/a@b?x=@").is_ok(), "an @ past the host is no user");
        for bad in ["https://user:s3cret@klio:8443", "https://user@klio", "https://:s3cret@klio/x"] {
            let err = refuse_credentials_in_url("CLIENT_BASE_URL", bad).unwrap_err().to_string();
            assert!(err.contains("CLIENT_BASE_URL") && !err.contains("s3cret") && !err.contains("user@"), "{err}");
        }
    }
}
