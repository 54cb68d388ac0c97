//! Compiling policies into a [`Snapshot`]: each policy (a manifest or a stream entry) becomes
//! a [`Policy`] with its service-token credentials, or, when it cannot be used, an
//! [`InvalidPolicy`] that still claims its hosts and paths so that they are denied rather than
//! falling to another policy.

use super::{
    Snapshot,
    manifest::{DEFAULT_NAMESPACE, SecretManifest},
    service_tokens,
};
use portcullis_core::{
    CanonicalPath, Host, InvalidPolicy, Policy, PolicyId, PolicySource, RouteTable,
};
use std::{collections::HashMap, sync::Arc};

/// The id of a policy as its source states it; a manifest may lack a namespace (the default
/// one) or a name (then it does not compile, and its id has an empty name).
fn policy_id(source: &impl PolicySource) -> PolicyId {
    PolicyId::new(
        source.namespace().unwrap_or(DEFAULT_NAMESPACE),
        source.name().unwrap_or_default(),
    )
}

/// Builds a snapshot from every known manifest. Invalid policies still claim their hosts, as
/// denials.
pub fn build<P: PolicySource>(
    version: u64,
    policies: &[P],
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
/// provider this gateway does not have, for logins or for bearer tokens).
fn compile(
    manifest: &impl PolicySource,
    known_idps: &dyn Fn(&str) -> bool,
) -> Result<Policy, String> {
    let policy = manifest.compile().map_err(|e| e.to_string())?;
    let logins = policy.identity_providers.iter().map(String::as_str);
    let unknown = logins
        .chain(policy.bearer_providers())
        .find(|name| !known_idps(name))
        .map(str::to_owned);
    match unknown {
        Some(unknown) => Err(format!("unknown identity provider {unknown:?}")),
        None => Ok(policy),
    }
}

/// The hosts and path prefixes of an unusable policy that still parse: they are denied, not
/// left to a shorter (perhaps public) prefix.
fn claimed_as_denied(id: PolicyId, manifest: &impl PolicySource, reason: String) -> InvalidPolicy {
    let spec = manifest.spec();
    InvalidPolicy {
        id,
        hosts: spec
            .hosts
            .iter()
            .filter_map(|h| Host::parse(h).ok())
            .collect(),
        prefixes: spec
            .paths
            .iter()
            .filter(|p| CanonicalPath::parse(p).is_ok())
            .cloned()
            .collect(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_crds::AccessPolicy;

    #[test]
    fn a_bearer_selector_needs_a_provider_this_gateway_has() {
        let manifest = |idp: &str| -> AccessPolicy {
            serde_saphyr::from_str(&format!(
                "apiVersion: access.portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{ name: api, namespace: ns }}\nspec:\n  hosts: [api.example.test]\n  identityProviders: [dex]\n  rules:\n    - action: ServiceAuth\n      include: [{{ bearer: {{ identityProvider: {idp}, audiences: [api], clientIds: [ci] }} }}]\n"
            ))
            .expect("manifest")
        };
        let known = |name: &str| ["dex", "keycloak"].contains(&name);
        let policy = compile(&manifest("keycloak"), &known).expect("known provider");
        assert_eq!(
            policy.bearer_providers().into_iter().collect::<Vec<_>>(),
            ["keycloak"]
        );
        assert_eq!(
            compile(&manifest("okta"), &known).err().as_deref(),
            Some("unknown identity provider \"okta\"")
        );
    }
}
