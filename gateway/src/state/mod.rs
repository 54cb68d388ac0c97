//! The access state the gateway enforces: an immutable snapshot, replaced whole on every change
//! and read without locks on the request path.
//!
//! A snapshot is built from manifests (standalone mode: a directory; cluster mode: the
//! operator's stream). Until the first snapshot arrives the gateway is not ready and admits
//! nobody.

pub mod directory;
pub mod operator_stream;
pub mod session_index;

use base64::Engine as _;
use portcullis_core::{Host, InvalidPolicy, Policy, PolicyId, RouteTable};
use portcullis_crds::AccessPolicy;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use std::{collections::HashMap, sync::Arc};
use subtle::ConstantTimeEq;

/// Everything one request needs to know about configuration.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases with every change this gateway applies.
    pub version: u64,
    pub routes: RouteTable,
    pub policies: HashMap<PolicyId, Arc<Policy>>,
    /// Service-token credentials per policy, by token name.
    pub service_tokens: HashMap<PolicyId, Vec<ServiceCredential>>,
    /// Manifests that could not be used, for logs and status.
    pub problems: Vec<String>,
    /// Per policy, since when (unix seconds) its current revocation epoch is in force: the auth
    /// host re-issues from an SSO session only if the user authenticated after it.
    pub epoch_since: HashMap<PolicyId, u64>,
}

/// A service token's id and secret.
#[derive(Clone)]
pub struct ServiceCredential {
    pub name: String,
    pub client_id: Vec<u8>,
    pub client_secret: Vec<u8>,
}

impl std::fmt::Debug for ServiceCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCredential")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// Fills [`Snapshot::epoch_since`]: an epoch seen before keeps its time, a raised one
    /// starts now, epoch 0 was never raised. A gateway that starts with an epoch above 0 cannot
    /// know when it was raised and takes "now": the safe side, since it only means an IdP
    /// login instead of a silent single sign-on for sessions older than the gateway.
    pub fn track_epochs(&mut self, previous: Option<&Snapshot>, now: u64) {
        self.epoch_since = self
            .policies
            .values()
            .map(|policy| {
                let since = match previous.and_then(|p| {
                    Some((p.policies.get(&policy.id)?, p.epoch_since.get(&policy.id)?))
                }) {
                    Some((old, since)) if old.epoch == policy.epoch => *since,
                    _ if policy.epoch == 0 => 0,
                    // Rounded up: a login in the same second as the raise counts as before it.
                    _ => now + 1,
                };
                (policy.id.clone(), since)
            })
            .collect();
    }

    /// The name of the service token of `policy` whose id and secret both match, compared in
    /// constant time (every candidate is compared, so timing does not reveal which one matched).
    pub fn service_token(&self, policy: &PolicyId, id: &[u8], secret: &[u8]) -> Option<&str> {
        let mut found = None;
        for credential in self.service_tokens.get(policy)? {
            // Compared as SHA-256 digests: equal lengths, so not even the secret's length leaks.
            let digest = |b: &[u8]| Sha256::digest(b);
            let matches = digest(&credential.client_id).ct_eq(&digest(id))
                & digest(&credential.client_secret).ct_eq(&digest(secret));
            if bool::from(matches) {
                found = Some(credential.name.as_str());
            }
        }
        found
    }
}

/// A Secret manifest, as far as the gateway reads one.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretManifest {
    pub metadata: Metadata,
    #[serde(default)]
    pub data: HashMap<String, String>,
    #[serde(default)]
    pub string_data: HashMap<String, String>,
}

/// `metadata` of a manifest.
#[derive(Debug, Default, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
}

impl SecretManifest {
    /// The decoded value of `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        if let Some(v) = self.string_data.get(key) {
            return Some(v.as_bytes().to_vec());
        }
        base64::engine::general_purpose::STANDARD
            .decode(self.data.get(key)?)
            .ok()
    }
}

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
        let id = PolicyId::new(
            manifest
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            manifest.metadata.name.clone().unwrap_or_default(),
        );
        let compiled = Policy::try_from(manifest)
            .map_err(|e| e.to_string())
            .and_then(|policy| {
                match policy
                    .identity_providers
                    .iter()
                    .find(|name| !known_idps(name))
                {
                    Some(unknown) => Err(format!("unknown identity provider {unknown:?}")),
                    None => Ok(policy),
                }
            });
        match compiled {
            Ok(policy) => {
                let mut credentials = Vec::new();
                for token in &policy.service_tokens {
                    let secret =
                        secrets.get(&(policy.id.namespace.clone(), token.secret_name.clone()));
                    match secret.and_then(|s| Some((s.get("client-id")?, s.get("client-secret")?)))
                    {
                        Some((client_id, client_secret))
                            if !client_id.is_empty() && !client_secret.is_empty() =>
                        {
                            credentials.push(ServiceCredential {
                                name: token.name.clone(),
                                client_id,
                                client_secret,
                            })
                        }
                        _ => problems.push(format!(
                            "{}: service token {} needs Secret {} with client-id and client-secret",
                            policy.id, token.name, token.secret_name
                        )),
                    }
                }
                service_tokens.insert(policy.id.clone(), credentials);
                valid.push(Arc::new(policy));
            }
            Err(reason) => {
                problems.push(format!("{id}: {reason}"));
                invalid.push(InvalidPolicy {
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
                        .filter(|p| portcullis_core::CanonicalPath::parse(p).is_ok())
                        .cloned()
                        .collect(),
                    reason: reason.into(),
                });
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
