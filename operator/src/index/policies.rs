//! Policies in the index: every AccessPolicy is held, and only the ones whose hosts their
//! namespace may claim ([`portcullis_core::tenancy`]) are streamed; each change to what the
//! gateways hold is a delta. The raise time of a new revocation epoch is the one
//! `status.epochRaisedAt` records, else when this replica first saw the epoch.

use super::{Index, Key};
use portcullis_core::tenancy::Claim;
use portcullis_crds::AccessPolicy;
use portcullis_protocol::{Frame, PolicyEntry};

/// What the gateways hold of a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sent {
    /// Nothing: it was never streamed, or it was removed (refused).
    No,
    /// An older form.
    Stale,
    /// The current form.
    Current,
}

/// A policy as the index holds it.
#[derive(Clone, Debug)]
pub(super) struct Stored {
    pub entry: PolicyEntry,
    pub claim: Claim,
    /// The version of the last frame that streamed it.
    pub version: u64,
    pub sent: Sent,
}

/// The raise time (unix seconds) recorded in `status` for the policy's current epoch.
fn recorded_epoch_raise(policy: &AccessPolicy) -> Option<u64> {
    let status = policy.status.as_ref()?;
    if status.raised_epoch? != policy.spec.revocation_epoch {
        return None;
    }
    u64::try_from(status.epoch_raised_at.as_ref()?.0.as_second()).ok()
}

impl Index {
    /// Adds or updates a policy. `now` is used for the raise time of an epoch the status does
    /// not record yet.
    pub fn apply_policy(&mut self, policy: &AccessPolicy, now: u64) {
        self.put_policy(policy, now);
        self.sync_ownership();
    }

    pub fn delete_policy(&mut self, namespace: &str, name: &str) {
        self.remove_policy(namespace, name);
        self.sync_ownership();
    }

    /// After a relist: `policies` is every AccessPolicy that exists; the known ones it lacks
    /// (`vanished`, from [`portcullis_runtime::Relist`]) are deleted. Ownership is decided once,
    /// over the whole list, so no claim is streamed for the moment before an older one arrives.
    pub fn reset_policies(&mut self, policies: &[AccessPolicy], vanished: &[Key], now: u64) {
        for (namespace, name) in vanished {
            self.remove_policy(namespace, name);
        }
        for policy in policies {
            self.put_policy(policy, now);
        }
        self.sync_ownership();
    }

    /// The (namespace, name) of every policy the index holds (what a relist compares against).
    pub fn policy_keys(&self) -> impl Iterator<Item = &Key> {
        self.policies.keys()
    }

    /// Holds the policy's current form; what is streamed is decided by
    /// [`Index::sync_ownership`].
    fn put_policy(&mut self, policy: &AccessPolicy, now: u64) {
        let Some(entry) = self.policy_entry(policy, now) else {
            return;
        };
        let created = policy
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second());
        let Some(claim) = Claim::of(policy, created, Some(&entry.uid)) else {
            return;
        };
        self.policy_status
            .insert(entry.uid.clone(), policy.status.clone().unwrap_or_default());
        let key = (entry.namespace.clone(), entry.name.clone());
        match self.policies.get_mut(&key) {
            Some(stored) if stored.entry == entry && stored.claim == claim => {}
            Some(stored) => {
                stored.entry = entry;
                stored.claim = claim;
                if stored.sent == Sent::Current {
                    stored.sent = Sent::Stale;
                }
            }
            None => {
                let stored = Stored {
                    entry,
                    claim,
                    version: 0,
                    sent: Sent::No,
                };
                self.policies.insert(key, stored);
            }
        }
    }

    fn remove_policy(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        let Some(stored) = self.policies.remove(&key) else {
            return;
        };
        self.policy_status.remove(&stored.entry.uid);
        self.refused.remove(&key);
        if stored.sent != Sent::No {
            let entry = stored.entry;
            self.push(|version| Frame::PolicyRemoved {
                version,
                namespace: entry.namespace,
                name: entry.name,
                uid: entry.uid,
                withdrawn: false,
            });
        }
    }

    /// Decides which policies may claim their hosts and streams the difference: a refused
    /// policy the gateways hold is removed first, then every admitted policy they lack (or hold
    /// in an older form) is sent.
    pub(super) fn sync_ownership(&mut self) {
        self.refused = self.judge_claims();
        let keys: Vec<Key> = self.policies.keys().cloned().collect();
        for key in &keys {
            let refused = self.refused.contains_key(key);
            let Some(stored) = self
                .policies
                .get(key)
                .filter(|s| refused && s.sent != Sent::No)
            else {
                continue;
            };
            let entry = stored.entry.clone();
            // Withdrawn, not deleted: gateways must accept it again if its claim is granted.
            self.push(|version| Frame::PolicyRemoved {
                version,
                namespace: entry.namespace,
                name: entry.name,
                uid: entry.uid,
                withdrawn: true,
            });
            if let Some(stored) = self.policies.get_mut(key) {
                stored.sent = Sent::No;
            }
        }
        for key in &keys {
            let Some(stored) = self
                .policies
                .get(key)
                .filter(|s| !self.refused.contains_key(key) && s.sent != Sent::Current)
            else {
                continue;
            };
            let entry = stored.entry.clone();
            let version = self.push(|version| Frame::Policy {
                version,
                policy: Box::new(entry),
            });
            if let Some(stored) = self.policies.get_mut(key) {
                stored.sent = Sent::Current;
                stored.version = version;
            }
        }
        self.sync_secrets();
    }

    fn policy_entry(&mut self, policy: &AccessPolicy, now: u64) -> Option<PolicyEntry> {
        let namespace = policy.metadata.namespace.clone()?;
        let name = policy.metadata.name.clone()?;
        let uid = policy.metadata.uid.clone()?;
        let epoch = policy.spec.revocation_epoch;
        let recorded = recorded_epoch_raise(policy);
        let epoch_raised_at = match recorded {
            _ if epoch <= 0 => 0,
            Some(at) => at,
            None => *self.epoch_seen.entry((uid.clone(), epoch)).or_insert(now),
        };
        Some(PolicyEntry {
            namespace,
            name,
            uid,
            generation: policy.metadata.generation.unwrap_or(0),
            spec: policy.spec.clone(),
            epoch_raised_at,
        })
    }
}
