//! Compiling manifests into a [`Snapshot`]: each `AccessPolicy` becomes a [`Policy`] with its
//! service-token credentials, or, when it cannot be used, an [`InvalidPolicy`] that still claims
//! its hosts and paths so that they are denied rather than falling to another policy.

use super::{
    Snapshot,
    manifest::{DEFAULT_NAMESPACE, SecretManifest},
    service_tokens,
};
use portcullis_core::{CanonicalPath, Host, InvalidPolicy, Policy, PolicyId, RouteTable};
use portcullis_crds::AccessPolicy;
use std::{collections::HashMap, sync::Arc};

/// Builds a snapshot from every known manifest. Invalid policies still claim their hosts, as
/// denials.
pub fn build(
    version: u64,
    policies: &[AccessPolicy],
    secrets: &HashMap<(String, String), SecretManifest>,
    known_idps: &dyn Fn(&str) -> bool,
) -> Snapshot {
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    let mut problems = Vec::new();
    let mut service_tokens = HashMap::new();
    for manifest in policies {
        match compile(manifest, known_idps) {
            Ok(policy) => {
                let credentials = service_tokens::credentials(&policy, secrets, &mut problems);
                service_tokens.insert(policy.id.clone(), credentials);
                valid.push(Arc::new(policy));
            }
            Err(reason) => {
                let id = policy_id(manifest);
                problems.push(format!("{id}: {reason}"));
                invalid.push(claimed_as_denied(id, manifest, reason));
            }
        }
    }
    Snapshot {
        version,
        routes: RouteTable::build(&valid, &invalid),
        policies: valid.into_iter().map(|p| (p.id.clone(), p)).collect(),
        service_tokens,
        problems,
        epoch_since: HashMap::new(),
    }
}

/// The policy, or why it cannot be enforced as written (an invalid spec, or an identity
/// provider this gateway does not have).
fn compile(manifest: &AccessPolicy, known_idps: &dyn Fn(&str) -> bool) -> Result<Policy, String> {
    let policy = Policy::try_from(manifest).map_err(|e| e.to_string())?;
    match policy
        .identity_providers
        .iter()
        .find(|name| !known_idps(name))
    {
        Some(unknown) => Err(format!("unknown identity provider {unknown:?}")),
        None => Ok(policy),
    }
}

/// The id of a manifest, which may lack a namespace.
fn policy_id(manifest: &AccessPolicy) -> PolicyId {
    PolicyId::new(
        manifest
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
        manifest.metadata.name.clone().unwrap_or_default(),
    )
}

/// The hosts and path prefixes of an unusable policy that still parse: they are denied, not
/// left to a shorter (perhaps public) prefix.
fn claimed_as_denied(id: PolicyId, manifest: &AccessPolicy, reason: String) -> InvalidPolicy {
    InvalidPolicy {
        id,
        hosts: manifest
            .spec
            .hosts
            .iter()
            .filter_map(|h| Host::parse(h).ok())
            .collect(),
        prefixes: manifest
            .spec
            .paths
            .iter()
            .filter(|p| CanonicalPath::parse(p).is_ok())
            .cloned()
            .collect(),
        reason: reason.into(),
    }
}
