//! Authorization: may this identity do this? `system:masters` always may; otherwise the
//! kube-apiserver decides through a SubjectAccessReview, with allowed and denied answers cached
//! separately. Without a kube-apiserver, authenticated users may and anonymous ones may not.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{NonResourceAttributes, ResourceAttributes, SubjectAccessReviewSpec};

use super::bounded::{BoundedCache, Flights};
use super::Identity;
use crate::kube::KubeClient;

/// What a request does, in Kubernetes' terms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Attributes {
    /// A request under this group's API path: on a resource, maybe one object of it.
    Resource {
        /// `get`, `list`, `watch`, ... (empty for an HTTP method kube does not map).
        verb: &'static str,
        /// The API group served.
        group: &'static str,
        /// The API version served.
        version: &'static str,
        /// The resource's plural name.
        resource: String,
        /// The object named in the path (or required by a `metadata.name` field selector).
        name: Option<String>,
    },
    /// Any other path (discovery, `/openapi/v2`, `/metrics`, probes).
    NonResource {
        /// The lower-case HTTP method (`head` counts as `get`).
        verb: String,
        /// The decoded path.
        path: String,
    },
}

impl Attributes {
    /// Maps a request to attributes, as kube-apiserver's request-info resolver does for this
    /// group. `path` is the decoded path; `watch` and `selected_name` come from the request's one
    /// parsed query ([`crate::api::request::RequestInfo`]): whether a list is a watch, and the
    /// name a `metadata.name` field selector requires.
    pub fn resolve(method: &str, path: &str, watch: bool, selected_name: Option<&str>) -> Self {
        let Some(rest) = path.strip_prefix(crate::routes::resource_prefix()).filter(|r| !r.is_empty()) else {
            let lower = method.to_ascii_lowercase();
            let verb = if lower == "head" { "get".into() } else { lower };
            return Self::NonResource { verb, path: path.to_string() };
        };
        let mut parts = rest.splitn(2, '/');
        let resource = parts.next().unwrap_or_default().to_string();
        let mut name = parts.next().filter(|n| !n.is_empty()).map(str::to_string);
        let is = |m: &str| method.eq_ignore_ascii_case(m);
        let verb = match &name {
            None if (is("get") || is("head")) && watch => "watch",
            None if is("get") || is("head") => "list",
            Some(_) if is("get") || is("head") => "get",
            _ if is("post") => "create",
            _ if is("put") => "update",
            _ if is("patch") => "patch",
            None if is("delete") => "deletecollection",
            Some(_) if is("delete") => "delete",
            // kube-apiserver leaves the verb empty for methods it does not know.
            _ => "",
        };
        // As kube-apiserver: a list or watch of one name (`kubectl get NAME -w`) is authorized for
        // that name, so RBAC resourceNames work. The handler filters by the very same selector,
        // so nothing but that name is ever served.
        if name.is_none() && (verb == "list" || verb == "watch") {
            name = selected_name.filter(|n| is_path_segment_name(n)).map(str::to_string);
        }
        Self::Resource { verb, group: crate::routes::group(), version: crate::routes::VERSION, resource, name }
    }

    /// The attributes of a request given as method, decoded path and raw query (tests, tools):
    /// the query is parsed as the server parses it.
    pub fn of(method: &str, path: &str, query: Option<&str>) -> Self {
        crate::api::request::RequestInfo::parse(&method.parse().unwrap_or(poem::http::Method::GET), path, query)
            .attributes
    }

    /// The verb (resource or non-resource).
    pub fn verb(&self) -> &str {
        match self {
            Self::Resource { verb, .. } => verb,
            Self::NonResource { verb, .. } => verb,
        }
    }

    /// kube-apiserver's wording of a denial.
    pub fn forbidden_message(&self, user: &str, reason: &str) -> String {
        let because = if reason.is_empty() { String::new() } else { format!(": {reason}") };
        match self {
            Self::Resource { verb, group, resource, name, .. } => {
                let subject = match name {
                    Some(n) => format!("{resource}.{group} {n:?}"),
                    None => format!("{resource}.{group}"),
                };
                format!("{subject} is forbidden: User {user:?} cannot {verb} resource {resource:?} in API group {group:?} at the cluster scope{because}")
            }
            Self::NonResource { verb, path } => {
                format!("forbidden: User {user:?} cannot {verb} path {path:?}{because}")
            }
        }
    }
}

/// kube's `IsValidPathSegmentName`: a name that can stand for an object in a path.
fn is_path_segment_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%'])
}

/// Why no verdict was reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    /// Too many reviews waiting already: answered 429 (a client that starts requests and goes
    /// away must not queue reviews without end).
    #[error("too many authorization reviews pending")]
    Overloaded,
    /// The SubjectAccessReview could not be made or answered (the reason).
    #[error("{0}")]
    Failed(String),
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Serve the request.
    Allow,
    /// Answer 403; the reason (maybe empty) ends kube's denial message.
    Deny(String),
}

/// Knobs of the authorizer, from the `--authorization-*` flags.
#[derive(Debug, Clone)]
pub struct AuthzOptions {
    /// How long an allowed SubjectAccessReview is reused.
    pub allowed_ttl: Duration,
    /// How long a denied one is reused.
    pub denied_ttl: Duration,
    /// Paths anyone may read (probes), as `--authorization-always-allow-paths`.
    pub always_allow_paths: Vec<String>,
}

/// Decisions are cached under a SHA-256 of who asked what: a key costs 32 bytes however long
/// the path or the identity is.
type DecisionKey = [u8; 32];
const CACHE_ENTRIES: usize = 8192;
const CACHE_BYTES: usize = 4 << 20;
/// SubjectAccessReviews in flight at once (each holds a blocking thread); more wait their turn,
/// within the request's own bounds (the in-flight cap and the request timeout).
pub const MAX_SUBJECT_ACCESS_REVIEWS: usize = 32;
/// Reviews in flight or waiting for a turn; a request needing another one is answered 429.
pub const MAX_PENDING_REVIEWS: usize = 512;
/// A denial reason from the kube-apiserver is cut to this in the cache and the answer.
const MAX_REASON_BYTES: usize = 1024;

type Verdict = Result<Decision, String>;

/// Decides every authenticated request (see the module documentation); shared by all
/// connections, so the decision cache and the bounds on reviews are process-wide.
pub struct Authorizer {
    kube: Option<Arc<KubeClient>>,
    options: AuthzOptions,
    cache: Arc<Mutex<BoundedCache<DecisionKey, Decision>>>,
    reviews: Flights<DecisionKey, Verdict>,
    review_slots: Arc<tokio::sync::Semaphore>,
}

/// Hashes the identity and the attributes, each field length-prefixed (no two requests share a
/// key by concatenation).
fn decision_key(who: &Identity, what: &Attributes) -> DecisionKey {
    let mut h = openssl::sha::Sha256::new();
    let mut field = |s: &str| {
        h.update(&(s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    field(&who.user);
    match &who.uid {
        Some(uid) => {
            field("uid");
            field(uid);
        }
        None => field("no uid"),
    }
    field(&who.groups.len().to_string());
    for g in &who.groups {
        field(g);
    }
    field(&who.extra.len().to_string());
    for (k, values) in &who.extra {
        field(k);
        field(&values.len().to_string());
        for v in values {
            field(v);
        }
    }
    match what {
        Attributes::Resource { verb, group, version, resource, name } => {
            for f in ["resource", verb, group, version, resource.as_str()] {
                field(f);
            }
            match name {
                Some(name) => {
                    field("name");
                    field(name);
                }
                None => field("no name"),
            }
        }
        Attributes::NonResource { verb, path } => {
            for f in ["nonresource", verb, path] {
                field(f);
            }
        }
    }
    h.finish()
}

impl Authorizer {
    /// `kube`: the kube-apiserver for SubjectAccessReview; `None` allows every authenticated
    /// user (the demo, standalone use).
    pub fn new(kube: Option<Arc<KubeClient>>, options: AuthzOptions) -> Self {
        Self {
            kube,
            options,
            cache: Arc::new(Mutex::new(BoundedCache::new(CACHE_ENTRIES, CACHE_BYTES))),
            reviews: Default::default(),
            review_slots: Arc::new(tokio::sync::Semaphore::new(MAX_SUBJECT_ACCESS_REVIEWS)),
        }
    }

    /// Is `path` open to anyone? Exact paths, or `prefix*` entries.
    pub fn always_allowed(&self, path: &str) -> bool {
        self.options.always_allow_paths.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => p == path,
        })
    }

    /// The verdict on `who` doing `what`: from the rules above, the cache, a review in flight
    /// for the same question, or a new SubjectAccessReview.
    pub async fn authorize(&self, who: &Identity, what: &Attributes) -> Result<Decision, AuthzError> {
        if who.groups.iter().any(|g| g == "system:masters") {
            return Ok(Decision::Allow);
        }
        if let Attributes::NonResource { path, verb } = what {
            if verb == "get" && self.always_allowed(path) {
                return Ok(Decision::Allow);
            }
        }
        let Some(kube) = self.kube.clone() else {
            return Ok(if who.is_anonymous() { Decision::Deny(String::new()) } else { Decision::Allow });
        };
        let key = decision_key(who, what);
        if let Some((decision, at)) = self.cache.lock().expect("authz cache").get(&key) {
            let ttl = if *decision == Decision::Allow { self.options.allowed_ttl } else { self.options.denied_ttl };
            if at.elapsed() < ttl {
                return Ok(decision.clone());
            }
        }
        if let Some(flight) = self.reviews.join(&key) {
            return flight.await.map_err(AuthzError::Failed);
        }
        if self.reviews.len() >= MAX_PENDING_REVIEWS {
            return Err(AuthzError::Overloaded);
        }
        let spec = SubjectAccessReviewSpec {
            user: Some(who.user.clone()),
            uid: who.uid.clone(),
            groups: Some(who.groups.clone()),
            extra: (!who.extra.is_empty()).then(|| who.extra.clone().into_iter().collect()),
            resource_attributes: match what {
                Attributes::Resource { verb, group, version, resource, name } => Some(ResourceAttributes {
                    verb: Some(verb.to_string()),
                    group: Some(group.to_string()),
                    version: Some(version.to_string()),
                    resource: Some(resource.clone()),
                    name: name.clone(),
                    ..Default::default()
                }),
                _ => None,
            },
            non_resource_attributes: match what {
                Attributes::NonResource { verb, path } => {
                    Some(NonResourceAttributes { verb: Some(verb.clone()), path: Some(path.clone()) })
                }
                _ => None,
            },
        };
        let slots = self.review_slots.clone();
        let cache = self.cache.clone();
        let work = async move {
            let _slot = slots.acquire_owned().await.map_err(|e| e.to_string())?;
            let status = tokio::task::spawn_blocking(move || kube.subject_access_review(spec))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| super::bounded_text(&format!("{e:#}"), MAX_REASON_BYTES))?;
            let decision = if status.allowed && status.denied != Some(true) {
                Decision::Allow
            } else {
                Decision::Deny(super::bounded_text(status.reason.as_deref().unwrap_or_default(), MAX_REASON_BYTES))
            };
            let bytes = match &decision {
                Decision::Allow => 0,
                Decision::Deny(reason) => reason.len(),
            };
            cache.lock().expect("authz cache").insert(key, decision.clone(), bytes);
            Ok(decision)
        };
        self.reviews.start(key, work, Err).await.map_err(AuthzError::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_to_kube_verbs() {
        let c = "/apis/kliocatalog.enterprisedb.io/v1alpha1/kliobackups";
        let verb = |m: &str, p: &str, q: Option<&str>| match Attributes::of(m, p, q) {
            Attributes::Resource { verb, .. } => verb.to_string(),
            Attributes::NonResource { verb, .. } => format!("nonresource:{verb}"),
        };
        assert_eq!(verb("GET", c, Some("limit=500")), "list");
        assert_eq!(verb("GET", c, Some("watch=true")), "watch");
        assert_eq!(verb("GET", &format!("{c}/a.b"), None), "get");
        assert_eq!(verb("DELETE", &format!("{c}/a.b"), None), "delete");
        assert_eq!(verb("DELETE", c, None), "deletecollection");
        assert_eq!(verb("POST", c, None), "create");
        assert_eq!(verb("PATCH", &format!("{c}/a.b"), None), "patch");
        assert_eq!(verb("GET", "/apis", None), "nonresource:get");
        let named = |q: &str| match Attributes::of("GET", c, Some(q)) {
            Attributes::Resource { name, .. } => name,
            _ => None,
        };
        assert_eq!(named("watch=true&fieldSelector=metadata.name%3Da.b"), Some("a.b".into()));
        assert_eq!(verb("GET", c, Some("watch=true&fieldSelector=metadata.name%3Da.b")), "watch", "still a watch");
        assert_eq!(verb("GET", c, Some("fieldSelector=metadata.name%3Da.b")), "list", "still a list");
        // apimachinery's RequiresExactMatch: the name term counts whatever else the selector says
        // (the handler applies every term, so only a.b can be served).
        assert_eq!(named("fieldSelector=metadata.name%3Da.b%2Cspec.clusterName%3Dx"), Some("a.b".into()));
        assert_eq!(named("fieldSelector=metadata.name%3D..%2Fx"), None, "not a name a path could hold");
        assert_eq!(verb("FROB", c, None), "", "kube leaves the verb of an unknown method empty");
        assert_eq!(verb("FROB", "/apis", None), "nonresource:frob");
        assert_eq!(named("fieldSelector=spec.clusterName%3Dx"), None);
        assert_eq!(verb("GET", "/apis/kliocatalog.enterprisedb.io/v1alpha1", None), "nonresource:get");
    }

    #[test]
    fn denials_are_worded_like_kube_apiserver() {
        let list = Attributes::of("GET", "/apis/kliocatalog.enterprisedb.io/v1alpha1/kliobackups", None);
        assert_eq!(
            list.forbidden_message("u", ""),
            "kliobackups.kliocatalog.enterprisedb.io is forbidden: User \"u\" cannot list resource \"kliobackups\" in API group \"kliocatalog.enterprisedb.io\" at the cluster scope"
        );
        let get = Attributes::of("GET", "/apis/kliocatalog.enterprisedb.io/v1alpha1/kliobackups/a.b", None);
        assert_eq!(
            get.forbidden_message("u", "no RBAC policy matched"),
            "kliobackups.kliocatalog.enterprisedb.io \"a.b\" is forbidden: User \"u\" cannot get resource \"kliobackups\" in API group \"kliocatalog.enterprisedb.io\" at the cluster scope: no RBAC policy matched"
        );
        let path = Attributes::of("GET", "/openapi/v3", None);
        assert_eq!(
            path.forbidden_message("system:anonymous", ""),
            "forbidden: User \"system:anonymous\" cannot get path \"/openapi/v3\""
        );
    }
}
