//! OpenAPI: the documents the kube-aggregator downloads from every APIService
//! backend (as `system:aggregator`, about once a minute) and that `kubectl
//! explain` and other clients read through it.
//!
//! - `GET /openapi/v2`: one Swagger 2.0 document with every value path of
//!   every group-version served.
//! - `GET /openapi/v3`: the root, `{"paths": {"apis/<group>/<version>":
//!   {"serverRelativeURL": "/openapi/v3/apis/<group>/<version>?hash=<tag>"}}}`;
//!   the tag changes when the document does, so clients may cache by URL.
//! - `GET /openapi/v3/apis/<group>/<version>`: that group-version as an
//!   OpenAPI 3.0 document.
//!
//! The documents describe the value paths (the ones HPAs call) with their
//! parameters, and the list kinds they answer with, under the names the
//! k8s.io/metrics types have (`io.k8s.metrics.pkg.apis...`); the kinds they
//! embed from apimachinery (metadata, label selectors, quantities) are written
//! inline, so merging them into the kube-apiserver's document cannot clash
//! with its own definitions. Only JSON is served: a client that accepts only
//! the protobuf forms gets 406.

use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::custom::{self, Version};
use super::status::Error;
use super::{external, media};

/// What the documents say they describe.
const TITLE: &str = "prescale";

/// A group-version served, as the OpenAPI documents list it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupVersion {
    /// `external.metrics.k8s.io/v1beta1`.
    External,
    /// `custom.metrics.k8s.io/<version>`.
    Custom(Version),
}

impl GroupVersion {
    /// Every group-version served, in discovery order.
    pub const ALL: [GroupVersion; 3] = [
        GroupVersion::External,
        GroupVersion::Custom(Version::V1beta2),
        GroupVersion::Custom(Version::V1beta1),
    ];

    fn group(self) -> &'static str {
        match self {
            GroupVersion::External => external::GROUP,
            GroupVersion::Custom(_) => custom::GROUP,
        }
    }

    fn version(self) -> &'static str {
        match self {
            GroupVersion::External => external::VERSION,
            GroupVersion::Custom(v) => v.as_str(),
        }
    }

    /// `apis/<group>/<version>`: the key in the v3 root, and its path below
    /// `/openapi/v3/`.
    pub fn key(self) -> String {
        format!("apis/{}/{}", self.group(), self.version())
    }

    /// The group-version a path below `/openapi/v3/` names.
    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|gv| gv.key() == key)
    }

    /// The k8s.io/metrics package the kinds come from, for definition names.
    fn package(self) -> String {
        match self {
            GroupVersion::External => "io.k8s.metrics.pkg.apis.external_metrics.v1beta1".into(),
            GroupVersion::Custom(v) => {
                format!("io.k8s.metrics.pkg.apis.custom_metrics.{}", v.as_str())
            }
        }
    }

    /// The kind every value path answers with.
    fn list_kind(self) -> &'static str {
        match self {
            GroupVersion::External => external::LIST_KIND,
            GroupVersion::Custom(_) => custom::LIST_KIND,
        }
    }

    /// The full definition name of `kind`.
    fn definition(self, kind: &str) -> String {
        format!("{}.{kind}", self.package())
    }

    /// `ExternalMetricsV1beta1`, `CustomMetricsV1beta2`: for operation ids.
    fn camel(self) -> String {
        let version = self.version();
        let mut v = version.chars();
        let version = match v.next() {
            Some(first) => format!("{}{}", first.to_ascii_uppercase(), v.as_str()),
            None => String::new(),
        };
        match self {
            GroupVersion::External => format!("ExternalMetrics{version}"),
            GroupVersion::Custom(_) => format!("CustomMetrics{version}"),
        }
    }

    fn gvk(self) -> Value {
        json!({ "group": self.group(), "kind": self.list_kind(), "version": self.version() })
    }
}

/// A parameter of a value path.
struct Param {
    name: &'static str,
    /// `path` or `query`.
    location: &'static str,
    description: &'static str,
}

const fn path_param(name: &'static str, description: &'static str) -> Param {
    Param {
        name,
        location: "path",
        description,
    }
}

const NAMESPACE: Param = path_param(
    "namespace",
    "object name and auth scope, such as for teams and projects",
);
const METRIC: Param = path_param("metric", "the name of the metric");
const RESOURCE: Param = path_param(
    "resource",
    "the described objects' resource, plural and group-qualified (pods, statefulsets.apps, nodes)",
);
const NAME: Param = path_param(
    "name",
    "the described object's name; * for every pod the labelSelector picks",
);
const LABEL_SELECTOR_EXTERNAL: Param = Param {
    name: "labelSelector",
    location: "query",
    description: "the HPA's metric selector, matched against the series' labels",
};
const LABEL_SELECTOR_PODS: Param = Param {
    name: "labelSelector",
    location: "query",
    description: "Pods metrics: the pods to answer for (the scale target's selector)",
};
const METRIC_LABEL_SELECTOR: Param = Param {
    name: "metricLabelSelector",
    location: "query",
    description: "the HPA's metric selector, matched against the series' labels",
};

/// One value path of a group-version.
struct Operation {
    /// The path template, from the root.
    path: String,
    id: String,
    description: &'static str,
    params: Vec<Param>,
}

/// The value paths of `gv`, as the router serves them.
fn operations(gv: GroupVersion) -> Vec<Operation> {
    let base = format!("/apis/{}/{}", gv.group(), gv.version());
    let camel = gv.camel();
    match gv {
        GroupVersion::External => vec![Operation {
            path: format!("{base}/namespaces/{{namespace}}/{{metric}}"),
            id: format!("read{camel}NamespacedExternalMetricValueList"),
            description: "the forecast values of an external metric in a namespace, one per series the selector picks",
            params: vec![NAMESPACE, METRIC, LABEL_SELECTOR_EXTERNAL],
        }],
        GroupVersion::Custom(_) => vec![
            Operation {
                path: format!("{base}/namespaces/{{namespace}}/{{resource}}/{{name}}/{{metric}}"),
                id: format!("read{camel}NamespacedMetricValueList"),
                description: "the forecast value of a custom metric for a namespaced object, or for every pod the labelSelector picks (name *)",
                params: vec![
                    NAMESPACE,
                    RESOURCE,
                    NAME,
                    METRIC,
                    LABEL_SELECTOR_PODS,
                    METRIC_LABEL_SELECTOR,
                ],
            },
            Operation {
                path: format!("{base}/namespaces/{{namespace}}/metrics/{{metric}}"),
                id: format!("read{camel}MetricValueListForNamespace"),
                description: "the forecast value of a custom metric describing a namespace",
                params: vec![NAMESPACE, METRIC, LABEL_SELECTOR_PODS, METRIC_LABEL_SELECTOR],
            },
            Operation {
                path: format!("{base}/{{resource}}/{{name}}/{{metric}}"),
                id: format!("read{camel}MetricValueList"),
                description: "the forecast value of a custom metric for a cluster-scoped object (a node, a namespace)",
                params: vec![
                    RESOURCE,
                    NAME,
                    METRIC,
                    LABEL_SELECTOR_PODS,
                    METRIC_LABEL_SELECTOR,
                ],
            },
        ],
    }
}

/// Which OpenAPI version a document is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// Swagger 2.0: `#/definitions/`, parameters typed inline.
    V2,
    /// OpenAPI 3.0: `#/components/schemas/`, parameters with a schema.
    V3,
}

impl Dialect {
    fn reference(self, name: &str) -> Value {
        match self {
            Dialect::V2 => json!({ "$ref": format!("#/definitions/{name}") }),
            Dialect::V3 => json!({ "$ref": format!("#/components/schemas/{name}") }),
        }
    }

    fn parameter(self, p: &Param) -> Value {
        let mut v = json!({
            "name": p.name,
            "in": p.location,
            "description": p.description,
        });
        if let Some(map) = v.as_object_mut() {
            if p.location == "path" {
                map.insert("required".into(), json!(true));
            }
            match self {
                Dialect::V2 => {
                    map.insert("type".into(), json!("string"));
                    map.insert("uniqueItems".into(), json!(true));
                }
                Dialect::V3 => {
                    map.insert(
                        "schema".into(),
                        json!({ "type": "string", "uniqueItems": true }),
                    );
                }
            }
        }
        v
    }

    fn ok(self, schema: Value) -> Value {
        match self {
            Dialect::V2 => json!({ "description": "OK", "schema": schema }),
            Dialect::V3 => json!({
                "description": "OK",
                "content": { media::JSON: { "schema": schema } },
            }),
        }
    }
}

/// The path items of `gv`'s value paths.
fn paths(gv: GroupVersion, dialect: Dialect) -> Map<String, Value> {
    let tag = format!(
        "{}_{}",
        match gv {
            GroupVersion::External => "externalMetrics",
            GroupVersion::Custom(_) => "customMetrics",
        },
        gv.version()
    );
    operations(gv)
        .into_iter()
        .map(|op| {
            let mut get = json!({
                "description": op.description,
                "operationId": op.id,
                "tags": [tag],
                "parameters": op.params.iter().map(|p| dialect.parameter(p)).collect::<Vec<_>>(),
                "responses": {
                    "200": dialect.ok(dialect.reference(&gv.definition(gv.list_kind()))),
                    "401": { "description": "Unauthorized" },
                },
                "x-kubernetes-action": "get",
                "x-kubernetes-group-version-kind": gv.gvk(),
            });
            if let (Dialect::V2, Some(map)) = (dialect, get.as_object_mut()) {
                map.insert("produces".into(), json!([media::JSON]));
                map.insert("schemes".into(), json!(["https"]));
            }
            (op.path, json!({ "get": get }))
        })
        .collect()
}

fn string(description: &str) -> Value {
    json!({ "type": "string", "description": description })
}

fn string_map(description: &str) -> Value {
    json!({
        "type": "object",
        "description": description,
        "additionalProperties": { "type": "string" },
    })
}

fn timestamp() -> Value {
    json!({
        "type": "string",
        "format": "date-time",
        "description": "when the value was computed (RFC 3339)",
    })
}

fn window(description: &str) -> Value {
    json!({ "type": "integer", "format": "int64", "description": description })
}

fn quantity() -> Value {
    string("the served value, a Kubernetes quantity (12, 850m, 3k)")
}

/// `metav1.LabelSelector`, written inline; `nullable` where the v1beta1 field
/// is written as `null` when the request had no metric selector.
fn label_selector(dialect: Dialect, nullable: bool) -> Value {
    let mut v = json!({
        "type": "object",
        "description": "the metric selector the value was computed for",
        "properties": {
            "matchLabels": string_map("label values that must match"),
            "matchExpressions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": string("the label"),
                        "operator": string("In, NotIn, Exists or DoesNotExist"),
                        "values": { "type": "array", "items": { "type": "string" } },
                    },
                },
            },
        },
    });
    if let (Dialect::V3, true, Some(map)) = (dialect, nullable, v.as_object_mut()) {
        map.insert("nullable".into(), json!(true));
    }
    v
}

fn described_object() -> Value {
    json!({
        "type": "object",
        "description": "the object the value describes",
        "properties": {
            "apiVersion": string("the object's API version"),
            "kind": string("the object's kind"),
            "name": string("the object's name"),
            "namespace": string("the object's namespace, for namespaced objects"),
        },
    })
}

fn list(gv: GroupVersion, dialect: Dialect, item: &str, description: &str) -> Value {
    json!({
        "type": "object",
        "description": description,
        "required": ["items"],
        "properties": {
            "apiVersion": string("the list's group/version"),
            "kind": string("the list's kind"),
            "metadata": { "type": "object", "description": "standard list metadata (empty)" },
            "items": {
                "type": "array",
                "description": "the values",
                "items": dialect.reference(&gv.definition(item)),
            },
        },
        "x-kubernetes-group-version-kind": [gv.gvk()],
    })
}

/// The kinds `gv` answers with, by definition name.
fn schemas(gv: GroupVersion, dialect: Dialect) -> Map<String, Value> {
    let mut out = Map::new();
    let mut add = |kind: &str, schema: Value| {
        out.insert(gv.definition(kind), schema);
    };
    match gv {
        GroupVersion::External => {
            add(
                "ExternalMetricValueList",
                list(
                    gv,
                    dialect,
                    "ExternalMetricValue",
                    "the values of an external metric, one per series",
                ),
            );
            add(
                "ExternalMetricValue",
                json!({
                    "type": "object",
                    "description": "the value of one series of an external metric",
                    "required": ["metricName", "metricLabels", "timestamp", "value"],
                    "properties": {
                        "metricName": string("the metric"),
                        "metricLabels": string_map("the series' labels"),
                        "timestamp": timestamp(),
                        "window": window("the window the value covers, seconds"),
                        "value": quantity(),
                    },
                }),
            );
        }
        GroupVersion::Custom(version) => {
            add(
                "MetricValueList",
                list(
                    gv,
                    dialect,
                    "MetricValue",
                    "the values of a custom metric, one per described object",
                ),
            );
            match version {
                Version::V1beta2 => {
                    add(
                        "MetricValue",
                        json!({
                            "type": "object",
                            "description": "the value of a custom metric for one object",
                            "required": ["describedObject", "metric", "timestamp", "value"],
                            "properties": {
                                "describedObject": described_object(),
                                "metric": dialect.reference(&gv.definition("MetricIdentifier")),
                                "timestamp": timestamp(),
                                "windowSeconds": window("the window the value covers, seconds"),
                                "value": quantity(),
                            },
                        }),
                    );
                    add(
                        "MetricIdentifier",
                        json!({
                            "type": "object",
                            "description": "the metric and the selector it was read with",
                            "required": ["name"],
                            "properties": {
                                "name": string("the metric"),
                                "selector": label_selector(dialect, false),
                            },
                        }),
                    );
                }
                Version::V1beta1 => add(
                    "MetricValue",
                    json!({
                        "type": "object",
                        "description": "the value of a custom metric for one object",
                        "required": ["describedObject", "metricName", "timestamp", "value"],
                        "properties": {
                            "describedObject": described_object(),
                            "metricName": string("the metric"),
                            "timestamp": timestamp(),
                            "window": window("the window the value covers, seconds"),
                            "value": quantity(),
                            "selector": label_selector(dialect, true),
                        },
                    }),
                ),
            }
        }
    }
    out
}

fn info() -> Value {
    json!({ "title": TITLE, "version": env!("CARGO_PKG_VERSION") })
}

/// The Swagger 2.0 document of every group-version served.
pub fn v2() -> Value {
    let mut all_paths = Map::new();
    let mut definitions = Map::new();
    for gv in GroupVersion::ALL {
        all_paths.extend(paths(gv, Dialect::V2));
        definitions.extend(schemas(gv, Dialect::V2));
    }
    json!({
        "swagger": "2.0",
        "info": info(),
        "paths": all_paths,
        "definitions": definitions,
    })
}

/// The OpenAPI 3.0 document of `gv`.
pub fn v3(gv: GroupVersion) -> Value {
    json!({
        "openapi": "3.0.0",
        "info": info(),
        "paths": paths(gv, Dialect::V3),
        "components": { "schemas": schemas(gv, Dialect::V3) },
    })
}

/// A document as served: its bytes.
fn encode(doc: &Value) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(doc).map_err(|e| Error::Internal(format!("encoding OpenAPI: {e}")))
}

/// The v3 root: every group-version's document, by a URL that carries the tag
/// of its bytes.
pub fn v3_root() -> Result<Value, Error> {
    let mut root = Map::new();
    for gv in GroupVersion::ALL {
        let tag = media::tag(&encode(&v3(gv))?);
        root.insert(
            gv.key(),
            json!({ "serverRelativeURL": format!("/openapi/v3/{}?hash={tag}", gv.key()) }),
        );
    }
    Ok(json!({ "paths": root }))
}

/// The 406 for a client that takes only the protobuf forms.
fn not_acceptable(headers: &HeaderMap) -> Response {
    media::not_acceptable(headers, "OpenAPI is served as application/json").into_response()
}

fn serve(headers: &HeaderMap, doc: Result<Value, Error>) -> Response {
    if !media::accepts_json(headers) {
        return not_acceptable(headers);
    }
    match doc.and_then(|d| encode(&d)) {
        Ok(body) => media::cached(headers, body, media::JSON),
        Err(e) => e.into_response(),
    }
}

/// `GET /openapi/v2`.
pub async fn get_v2(headers: HeaderMap) -> Response {
    serve(&headers, Ok(v2()))
}

/// `GET /openapi/v3`.
pub async fn get_v3_root(headers: HeaderMap) -> Response {
    serve(&headers, v3_root())
}

/// `GET /openapi/v3/apis/<group>/<version>` (the `hash` query is only for
/// caches: the current document is always served).
pub async fn get_v3(uri: Uri, headers: HeaderMap) -> Response {
    let key = uri.path().strip_prefix("/openapi/v3/").unwrap_or_default();
    match GroupVersion::from_key(key) {
        Some(gv) => serve(&headers, Ok(v3(gv))),
        None => Error::NotFound(format!(
            "no OpenAPI v3 document at {:?}: /openapi/v3 lists them",
            uri.path()
        ))
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in `v` (recursively).
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    /// The `{param}` names of a path template.
    fn template_params(path: &str) -> Vec<&str> {
        path.split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect()
    }

    #[test]
    fn every_reference_resolves_and_every_path_parameter_is_declared() {
        let mut docs = vec![("#/definitions/", v2())];
        for gv in GroupVersion::ALL {
            docs.push(("#/components/schemas/", v3(gv)));
        }
        for (prefix, doc) in &docs {
            let defined = if prefix.starts_with("#/definitions") {
                &doc["definitions"]
            } else {
                &doc["components"]["schemas"]
            };
            let mut found = Vec::new();
            refs(doc, &mut found);
            assert!(!found.is_empty());
            for r in found {
                let name = r.strip_prefix(prefix).unwrap_or_else(|| panic!("{r}"));
                assert!(defined.get(name).is_some(), "{r} is not defined");
            }
            for (path, item) in doc["paths"].as_object().unwrap() {
                let declared: Vec<&str> = item["get"]["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                assert_eq!(declared, template_params(path), "{path}");
            }
        }
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = v2();
        let mut ids: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|item| item["get"]["operationId"].as_str().unwrap())
            .collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "{ids:?}");
        assert_eq!(n, 7);
    }

    #[test]
    fn root_urls_carry_the_tag_of_each_document() {
        let root = v3_root().unwrap();
        let paths = root["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 3);
        for gv in GroupVersion::ALL {
            let url = paths[&gv.key()]["serverRelativeURL"].as_str().unwrap();
            let tag = media::tag(&serde_json::to_vec(&v3(gv)).unwrap());
            assert_eq!(url, format!("/openapi/v3/{}?hash={tag}", gv.key()));
            assert_eq!(GroupVersion::from_key(&gv.key()), Some(gv));
        }
        assert_eq!(
            GroupVersion::from_key("apis/custom.metrics.k8s.io/v2"),
            None
        );
    }
}
