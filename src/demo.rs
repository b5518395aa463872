//! `klio-api demo`: everything on 127.0.0.1 in one process. A CA and certificates, a sample
//! catalog (tier 1 and tier 2), two reference catalog servers, the API service, and a kubeconfig
//! with an admin client certificate.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::json;
use tokio::sync::watch;

use crate::apiserver::ApiServer;
use crate::config::{ApiServerArgs, CatalogServeArgs, DemoArgs, KlioClientArgs};
use crate::pki::{KeyPair, Usage};
use crate::upstream::kopia::reader::{ReadOutcome, SourceBackup};
use crate::upstream::kopia::server::KopiaServer;

/// The files a demo (or a test) needs: one CA for everything, which keeps the example short.
pub struct DemoPki {
    /// The directory given to [`DemoPki::create`]; the files are under its `pki/`.
    pub dir: PathBuf,
}

impl DemoPki {
    /// The file `name` (`ca.crt`, `admin.key`, ...) of the PKI.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join("pki").join(name)
    }

    /// Writes `ca.crt`, the catalog server's, the Klio client's, the API service's and an admin
    /// user's certificate and key under `dir/pki`.
    pub fn create(dir: &Path) -> Result<Self> {
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki).with_context(|| format!("creating {}", pki.display()))?;
        let ca = KeyPair::new_ca("klio-demo-ca")?;
        let write = |name: &str, pair: &KeyPair| -> Result<()> {
            std::fs::write(pki.join(format!("{name}.crt")), pair.cert_pem())?;
            write_private(&pki.join(format!("{name}.key")), &pair.key_pem())
        };
        std::fs::write(pki.join("ca.crt"), ca.cert_pem())?;
        write_private(&pki.join("ca.key"), &ca.key_pem())?;
        let local = ["localhost", "127.0.0.1"];
        write("catalog-server", &ca.issue("klio-catalog", &[], &local, Usage::Server)?)?;
        write("klio-client", &ca.issue("snapshot_reader@klio", &[], &[], Usage::Client)?)?;
        write("api-server", &ca.issue("klio-api", &[], &local, Usage::Server)?)?;
        write("admin", &ca.issue("demo-admin", &["system:masters"], &[], Usage::Client)?)?;
        // A front-proxy CA of its own, as a cluster has: what the aggregation layer presents
        // when it forwards a request with X-Remote-User/X-Remote-Group.
        let front_proxy_ca = KeyPair::new_ca("klio-demo-front-proxy-ca")?;
        std::fs::write(pki.join("front-proxy-ca.crt"), front_proxy_ca.cert_pem())?;
        write("front-proxy-client", &front_proxy_ca.issue("front-proxy-client", &[], &[], Usage::Client)?)?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    /// How the API service reaches the catalog servers with these certificates.
    pub fn klio_client_args(&self, url: String, tier2_url: Option<String>) -> KlioClientArgs {
        KlioClientArgs {
            url: Some(url),
            tier2_url,
            server_cert: Some(self.path("ca.crt")),
            client_cert: Some(self.path("klio-client.crt")),
            client_key: Some(self.path("klio-client.key")),
            hostname: "klio".into(),
            servers: vec![],
            timeout_seconds: 10,
            refresh_seconds: 2,
            history: 100,
        }
    }

    /// How a reference catalog server serves the repository in `dir` with these certificates,
    /// on a free port of 127.0.0.1, the Klio client's identity reading every snapshot.
    pub fn catalog_serve_args(&self, dir: PathBuf) -> CatalogServeArgs {
        CatalogServeArgs {
            dir,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            tls_cert_file: self.path("catalog-server.crt"),
            tls_private_key_file: self.path("catalog-server.key"),
            client_ca_file: self.path("ca.crt"),
            acl_readers: vec!["snapshot_reader@klio".into()],
            no_acl: false,
            split_bytes: 4 << 20,
        }
    }

    /// A kubeconfig for the admin user against `server`.
    pub fn write_kubeconfig(&self, server: &str) -> Result<PathBuf> {
        use base64_like::encode;
        let read = |n: &str| std::fs::read(self.path(n)).with_context(|| format!("reading {n}"));
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": "klio-demo", "cluster": { "server": server, "certificate-authority-data": encode(&read("ca.crt")?) } }],
            "users": [{ "name": "demo-admin", "user": {
                "client-certificate-data": encode(&read("admin.crt")?),
                "client-key-data": encode(&read("admin.key")?),
            } }],
            "contexts": [{ "name": "klio-demo", "context": { "cluster": "klio-demo", "user": "demo-admin" } }],
            "current-context": "klio-demo",
        });
        let path = self.dir.join("kubeconfig");
        write_private(&path, serde_json::to_string_pretty(&config)?.as_bytes())?;
        Ok(path)
    }
}

/// Base64 through openssl, which is already linked (kubeconfig `*-data` fields).
mod base64_like {
    pub fn encode(bytes: &[u8]) -> String {
        openssl::base64::encode_block(bytes)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(bytes).with_context(|| format!("writing {}", path.display()))
}

pub use crate::upstream::record::sample_record;

/// The product document's backup and the Kopia manifest IDs its `-o yaml` shows.
pub const EXAMPLE_SNAPSHOT_IDS: (&str, &str, &str) =
    ("cluster-example/backup-20251113093137", "2272afec220f48d0fa0064f85b043ac4", "f055f78fb1db512b39e695465fa26ead");

/// Writes the demo catalog: the product document's backup, more clusters, tier-2 copies.
pub fn write_sample_catalog(tier1: &Path, tier2: &Path) -> Result<()> {
    let put = |dir: &Path, record: &serde_json::Value| -> Result<()> {
        let cluster_dir = dir.join(record["clusterName"].as_str().unwrap_or_default());
        std::fs::create_dir_all(&cluster_dir)?;
        let file = cluster_dir.join(format!("{}.json", record["name"].as_str().unwrap_or_default()));
        std::fs::write(&file, serde_json::to_vec_pretty(record)?).with_context(|| format!("writing {}", file.display()))
    };
    // The product document's example, field for field.
    let mut example = sample_record("cluster-example", "backup-20251113093137", 1_763_026_297, 2, 7, false);
    example["startLsn"] = json!(117_440_552u64);
    example["endLsn"] = json!(117_440_800u64);
    example["startWal"] = json!("000000010000000000000007");
    example["endWal"] = json!("000000010000000000000007");
    put(tier1, &example)?;
    // Fixed repository keys: the derived snapshot IDs are the same in every demo (and in the
    // documentation's examples).
    for (dir, name) in [(tier1, "tier1"), (tier2, "tier2")] {
        let key = openssl::sha::sha256(format!("klio-api demo repository {name}").as_bytes());
        crate::upstream::kopia::server::repository::write_key(dir, &key)?;
    }
    // Its PGDATA and pg_control snapshots have the IDs the product document shows.
    let (key, pgdata, controldata) = EXAMPLE_SNAPSHOT_IDS;
    let ids = json!({ key: { "pgdata": pgdata, "controldata": controldata } });
    let ids_file = tier1.join(crate::upstream::kopia::server::repository::SNAPSHOT_IDS_FILE);
    std::fs::write(&ids_file, serde_json::to_vec_pretty(&ids)?)
        .with_context(|| format!("writing {}", ids_file.display()))?;
    put(tier1, &sample_record("cluster-example", "backup-20251114093000", 1_763_112_600, 3, 9, false))?;
    // Older backups of cluster-example were moved to tier 2 only.
    put(tier2, &sample_record("cluster-example", "backup-20251101020000", 1_761_962_400, 95, 3, false))?;
    // A cluster with a tablespace, its last backup on both tiers.
    let both = sample_record("pg-analytics", "backup-20251120010000", 1_763_600_400, 754, 0x2A, true);
    put(tier1, &both)?;
    put(tier2, &both)?;
    put(tier1, &sample_record("pg-analytics", "backup-20251121010000", 1_763_686_800, 812, 0x31, true))?;
    put(tier1, &sample_record("pg-orders", "backup-20251122003000", 1_763_771_400, 41, 0x10, false))?;
    Ok(())
}

/// `klio-api demo`.
pub async fn run(args: DemoArgs, shutdown: watch::Receiver<bool>) -> Result<()> {
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("klio-api-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let pki = DemoPki::create(&dir)?;
    let (tier1, tier2) = (dir.join("catalog/tier1"), dir.join("catalog/tier2"));
    if !tier1.exists() {
        std::fs::create_dir_all(&tier1)?;
        std::fs::create_dir_all(&tier2)?;
        write_sample_catalog(&tier1, &tier2)?;
    }
    std::fs::create_dir_all(&tier2)?;

    let mut tasks = tokio::task::JoinSet::new();
    let mut urls = vec![];
    for catalog_dir in [&tier1, &tier2] {
        let server = KopiaServer::bind(&pki.catalog_serve_args(catalog_dir.clone())).await?;
        urls.push(format!("https://127.0.0.1:{}", server.local_addr().port()));
        tasks.spawn(server.serve(shutdown.clone()));
    }
    let api_args = ApiServerArgs {
        bind_address: Ipv4Addr::LOCALHOST.into(),
        secure_port: args.port,
        tls_cert_file: Some(pki.path("api-server.crt")),
        tls_private_key_file: Some(pki.path("api-server.key")),
        client_ca_file: Some(pki.path("ca.crt")),
        api_group: None,
        auth: crate::config::AuthArgs {
            requestheader_client_ca_file: Some(pki.path("front-proxy-ca.crt")),
            requestheader_allowed_names: vec!["front-proxy-client".into()],
            ..crate::config::AuthArgs::standalone()
        },
        max_requests_inflight: 400,
        request_timeout_seconds: 60,
        shutdown_delay_seconds: 0,
        shutdown_grace_seconds: 5,
        klio: pki.klio_client_args(urls[0].clone(), Some(urls[1].clone())),
    };
    let api = ApiServer::bind(&api_args).await?;
    let server_url = format!("https://127.0.0.1:{}", api.local_addr().port());
    let kubeconfig = pki.write_kubeconfig(&server_url)?;
    tasks.spawn(api.serve(shutdown.clone()));

    println!(
        "\nKlio API service demo\n  API service:      {server_url}\n  Klio servers:     {} (tier 1), {} (tier 2), Kopia protocol\n  backup records:   {} and {}\n  kubeconfig:       {}\n\nTry:\n  export KUBECONFIG={}\n  kubectl get kliobackups\n  kubectl get kliobackups -o wide\n  kubectl get kliobackup cluster-example.backup-20251113093137 -o yaml\n  kubectl explain kliobackup.status --recursive\n\nAdd or remove backup records (<cluster>/<backup>.json) under the catalog directories and list again. Ctrl-C stops the demo.\n",
        urls[0],
        urls[1],
        tier1.display(),
        tier2.display(),
        kubeconfig.display(),
        kubeconfig.display(),
    );
    while let Some(done) = tasks.join_next().await {
        done.context("a demo task panicked")??;
    }
    Ok(())
}

/// Reads the sample catalog as the service does, over the Kopia protocol from two servers of our
/// own on 127.0.0.1 (the documentation's examples come from here). Tier 1, then tier 2.
pub fn read_sample_catalog() -> Result<[Vec<Arc<SourceBackup>>; 2]> {
    // A runtime of its own, on a thread of its own: callers may be inside another runtime.
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            let dir = std::env::temp_dir().join(format!("klio-api-sample-{}-{nanos}", std::process::id()));
            let result = read_sample_catalog_in(&dir).await;
            let _ = std::fs::remove_dir_all(&dir);
            result
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("reading the sample catalog panicked"))?
}

async fn read_sample_catalog_in(dir: &Path) -> Result<[Vec<Arc<SourceBackup>>; 2]> {
    let pki = DemoPki::create(dir)?;
    let (tier1, tier2) = (dir.join("catalog/tier1"), dir.join("catalog/tier2"));
    std::fs::create_dir_all(&tier1)?;
    std::fs::create_dir_all(&tier2)?;
    write_sample_catalog(&tier1, &tier2)?;
    let (stop, stopped) = watch::channel(false);
    let mut tiers = [vec![], vec![]];
    for (tier, catalog_dir) in [&tier1, &tier2].into_iter().enumerate() {
        let server = KopiaServer::bind(&pki.catalog_serve_args(catalog_dir.clone())).await?;
        let url = format!("https://127.0.0.1:{}", server.local_addr().port());
        tokio::spawn(server.serve(stopped.clone()));
        let resolved = pki.klio_client_args(url, None).resolve()?;
        let mut reader = crate::catalog::ServerConfig::new(&resolved[0])?.tier1;
        if let ReadOutcome::Changed { backups, .. } =
            reader.read().await.map_err(|e| anyhow::anyhow!("reading the sample catalog: {e}"))?
        {
            tiers[tier] = backups;
        }
    }
    let _ = stop.send(true);
    Ok(tiers)
}
