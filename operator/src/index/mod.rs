//! The access state this replica streams to gateways: a synchronous index fed by the watches
//! (`apply` / `delete` / `reset` per kind), turning every change into a delta with the next
//! version, kept in a bounded log so that a reconnecting gateway resumes instead of reloading.
//!
//! Sessions are merged by the one session rule ([`portcullis_protocol::session`]); a deleted
//! (or vanished) session that has not expired stays in the index as ended until its expiry plus
//! clock skew, so snapshots carry it.
//!
//! Only policies whose namespace may claim their hosts are streamed ([`hosts`]): a refused claim
//! never reaches a gateway, and its status says why.
//!
//! The index itself is synchronous and pure ([`policies`], [`hosts`], [`secrets`],
//! [`sessions`]); the
//! watches ([`watch`]) feed it through [`shared::SharedIndex`], which wakes the streams.

mod hosts;
pub mod log;
mod notices;
mod policies;
pub mod revoked_by;
mod secrets;
mod sessions;
pub mod shared;
pub mod watch;

pub use notices::Notice;
pub use revoked_by::RevokedBy;
pub use secrets::{SecretScope, Unreadable};
pub use shared::{SharedIndex, Watched};

use policies::{Sent, Stored};
use portcullis_core::tenancy::{HostGrant, Labels, Refusal, Unclaimed};
use portcullis_crds::{AccessPolicyStatus, AccessSessionStatus};
use portcullis_protocol::AppliedPolicy;
use portcullis_protocol::{Frame, PolicyEntry};
use sessions::Session;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// (namespace, name).
pub type Key = (String, String);

/// The index. Not thread-safe by itself: the operator holds it in a mutex.
#[derive(Debug)]
pub struct Index {
    instance: String,
    version: u64,
    /// The newest deltas, rendered once for every stream.
    log: log::DeltaLog,
    /// Every AccessPolicy, streamed or not.
    policies: BTreeMap<Key, Stored>,
    /// The policies that may not claim their hosts (never streamed), and why.
    refused: BTreeMap<Key, Refusal>,
    /// Every AccessHost, by name.
    host_grants: BTreeMap<String, HostGrant>,
    /// Labels of every namespace, for selector grants.
    namespace_labels: BTreeMap<String, Labels>,
    /// What happens to hosts no AccessHost covers.
    unclaimed: Unclaimed,
    /// First time this replica saw each (uid, epoch), when the status does not record it.
    epoch_seen: HashMap<(String, i64), u64>,
    /// Data of every Secret in the cluster that some policy may reference, by key.
    secrets: BTreeMap<Key, BTreeMap<String, String>>,
    /// Which namespaces' Secrets the operator reads, and which of them it is refused.
    secret_scope: SecretScope,
    /// Secrets currently streamed (referenced by a policy and present).
    streamed_secrets: BTreeSet<Key>,
    sessions: HashMap<String, Session>,
    /// Ended sessions by the version that ended them, so "what did a gateway that acknowledged
    /// version b newly enforce since a" is a range, not a scan of every session.
    ended_log: BTreeMap<u64, String>,
    /// AccessSessions that still exist although the index forgot them (past expiry plus skew),
    /// with their expiry: what session garbage collection deletes, found without listing every
    /// session.
    lingering: HashMap<String, u64>,
    /// The status each policy carries now (by uid), as the watch last delivered it: the
    /// status writer compares against it, so it writes only what changed, and keeps first-seen
    /// times (`epochRaisedAt`) across leader changes.
    policy_status: HashMap<String, AccessPolicyStatus>,
    /// The status of every existing revoked session (without `refresh`, which the gateways
    /// own); only revoked sessions get a status from the operator.
    revoked_status: HashMap<String, AccessSessionStatus>,
    /// Who revoked each existing revoked session, as the API server records it.
    revoked_by: HashMap<String, RevokedBy>,
    /// Logins and failing refreshes, for the leader's Events.
    notices: notices::Notices,
}

impl Index {
    pub fn new(instance: String, log_capacity: usize) -> Self {
        Self {
            instance,
            version: 0,
            log: log::DeltaLog::new(log_capacity),
            policies: BTreeMap::new(),
            refused: BTreeMap::new(),
            host_grants: BTreeMap::new(),
            namespace_labels: BTreeMap::new(),
            unclaimed: Unclaimed::default(),
            epoch_seen: HashMap::new(),
            secrets: BTreeMap::new(),
            secret_scope: SecretScope::default(),
            streamed_secrets: BTreeSet::new(),
            sessions: HashMap::new(),
            ended_log: BTreeMap::new(),
            lingering: HashMap::new(),
            policy_status: HashMap::new(),
            revoked_status: HashMap::new(),
            revoked_by: HashMap::new(),
            notices: notices::Notices::default(),
        }
    }

    /// What happens to hosts no AccessHost covers (first claim by default).
    pub fn with_unclaimed(mut self, unclaimed: Unclaimed) -> Self {
        self.unclaimed = unclaimed;
        self
    }

    /// The status a policy carries now.
    pub fn policy_status(&self, uid: &str) -> Option<&AccessPolicyStatus> {
        self.policy_status.get(uid)
    }

    /// Existing revoked sessions and the status they carry now (`refresh` left out).
    pub fn revoked_sessions(&self) -> impl Iterator<Item = (&str, &AccessSessionStatus)> {
        self.revoked_status.iter().map(|(sid, s)| (sid.as_str(), s))
    }

    /// Who revoked session `sid`, if it exists and is revoked.
    pub fn revoked_by(&self, sid: &str) -> Option<&RevokedBy> {
        self.revoked_by.get(sid)
    }

    /// The notices raised since the last call (see [`notices`]).
    pub fn take_notices(&mut self) -> Vec<Notice> {
        self.notices.take()
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// The whole state now.
    pub fn snapshot(&self) -> Frame {
        Frame::Snapshot {
            instance: self.instance.clone(),
            version: self.version,
            policies: self.streamed_policies().cloned().collect(),
            secrets: self
                .streamed_secrets
                .iter()
                .filter_map(|key| self.secret_entry(key))
                .collect(),
            sessions: self
                .sessions
                .iter()
                .map(|(sid, s)| s.to_entry(sid))
                .collect(),
        }
    }

    /// The deltas after `version`, rendered, if the log still holds all of them.
    pub fn lines_since(&self, version: u64) -> Option<Vec<log::Line>> {
        self.log.since(version, self.version)
    }

    /// The deltas after `version` as frames (parsed back from the lines every stream sends).
    #[cfg(test)]
    pub fn deltas_since(&self, version: u64) -> Option<Vec<Frame>> {
        let lines = self.lines_since(version)?;
        Some(
            lines
                .iter()
                .map(|l| serde_json::from_slice(&l.bytes).expect("a rendered frame parses"))
                .collect(),
        )
    }

    /// Policy facts a gateway gained by acknowledging `upto` after `after` (everything up to
    /// `upto` when `after` is `None`): uid → (generation, epoch) of each policy whose current
    /// form is in that range.
    pub fn policy_facts(&self, after: Option<u64>, upto: u64) -> BTreeMap<String, AppliedPolicy> {
        let newer = |v: u64| after.is_none_or(|a| v > a) && v <= upto;
        self.policies
            .values()
            .filter(|s| s.sent == Sent::Current && newer(s.version))
            .map(|Stored { entry: p, .. }| {
                (
                    p.uid.clone(),
                    AppliedPolicy {
                        generation: p.generation,
                        epoch: p.spec.revocation_epoch,
                    },
                )
            })
            .collect()
    }

    /// Sessions ended after version `after` (from the start when `None`) up to `upto`: what a
    /// gateway that acknowledged `upto` newly enforces. Sessions already forgotten (expired) are
    /// not listed.
    pub fn ended_between(&self, after: Option<u64>, upto: u64) -> impl Iterator<Item = &str> {
        let from = after.map_or(0, |a| a.saturating_add(1));
        let range = if from <= upto {
            Some(self.ended_log.range(from..=upto))
        } else {
            None
        };
        range.into_iter().flatten().map(|(_, sid)| sid.as_str())
    }

    /// Version at which session `sid` was ended.
    pub fn session_ended_at(&self, sid: &str) -> Option<u64> {
        self.sessions.get(sid).and_then(|s| s.ended_at)
    }

    /// Every policy, streamed or refused.
    pub fn policies(&self) -> impl Iterator<Item = &PolicyEntry> {
        self.policies.values().map(|s| &s.entry)
    }

    /// The policies the gateways hold: every one whose hosts its namespace may claim.
    pub fn streamed_policies(&self) -> impl Iterator<Item = &PolicyEntry> {
        self.policies
            .iter()
            .filter(|(key, _)| !self.refused.contains_key(*key))
            .map(|(_, s)| &s.entry)
    }

    fn push(&mut self, frame: impl FnOnce(u64) -> Frame) -> u64 {
        self.version += 1;
        self.log.push(&frame(self.version));
        self.version
    }
}

#[cfg(test)]
mod tests;
