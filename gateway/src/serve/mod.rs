//! Serving protected requests after the access check: as a reverse proxy
//! ([`proxy_mode`]), as a forward-auth endpoint for ingress controllers ([`forward_auth`]), and
//! the session endpoint apps call ([`session_endpoint`]).

pub(crate) mod forward_auth;
pub(crate) mod proxy_mode;
pub(crate) mod refusal;
pub(crate) mod session_endpoint;
