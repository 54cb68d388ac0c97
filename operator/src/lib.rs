//! The Portcullis operator: an index of the access state fed by watches, streamed to every
//! gateway (snapshot, then ordered deltas and heartbeats), and, on the Lease holder, the status
//! that proves what the fleet enforces.

pub mod api;
pub mod auth;
pub mod config;
pub mod fleet;
pub mod gc;
pub mod index;
pub mod lease;
pub mod metrics;
pub mod ops;
pub mod peer;
pub mod relay;
pub mod shared;
pub use portcullis_runtime::{server, shutdown};
pub mod status;
pub mod validate;
pub mod watch;
pub mod writer;
