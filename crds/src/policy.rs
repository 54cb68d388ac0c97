//! `AccessPolicy`: which requests a set of apps accepts, from whom, and for how long.
//!
//! These are wire types: they say what the API server stores and validates with its schema and
//! CEL rules. Whatever the schema cannot express (overlaps between policies, references to
//! identity providers and Secrets) is checked by the operator and reported in `status.conditions`;
//! the gateway turns a policy into its own validated domain type and treats anything it cannot
//! turn into one as "deny everything", never as "allow".

mod rules;

pub use rules::{AccessRule, BearerSelector, ClaimSelector, RuleAction, Selector, ServiceToken};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema, core::Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of an `AccessPolicy`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    cel,
    group = "access.portcullis.dev",
    version = "v1alpha1",
    kind = "AccessPolicy",
    plural = "accesspolicies",
    singular = "accesspolicy",
    shortname = "ap",
    shortname = "apol",
    category = "portcullis",
    namespaced,
    status = "AccessPolicyStatus",
    derive = "PartialEq",
    doc = "AccessPolicy protects a set of hosts and path prefixes: who may reach them, through \
           which identity providers, how long their sessions last, and the revocation epoch that \
           ends every session issued before it.",
    printcolumn(
        name = "Hosts",
        type_ = "string",
        json_path = ".spec.hosts",
        description = "Hosts this policy protects"
    ),
    printcolumn(
        name = "Epoch",
        type_ = "integer",
        json_path = ".spec.revocationEpoch",
        description = "Revocation epoch; raise it to end every existing session"
    ),
    printcolumn(
        name = "Gateways",
        type_ = "string",
        json_path = ".status.gateways.summary",
        description = "Gateways enforcing the current generation / gateways connected"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    cel,
    validation = Rule::new("!has(self.upstream) || !has(self.upstream.service) || !has(self.upstream.url)").message("upstream takes either service or url, not both"),
    validation = Rule::new("self.rules.all(r, r.action != 'Allow') || size(self.identityProviders) > 0").message("a policy with an Allow rule needs at least one identity provider")
)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicySpec {
    /// Hostnames this policy protects, matched exactly and case-insensitively against the request's
    /// Host (lowercase DNS names, no port, no trailing dot, no wildcards).
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 253), regex(pattern = DNS_NAME)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[x_kube(validation = Rule::new(all_match(DNS_NAME)).message("hosts must be lowercase DNS names without port, wildcard or trailing dot"))]
    pub hosts: Vec<String>,

    /// Path prefixes under those hosts this policy protects; the longest matching prefix of all
    /// policies on a host wins. A prefix matches whole segments: `/wordpress` matches
    /// `/wordpress` and `/wordpress/x`, not `/wordpress2`. Paths are matched after
    /// canonicalization, never on the query string.
    #[serde(default = "default_paths")]
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 1024), regex(pattern = PATH_PREFIX)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[x_kube(validation = Rule::new(all_match(PATH_PREFIX)).message("paths must be absolute, canonical prefixes: no '.', '..', ';', '//', '%', '?', '#' or trailing '/'"))]
    pub paths: Vec<String>,

    /// Where to send authorized requests when the gateway runs as a reverse proxy. Leave unset
    /// when the gateway only answers forward-auth checks for an ingress controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Upstream>,

    /// Names of the identity providers (configured on the gateway) a user may log in with to
    /// reach this policy's apps. With more than one, the login page lets the user choose.
    #[serde(default)]
    #[schemars(length(max = 16), inner(length(min = 1, max = 63), regex(pattern = DNS_LABEL)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub identity_providers: Vec<String>,

    /// Ordered access rules; a request no rule matches is denied. Before login, the rules that
    /// need no user (Bypass, ServiceAuth, and Deny rules selecting only everyone or ipRanges) are
    /// tried in order and the first match decides; after login, Allow and Deny rules are tried
    /// in order and the first match decides. So a Bypass lets through everyone it matches,
    /// whatever later rules say about users.
    #[schemars(length(min = 1, max = 32))]
    pub rules: Vec<AccessRule>,

    /// Service tokens (id + secret pairs for machines) that `serviceTokens` selectors may name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub service_tokens: Vec<ServiceToken>,

    /// Lifetimes of the sessions this policy issues.
    #[serde(default)]
    pub session: SessionSettings,

    /// Raise to revoke, at once, every app token and session issued under this policy before now:
    /// every user must log in again. It can never be lowered.
    #[serde(default)]
    #[schemars(range(min = 0))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("revocationEpoch can only be raised: lowering it would un-revoke sessions"))]
    pub revocation_epoch: i64,
}

/// A lowercase DNS name: no port, no wildcard, no trailing dot.
pub const DNS_NAME: &str =
    r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$";
/// A lowercase DNS label.
pub const DNS_LABEL: &str = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";
/// `local@domain`, without spaces.
pub const EMAIL: &str = r"^[^@\s]+@[^@\s]+$";
/// An IPv4 or IPv6 CIDR, roughly; `isCIDR` checks it exactly.
pub const CIDR: &str = r"^[0-9a-fA-F:.]+/[0-9]{1,3}$";
/// A canonical path prefix: absolute, segments of RFC 3986 `pchar`s without `%` and `;` (the
/// gateway refuses `;` parameters in requests), no empty segment, no trailing `/` (except `/`
/// itself), and no `.` or `..` segment. Written without look-around (RE2).
pub const PATH_PREFIX: &str = concat!(
    r"^/$|^(/(",
    r"[A-Za-z0-9_~!$&'()*+,=:@-][A-Za-z0-9._~!$&'()*+,=:@-]*",
    r"|\.[A-Za-z0-9_~!$&'()*+,=:@-][A-Za-z0-9._~!$&'()*+,=:@-]*",
    r"|\.\.[A-Za-z0-9._~!$&'()*+,=:@-][A-Za-z0-9._~!$&'()*+,=:@-]*",
    r"))+$"
);

/// CEL `self.all(x, x.matches('<pattern>'))`: the pattern already guards each item, this rule
/// adds a message a person can act on (the pattern alone reports the regular expression).
fn all_match(pattern: &str) -> String {
    format!(
        "self.all(x, x.matches('{}'))",
        pattern.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

fn default_paths() -> Vec<String> {
    vec!["/".to_owned()]
}

/// The backend the gateway proxies authorized requests to: a Service in the policy's namespace,
/// or (standalone mode, without a cluster) a URL.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.service) || has(self.url)").message("upstream needs a service or a url"))]
#[serde(rename_all = "camelCase")]
pub struct Upstream {
    /// A Service in the same namespace as the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceBackend>,
    /// An absolute `http://` or `https://` URL without path, query or credentials, for gateways
    /// running outside a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$') || self.matches('^https?://\\\\[[0-9A-Fa-f:.]+\\\\](:[0-9]{1,5})?$')").message("url must be scheme://host[:port] with scheme http or https"))]
    pub url: Option<String>,
    /// Time allowed for the upstream to send its response head.
    #[serde(default = "default_upstream_timeout")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('1h')").message("timeout must be between 1s and 1h"))]
    pub timeout: Duration,
}

fn default_upstream_timeout() -> Duration {
    std::time::Duration::from_secs(30).into()
}

/// A Service port to proxy to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBackend {
    /// Service name, in the policy's namespace.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Service port number.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Protocol to speak to the upstream.
    #[serde(default)]
    pub scheme: UpstreamScheme,
}

/// Protocol the gateway speaks to an upstream.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpstreamScheme {
    /// Plain HTTP (h2c is not used).
    #[default]
    #[serde(rename = "http")]
    Http,
    /// TLS, verified against the system roots or the gateway's configured upstream CA.
    #[serde(rename = "https")]
    Https,
}

/// Session lifetimes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("duration(self.tokenLifetime) <= duration(self.absoluteLifetime)").message("tokenLifetime must not exceed absoluteLifetime"))]
#[x_kube(validation = Rule::new("duration(self.idleTimeout) <= duration(self.absoluteLifetime)").message("idleTimeout must not exceed absoluteLifetime"))]
#[serde(rename_all = "camelCase")]
pub struct SessionSettings {
    /// Lifetime of an app token: how often a session is looked at again and its token
    /// re-minted (in the background, once half of it has passed). An expired token of a session
    /// inside its idle and absolute deadlines is renewed, not refused, so this does not bound a
    /// stolen token: revocation (per request) and the idle and absolute deadlines do.
    #[serde(default = "default_token_lifetime")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s') && duration(self) <= duration('24h')").message("tokenLifetime must be between 10s and 24h"))]
    pub token_lifetime: Duration,
    /// A session with no request for this long ends.
    #[serde(default = "default_idle_timeout")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1m') && duration(self) <= duration('2160h')").message("idleTimeout must be between 1m and 90 days"))]
    pub idle_timeout: Duration,
    /// A session ends this long after login, however active it is.
    #[serde(default = "default_absolute_lifetime")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1m') && duration(self) <= duration('2160h')").message("absoluteLifetime must be between 1m and 90 days"))]
    pub absolute_lifetime: Duration,
    /// What happens to a session when the identity provider cannot be reached to confirm it.
    #[serde(default)]
    pub refresh_failure: RefreshFailure,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            token_lifetime: default_token_lifetime(),
            idle_timeout: default_idle_timeout(),
            absolute_lifetime: default_absolute_lifetime(),
            refresh_failure: RefreshFailure::default(),
        }
    }
}

fn default_token_lifetime() -> Duration {
    std::time::Duration::from_secs(5 * 60).into()
}
fn default_idle_timeout() -> Duration {
    std::time::Duration::from_secs(60 * 60).into()
}
fn default_absolute_lifetime() -> Duration {
    std::time::Duration::from_secs(12 * 60 * 60).into()
}

/// Behaviour when refreshing a session at the identity provider fails transiently (network
/// error, 5xx). A definitive `invalid_grant` always ends the session.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.mode != 'GracePeriod' || has(self.gracePeriod)").message("GracePeriod mode needs gracePeriod"))]
#[serde(rename_all = "camelCase")]
pub struct RefreshFailure {
    /// `FailClosed` ends the session at once, `GracePeriod` keeps it for `gracePeriod` after the
    /// last successful refresh, `KeepUntilExpiry` keeps it until its absolute lifetime.
    #[serde(default)]
    pub mode: RefreshFailureMode,
    /// How long a session survives without a successful refresh, for `GracePeriod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('0s') && duration(self) <= duration('168h')").message("gracePeriod must be between 0s and 7 days"))]
    pub grace_period: Option<Duration>,
}

impl Default for RefreshFailure {
    fn default() -> Self {
        Self {
            mode: RefreshFailureMode::GracePeriod,
            grace_period: Some(std::time::Duration::from_secs(15 * 60).into()),
        }
    }
}

/// See [`RefreshFailure`].
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RefreshFailureMode {
    /// End the session at the first failed refresh.
    FailClosed,
    /// Keep the session for a grace period after the last successful refresh.
    #[default]
    GracePeriod,
    /// Keep the session until its absolute lifetime.
    KeepUntilExpiry,
}

/// Observed state of an `AccessPolicy`, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One condition, `Ready`, written by the operator's leader: `True` with reason `Accepted`
    /// when the policy is valid and streamed to the gateways; `False` with the reason of what is
    /// wrong: `HostNotAllowed` (its namespace may not claim one of its hosts, see `AccessHost`;
    /// the policy is not streamed), `InvalidSpec`, `UnknownIdentityProvider`, `MissingSecret`,
    /// `MissingSecretKey`, `SecretNotReadable` (a service token's Secret) or `HostPathConflict`
    /// (another policy claims the same host and path). How many gateways enforce it is
    /// `gateways`, not a condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The revocation epoch every connected gateway enforces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforced_epoch: Option<i64>,
    /// The revocation epoch `epochRaisedAt` refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raised_epoch: Option<i64>,
    /// When the operator first saw `raisedEpoch`: sessions authenticated before it must log in
    /// again. Recorded once, so every operator replica and restart streams the same time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_raised_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// How far the gateway fleet has come in applying this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateways: Option<GatewayProgress>,
}

/// Gateways that have applied a change, out of those connected to the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayProgress {
    /// Gateways enforcing the current generation and epoch.
    pub applied: i32,
    /// Gateways connected to the operator.
    pub connected: i32,
    /// `applied/connected`, for `kubectl get`.
    pub summary: String,
}
