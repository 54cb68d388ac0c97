//! Evaluating a [`Policy`]'s rules against one request (see the module documentation of
//! [`crate::policy`] for the two phases).

use super::{Action, BearerToken, Policy, Rule, Selector};
use crate::{email::EmailAddress, host::Host, identity::Identity, path::CanonicalPath};
use std::{collections::BTreeSet, net::IpAddr};

/// What the request brings to a decision besides the user.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    /// The client address (the peer, or what a trusted proxy reported).
    pub client_ip: IpAddr,
    /// The name of the service token the request proved it holds, if any (the caller compares
    /// the secret in constant time before naming it here).
    pub service_token: Option<&'a str>,
    /// The bearer JWT the request carried, verified by the caller (signature, issuer,
    /// lifetime); the rules judge the rest.
    pub bearer: Option<&'a BearerToken>,
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
    pub fn covers(&self, host: &Host, path: &CanonicalPath) -> Option<usize> {
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
    fn matches(&self, facts: &RequestFacts<'_>, identity: Option<&Identity>) -> bool {
        self.include.iter().any(|s| s.matches(facts, identity))
            && self.require.iter().all(|s| s.matches(facts, identity))
            && !self.exclude.iter().any(|s| s.matches(facts, identity))
    }
}

impl Selector {
    /// Identity selectors never match without an identity.
    fn matches(&self, facts: &RequestFacts<'_>, identity: Option<&Identity>) -> bool {
        match self {
            Self::Everyone => true,
            Self::IpRanges(ranges) => {
                let ip = canonical_ip(facts.client_ip);
                ranges.iter().any(|r| r.contains(&ip))
            }
            Self::ServiceTokens(names) => facts.service_token.is_some_and(|t| names.contains(t)),
            Self::Bearer(rule) => facts.bearer.is_some_and(|t| rule.accepts(t)),
            // An address that does not parse strictly matches no email rule: which domain it
            // has is not clear (see `crate::email`).
            Self::Emails(emails) => email(identity).is_some_and(|e| emails.contains(e.as_str())),
            Self::EmailDomains(domains) => {
                email(identity).is_some_and(|e| domains.contains(e.domain()))
            }
            Self::Groups(groups) => {
                identity.is_some_and(|i| i.groups.iter().any(|g| groups.contains(g)))
            }
            Self::Claim { name, values } => identity
                .and_then(|i| i.claims.get(name))
                .is_some_and(|claim| claim_matches(claim, values)),
        }
    }
}

/// The user's email, strictly parsed; `None` without one or when it does not parse.
fn email(identity: Option<&Identity>) -> Option<EmailAddress> {
    EmailAddress::parse(identity?.email.as_deref()?).ok()
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
