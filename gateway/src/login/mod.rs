//! Logging in and out: the central auth host (OIDC with PKCE, state and nonce; single sign-on;
//! JWKS), the app host's hand-off, the browser binding that stops login CSRF, and logout.

pub(crate) mod auth_host;
pub(crate) mod backchannel;
pub mod bind;
pub mod bounce;
pub(crate) mod handoff;
pub(crate) mod logout;
pub(crate) mod rp_logout;
