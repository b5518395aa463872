//! Content negotiation on the Accept header, the way kube-apiserver does it for the media types
//! this server produces.

/// One entry of an Accept header.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRange<'a> {
    pub essence: String,
    pub params: Vec<(String, &'a str)>,
    pub q: f32,
}

impl MediaRange<'_> {
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
            let essence = pieces.next()?.trim().to_ascii_lowercase();
            if essence.is_empty() {
                return None;
            }
            let mut q = 1.0f32;
            let mut params = vec![];
            for p in pieces {
                let (k, v) = p.split_once('=')?;
                let k = k.trim().to_ascii_lowercase();
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
    matches!(range.essence.as_str(), "application/json" | "application/*" | "*/*") && range.param("as").is_none()
}

/// The representation of a resource response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    Json,
    /// A `meta.k8s.io` Table of this version (`v1` or `v1beta1`).
    Table(&'static str),
}

pub const RESOURCE_MEDIA_TYPES: &[&str] = &["application/json", "application/json;as=Table;v=v1;g=meta.k8s.io"];

/// Picks what to send for a resource request; `None` when nothing acceptable can be produced.
pub fn resource_representation(accept: Option<&str>) -> Option<Representation> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else { return Some(Representation::Json) };
    for range in parse_accept(accept) {
        if is_json(&range) {
            return Some(Representation::Json);
        }
        if range.essence == "application/json"
            && range.param("as") == Some("Table")
            && range.param("g") == Some("meta.k8s.io")
        {
            match range.param("v") {
                Some("v1") => return Some(Representation::Table("v1")),
                Some("v1beta1") => return Some(Representation::Table("v1beta1")),
                _ => {}
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL_TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

    #[test]
    fn kubectl_get_asks_for_a_v1_table() {
        assert_eq!(resource_representation(Some(KUBECTL_TABLE)), Some(Representation::Table("v1")));
    }

    #[test]
    fn plain_json_and_wildcards_and_no_header_give_json() {
        for accept in [None, Some(""), Some("application/json"), Some("*/*"), Some("application/json, */*")] {
            assert_eq!(resource_representation(accept), Some(Representation::Json), "{accept:?}");
        }
    }

    #[test]
    fn protobuf_only_is_not_acceptable_but_a_json_fallback_is_taken() {
        assert_eq!(resource_representation(Some("application/vnd.kubernetes.protobuf")), None);
        assert_eq!(
            resource_representation(Some("application/vnd.kubernetes.protobuf, application/json")),
            Some(Representation::Json)
        );
        assert_eq!(
            resource_representation(Some("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io")),
            None
        );
    }

    #[test]
    fn q_values_order_the_choices() {
        let accept = "application/json;q=0.5, application/json;as=Table;v=v1beta1;g=meta.k8s.io";
        assert_eq!(resource_representation(Some(accept)), Some(Representation::Table("v1beta1")));
        assert_eq!(resource_representation(Some("application/json;q=0")), None);
    }
}
