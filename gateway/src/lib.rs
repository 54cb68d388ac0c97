//! The Portcullis gateway: the central auth host (OIDC login, single sign-on, JWKS) and the
//! protected apps (reverse proxy and forward-auth), enforcing the access state in memory.
//!
//! Modules are layered, top to bottom; none imports a layer above it (`tests/tests/structure.rs`
//! checks both that and that no modules import each other in a circle):
//!
//! - [`startup`]: all the wiring, from configuration to running servers;
//! - [`router`] and [`ops`]: the HTTP surface, dispatching by host and path;
//! - [`serve`] (proxy mode, forward-auth, the session endpoint) and [`login`] (auth host,
//!   hand-off, logout);
//! - [`access`]: the one per-request check every protected request goes through;
//! - [`gateway`]: the shared handle the handlers work with;
//! - [`sessions`] (session records, their stores, background refresh) and [`state`] (the access
//!   snapshot and session index, and the sources that feed them);
//! - [`idp`], [`http`], [`tokens`], [`signing`], [`cookies`], [`metrics`], [`proxy`],
//!   [`clock`], [`settings`], [`config`], [`rate_limit`]: building blocks that know nothing of
//!   the layers above.
//!
//! A request's path through them is tabled in `docs/architecture.md`.

pub mod access;
pub mod access_log;
pub mod audit;
pub mod clock;
pub mod config;
pub mod cookies;
pub mod gateway;
pub(crate) mod hex;
pub mod http;
pub(crate) mod identity_cache;
pub mod idp;
pub mod login;
pub mod metrics;
pub(crate) mod ops;
pub mod proxy;
pub mod rate_limit;
pub mod router;
pub(crate) mod serve;
pub mod sessions;
pub mod settings;
pub mod signing;
pub mod startup;
pub mod state;
pub mod tokens;
pub use portcullis_runtime::{server, shutdown};
