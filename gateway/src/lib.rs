//! The Portcullis gateway: the central auth host (OIDC login, single sign-on, JWKS) and the
//! protected apps (reverse proxy and forward-auth), enforcing the access state in memory.
//!
//! Request path, in named phases (see `docs/architecture.md`): [`app`] dispatches by host and
//! path → [`check`] canonicalizes, authenticates and authorizes (the one place every decision
//! is made) → [`proxy`] rewrites and forwards, or [`forward_auth`] answers the ingress.

pub mod app;
pub mod auth_host;
pub mod bind;
pub mod check;
pub mod config;
pub mod cookies;
pub mod forward_auth;
pub mod gateway;
pub mod hex;
pub mod local_sessions;
pub mod logout;
pub mod metrics;
pub mod oidc;
pub mod operator_stream;
pub mod ops;
pub mod proxy;
pub mod refresh;
pub mod respond;
pub mod seal;
pub mod session_api;
pub mod session_index;
pub mod sessions;
pub use portcullis_runtime::{server, shutdown};
pub mod source;
pub mod state;
pub mod tokens;
