//! Portcullis domain logic, with no Kubernetes client and no HTTP server in it: request-path
//! and host canonicalization, strict email parsing, policies compiled from `AccessPolicy`
//! manifests and their rule evaluation, the route table, which namespace may claim which host
//! ([`tenancy`]), and signed tokens with their verification cache.
//!
//! Everything here is synchronous and pure (time is an argument), so the gateway's request path
//! and the operator share one definition of every decision and the tests need no clock.

pub mod email;
pub mod host;
pub mod identity;
pub mod path;
pub mod policy;
pub mod routes;
pub mod session;
pub mod tenancy;
pub mod token;
mod unicode;

pub use email::{EmailAddress, EmailError};
pub use host::{Host, HostError};
pub use identity::Identity;
pub use path::{CanonicalPath, PathError};
pub use policy::{
    BearerRule, BearerToken, Decision, Judgement, Policy, PolicyError, PolicyId, PolicyMeta,
    PolicySource, RequestFacts, Unknown,
};
pub use routes::{InvalidPolicy, Route, RouteTable};
