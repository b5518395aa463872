//! Discovery: `/api`, `/api/v1` (an empty core group), `/apis` (legacy APIGroupList, or the
//! aggregated APIGroupDiscoveryList in v2 and v2beta1 when asked), `/apis/<group>`,
//! `/apis/<group>/<version>`, and `/version`.
//! The facts come from the OpenAPI document, through the generated `routes` module.

use poem::http::HeaderMap;
use poem::{handler, Response};
use serde_json::{json, Value};

use super::negotiate::{is_json, parse_accept};
use super::status::ApiError;
use crate::routes::{group, group_version, RESOURCES, VERSION};

/// One resource of the group, as discovery describes it.
#[derive(Debug)]
pub struct Resource {
    /// The plural, in paths and in `kubectl get <name>`.
    pub name: &'static str,
    /// What `kubectl get <singular>` also accepts.
    pub singular_name: &'static str,
    /// The `kind` of one object (`KlioBackup`).
    pub kind: &'static str,
    /// The `kind` of a list (`KlioBackupList`).
    pub list_kind: &'static str,
    /// False: cluster-scoped, so clients build paths without a namespace.
    pub namespaced: bool,
    /// Abbreviations kubectl resolves (`kubectl get kb`).
    pub short_names: &'static [&'static str],
    /// Names of groups of resources kubectl expands (`kubectl get klio` lists every member).
    pub categories: &'static [&'static str],
    /// What clients may do, from the document's operations; kubectl refuses the others.
    pub verbs: &'static [&'static str],
}

/// The forms of the discovery documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Legacy,
    Aggregated(&'static str),
}

const DISCOVERY_MEDIA_TYPES: &[&str] = &[
    "application/json",
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
];

fn form(headers: &HeaderMap) -> Result<Form, ApiError> {
    let Some(accept) = headers.get("accept").and_then(|v| v.to_str().ok()).filter(|a| !a.trim().is_empty()) else {
        return Ok(Form::Legacy);
    };
    for range in parse_accept(accept) {
        if is_json(&range) {
            return Ok(Form::Legacy);
        }
        if range.essence == "application/json"
            && range.param("g") == Some("apidiscovery.k8s.io")
            && range.param("as") == Some("APIGroupDiscoveryList")
        {
            match range.param("v") {
                Some("v2") => return Ok(Form::Aggregated("v2")),
                Some("v2beta1") => return Ok(Form::Aggregated("v2beta1")),
                _ => {}
            }
        }
    }
    Err(ApiError::not_acceptable(DISCOVERY_MEDIA_TYPES))
}

fn json_response(body: &Value, content_type: &str) -> Response {
    Response::builder().content_type(content_type).body(serde_json::to_vec(body).expect("JSON values serialize"))
}

fn aggregated(version: &str, items: Value) -> Response {
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    });
    // kubectl 1.30+ only takes the aggregated document when the Content-Type echoes its media type.
    json_response(&body, &format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"))
}

fn group_version_entry() -> Value {
    json!({ "groupVersion": group_version(), "version": VERSION })
}

fn api_group() -> Value {
    json!({ "name": group(), "versions": [group_version_entry()], "preferredVersion": group_version_entry() })
}

/// `/api`: this server has no core group, but answers so that client discovery carries on.
#[handler]
pub fn api_versions(headers: &HeaderMap) -> Result<Response, ApiError> {
    Ok(match form(headers)? {
        Form::Legacy => json_response(
            &json!({ "kind": "APIVersions", "versions": [], "serverAddressByClientCIDRs": [] }),
            "application/json",
        ),
        Form::Aggregated(v) => aggregated(v, json!([])),
    })
}

/// `/apis`.
#[handler]
pub fn api_group_list(headers: &HeaderMap) -> Result<Response, ApiError> {
    Ok(match form(headers)? {
        Form::Legacy => json_response(
            &json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group()] }),
            "application/json",
        ),
        Form::Aggregated(v) => {
            let resources: Vec<Value> = RESOURCES
                .iter()
                .map(|r| {
                    json!({
                        "resource": r.name,
                        "singularResource": r.singular_name,
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                        "responseKind": { "group": group(), "version": VERSION, "kind": r.kind },
                        "verbs": r.verbs,
                        "shortNames": r.short_names,
                        "categories": r.categories,
                    })
                })
                .collect();
            let group = json!({
                "metadata": { "name": group() },
                "versions": [{ "version": VERSION, "freshness": "Current", "resources": resources }],
            });
            aggregated(v, json!([group]))
        }
    })
}

/// `/apis/<group>`.
#[handler]
pub fn api_group_doc(headers: &HeaderMap) -> Result<Response, ApiError> {
    form(headers)?;
    let mut body = api_group();
    body["kind"] = json!("APIGroup");
    body["apiVersion"] = json!("v1");
    Ok(json_response(&body, "application/json"))
}

/// `/apis/<group>/<version>`.
#[handler]
pub fn api_resource_list(headers: &HeaderMap) -> Result<Response, ApiError> {
    form(headers)?;
    let resources: Vec<Value> = RESOURCES
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "singularName": r.singular_name,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": r.verbs,
                "shortNames": r.short_names,
                "categories": r.categories,
            })
        })
        .collect();
    let body = json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version(), "resources": resources });
    Ok(json_response(&body, "application/json"))
}

/// `/api/v1`: the core group's resource list, empty here (kube-apiserver's shape for the
/// legacy group: no `apiVersion`, group version `v1`).
#[handler]
pub fn core_resource_list(headers: &HeaderMap) -> Result<Response, ApiError> {
    form(headers)?;
    let body = json!({ "kind": "APIResourceList", "groupVersion": "v1", "resources": [] });
    Ok(json_response(&body, "application/json"))
}

/// `/version`. The Kubernetes API level this server implements (kubectl's dispatcher picks its
/// client by the minor version), and the service's own build.
#[handler]
pub fn server_version() -> Response {
    json_response(
        &json!({
            "major": "1",
            "minor": "33",
            "gitVersion": concat!("v1.33.0+klio-api-", env!("CARGO_PKG_VERSION")),
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "",
            "goVersion": "",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else if cfg!(target_arch = "aarch64") { "arm64" } else { std::env::consts::ARCH }),
        }),
        "application/json",
    )
}
