//! Which namespace may claim which host: the one rule, used by the operator for the state it
//! streams to gateways and by a standalone gateway for the manifests of its directory.
//!
//! An `AccessPolicy` is namespaced but its hosts are shared by the cluster, so a claim needs a
//! right to the host, not only to the namespace:
//! - a host covered by an `AccessHost` ([`HostGrant`]) may be claimed only from the namespaces the
//!   most specific covering grants admit (an exact hostname over any wildcard, a longer wildcard
//!   over a shorter one; grants equally specific add up);
//! - a host no grant covers is, by default ([`Unclaimed::FirstClaim`]), owned by the namespace
//!   of its oldest claim (by `creationTimestamp`, then `uid`, then namespace and name): a claim
//!   from any other namespace is refused. With [`Unclaimed::Refuse`] it cannot be claimed at all.
//!
//! A policy is refused whole as soon as one of its hosts is refused: its rules were written for
//! all its hosts together. Ownership is decided over every claim, refused or not, so refusing a
//! policy never hands one of its other hosts to someone else (no cascade from one change).
//! A refused policy is never routed: requests to its hosts are judged only by the policies of the
//! namespace that may claim them.

mod grant;

pub use grant::{Admits, Expression, HostGrant, HostPattern, Labels, NamespaceSelector};

use crate::{host::Host, policy::PolicyId, policy::PolicySource};
use std::{
    collections::{BTreeMap, HashMap},
    fmt,
};

/// What happens to a host no `AccessHost` covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unclaimed {
    /// The namespace of the oldest claim owns it (the default: a cluster without any
    /// `AccessHost` keeps working, and no namespace can take a host another one uses).
    #[default]
    FirstClaim,
    /// Nobody may claim it: every host needs an `AccessHost`.
    Refuse,
}

/// One policy's claim on its hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub id: PolicyId,
    /// `metadata.creationTimestamp` in unix seconds; `None` (a manifest) sorts after every
    /// timestamp.
    pub created: Option<i64>,
    /// `metadata.uid`, the tie-break between claims created in the same second.
    pub uid: String,
    /// Every host of the spec that parses (an invalid policy still claims them, as denials).
    pub hosts: Vec<Host>,
}

impl Claim {
    /// The claim a policy source makes; `None` without namespace or name.
    pub fn of(source: &impl PolicySource, created: Option<i64>, uid: Option<&str>) -> Option<Self> {
        Some(Self {
            id: PolicyId::new(source.namespace()?, source.name()?),
            created,
            uid: uid.unwrap_or_default().to_owned(),
            hosts: source
                .spec()
                .hosts
                .iter()
                .filter_map(|h| Host::parse(h).ok())
                .collect(),
        })
    }

    fn order(&self) -> (bool, i64, &str, &PolicyId) {
        (
            self.created.is_none(),
            self.created.unwrap_or_default(),
            &self.uid,
            &self.id,
        )
    }
}

/// Why a claim is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The most specific `AccessHost`s covering the host do not admit the namespace.
    NotGranted { host: Host, grants: Vec<String> },
    /// No `AccessHost` covers the host and another namespace claimed it first.
    OwnedElsewhere { host: Host, owner: PolicyId },
    /// No `AccessHost` covers the host and unclaimed hosts may not be claimed.
    NoGrant { host: Host },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotGranted { host, grants } => write!(
                f,
                "host {host} is granted by AccessHost {} to other namespaces only",
                grants.join(", ")
            ),
            Self::OwnedElsewhere { host, owner } => write!(
                f,
                "host {host} belongs to namespace {} (claimed first by AccessPolicy {owner}); \
                 an AccessHost must grant it to this namespace",
                owner.namespace
            ),
            Self::NoGrant { host } => write!(
                f,
                "host {host} is covered by no AccessHost, and hosts must be granted"
            ),
        }
    }
}

/// What the rule consults besides the claims.
pub struct Ownership<'a> {
    pub grants: &'a [HostGrant],
    /// Labels of a namespace, when known (for `Selector` grants).
    pub labels: &'a dyn Fn(&str) -> Option<&'a Labels>,
    pub unclaimed: Unclaimed,
}

impl Ownership<'_> {
    /// The refused claims, by policy: the first refused host of each.
    pub fn refusals(&self, claims: &[Claim]) -> BTreeMap<PolicyId, Refusal> {
        let mut ordered: Vec<&Claim> = claims.iter().collect();
        ordered.sort_by(|a, b| a.order().cmp(&b.order()));
        let mut first: HashMap<&Host, &PolicyId> = HashMap::new();
        for claim in &ordered {
            for host in &claim.hosts {
                first.entry(host).or_insert(&claim.id);
            }
        }
        let mut refused = BTreeMap::new();
        for claim in ordered {
            if let Some(refusal) = claim
                .hosts
                .iter()
                .find_map(|host| self.judge(&claim.id, host, first.get(host).copied()))
            {
                refused.insert(claim.id.clone(), refusal);
            }
        }
        refused
    }

    /// Whether a policy `id` may claim `host`, whose oldest claim is `owner`.
    fn judge(&self, id: &PolicyId, host: &Host, owner: Option<&PolicyId>) -> Option<Refusal> {
        let covering: Vec<(usize, &HostGrant)> = self
            .grants
            .iter()
            .filter_map(|g| g.specificity(host).map(|s| (s, g)))
            .collect();
        if let Some(best) = covering.iter().map(|(s, _)| *s).max() {
            let closest = covering.iter().filter(|(s, _)| *s == best).map(|(_, g)| g);
            let labels = (self.labels)(&id.namespace);
            if closest.clone().any(|g| g.admits(&id.namespace, labels)) {
                return None;
            }
            let mut grants: Vec<String> = closest.map(|g| g.name.clone()).collect();
            grants.sort();
            return Some(Refusal::NotGranted {
                host: host.clone(),
                grants,
            });
        }
        match (self.unclaimed, owner) {
            (Unclaimed::Refuse, _) => Some(Refusal::NoGrant { host: host.clone() }),
            (Unclaimed::FirstClaim, Some(owner)) if owner.namespace != id.namespace => {
                Some(Refusal::OwnedElsewhere {
                    host: host.clone(),
                    owner: owner.clone(),
                })
            }
            (Unclaimed::FirstClaim, _) => None,
        }
    }
}

#[cfg(test)]
mod tests;
