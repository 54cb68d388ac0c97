//! The state stream gateways follow (the revocation path's last hop inside the operator):
//! `GET /v1/state` sends a snapshot or the deltas after the gateway's version, then deltas and
//! heartbeats as NDJSON; `POST /v1/ack` records what each gateway enforces ([`gateways`]).

pub mod api;
pub mod gateways;
pub mod refusal;

pub use api::{StreamState, router};
pub use gateways::Gateways;
pub use refusal::Refusal;
