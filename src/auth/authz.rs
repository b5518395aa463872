//! Authorization: may this identity do this? `system:masters` always may; otherwise the
//! kube-apiserver decides through a SubjectAccessReview, with allowed and denied answers cached
//! separately. Without a kube-apiserver, authenticated users may and anonymous ones may not.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{NonResourceAttributes, ResourceAttributes, SubjectAccessReviewSpec};

use super::Identity;
use crate::kube::KubeClient;

/// What a request does, in Kubernetes' terms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Attributes {
    Resource { verb: String, group: String, version: String, resource: String, name: Option<String> },
    NonResource { verb: String, path: String },
}

impl Attributes {
    /// Maps a request to attributes, as kube-apiserver's request-info resolver does for this group.
    pub fn of(method: &str, path: &str, query: Option<&str>) -> Self {
        let lower = method.to_ascii_lowercase();
        let prefix = format!("/apis/{}/", crate::routes::group_version());
        let Some(rest) = path.strip_prefix(&prefix).filter(|r| !r.is_empty()) else {
            let verb = if lower == "head" { "get".into() } else { lower };
            return Self::NonResource { verb, path: path.to_string() };
        };
        let mut parts = rest.splitn(2, '/');
        let resource = parts.next().unwrap_or_default().to_string();
        let mut name = parts.next().filter(|n| !n.is_empty()).map(str::to_string);
        let query: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let watch = query.iter().any(|(k, v)| k == "watch" && (v == "true" || v == "1"));
        let verb = match (lower.as_str(), &name) {
            ("get" | "head", None) if watch => "watch",
            ("get" | "head", None) => "list",
            ("get" | "head", Some(_)) => "get",
            ("post", _) => "create",
            ("put", _) => "update",
            ("patch", _) => "patch",
            ("delete", None) => "deletecollection",
            ("delete", Some(_)) => "delete",
            (other, _) => other,
        }
        .to_string();
        // As kube-apiserver: a list or watch of one name (`kubectl get NAME -w`) is authorized for
        // that name, so RBAC resourceNames work.
        if name.is_none() && (verb == "list" || verb == "watch") {
            name = query.iter().find(|(k, _)| k == "fieldSelector").and_then(|(_, v)| single_name(v));
        }
        Self::Resource {
            verb,
            group: crate::routes::group().to_string(),
            version: crate::routes::VERSION.to_string(),
            resource,
            name,
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

/// `metadata.name=X` (or `==`) as the whole field selector.
fn single_name(selector: &str) -> Option<String> {
    let (field, value) = selector.split_once("==").or_else(|| selector.split_once('='))?;
    (field.trim() == "metadata.name" && !value.contains(',') && !value.trim().is_empty())
        .then(|| value.trim().to_string())
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
}

#[derive(Debug, Clone)]
pub struct AuthzOptions {
    pub allowed_ttl: Duration,
    pub denied_ttl: Duration,
    /// Paths anyone may read (probes), as `--authorization-always-allow-paths`.
    pub always_allow_paths: Vec<String>,
}

type DecisionCache = HashMap<(Identity, Attributes), (Instant, Decision)>;
const CACHE_LIMIT: usize = 10_000;

pub struct Authorizer {
    kube: Option<Arc<KubeClient>>,
    options: AuthzOptions,
    cache: Mutex<DecisionCache>,
}

impl Authorizer {
    pub fn new(kube: Option<Arc<KubeClient>>, options: AuthzOptions) -> Self {
        Self { kube, options, cache: Mutex::new(HashMap::new()) }
    }

    /// Is `path` open to anyone? Exact paths, or `prefix*` entries.
    pub fn always_allowed(&self, path: &str) -> bool {
        self.options.always_allow_paths.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => p == path,
        })
    }

    pub async fn authorize(&self, who: &Identity, what: &Attributes) -> Result<Decision, String> {
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
        let key = (who.clone(), what.clone());
        if let Some((at, decision)) = self.cache.lock().expect("authz cache").get(&key) {
            let ttl = if *decision == Decision::Allow { self.options.allowed_ttl } else { self.options.denied_ttl };
            if at.elapsed() < ttl {
                return Ok(decision.clone());
            }
        }
        let spec = SubjectAccessReviewSpec {
            user: Some(who.user.clone()),
            uid: who.uid.clone(),
            groups: Some(who.groups.clone()),
            extra: (!who.extra.is_empty()).then(|| who.extra.clone().into_iter().collect()),
            resource_attributes: match what {
                Attributes::Resource { verb, group, version, resource, name } => Some(ResourceAttributes {
                    verb: Some(verb.clone()),
                    group: Some(group.clone()),
                    version: Some(version.clone()),
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
        let status = tokio::task::spawn_blocking(move || kube.subject_access_review(spec))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{e:#}"))?;
        let decision = if status.allowed && status.denied != Some(true) {
            Decision::Allow
        } else {
            Decision::Deny(status.reason.unwrap_or_default())
        };
        let mut cache = self.cache.lock().expect("authz cache");
        if cache.len() >= CACHE_LIMIT {
            let longest = self.options.allowed_ttl.max(self.options.denied_ttl);
            cache.retain(|_, (at, _)| at.elapsed() < longest);
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), decision.clone()));
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_to_kube_verbs() {
        let c = "/apis/kliocatalog.enterprisedb.io/v1alpha1/kliobackups";
        let verb = |m: &str, p: &str, q: Option<&str>| match Attributes::of(m, p, q) {
            Attributes::Resource { verb, .. } => verb,
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
        assert_eq!(named("fieldSelector=metadata.name%3Da.b%2Cspec.clusterName%3Dx"), None);
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
