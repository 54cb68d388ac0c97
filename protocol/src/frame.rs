//! What travels on `GET /v1/state` (one JSON [`Frame`] per line) and `POST /v1/ack`.

use portcullis_core::{PolicyMeta, PolicySource};
use portcullis_crds::AccessPolicySpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Path of the state stream.
pub const STATE_PATH: &str = "/v1/state";
/// Path gateways acknowledge applied versions on.
pub const ACK_PATH: &str = "/v1/ack";
/// Path followers relay acknowledged facts to the leader on.
pub const PEER_ACKS_PATH: &str = "/v1/peer/acks";
/// Header naming the gateway on every request.
pub const GATEWAY_ID_HEADER: &str = "portcullis-gateway-id";
/// Media type of the stream.
pub const NDJSON: &str = "application/x-ndjson";
/// How often an idle stream carries a heartbeat.
pub const HEARTBEAT_SECS: u64 = 5;
/// How long a stream client waits after applying a version before acknowledging, taking
/// whatever it applied meanwhile into the same acknowledgement (the gateway's `ack` module says
/// why). Far below what the operator's status counts resolve (seconds).
pub const ACK_COALESCE_MS: u64 = 100;

/// One line of the stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Frame {
    /// The whole state of the replica `instance` at `version`.
    #[serde(rename_all = "camelCase")]
    Snapshot {
        instance: String,
        version: u64,
        policies: Vec<PolicyEntry>,
        secrets: Vec<SecretEntry>,
        sessions: Vec<SessionEntry>,
    },
    /// A policy was added or changed.
    Policy {
        version: u64,
        policy: Box<PolicyEntry>,
    },
    /// A policy was deleted, or (`withdrawn`) still exists but is no longer enforced: its
    /// namespace may not claim its hosts (see `portcullis_core::tenancy`).
    #[serde(rename_all = "camelCase")]
    PolicyRemoved {
        version: u64,
        namespace: String,
        name: String,
        uid: String,
        /// The object still exists and may be streamed again (ownership of its hosts can move
        /// back), so its uid is not tombstoned. Absent on the wire for a deletion.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        withdrawn: bool,
    },
    /// A referenced Secret was added or changed.
    Secret { version: u64, secret: SecretEntry },
    /// A Secret is deleted or no longer referenced.
    #[serde(rename_all = "camelCase")]
    SecretRemoved {
        version: u64,
        namespace: String,
        name: String,
    },
    /// A session was recorded, changed, revoked or deleted.
    Session { version: u64, session: SessionEntry },
    /// Nothing changed; proves the stream is alive and the state current.
    #[serde(rename_all = "camelCase")]
    Heartbeat { version: u64, sent_at: u64 },
}

impl Frame {
    /// The version this frame brings the receiver to.
    pub fn version(&self) -> u64 {
        match self {
            Frame::Snapshot { version, .. }
            | Frame::Policy { version, .. }
            | Frame::PolicyRemoved { version, .. }
            | Frame::Secret { version, .. }
            | Frame::SecretRemoved { version, .. }
            | Frame::Session { version, .. }
            | Frame::Heartbeat { version, .. } => *version,
        }
    }

    /// Frame kind for logs and metric labels (a bounded set).
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Snapshot { .. } => "snapshot",
            Frame::Policy { .. } => "policy",
            Frame::PolicyRemoved { .. } => "policyRemoved",
            Frame::Secret { .. } => "secret",
            Frame::SecretRemoved { .. } => "secretRemoved",
            Frame::Session { .. } => "session",
            Frame::Heartbeat { .. } => "heartbeat",
        }
    }
}

/// One `AccessPolicy` as gateways need it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyEntry {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub generation: i64,
    pub spec: AccessPolicySpec,
    /// When (unix seconds) the operator first saw the current `revocationEpoch`; 0 for epoch 0.
    /// Persisted in `status.epochRaisedAt`, so every replica and restart agrees.
    pub epoch_raised_at: u64,
}

/// A stream entry compiles like the object it was read from: same metadata, same spec.
impl PolicySource for PolicyEntry {
    fn namespace(&self) -> Option<&str> {
        Some(&self.namespace)
    }

    fn name(&self) -> Option<&str> {
        Some(&self.name)
    }

    fn spec(&self) -> &AccessPolicySpec {
        &self.spec
    }

    fn meta(&self) -> Option<PolicyMeta> {
        Some(PolicyMeta {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: Some(self.uid.clone()),
            generation: Some(self.generation),
        })
    }
}

/// A Secret referenced by a policy (service-token credentials).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretEntry {
    pub namespace: String,
    pub name: String,
    /// Values, base64 as in the Secret's `data`.
    pub data: BTreeMap<String, String>,
}

/// One `AccessSession` as gateways need it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionEntry {
    /// The object name, the `sid` of its tokens.
    pub sid: String,
    pub subject: String,
    /// Absolute expiry, unix seconds.
    pub expires_at: u64,
    /// Revoked, or deleted before its expiry.
    pub ended: bool,
    /// Since when (unix seconds) refreshing the session at its identity provider fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_failing_since: Option<u64>,
    /// When (unix seconds) the identity provider last confirmed the session
    /// (`status.refresh.lastRefreshedAt`): what tells a recovery from an observation older than
    /// the failure (the session merge rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshed_at: Option<u64>,
    /// Email as last confirmed by the identity provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Groups as last confirmed by the identity provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// A session's current email and groups: re-read from the identity provider at every refresh
/// (not only at login), so gateways judge requests by them rather than by what a token carried.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionIdentity {
    pub email: Option<String>,
    pub groups: Vec<String>,
}

/// Body of `POST /v1/ack`: the gateway enforces `version` of replica `instance`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub instance: String,
    pub version: u64,
}

/// Body of `POST /v1/peer/acks`: what the gateways connected to a follower enforce, as facts
/// about objects (versions mean nothing across replicas).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAcks {
    /// The relaying replica.
    pub replica: String,
    pub gateways: Vec<GatewayFacts>,
}

/// What one gateway enforces.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayFacts {
    pub gateway: String,
    /// Unix seconds of the gateway's last ack.
    pub acked_at: u64,
    /// Policy uid → the generation and epoch enforced.
    pub policies: BTreeMap<String, AppliedPolicy>,
    /// Session ids whose end the gateway enforces.
    pub ended_sessions: Vec<String>,
}

/// What a gateway enforces of one policy: the generation it applied and the revocation epoch
/// in force. Ordered by generation, then epoch, so the maximum of two is the newer. On the wire
/// a `[generation, epoch]` pair, as before it had a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "(i64, i64)", into = "(i64, i64)")]
pub struct AppliedPolicy {
    pub generation: i64,
    pub epoch: i64,
}

impl From<(i64, i64)> for AppliedPolicy {
    fn from((generation, epoch): (i64, i64)) -> Self {
        Self { generation, epoch }
    }
}

impl From<AppliedPolicy> for (i64, i64) {
    fn from(applied: AppliedPolicy) -> Self {
        (applied.generation, applied.epoch)
    }
}

/// A JSON error body of the stream API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

/// Why a line of the stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Parses one line of the stream.
pub fn parse_line(line: &[u8]) -> Result<Frame, ProtocolError> {
    Ok(serde_json::from_slice(line)?)
}

/// Renders a frame as one line (with its `\n`).
pub fn render_line(frame: &Frame) -> Vec<u8> {
    // A frame is plain data (strings, numbers, maps with string keys): serializing cannot fail.
    let mut line = serde_json::to_vec(frame).unwrap_or_default();
    line.push(b'\n');
    line
}
