//! The status the leader wants on each object, computed purely from the index entry, the status
//! the object carries now, the validation verdict and what the gateway facts acknowledged.
//!
//! Times that mean "first seen" (`revokedAt`, `epochRaisedAt`) are kept once recorded; a
//! condition keeps its `lastTransitionTime` while its status stays the same.

use super::{enforced::Enforced, validate::Problem};
use crate::index::RevokedBy;
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use portcullis_crds::{
    AccessPolicyStatus, AccessSessionStatus, policy::GatewayProgress, session::Enforcement,
};
use portcullis_protocol::PolicyEntry;
use std::collections::HashSet;

/// The condition types the operator sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    /// On a policy: valid and streamed.
    Ready,
    /// On a session: `spec.revoked` is set.
    Revoked,
    /// On a revoked session: every connected gateway refuses it.
    Enforced,
}

impl ConditionType {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Revoked => "Revoked",
            ConditionType::Enforced => "Enforced",
        }
    }
}

/// Condition (and Event) reasons besides a policy's validation [`Problem`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Accepted,
    Revoked,
    NoGatewayConnected,
    EnforcedByAllGateways,
    Propagating,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Accepted => "Accepted",
            Reason::Revoked => "Revoked",
            Reason::NoGatewayConnected => "NoGatewayConnected",
            Reason::EnforcedByAllGateways => "EnforcedByAllGateways",
            Reason::Propagating => "Propagating",
        }
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
    type_: ConditionType,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: u64,
) -> Condition {
    let type_ = type_.as_str();
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
    facts: &Enforced,
    now: u64,
) -> AccessPolicyStatus {
    let empty = AccessPolicyStatus::default();
    let observed = observed.unwrap_or(&empty);
    let generation = Some(entry.generation);
    let ready = match verdict {
        Ok(()) => condition(
            &observed.conditions,
            ConditionType::Ready,
            true,
            Reason::Accepted.as_str(),
            "the policy is valid and streamed to the gateways".into(),
            generation,
            now,
        ),
        Err(problem) => condition(
            &observed.conditions,
            ConditionType::Ready,
            false,
            problem.reason(),
            problem.to_string(),
            generation,
            now,
        ),
    };
    let epoch = entry.spec.revocation_epoch;
    let connected = facts.connected();
    let applied = facts.applied(&entry.uid, entry.generation, epoch);
    let (raised_epoch, epoch_raised_at) = if epoch > 0 {
        (Some(epoch), Some(time(entry.epoch_raised_at)))
    } else {
        (observed.raised_epoch, observed.epoch_raised_at.clone())
    };
    AccessPolicyStatus {
        observed_generation: generation,
        conditions: vec![ready],
        enforced_epoch: facts.enforced_epoch(&entry.uid).or(observed.enforced_epoch),
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
/// replica's state ended at version `ended_at`; the `Revoked` condition says who revoked it
/// (the status has no other place for it, and `kubectl describe` shows conditions).
pub fn session_status(
    sid: &str,
    (ended_at, revoked_by): (Option<u64>, Option<&RevokedBy>),
    observed: &AccessSessionStatus,
    facts: &Enforced,
    now: u64,
) -> AccessSessionStatus {
    let connected = facts.connected();
    let enforced_by = facts.ended(sid, ended_at);
    let revoked_at = observed.revoked_at.clone().unwrap_or_else(|| time(now));
    let revoked = condition(
        &observed.conditions,
        ConditionType::Revoked,
        true,
        Reason::Revoked.as_str(),
        revoked_message(revoked_by),
        None,
        now,
    );
    let (all, reason, message) = if connected == 0 {
        (
            false,
            Reason::NoGatewayConnected,
            "no gateway is connected to the operator".to_owned(),
        )
    } else if enforced_by == connected {
        (
            true,
            Reason::EnforcedByAllGateways,
            format!("all {connected} connected gateways refuse the session"),
        )
    } else {
        (
            false,
            Reason::Propagating,
            format!("{enforced_by} of {connected} connected gateways refuse the session"),
        )
    };
    let enforced = condition(
        &observed.conditions,
        ConditionType::Enforced,
        all,
        reason.as_str(),
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

/// The `Revoked` condition's message: who revoked the session, when the API server says.
fn revoked_message(revoked_by: Option<&RevokedBy>) -> String {
    let by = revoked_by.map_or_else(|| RevokedBy::default().describe(), RevokedBy::describe);
    format!("{by}; the session ends on every gateway")
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

/// Whether `status` says every connected gateway refuses the session (acknowledged).
pub fn enforced(status: &AccessSessionStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == ConditionType::Enforced.as_str() && c.status == "True")
}

/// Whether the operator's fields of a session status already say what `desired` says.
pub fn session_unchanged(observed: &AccessSessionStatus, desired: &AccessSessionStatus) -> bool {
    same_conditions(&observed.conditions, &desired.conditions)
        && observed.revoked_at == desired.revoked_at
        && observed.enforcement == desired.enforcement
}

#[cfg(test)]
mod tests;
