//! The leader's status pipeline, pure in the middle: [`validate`] what the schema cannot check,
//! [`compute`] the wanted status from the index, the verdict and what the gateways enforce
//! ([`enforced`]), and [`writer`] applies only what differs ([`plan`]: one write), with [`events`] for what changed;
//! [`session_events`] publishes the Events of logins and failing refreshes.

pub mod compute;
pub mod enforced;
pub mod events;
pub mod plan;
pub mod session_events;
pub mod validate;
pub mod writer;

pub use writer::{Sources, Writer};
