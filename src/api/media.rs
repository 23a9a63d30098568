//! Media types on the wire: what a request's `Accept` header allows, read the
//! way k8s.io/apiserver reads it, and JSON answers with their `Content-Type`
//! (and an `ETag` for the documents clients cache).
//!
//! Only JSON is produced. The media ranges of `Accept` (every `Accept` field,
//! in order) are tried from the highest quality down, and at equal quality a
//! concrete type before a wildcard, otherwise in the order written; the first
//! acceptable range decides. A range with `q=0` is never acceptable (RFC 9110),
//! and a header without any usable range accepts nothing. No `Accept` (or an
//! empty one) accepts JSON.
//!
//! Discovery ranges may ask for a conversion with the parameters
//! `g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList` (aggregated
//! discovery, also `v=v2beta1`). Such a range is acceptable only where the
//! aggregated form exists (`/apis`); elsewhere, as in the apiserver, a range
//! asking for any conversion is skipped and a later plain one may still match.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::status::Error;

/// `application/json`.
pub const JSON: &str = "application/json";

/// The API group of aggregated discovery.
pub const AGGREGATED_GROUP: &str = "apidiscovery.k8s.io";

/// The kind aggregated discovery is asked for and answered as.
pub const AGGREGATED_KIND: &str = "APIGroupDiscoveryList";

/// A version of aggregated discovery (the documents are the same shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregatedVersion {
    /// `apidiscovery.k8s.io/v2` (Kubernetes 1.30 and later; preferred).
    V2,
    /// `apidiscovery.k8s.io/v2beta1` (older apiservers, while in beta).
    V2beta1,
}

impl AggregatedVersion {
    /// The version a `v=` parameter names.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "v2" => Some(Self::V2),
            "v2beta1" => Some(Self::V2beta1),
            _ => None,
        }
    }

    /// `v2` / `v2beta1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V2 => "v2",
            Self::V2beta1 => "v2beta1",
        }
    }

    /// The document's `apiVersion`.
    pub fn api_version(self) -> &'static str {
        match self {
            Self::V2 => "apidiscovery.k8s.io/v2",
            Self::V2beta1 => "apidiscovery.k8s.io/v2beta1",
        }
    }

    /// The answer's `Content-Type`: JSON with the conversion it carries, which
    /// the aggregator checks before it decodes the body.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::V2 => "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
            Self::V2beta1 => {
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
            }
        }
    }
}

/// How a discovery document may be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// As an `APIGroupDiscoveryList` of this version.
    Aggregated(AggregatedVersion),
    /// In the plain form (`APIGroupList`, `APIGroup`, `APIResourceList`).
    Plain,
}

/// One media range of an `Accept` header.
#[derive(Debug, Clone, PartialEq)]
struct Range {
    /// Lowercase type (`application`, `*`).
    kind: String,
    /// Lowercase subtype (`json`, `*`).
    subtype: String,
    /// Parameters other than `q`, names lowercase, values as written.
    params: Vec<(String, String)>,
    /// Quality, in [0, 1].
    q: f32,
}

impl Range {
    /// Whether the range covers `application/json`.
    fn covers_json(&self) -> bool {
        matches!(self.kind.as_str(), "application" | "*")
            && matches!(self.subtype.as_str(), "json" | "*")
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// What the range asks to convert to: `None` for no conversion, `Some(Err)`
    /// for one we do not serve.
    fn conversion(&self) -> Option<Result<AggregatedVersion, ()>> {
        let (g, v, kind) = (self.param("g"), self.param("v"), self.param("as"));
        if g.is_none() && v.is_none() && kind.is_none() {
            return None;
        }
        let version = v.and_then(AggregatedVersion::parse);
        Some(match (g, version, kind) {
            (Some(AGGREGATED_GROUP), Some(version), Some(AGGREGATED_KIND)) => Ok(version),
            _ => Err(()),
        })
    }
}

/// The `Accept` text of a request: every `Accept` field joined, `None` when
/// there is none or it is blank (which accepts anything).
fn accept_text(headers: &HeaderMap) -> Option<String> {
    let fields: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    (!fields.is_empty()).then(|| fields.join(","))
}

/// The acceptable media ranges of `text`, best first. Malformed ranges are
/// skipped; so are ranges with `q=0` or an unreadable quality.
fn ranges(text: &str) -> Vec<Range> {
    let mut out = Vec::new();
    for part in text.split(',') {
        let mut pieces = part.split(';');
        let media = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
        let (kind, subtype) = match media.split_once('/') {
            Some((k, s)) if !k.trim().is_empty() && !s.trim().is_empty() => {
                (k.trim().to_string(), s.trim().to_string())
            }
            None if media == "*" => ("*".to_string(), "*".to_string()),
            _ => continue,
        };
        let mut q = Some(1.0_f32);
        let mut params = Vec::new();
        for param in pieces {
            let Some((name, value)) = param.split_once('=') else {
                continue;
            };
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim();
            if name == "q" {
                q = value
                    .parse::<f32>()
                    .ok()
                    .filter(|q| q.is_finite())
                    .map(|q| q.clamp(0.0, 1.0));
            } else {
                params.push((name, value.to_string()));
            }
        }
        match q {
            Some(q) if q > 0.0 => out.push(Range {
                kind,
                subtype,
                params,
                q,
            }),
            _ => {}
        }
    }
    // Stable: equal ranges keep the order the client wrote them in.
    out.sort_by(|a, b| {
        b.q.total_cmp(&a.q)
            .then_with(|| (a.kind == "*").cmp(&(b.kind == "*")))
            .then_with(|| (a.subtype == "*").cmp(&(b.subtype == "*")))
    });
    out
}

/// How to answer a discovery request, `None` when nothing we serve is
/// acceptable (406). `aggregated` says whether the path has an aggregated form
/// (`/apis`); where it has not, ranges asking for it are skipped.
pub fn discovery(headers: &HeaderMap, aggregated: bool) -> Option<Discovery> {
    let Some(text) = accept_text(headers) else {
        return Some(Discovery::Plain);
    };
    ranges(&text)
        .iter()
        .filter(|r| r.covers_json())
        .find_map(|r| match r.conversion() {
            None => Some(Discovery::Plain),
            Some(Ok(version)) if aggregated => Some(Discovery::Aggregated(version)),
            Some(_) => None,
        })
}

/// For discovery documents that have only the plain form (`/apis/<group>`,
/// `/apis/<group>/<version>`): `Ok` when it is acceptable.
///
/// # Errors
/// The 406 that says what is served.
pub fn require_plain(headers: &HeaderMap) -> Result<(), Error> {
    match discovery(headers, false) {
        Some(_) => Ok(()),
        None => Err(not_acceptable(
            headers,
            "discovery is served as application/json (aggregated discovery only at /apis)",
        )),
    }
}

/// Whether plain JSON is acceptable, parameters aside (OpenAPI documents:
/// protobuf is asked for too, and JSON is answered when JSON is acceptable).
pub fn accepts_json(headers: &HeaderMap) -> bool {
    match accept_text(headers) {
        None => true,
        Some(text) => ranges(&text).iter().any(Range::covers_json),
    }
}

/// The 406 for a request that accepts nothing we serve; `served` says what is.
pub fn not_acceptable(headers: &HeaderMap, served: &str) -> Error {
    let asked = accept_text(headers).unwrap_or_default();
    Error::NotAcceptable(format!(
        "none of the media types in Accept {asked:?} is served here; {served}"
    ))
}

/// `bytes` as the body with `content_type`.
pub fn bytes(bytes: Vec<u8>, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
}

/// `GET /apis/<group>`: the group's `APIGroup` document (`body`, its name and
/// versions) with its kind, in plain JSON only.
pub fn api_group(headers: &HeaderMap, mut body: serde_json::Value) -> Response {
    if let Err(e) = require_plain(headers) {
        return e.into_response();
    }
    if let Some(map) = body.as_object_mut() {
        map.insert("kind".into(), serde_json::json!("APIGroup"));
        map.insert("apiVersion".into(), serde_json::json!("v1"));
    }
    json(&body, JSON)
}

/// `body` encoded as JSON, with `content_type`.
pub fn json(body: &serde_json::Value, content_type: &'static str) -> Response {
    match serde_json::to_vec(body) {
        Ok(encoded) => bytes(encoded, content_type),
        Err(e) => Error::Internal(format!("encoding the answer: {e}")).into_response(),
    }
}

/// An opaque tag of `bytes` (FNV-1a, 64 bits, hex): it changes when they do.
pub fn tag(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016X}")
}

/// Whether `If-None-Match` names `etag` (quoted), weakly compared, or is `*`.
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// `bytes` with `content_type` and an `ETag`; `304 Not Modified` without a
/// body when the request's `If-None-Match` already names it (the aggregator
/// sends the last one back). Answers vary with `Accept`, and say so.
pub fn cached(headers: &HeaderMap, body: Vec<u8>, content_type: &'static str) -> Response {
    let etag = format!("\"{}\"", tag(&body));
    let mut response = if not_modified(headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        bytes(body, content_type)
    };
    let h = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, value);
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    response
}

/// [`cached`] for a JSON value.
pub fn cached_json(
    headers: &HeaderMap,
    body: &serde_json::Value,
    content_type: &'static str,
) -> Response {
    match serde_json::to_vec(body) {
        Ok(encoded) => cached(headers, encoded, content_type),
        Err(e) => Error::Internal(format!("encoding the answer: {e}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AggregatedVersion::{V2beta1, V2};
    use Discovery::{Aggregated, Plain};

    /// What the kube-aggregator (1.30+) sends to `/apis` of an APIService.
    const AGGREGATOR: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
    /// What older kube-aggregators (aggregated discovery in beta) send.
    const AGGREGATOR_V2BETA1: &str =
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
    /// What client-go's discovery (kubectl) sends.
    const CLIENT_GO: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

    fn accept(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn apis_negotiates_like_the_apiserver() {
        let cases: &[(&[&str], Option<Discovery>)] = &[
            (&[AGGREGATOR], Some(Aggregated(V2))),
            (&[AGGREGATOR_V2BETA1], Some(Aggregated(V2beta1))),
            (&[CLIENT_GO], Some(Aggregated(V2))),
            (&[], Some(Plain)),
            (&[""], Some(Plain)),
            (&["application/json"], Some(Plain)),
            (&["*/*"], Some(Plain)),
            (&["application/vnd.kubernetes.protobuf, */*"], Some(Plain)),
            // Quality outranks order; at equal quality the order written decides.
            (
                &["application/json;q=0.5,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"],
                Some(Aggregated(V2beta1)),
            ),
            (
                &["application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;q=0.9,application/json"],
                Some(Plain),
            ),
            (
                &["application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"],
                Some(Aggregated(V2beta1)),
            ),
            // A concrete type before a wildcard at equal quality.
            (
                &["*/*,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"],
                Some(Aggregated(V2)),
            ),
            // Two Accept fields count as one list.
            (&[AGGREGATOR_V2BETA1, "application/json"], Some(Aggregated(V2beta1))),
            // Conversions we do not serve are skipped, not fatal.
            (
                &["application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList,application/json"],
                Some(Plain),
            ),
            (&["application/json;as=Table;v=v1;g=meta.k8s.io"], None),
            (&["application/json;q=0"], None),
            (&["application/json;q=zero"], None),
            (&["application/yaml"], None),
            (&["application/vnd.kubernetes.protobuf"], None),
            (&["text/html, garbage"], None),
            // Case of type and parameter names does not matter.
            (
                &["Application/JSON;G=apidiscovery.k8s.io;V=v2;AS=APIGroupDiscoveryList"],
                Some(Aggregated(V2)),
            ),
        ];
        for (values, want) in cases {
            assert_eq!(discovery(&accept(values), true), *want, "{values:?}");
        }
    }

    #[test]
    fn other_discovery_paths_answer_plain_or_406() {
        assert_eq!(discovery(&accept(&[CLIENT_GO]), false), Some(Plain));
        assert_eq!(
            discovery(&accept(&[AGGREGATOR, "application/json"]), false),
            Some(Plain)
        );
        assert_eq!(discovery(&accept(&[AGGREGATOR]), false), None);
        assert_eq!(discovery(&accept(&[AGGREGATOR_V2BETA1]), false), None);
        assert_eq!(discovery(&accept(&[]), false), Some(Plain));
    }

    #[test]
    fn openapi_takes_json_when_json_is_acceptable() {
        for yes in [
            &[][..],
            &["application/json"],
            &["*/*"],
            &["application/*"],
            &["application/com.github.proto-openapi.spec.v2@v1.0+protobuf, application/json"],
            &["application/com.github.proto-openapi.spec.v3.v1.0+protobuf;q=1,application/json;q=0.1"],
        ] {
            assert!(accepts_json(&accept(yes)), "{yes:?}");
        }
        for no in [
            &["application/com.github.proto-openapi.spec.v2@v1.0+protobuf"][..],
            &["application/com.github.proto-openapi.spec.v3.v1.0+protobuf"],
            &["application/json;q=0, application/vnd.kubernetes.protobuf"],
            &["text/plain"],
        ] {
            assert!(!accepts_json(&accept(no)), "{no:?}");
        }
    }

    #[test]
    fn content_types_carry_the_conversion() {
        for v in [V2, V2beta1] {
            let ct = v.content_type();
            let mut parts = ct.split(';');
            assert_eq!(parts.next(), Some("application/json"));
            let params: Vec<&str> = parts.collect();
            assert_eq!(
                params,
                vec![
                    "g=apidiscovery.k8s.io",
                    &format!("v={}", v.as_str()),
                    "as=APIGroupDiscoveryList"
                ]
            );
            assert_eq!(
                v.api_version(),
                format!("apidiscovery.k8s.io/{}", v.as_str())
            );
        }
    }

    #[test]
    fn etags_match_if_none_match() {
        let body = b"{}".to_vec();
        let etag = format!("\"{}\"", tag(&body));
        assert_eq!(tag(&body), tag(b"{}"));
        assert_ne!(tag(&body), tag(b"{ }"));
        let mut h = HeaderMap::new();
        assert!(!not_modified(&h, &etag));
        h.insert(
            header::IF_NONE_MATCH,
            format!("\"other\", W/{etag}").parse().unwrap(),
        );
        assert!(not_modified(&h, &etag));
        let r = cached(&h, body.clone(), JSON);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(r.headers()[header::ETAG], etag.as_str());
        let r = cached(&HeaderMap::new(), body, JSON);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::VARY], "Accept");
    }
}
