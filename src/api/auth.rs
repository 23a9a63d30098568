//! Who is asking, and may they.
//!
//! Authentication follows the kube-apiserver's delegation model:
//! - **front-proxy**: the aggregation layer connects with a client certificate
//!   issued by the request-header CA; only then are the `X-Remote-User` /
//!   `X-Remote-Group` / `X-Remote-Extra-*` headers (names configurable) trusted,
//!   and only when the certificate's CN is one of the allowed names (empty = any).
//!   The chain itself is verified by rustls during the handshake (see `tls`), so a
//!   [`PeerCert`] in the request extensions is a certificate that already chains
//!   to the request-header CA.
//! - **bearer tokens**, confirmed by a [`TokenReviewer`] (TokenReview in-cluster).
//!
//! Authorization asks an [`Authorizer`] (SubjectAccessReview in-cluster) and caches
//! each answer for [`CACHE_TTL_MS`], timed by the injected clock.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;

use crate::clock::Clock;

/// Why authentication or authorization could not reach a decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The TokenReview backend failed (not: the token was rejected).
    #[error("token review failed: {0}")]
    TokenReview(String),
    /// The SubjectAccessReview backend failed (not: access was denied).
    #[error("access review failed: {0}")]
    AccessReview(String),
}

/// Result with this module's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed future, so the review traits stay object-safe (`Arc<dyn ..>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long an authorization decision is reused.
pub const CACHE_TTL_MS: i64 = 10_000;

/// Entries kept at most in the decision cache; beyond it expired entries are
/// dropped, and if that is not enough the cache starts over.
const CACHE_MAX_ENTRIES: usize = 4096;

/// The group that is always allowed, as in Kubernetes.
pub const SYSTEM_MASTERS: &str = "system:masters";

/// The group of every authenticated user: RBAC's default bindings (the
/// `system:discovery` role: `/apis`, `/openapi`, ...) are granted to it.
pub const SYSTEM_AUTHENTICATED: &str = "system:authenticated";

/// The group of requests nobody authenticated.
pub const SYSTEM_UNAUTHENTICATED: &str = "system:unauthenticated";

/// The user name of anonymous requests.
pub const SYSTEM_ANONYMOUS: &str = "system:anonymous";

/// An authenticated identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct UserInfo {
    /// The user name.
    pub username: String,
    /// The groups the user belongs to.
    pub groups: Vec<String>,
    /// Extra attributes (`X-Remote-Extra-<key>` or from TokenReview).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The identity as authorization sees it: with [`SYSTEM_AUTHENTICATED`]
    /// added, as every k8s.io/apiserver-based server adds it to whoever its
    /// authenticators identified (front proxy and tokens alike) — except
    /// `system:anonymous` and users already in it or in `system:unauthenticated`.
    /// Without it, RBAC's default discovery grants do not apply: the
    /// aggregator's own discovery requests carry no groups.
    pub fn authenticated(mut self) -> Self {
        let marked = self
            .groups
            .iter()
            .any(|g| g == SYSTEM_AUTHENTICATED || g == SYSTEM_UNAUTHENTICATED);
        if self.username != SYSTEM_ANONYMOUS && !marked {
            self.groups.push(SYSTEM_AUTHENTICATED.to_string());
        }
        self
    }
}

/// The verified TLS client certificate of the connection a request came on.
///
/// The server inserts it into the request extensions; its presence means rustls
/// has verified that it chains to the request-header CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// The subject's common name, when it has one.
    pub common_name: Option<String>,
}

/// Where the front-proxy's identity comes from (the request-header settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontProxy {
    /// PEM bundle of the request-header CA (`requestheader-client-ca-file`).
    pub client_ca_pem: String,
    /// CNs a front-proxy certificate may carry; empty means any.
    pub allowed_names: Vec<String>,
    /// Headers carrying the user name, first non-empty wins (`X-Remote-User`).
    pub username_headers: Vec<String>,
    /// Headers carrying groups, every value counts (`X-Remote-Group`).
    pub group_headers: Vec<String>,
    /// Prefixes of headers carrying extras (`X-Remote-Extra-`).
    pub extra_headers_prefix: Vec<String>,
}

impl FrontProxy {
    /// Settings with the kube-apiserver's default header names.
    pub fn new(client_ca_pem: impl Into<String>) -> Self {
        Self {
            client_ca_pem: client_ca_pem.into(),
            allowed_names: Vec::new(),
            username_headers: vec!["X-Remote-User".into()],
            group_headers: vec!["X-Remote-Group".into()],
            extra_headers_prefix: vec!["X-Remote-Extra-".into()],
        }
    }

    /// Restricts the accepted certificate CNs.
    pub fn with_allowed_names(mut self, names: Vec<String>) -> Self {
        self.allowed_names = names;
        self
    }

    /// The identity the front proxy asserts for this request.
    ///
    /// `Ok(None)` when the certificate is acceptable but no user header is set
    /// (another authenticator may still succeed), `Err` with the reason when the
    /// certificate's CN is not allowed.
    fn identity(
        &self,
        cert: &PeerCert,
        headers: &HeaderMap,
    ) -> std::result::Result<Option<UserInfo>, String> {
        let cn = cert.common_name.as_deref().unwrap_or("");
        if !self.allowed_names.is_empty() && !self.allowed_names.iter().any(|n| n == cn) {
            return Err(format!(
                "client certificate CN {cn:?} is not one of the allowed front-proxy names"
            ));
        }
        let text = |v: &axum::http::HeaderValue| v.to_str().ok().map(str::to_string);
        let Some(username) = self
            .username_headers
            .iter()
            .flat_map(|h| headers.get_all(h.as_str()))
            .filter_map(text)
            .find(|u| !u.is_empty())
        else {
            return Ok(None);
        };
        let groups = self
            .group_headers
            .iter()
            .flat_map(|h| headers.get_all(h.as_str()))
            .filter_map(text)
            .collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in headers {
            let name = name.as_str(); // always lowercase in `http`
            for prefix in &self.extra_headers_prefix {
                let matches = name
                    .as_bytes()
                    .get(..prefix.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()));
                if let (true, Some(key)) = (matches, name.get(prefix.len()..)) {
                    if let Some(v) = text(value) {
                        // Extra keys are percent-encoded by the front proxy so they survive as header names.
                        extra.entry(super::percent_decode(key)).or_default().push(v);
                    }
                }
            }
        }
        Ok(Some(UserInfo {
            username,
            groups,
            extra,
        }))
    }
}

/// Confirms bearer tokens (TokenReview in-cluster).
pub trait TokenReviewer: Send + Sync {
    /// The identity behind `token`, `None` when the token is not valid.
    ///
    /// # Errors
    /// [`Error::TokenReview`] when the answer could not be obtained.
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<UserInfo>>>;
}

/// What is being accessed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A resource in an API group: an external metric in a namespace, or a
    /// custom metric of an object (resource `<resource>`, subresource the metric,
    /// which RBAC reads as `<resource>/<metric>`).
    Resource {
        /// API group, `external.metrics.k8s.io` or `custom.metrics.k8s.io`.
        group: String,
        /// The group's version the request used.
        version: String,
        /// Resource: the external metric's name, or the described objects'
        /// resource (`pods`, `statefulsets.apps`) for a custom metric.
        resource: String,
        /// The custom metric's name; `None` for external metrics.
        subresource: Option<String>,
        /// The described object's name (`*` for all pods); `None` for external metrics.
        name: Option<String>,
        /// The namespace asked about; empty for cluster-scoped objects.
        namespace: String,
    },
    /// A path that is not a resource (discovery).
    NonResource {
        /// The request path.
        path: String,
    },
}

/// A question for the [`Authorizer`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    /// Who.
    pub user: UserInfo,
    /// The verb (`get`).
    pub verb: String,
    /// On what.
    pub target: Target,
}

/// An authorization answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// No, with the authorizer's reason (may be empty).
    Deny(String),
}

/// Decides whether a request is allowed (SubjectAccessReview in-cluster).
pub trait Authorizer: Send + Sync {
    /// The decision for `attributes`.
    ///
    /// # Errors
    /// [`Error::AccessReview`] when the answer could not be obtained.
    fn authorize<'a>(&'a self, attributes: &'a Attributes) -> BoxFuture<'a, Result<Decision>>;
}

/// Bearer tokens known in advance: for tests and local use.
#[derive(Debug, Default)]
pub struct StaticTokens {
    tokens: HashMap<String, UserInfo>,
    calls: std::sync::atomic::AtomicUsize,
}

impl StaticTokens {
    /// No valid tokens.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `token` authenticate as `user`.
    pub fn with_token(mut self, token: impl Into<String>, user: UserInfo) -> Self {
        self.tokens.insert(token.into(), user);
        self
    }

    /// How many reviews were asked for.
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl TokenReviewer for StaticTokens {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<UserInfo>>> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let found = self.tokens.get(token).cloned();
        Box::pin(async move { Ok(found) })
    }
}

/// Grants known in advance: for tests and local use. A user is allowed what
/// one of its rules matches; `None` in a rule matches anything.
#[derive(Debug, Default)]
pub struct StaticAuthorizer {
    rules: Vec<Rule>,
    calls: std::sync::atomic::AtomicUsize,
}

/// One grant of a [`StaticAuthorizer`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// User name, or any user.
    pub user: Option<String>,
    /// Resource as RBAC writes it (an external metric's name, or
    /// `<resource>/<metric>` for a custom metric), or any; non-resource paths
    /// need `None`.
    pub resource: Option<String>,
    /// Namespace, or any; non-resource paths need `None`.
    pub namespace: Option<String>,
}

impl StaticAuthorizer {
    /// Denies everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows everything to everyone.
    pub fn allow_all() -> Self {
        Self::new().with_rule(Rule::default())
    }

    /// Adds a grant.
    pub fn with_rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// How many decisions were asked for (to observe caching).
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Authorizer for StaticAuthorizer {
    fn authorize<'a>(&'a self, attributes: &'a Attributes) -> BoxFuture<'a, Result<Decision>> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fits = |want: &Option<String>, have: Option<&str>| match want {
            None => true,
            Some(w) => have == Some(w.as_str()),
        };
        let allowed = self.rules.iter().any(|rule| {
            let (resource, namespace) = match &attributes.target {
                Target::Resource {
                    resource,
                    subresource,
                    namespace,
                    ..
                } => (
                    Some(match subresource {
                        Some(sub) => format!("{resource}/{sub}"),
                        None => resource.clone(),
                    }),
                    Some(namespace.as_str()),
                ),
                Target::NonResource { .. } => (None, None),
            };
            fits(&rule.user, Some(&attributes.user.username))
                && fits(&rule.resource, resource.as_deref())
                && fits(&rule.namespace, namespace)
        });
        let decision = if allowed {
            Decision::Allow
        } else {
            Decision::Deny("no rule allows it".into())
        };
        Box::pin(async move { Ok(decision) })
    }
}

/// Remembers decisions for [`CACHE_TTL_MS`] so that an HPA polling every 15 s
/// across many metrics does not turn into a SubjectAccessReview per request.
pub struct CachedAuthorizer {
    inner: Arc<dyn Authorizer>,
    clock: Arc<dyn Clock>,
    entries: Mutex<HashMap<Attributes, (Decision, i64)>>,
}

impl CachedAuthorizer {
    /// Caches the decisions of `inner`, timed by `clock`.
    pub fn new(inner: Arc<dyn Authorizer>, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner,
            clock,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The decision for `attributes`, from the cache when fresh. Errors are not
    /// cached, so a failing backend is retried on the next request.
    ///
    /// # Errors
    /// The inner authorizer's error.
    pub async fn authorize(&self, attributes: &Attributes) -> Result<Decision> {
        let now = self.clock.now_ms();
        if let Ok(entries) = self.entries.lock() {
            if let Some((decision, expires)) = entries.get(attributes) {
                if *expires > now {
                    return Ok(decision.clone());
                }
            }
        }
        let decision = self.inner.authorize(attributes).await?;
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CACHE_MAX_ENTRIES {
                entries.retain(|_, (_, expires)| *expires > now);
                if entries.len() >= CACHE_MAX_ENTRIES {
                    entries.clear();
                }
            }
            entries.insert(attributes.clone(), (decision.clone(), now + CACHE_TTL_MS));
        }
        Ok(decision)
    }
}

/// How requests to the HTTPS API are authenticated and authorized.
#[derive(Clone)]
pub enum AuthMode {
    /// Everyone is anonymous and allowed: local use only (loopback binds only).
    None,
    /// Kubernetes delegated authentication and authorization.
    Delegated {
        /// Front-proxy client certificates; `None` disables them.
        front_proxy: Option<FrontProxy>,
        /// Bearer token review; `None` disables tokens.
        tokens: Option<Arc<dyn TokenReviewer>>,
        /// Who may read which metric.
        authorizer: Arc<dyn Authorizer>,
    },
}

impl std::fmt::Debug for AuthMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthMode::None => f.write_str("None"),
            AuthMode::Delegated {
                front_proxy,
                tokens,
                ..
            } => f
                .debug_struct("Delegated")
                .field("front_proxy", front_proxy)
                .field("tokens", &tokens.is_some())
                .finish_non_exhaustive(),
        }
    }
}

/// The outcome of checking one request, turned into HTTP by `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No identity (401), with the reason.
    Unauthenticated(String),
    /// Identity known, not allowed (403), with the reason.
    Forbidden(String),
}

/// The request-time side of [`AuthMode`].
pub struct Auth {
    front_proxy: Option<FrontProxy>,
    tokens: Option<Arc<dyn TokenReviewer>>,
    authorizer: Option<CachedAuthorizer>,
}

impl Auth {
    /// Prepares `mode` for serving; decisions are cached on `clock`.
    pub fn new(mode: AuthMode, clock: Arc<dyn Clock>) -> Self {
        match mode {
            AuthMode::None => Self {
                front_proxy: None,
                tokens: None,
                authorizer: None,
            },
            AuthMode::Delegated {
                front_proxy,
                tokens,
                authorizer,
            } => Self {
                front_proxy,
                tokens,
                authorizer: Some(CachedAuthorizer::new(authorizer, clock)),
            },
        }
    }

    /// Whether authentication is switched off.
    pub fn is_disabled(&self) -> bool {
        self.authorizer.is_none()
    }

    /// Establishes who sent a request, with the groups every authenticated
    /// user has ([`UserInfo::authenticated`]).
    ///
    /// # Errors
    /// [`Denial::Unauthenticated`] with the reason when nobody can be identified.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: Option<&PeerCert>,
    ) -> std::result::Result<UserInfo, Denial> {
        if let (Some(front_proxy), Some(cert)) = (&self.front_proxy, peer) {
            match front_proxy.identity(cert, headers) {
                Ok(Some(user)) => return Ok(user.authenticated()),
                Ok(None) => {}
                Err(reason) => return Err(Denial::Unauthenticated(reason)),
            }
        }
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        match (bearer, &self.tokens) {
            (Some(token), Some(tokens)) => match tokens.review(token).await {
                Ok(Some(user)) => Ok(user.authenticated()),
                Ok(None) => Err(Denial::Unauthenticated(
                    "the bearer token was rejected".into(),
                )),
                Err(e) => Err(Denial::Unauthenticated(e.to_string())),
            },
            (Some(_), None) => Err(Denial::Unauthenticated(
                "bearer tokens are not accepted by this server".into(),
            )),
            (None, _) => Err(Denial::Unauthenticated(match peer {
                Some(_) => "the front-proxy client certificate came without a user header".into(),
                None => "no front-proxy client certificate and no bearer token".into(),
            })),
        }
    }

    /// Authenticates and authorizes `target` for a `get`; `Ok` means serve it.
    ///
    /// # Errors
    /// The [`Denial`] that says which step failed and why.
    pub async fn check(
        &self,
        headers: &HeaderMap,
        peer: Option<&PeerCert>,
        target: Target,
    ) -> std::result::Result<(), Denial> {
        let Some(authorizer) = &self.authorizer else {
            return Ok(());
        };
        let user = self.authenticate(headers, peer).await?;
        if user.groups.iter().any(|g| g == SYSTEM_MASTERS) {
            return Ok(());
        }
        let attributes = Attributes {
            user,
            verb: "get".into(),
            target,
        };
        match authorizer.authorize(&attributes).await {
            Ok(Decision::Allow) => Ok(()),
            Ok(Decision::Deny(reason)) => {
                Err(Denial::Forbidden(forbidden_message(&attributes, &reason)))
            }
            Err(e) => Err(Denial::Forbidden(forbidden_message(
                &attributes,
                &e.to_string(),
            ))),
        }
    }
}

/// The message Kubernetes itself would give, so it reads familiar in
/// `kubectl describe hpa`.
fn forbidden_message(attributes: &Attributes, reason: &str) -> String {
    let user = &attributes.user.username;
    let base = match &attributes.target {
        Target::Resource {
            group,
            resource,
            subresource,
            namespace,
            ..
        } => {
            let resource = match subresource {
                Some(sub) => format!("{resource}/{sub}"),
                None => resource.clone(),
            };
            if namespace.is_empty() {
                format!(
                    "user {user:?} cannot {} resource {resource:?} in API group {group:?} at the cluster scope",
                    attributes.verb
                )
            } else {
                format!(
                    "user {user:?} cannot {} resource {resource:?} in API group {group:?} in the namespace {namespace:?}",
                    attributes.verb
                )
            }
        }
        Target::NonResource { path } => {
            format!("user {user:?} cannot {} path {path:?}", attributes.verb)
        }
    };
    if reason.is_empty() {
        base
    } else {
        format!("{base}: {reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SimClock;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn cert(cn: &str) -> PeerCert {
        PeerCert {
            common_name: Some(cn.into()),
        }
    }

    fn metric(ns: &str) -> Target {
        Target::Resource {
            group: "external.metrics.k8s.io".into(),
            version: "v1beta1".into(),
            resource: "queue_depth".into(),
            subresource: None,
            name: None,
            namespace: ns.into(),
        }
    }

    #[test]
    fn front_proxy_reads_user_groups_and_extras() {
        let fp = FrontProxy::new("").with_allowed_names(vec!["front-proxy-client".into()]);
        let h = headers(&[
            ("X-Remote-User", "system:kube-controller-manager"),
            ("X-Remote-Group", "system:authenticated"),
            ("X-Remote-Group", "ops"),
            ("X-Remote-Extra-Scopes", "a"),
            ("X-Remote-Extra-Acme.com%2Fproject", "p1"),
        ]);
        let user = fp
            .identity(&cert("front-proxy-client"), &h)
            .unwrap()
            .unwrap();
        assert_eq!(user.username, "system:kube-controller-manager");
        assert_eq!(user.groups, vec!["system:authenticated", "ops"]);
        assert_eq!(user.extra["scopes"], vec!["a"]);
        assert_eq!(user.extra["acme.com/project"], vec!["p1"]);
    }

    #[test]
    fn front_proxy_rejects_other_names_and_accepts_any_when_empty() {
        let h = headers(&[("X-Remote-User", "u")]);
        let strict = FrontProxy::new("").with_allowed_names(vec!["front-proxy-client".into()]);
        assert!(strict
            .identity(&cert("intruder"), &h)
            .unwrap_err()
            .contains("intruder"));
        let open = FrontProxy::new("");
        assert_eq!(
            open.identity(&cert("anyone"), &h)
                .unwrap()
                .unwrap()
                .username,
            "u"
        );
        assert_eq!(open.identity(&cert("anyone"), &headers(&[])).unwrap(), None);
    }

    #[test]
    fn extra_keys_decode_percent_escapes_only_when_valid() {
        assert_eq!(super::super::percent_decode("a%2Fb"), "a/b");
        assert_eq!(super::super::percent_decode("a%2"), "a%2");
        assert_eq!(super::super::percent_decode("a%zz"), "a%zz");
        assert_eq!(super::super::percent_decode("%"), "%");
    }

    fn delegated(tokens: Arc<StaticTokens>, authz: Arc<StaticAuthorizer>) -> AuthMode {
        AuthMode::Delegated {
            front_proxy: Some(FrontProxy::new("")),
            tokens: Some(tokens),
            authorizer: authz,
        }
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            username: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            extra: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn headers_without_a_certificate_are_not_trusted() {
        let clock = Arc::new(SimClock::new(0));
        let auth = Auth::new(
            delegated(
                Arc::new(StaticTokens::new()),
                Arc::new(StaticAuthorizer::allow_all()),
            ),
            clock,
        );
        let h = headers(&[
            ("X-Remote-User", "admin"),
            ("X-Remote-Group", SYSTEM_MASTERS),
        ]);
        let denial = auth.check(&h, None, metric("a")).await.unwrap_err();
        assert!(matches!(denial, Denial::Unauthenticated(_)));
    }

    #[tokio::test]
    async fn tokens_are_reviewed() {
        let clock = Arc::new(SimClock::new(0));
        let tokens = Arc::new(StaticTokens::new().with_token("good", user("bob", &[])));
        let auth = Auth::new(
            delegated(tokens.clone(), Arc::new(StaticAuthorizer::allow_all())),
            clock,
        );
        let ok = headers(&[("Authorization", "Bearer good")]);
        assert_eq!(auth.check(&ok, None, metric("a")).await, Ok(()));
        let bad = headers(&[("Authorization", "Bearer bad")]);
        assert_eq!(
            auth.check(&bad, None, metric("a")).await,
            Err(Denial::Unauthenticated(
                "the bearer token was rejected".into()
            ))
        );
        assert_eq!(tokens.calls(), 2);
    }

    #[tokio::test]
    async fn decisions_are_cached_for_ten_seconds_and_masters_skip_review() {
        let clock = Arc::new(SimClock::new(0));
        let authz = Arc::new(StaticAuthorizer::new().with_rule(Rule {
            user: Some("hpa".into()),
            namespace: Some("shop".into()),
            resource: None,
        }));
        let auth = Auth::new(
            delegated(Arc::new(StaticTokens::new()), authz.clone()),
            clock.clone(),
        );
        let h = headers(&[("X-Remote-User", "hpa")]);
        let peer = cert("front-proxy-client");
        assert_eq!(auth.check(&h, Some(&peer), metric("shop")).await, Ok(()));
        assert_eq!(auth.check(&h, Some(&peer), metric("shop")).await, Ok(()));
        assert_eq!(authz.calls(), 1, "second decision comes from the cache");
        let denied = auth
            .check(&h, Some(&peer), metric("other"))
            .await
            .unwrap_err();
        let Denial::Forbidden(msg) = denied else {
            panic!("expected forbidden")
        };
        assert!(
            msg.contains("\"hpa\"") && msg.contains("\"other\""),
            "{msg}"
        );
        assert_eq!(authz.calls(), 2);
        clock.advance(CACHE_TTL_MS);
        assert_eq!(auth.check(&h, Some(&peer), metric("shop")).await, Ok(()));
        assert_eq!(authz.calls(), 3, "expired after ten seconds");

        let masters = headers(&[
            ("X-Remote-User", "root"),
            ("X-Remote-Group", SYSTEM_MASTERS),
        ]);
        assert_eq!(auth.check(&masters, Some(&peer), metric("x")).await, Ok(()));
        assert_eq!(authz.calls(), 3);
    }

    #[tokio::test]
    async fn cached_decisions_are_per_group() {
        let clock = Arc::new(SimClock::new(0));
        let authz = Arc::new(StaticAuthorizer::allow_all());
        let auth = Auth::new(
            delegated(Arc::new(StaticTokens::new()), authz.clone()),
            clock,
        );
        let h = headers(&[("X-Remote-User", "hpa")]);
        let peer = cert("front-proxy-client");
        let custom = Target::Resource {
            group: "custom.metrics.k8s.io".into(),
            version: "v1beta2".into(),
            resource: "queue_depth".into(),
            subresource: None,
            name: None,
            namespace: "a".into(),
        };
        assert_eq!(auth.check(&h, Some(&peer), metric("a")).await, Ok(()));
        assert_eq!(auth.check(&h, Some(&peer), custom.clone()).await, Ok(()));
        assert_eq!(authz.calls(), 2, "same resource, other group: asked again");
        assert_eq!(auth.check(&h, Some(&peer), custom).await, Ok(()));
        assert_eq!(authz.calls(), 2);
    }

    #[test]
    fn authenticated_users_get_system_authenticated_once() {
        let added = user("system:kube-aggregator", &[]).authenticated();
        assert_eq!(added.groups, vec![SYSTEM_AUTHENTICATED]);
        let kept = user("bob", &["ops", SYSTEM_AUTHENTICATED]).authenticated();
        assert_eq!(kept.groups, vec!["ops", SYSTEM_AUTHENTICATED]);
        let twice = user("bob", &["ops"]).authenticated().authenticated();
        assert_eq!(twice.groups, vec!["ops", SYSTEM_AUTHENTICATED]);
        let masters = user("admin", &[SYSTEM_MASTERS]).authenticated();
        assert_eq!(masters.groups, vec![SYSTEM_MASTERS, SYSTEM_AUTHENTICATED]);
        // As k8s.io/apiserver: never for anonymous, nor beside unauthenticated.
        let anonymous = user(SYSTEM_ANONYMOUS, &[SYSTEM_UNAUTHENTICATED]).authenticated();
        assert_eq!(anonymous.groups, vec![SYSTEM_UNAUTHENTICATED]);
        assert_eq!(
            user(SYSTEM_ANONYMOUS, &[]).authenticated().groups,
            Vec::<String>::new()
        );
    }

    /// Remembers the identity of every question and allows them all.
    #[derive(Default)]
    struct Seen(Mutex<Vec<UserInfo>>);

    impl Authorizer for Seen {
        fn authorize<'a>(&'a self, attributes: &'a Attributes) -> BoxFuture<'a, Result<Decision>> {
            if let Ok(mut seen) = self.0.lock() {
                seen.push(attributes.user.clone());
            }
            Box::pin(async { Ok(Decision::Allow) })
        }
    }

    #[tokio::test]
    async fn front_proxy_and_token_users_reach_authorization_as_authenticated() {
        let seen = Arc::new(Seen::default());
        let tokens = Arc::new(
            StaticTokens::new()
                .with_token("plain", user("bob", &["ops"]))
                .with_token("reviewed", user("carol", &[SYSTEM_AUTHENTICATED, "ops"])),
        );
        let auth = Auth::new(
            AuthMode::Delegated {
                front_proxy: Some(FrontProxy::new("")),
                tokens: Some(tokens),
                authorizer: seen.clone(),
            },
            Arc::new(SimClock::new(0)),
        );
        let peer = cert("front-proxy-client");
        let nobody = headers(&[("X-Remote-User", "system:kube-aggregator")]);
        assert_eq!(auth.check(&nobody, Some(&peer), metric("a")).await, Ok(()));
        let listed = headers(&[
            ("X-Remote-User", "hpa"),
            ("X-Remote-Group", SYSTEM_AUTHENTICATED),
        ]);
        assert_eq!(auth.check(&listed, Some(&peer), metric("a")).await, Ok(()));
        for token in ["plain", "reviewed"] {
            let h = headers(&[("Authorization", &format!("Bearer {token}"))]);
            assert_eq!(auth.check(&h, None, metric("a")).await, Ok(()));
        }
        let groups: Vec<Vec<String>> = seen
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|u| u.groups.clone())
            .collect();
        assert_eq!(
            groups,
            vec![
                vec![SYSTEM_AUTHENTICATED.to_string()],
                vec![SYSTEM_AUTHENTICATED.to_string()],
                vec!["ops".to_string(), SYSTEM_AUTHENTICATED.to_string()],
                vec![SYSTEM_AUTHENTICATED.to_string(), "ops".to_string()],
            ]
        );
    }

    #[tokio::test]
    async fn auth_none_allows_everything() {
        let auth = Auth::new(AuthMode::None, Arc::new(SimClock::new(0)));
        assert!(auth.is_disabled());
        assert_eq!(
            auth.check(&HeaderMap::new(), None, metric("a")).await,
            Ok(())
        );
    }
}
