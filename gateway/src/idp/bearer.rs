//! Bearer JWTs of machine clients: the access tokens a provider issues through the OAuth 2.0
//! client-credentials flow (a Keycloak service account), presented as `Authorization: Bearer`
//! and accepted by `bearer` selectors of `ServiceAuth` rules.
//!
//! A token is verified fail-closed with the provider's keys ([`jwt`]; an unknown `kid` fetches
//! them again, under the same cooldown as ID and logout tokens) and the result is cached by the
//! token's SHA-256 until its `exp` ([`BearerCache`]): a machine calling in a loop pays the
//! signature check once per token, not once per request. Errors are never cached.

mod jwt;
#[cfg(test)]
mod tests;

use super::Provider;
use portcullis_core::{BearerToken, token::CLOCK_SKEW_SECS};
use sha2::{Digest as _, Sha256};
use std::{collections::HashMap, sync::Arc};

pub use jwt::unverified_issuer;

/// The largest bearer token looked at (a Keycloak access token is 1–2 KB).
pub const MAX_BEARER_LEN: usize = 8 * 1024;

/// How many verified tokens one provider's cache holds.
pub const BEARER_CACHE_CAPACITY: usize = 10_000;

/// Why a bearer token was refused: the `error_description` of the 401 answer. Never echoes
/// the token or a claim value. `Copy`, so a refusal can travel in an access outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    #[error("the bearer token is not a signed JWT: {0}")]
    Malformed(&'static str),
    #[error("the bearer token's header is not acceptable: {0}")]
    Header(&'static str),
    #[error("the bearer token's signature does not verify with the provider's keys")]
    Signature,
    #[error("the bearer token has expired")]
    Expired,
    #[error("the bearer token's claims are not acceptable: {0}")]
    Claims(&'static str),
    #[error("the bearer token's issuer is not accepted here")]
    UnknownIssuer,
    #[error("the bearer token is not accepted here (audience, client or scope)")]
    NotAccepted,
    #[error("the identity provider's keys are not available")]
    Keys,
}

/// Verified tokens of one provider, by the SHA-256 of the token, each until its `exp`.
/// Bounded: when full of live entries, one is dropped (it is verified again on its next use).
#[derive(Debug, Default)]
pub struct BearerCache {
    verified: HashMap<[u8; 32], Arc<BearerToken>>,
}

impl BearerCache {
    fn key(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The verified token, if it was verified before and has not expired at `now`.
    pub fn get(&mut self, token: &str, now: u64) -> Option<Arc<BearerToken>> {
        let key = Self::key(token);
        let hit = self.verified.get(&key)?;
        if hit.expires_at.saturating_add(CLOCK_SKEW_SECS) > now {
            return Some(hit.clone());
        }
        self.verified.remove(&key);
        None
    }

    /// Remembers a verified token until its `exp`.
    pub fn insert(&mut self, token: &str, verified: Arc<BearerToken>, now: u64) {
        if self.verified.len() >= BEARER_CACHE_CAPACITY {
            self.verified
                .retain(|_, t| t.expires_at.saturating_add(CLOCK_SKEW_SECS) > now);
        }
        if self.verified.len() >= BEARER_CACHE_CAPACITY
            && let Some(evicted) = self.verified.keys().next().copied()
        {
            self.verified.remove(&evicted);
        }
        self.verified.insert(Self::key(token), verified);
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.verified.len()
    }

    /// True when no token is cached.
    pub fn is_empty(&self) -> bool {
        self.verified.is_empty()
    }
}

impl Provider {
    /// The verified claims of a bearer `token` issued by this provider (see the module): from
    /// the cache, or checked with the provider's keys, fetched again once with the cooldown
    /// for an unknown `kid`.
    pub async fn verify_bearer(
        &self,
        token: &str,
        now: u64,
    ) -> Result<Arc<BearerToken>, BearerError> {
        if let Some(hit) = self.bearer_cache().get(token, now) {
            return Ok(hit);
        }
        let mut issuers = vec![self.config.issuer.as_str()];
        issuers.extend(self.config.issuer_aliases.iter().map(String::as_str));
        let name = self.config.name.as_str();
        let (client, keys) = self.keys(None).await.map_err(|_| BearerError::Keys)?;
        let verified = match jwt::verify(token, &keys, name, &issuers, now) {
            Err(None) => {
                let (_, fresh) = self
                    .keys(Some(&client))
                    .await
                    .map_err(|_| BearerError::Keys)?;
                jwt::verify(token, &fresh, name, &issuers, now)
                    .map_err(|e| e.unwrap_or(BearerError::Signature))
            }
            other => other.map_err(|e| e.unwrap_or(BearerError::Signature)),
        }?;
        let verified = Arc::new(verified);
        self.bearer_cache().insert(token, verified.clone(), now);
        Ok(verified)
    }

    /// Whether `iss` names this provider (its issuer or a configured alias), exactly.
    pub fn issues(&self, iss: &str) -> bool {
        self.config.issuer == iss || self.config.issuer_aliases.iter().any(|a| a == iss)
    }
}
