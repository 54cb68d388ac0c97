//! The state stream between the Portcullis operator and its gateways: the frames on the wire
//! ([`frame`]) and the lines they travel in ([`lines`]), the one monotonic merge rule of a
//! session ([`session`], used by the operator's index and by both of the gateway's session
//! feeds) and the gateway's merge of whole frames ([`merge`]).
//!
//! This crate has no HTTP and no Kubernetes client in it, so both ends and the tests share one
//! definition of the protocol and of what "never un-revoke" means.

pub mod frame;
pub mod lines;
pub mod merge;
pub mod session;

pub use frame::SessionIdentity;
pub use frame::{
    Ack, AppliedPolicy, ErrorBody, Frame, GatewayFacts, PeerAcks, PolicyEntry, ProtocolError,
    SecretEntry, SessionEntry,
};
pub use merge::{Applied, FleetState, MergeError};
pub use session::{MergedSession, Sessions};

#[cfg(test)]
mod tests;
