//! Since when each policy's revocation epoch is in force ([`Snapshot::epoch_since`]): the auth
//! host re-issues from an SSO session only if the user authenticated after it.
//!
//! The rule is [`epoch_since`]; the two sources differ only in what they know of the raise
//! time: the operator stream carries the time the operator recorded (the same at every
//! gateway), the directory source only knows when this gateway first saw the epoch.

use super::Snapshot;
use portcullis_core::PolicyId;

/// Since when (unix seconds) an epoch raised at `raised_at` is in force: 0 for epoch 0 (never
/// raised), else `raised_at + 1`, rounded up: a login in the same second as the raise counts as
/// before it.
pub fn epoch_since(epoch: u64, raised_at: u64) -> u64 {
    if epoch == 0 { 0 } else { raised_at + 1 }
}

impl Snapshot {
    /// Fills [`Snapshot::epoch_since`] from raise times known elsewhere (the operator's
    /// records): `raised_at` of each policy's id.
    pub fn epochs_raised_at(&mut self, raised_at: impl Fn(&PolicyId) -> u64) {
        self.epoch_since = self
            .policies
            .values()
            .map(|policy| {
                let since = epoch_since(policy.epoch, raised_at(&policy.id));
                (policy.id.clone(), since)
            })
            .collect();
    }

    /// Fills [`Snapshot::epoch_since`] from when this gateway first saw each epoch: an epoch
    /// seen before keeps its time, a raised one was raised now. A gateway that starts with an
    /// epoch above 0 cannot know when it was raised and takes "now": the safe side, since it
    /// only means an IdP login instead of a silent single sign-on for sessions older than the
    /// gateway.
    pub fn track_epochs(&mut self, previous: Option<&Snapshot>, now: u64) {
        self.epoch_since = self
            .policies
            .values()
            .map(|policy| {
                let kept = previous.and_then(|p| {
                    let old = p.policies.get(&policy.id)?;
                    let since = p.epoch_since.get(&policy.id)?;
                    (old.epoch == policy.epoch).then_some(*since)
                });
                let since = kept.unwrap_or_else(|| epoch_since(policy.epoch, now));
                (policy.id.clone(), since)
            })
            .collect();
    }
}
