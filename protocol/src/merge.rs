//! The gateway's view of the fleet state: every frame from every operator replica merged
//! monotonically, so that no reordered, replayed or old frame can un-revoke anything.
//!
//! - Each session is merged by the one session rule of [`crate::session`]: an ended session
//!   stays ended, a changed subject ends it, expiry only moves earlier, and a refresh failure
//!   ends only with a confirmation later than its start (an older observation cannot clear it).
//! - A known, unexpired session missing from a new snapshot counts as ended (it was deleted
//!   while this gateway was away).
//! - Revocation epochs only go up per (namespace, name, uid); an older generation of a policy
//!   never replaces a newer one; a deleted policy's uid never comes back (uids are not reused).
//!   A policy withdrawn because its namespace may no longer claim its hosts is removed without
//!   that tombstone: the object exists, and a later frame may stream it again.
//! - Session entries are forgotten only after their absolute expiry plus clock skew.
//!
//! Policies and Secrets themselves are not monotonic (a policy may be edited or deleted): the
//! latest frame wins, within the rules above.
//!
//! Sessions are kept in a persistent map ([`Sessions`]): the gateway publishes a new index to
//! its request path after every change, and with 100k sessions a copy per revocation would cost
//! milliseconds each. Cloning the persistent map is O(1) and a change copies only its path.

mod observe;

use crate::frame::{Frame, PolicyEntry, SecretEntry, SessionEntry};
use crate::session::{self, Sessions};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

/// (namespace, name).
pub type ObjectKey = (String, String);

/// A policy's highest epoch seen, and when it was raised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Epoch {
    epoch: i64,
    raised_at: u64,
}

/// What applying a frame did, so the gateway rebuilds only what changed: compiling the route
/// table for every revocation would make a burst of them cost O(policies) each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Policies or Secrets changed (sessions may have too): rebuild the access snapshot.
    Policies,
    /// Only sessions changed: publish the session index.
    Sessions,
    /// Nothing to publish (heartbeat, replay, or a frame that lost to newer state).
    Unchanged,
}

impl Applied {
    /// The combined effect of two applied frames.
    #[must_use]
    pub fn and(self, other: Applied) -> Applied {
        match (self, other) {
            (Applied::Policies, _) | (_, Applied::Policies) => Applied::Policies,
            (Applied::Sessions, _) | (_, Applied::Sessions) => Applied::Sessions,
            (Applied::Unchanged, Applied::Unchanged) => Applied::Unchanged,
        }
    }
}

/// Why a frame was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// A delta whose version does not follow the stream's: the stream must be restarted.
    #[error("delta version {got} after {had}: the stream skipped or reordered frames")]
    OutOfOrder { had: u64, got: u64 },
    /// A delta before any snapshot of the stream.
    #[error("delta before the first snapshot")]
    NoSnapshot,
}

/// The merged state and the position in the current stream.
#[derive(Clone, Debug)]
pub struct FleetState {
    /// How long past expiry an entry is kept (clock skew between the operator, API server and
    /// gateways).
    skew_secs: u64,
    /// The replica and version of the last frame applied: what a reconnect resumes from.
    instance: Option<String>,
    version: u64,
    /// Whether any snapshot was ever applied: until then the gateway admits nobody.
    has_snapshot: bool,
    policies: BTreeMap<ObjectKey, PolicyEntry>,
    /// Highest epoch per (namespace, name, uid).
    epochs: HashMap<(String, String, String), Epoch>,
    /// uids of deleted policies.
    removed_uids: HashSet<String>,
    secrets: BTreeMap<ObjectKey, SecretEntry>,
    sessions: Sessions,
    /// The earliest time (unix seconds) at which some session may be forgotten: sweeping the
    /// sessions is O(n), so it runs only when something is due, at most once a second.
    next_collect: u64,
}

impl FleetState {
    pub fn new(skew_secs: u64) -> Self {
        Self {
            skew_secs,
            instance: None,
            version: 0,
            has_snapshot: false,
            policies: BTreeMap::new(),
            epochs: HashMap::new(),
            removed_uids: HashSet::new(),
            secrets: BTreeMap::new(),
            sessions: Sessions::new(),
            next_collect: 0,
        }
    }

    /// Where to resume: the instance and version of the last applied frame.
    pub fn position(&self) -> Option<(&str, u64)> {
        self.instance.as_deref().map(|i| (i, self.version))
    }

    /// Forgets the stream position (a new connection to a different replica starts over with a
    /// snapshot); the merged state stays.
    pub fn forget_position(&mut self) {
        self.instance = None;
        self.version = 0;
    }

    pub fn has_snapshot(&self) -> bool {
        self.has_snapshot
    }

    /// Policies, with their epoch raised to the highest seen and `epoch_raised_at` to match.
    pub fn policies(&self) -> impl Iterator<Item = PolicyEntry> + '_ {
        self.policies.values().map(|p| {
            let mut p = p.clone();
            if let Some(e) = self.epochs.get(&epoch_key(&p)) {
                p.spec.revocation_epoch = e.epoch;
                p.epoch_raised_at = e.raised_at;
            }
            p
        })
    }

    pub fn secrets(&self) -> impl Iterator<Item = &SecretEntry> {
        self.secrets.values()
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Applies one frame received on the stream of `instance` at time `now` (unix seconds).
    pub fn apply(&mut self, frame: Frame, now: u64) -> Result<Applied, MergeError> {
        if let Frame::Snapshot {
            instance,
            version,
            policies,
            secrets,
            sessions,
        } = frame
        {
            // An older snapshot of the instance we follow is a replay: its list would end the
            // sessions created since, and the position would move back.
            if self.instance.as_deref() == Some(instance.as_str()) && version < self.version {
                return Ok(Applied::Unchanged);
            }
            self.apply_snapshot(policies, secrets, sessions, now);
            self.instance = Some(instance);
            self.version = version;
            self.has_snapshot = true;
            return Ok(Applied::Policies);
        }
        if self.instance.is_none() {
            return Err(MergeError::NoSnapshot);
        }
        let version = frame.version();
        if let Frame::Heartbeat { .. } = frame {
            // A heartbeat repeats the current version; one ahead of us means frames were lost.
            if version != self.version {
                return Err(MergeError::OutOfOrder {
                    had: self.version,
                    got: version,
                });
            }
            // Forgetting expired sessions changes the index, but no verdict: publish it anyway
            // so the request path does not keep them.
            return Ok(self.collect(now));
        }
        if version <= self.version {
            // A replay of a frame already applied.
            return Ok(Applied::Unchanged);
        }
        if version != self.version + 1 {
            return Err(MergeError::OutOfOrder {
                had: self.version,
                got: version,
            });
        }
        self.version = version;
        let applied = self.apply_delta(frame, now);
        Ok(applied.and(self.collect(now)))
    }

    /// Applies the next delta of the stream.
    fn apply_delta(&mut self, frame: Frame, now: u64) -> Applied {
        let changed = |changed: bool, what: Applied| {
            if changed { what } else { Applied::Unchanged }
        };
        match frame {
            Frame::Policy { policy, .. } => changed(self.upsert_policy(*policy), Applied::Policies),
            Frame::PolicyRemoved {
                namespace,
                name,
                uid,
                withdrawn,
                ..
            } => changed(
                self.remove_policy(namespace, name, uid, !withdrawn),
                Applied::Policies,
            ),
            Frame::Secret { secret, .. } => {
                let key = (secret.namespace.clone(), secret.name.clone());
                changed(
                    self.secrets.insert(key, secret.clone()) != Some(secret),
                    Applied::Policies,
                )
            }
            Frame::SecretRemoved {
                namespace, name, ..
            } => changed(
                self.secrets.remove(&(namespace, name)).is_some(),
                Applied::Policies,
            ),
            Frame::Session { session, .. } => changed(
                self.upsert_session(Cow::Owned(session), now),
                Applied::Sessions,
            ),
            Frame::Snapshot { .. } | Frame::Heartbeat { .. } => Applied::Unchanged,
        }
    }

    fn apply_snapshot(
        &mut self,
        policies: Vec<PolicyEntry>,
        secrets: Vec<SecretEntry>,
        sessions: Vec<SessionEntry>,
        now: u64,
    ) {
        // Policies: the snapshot says which exist, each one merged against what we know.
        let previous = std::mem::take(&mut self.policies);
        for policy in policies {
            let key = (policy.namespace.clone(), policy.name.clone());
            if let Some(old) = previous.get(&key) {
                self.policies.insert(key.clone(), old.clone());
            }
            self.upsert_policy(policy);
        }
        // Missing from the snapshot: gone, unless the snapshot comes from a replica that has not
        // seen it yet; so no tombstone, a later frame may bring it back.
        for (key, old) in previous {
            if !self.policies.contains_key(&key) {
                self.remove_policy(key.0, key.1, old.uid, false);
            }
        }
        self.secrets = secrets
            .into_iter()
            .map(|s| ((s.namespace.clone(), s.name.clone()), s))
            .collect();
        // Sessions: a known one the snapshot lacks was deleted while we were away. (A gateway's
        // first snapshot has none to look for.)
        if !self.sessions.is_empty() {
            let listed: HashSet<&str> = sessions.iter().map(|s| s.sid.as_str()).collect();
            for (sid, session) in self.sessions.iter_mut() {
                if !listed.contains(sid.as_str()) {
                    session.end();
                }
            }
        }
        // Moved in, not copied: with 100 000 sessions the copy would be tens of megabytes more
        // at the moment a new gateway gets ready.
        for session in sessions {
            self.upsert_session(Cow::Owned(session), now);
        }
        self.next_collect = 0;
        self.collect(now);
    }

    fn upsert_policy(&mut self, policy: PolicyEntry) -> bool {
        if self.removed_uids.contains(&policy.uid) {
            return false;
        }
        let key = (policy.namespace.clone(), policy.name.clone());
        if let Some(current) = self.policies.get(&key)
            && current.uid == policy.uid
            && current.generation > policy.generation
        {
            // An older generation of the same object (a lagging replica): keep ours, but still
            // learn a higher epoch from it should it carry one.
            self.raise_epoch(&policy);
            return false;
        }
        let raised = self.raise_epoch(&policy);
        let replaced = self.policies.insert(key, policy.clone());
        raised || replaced.as_ref() != Some(&policy)
    }

    /// Records `policy`'s epoch if it is higher than known; true if it was.
    fn raise_epoch(&mut self, policy: &PolicyEntry) -> bool {
        let seen = Epoch {
            epoch: policy.spec.revocation_epoch,
            raised_at: policy.epoch_raised_at,
        };
        match self.epochs.get_mut(&epoch_key(policy)) {
            None => {
                self.epochs.insert(epoch_key(policy), seen);
                true
            }
            Some(known) if seen.epoch > known.epoch => {
                *known = seen;
                true
            }
            // Replicas agree on the raise time once it is persisted; until then the later one
            // is the safe side (it forces more sessions to log in again).
            Some(known) if seen.epoch == known.epoch && seen.raised_at > known.raised_at => {
                known.raised_at = seen.raised_at;
                true
            }
            Some(_) => false,
        }
    }

    /// Removes the policy if it is still object `uid`; with `tombstone` (an explicit deletion)
    /// the uid can never come back.
    fn remove_policy(
        &mut self,
        namespace: String,
        name: String,
        uid: String,
        tombstone: bool,
    ) -> bool {
        let key = (namespace, name);
        if tombstone {
            self.removed_uids.insert(uid.clone());
        }
        match self.policies.get(&key) {
            Some(current) if current.uid == uid => {
                self.policies.remove(&key);
                true
            }
            _ => false,
        }
    }

    fn upsert_session(&mut self, session: Cow<'_, SessionEntry>, now: u64) -> bool {
        if session.expires_at.saturating_add(self.skew_secs) > now {
            self.next_collect = self
                .next_collect
                .min(session.expires_at.saturating_add(self.skew_secs));
        }
        session::observe(&mut self.sessions, session, now, self.skew_secs)
    }

    /// Drops sessions past their latest expiry plus skew, when one is due (at most once per
    /// second of `now`). Keeping an entry a little longer is harmless: the gateway's verdict
    /// ends it at its expiry.
    fn collect(&mut self, now: u64) -> Applied {
        if now < self.next_collect {
            return Applied::Unchanged;
        }
        let skew = self.skew_secs;
        let forgot = session::forget_expired(&mut self.sessions, now, skew);
        let earliest = self
            .sessions
            .values()
            .map(|s| s.retain_until.saturating_add(skew))
            .min()
            .unwrap_or(u64::MAX);
        self.next_collect = earliest.max(now + 1);
        if forgot {
            Applied::Sessions
        } else {
            Applied::Unchanged
        }
    }
}

fn epoch_key(p: &PolicyEntry) -> (String, String, String) {
    (p.namespace.clone(), p.name.clone(), p.uid.clone())
}
