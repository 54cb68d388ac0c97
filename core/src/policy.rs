//! Policies as the gateway enforces them: `AccessPolicy` manifests turned into validated values,
//! and the evaluation of their rules against one request.
//!
//! Evaluation happens in two phases, like Cloudflare Access:
//! 1. before login, in their order, the rules that can be judged from what the request carries
//!    by itself (client address, a service token, a verified bearer JWT): `Bypass`, `ServiceAuth`, and `Deny` rules
//!    that select only `everyone` or `ipRanges`; the first that matches decides, so a `Deny`
//!    written before a `Bypass` wins over it;
//! 2. after login, `Allow` and `Deny` rules in their order; the first that matches decides.
//!
//! Nothing matching is a denial. Every input a decision depends on is an argument of
//! [`Policy::evaluate`], so the caller can never evaluate against a stale identity.

mod bearer;
mod compile;
mod evaluate;
mod judge;
mod source;

pub use bearer::{BearerRule, BearerToken};
pub use compile::PolicyMeta;
pub use evaluate::{Decision, RequestFacts};
pub use judge::{Judgement, Unknown};
pub use source::PolicySource;

use crate::host::Host;
use ipnet::IpNet;
use std::{collections::BTreeSet, fmt, time::Duration};

/// `namespace/name` of an `AccessPolicy`: the `aud` of its app tokens.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyId {
    pub namespace: String,
    pub name: String,
}

impl PolicyId {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Parses `namespace/name`.
    pub fn parse(s: &str) -> Option<Self> {
        let (namespace, name) = s.split_once('/')?;
        (!namespace.is_empty() && !name.is_empty() && !name.contains('/'))
            .then(|| Self::new(namespace, name))
    }
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A policy the gateway can enforce.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub id: PolicyId,
    /// The object's uid (cluster mode): app tokens are bound to it, so a policy deleted and
    /// created again under the same name — with its epoch back at 0 — does not accept tokens
    /// minted for the old object.
    pub uid: Option<String>,
    pub generation: Option<i64>,
    pub hosts: Vec<Host>,
    /// Canonical path prefixes, without trailing `/` (except `/` itself).
    pub prefixes: Vec<String>,
    pub upstream: Option<Upstream>,
    pub identity_providers: Vec<String>,
    pub rules: Vec<Rule>,
    pub service_tokens: Vec<ServiceTokenRef>,
    pub session: SessionPolicy,
    pub epoch: u64,
}

/// Where a policy's authorized requests go in proxy mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub target: UpstreamTarget,
    pub timeout: Duration,
}

/// The upstream's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamTarget {
    /// A Service in the policy's namespace.
    Service {
        namespace: String,
        name: String,
        port: u16,
        https: bool,
    },
    /// `scheme://host[:port]`, for gateways outside a cluster.
    Url { https: bool, authority: String },
}

/// A service token a `ServiceAuth` rule may name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceTokenRef {
    pub name: String,
    pub secret_name: String,
}

impl ServiceTokenRef {
    /// Key of the service token's Secret holding the client id a machine presents in the
    /// `Portcullis-Client-Id` header.
    pub const CLIENT_ID_KEY: &'static str = "client-id";
    /// Key of the service token's Secret holding the secret a machine presents in the
    /// `Portcullis-Client-Secret` header.
    pub const CLIENT_SECRET_KEY: &'static str = "client-secret";
    /// Both keys a service token's Secret must hold, neither of them empty.
    pub const SECRET_KEYS: [&'static str; 2] = [Self::CLIENT_ID_KEY, Self::CLIENT_SECRET_KEY];
}

/// Session lifetimes of a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionPolicy {
    pub token_lifetime: Duration,
    pub idle_timeout: Duration,
    pub absolute_lifetime: Duration,
    pub refresh_failure: RefreshFailurePolicy,
}

/// What a transient identity-provider failure does to a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshFailurePolicy {
    FailClosed,
    GracePeriod(Duration),
    KeepUntilExpiry,
}

impl RefreshFailurePolicy {
    /// Whether a session whose identity provider has been failing to confirm it since `since`
    /// (unix seconds) is still let in at `now`.
    pub fn admits(self, since: u64, now: u64) -> bool {
        match self {
            Self::FailClosed => false,
            Self::GracePeriod(grace) => now < since.saturating_add(grace.as_secs()),
            Self::KeepUntilExpiry => true,
        }
    }
}

/// One rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: Option<String>,
    pub action: Action,
    pub include: Vec<Selector>,
    pub require: Vec<Selector>,
    pub exclude: Vec<Selector>,
}

/// What a rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    Bypass,
    ServiceAuth,
}

/// One condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Selector {
    Everyone,
    /// Strictly parsed addresses, lower-cased (see [`crate::email`]).
    Emails(BTreeSet<String>),
    /// Strictly parsed mail domains, lower-cased; compared exactly with the domain of the
    /// strictly parsed address.
    EmailDomains(BTreeSet<String>),
    Groups(BTreeSet<String>),
    Claim {
        name: String,
        values: BTreeSet<String>,
    },
    IpRanges(Vec<IpNet>),
    ServiceTokens(BTreeSet<String>),
    /// Bearer JWTs of an identity provider (`ServiceAuth` rules only).
    Bearer(BearerRule),
}

impl Rule {
    /// Every selector of the rule: include, require and exclude.
    fn selectors(&self) -> impl Iterator<Item = &Selector> {
        self.include
            .iter()
            .chain(&self.require)
            .chain(&self.exclude)
    }
}

impl Selector {
    /// True for selectors that need no user: they can be judged before login.
    fn is_pre_login(&self) -> bool {
        matches!(self, Self::Everyone | Self::IpRanges(_))
    }

    /// True for the machine credentials a `ServiceAuth` rule is built on.
    fn is_machine_credential(&self) -> bool {
        matches!(self, Self::ServiceTokens(_) | Self::Bearer(_))
    }
}

/// Why a manifest cannot become a policy. The gateway enforces such a policy as "deny all" on
/// its hosts rather than dropping it, so a typo never opens an app.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("metadata.namespace and metadata.name are required")]
    MissingName,
    #[error("invalid host {host:?}: {reason}")]
    Host {
        host: String,
        reason: crate::host::HostError,
    },
    #[error("invalid path prefix {path:?}: {reason}")]
    Path { path: String, reason: String },
    #[error("invalid upstream: {0}")]
    Upstream(String),
    #[error("rule {rule}: {reason}")]
    Rule { rule: usize, reason: String },
    #[error("invalid duration in {field}: {reason}")]
    Duration { field: &'static str, reason: String },
    #[error("revocationEpoch must not be negative")]
    NegativeEpoch,
}
