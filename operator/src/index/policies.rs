//! Policies in the index: each change a delta; the raise time of a new revocation epoch is
//! the one `status.epochRaisedAt` records, else when this replica first saw the epoch.

use super::{Index, Key};
use portcullis_crds::AccessPolicy;
use portcullis_protocol::{Frame, PolicyEntry};

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
        let Some(entry) = self.policy_entry(policy, now) else {
            return;
        };
        self.policy_status
            .insert(entry.uid.clone(), policy.status.clone().unwrap_or_default());
        let key = (entry.namespace.clone(), entry.name.clone());
        if self.policies.get(&key).is_some_and(|(p, _)| *p == entry) {
            return;
        }
        let version = self.push(|version| Frame::Policy {
            version,
            policy: Box::new(entry.clone()),
        });
        self.policies.insert(key, (entry, version));
        self.sync_secrets();
    }

    pub fn delete_policy(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        if let Some((entry, _)) = self.policies.remove(&key) {
            self.policy_status.remove(&entry.uid);
            self.push(|version| Frame::PolicyRemoved {
                version,
                namespace: entry.namespace,
                name: entry.name,
                uid: entry.uid,
            });
            self.sync_secrets();
        }
    }

    /// After a relist: `policies` is every AccessPolicy that exists; the known ones it lacks
    /// (`vanished`, from [`portcullis_runtime::Relist`]) are deleted.
    pub fn reset_policies(&mut self, policies: &[AccessPolicy], vanished: &[Key], now: u64) {
        for (namespace, name) in vanished {
            self.delete_policy(namespace, name);
        }
        for policy in policies {
            self.apply_policy(policy, now);
        }
    }

    /// The (namespace, name) of every policy the index holds (what a relist compares against).
    pub fn policy_keys(&self) -> impl Iterator<Item = &Key> {
        self.policies.keys()
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
