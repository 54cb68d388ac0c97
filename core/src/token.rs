//! Signed tokens: minting, verification, the published key set, and the cache that makes
//! "verify on every request" cost a hash-map lookup instead of a signature check.
//!
//! Every token kind has its own `typ` header and its own validation, so no token is ever
//! accepted in place of another (RFC 8725 §3.11): an app token is not an SSO token, an assertion
//! for upstreams is not an app token. Only the algorithms of our own keys are accepted (ES256),
//! chosen by the key, never by the token's header.

mod keys;
mod verifier;

pub use keys::KeySet;
pub use verifier::{Verified, Verifier};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

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
    /// Every kind, so metrics can show each at zero before it first happens. A new variant
    /// fails to compile in `category` until it has a label; add it here too (the test
    /// `every_token_error_is_listed` counts them).
    pub const ALL: [Self; 10] = [
        Self::Malformed,
        Self::WrongType,
        Self::Algorithm,
        Self::UnknownKey,
        Self::Signature,
        Self::Expired,
        Self::NotYetValid,
        Self::Audience,
        Self::Issuer,
        Self::TooLarge,
    ];

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

/// Claims that name one audience.
pub trait HasAudience {
    fn audience(&self) -> &str;
}

impl HasAudience for AppClaims {
    fn audience(&self) -> &str {
        &self.aud
    }
}

/// Refuses claims issued in the future, beyond the clock skew.
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

#[cfg(test)]
mod listing_tests {
    use super::TokenError;

    /// `ALL` holds each kind once; with the exhaustive `match` in `category`, a kind missing
    /// from it shows up as a label missing here.
    #[test]
    fn every_token_error_is_listed() {
        let labels: std::collections::BTreeSet<&str> =
            TokenError::ALL.iter().map(TokenError::category).collect();
        assert_eq!(labels.len(), TokenError::ALL.len());
        let guard = |e: TokenError| match e {
            TokenError::Malformed
            | TokenError::WrongType
            | TokenError::Algorithm
            | TokenError::UnknownKey
            | TokenError::Signature
            | TokenError::Expired
            | TokenError::NotYetValid
            | TokenError::Audience
            | TokenError::Issuer
            | TokenError::TooLarge => 10,
        };
        assert_eq!(guard(TokenError::Malformed), TokenError::ALL.len());
    }
}
