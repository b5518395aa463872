//! The options of list, watch and get, from the operation's typed query (read with
//! poem-openapi's parsers, see [`super::operations`]) to what the handlers use: defaulted and
//! validated as kube-apiserver defaults and validates `ListOptions` (its 400s and 422s).

use serde::{Deserialize, Serialize};

use super::operations::{GetQuery, IncludeObject as DocumentIncludeObject, ListQuery};
use super::request::Query;
use super::selectors::{FieldSelector, LabelSelector, Selectors};
use super::status::{ApiError, FieldError};
use super::table::IncludeObject;

/// `resourceVersionMatch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RvMatch {
    /// Any state not older than the version.
    NotOlderThan,
    /// The state at exactly the version.
    Exact,
}

/// The options of list, watch and get, validated.
#[derive(Debug, Default, Clone)]
pub struct Params {
    /// How much of each object a Table row carries.
    pub include: IncludeObject,
    /// `fieldSelector` and `labelSelector` (lists and watches).
    pub selectors: Selectors,
    /// At most this many objects (absent or 0: all).
    pub limit: Option<usize>,
    /// Where a paged list resumes.
    pub continue_token: Option<ContinueToken>,
    /// The `resourceVersion` asked for ("" is none).
    pub resource_version: Option<String>,
    /// How `resource_version` applies.
    pub rv_match: Option<RvMatch>,
    /// A watch rather than a list.
    pub watch: bool,
    /// `timeoutSeconds`.
    pub timeout_seconds: Option<u64>,
    /// `allowWatchBookmarks`.
    pub allow_bookmarks: bool,
    /// `sendInitialEvents`, after kube's defaulting.
    pub send_initial_events: Option<bool>,
}

impl From<DocumentIncludeObject> for IncludeObject {
    fn from(value: DocumentIncludeObject) -> Self {
        match value {
            DocumentIncludeObject::None => Self::None,
            DocumentIncludeObject::Metadata => Self::Metadata,
            DocumentIncludeObject::Object => Self::Object,
        }
    }
}

impl Params {
    /// The options of a list, or of a watch when `watch` (the first `watch` value, read by the
    /// caller from the same query).
    pub fn list(q: &ListQuery, watch: bool) -> Result<Self, ApiError> {
        let mut p = Params {
            include: q.include_object.map(Into::into).unwrap_or_default(),
            limit: q.limit.filter(|n| *n > 0).map(|n| n.min(usize::MAX as u64) as usize),
            timeout_seconds: q.timeout_seconds,
            watch,
            allow_bookmarks: q.allow_watch_bookmarks.is_some_and(|b| b.0),
            send_initial_events: q.send_initial_events.map(|b| b.0),
            ..Default::default()
        };
        if let Some(value) = &q.field_selector {
            p.selectors.fields = FieldSelector::parse(value).map_err(ApiError::bad_request)?;
        }
        if let Some(value) = &q.label_selector {
            p.selectors.labels = LabelSelector::parse(value).map_err(ApiError::bad_request)?;
        }
        let rv = q.resource_version.as_deref().unwrap_or_default();
        p.resource_version = Some(rv.to_string()).filter(|rv| !rv.is_empty());
        let rv_match = q.resource_version_match.as_deref().unwrap_or_default();
        let continue_text = q.continue_.as_deref().unwrap_or_default();
        // kube's SetListOptionsDefaults with the WatchList feature on (its default from 1.34): a
        // watch from "" or "0" that names neither option streams its initial events.
        let (send_initial_events, rv_match) =
            if p.watch && p.send_initial_events.is_none() && rv_match.is_empty() && (rv.is_empty() || rv == "0") {
                (Some(true), "NotOlderThan")
            } else {
                (p.send_initial_events, rv_match)
            };
        let errors = validate_list_options(p.watch, rv, rv_match, continue_text, send_initial_events);
        if !errors.is_empty() {
            return Err(ApiError::invalid("meta.k8s.io", "ListOptions", "", &errors));
        }
        p.send_initial_events = send_initial_events;
        p.rv_match = match rv_match {
            "Exact" => Some(RvMatch::Exact),
            "NotOlderThan" => Some(RvMatch::NotOlderThan),
            _ => None,
        };
        // A watch ignores `continue`, as kube's watch does.
        if !p.watch && !continue_text.is_empty() {
            p.continue_token = Some(ContinueToken::decode(continue_text)?);
        }
        // "0" may come with `continue` (kube's storage refuses any other version there).
        if p.continue_token.is_some() && p.resource_version.as_deref().is_some_and(|rv| rv != "0") {
            return Err(ApiError::bad_request(
                "resourceVersion: Forbidden: specifying resource version is not allowed when using continue",
            ));
        }
        Ok(p)
    }

    /// The options of a get: the document's (`includeObject`), and kube's `GetOptions`
    /// (`resourceVersion`, and `resourceVersionMatch` for the semantics of a list of one), which
    /// the document does not publish.
    pub fn get(q: &GetQuery, query: &Query) -> Result<Self, ApiError> {
        let mut p = Params { include: q.include_object.map(Into::into).unwrap_or_default(), ..Default::default() };
        p.resource_version = query.first("resourceVersion").filter(|rv| !rv.is_empty()).map(str::to_string);
        let rv_match = query.first("resourceVersionMatch").unwrap_or_default();
        if !rv_match.is_empty() {
            p.rv_match = Some(match rv_match {
                "NotOlderThan" => RvMatch::NotOlderThan,
                "Exact" => RvMatch::Exact,
                other => {
                    return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
                )))
                }
            });
            if p.resource_version.is_none() {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
        }
        Ok(p)
    }
}

/// k8s.io/apimachinery's `ValidateListOptions` (meta/internalversion/validation), with the
/// WatchList feature on: which combinations of `resourceVersion`, `resourceVersionMatch`,
/// `continue` and `sendInitialEvents` a list or a watch may use. kube answers these with a 422
/// Invalid `ListOptions.meta.k8s.io` Status, every error a cause.
fn validate_list_options(
    watch: bool,
    rv: &str,
    rv_match: &str,
    continue_text: &str,
    send_initial_events: Option<bool>,
) -> Vec<FieldError> {
    const RV_MATCH: &str = "resourceVersionMatch";
    let mut errors = vec![];
    if watch {
        if send_initial_events.is_some() && rv_match != "NotOlderThan" {
            errors.push(FieldError::forbidden(
                RV_MATCH,
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if !rv_match.is_empty() {
            if send_initial_events.is_none() {
                errors.push(FieldError::forbidden(
                    RV_MATCH,
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                ));
            }
            if rv_match != "NotOlderThan" {
                errors.push(FieldError::not_supported(RV_MATCH, rv_match, &["NotOlderThan"]));
            }
            if !continue_text.is_empty() {
                errors.push(FieldError::forbidden(
                    RV_MATCH,
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
        }
        return errors;
    }
    if !rv_match.is_empty() {
        if rv.is_empty() {
            errors.push(FieldError::forbidden(
                RV_MATCH,
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        if !continue_text.is_empty() {
            errors.push(FieldError::forbidden(RV_MATCH, "resourceVersionMatch is forbidden when continue is provided"));
        }
        if rv_match != "Exact" && rv_match != "NotOlderThan" {
            errors.push(FieldError::not_supported(RV_MATCH, rv_match, &["Exact", "NotOlderThan", ""]));
        }
        if rv_match == "Exact" && rv == "0" {
            errors.push(FieldError::forbidden(
                RV_MATCH,
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
    }
    if send_initial_events.is_some() {
        errors.push(FieldError::forbidden("sendInitialEvents", "sendInitialEvents is forbidden for list"));
    }
    errors
}

/// Where a paged list resumes: the snapshot it was read from and the last name returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContinueToken {
    /// The snapshot's resourceVersion.
    pub rv: String,
    /// The last name returned.
    pub after: String,
}

impl ContinueToken {
    /// URL-safe base64 of the token's JSON, without padding.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("a continue token serializes");
        openssl::base64::encode_block(&json).replace('+', "-").replace('/', "_").trim_end_matches('=').to_string()
    }

    fn decode(text: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::bad_request("continue: Invalid value: the continue token is not one this server issued");
        let mut b64 = text.replace('-', "+").replace('_', "/");
        while !b64.len().is_multiple_of(4) {
            b64.push('=');
        }
        let json = openssl::base64::decode_block(&b64).map_err(|_| bad())?;
        serde_json::from_slice(&json).map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use poem::http::Method;

    use super::super::request::RequestInfo;
    use super::*;

    const C: &str = "/apis/kliocatalog.enterprisedb.io/v1alpha1/kliobackups";

    /// A list's options as the server reads them (see [`super::super::request`]).
    fn list_params(query: &str) -> Result<Params, ApiError> {
        let info = RequestInfo::parse(&Method::GET, C, Some(query));
        info.params
    }

    #[test]
    fn params() {
        let p = list_params("limit=500&labelSelector=a%3Db&fieldSelector=spec.clusterName%3Dx").unwrap();
        assert_eq!((p.limit, p.include), (Some(500), IncludeObject::Metadata));
        assert!(!p.selectors.is_empty());
        assert_eq!(list_params("limit=0").unwrap().limit, None);
        assert_eq!(list_params("includeObject=Object").unwrap().include, IncludeObject::Object);
        // An empty value is none, as in kube (its first value counts, like any other).
        assert_eq!(list_params("includeObject=").unwrap().include, IncludeObject::Metadata);
        assert_eq!(list_params("includeObject=&includeObject=None").unwrap().include, IncludeObject::Metadata);
        assert!(list_params("watch=true&allowWatchBookmarks=true").unwrap().allow_bookmarks);
        // Booleans as apimachinery reads them: only 0 and false are false.
        assert!(list_params("watch=yes").unwrap().watch);
        assert!(!list_params("watch=False").unwrap().watch);
        // The first of repeated values.
        assert_eq!(list_params("limit=2&limit=x").unwrap().limit, Some(2));
        assert_eq!(list_params("limit=x&limit=2").unwrap_err().code, 400);
        for bad in [
            "limit=-1",
            "limit=x",
            "includeObject=All",
            "timeoutSeconds=1.5",
            "continue=abc",
            "fieldSelector=status.phase%3DX",
            "labelSelector=a+in+b",
            "continue=eyJydiI6IjEiLCJhZnRlciI6IiJ9&resourceVersion=1",
        ] {
            assert_eq!(list_params(bad).unwrap_err().code, 400, "{bad}");
        }
        // A watch from a version ignores `continue`, as kube's does; from none, kube's defaults
        // make it a streaming watch, which may not have one.
        assert!(list_params("watch=1&resourceVersion=5&continue=abc").is_ok());
        assert_eq!(list_params("watch=1&continue=abc").unwrap_err().code, 422);
        // "0" may come with a continue token.
        assert!(list_params("continue=eyJydiI6IjEiLCJhZnRlciI6IiJ9&resourceVersion=0").is_ok());
    }

    /// The cases of apimachinery's `ValidateListOptions` tests (WatchList on), with kube's
    /// messages, after kube's defaulting (`SetListOptionsDefaults`).
    #[test]
    fn list_options_are_validated_as_kube_validates_them() {
        let invalid = |query: &str| -> Vec<String> {
            match list_params(query) {
                Ok(_) => vec![],
                Err(e) => {
                    assert_eq!((e.code.as_u16(), e.reason), (422, "Invalid"), "{query}: {e}");
                    let details = e.details.as_ref().expect("details");
                    assert_eq!(
                        (details.group.as_deref(), details.kind.as_deref(), details.name.as_deref()),
                        (Some("meta.k8s.io"), Some("ListOptions"), None)
                    );
                    let causes = details.causes.as_ref().expect("causes");
                    causes
                        .iter()
                        .map(|c| format!("{}: {}", c.field.as_deref().unwrap(), c.message.as_deref().unwrap()))
                        .collect()
                }
            }
        };
        let ok: [&str; 8] = [
            "",
            "resourceVersion=1&resourceVersionMatch=Exact",
            "resourceVersion=0&resourceVersionMatch=NotOlderThan",
            "watch=true",
            "watch=true&resourceVersion=0",
            "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true",
            "watch=true&sendInitialEvents=false&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true",
            "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
        ];
        for query in ok {
            assert_eq!(invalid(query), Vec::<String>::new(), "{query}");
        }
        let cases: [(&str, &[&str]); 10] = [
            (
                "resourceVersion=0&resourceVersionMatch=Exact",
                &[r#"resourceVersionMatch: Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0""#],
            ),
            (
                "resourceVersion=0&resourceVersionMatch=foo",
                &[r#"resourceVersionMatch: Unsupported value: "foo": supported values: "Exact", "NotOlderThan", """#],
            ),
            ("sendInitialEvents=true", &["sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list"]),
            ("sendInitialEvents=false", &["sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list"]),
            (
                "resourceVersionMatch=NotOlderThan",
                &["resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"],
            ),
            (
                "watch=true&resourceVersionMatch=NotOlderThan",
                &["resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"],
            ),
            (
                "watch=true&sendInitialEvents=true",
                &["resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"],
            ),
            (
                "watch=true&sendInitialEvents=false&resourceVersion=5",
                &["resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"],
            ),
            (
                "watch=true&sendInitialEvents=true&resourceVersionMatch=Exact&allowWatchBookmarks=true",
                &[
                    "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                    r#"resourceVersionMatch: Unsupported value: "Exact": supported values: "NotOlderThan""#,
                ],
            ),
            (
                "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&continue=123",
                &["resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when continue is provided"],
            ),
        ];
        for (query, expected) in cases {
            assert_eq!(invalid(query), expected, "{query}");
        }
        // The message: kube's NewInvalid over the aggregate of the errors.
        let e = list_params("watch=true&sendInitialEvents=true&resourceVersionMatch=Exact").unwrap_err();
        assert_eq!(
            e.message,
            r#"ListOptions.meta.k8s.io "" is invalid: [resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan, resourceVersionMatch: Unsupported value: "Exact": supported values: "NotOlderThan"]"#
        );
        let e = list_params("watch=true&sendInitialEvents=true").unwrap_err();
        assert_eq!(
            e.message,
            r#"ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"#
        );
        // Defaulting: a watch from "" or "0" naming neither option streams its initial events.
        for query in ["watch=true", "watch=true&resourceVersion=0"] {
            assert_eq!(list_params(query).unwrap().send_initial_events, Some(true), "{query}");
        }
        assert_eq!(list_params("watch=true&resourceVersion=5").unwrap().send_initial_events, None);
        assert_eq!(
            list_params("watch=true&sendInitialEvents=false&resourceVersionMatch=NotOlderThan")
                .unwrap()
                .send_initial_events,
            Some(false)
        );
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = ContinueToken { rv: "17.4".into(), after: "pg-a.backup-1".into() };
        let text = t.encode();
        assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{text} is URL-safe");
        assert_eq!(ContinueToken::decode(&text).unwrap(), t);
        assert_eq!(ContinueToken::decode("not a token").unwrap_err().code, 400);
        let p = list_params(&format!("continue={text}&resourceVersion=3")).unwrap_err();
        assert!(p.message.contains("not allowed when using continue"));
    }
}
