//! Compiling an `AccessPolicy` spec into a [`Policy`]: every field checked, and anything the
//! gateway could not enforce exactly as written refused with a [`PolicyError`].

use super::{
    Action, BearerRule, Policy, PolicyError, PolicyId, RefreshFailurePolicy, Rule, Selector,
    ServiceTokenRef, SessionPolicy, Upstream, UpstreamTarget,
};
use crate::{
    email::{EmailAddress, mail_domain},
    host::{Host, HostError},
};
use ipnet::IpNet;
use portcullis_crds::{
    AccessPolicySpec, AccessRule, RefreshFailureMode, RuleAction, Selector as SelectorSpec,
    SessionSettings,
};
use std::{collections::BTreeSet, time::Duration};

/// What a policy is compiled with besides its spec: the `metadata` of its `AccessPolicy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyMeta {
    pub namespace: String,
    pub name: String,
    /// `metadata.uid`: app tokens are bound to it (see [`Policy::uid`]).
    pub uid: Option<String>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
}

impl Policy {
    /// Compiles a policy from its parts: what the gateway receives from the operator, and what an
    /// `AccessPolicy` object holds (`TryFrom<&AccessPolicy>` takes its parts from the object and
    /// calls this).
    pub fn compile(meta: PolicyMeta, spec: &AccessPolicySpec) -> Result<Self, PolicyError> {
        let hosts = spec
            .hosts
            .iter()
            .map(|h| exact_host(h))
            .collect::<Result<Vec<_>, _>>()?;
        if hosts.is_empty() {
            return Err(PolicyError::Host {
                host: String::new(),
                reason: HostError::Empty,
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
            .map(|u| upstream(&meta.namespace, u))
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
        let session = session(&spec.session)?;
        let epoch = u64::try_from(spec.revocation_epoch).map_err(|_| PolicyError::NegativeEpoch)?;
        Ok(Self {
            id: PolicyId::new(meta.namespace, meta.name),
            uid: meta.uid,
            generation: meta.generation,
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

/// A host of the manifest, which must already be in canonical form.
fn exact_host(raw: &str) -> Result<Host, PolicyError> {
    let host = Host::parse(raw).map_err(|reason| PolicyError::Host {
        host: raw.to_owned(),
        reason,
    })?;
    // A port or upper case in the manifest would be normalized away: refuse it, the
    // manifest must say exactly what it protects.
    if host.as_str() != raw {
        return Err(PolicyError::Host {
            host: raw.to_owned(),
            reason: HostError::InvalidCharacter,
        });
    }
    Ok(host)
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

/// Session lifetimes: none negative, and a token lifetime that is positive and within the
/// absolute lifetime.
fn session(s: &SessionSettings) -> Result<SessionPolicy, PolicyError> {
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
    Ok(session)
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
    check_selectors_fit_action(&compiled).map_err(|reason| error(reason.into()))?;
    Ok(compiled)
}

/// Which selectors each action may use: a `Bypass` rule is judged before login, so it selects
/// only what the request carries by itself; a `ServiceAuth` rule includes service tokens and
/// may narrow them by address; service tokens belong in `ServiceAuth` rules only.
fn check_selectors_fit_action(rule: &Rule) -> Result<(), &'static str> {
    let service_auth_condition = |s: &Selector| s.is_pre_login() || s.is_machine_credential();
    match rule.action {
        Action::Bypass if !rule.selectors().all(Selector::is_pre_login) => {
            Err("Bypass rules may only select everyone or ipRanges")
        }
        Action::ServiceAuth
            if !rule.include.iter().all(Selector::is_machine_credential)
                || !rule
                    .require
                    .iter()
                    .chain(&rule.exclude)
                    .all(service_auth_condition) =>
        {
            Err("ServiceAuth rules include serviceTokens or bearer and may only add ipRanges")
        }
        Action::Allow | Action::Deny if rule.selectors().any(Selector::is_machine_credential) => {
            Err("serviceTokens and bearer selectors belong in ServiceAuth rules")
        }
        _ => Ok(()),
    }
}

fn selector(spec: &SelectorSpec) -> Result<Selector, String> {
    // Entries are held in the form a strictly parsed address has, so a rule can only name
    // what an address can be (a typo such as `@example.com` or `example.com.` is refused
    // instead of matching nobody).
    let parse_emails = |v: &Vec<String>| {
        v.iter()
            .map(|s| {
                EmailAddress::parse(s)
                    .map(|e| e.as_str().to_owned())
                    .map_err(|e| format!("invalid email {s:?}: {e}"))
            })
            .collect::<Result<BTreeSet<_>, _>>()
    };
    let parse_domains = |v: &Vec<String>| {
        v.iter()
            .map(|s| mail_domain(s).map_err(|e| format!("invalid email domain {s:?}: {e}")))
            .collect::<Result<BTreeSet<_>, _>>()
    };
    let mut set = Vec::new();
    if let Some(everyone) = spec.everyone {
        if !everyone {
            return Err("everyone must be true when set".into());
        }
        set.push(Selector::Everyone);
    }
    if let Some(emails) = &spec.emails {
        set.push(Selector::Emails(parse_emails(emails)?));
    }
    if let Some(domains) = &spec.email_domains {
        set.push(Selector::EmailDomains(parse_domains(domains)?));
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
        set.push(Selector::IpRanges(ip_ranges(ranges)?));
    }
    if let Some(tokens) = &spec.service_tokens {
        set.push(Selector::ServiceTokens(tokens.iter().cloned().collect()));
    }
    if let Some(bearer) = &spec.bearer {
        set.push(Selector::Bearer(bearer_rule(bearer)?));
    }
    match set.len() {
        1 => set.pop().ok_or_else(|| "empty selector".to_owned()),
        _ => Err("a selector sets exactly one field".into()),
    }
}

/// A `bearer` selector: a provider, and at least one audience and one client, none empty. A
/// scope is one RFC 6749 scope token (no space: the claim is split on spaces).
fn bearer_rule(spec: &portcullis_crds::BearerSelector) -> Result<BearerRule, String> {
    let set = |field: &str, values: &[String]| {
        if values.is_empty() || values.iter().any(String::is_empty) {
            return Err(format!("bearer.{field} needs at least one non-empty value"));
        }
        Ok(values.iter().cloned().collect::<BTreeSet<_>>())
    };
    if spec.identity_provider.is_empty() {
        return Err("bearer.identityProvider is required".into());
    }
    let scope_token = |s: &String| {
        !s.is_empty()
            && s.bytes()
                .all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e))
    };
    if let Some(bad) = spec.scopes.iter().find(|s| !scope_token(s)) {
        return Err(format!("bearer.scopes: {bad:?} is not a scope token"));
    }
    Ok(BearerRule {
        identity_provider: spec.identity_provider.clone(),
        audiences: set("audiences", &spec.audiences)?,
        client_ids: set("clientIds", &spec.client_ids)?,
        scopes: spec.scopes.iter().cloned().collect(),
    })
}

/// CIDRs, each truncated to its network (`10.1.2.3/8` is `10.0.0.0/8`).
fn ip_ranges(ranges: &[String]) -> Result<Vec<IpNet>, String> {
    ranges
        .iter()
        .map(|r| {
            r.parse::<IpNet>()
                .map(|n| n.trunc())
                .map_err(|_| format!("invalid CIDR {r:?}"))
        })
        .collect()
}
