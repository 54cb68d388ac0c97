//! Which policy a request falls under: exact host, then the longest path prefix.
//!
//! Built once per state change, read on every request. Two policies claiming the same host and
//! prefix, or a policy the gateway could not understand, route to an explicit denial: an error
//! in configuration never opens an app and never silently picks a winner.

use crate::{
    host::Host,
    path::CanonicalPath,
    policy::{Policy, PolicyId},
};
use std::{collections::HashMap, sync::Arc};

/// Where a request goes.
#[derive(Clone, Debug)]
pub enum Route {
    /// Enforce this policy.
    Policy(Arc<Policy>),
    /// The policy claiming this host and prefix is invalid: deny.
    Invalid { id: PolicyId, reason: Arc<str> },
    /// Several policies claim this host and prefix: deny until one yields.
    Conflict { ids: Vec<PolicyId> },
}

/// A policy the gateway could not compile, with what could be read of its claims so they are
/// denied rather than left open.
#[derive(Clone, Debug)]
pub struct InvalidPolicy {
    pub id: PolicyId,
    pub hosts: Vec<Host>,
    pub prefixes: Vec<String>,
    pub reason: Arc<str>,
}

/// Host → prefixes (longest first) → route.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    hosts: HashMap<Host, Vec<(String, Route)>>,
}

impl RouteTable {
    /// Builds the table from every known policy, valid or not.
    pub fn build(valid: &[Arc<Policy>], invalid: &[InvalidPolicy]) -> Self {
        let mut claims: HashMap<Host, HashMap<String, Vec<Route>>> = HashMap::new();
        for policy in valid {
            for host in &policy.hosts {
                for prefix in &policy.prefixes {
                    claims
                        .entry(host.clone())
                        .or_default()
                        .entry(prefix.to_ascii_lowercase())
                        .or_default()
                        .push(Route::Policy(policy.clone()));
                }
            }
        }
        for policy in invalid {
            let prefixes = if policy.prefixes.is_empty() {
                vec!["/".to_owned()]
            } else {
                policy.prefixes.clone()
            };
            for host in &policy.hosts {
                for prefix in &prefixes {
                    claims
                        .entry(host.clone())
                        .or_default()
                        .entry(prefix.to_ascii_lowercase())
                        .or_default()
                        .push(Route::Invalid {
                            id: policy.id.clone(),
                            reason: policy.reason.clone(),
                        });
                }
            }
        }
        let hosts = claims
            .into_iter()
            .map(|(host, prefixes)| {
                let mut entries: Vec<(String, Route)> = prefixes
                    .into_iter()
                    .map(|(prefix, mut routes)| {
                        let route = if routes.len() == 1 {
                            routes.remove(0)
                        } else {
                            let mut ids: Vec<PolicyId> = routes.iter().map(route_id).collect();
                            ids.sort();
                            ids.dedup();
                            Route::Conflict { ids }
                        };
                        (prefix, route)
                    })
                    .collect();
                entries.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
                (host, entries)
            })
            .collect();
        Self { hosts }
    }

    /// The route for a request, or `None` when no policy claims it.
    pub fn route(&self, host: &Host, path: &CanonicalPath) -> Option<&Route> {
        self.hosts
            .get(host)?
            .iter()
            .find(|(prefix, _)| path.starts_with_segments(prefix))
            .map(|(_, route)| route)
    }

    /// True when some policy (valid or not) names this host: it is one of ours, and a
    /// redirect to it may be allowed.
    pub fn knows_host(&self, host: &Host) -> bool {
        self.hosts.contains_key(host)
    }

    /// Every host some policy names.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.keys()
    }
}

fn route_id(route: &Route) -> PolicyId {
    match route {
        Route::Policy(policy) => policy.id.clone(),
        Route::Invalid { id, .. } => id.clone(),
        Route::Conflict { ids } => ids
            .first()
            .cloned()
            .unwrap_or_else(|| PolicyId::new("", "")),
    }
}
