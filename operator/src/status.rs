//! Reading what the operator recorded in status.

use portcullis_crds::AccessPolicy;

/// The raise time (unix seconds) recorded in `status` for the policy's current epoch.
pub fn recorded_epoch_raise(policy: &AccessPolicy) -> Option<u64> {
    let status = policy.status.as_ref()?;
    if status.raised_epoch? != policy.spec.revocation_epoch {
        return None;
    }
    u64::try_from(status.epoch_raised_at.as_ref()?.0.as_second()).ok()
}
