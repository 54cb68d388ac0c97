//! Signed tokens: minting, verification, the published key set, and the cache that makes
//! "verify on every request" cost a hash-map lookup instead of a signature check.
//!
//! Every token kind has its own `typ` header and its own validation, so no token is ever
//! accepted in place of another (RFC 8725 §3.11): an app token is not an SSO token, an assertion
//! for upstreams is not an app token. Only the algorithms of our own keys are accepted (ES256),
//! chosen by the key, never by the token's header.

use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation,
    jwk::{Jwk, JwkSet, ThumbprintHash},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

/// Clock skew tolerated on `iat` and `exp` between gateway replicas, in seconds.
pub const CLOCK_SKEW_SECS: u64 = 30;

/// The kinds of token Portcullis signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Per-app cookie: proves a session to one policy's hosts.
    App,
    /// The auth host's single-sign-on cookie.
    Sso,
    /// The one-time hand-off from the auth host to an app host after login or a bounce.
    Handoff,
    /// The identity assertion sent to upstream apps (`Portcullis-Jwt-Assertion`).
    Assertion,
    /// A pending login (state, nonce, PKCE verifier), held by the browser between the redirect
    /// to the identity provider and the callback.
    Login,
}

impl TokenKind {
    /// The `typ` header of this kind.
    pub fn typ(self) -> &'static str {
        match self {
            Self::App => "portcullis-app+jwt",
            Self::Sso => "portcullis-sso+jwt",
            Self::Handoff => "portcullis-handoff+jwt",
            Self::Assertion => "portcullis-assertion+jwt",
            Self::Login => "portcullis-login+jwt",
        }
    }
}

/// Why a token was refused. Callers map every variant to "not logged in" (or 401); the variant
/// is for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("wrong token type")]
    WrongType,
    #[error("algorithm not allowed")]
    Algorithm,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("bad signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token issued in the future")]
    NotYetValid,
    #[error("wrong audience")]
    Audience,
    #[error("wrong issuer")]
    Issuer,
    #[error("token too large")]
    TooLarge,
}

impl TokenError {
    /// A bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::WrongType => "wrong_type",
            Self::Algorithm => "algorithm",
            Self::UnknownKey => "unknown_key",
            Self::Signature => "signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Audience => "audience",
            Self::Issuer => "issuer",
            Self::TooLarge => "too_large",
        }
    }
}

/// Why a signing key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PKCS#8 P-256 private key in PEM: {0}")]
    Pem(jsonwebtoken::errors::Error),
    #[error("cannot derive the public key: {0}")]
    Public(jsonwebtoken::errors::Error),
    #[error("signing failed: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

/// Largest token accepted; a cookie is at most 4 KiB anyway.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Claims every kind shares.
pub trait Claims: Serialize + DeserializeOwned + Send + Sync + 'static {
    fn exp(&self) -> u64;
    fn iat(&self) -> u64;
}

/// The claims of an app token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppClaims {
    pub iss: String,
    /// The policy (`namespace/name`) the token is good for.
    pub aud: String,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Claims that policy `claim` selectors test.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub ext: serde_json::Map<String, serde_json::Value>,
    /// The session (AccessSession name).
    pub sid: String,
    /// The identity provider the session logged in with.
    pub idp: String,
    /// The policy's revocation epoch when the token was minted.
    pub epoch: u64,
    pub iat: u64,
    pub exp: u64,
    /// When the user authenticated at the identity provider.
    pub auth_time: u64,
    /// When the login (the SSO session and its `AccessSession`) ends; no app session outlives
    /// it, whatever the policy's absolute lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sexp: Option<u64>,
    /// The uid of the policy object the token was minted for (cluster mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub puid: Option<String>,
}

impl Claims for AppClaims {
    fn exp(&self) -> u64 {
        self.exp
    }
    fn iat(&self) -> u64 {
        self.iat
    }
}

impl AppClaims {
    /// The identity these claims describe.
    pub fn identity(&self) -> crate::identity::Identity {
        crate::identity::Identity {
            subject: self.sub.clone(),
            email: self.email.clone(),
            groups: self.groups.clone(),
            claims: self.ext.clone(),
        }
    }
}

/// One ES256 key pair.
struct KeyPair {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Jwk,
}

impl KeyPair {
    fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let encoding = EncodingKey::from_ec_pem(pem).map_err(KeyError::Pem)?;
        let mut jwk =
            Jwk::from_encoding_key(&encoding, Algorithm::ES256).map_err(KeyError::Public)?;
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(KeyError::Public)?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        let decoding = DecodingKey::from_jwk(&jwk).map_err(KeyError::Public)?;
        Ok(Self {
            kid,
            encoding,
            decoding,
            jwk,
        })
    }
}

/// The gateway's signing keys: it signs with `current`, publishes `current` and `next` (so
/// verifiers know the next key before it is used) and still accepts `previous` (so a rotation
/// logs nobody out).
pub struct KeySet {
    current: KeyPair,
    others: Vec<KeyPair>,
    jwks: JwkSet,
}

impl KeySet {
    /// Loads the keys from PKCS#8 PEM.
    pub fn from_pems(
        current: &[u8],
        next: Option<&[u8]>,
        previous: &[&[u8]],
    ) -> Result<Self, KeyError> {
        let current = KeyPair::from_pem(current)?;
        let mut others = Vec::new();
        let mut published = vec![current.jwk.clone()];
        if let Some(next) = next {
            let next = KeyPair::from_pem(next)?;
            published.push(next.jwk.clone());
            others.push(next);
        }
        for pem in previous {
            let key = KeyPair::from_pem(pem)?;
            published.push(key.jwk.clone());
            others.push(key);
        }
        others.retain(|k| k.kid != current.kid);
        published.dedup_by(|a, b| a.common.key_id == b.common.key_id);
        Ok(Self {
            current,
            others,
            jwks: JwkSet { keys: published },
        })
    }

    /// The key id new tokens are signed with.
    pub fn current_kid(&self) -> &str {
        &self.current.kid
    }

    /// The public keys, for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// Signs claims as a token of `kind`.
    pub fn sign<C: Serialize>(&self, kind: TokenKind, claims: &C) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some(kind.typ().to_owned());
        header.kid = Some(self.current.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.current.encoding).map_err(KeyError::Sign)
    }

    fn decoding_key(&self, kid: &str) -> Option<&DecodingKey> {
        if self.current.kid == kid {
            return Some(&self.current.decoding);
        }
        self.others
            .iter()
            .find(|k| k.kid == kid)
            .map(|k| &k.decoding)
    }

    /// Verifies signature, type, issuer and audience of a token of `kind`, and that it is
    /// within its lifetime at `now` (unix seconds). Costs a signature check: callers on the
    /// request path go through [`Verifier`].
    pub fn verify<C: Claims>(
        &self,
        kind: TokenKind,
        token: &str,
        issuer: &str,
        audience: Option<&str>,
        now: u64,
    ) -> Result<C, TokenError> {
        let claims = self.verify_signature::<C>(kind, token, issuer, audience, now)?;
        check_lifetime(&claims, now)?;
        Ok(claims)
    }

    /// Like [`KeySet::verify`] but accepts an expired token (never one issued in the future):
    /// for renewing the token of a session that is still alive.
    pub fn verify_signature<C: Claims>(
        &self,
        kind: TokenKind,
        token: &str,
        issuer: &str,
        audience: Option<&str>,
        now: u64,
    ) -> Result<C, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLarge);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.typ.as_deref() != Some(kind.typ()) {
            return Err(TokenError::WrongType);
        }
        if header.alg != Algorithm::ES256 {
            return Err(TokenError::Algorithm);
        }
        let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
        let key = self.decoding_key(kid).ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[issuer]);
        match audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&["exp", "iat", "iss"]);
        // Expiry is checked below against the caller's clock, so cached and fresh
        // verifications agree exactly.
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<C>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => TokenError::Signature,
                ErrorKind::InvalidAudience => TokenError::Audience,
                ErrorKind::InvalidIssuer => TokenError::Issuer,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenError::Algorithm
                }
                _ => TokenError::Malformed,
            }
        })?;
        check_issued(&data.claims, now)?;
        Ok(data.claims)
    }
}

fn check_issued<C: Claims>(claims: &C, now: u64) -> Result<(), TokenError> {
    if claims.iat() > now + CLOCK_SKEW_SECS {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

fn check_lifetime<C: Claims>(claims: &C, now: u64) -> Result<(), TokenError> {
    check_issued(claims, now)?;
    if claims.exp() <= now {
        return Err(TokenError::Expired);
    }
    Ok(())
}

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

/// Claims that name one audience.
pub trait HasAudience {
    fn audience(&self) -> &str;
}

impl HasAudience for AppClaims {
    fn audience(&self) -> &str {
        &self.aud
    }
}
