//! What the schema cannot check about a policy, as a pure step: the spec turns into the
//! gateway's domain type (else `InvalidSpec`), its identity providers exist, the Secrets and
//! keys its service tokens name exist, its namespace may claim its hosts (decided by the index,
//! which never streams a refused claim), and no other policy claims the same host and path
//! prefix.
//!
//! The gateway denies what this step rejects on its own (an invalid or conflicting claim routes
//! to an explicit denial; a refused host claim never reaches it); the operator's verdict is what
//! an administrator reads in `status.conditions` and in Events.

use portcullis_core::{PolicySource, host::Host, policy::ServiceTokenRef, tenancy::Refusal};
use std::collections::{BTreeMap, BTreeSet};

use crate::index::{Key, SecretScope, Unreadable};

/// Why a policy is not ready. `reason()` is the CamelCase condition and Event reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("{0}; gateways do not route this policy")]
    HostNotAllowed(String),
    #[error("{0}")]
    InvalidSpec(String),
    #[error("identity provider {0:?} is not configured on the gateways")]
    UnknownIdentityProvider(String),
    #[error("Secret {0:?} of service token {1:?} does not exist")]
    MissingSecret(String, String),
    #[error(
        "the operator does not read Secrets in namespace {namespace} (service token {token:?}): {why}"
    )]
    SecretNotReadable {
        namespace: String,
        token: String,
        why: Unreadable,
    },
    #[error("Secret {secret:?} of service token {token:?} lacks key {key:?}")]
    MissingSecretKey {
        secret: String,
        token: String,
        key: &'static str,
    },
    #[error(
        "host {host} path {path} is also claimed by AccessPolicy {other}; gateways deny it until one yields"
    )]
    HostPathConflict {
        host: String,
        path: String,
        other: String,
    },
}

impl Problem {
    /// The condition reason (a bounded set, also used as Event reason and metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            Problem::HostNotAllowed(_) => "HostNotAllowed",
            Problem::InvalidSpec(_) => "InvalidSpec",
            Problem::UnknownIdentityProvider(_) => "UnknownIdentityProvider",
            Problem::MissingSecret(..) => "MissingSecret",
            Problem::SecretNotReadable { .. } => "SecretNotReadable",
            Problem::MissingSecretKey { .. } => "MissingSecretKey",
            Problem::HostPathConflict { .. } => "HostPathConflict",
        }
    }
}

/// What validation consults besides the policies.
pub struct Refs<'a> {
    /// Identity providers configured on the gateways; `None` when the operator was not given
    /// the file (then the check is skipped, not failed).
    pub identity_providers: Option<&'a BTreeSet<String>>,
    /// Key names of every Secret that exists, by (namespace, name).
    pub secret_keys: &'a BTreeMap<Key, BTreeSet<String>>,
    /// Which namespaces' Secrets the operator reads.
    pub secret_scope: &'a SecretScope,
    /// The policies whose namespace may not claim their hosts ([`portcullis_core::tenancy`]).
    pub host_refusals: &'a BTreeMap<Key, Refusal>,
}

/// The verdict on every policy, by (namespace, name).
pub fn validate_all<P: PolicySource>(
    policies: &[P],
    refs: &Refs<'_>,
) -> BTreeMap<Key, Result<(), Problem>> {
    let mut verdicts = BTreeMap::new();
    // (host, lower-case prefix) → policies claiming it, among those that compile.
    let mut claims: BTreeMap<(Host, String), Vec<Key>> = BTreeMap::new();
    for policy in policies {
        let (Some(ns), Some(name)) = (policy.namespace(), policy.name()) else {
            continue;
        };
        let key = (ns.to_owned(), name.to_owned());
        if let Some(refusal) = refs.host_refusals.get(&key) {
            // Not routed: it claims nothing another policy could conflict with.
            verdicts.insert(key, Err(Problem::HostNotAllowed(refusal.to_string())));
            continue;
        }
        let verdict = validate_one(policy, refs);
        if let Ok(compiled) = policy.compile() {
            for host in &compiled.hosts {
                for prefix in &compiled.prefixes {
                    claims
                        .entry((host.clone(), prefix.to_ascii_lowercase()))
                        .or_default()
                        .push(key.clone());
                }
            }
        }
        verdicts.insert(key, verdict);
    }
    for ((host, path), owners) in &claims {
        if owners.len() < 2 {
            continue;
        }
        for key in owners {
            let Some(verdict) = verdicts.get_mut(key) else {
                continue;
            };
            if verdict.is_err() {
                continue;
            }
            let other = owners
                .iter()
                .find(|k| *k != key)
                .map(|(ns, n)| format!("{ns}/{n}"))
                .unwrap_or_default();
            *verdict = Err(Problem::HostPathConflict {
                host: host.to_string(),
                path: path.clone(),
                other,
            });
        }
    }
    verdicts
}

/// The checks that need no other policy.
fn validate_one(policy: &impl PolicySource, refs: &Refs<'_>) -> Result<(), Problem> {
    policy
        .compile()
        .map_err(|e| Problem::InvalidSpec(e.to_string()))?;
    let spec = policy.spec();
    // The providers users log in with, and those whose bearer tokens machines present.
    let bearer_providers = spec
        .rules
        .iter()
        .flat_map(|r| r.include.iter().chain(&r.require).chain(&r.exclude))
        .filter_map(|s| s.bearer.as_ref().map(|b| &b.identity_provider));
    if let Some(known) = refs.identity_providers
        && let Some(unknown) = spec
            .identity_providers
            .iter()
            .chain(bearer_providers)
            .find(|idp| !known.contains(*idp))
    {
        return Err(Problem::UnknownIdentityProvider(unknown.clone()));
    }
    let ns = policy.namespace().unwrap_or_default().to_owned();
    for token in &spec.service_tokens {
        if let Some(why) = refs.secret_scope.unreadable(&ns) {
            return Err(Problem::SecretNotReadable {
                namespace: ns,
                token: token.name.clone(),
                why,
            });
        }
        let Some(keys) = refs
            .secret_keys
            .get(&(ns.clone(), token.secret_name.clone()))
        else {
            return Err(Problem::MissingSecret(
                token.secret_name.clone(),
                token.name.clone(),
            ));
        };
        if let Some(key) = ServiceTokenRef::SECRET_KEYS
            .iter()
            .find(|k| !keys.contains(**k))
        {
            return Err(Problem::MissingSecretKey {
                secret: token.secret_name.clone(),
                token: token.name.clone(),
                key,
            });
        }
    }
    Ok(())
}

/// The identity-provider names in the gateway's provider file (`identityProviders[].name`);
/// everything else in the file is ignored.
pub fn identity_provider_names(yaml: &str) -> Result<BTreeSet<String>, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct File {
        #[serde(default)]
        identity_providers: Vec<Named>,
    }
    #[derive(serde::Deserialize)]
    struct Named {
        name: String,
    }
    let file: File = serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?;
    Ok(file
        .identity_providers
        .into_iter()
        .map(|p| p.name)
        .collect())
}

#[cfg(test)]
mod tests;
