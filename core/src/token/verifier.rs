//! The verification cache: "verify on every request" at the cost of a hash-map lookup.

use super::{Claims, HasAudience, KeySet, TokenError, TokenKind, check_issued, check_lifetime};
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

/// Verifies tokens of one kind for one audience-checking rule, remembering tokens whose
/// signature it already checked.
///
/// The cache is keyed on the whole token string, so a hit means "exactly these bytes were
/// verified against these keys": no input of the decision is left out. Only successes are
/// cached, expiry is re-checked on every hit, and the cache belongs to one [`KeySet`]: a new key
/// set (rotation, removal of a compromised key) starts with an empty cache. Revocation and
/// epochs are not the cache's business: the caller checks them on every request against the
/// live state.
pub struct Verifier<C> {
    keys: Arc<KeySet>,
    kind: TokenKind,
    issuer: String,
    cache: RwLock<HashMap<Arc<str>, Arc<C>>>,
    capacity: usize,
}

impl<C: Claims> Verifier<C> {
    pub fn new(
        keys: Arc<KeySet>,
        kind: TokenKind,
        issuer: impl Into<String>,
        capacity: usize,
    ) -> Self {
        Self {
            keys,
            kind,
            issuer: issuer.into(),
            cache: RwLock::new(HashMap::new()),
            capacity,
        }
    }

    /// The key set this verifier trusts.
    pub fn keys(&self) -> &Arc<KeySet> {
        &self.keys
    }

    /// Verifies `token` at `now`. `audience` is checked on every call (hit or miss): a token
    /// for policy A presented on policy B is refused even when A's verification is cached.
    pub fn verify(
        &self,
        token: &str,
        audience: Option<&str>,
        now: u64,
    ) -> Result<Arc<C>, TokenError>
    where
        C: HasAudience,
    {
        let claims = self.verify_allowing_expiry(token, audience, now)?;
        check_lifetime(claims.as_ref(), now)?;
        Ok(claims)
    }

    /// Verifies `token` like [`Verifier::verify`], except that an expired token is returned
    /// rather than refused: the caller decides whether the session behind it may be renewed.
    pub fn verify_allowing_expiry(
        &self,
        token: &str,
        audience: Option<&str>,
        now: u64,
    ) -> Result<Arc<C>, TokenError>
    where
        C: HasAudience,
    {
        let cached = self
            .cache
            .read()
            .ok()
            .and_then(|cache| cache.get(token).cloned());
        let claims = match cached {
            Some(claims) => {
                check_issued(claims.as_ref(), now)?;
                claims
            }
            None => {
                let claims: Arc<C> = Arc::new(self.keys.verify_signature(
                    self.kind,
                    token,
                    &self.issuer,
                    None,
                    now,
                )?);
                if let Ok(mut cache) = self.cache.write() {
                    if cache.len() >= self.capacity {
                        cache.retain(|_, c| c.exp() > now);
                        if cache.len() >= self.capacity {
                            cache.clear();
                        }
                    }
                    cache.insert(Arc::from(token), claims.clone());
                }
                claims
            }
        };
        if let Some(audience) = audience
            && claims.audience() != audience
        {
            return Err(TokenError::Audience);
        }
        Ok(claims)
    }

    /// Entries currently cached (for metrics).
    pub fn cached(&self) -> usize {
        self.cache.read().map(|c| c.len()).unwrap_or(0)
    }
}
