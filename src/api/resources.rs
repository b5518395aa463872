//! The `kliobackups` handlers: list and get, as JSON or as a server-side-printed Table. Every
//! other method is refused with a MethodNotAllowed Status: the catalog is read-only.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use poem::web::Data;
use poem::{handler, Request, Response};
use serde::Serialize;

use super::negotiate::{resource_representation, Representation, RESOURCE_MEDIA_TYPES};
use super::selectors::FieldSelector;
use super::status::ApiError;
use super::table::{self, IncludeObject};
use super::AppState;
use crate::catalog::Snapshot;
use crate::model::KlioBackup;
use crate::routes::{GROUP_VERSION, RESOURCES};

fn plural() -> &'static str {
    RESOURCES[0].name
}

/// The query parameters of list and get, validated.
#[derive(Debug, Default)]
struct Params {
    include: IncludeObject,
    fields: FieldSelector,
    watch: bool,
}

fn parse_params(query: Option<&str>, is_list: bool) -> Result<Params, ApiError> {
    let mut p = Params::default();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "includeObject" => p.include = value.parse().map_err(ApiError::bad_request)?,
            "pretty" | "timeout" | "allowWatchBookmarks" | "sendInitialEvents" => {}
            // Paging is optional for servers: the whole list is one page, never cut short.
            "limit" | "timeoutSeconds" if value.parse::<u64>().is_err() => {
                return Err(ApiError::bad_request(format!(
                    "{key}: invalid value {value:?}: must be a non-negative integer"
                )));
            }
            "continue" if is_list && !value.is_empty() => {
                return Err(ApiError::bad_request(
                    "continue: this server returns every list in one page and issues no continue tokens",
                ));
            }
            "fieldSelector" if is_list => p.fields = FieldSelector::parse(&value).map_err(ApiError::bad_request)?,
            "labelSelector" if is_list && !value.trim().is_empty() => {
                return Err(ApiError::bad_request(
                    "labelSelector: KlioBackups carry no labels yet; label selectors are not supported",
                ));
            }
            "watch" if is_list => {
                p.watch = match value.as_ref() {
                    "" | "false" | "0" => false,
                    "true" | "1" => true,
                    other => return Err(ApiError::bad_request(format!("watch: invalid value {other:?}"))),
                }
            }
            "resourceVersion" | "resourceVersionMatch" => {}
            _ => {} // kube-apiserver ignores parameters it does not know
        }
    }
    Ok(p)
}

fn representation(req: &Request) -> Result<Representation, ApiError> {
    resource_representation(req.header("accept")).ok_or_else(|| ApiError::not_acceptable(RESOURCE_MEDIA_TYPES))
}

/// A `Warning: 299` header per problem the snapshot carries (kubectl prints them on stderr).
fn with_warnings(mut resp: Response, snapshot: &Snapshot) -> Response {
    for w in &snapshot.warnings {
        let text = format!("299 - \"{}\"", w.replace(['"', '\\'], "'").replace(['\r', '\n'], " "));
        if let Ok(v) = poem::http::HeaderValue::from_str(&text) {
            resp.headers_mut().append("warning", v);
        }
    }
    resp
}

fn json<T: Serialize>(body: &T, content_type: &str) -> Response {
    Response::builder().content_type(content_type).body(serde_json::to_vec(body).expect("API objects serialize"))
}

fn table_content_type(version: &str) -> String {
    format!("application/json;as=Table;v={version};g=meta.k8s.io")
}

/// The list body, borrowing the snapshot's objects instead of copying them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListBody<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: ListMeta,
    items: Vec<&'a KlioBackup>,
}

#[handler]
pub async fn list(req: &Request, Data(state): Data<&Arc<AppState>>) -> Result<Response, ApiError> {
    let params = parse_params(req.uri().query(), true)?;
    let repr = representation(req)?;
    if params.watch {
        return Err(ApiError::new(
            poem::http::StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("watch is not supported on {}: list or get instead", plural()),
        ));
    }
    let snapshot = state.catalog.snapshot().await?;
    let items = snapshot.backups.iter().filter(|b| params.fields.matches(b));
    let metadata = ListMeta { resource_version: Some(snapshot.resource_version.clone()), ..Default::default() };
    let resp = match repr {
        Representation::Json => json(
            &ListBody { api_version: GROUP_VERSION, kind: RESOURCES[0].list_kind, metadata, items: items.collect() },
            "application/json",
        ),
        Representation::Table(v) => json(&table::render(v, items, metadata, params.include), &table_content_type(v)),
    };
    Ok(with_warnings(resp, &snapshot))
}

/// Names that cannot be any object's name are a client error; well-formed unknown names are 404.
fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid resource name {name:?}: a KlioBackup name is <clusterName>.<backupID>, made of letters, digits, '.', '-' and '_', at most 253 characters"
        )))
    }
}

#[handler]
pub async fn get(req: &Request, Data(state): Data<&Arc<AppState>>) -> Result<Response, ApiError> {
    let name = req.path_params::<String>().map_err(|_| ApiError::bad_request("missing resource name"))?;
    validate_name(&name)?;
    let params = parse_params(req.uri().query(), false)?;
    let repr = representation(req)?;
    let snapshot = state.catalog.snapshot().await?;
    let backup = snapshot.get(&name).ok_or_else(|| ApiError::not_found(plural(), &name))?;
    let resp = match repr {
        Representation::Json => json(backup, "application/json"),
        Representation::Table(v) => {
            let metadata = ListMeta { resource_version: Some(snapshot.resource_version.clone()), ..Default::default() };
            json(&table::render(v, std::iter::once(backup), metadata, params.include), &table_content_type(v))
        }
    };
    Ok(with_warnings(resp, &snapshot))
}

/// create, update, patch and delete: the catalog is read-only.
#[handler]
pub fn method_not_allowed(req: &Request) -> ApiError {
    let name = req.path_params::<String>().ok();
    ApiError::method_not_allowed(Some((plural(), name.as_deref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("cluster-example.backup-20251113093137").is_ok());
        assert!(validate_name("nonexistent").is_ok(), "well-formed unknown names are a 404, not a 400");
        for bad in ["", ".", "..", "a b", "a%2Fb", "ä", &"x".repeat(254)] {
            assert_eq!(validate_name(bad).unwrap_err().code, 400, "{bad:?}");
        }
    }

    #[test]
    fn params() {
        assert_eq!(parse_params(Some("limit=500"), true).unwrap().include, IncludeObject::Metadata);
        assert_eq!(parse_params(Some("includeObject=Object"), true).unwrap().include, IncludeObject::Object);
        assert!(parse_params(Some("watch=true"), true).unwrap().watch);
        for bad in [
            "limit=-1",
            "limit=x",
            "includeObject=All",
            "watch=maybe",
            "timeoutSeconds=1.5",
            "continue=abc",
            "fieldSelector=status.phase%3DX",
        ] {
            assert_eq!(parse_params(Some(bad), true).unwrap_err().code, 400, "{bad}");
        }
    }
}
