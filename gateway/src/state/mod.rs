//! The access state the gateway enforces: an immutable snapshot, replaced whole on every change
//! and read without locks on the request path.
//!
//! A snapshot is built from manifests (standalone mode: a directory; cluster mode: the
//! operator's stream). Until the first snapshot arrives the gateway is not ready and admits
//! nobody.
//!
//! [`build()`] compiles manifests into a snapshot, [`service_tokens`] reads and checks machine
//! credentials, [`epoch`] dates revocation epochs; [`directory`] and [`operator_stream`] are
//! the two sources, [`session_index`] the sessions the request path checks. In cluster mode
//! the stream, the API-server fallback ([`api_fallback`]) and sessions confirmed by the request
//! path all merge into one state ([`merger`]); [`feed`] says how fresh it is and which path it
//! follows.

pub mod api_fallback;
mod build;
pub mod directory;
pub mod epoch;
pub mod feed;
mod manifest;
pub mod merger;
pub mod operator_stream;
pub mod service_tokens;
pub mod session_index;
mod watch_backoff;

pub use build::build;
pub use manifest::{Metadata, SecretManifest};
pub use service_tokens::ServiceCredential;
use watch_backoff::Watch;

use portcullis_core::{Policy, PolicyId, RouteTable};
use std::{collections::HashMap, sync::Arc};

/// Everything one request needs to know about configuration.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases with every change this gateway applies.
    pub version: u64,
    pub routes: RouteTable,
    pub policies: HashMap<PolicyId, Arc<Policy>>,
    /// Service-token credentials per policy, by token name.
    pub service_tokens: HashMap<PolicyId, Vec<ServiceCredential>>,
    /// Manifests that could not be used, for logs and status.
    pub problems: Vec<String>,
    /// Per policy, since when (unix seconds) its current revocation epoch is in force: the auth
    /// host re-issues from an SSO session only if the user authenticated after it. Filled by
    /// the source, from what it knows of the raise times ([`epoch`]).
    pub epoch_since: HashMap<PolicyId, u64>,
}
