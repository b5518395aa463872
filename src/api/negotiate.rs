//! Content negotiation on the Accept header, the way kube-apiserver does it for the media types
//! this server produces.

use std::borrow::Cow;

/// `text` in lower case, copied only when it has upper-case letters.
fn lower(text: &str) -> Cow<'_, str> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        text.to_ascii_lowercase().into()
    } else {
        text.into()
    }
}

/// One entry of an Accept header.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRange<'a> {
    /// `type/subtype`, lower-cased (media types compare without case).
    pub essence: Cow<'a, str>,
    /// The parameters but `q`, keys lower-cased, values unquoted (`as`, `v`, `g` pick a Table
    /// or a discovery form).
    pub params: Vec<(Cow<'a, str>, &'a str)>,
    /// The client's preference, 0 to 1.
    pub q: f32,
}

impl MediaRange<'_> {
    /// The value of parameter `key` (lower case), if given.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// Parses an Accept header; entries are ordered by `q` (stable, so the client's order breaks ties).
/// Entries with `q=0` are dropped.
pub fn parse_accept(header: &str) -> Vec<MediaRange<'_>> {
    let mut ranges: Vec<MediaRange> = header
        .split(',')
        .filter_map(|part| {
            let mut pieces = part.split(';');
            let essence = lower(pieces.next()?.trim());
            if essence.is_empty() {
                return None;
            }
            let mut q = 1.0f32;
            let mut params = vec![];
            for p in pieces {
                let (k, v) = p.split_once('=')?;
                let k = lower(k.trim());
                let v = v.trim().trim_matches('"');
                if k == "q" {
                    q = v.parse().ok().filter(|q: &f32| (0.0..=1.0).contains(q))?;
                } else {
                    params.push((k, v));
                }
            }
            Some(MediaRange { essence, params, q })
        })
        .filter(|r| r.q > 0.0)
        .collect();
    ranges.sort_by(|a, b| b.q.partial_cmp(&a.q).unwrap_or(std::cmp::Ordering::Equal));
    ranges
}

/// Does this range accept plain JSON?
pub fn is_json(range: &MediaRange) -> bool {
    matches!(&*range.essence, "application/json" | "application/*" | "*/*") && range.param("as").is_none()
}

/// How a resource response is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON, also for watch streams (`application/json;stream=watch`).
    Json,
    /// kube-apiserver serves YAML for everything but watches (YAML has no stream framing).
    Yaml,
}

/// What a resource response holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The objects themselves: a `KlioBackup`, a `KlioBackupList`, watch events of objects.
    Object,
    /// A `meta.k8s.io` Table of this version (`v1` or `v1beta1`).
    Table(&'static str),
    /// `meta.k8s.io` `PartialObjectMetadata` (`list: false`) or `PartialObjectMetadataList`
    /// (`list: true`) of this version: only each object's metadata (client-go's metadata client,
    /// metadata informers, garbage collectors and quota counters ask for these).
    Metadata {
        /// The `meta.k8s.io` version asked for (`v1` or `v1beta1`).
        version: &'static str,
        /// `PartialObjectMetadataList` was asked for.
        list: bool,
    },
}

/// The representation of a resource response: what it holds and how it is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Representation {
    /// What the body holds.
    pub shape: Shape,
    /// How it is encoded.
    pub format: Format,
}

impl Representation {
    /// The objects as JSON: what a request without an Accept header gets.
    pub const JSON: Self = Self { shape: Shape::Object, format: Format::Json };

    /// The Content-Type of a response in this representation (kube-apiserver's, but for the
    /// JSON Table, which names itself as it always has here).
    pub fn content_type(&self) -> poem::http::HeaderValue {
        use poem::http::HeaderValue;
        match (self.format, self.shape) {
            (Format::Yaml, _) => HeaderValue::from_static("application/yaml"),
            (Format::Json, Shape::Table("v1")) => {
                HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io")
            }
            (Format::Json, Shape::Table("v1beta1")) => {
                HeaderValue::from_static("application/json;as=Table;v=v1beta1;g=meta.k8s.io")
            }
            (Format::Json, Shape::Table(v)) => {
                HeaderValue::from_str(&format!("application/json;as=Table;v={v};g=meta.k8s.io"))
                    .expect("a Table version is a token")
            }
            (Format::Json, _) => HeaderValue::from_static("application/json"),
        }
    }
}

/// What a 406 names: the media types this server encodes (kube lists its serializers' types).
pub const RESOURCE_MEDIA_TYPES: &[&str] = &["application/json", "application/yaml"];
/// What a 406 for a watch names: the stream types (YAML has none).
pub const WATCH_MEDIA_TYPES: &[&str] = &["application/json;stream=watch"];

/// The formats a range names, in kube's serializer order (JSON first for wildcards).
fn formats(range: &MediaRange) -> &'static [Format] {
    match &*range.essence {
        "application/json" => &[Format::Json],
        "application/yaml" => &[Format::Yaml],
        "application/*" | "*/*" => &[Format::Json, Format::Yaml],
        _ => &[],
    }
}

/// kube's `acceptMediaTypeOptions` for the parameters every endpoint checks: `stream` (only
/// `watch`, only for a format with stream framing) and `sv` (only the meta version, `v1`).
fn stream_and_server_version_allowed(range: &MediaRange, format: Format) -> bool {
    let stream_ok = match range.param("stream").filter(|s| !s.is_empty()) {
        None => true,
        Some(stream) => format == Format::Json && stream == "watch",
    };
    let sv_ok = range.param("sv").filter(|v| !v.is_empty()).is_none_or(|v| v == "v1");
    stream_ok && sv_ok
}

/// Whether the range asks for a conversion (`as`, `g` or `v`), and the shape it names if this
/// server produces it: a Table (JSON or YAML) or partial object metadata, in `meta.k8s.io`
/// `v1` or `v1beta1` (the resource endpoint's `AllowsMediaTypeTransform`).
fn conversion(range: &MediaRange) -> Option<Option<Shape>> {
    let (kind, group, version) = (range.param("as"), range.param("g"), range.param("v"));
    if kind.is_none() && group.is_none() && version.is_none() {
        return None;
    }
    let version = match (group, version) {
        (Some("meta.k8s.io"), Some("v1")) => "v1",
        (Some("meta.k8s.io"), Some("v1beta1")) => "v1beta1",
        _ => return Some(None),
    };
    Some(match kind {
        Some("Table") => Some(Shape::Table(version)),
        Some("PartialObjectMetadata") => Some(Shape::Metadata { version, list: false }),
        Some("PartialObjectMetadataList") => Some(Shape::Metadata { version, list: true }),
        _ => None,
    })
}

/// What a request's Accept header asks for, read once per request (see
/// [`super::request::RequestInfo`]): what a resource response is sent as, and what an error's
/// Status body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The representation of a resource response; `None`: none this server produces (a 406).
    pub resource: Option<Representation>,
    /// The format of an error's Status body.
    pub error_format: Format,
}

impl Negotiated {
    /// What a request without an Accept header gets: JSON.
    pub const JSON: Self = Self { resource: Some(Representation::JSON), error_format: Format::Json };
}

/// Reads an Accept header once for both choices: the representation of a resource response and
/// the format of an error's Status body.
pub fn negotiate(accept: Option<&str>) -> Negotiated {
    match accept.filter(|a| !a.trim().is_empty()) {
        None => Negotiated::JSON,
        // What most API clients send (client-go's JSON clients, `kubectl get -o json`), known
        // without parsing (a test checks it is what parsing gives).
        Some(PLAIN_JSON) => Negotiated::JSON,
        Some(accept) => negotiate_parsed(accept),
    }
}

const PLAIN_JSON: &str = "application/json";

fn negotiate_parsed(accept: &str) -> Negotiated {
    let ranges = parse_accept(accept);
    Negotiated { resource: resource_of(&ranges), error_format: error_format_of(&ranges) }
}

/// Picks what to send for a resource request, as kube-apiserver's `NegotiateOutputMediaType`
/// does: the first range (by q, then the client's order) this server can produce; `None` when
/// none can be (a 406).
fn resource_of(ranges: &[MediaRange]) -> Option<Representation> {
    for range in ranges {
        for &format in formats(range) {
            if !stream_and_server_version_allowed(range, format) {
                continue;
            }
            match conversion(range) {
                None => return Some(Representation { shape: Shape::Object, format }),
                Some(Some(shape)) => return Some(Representation { shape, format }),
                Some(None) => {}
            }
        }
    }
    None
}

/// The format of an error's Status body, as kube's `ErrorNegotiated` picks it: the first range
/// asking for no conversion; JSON when none does (kube then writes the Status as raw JSON).
fn error_format_of(ranges: &[MediaRange]) -> Format {
    for range in ranges {
        for &format in formats(range) {
            // The default endpoint restrictions: no conversion, no server version.
            if conversion(range).is_none()
                && range.param("sv").filter(|v| !v.is_empty()).is_none()
                && stream_and_server_version_allowed(range, format)
            {
                return format;
            }
        }
    }
    Format::Json
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource_representation(accept: Option<&str>) -> Option<Representation> {
        negotiate(accept).resource
    }

    fn error_format(accept: Option<&str>) -> Format {
        negotiate(accept).error_format
    }

    const KUBECTL_TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    /// client-go's metadata client (k8s.io/client-go/metadata): list, then get and watch.
    const METADATA_LIST: &str = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
    const METADATA_ONE: &str = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";

    fn json(shape: Shape) -> Option<Representation> {
        Some(Representation { shape, format: Format::Json })
    }

    #[test]
    fn kubectl_get_asks_for_a_v1_table() {
        assert_eq!(resource_representation(Some(KUBECTL_TABLE)), json(Shape::Table("v1")));
    }

    #[test]
    fn plain_json_is_known_without_parsing_as_parsing_reads_it() {
        assert_eq!(negotiate(Some(PLAIN_JSON)), negotiate_parsed(PLAIN_JSON));
        assert_eq!(negotiate(Some(PLAIN_JSON)), Negotiated::JSON);
    }

    #[test]
    fn plain_json_and_wildcards_and_no_header_give_json() {
        for accept in [None, Some(""), Some("application/json"), Some("*/*"), Some("application/json, */*")] {
            assert_eq!(resource_representation(accept), Some(Representation::JSON), "{accept:?}");
        }
    }

    #[test]
    fn protobuf_only_is_not_acceptable_but_a_json_fallback_is_taken() {
        assert_eq!(resource_representation(Some("application/vnd.kubernetes.protobuf")), None);
        assert_eq!(
            resource_representation(Some("application/vnd.kubernetes.protobuf, application/json")),
            Some(Representation::JSON)
        );
    }

    #[test]
    fn q_values_order_the_choices() {
        let accept = "application/json;q=0.5, application/json;as=Table;v=v1beta1;g=meta.k8s.io";
        assert_eq!(resource_representation(Some(accept)), json(Shape::Table("v1beta1")));
        assert_eq!(resource_representation(Some("application/json;q=0")), None);
    }

    #[test]
    fn the_metadata_clients_headers_skip_protobuf_and_take_json_metadata() {
        assert_eq!(resource_representation(Some(METADATA_LIST)), json(Shape::Metadata { version: "v1", list: true }));
        assert_eq!(resource_representation(Some(METADATA_ONE)), json(Shape::Metadata { version: "v1", list: false }));
        assert_eq!(
            resource_representation(Some("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1beta1")),
            json(Shape::Metadata { version: "v1beta1", list: true })
        );
        // Other groups, versions and kinds are not produced; a fallback is taken, else 406.
        for unknown in [
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v2",
            "application/json;as=PartialObjectMetadata;g=other.io;v=v1",
            "application/json;as=PartialObjectMetadata",
            "application/json;as=Status;g=meta.k8s.io;v=v1",
            "application/json;v=v1",
        ] {
            assert_eq!(resource_representation(Some(unknown)), None, "{unknown}");
            assert_eq!(
                resource_representation(Some(&format!("{unknown}, application/json"))),
                Some(Representation::JSON),
                "{unknown}"
            );
        }
    }

    #[test]
    fn yaml_is_served_and_wildcards_prefer_json() {
        let yaml = |shape| Some(Representation { shape, format: Format::Yaml });
        assert_eq!(resource_representation(Some("application/yaml")), yaml(Shape::Object));
        assert_eq!(
            resource_representation(Some("application/yaml;as=Table;g=meta.k8s.io;v=v1")),
            yaml(Shape::Table("v1"))
        );
        assert_eq!(
            resource_representation(Some("application/yaml;as=PartialObjectMetadata;g=meta.k8s.io;v=v1")),
            yaml(Shape::Metadata { version: "v1", list: false })
        );
        assert_eq!(resource_representation(Some("application/*")), Some(Representation::JSON));
        assert_eq!(resource_representation(Some("text/html, application/yaml;q=0.9")), yaml(Shape::Object));
        // No stream framing for YAML: a YAML watch stream is skipped.
        assert_eq!(resource_representation(Some("application/yaml;stream=watch")), None);
        assert_eq!(resource_representation(Some("application/json;stream=watch")), Some(Representation::JSON));
        assert_eq!(resource_representation(Some("application/json;stream=other")), None);
    }

    #[test]
    fn errors_are_negotiated_without_conversions() {
        assert_eq!(error_format(None), Format::Json);
        assert_eq!(error_format(Some("application/yaml")), Format::Yaml);
        assert_eq!(error_format(Some(KUBECTL_TABLE)), Format::Json);
        assert_eq!(
            error_format(Some("application/yaml;as=Table;g=meta.k8s.io;v=v1")),
            Format::Json,
            "no match: raw JSON"
        );
        assert_eq!(error_format(Some("application/yaml;as=Table;g=meta.k8s.io;v=v1, application/yaml")), Format::Yaml);
        assert_eq!(error_format(Some("text/html")), Format::Json);
    }

    #[test]
    fn content_types() {
        assert_eq!(Representation::JSON.content_type(), "application/json");
        assert_eq!(json(Shape::Metadata { version: "v1", list: true }).unwrap().content_type(), "application/json");
        assert_eq!(
            Representation { shape: Shape::Table("v1"), format: Format::Yaml }.content_type(),
            "application/yaml"
        );
    }
}
