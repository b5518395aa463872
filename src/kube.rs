//! A small blocking client of the kube-apiserver, for what delegation needs: the
//! `extension-apiserver-authentication` ConfigMap, TokenReviews and SubjectAccessReviews.
//! Configuration comes from a kubeconfig (`--authentication-kubeconfig`, `--kubeconfig`) or from
//! the pod's service account (in-cluster). Callers run it inside `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::authorization::v1::{SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus};
use k8s_openapi::api::core::v1::ConfigMap;
use serde::Deserialize;

const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Answers of the kube-apiserver are small; anything larger is refused.
const MAX_BODY_BYTES: u64 = 4 * 1024 * 1024;

/// How requests authenticate to the kube-apiserver.
enum Credentials {
    /// A token file, re-read on every request (bound service-account tokens rotate).
    TokenFile(PathBuf),
    Token(String),
    /// The client certificate is part of the TLS configuration.
    ClientCertificate,
    None,
}

/// A kube-apiserver endpoint and the means to call it.
pub struct KubeClient {
    server: String,
    agent: ureq::Agent,
    credentials: Credentials,
}

#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(rename = "current-context", default)]
    current_context: String,
    #[serde(default)]
    clusters: Vec<Named<KubeconfigCluster>>,
    #[serde(default)]
    users: Vec<Named<KubeconfigUser>>,
    #[serde(default)]
    contexts: Vec<Named<KubeconfigContext>>,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    value: T,
}

#[derive(Deserialize, Default)]
struct KubeconfigCluster {
    server: String,
    #[serde(rename = "certificate-authority", default)]
    certificate_authority: Option<PathBuf>,
    #[serde(rename = "certificate-authority-data", default)]
    certificate_authority_data: Option<String>,
}

#[derive(Deserialize, Default)]
struct KubeconfigUser {
    #[serde(default)]
    token: Option<String>,
    #[serde(rename = "tokenFile", default)]
    token_file: Option<PathBuf>,
    #[serde(rename = "client-certificate", default)]
    client_certificate: Option<PathBuf>,
    #[serde(rename = "client-certificate-data", default)]
    client_certificate_data: Option<String>,
    #[serde(rename = "client-key", default)]
    client_key: Option<PathBuf>,
    #[serde(rename = "client-key-data", default)]
    client_key_data: Option<String>,
}

#[derive(Deserialize, Default)]
struct KubeconfigContext {
    cluster: String,
    #[serde(default)]
    user: String,
}

fn base64_data(text: &str, what: &str) -> Result<Vec<u8>> {
    let clean: String = text.split_whitespace().collect();
    openssl::base64::decode_block(&clean).map_err(|e| anyhow!("{what} is not base64: {e}"))
}

/// Reads a file named in a kubeconfig, relative to the kubeconfig's directory.
fn read_relative(base: &Path, file: &Path) -> Result<Vec<u8>> {
    let path = if file.is_absolute() { file.to_path_buf() } else { base.join(file) };
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

impl KubeClient {
    /// From a kubeconfig file (its current context).
    pub fn from_kubeconfig(path: &Path, timeout: Duration) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
        let config: Kubeconfig =
            serde_saphyr::from_str(&text).map_err(|e| anyhow!("parsing kubeconfig {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let context = config
            .contexts
            .iter()
            .find(|c| c.name == config.current_context)
            .or_else(|| config.contexts.first())
            .ok_or_else(|| anyhow!("kubeconfig {} has no context", path.display()))?;
        let cluster = config
            .clusters
            .iter()
            .find(|c| c.name == context.value.cluster)
            .ok_or_else(|| anyhow!("kubeconfig {}: no cluster {:?}", path.display(), context.value.cluster))?;
        let user = config.users.iter().find(|u| u.name == context.value.user).map(|u| &u.value);
        let ca = match (&cluster.value.certificate_authority_data, &cluster.value.certificate_authority) {
            (Some(data), _) => Some(base64_data(data, "certificate-authority-data")?),
            (None, Some(file)) => Some(read_relative(base, file)?),
            (None, None) => None,
        };
        let (client_cert, credentials) = match user {
            Some(u) => {
                let cert = match (&u.client_certificate_data, &u.client_certificate) {
                    (Some(d), _) => Some(base64_data(d, "client-certificate-data")?),
                    (None, Some(f)) => Some(read_relative(base, f)?),
                    _ => None,
                };
                let key = match (&u.client_key_data, &u.client_key) {
                    (Some(d), _) => Some(base64_data(d, "client-key-data")?),
                    (None, Some(f)) => Some(read_relative(base, f)?),
                    _ => None,
                };
                match (cert, key, &u.token, &u.token_file) {
                    (Some(c), Some(k), _, _) => (Some((c, k)), Credentials::ClientCertificate),
                    (_, _, Some(t), _) => (None, Credentials::Token(t.clone())),
                    (_, _, None, Some(f)) => {
                        (None, Credentials::TokenFile(if f.is_absolute() { f.clone() } else { base.join(f) }))
                    }
                    _ => (None, Credentials::None),
                }
            }
            None => (None, Credentials::None),
        };
        Self::new(&cluster.value.server, ca.as_deref(), client_cert, credentials, timeout)
    }

    /// From the pod's service account, when running in a cluster.
    pub fn in_cluster(timeout: Duration) -> Result<Option<Self>> {
        let (Ok(host), Ok(port)) = (std::env::var("KUBERNETES_SERVICE_HOST"), std::env::var("KUBERNETES_SERVICE_PORT"))
        else {
            return Ok(None);
        };
        let dir = Path::new(SERVICE_ACCOUNT_DIR);
        let ca = std::fs::read(dir.join("ca.crt")).context("reading the service account's ca.crt")?;
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        let client = Self::new(
            &format!("https://{host}:{port}"),
            Some(&ca),
            None,
            Credentials::TokenFile(dir.join("token")),
            timeout,
        )?;
        Ok(Some(client))
    }

    fn new(
        server: &str,
        ca_pem: Option<&[u8]>,
        client_cert: Option<(Vec<u8>, Vec<u8>)>,
        credentials: Credentials,
        timeout: Duration,
    ) -> Result<Self> {
        if !server.starts_with("https://") {
            bail!("the Kubernetes API server {server:?} must be an https:// URL");
        }
        use crate::upstream_tls::{agent_config, certificates_from_pem, ClientTlsConfig, OpensslConnector};
        let roots = match ca_pem {
            Some(pem) => {
                let roots = certificates_from_pem(pem).unwrap_or_default();
                if roots.is_empty() {
                    bail!("the Kubernetes API CA bundle holds no certificate");
                }
                Some(roots)
            }
            None => None,
        };
        let identity = match client_cert {
            Some((cert, key)) => {
                let chain = certificates_from_pem(&cert).context("parsing the kubeconfig client certificate")?;
                let key =
                    openssl::pkey::PKey::private_key_from_pem(&key).context("parsing the kubeconfig client key")?;
                Some((chain, key))
            }
            None => None,
        };
        let connector = OpensslConnector::new(&ClientTlsConfig { roots, identity })
            .context("setting up TLS to the Kubernetes API server")?;
        let agent = connector.agent(agent_config(timeout));
        Ok(Self { server: server.trim_end_matches('/').to_string(), agent, credentials })
    }

    /// The kube-apiserver's base URL, for logs.
    pub fn server(&self) -> &str {
        &self.server
    }

    fn bearer(&self) -> Result<Option<String>> {
        Ok(match &self.credentials {
            Credentials::Token(t) => Some(t.clone()),
            Credentials::TokenFile(f) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("reading token {}", f.display()))?
                    .trim()
                    .to_string(),
            ),
            Credentials::ClientCertificate | Credentials::None => None,
        })
    }

    fn call<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let url = format!("{}{path}", self.server);
        let bearer = self.bearer()?;
        let mut resp = match (method, body) {
            ("GET", _) => {
                let mut req = self.agent.get(&url).header("Accept", "application/json");
                if let Some(t) = &bearer {
                    req = req.header("Authorization", &format!("Bearer {t}"));
                }
                req.call()
            }
            (_, Some(body)) => {
                let mut req = self
                    .agent
                    .post(&url)
                    .header("Accept", "application/json")
                    .header("Content-Type", "application/json");
                if let Some(t) = &bearer {
                    req = req.header("Authorization", &format!("Bearer {t}"));
                }
                req.send(&serde_json::to_vec(body)?[..])
            }
            _ => bail!("unsupported request {method} {path}"),
        }
        .map_err(|e| anyhow!("{method} {url}: {e}"))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES)
            .read_to_vec()
            .map_err(|e| anyhow!("{method} {url}: {e}"))?;
        if status != 200 && status != 201 {
            let message = serde_json::from_slice::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>(&bytes)
                .ok()
                .and_then(|s| s.message)
                .unwrap_or_default();
            bail!("{method} {url}: HTTP {status} {message}");
        }
        serde_json::from_slice(&bytes).with_context(|| format!("{method} {url}: decoding the answer"))
    }

    /// Reads one ConfigMap (the `extension-apiserver-authentication` one holds the client CAs).
    pub fn get_configmap(&self, namespace: &str, name: &str) -> Result<ConfigMap> {
        self.call::<(), _>("GET", &format!("/api/v1/namespaces/{namespace}/configmaps/{name}"), None)
    }

    /// Asks the kube-apiserver who a bearer token belongs to; the answer says whether it is
    /// authenticated, and as whom.
    pub fn token_review(&self, token: &str) -> Result<TokenReviewStatus> {
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_string()), ..Default::default() },
            ..Default::default()
        };
        let answer: TokenReview = self.call("POST", "/apis/authentication.k8s.io/v1/tokenreviews", Some(&review))?;
        Ok(answer.status.unwrap_or_default())
    }

    /// Asks the kube-apiserver's authorizer whether a user may make a request.
    pub fn subject_access_review(&self, spec: SubjectAccessReviewSpec) -> Result<SubjectAccessReviewStatus> {
        let review = SubjectAccessReview { spec, ..Default::default() };
        let answer: SubjectAccessReview =
            self.call("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", Some(&review))?;
        answer.status.ok_or_else(|| anyhow!("the SubjectAccessReview answer has no status"))
    }
}
