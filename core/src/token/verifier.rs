//! The verification cache: "verify on every request" at the cost of a hash-map lookup.

use super::{Claims, HasAudience, KeySet, TokenError, TokenKind, check_issued, check_lifetime};
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

/// A token whose signature was checked, as the cache holds it: the token itself (shared, so a
/// caller that keeps it copies nothing), its claims, and a memo in which the caller keeps what
/// it derives from this exact token. The memo lives and dies with the cache entry, so what it
/// holds is reached by the same single lookup and never outlives the key set that verified the
/// token.
pub struct Verified<C, M = ()> {
    token: Arc<str>,
    claims: Arc<C>,
    memo: M,
}

impl<C, M> Verified<C, M> {
    /// The token, exactly as verified.
    pub fn token(&self) -> &Arc<str> {
        &self.token
    }

    /// Its claims, as signed.
    pub fn claims(&self) -> &Arc<C> {
        &self.claims
    }

    /// The caller's memo for this token.
    pub fn memo(&self) -> &M {
        &self.memo
    }
}

/// Verified tokens by their text. Only tokens whose signature was checked are inserted, so a
/// client cannot choose the keys (it can only present them); a fast hash with a per-map random
/// seed then suffices.
type Cache<C, M> = HashMap<Arc<str>, Arc<Verified<C, M>>, foldhash::fast::RandomState>;

/// Verifies tokens of one kind for one audience-checking rule, remembering tokens whose
/// signature it already checked.
///
/// The cache is keyed on the whole token string, so a hit means "exactly these bytes were
/// verified against these keys": no input of the decision is left out. Only successes are
/// cached, expiry is re-checked on every hit, and the cache belongs to one [`KeySet`]: a new key
/// set (rotation, removal of a compromised key) starts with an empty cache. Revocation and
/// epochs are not the cache's business: the caller checks them on every request against the
/// live state.
pub struct Verifier<C, M = ()> {
    keys: Arc<KeySet>,
    kind: TokenKind,
    issuer: String,
    cache: RwLock<Cache<C, M>>,
    capacity: usize,
}

impl<C: Claims, M: Default> Verifier<C, M> {
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
            cache: RwLock::new(HashMap::default()),
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
        self.verified_allowing_expiry(token, audience, now)
            .map(|verified| verified.claims.clone())
    }

    /// [`Verifier::verify_allowing_expiry`], returning the cache's entry: the shared token, its
    /// claims and the caller's memo.
    pub fn verified_allowing_expiry(
        &self,
        token: &str,
        audience: Option<&str>,
        now: u64,
    ) -> Result<Arc<Verified<C, M>>, TokenError>
    where
        C: HasAudience,
    {
        let cached = self
            .cache
            .read()
            .ok()
            .and_then(|cache| cache.get(token).cloned());
        let verified = match cached {
            Some(verified) => {
                check_issued(verified.claims.as_ref(), now)?;
                verified
            }
            None => self.verify_and_remember(token, now)?,
        };
        if let Some(audience) = audience
            && verified.claims.audience() != audience
        {
            return Err(TokenError::Audience);
        }
        Ok(verified)
    }

    /// Checks the signature of a token not in the cache, and remembers it when it holds.
    fn verify_and_remember(
        &self,
        token: &str,
        now: u64,
    ) -> Result<Arc<Verified<C, M>>, TokenError> {
        let claims = self
            .keys
            .verify_signature(self.kind, token, &self.issuer, None, now)?;
        let token: Arc<str> = Arc::from(token);
        let verified = Arc::new(Verified {
            token: token.clone(),
            claims: Arc::new(claims),
            memo: M::default(),
        });
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= self.capacity {
                cache.retain(|_, v| v.claims.exp() > now);
                if cache.len() >= self.capacity {
                    cache.clear();
                }
            }
            cache.insert(token, verified.clone());
        }
        Ok(verified)
    }

    /// Entries currently cached (for metrics).
    pub fn cached(&self) -> usize {
        self.cache.read().map(|c| c.len()).unwrap_or(0)
    }
}
