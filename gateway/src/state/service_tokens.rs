//! Service tokens: the id and secret a machine client presents instead of logging in, read from
//! the Secret each token names, and checked in constant time.

use super::{Snapshot, manifest::SecretManifest};
use portcullis_core::{Policy, PolicyId};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use subtle::ConstantTimeEq;

use portcullis_core::policy::ServiceTokenRef;

/// The key of a service token's Secret that holds the client id.
pub const CLIENT_ID_KEY: &str = ServiceTokenRef::CLIENT_ID_KEY;
/// The key of a service token's Secret that holds the client secret.
pub const CLIENT_SECRET_KEY: &str = ServiceTokenRef::CLIENT_SECRET_KEY;

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

/// The credentials of every service token of `policy`, from the Secrets (by namespace and
/// name) in the policy's namespace. A token whose Secret is missing or lacks either key is left
/// out, and said so in `problems`: it admits nobody.
pub(super) fn credentials(
    policy: &Policy,
    secrets: &HashMap<(String, String), SecretManifest>,
    problems: &mut Vec<String>,
) -> Vec<ServiceCredential> {
    let mut credentials = Vec::new();
    for token in &policy.service_tokens {
        let secret = secrets.get(&(policy.id.namespace.clone(), token.secret_name.clone()));
        match secret.and_then(|s| Some((s.get(CLIENT_ID_KEY)?, s.get(CLIENT_SECRET_KEY)?))) {
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
                "{}: service token {} needs Secret {} with {CLIENT_ID_KEY} and {CLIENT_SECRET_KEY}",
                policy.id, token.name, token.secret_name
            )),
        }
    }
    credentials
}

impl Snapshot {
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
