//! The Portcullis operator. A revocation travels through it along its folders: an
//! `AccessSession` patch arrives through a watch into the [`index`] (merged by the one session
//! rule of `portcullis_protocol`), becomes a delta on the [`stream`] every gateway follows, and
//! the gateways' acknowledgements come back into the [`status`] the [`leader`] writes (with
//! what followers relay to it).
//!
//! Besides: [`config`] (flags), [`startup`] (wiring and shutdown order), [`auth`] (who may
//! call), [`session_gc`] (deleting expired AccessSessions), [`ops`], [`metrics`], [`clock`].

pub(crate) mod auth;
pub(crate) mod clock;
pub mod config;
pub(crate) mod index;
pub(crate) mod leader;
pub(crate) mod metrics;
pub(crate) mod ops;
pub(crate) mod session_gc;
pub mod startup;
pub(crate) mod status;
pub(crate) mod stream;
