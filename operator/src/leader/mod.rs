//! What only matters between replicas: the Lease election that picks the one replica that
//! writes ([`election`], reading the Lease [`record`]), and the relay of what each follower's
//! gateways enforce to that leader ([`relay`]: the facts; [`follower`]: sending them;
//! [`peer`]: receiving them).

pub mod election;
pub mod follower;
pub mod peer;
pub mod record;
pub mod relay;

pub use election::{Election, LeaseConfig};
pub use peer::Peers;
