//! The claims of the tokens only the gateway reads: the SSO session, the hand-off from the auth
//! host to an app host, a pending login, and the assertion sent to upstreams. App tokens are in
//! `portcullis_core::token`, since the operator and benchmarks share them.

use portcullis_core::token::{Claims, HasAudience};
use serde::{Deserialize, Serialize};

/// The auth host's session: who logged in, through which provider, when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SsoClaims {
    pub iss: String,
    /// Always the auth host's own URL.
    pub aud: String,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub ext: serde_json::Map<String, serde_json::Value>,
    pub sid: String,
    pub idp: String,
    pub auth_time: u64,
    pub iat: u64,
    pub exp: u64,
}

/// A one-time, 60-second ticket carrying a session from the auth host to one app host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HandoffClaims {
    pub iss: String,
    /// The policy (`namespace/name`) the app token will be for.
    pub aud: String,
    /// The app host the ticket may be redeemed on.
    pub host: String,
    /// Where to send the browser afterwards: a path (and query) on `host`.
    pub rd: String,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub ext: serde_json::Map<String, serde_json::Value>,
    pub sid: String,
    pub idp: String,
    pub auth_time: u64,
    /// When the login ends (the SSO session's `exp`).
    pub sexp: u64,
    /// Digest of the binding nonce of the browser that started the login.
    pub bind: String,
    /// Single use: redeemed tickets are remembered until they expire.
    pub jti: String,
    pub iat: u64,
    pub exp: u64,
}

/// A login in flight, kept by the browser in a `__Host-portcullis-login-*` cookie.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoginClaims {
    pub iss: String,
    pub aud: String,
    /// The `state` sent to the identity provider.
    pub state: String,
    pub nonce: String,
    /// PKCE code verifier.
    pub pkce: String,
    pub idp: String,
    /// The validated return URL.
    pub rd: String,
    /// Digest of the binding nonce of the browser that started the login on the app host.
    pub bind: String,
    /// When re-authentication was forced: the earliest acceptable `auth_time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<u64>,
    /// The session id this login will have, chosen when it starts: its `AccessSession` is
    /// created under this name, so one login state yields at most one session on every replica
    /// (a second callback with the same state finds the name taken). Absent only in login
    /// cookies issued before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    pub iat: u64,
    pub exp: u64,
}

/// The identity the gateway vouches for to an upstream (`Portcullis-Jwt-Assertion`); apps
/// verify it with the JWKS at `https://<auth host>/.well-known/jwks.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssertionClaims {
    pub iss: String,
    /// The app host the request was for.
    pub aud: String,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    pub sid: String,
    /// The policy that allowed the request.
    pub policy: String,
    pub iat: u64,
    pub exp: u64,
}

macro_rules! claims {
    ($($t:ty),*) => {$(
        impl Claims for $t {
            fn exp(&self) -> u64 { self.exp }
            fn iat(&self) -> u64 { self.iat }
        }
        impl HasAudience for $t {
            fn audience(&self) -> &str { &self.aud }
        }
    )*};
}
claims!(SsoClaims, HandoffClaims, LoginClaims, AssertionClaims);
