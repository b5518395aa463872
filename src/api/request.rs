//! Every request is read once, here: the decoded path, the query string, the list and watch
//! options, and what the request does in Kubernetes' terms. The front (the access log, the request
//! guard: authorization, the in-flight cap, the timeouts) and the handlers all use this one parsed
//! form, so authorization can never be asked about something other than what is served.
//!
//! The query is read as kube-apiserver reads it: Go's `url.ParseQuery` (pairs split on `&`; a
//! pair holding `;` or a malformed %-escape is dropped), then, for each parameter, its first
//! value (the apimachinery conversions take `values[0]`). A boolean is false only for `0` and
//! `false` (any case), as `Convert_Slice_string_To_bool` decides.

use std::sync::Arc;
use std::time::Duration;

use poem::http::Method;
use poem::Request;

use super::negotiate::{negotiate, Negotiated};
use super::operations::{invalid_parameter, GetQuery, ListQuery, TypedQuery};
use super::params::Params;
use super::status::ApiError;
use crate::auth::authz::Attributes;

/// A query string, pairs in order, each key and value unescaped.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

/// `%XX` and `+` unescaped as Go's `url.QueryUnescape`; `None` for a malformed escape.
fn query_unescape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    // Go keeps invalid UTF-8 as bytes; the values this server reads are text, so such a value
    // is read with replacement characters (it then matches nothing).
    Some(String::from_utf8_lossy(&out).into_owned())
}

impl Query {
    /// Reads a raw query string (`None`: no query).
    pub fn parse(raw: Option<&str>) -> Self {
        let pairs = raw
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty() && !pair.contains(';'))
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                Some((query_unescape(k)?, query_unescape(v)?))
            })
            .collect();
        Self { pairs }
    }

    /// The first value of `key` (Go's `url.Values.Get`, and what apimachinery decodes).
    pub fn first(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Whether `key` is given at all (with or without a value).
    pub fn has(&self, key: &str) -> bool {
        self.first(key).is_some()
    }

    /// The query as read: each parameter once, with its first value, in the order given,
    /// form-encoded. Any reader of this string (poem-openapi's serde_urlencoded) gets exactly
    /// the values [`Query::first`] gives.
    pub fn canonical(&self) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (i, (key, value)) in self.pairs.iter().enumerate() {
            if !self.pairs[..i].iter().any(|(k, _)| k == key) {
                out.append_pair(key, value);
            }
        }
        out.finish()
    }
}

/// apimachinery's boolean parameter: false only for `0` and `false` (any case).
pub fn kube_bool(value: &str) -> bool {
    !(value == "0" || value.eq_ignore_ascii_case("false"))
}

/// A request as the server understands it.
#[derive(Debug)]
pub struct RequestInfo {
    /// The HTTP method, for the access log and the verb.
    pub method: Method,
    /// The path, percent-decoded (as routing decodes it); `None` when that is not UTF-8.
    pub path: Option<String>,
    /// The query as kube reads it; the front hands its canonical form on to poem-openapi.
    pub query: Query,
    /// The typed query of the resource's operation (read with poem-openapi's parsers), for
    /// requests on the resource whose parameters have the document's types.
    pub typed: Option<TypedQuery>,
    /// The list, watch or get options, for requests on the resource; `Ok(default)` elsewhere.
    pub params: Result<Params, ApiError>,
    /// What authorization is asked about; also the metric labels.
    pub attributes: Attributes,
    /// What the Accept header asks for (resource responses and error bodies).
    pub negotiated: Negotiated,
}

/// kube-apiserver's default for a watch without `timeoutSeconds` is 30 to 60 minutes.
pub const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
/// The longest watch this server keeps open; clients reconnect.
pub const MAX_WATCH_TIMEOUT: Duration = Duration::from_secs(3600);

impl RequestInfo {
    /// Reads a request: method, raw path, raw query (no Accept header: [`Self::of`] reads it).
    pub fn parse(method: &Method, raw_path: &str, raw_query: Option<&str>) -> Self {
        // Most paths have nothing escaped: copied as they are, without a decoding pass.
        let path = if raw_path.contains('%') {
            percent_encoding::percent_decode_str(raw_path).decode_utf8().ok().map(|p| p.into_owned())
        } else {
            Some(raw_path.to_string())
        };
        let query = Query::parse(raw_query);
        let shown_path = path.as_deref().unwrap_or(raw_path);
        let (typed, params, selected_name, watch) = match shown_path.strip_prefix(crate::routes::resource_prefix()) {
            Some(rest) if !rest.is_empty() => {
                // `<resource>` or `<resource>/`: the collection; `<resource>/<name>`: one object.
                let collection = rest.split_once('/').is_none_or(|(_, name)| name.is_empty());
                // kube: a GET of the collection is a watch when the first `watch` value says so,
                // whether or not the other options parse.
                let watch = collection && query.first("watch").is_some_and(kube_bool);
                let (typed, params) = if collection {
                    match ListQuery::from_query(&query) {
                        Ok(q) => (Some(TypedQuery::List(q.clone())), Params::list(&q, watch)),
                        Err(e) => (None, Err(invalid_parameter(&query, &e))),
                    }
                } else {
                    match GetQuery::from_query(&query) {
                        Ok(q) => (Some(TypedQuery::Get(q.clone())), Params::get(&q, &query)),
                        Err(e) => (None, Err(invalid_parameter(&query, &e))),
                    }
                };
                let name = params.as_ref().ok().and_then(|p| p.selectors.fields.required_name()).map(str::to_string);
                (typed, params, name, watch)
            }
            _ => (None, Ok(Params::default()), None, false),
        };
        let attributes = Attributes::resolve(method.as_str(), shown_path, watch, selected_name.as_deref());
        Self { method: method.clone(), path, query, typed, params, attributes, negotiated: Negotiated::JSON }
    }

    /// Reads a poem request.
    pub fn of(req: &Request) -> Self {
        Self { negotiated: negotiate(accept(req)), ..Self::parse(req.method(), req.uri().path(), req.uri().query()) }
    }

    /// Rewrites `req`'s query to [`Query::canonical`]: whatever reads the request after this
    /// (poem-openapi's parameter extraction) sees exactly the values this parse read. Fails
    /// (the request is refused) rather than leave the raw query in place.
    pub fn canonicalize(&self, req: &mut Request) -> Result<(), ApiError> {
        let Some(raw) = req.uri().query() else { return Ok(()) };
        let canonical = self.query.canonical();
        if raw == canonical {
            return Ok(());
        }
        let mut parts = req.uri().clone().into_parts();
        let path = req.uri().path();
        let path_and_query = if canonical.is_empty() { path.to_string() } else { format!("{path}?{canonical}") };
        let unreadable = || ApiError::bad_request("the request's query cannot be read");
        parts.path_and_query = Some(path_and_query.parse().map_err(|_| unreadable())?);
        *req.uri_mut() = poem::http::Uri::from_parts(parts).map_err(|_| unreadable())?;
        Ok(())
    }

    /// A watch: long-running, bounded by its own `timeoutSeconds`.
    pub fn is_watch(&self) -> bool {
        matches!(&self.attributes, Attributes::Resource { verb, .. } if *verb == "watch")
    }

    /// How long a watch may stay open: `timeoutSeconds` (0 or absent: the default), at most
    /// [`MAX_WATCH_TIMEOUT`].
    pub fn watch_timeout(&self) -> Duration {
        let asked = self.params.as_ref().ok().and_then(|p| p.timeout_seconds).filter(|s| *s > 0);
        asked.map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs).min(MAX_WATCH_TIMEOUT)
    }
}

/// The request's Accept header (its first value), as text.
pub fn accept(req: &Request) -> Option<&str> {
    req.headers().get(poem::http::header::ACCEPT).and_then(|v| v.to_str().ok())
}

/// The request's parsed form, which the front attached; parsed here if it is missing (a
/// handler called without the front, as in unit tests).
pub fn info_of(req: &Request) -> Arc<RequestInfo> {
    req.data::<Arc<RequestInfo>>().cloned().unwrap_or_else(|| Arc::new(RequestInfo::of(req)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "/apis/kliocatalog.enterprisedb.io/v1alpha1/kliobackups";

    fn verb_and_name(query: &str) -> (String, Option<String>) {
        match RequestInfo::parse(&Method::GET, C, Some(query)).attributes {
            Attributes::Resource { verb, name, .. } => (verb.to_string(), name),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_first_value_of_a_repeated_parameter_counts_everywhere() {
        let info = RequestInfo::parse(&Method::GET, C, Some("fieldSelector=metadata.name%3Da.b&fieldSelector="));
        assert_eq!(
            verb_and_name("fieldSelector=metadata.name%3Da.b&fieldSelector="),
            ("list".into(), Some("a.b".into()))
        );
        assert_eq!(info.params.unwrap().selectors.fields.required_name(), Some("a.b"), "the handler filters by a.b");
        let (verb, name) = verb_and_name("fieldSelector=&fieldSelector=metadata.name%3Da.b");
        assert_eq!((verb.as_str(), name), ("list", None), "the first (empty) selector: a list of everything");

        for (q, watch) in
            [("watch=1&watch=0", true), ("watch=0&watch=1", false), ("watch=true", true), ("watch=", true)]
        {
            let info = RequestInfo::parse(&Method::GET, C, Some(q));
            assert_eq!(info.is_watch(), watch, "{q}");
            assert_eq!(info.params.as_ref().unwrap().watch, watch, "{q}: the handler agrees");
        }
        for q in ["watch=FALSE", "watch=0", "watch=false&watch=true", "other=1"] {
            assert!(!RequestInfo::parse(&Method::GET, C, Some(q)).is_watch(), "{q}");
        }
    }

    #[test]
    fn a_query_reads_like_go_url_parse_query() {
        let q = Query::parse(Some("a=1&a=2&b&c=x%3Dy+z&d=%zz&e=1;f=2&&g=%41"));
        assert_eq!(q.first("a"), Some("1"));
        assert_eq!(q.first("b"), Some(""));
        assert_eq!(q.first("c"), Some("x=y z"));
        assert_eq!(q.first("d"), None, "a malformed escape drops the pair");
        assert_eq!(q.first("e"), None, "a pair holding ';' is dropped");
        assert_eq!(q.first("f"), None);
        assert_eq!(q.first("g"), Some("A"));
        // Escaped keys are keys.
        assert_eq!(verb_and_name("%77atch=1").0, "watch");
    }

    #[test]
    fn a_watch_whose_options_do_not_parse_is_still_a_watch() {
        let info = RequestInfo::parse(&Method::GET, C, Some("watch=1&limit=x"));
        assert!(info.is_watch());
        assert_eq!(info.params.unwrap_err().code, 400);
    }

    #[test]
    fn watch_timeouts() {
        let t = |q: &str| RequestInfo::parse(&Method::GET, C, Some(q)).watch_timeout();
        assert_eq!(t("watch=1&timeoutSeconds=5"), Duration::from_secs(5));
        assert_eq!(t("watch=1&timeoutSeconds=5&timeoutSeconds=9999"), Duration::from_secs(5));
        assert_eq!(t("watch=1&timeoutSeconds=0"), DEFAULT_WATCH_TIMEOUT);
        assert_eq!(t("watch=1&timeoutSeconds=99999999"), MAX_WATCH_TIMEOUT);
    }
}
