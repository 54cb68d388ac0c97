//! Serving protected requests after the access check: as a reverse proxy
//! ([`proxy_mode`]), as a forward-auth endpoint for ingress controllers ([`forward_auth`]), and
//! the session endpoint apps call ([`session_endpoint`]).

pub mod forward_auth;
pub mod proxy_mode;
pub mod refusal;
pub mod session_endpoint;
