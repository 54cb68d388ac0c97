//! Policies as the gateway enforces them: `AccessPolicy` manifests turned into validated values,
//! and the evaluation of their rules against one request.
//!
//! Evaluation happens in two phases, like Cloudflare Access:
//! 1. before login, in their order, the rules that can be judged from what the request carries
//!    by itself (client address, a service token): `Bypass`, `ServiceAuth`, and `Deny` rules
//!    that select only `everyone` or `ipRanges`; the first that matches decides, so a `Deny`
//!    written before a `Bypass` wins over it;
//! 2. after login, `Allow` and `Deny` rules in their order; the first that matches decides.
//!
//! Nothing matching is a denial. Every input a decision depends on is an argument of
//! [`Policy::evaluate`], so the caller can never evaluate against a stale identity.

use crate::{host::Host, identity::Identity};
use ipnet::IpNet;
use portcullis_crds::{
    AccessPolicy, AccessRule, RefreshFailureMode, RuleAction, Selector as SelectorSpec,
};
use std::{collections::BTreeSet, fmt, net::IpAddr, time::Duration};

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
    /// Lower-cased.
    Emails(BTreeSet<String>),
    /// Lower-cased, exact domain.
    EmailDomains(BTreeSet<String>),
    Groups(BTreeSet<String>),
    Claim {
        name: String,
        values: BTreeSet<String>,
    },
    IpRanges(Vec<IpNet>),
    ServiceTokens(BTreeSet<String>),
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

impl TryFrom<&AccessPolicy> for Policy {
    type Error = PolicyError;

    fn try_from(policy: &AccessPolicy) -> Result<Self, PolicyError> {
        let (Some(namespace), Some(name)) = (
            policy.metadata.namespace.as_ref(),
            policy.metadata.name.as_ref(),
        ) else {
            return Err(PolicyError::MissingName);
        };
        let id = PolicyId::new(namespace, name);
        let spec = &policy.spec;
        let hosts = spec
            .hosts
            .iter()
            .map(|h| {
                let host = Host::parse(h).map_err(|reason| PolicyError::Host {
                    host: h.clone(),
                    reason,
                })?;
                // A port or upper case in the manifest would be normalized away: refuse it, the
                // manifest must say exactly what it protects.
                if host.as_str() != h {
                    return Err(PolicyError::Host {
                        host: h.clone(),
                        reason: crate::host::HostError::InvalidCharacter,
                    });
                }
                Ok(host)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if hosts.is_empty() {
            return Err(PolicyError::Host {
                host: String::new(),
                reason: crate::host::HostError::Empty,
            });
        }
        let prefixes = spec
            .paths
            .iter()
            .map(|p| prefix(p))
            .collect::<Result<Vec<_>, _>>()?;
        let upstream = spec
            .upstream
            .as_ref()
            .map(|u| upstream(namespace, u))
            .transpose()?;
        let rules = spec
            .rules
            .iter()
            .enumerate()
            .map(|(index, rule)| compile_rule(index, rule))
            .collect::<Result<Vec<_>, _>>()?;
        if rules.is_empty() {
            return Err(PolicyError::Rule {
                rule: 0,
                reason: "a policy needs at least one rule".into(),
            });
        }
        let s = &spec.session;
        let session = SessionPolicy {
            token_lifetime: duration("session.tokenLifetime", &s.token_lifetime)?,
            idle_timeout: duration("session.idleTimeout", &s.idle_timeout)?,
            absolute_lifetime: duration("session.absoluteLifetime", &s.absolute_lifetime)?,
            refresh_failure: match s.refresh_failure.mode {
                RefreshFailureMode::FailClosed => RefreshFailurePolicy::FailClosed,
                RefreshFailureMode::KeepUntilExpiry => RefreshFailurePolicy::KeepUntilExpiry,
                RefreshFailureMode::GracePeriod => {
                    RefreshFailurePolicy::GracePeriod(match &s.refresh_failure.grace_period {
                        Some(grace) => duration("session.refreshFailure.gracePeriod", grace)?,
                        None => Duration::ZERO,
                    })
                }
            },
        };
        if session.token_lifetime.is_zero() || session.token_lifetime > session.absolute_lifetime {
            return Err(PolicyError::Duration {
                field: "session.tokenLifetime",
                reason: "must be positive and at most absoluteLifetime".into(),
            });
        }
        let epoch = u64::try_from(spec.revocation_epoch).map_err(|_| PolicyError::NegativeEpoch)?;
        Ok(Self {
            id,
            uid: policy.metadata.uid.clone(),
            generation: policy.metadata.generation,
            hosts,
            prefixes,
            upstream,
            identity_providers: spec.identity_providers.clone(),
            rules,
            service_tokens: spec
                .service_tokens
                .iter()
                .map(|t| ServiceTokenRef {
                    name: t.name.clone(),
                    secret_name: t.secret_name.clone(),
                })
                .collect(),
            session,
            epoch,
        })
    }
}

fn prefix(raw: &str) -> Result<String, PolicyError> {
    let error = |reason: String| PolicyError::Path {
        path: raw.to_owned(),
        reason,
    };
    let canonical = crate::path::CanonicalPath::parse(raw).map_err(|e| error(e.to_string()))?;
    if canonical.as_str() != raw {
        return Err(error("not in canonical form".into()));
    }
    if raw != "/" && raw.ends_with('/') {
        return Err(error("a prefix must not end with '/'".into()));
    }
    Ok(raw.to_owned())
}

fn upstream(namespace: &str, spec: &portcullis_crds::Upstream) -> Result<Upstream, PolicyError> {
    let timeout = duration("upstream.timeout", &spec.timeout)?;
    let target = match (&spec.service, &spec.url) {
        (Some(service), None) => UpstreamTarget::Service {
            namespace: namespace.to_owned(),
            name: service.name.clone(),
            port: u16::try_from(service.port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| PolicyError::Upstream("service port out of range".into()))?,
            https: service.scheme == portcullis_crds::UpstreamScheme::Https,
        },
        (None, Some(url)) => {
            let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
                (true, rest)
            } else if let Some(rest) = url.strip_prefix("http://") {
                (false, rest)
            } else {
                return Err(PolicyError::Upstream(
                    "url must start with http:// or https://".into(),
                ));
            };
            if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
                return Err(PolicyError::Upstream(
                    "url must be scheme://host[:port] without path, query or credentials".into(),
                ));
            }
            Host::parse(rest).map_err(|e| PolicyError::Upstream(e.to_string()))?;
            UpstreamTarget::Url {
                https,
                authority: rest.to_owned(),
            }
        }
        _ => {
            return Err(PolicyError::Upstream(
                "exactly one of service and url".into(),
            ));
        }
    };
    Ok(Upstream { target, timeout })
}

/// Go-style durations may be negative; a negative lifetime has no meaning here.
fn duration(
    field: &'static str,
    value: &portcullis_crds::Duration,
) -> Result<Duration, PolicyError> {
    if value.is_negative() {
        return Err(PolicyError::Duration {
            field,
            reason: "must not be negative".into(),
        });
    }
    Ok((*value).into())
}

fn compile_rule(index: usize, rule: &AccessRule) -> Result<Rule, PolicyError> {
    let error = |reason: String| PolicyError::Rule {
        rule: index,
        reason,
    };
    let action = match rule.action {
        RuleAction::Allow => Action::Allow,
        RuleAction::Deny => Action::Deny,
        RuleAction::Bypass => Action::Bypass,
        RuleAction::ServiceAuth => Action::ServiceAuth,
    };
    let selectors = |list: &[SelectorSpec]| {
        list.iter()
            .map(|s| selector(s).map_err(&error))
            .collect::<Result<Vec<_>, _>>()
    };
    let compiled = Rule {
        name: rule.name.clone(),
        action,
        include: selectors(&rule.include)?,
        require: selectors(&rule.require)?,
        exclude: selectors(&rule.exclude)?,
    };
    if compiled.include.is_empty() {
        return Err(error("include needs at least one selector".into()));
    }
    let pre_login = |s: &Selector| {
        matches!(
            s,
            Selector::Everyone | Selector::IpRanges(_) | Selector::ServiceTokens(_)
        )
    };
    match action {
        Action::Bypass
            if !compiled
                .include
                .iter()
                .chain(&compiled.require)
                .chain(&compiled.exclude)
                .all(|s| matches!(s, Selector::Everyone | Selector::IpRanges(_))) =>
        {
            return Err(error(
                "Bypass rules may only select everyone or ipRanges".into(),
            ));
        }
        Action::ServiceAuth
            if !compiled
                .include
                .iter()
                .all(|s| matches!(s, Selector::ServiceTokens(_)))
                || !compiled
                    .require
                    .iter()
                    .chain(&compiled.exclude)
                    .all(pre_login) =>
        {
            return Err(error(
                "ServiceAuth rules include serviceTokens and may only add ipRanges".into(),
            ));
        }
        Action::Allow | Action::Deny
            if compiled
                .include
                .iter()
                .chain(&compiled.require)
                .chain(&compiled.exclude)
                .any(|s| matches!(s, Selector::ServiceTokens(_))) =>
        {
            return Err(error(
                "serviceTokens selectors belong in ServiceAuth rules".into(),
            ));
        }
        _ => {}
    }
    Ok(compiled)
}

fn selector(spec: &SelectorSpec) -> Result<Selector, String> {
    let lower = |v: &Vec<String>| {
        v.iter()
            .map(|s| s.to_ascii_lowercase())
            .collect::<BTreeSet<_>>()
    };
    let mut set = Vec::new();
    if let Some(everyone) = spec.everyone {
        if !everyone {
            return Err("everyone must be true when set".into());
        }
        set.push(Selector::Everyone);
    }
    if let Some(emails) = &spec.emails {
        set.push(Selector::Emails(lower(emails)));
    }
    if let Some(domains) = &spec.email_domains {
        set.push(Selector::EmailDomains(lower(domains)));
    }
    if let Some(groups) = &spec.groups {
        set.push(Selector::Groups(groups.iter().cloned().collect()));
    }
    if let Some(claim) = &spec.claim {
        set.push(Selector::Claim {
            name: claim.name.clone(),
            values: claim.values.iter().cloned().collect(),
        });
    }
    if let Some(ranges) = &spec.ip_ranges {
        let ranges = ranges
            .iter()
            .map(|r| {
                r.parse::<IpNet>()
                    .map(|n| n.trunc())
                    .map_err(|_| format!("invalid CIDR {r:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        set.push(Selector::IpRanges(ranges));
    }
    if let Some(tokens) = &spec.service_tokens {
        set.push(Selector::ServiceTokens(tokens.iter().cloned().collect()));
    }
    match set.len() {
        1 => set.pop().ok_or_else(|| "empty selector".to_owned()),
        _ => Err("a selector sets exactly one field".into()),
    }
}

/// What the request brings to a decision besides the user.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    /// The client address (the peer, or what a trusted proxy reported).
    pub client_ip: IpAddr,
    /// The name of the service token the request proved it holds, if any (the caller compares
    /// the secret in constant time before naming it here).
    pub service_token: Option<&'a str>,
}

/// The outcome of evaluating a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Let the user through (`rule` is its index).
    Allow { rule: usize },
    /// Let the request through without login.
    Bypass { rule: usize },
    /// Let the machine holding a service token through.
    ServiceAuth { rule: usize },
    /// A `Deny` rule matched.
    Deny { rule: usize },
    /// Logged in, but no rule allows this user.
    NoRuleMatched,
    /// No pre-login rule let the request through and there is no user: log in first.
    LoginRequired,
}

impl Decision {
    /// True for the outcomes that let the request through.
    pub fn is_allowed(self) -> bool {
        matches!(
            self,
            Self::Allow { .. } | Self::Bypass { .. } | Self::ServiceAuth { .. }
        )
    }
}

impl Policy {
    /// Decides one request. `identity` is the verified user, or `None` before login.
    pub fn evaluate(&self, facts: &RequestFacts<'_>, identity: Option<&Identity>) -> Decision {
        for (index, rule) in self.rules.iter().enumerate() {
            let judged_before_login = match rule.action {
                Action::Bypass | Action::ServiceAuth => true,
                Action::Deny => rule.selectors().all(Selector::is_pre_login),
                Action::Allow => false,
            };
            if judged_before_login && rule.matches(facts, None) {
                return match rule.action {
                    Action::Bypass => Decision::Bypass { rule: index },
                    Action::ServiceAuth => Decision::ServiceAuth { rule: index },
                    _ => Decision::Deny { rule: index },
                };
            }
        }
        let Some(identity) = identity else {
            return Decision::LoginRequired;
        };
        for (index, rule) in self.rules.iter().enumerate() {
            if matches!(rule.action, Action::Allow | Action::Deny)
                && rule.matches(facts, Some(identity))
            {
                return match rule.action {
                    Action::Allow => Decision::Allow { rule: index },
                    _ => Decision::Deny { rule: index },
                };
            }
        }
        Decision::NoRuleMatched
    }

    /// True when `host` and `path` fall under this policy; the caller picks the longest prefix
    /// across policies (see [`crate::routes::RouteTable`]).
    pub fn covers(&self, host: &Host, path: &crate::path::CanonicalPath) -> Option<usize> {
        if !self.hosts.contains(host) {
            return None;
        }
        self.prefixes
            .iter()
            .filter(|p| path.starts_with_segments(p))
            .map(|p| if p == "/" { 0 } else { p.len() })
            .max()
    }
}

impl Rule {
    fn selectors(&self) -> impl Iterator<Item = &Selector> {
        self.include
            .iter()
            .chain(&self.require)
            .chain(&self.exclude)
    }

    fn matches(&self, facts: &RequestFacts<'_>, identity: Option<&Identity>) -> bool {
        self.include.iter().any(|s| s.matches(facts, identity))
            && self.require.iter().all(|s| s.matches(facts, identity))
            && !self.exclude.iter().any(|s| s.matches(facts, identity))
    }
}

impl Selector {
    /// True for selectors that need no user: they can be judged before login.
    fn is_pre_login(&self) -> bool {
        matches!(self, Self::Everyone | Self::IpRanges(_))
    }

    /// Identity selectors never match without an identity.
    fn matches(&self, facts: &RequestFacts<'_>, identity: Option<&Identity>) -> bool {
        match self {
            Self::Everyone => true,
            Self::IpRanges(ranges) => {
                let ip = canonical_ip(facts.client_ip);
                ranges.iter().any(|r| r.contains(&ip))
            }
            Self::ServiceTokens(names) => facts.service_token.is_some_and(|t| names.contains(t)),
            Self::Emails(emails) => identity
                .and_then(|i| i.email.as_deref())
                .is_some_and(|e| emails.contains(&e.to_ascii_lowercase())),
            Self::EmailDomains(domains) => identity
                .and_then(|i| i.email.as_deref())
                .and_then(|e| e.rsplit_once('@'))
                .is_some_and(|(_, domain)| domains.contains(&domain.to_ascii_lowercase())),
            Self::Groups(groups) => {
                identity.is_some_and(|i| i.groups.iter().any(|g| groups.contains(g)))
            }
            Self::Claim { name, values } => identity
                .and_then(|i| i.claims.get(name))
                .is_some_and(|claim| claim_matches(claim, values)),
        }
    }
}

/// An IPv4-mapped IPv6 address is judged as the IPv4 address it carries, so `::ffff:10.0.0.1`
/// cannot slip past a `10.0.0.0/8` exclusion.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn claim_matches(claim: &serde_json::Value, values: &BTreeSet<String>) -> bool {
    match claim {
        serde_json::Value::String(s) => values.contains(s),
        serde_json::Value::Bool(b) => values.contains(&b.to_string()),
        serde_json::Value::Number(n) => values.contains(&n.to_string()),
        serde_json::Value::Array(items) => items.iter().any(|item| match item {
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => false,
            other => claim_matches(other, values),
        }),
        _ => false,
    }
}
