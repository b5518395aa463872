//! A kube-apiserver test double for delegated authentication and authorization: an HTTPS
//! server on 127.0.0.1 (its own CA, its own runtime) answering
//!
//! * `GET /api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication` with
//!   scriptable data that tests change while the service runs;
//! * `POST /apis/authentication.k8s.io/v1/tokenreviews` from a token → user table;
//! * `POST /apis/authorization.k8s.io/v1/subjectaccessreviews` from a scripted rule, optionally
//!   after a delay (a slow kube-apiserver).
//!
//! Every call is counted and the SubjectAccessReview specs are recorded, so a test can see which
//! identity the service under test ended up with. Calls that do not carry the kubeconfig's bearer
//! token are answered 401 (and counted), as the real kube-apiserver would.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewStatus, UserInfo};
use k8s_openapi::api::authorization::v1::{SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus};
use klio_api::pki::{KeyPair, Usage};
use poem::http::StatusCode;
use poem::{Request, Response};
use tokio::runtime::Runtime;
use tokio::sync::watch;

pub const CONFIGMAP_PATH: &str = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication";
pub const TOKENREVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
pub const SAR_PATH: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";

/// Who a token belongs to.
#[derive(Debug, Clone, Default)]
pub struct TokenUser {
    pub user: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl TokenUser {
    pub fn new(user: &str, groups: &[&str]) -> Self {
        Self { user: user.into(), groups: groups.iter().map(|g| g.to_string()).collect(), ..Default::default() }
    }
}

/// A SubjectAccessReview verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SarAnswer {
    pub allowed: bool,
    pub denied: bool,
    pub reason: String,
}

impl SarAnswer {
    pub fn allow() -> Self {
        Self { allowed: true, denied: false, reason: String::new() }
    }
    /// An explicit denial.
    pub fn deny(reason: &str) -> Self {
        Self { allowed: false, denied: true, reason: reason.into() }
    }
    /// No authorizer had an opinion (RBAC found no rule): not allowed.
    pub fn no_opinion(reason: &str) -> Self {
        Self { allowed: false, denied: false, reason: reason.into() }
    }
}

pub type SarRule = Arc<dyn Fn(&SubjectAccessReviewSpec) -> SarAnswer + Send + Sync>;

struct State {
    configmap: Option<BTreeMap<String, String>>,
    tokens: HashMap<String, TokenUser>,
    sar_rule: SarRule,
    sar_delay: Duration,
    token_delay: Duration,
    reviews_in_flight: usize,
    max_reviews_in_flight: usize,
    configmap_gets: usize,
    reviewed_tokens: Vec<String>,
    sars_started: usize,
    sars: Vec<SubjectAccessReviewSpec>,
    unauthenticated_calls: usize,
}

/// The double; dropping it stops its server (and closes its connections).
pub struct KubeDouble {
    state: Arc<Mutex<State>>,
    pub addr: SocketAddr,
    /// The CA of the double's serving certificate.
    pub ca_pem: Vec<u8>,
    /// The bearer token the service must present (written into the kubeconfig).
    pub service_token: String,
    rt: Option<Runtime>,
    shutdown: Option<watch::Sender<bool>>,
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    Response::builder().status(code).content_type("application/json").body(body.to_string())
}

fn json<T: serde::Serialize>(code: StatusCode, value: &T) -> Response {
    Response::builder().status(code).content_type("application/json").body(serde_json::to_vec(value).unwrap())
}

async fn handle(state: Arc<Mutex<State>>, service_token: String, mut req: Request) -> Response {
    let authorized = req.headers().get("authorization").and_then(|v| v.to_str().ok())
        == Some(format!("Bearer {service_token}").as_str());
    if !authorized {
        state.lock().unwrap().unauthenticated_calls += 1;
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let body = req.take_body().into_bytes().await.unwrap_or_default();
    match (method.as_str(), path.as_str()) {
        ("GET", CONFIGMAP_PATH) => {
            let mut st = state.lock().unwrap();
            st.configmap_gets += 1;
            match &st.configmap {
                Some(data) => {
                    let cm = serde_json::json!({
                        "kind": "ConfigMap", "apiVersion": "v1",
                        "metadata": { "name": "extension-apiserver-authentication", "namespace": "kube-system" },
                        "data": data,
                    });
                    json(StatusCode::OK, &cm)
                }
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "configmaps \"extension-apiserver-authentication\" not found",
                ),
            }
        }
        ("POST", TOKENREVIEW_PATH) => {
            let Ok(mut review) = serde_json::from_slice::<TokenReview>(&body) else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", "not a TokenReview");
            };
            let token = review.spec.token.clone().unwrap_or_default();
            let delay = {
                let mut st = state.lock().unwrap();
                st.reviews_in_flight += 1;
                st.max_reviews_in_flight = st.max_reviews_in_flight.max(st.reviews_in_flight);
                st.token_delay
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let mut st = state.lock().unwrap();
            st.reviews_in_flight -= 1;
            st.reviewed_tokens.push(token.clone());
            review.status = Some(match st.tokens.get(&token) {
                Some(u) => TokenReviewStatus {
                    authenticated: Some(true),
                    user: Some(UserInfo {
                        username: Some(u.user.clone()),
                        uid: u.uid.clone(),
                        groups: Some(u.groups.clone()),
                        extra: (!u.extra.is_empty()).then(|| u.extra.clone().into_iter().collect()),
                    }),
                    ..Default::default()
                },
                None => TokenReviewStatus {
                    authenticated: Some(false),
                    error: Some("[invalid bearer token, token lookup failed]".into()),
                    ..Default::default()
                },
            });
            json(StatusCode::CREATED, &review)
        }
        ("POST", SAR_PATH) => {
            let Ok(mut review) = serde_json::from_slice::<SubjectAccessReview>(&body) else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", "not a SubjectAccessReview");
            };
            let (rule, delay) = {
                let mut st = state.lock().unwrap();
                st.sars_started += 1;
                (st.sar_rule.clone(), st.sar_delay)
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let answer = rule(&review.spec);
            state.lock().unwrap().sars.push(review.spec.clone());
            review.status = Some(SubjectAccessReviewStatus {
                allowed: answer.allowed,
                denied: answer.denied.then_some(true),
                reason: (!answer.reason.is_empty()).then_some(answer.reason),
                ..Default::default()
            });
            json(StatusCode::CREATED, &review)
        }
        _ => status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource"),
    }
}

impl KubeDouble {
    /// Starts the double with an empty ConfigMap, no tokens, and a rule denying everything.
    pub fn start() -> Self {
        let ca = KeyPair::new_ca("kube-double-ca").unwrap();
        let serving = ca.issue("kube-apiserver", &[], &["localhost", "127.0.0.1"], Usage::Server).unwrap();
        let state = Arc::new(Mutex::new(State {
            configmap: Some(BTreeMap::new()),
            tokens: HashMap::new(),
            sar_rule: Arc::new(|_: &SubjectAccessReviewSpec| SarAnswer::no_opinion("")),
            sar_delay: Duration::ZERO,
            token_delay: Duration::ZERO,
            reviews_in_flight: 0,
            max_reviews_in_flight: 0,
            configmap_gets: 0,
            reviewed_tokens: vec![],
            sars_started: 0,
            sars: vec![],
            unauthenticated_calls: 0,
        }));
        let service_token = format!("service-account-token-{}", std::process::id());
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (tx, rx) = watch::channel(false);
        let endpoint_state = state.clone();
        let token = service_token.clone();
        let addr = rt.block_on(async move {
            let acceptor =
                klio_api::tls::acceptor(&[serving.cert], &serving.key, klio_api::tls::ClientAuth::None).unwrap();
            let server = klio_api::server::HttpsServer::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), acceptor)
                .await
                .unwrap();
            let addr = server.local_addr();
            let endpoint = poem::endpoint::make(move |req: Request| {
                let state = endpoint_state.clone();
                let token = token.clone();
                async move { handle(state, token, req).await }
            });
            tokio::spawn(server.serve(endpoint, rx));
            addr
        });
        Self { state, addr, ca_pem: ca.cert_pem(), service_token, rt: Some(rt), shutdown: Some(tx) }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// Writes a kubeconfig (YAML, as kubectl writes them) reaching this double with its token.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let ca = openssl::base64::encode_block(&self.ca_pem);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: klio-api\n  user:\n    token: {}\ncontexts:\n- name: double\n  context:\n    cluster: double\n    user: klio-api\ncurrent-context: double\n",
            self.url(),
            self.service_token
        );
        let path = dir.join("kubeconfig.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    // -- scripting ------------------------------------------------------------------------------

    /// Replaces the ConfigMap's data (`None`: the ConfigMap does not exist).
    pub fn set_configmap(&self, data: Option<BTreeMap<String, String>>) {
        self.state.lock().unwrap().configmap = data;
    }

    /// Sets one key of the ConfigMap's data.
    pub fn set_configmap_key(&self, key: &str, value: &str) {
        self.state.lock().unwrap().configmap.get_or_insert_with(BTreeMap::new).insert(key.into(), value.into());
    }

    pub fn add_token(&self, token: &str, user: TokenUser) {
        self.state.lock().unwrap().tokens.insert(token.into(), user);
    }

    pub fn remove_token(&self, token: &str) {
        self.state.lock().unwrap().tokens.remove(token);
    }

    pub fn set_sar_rule(&self, rule: impl Fn(&SubjectAccessReviewSpec) -> SarAnswer + Send + Sync + 'static) {
        self.state.lock().unwrap().sar_rule = Arc::new(rule);
    }

    /// Every SubjectAccessReview is answered after this long.
    pub fn set_sar_delay(&self, delay: Duration) {
        self.state.lock().unwrap().sar_delay = delay;
    }

    /// Every TokenReview is answered after this long (a slow kube-apiserver).
    pub fn set_token_delay(&self, delay: Duration) {
        self.state.lock().unwrap().token_delay = delay;
    }

    // -- observations -------------------------------------------------------------------------

    /// TokenReviews in progress now.
    pub fn token_reviews_in_flight(&self) -> usize {
        self.state.lock().unwrap().reviews_in_flight
    }

    /// The most TokenReviews that were in progress at once.
    pub fn max_concurrent_token_reviews(&self) -> usize {
        self.state.lock().unwrap().max_reviews_in_flight
    }

    pub fn configmap_gets(&self) -> usize {
        self.state.lock().unwrap().configmap_gets
    }

    pub fn token_reviews(&self) -> usize {
        self.state.lock().unwrap().reviewed_tokens.len()
    }

    pub fn reviewed_tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().reviewed_tokens.clone()
    }

    /// SubjectAccessReviews received (counted on arrival, before any delay).
    pub fn sars_started(&self) -> usize {
        self.state.lock().unwrap().sars_started
    }

    /// SubjectAccessReviews answered, with their specs.
    pub fn sars(&self) -> Vec<SubjectAccessReviewSpec> {
        self.state.lock().unwrap().sars.clone()
    }

    pub fn sar_count(&self) -> usize {
        self.state.lock().unwrap().sars.len()
    }

    pub fn last_sar(&self) -> SubjectAccessReviewSpec {
        self.sars().pop().expect("a SubjectAccessReview was made")
    }

    /// Calls without the kubeconfig's token (there should be none).
    pub fn unauthenticated_calls(&self) -> usize {
        self.state.lock().unwrap().unauthenticated_calls
    }
}

impl Drop for KubeDouble {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
