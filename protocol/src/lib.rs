//! The state stream between the Portcullis operator and its gateways: the frames on the wire
//! ([`frame`]) and the gateway's monotonic merge of them ([`merge`]).
//!
//! This crate has no HTTP and no Kubernetes client in it, so both ends and the tests share one
//! definition of the protocol and of what "never un-revoke" means.

pub mod frame;
pub mod merge;

pub use frame::SessionIdentity;
pub use frame::{
    Ack, ErrorBody, Frame, GatewayFacts, PeerAcks, PolicyEntry, ProtocolError, SecretEntry,
    SessionEntry,
};
pub use merge::{Applied, FleetState, MergeError, MergedSession, Sessions};

#[cfg(test)]
mod tests;
