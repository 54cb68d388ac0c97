//! The status the leader wants on each object, computed purely from the index entry, the status
//! the object carries now, the validation verdict and what the gateway fleet acknowledged.
//!
//! Times that mean "first seen" (`revokedAt`, `epochRaisedAt`) are kept once recorded; a
//! condition keeps its `lastTransitionTime` while its status stays the same.

use crate::validate::Problem;
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use portcullis_crds::{
    AccessPolicy, AccessPolicyStatus, AccessSessionStatus, policy::GatewayProgress,
    session::Enforcement,
};
use portcullis_protocol::PolicyEntry;
use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

/// The raise time (unix seconds) recorded in `status` for the policy's current epoch.
pub fn recorded_epoch_raise(policy: &AccessPolicy) -> Option<u64> {
    let status = policy.status.as_ref()?;
    if status.raised_epoch? != policy.spec.revocation_epoch {
        return None;
    }
    u64::try_from(status.epoch_raised_at.as_ref()?.0.as_second()).ok()
}

/// What every gateway connected to any replica enforces, merged per gateway (a gateway that
/// streams from two replicas enforces the union of what it acknowledged to each).
///
/// Built every status pass, so it copies no session ids: a gateway connected here is known by
/// the version it acknowledged (it enforces every session ended at or before it), one relayed
/// by a follower by the relayed set, shared with the relay store.
#[derive(Clone, Debug, Default)]
pub struct FleetFacts {
    gateways: BTreeMap<String, Merged>,
    /// [`crate::relay::Relayed::changes`] when the relayed part was read.
    pub relayed_changes: u64,
}

/// What [`FleetFacts`] says, cheap to keep and compare: relayed session sets are stood for by
/// the relay store's change count, not copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    relayed_changes: u64,
    gateways: Vec<GatewaySignature>,
}

/// One gateway of a [`Signature`]: id, version acknowledged here, policy facts, relayed sets.
#[derive(Clone, Debug, PartialEq, Eq)]
struct GatewaySignature {
    id: String,
    acked_here: Option<u64>,
    policies: BTreeMap<String, (i64, i64)>,
    relayed: usize,
}

#[derive(Clone, Debug, Default)]
struct Merged {
    policies: BTreeMap<String, (i64, i64)>,
    /// The version of this replica's state the gateway acknowledged here.
    acked_here: Option<u64>,
    /// Sessions whose end it enforces, as relayed by other replicas.
    relayed_ended: Vec<Arc<HashSet<String>>>,
}

impl FleetFacts {
    /// A gateway connected to this replica that acknowledged version `acked`, with the policy
    /// facts that version holds.
    pub fn add_local(
        &mut self,
        gateway: &str,
        acked: u64,
        policies: &BTreeMap<String, (i64, i64)>,
    ) {
        let merged = self.merge_policies(gateway, policies);
        merged.acked_here = Some(merged.acked_here.map_or(acked, |a| a.max(acked)));
    }

    /// A gateway as a follower relayed it.
    pub fn add_relayed(
        &mut self,
        gateway: &str,
        policies: &BTreeMap<String, (i64, i64)>,
        ended: &Arc<HashSet<String>>,
    ) {
        self.merge_policies(gateway, policies)
            .relayed_ended
            .push(ended.clone());
    }

    fn merge_policies(
        &mut self,
        gateway: &str,
        policies: &BTreeMap<String, (i64, i64)>,
    ) -> &mut Merged {
        let merged = self.gateways.entry(gateway.to_owned()).or_default();
        for (uid, enforced) in policies {
            let slot = merged.policies.entry(uid.clone()).or_insert(*enforced);
            *slot = (*slot).max(*enforced);
        }
        merged
    }

    /// Relayed facts only (tests).
    #[cfg(test)]
    pub fn merge<'a>(
        facts: impl IntoIterator<Item = &'a portcullis_protocol::GatewayFacts>,
    ) -> Self {
        let mut fleet = Self::default();
        for f in facts {
            let ended = Arc::new(f.ended_sessions.iter().cloned().collect());
            fleet.add_relayed(&f.gateway, &f.policies, &ended);
        }
        fleet
    }

    pub fn connected(&self) -> usize {
        self.gateways.len()
    }

    pub fn signature(&self) -> Signature {
        Signature {
            relayed_changes: self.relayed_changes,
            gateways: self
                .gateways
                .iter()
                .map(|(id, g)| GatewaySignature {
                    id: id.clone(),
                    acked_here: g.acked_here,
                    policies: g.policies.clone(),
                    relayed: g.relayed_ended.len(),
                })
                .collect(),
        }
    }

    /// Gateways enforcing at least `generation` and `epoch` of policy `uid`.
    fn applied(&self, uid: &str, generation: i64, epoch: i64) -> usize {
        self.gateways
            .values()
            .filter(|g| {
                g.policies
                    .get(uid)
                    .is_some_and(|(gen_, ep)| *gen_ >= generation && *ep >= epoch)
            })
            .count()
    }

    /// The epoch every connected gateway enforces, if there is one and each knows the policy.
    fn enforced_epoch(&self, uid: &str) -> Option<i64> {
        let mut epochs = self
            .gateways
            .values()
            .map(|g| g.policies.get(uid).map(|(_, e)| *e));
        let first = epochs.next()??;
        epochs.try_fold(first, |min, e| Some(min.min(e?)))
    }

    /// Gateways enforcing the end of session `sid`, which this replica's state ended at version
    /// `ended_at`.
    fn ended(&self, sid: &str, ended_at: Option<u64>) -> usize {
        self.gateways
            .values()
            .filter(|g| {
                g.acked_here
                    .zip(ended_at)
                    .is_some_and(|(acked, ended)| ended <= acked)
                    || g.relayed_ended.iter().any(|set| set.contains(sid))
            })
            .count()
    }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn time(seconds: u64) -> Time {
    Time(
        Timestamp::from_second(i64::try_from(seconds).unwrap_or(0))
            .unwrap_or(Timestamp::UNIX_EPOCH),
    )
}

/// A condition, keeping the transition time of `previous` while the status holds.
fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: u64,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// The status of a policy.
pub fn policy_status(
    entry: &PolicyEntry,
    observed: Option<&AccessPolicyStatus>,
    verdict: &Result<(), Problem>,
    fleet: &FleetFacts,
    now: u64,
) -> AccessPolicyStatus {
    let empty = AccessPolicyStatus::default();
    let observed = observed.unwrap_or(&empty);
    let generation = Some(entry.generation);
    let ready = match verdict {
        Ok(()) => condition(
            &observed.conditions,
            "Ready",
            true,
            "Accepted",
            "the policy is valid and streamed to the gateways".into(),
            generation,
            now,
        ),
        Err(problem) => condition(
            &observed.conditions,
            "Ready",
            false,
            problem.reason(),
            problem.to_string(),
            generation,
            now,
        ),
    };
    let epoch = entry.spec.revocation_epoch;
    let connected = fleet.connected();
    let applied = fleet.applied(&entry.uid, entry.generation, epoch);
    let (raised_epoch, epoch_raised_at) = if epoch > 0 {
        (Some(epoch), Some(time(entry.epoch_raised_at)))
    } else {
        (observed.raised_epoch, observed.epoch_raised_at.clone())
    };
    AccessPolicyStatus {
        observed_generation: generation,
        conditions: vec![ready],
        enforced_epoch: fleet.enforced_epoch(&entry.uid).or(observed.enforced_epoch),
        raised_epoch,
        epoch_raised_at,
        gateways: Some(GatewayProgress {
            applied: count(applied),
            connected: count(connected),
            summary: format!("{applied}/{connected}"),
        }),
    }
}

/// The status of a revoked session (`refresh` is the gateways' and never set here), which this
/// replica's state ended at version `ended_at`.
pub fn session_status(
    sid: &str,
    ended_at: Option<u64>,
    observed: &AccessSessionStatus,
    fleet: &FleetFacts,
    now: u64,
) -> AccessSessionStatus {
    let connected = fleet.connected();
    let enforced_by = fleet.ended(sid, ended_at);
    let revoked_at = observed.revoked_at.clone().unwrap_or_else(|| time(now));
    let revoked = condition(
        &observed.conditions,
        "Revoked",
        true,
        "Revoked",
        "spec.revoked is set; the session ends on every gateway".into(),
        None,
        now,
    );
    let (all, reason, message) = if connected == 0 {
        (
            false,
            "NoGatewayConnected",
            "no gateway is connected to the operator".to_owned(),
        )
    } else if enforced_by == connected {
        (
            true,
            "EnforcedByAllGateways",
            format!("all {connected} connected gateways refuse the session"),
        )
    } else {
        (
            false,
            "Propagating",
            format!("{enforced_by} of {connected} connected gateways refuse the session"),
        )
    };
    let enforced = condition(
        &observed.conditions,
        "Enforced",
        all,
        reason,
        message,
        None,
        now,
    );
    AccessSessionStatus {
        conditions: vec![revoked, enforced],
        revoked_at: Some(revoked_at),
        enforcement: Some(Enforcement {
            enforced_by: count(enforced_by),
            connected: count(connected),
            summary: format!("{enforced_by}/{connected}"),
        }),
        refresh: None,
    }
}

/// Whether the conditions `observed` carries of the types `desired` sets say the same,
/// ignoring transition times (other writers' condition types are not ours to compare).
pub fn same_conditions(observed: &[Condition], desired: &[Condition]) -> bool {
    let ours: HashSet<&str> = desired.iter().map(|c| c.type_.as_str()).collect();
    let a: Vec<&Condition> = observed
        .iter()
        .filter(|c| ours.contains(c.type_.as_str()))
        .collect();
    let key = |c: &Condition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.message.clone(),
            c.observed_generation,
        )
    };
    let mut a: Vec<_> = a.into_iter().map(key).collect();
    let mut b: Vec<_> = desired.iter().map(key).collect();
    a.sort();
    b.sort();
    a == b
}

/// Whether the operator's fields of a policy status already say what `desired` says.
pub fn policy_unchanged(
    observed: Option<&AccessPolicyStatus>,
    desired: &AccessPolicyStatus,
) -> bool {
    observed.is_some_and(|o| {
        same_conditions(&o.conditions, &desired.conditions)
            && o.observed_generation == desired.observed_generation
            && o.enforced_epoch == desired.enforced_epoch
            && o.raised_epoch == desired.raised_epoch
            && o.epoch_raised_at == desired.epoch_raised_at
            && o.gateways == desired.gateways
    })
}

/// Whether the operator's fields of a session status already say what `desired` says.
pub fn session_unchanged(observed: &AccessSessionStatus, desired: &AccessSessionStatus) -> bool {
    same_conditions(&observed.conditions, &desired.conditions)
        && observed.revoked_at == desired.revoked_at
        && observed.enforcement == desired.enforcement
}

#[cfg(test)]
mod tests;
