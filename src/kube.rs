//! The Kubernetes side of the API's authentication and authorization: the
//! TokenReview and SubjectAccessReview implementations of the `api::auth` traits,
//! and the reader of the front-proxy (request-header) settings the kube-apiserver
//! publishes in `kube-system/extension-apiserver-authentication`. The watched
//! pods and nodes (Pods metrics, node-pool sizes, workload replicas) are in
//! [`watch`]; the leader Lease ([`lease`]) and the CapacityBuffer writer
//! ([`buffers`]) are submodules too.

use std::collections::BTreeMap;
use std::sync::Arc;

pub mod buffers;
pub mod lease;
pub mod watch;

use ::kube::api::{Api, PostParams};
use ::kube::Client;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ConfigMap;

use crate::api::auth::{
    self, Attributes, AuthMode, BoxFuture, Decision, FrontProxy, Target, UserInfo,
};

/// Why a Kubernetes look-up failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server call failed.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: &'static str,
        /// The client error.
        #[source]
        source: ::kube::Error,
    },
    /// The ConfigMap lacks a required key.
    #[error("{namespace}/{name}: key {key:?} is missing (is the front-proxy configured on the kube-apiserver?)")]
    MissingKey {
        /// ConfigMap namespace.
        namespace: &'static str,
        /// ConfigMap name.
        name: &'static str,
        /// The key.
        key: &'static str,
    },
    /// A ConfigMap key that should hold a JSON array of strings does not.
    #[error("{namespace}/{name}: key {key:?}: expected a JSON array of strings: {source}")]
    BadList {
        /// ConfigMap namespace.
        namespace: &'static str,
        /// ConfigMap name.
        name: &'static str,
        /// The key.
        key: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// Result with this module's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Namespace of the kube-apiserver's authentication ConfigMap.
pub const AUTH_CONFIGMAP_NAMESPACE: &str = "kube-system";
/// Name of the kube-apiserver's authentication ConfigMap.
pub const AUTH_CONFIGMAP_NAME: &str = "extension-apiserver-authentication";

/// The front-proxy settings in the ConfigMap's `data`: the request-header CA
/// (PEM), the allowed names and the header names (JSON string arrays). Missing
/// header keys fall back to the kube-apiserver's defaults; missing allowed names
/// mean any name.
///
/// # Errors
/// [`Error::MissingKey`] without a CA, [`Error::BadList`] for a malformed array.
pub fn front_proxy_from_data(data: &BTreeMap<String, String>) -> Result<FrontProxy> {
    let ca = data
        .get("requestheader-client-ca-file")
        .filter(|pem| !pem.trim().is_empty())
        .ok_or(Error::MissingKey {
            namespace: AUTH_CONFIGMAP_NAMESPACE,
            name: AUTH_CONFIGMAP_NAME,
            key: "requestheader-client-ca-file",
        })?;
    let list = |key: &'static str| -> Result<Option<Vec<String>>> {
        data.get(key)
            .map(|text| {
                serde_json::from_str::<Vec<String>>(text).map_err(|source| Error::BadList {
                    namespace: AUTH_CONFIGMAP_NAMESPACE,
                    name: AUTH_CONFIGMAP_NAME,
                    key,
                    source,
                })
            })
            .transpose()
    };
    let mut front_proxy = FrontProxy::new(ca.clone());
    if let Some(names) = list("requestheader-allowed-names")? {
        front_proxy.allowed_names = names;
    }
    if let Some(headers) = list("requestheader-username-headers")? {
        front_proxy.username_headers = headers;
    }
    if let Some(headers) = list("requestheader-group-headers")? {
        front_proxy.group_headers = headers;
    }
    if let Some(prefixes) = list("requestheader-extra-headers-prefix")? {
        front_proxy.extra_headers_prefix = prefixes;
    }
    Ok(front_proxy)
}

/// Reads the front-proxy settings from `kube-system/extension-apiserver-authentication`.
///
/// # Errors
/// [`Error::Api`] when the ConfigMap cannot be read (RBAC: the
/// `extension-apiserver-authentication-reader` Role grants it), else as
/// [`front_proxy_from_data`].
pub async fn read_front_proxy(client: Client) -> Result<FrontProxy> {
    let api: Api<ConfigMap> = Api::namespaced(client, AUTH_CONFIGMAP_NAMESPACE);
    let config_map = api
        .get(AUTH_CONFIGMAP_NAME)
        .await
        .map_err(|source| Error::Api {
            what: "reading kube-system/extension-apiserver-authentication",
            source,
        })?;
    front_proxy_from_data(&config_map.data.unwrap_or_default())
}

/// The in-cluster [`AuthMode`]: front-proxy certificates (settings from
/// `front_proxy`, or read from `kube-system/extension-apiserver-authentication`
/// when `None`), bearer tokens by TokenReview, and SubjectAccessReview.
///
/// # Errors
/// As [`read_front_proxy`].
pub async fn delegated_auth(client: Client, front_proxy: Option<FrontProxy>) -> Result<AuthMode> {
    let front_proxy = match front_proxy {
        Some(f) => f,
        None => read_front_proxy(client.clone()).await?,
    };
    Ok(AuthMode::Delegated {
        front_proxy: Some(front_proxy),
        tokens: Some(Arc::new(KubeTokenReviewer::new(client.clone()))),
        authorizer: Arc::new(KubeAuthorizer::new(client)),
    })
}

/// Confirms bearer tokens with a TokenReview.
#[derive(Clone)]
pub struct KubeTokenReviewer {
    client: Client,
    audiences: Option<Vec<String>>,
}

impl KubeTokenReviewer {
    /// Reviews tokens through `client`, for the API server's default audiences.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            audiences: None,
        }
    }

    /// Requires the tokens to be meant for one of `audiences`.
    pub fn with_audiences(mut self, audiences: Vec<String>) -> Self {
        self.audiences = Some(audiences);
        self
    }
}

/// The identity a TokenReview answered with, `None` when not authenticated.
fn user_from_review(review: &TokenReview) -> Option<UserInfo> {
    let status = review.status.as_ref()?;
    if status.authenticated != Some(true) {
        return None;
    }
    let user = status.user.as_ref()?;
    Some(UserInfo {
        username: user.username.clone().unwrap_or_default(),
        groups: user.groups.clone().unwrap_or_default(),
        extra: user.extra.clone().unwrap_or_default(),
    })
}

impl auth::TokenReviewer for KubeTokenReviewer {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, auth::Result<Option<UserInfo>>> {
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_string()),
                    audiences: self.audiences.clone(),
                },
                ..TokenReview::default()
            };
            let api: Api<TokenReview> = Api::all(self.client.clone());
            let answer = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| auth::Error::TokenReview(e.to_string()))?;
            Ok(user_from_review(&answer))
        })
    }
}

/// Decides with a SubjectAccessReview.
#[derive(Clone)]
pub struct KubeAuthorizer {
    client: Client,
}

impl KubeAuthorizer {
    /// Asks through `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// The SubjectAccessReview that asks `attributes`.
fn access_review(attributes: &Attributes) -> SubjectAccessReview {
    let user = &attributes.user;
    let (resource_attributes, non_resource_attributes) = match &attributes.target {
        Target::Resource {
            group,
            version,
            resource,
            subresource,
            name,
            namespace,
        } => (
            Some(ResourceAttributes {
                group: Some(group.clone()),
                resource: Some(resource.clone()),
                subresource: subresource.clone(),
                name: name.clone(),
                // Empty means cluster-scoped (a node, a namespace itself).
                namespace: (!namespace.is_empty()).then(|| namespace.clone()),
                verb: Some(attributes.verb.clone()),
                version: Some(version.clone()),
                ..ResourceAttributes::default()
            }),
            None,
        ),
        Target::NonResource { path } => (
            None,
            Some(NonResourceAttributes {
                path: Some(path.clone()),
                verb: Some(attributes.verb.clone()),
            }),
        ),
    };
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.username.clone()),
            groups: Some(user.groups.clone()),
            extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
            resource_attributes,
            non_resource_attributes,
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

/// The decision in a SubjectAccessReview's answer.
fn decision_from_review(review: &SubjectAccessReview) -> Decision {
    match &review.status {
        Some(status) if status.allowed => Decision::Allow,
        Some(status) => Decision::Deny(
            status
                .reason
                .clone()
                .or_else(|| status.evaluation_error.clone())
                .unwrap_or_default(),
        ),
        None => Decision::Deny("the SubjectAccessReview came back without a status".into()),
    }
}

impl auth::Authorizer for KubeAuthorizer {
    fn authorize<'a>(
        &'a self,
        attributes: &'a Attributes,
    ) -> BoxFuture<'a, auth::Result<Decision>> {
        Box::pin(async move {
            let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
            let answer = api
                .create(&PostParams::default(), &access_review(attributes))
                .await
                .map_err(|e| auth::Error::AccessReview(e.to_string()))?;
            Ok(decision_from_review(&answer))
        })
    }
}

/// Test support: a client whose API server is `handle(method, uri, body)`, answering
/// with a status and a JSON body, so the adapters are tested through `kube` itself.
#[cfg(test)]
pub(crate) fn fake_client(
    handle: impl Fn(&str, &axum::http::Uri, &[u8]) -> (u16, serde_json::Value) + Send + Sync + 'static,
) -> Client {
    let handle = Arc::new(handle);
    let service = tower::service_fn(move |req: axum::http::Request<::kube::client::Body>| {
        let handle = Arc::clone(&handle);
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let (code, json) = handle(parts.method.as_str(), &parts.uri, &bytes);
            let response = axum::http::Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(::kube::client::Body::from(
                    serde_json::to_vec(&json).unwrap(),
                ))
                .unwrap();
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    Client::new(service, "default")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::TokenReviewStatus;
    use k8s_openapi::api::authorization::v1::SubjectAccessReviewStatus;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn configmap_with_every_key() {
        let fp = front_proxy_from_data(&data(&[
            (
                "requestheader-client-ca-file",
                "-----BEGIN CERTIFICATE-----\n...",
            ),
            ("requestheader-allowed-names", r#"["front-proxy-client"]"#),
            ("requestheader-username-headers", r#"["X-Remote-User"]"#),
            (
                "requestheader-group-headers",
                r#"["X-Remote-Group","X-Other-Group"]"#,
            ),
            (
                "requestheader-extra-headers-prefix",
                r#"["X-Remote-Extra-"]"#,
            ),
            ("client-ca-file", "ignored"),
        ]))
        .unwrap();
        assert!(fp.client_ca_pem.starts_with("-----BEGIN"));
        assert_eq!(fp.allowed_names, vec!["front-proxy-client"]);
        assert_eq!(fp.username_headers, vec!["X-Remote-User"]);
        assert_eq!(fp.group_headers, vec!["X-Remote-Group", "X-Other-Group"]);
        assert_eq!(fp.extra_headers_prefix, vec!["X-Remote-Extra-"]);
    }

    #[test]
    fn configmap_defaults_and_errors() {
        let fp = front_proxy_from_data(&data(&[("requestheader-client-ca-file", "pem")])).unwrap();
        assert!(fp.allowed_names.is_empty());
        assert_eq!(fp.username_headers, vec!["X-Remote-User"]);
        let err = front_proxy_from_data(&data(&[])).unwrap_err().to_string();
        assert!(err.contains("requestheader-client-ca-file"), "{err}");
        let err = front_proxy_from_data(&data(&[
            ("requestheader-client-ca-file", "pem"),
            ("requestheader-allowed-names", "front-proxy-client"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("requestheader-allowed-names") && err.contains("JSON array"),
            "{err}"
        );
    }

    #[test]
    fn token_review_answers_map_to_identities() {
        let mut review = TokenReview::default();
        assert_eq!(user_from_review(&review), None);
        review.status = Some(TokenReviewStatus {
            authenticated: Some(true),
            user: Some(k8s_openapi::api::authentication::v1::UserInfo {
                username: Some("system:serviceaccount:ops:bot".into()),
                groups: Some(vec!["system:serviceaccounts".into()]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let user = user_from_review(&review).unwrap();
        assert_eq!(user.username, "system:serviceaccount:ops:bot");
        assert_eq!(user.groups, vec!["system:serviceaccounts"]);
        if let Some(s) = review.status.as_mut() {
            s.authenticated = Some(false);
        }
        assert_eq!(user_from_review(&review), None);
    }

    #[test]
    fn access_reviews_ask_the_right_question() {
        let attributes = Attributes {
            user: UserInfo {
                username: "hpa".into(),
                groups: vec!["g".into()],
                extra: BTreeMap::new(),
            },
            verb: "get".into(),
            target: Target::Resource {
                group: "external.metrics.k8s.io".into(),
                version: "v1beta1".into(),
                resource: "queue_depth".into(),
                subresource: None,
                name: None,
                namespace: "shop".into(),
            },
        };
        let review = access_review(&attributes);
        let json = serde_json::to_value(&review).unwrap();
        assert_eq!(json["kind"], "SubjectAccessReview");
        assert_eq!(json["apiVersion"], "authorization.k8s.io/v1");
        assert_eq!(json["spec"]["user"], "hpa");
        let ra = &json["spec"]["resourceAttributes"];
        assert_eq!(ra["verb"], "get");
        assert_eq!(ra["group"], "external.metrics.k8s.io");
        assert_eq!(ra["resource"], "queue_depth");
        assert_eq!(ra["namespace"], "shop");

        let mut answer = review.clone();
        answer.status = Some(SubjectAccessReviewStatus {
            allowed: false,
            reason: Some("no RBAC".into()),
            ..Default::default()
        });
        assert_eq!(
            decision_from_review(&answer),
            Decision::Deny("no RBAC".into())
        );
        answer.status = Some(SubjectAccessReviewStatus {
            allowed: true,
            ..Default::default()
        });
        assert_eq!(decision_from_review(&answer), Decision::Allow);
    }

    #[test]
    fn custom_metric_reviews_ask_for_resource_slash_metric() {
        let ask = |target: Target| {
            let attributes = Attributes {
                user: UserInfo::default(),
                verb: "get".into(),
                target,
            };
            serde_json::to_value(access_review(&attributes)).unwrap()["spec"]["resourceAttributes"]
                .clone()
        };
        let ra = ask(Target::Resource {
            group: "custom.metrics.k8s.io".into(),
            version: "v1beta2".into(),
            resource: "pods".into(),
            subresource: Some("packets-per-second".into()),
            name: Some("*".into()),
            namespace: "conexus".into(),
        });
        assert_eq!(
            ra,
            serde_json::json!({
                "group": "custom.metrics.k8s.io",
                "version": "v1beta2",
                "resource": "pods",
                "subresource": "packets-per-second",
                "name": "*",
                "namespace": "conexus",
                "verb": "get",
            })
        );
        let ra = ask(Target::Resource {
            group: "custom.metrics.k8s.io".into(),
            version: "v1beta1".into(),
            resource: "nodes".into(),
            subresource: Some("node_packets".into()),
            name: Some("node-1".into()),
            namespace: String::new(),
        });
        assert!(ra.get("namespace").is_none(), "cluster-scoped: {ra}");
        assert_eq!(ra["version"], "v1beta1");
    }

    /// The aggregator's OpenAPI download (`system:aggregator`, no groups) as the
    /// kube-apiserver receives it: a non-resource SubjectAccessReview for the
    /// path, from an authenticated user, which RBAC's `system:discovery` allows.
    #[tokio::test]
    async fn front_proxy_users_are_reviewed_as_authenticated() {
        let posted = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&posted);
        let client = fake_client(move |method, uri, body| {
            assert_eq!(method, "POST");
            assert_eq!(
                uri.path(),
                "/apis/authorization.k8s.io/v1/subjectaccessreviews"
            );
            let review: serde_json::Value = serde_json::from_slice(body).unwrap();
            seen.lock().unwrap().push(review.clone());
            let mut answer = review;
            answer["status"] = serde_json::json!({ "allowed": true });
            (201, answer)
        });
        let auth = auth::Auth::new(
            AuthMode::Delegated {
                front_proxy: Some(FrontProxy::new("")),
                tokens: None,
                authorizer: Arc::new(KubeAuthorizer::new(client)),
            },
            Arc::new(crate::clock::SimClock::new(0)),
        );
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("X-Remote-User", "system:aggregator".parse().unwrap());
        let peer = auth::PeerCert {
            common_name: Some("front-proxy-client".into()),
        };
        let target = Target::NonResource {
            path: "/openapi/v2".into(),
        };
        assert_eq!(auth.check(&headers, Some(&peer), target).await, Ok(()));
        let posted = posted.lock().unwrap();
        assert_eq!(posted.len(), 1);
        let spec = &posted[0]["spec"];
        assert_eq!(spec["user"], "system:aggregator");
        assert_eq!(spec["groups"], serde_json::json!(["system:authenticated"]));
        assert_eq!(
            spec["nonResourceAttributes"],
            serde_json::json!({ "path": "/openapi/v2", "verb": "get" })
        );
        assert!(spec.get("resourceAttributes").is_none(), "{spec}");
    }
}
