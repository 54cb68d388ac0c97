//! What the gateway fleet enforces, gathered for a status pass from the gateways connected
//! here ([`crate::stream::Gateways`], with this replica's index) and those followers relayed
//! ([`crate::leader::Peers`]).

use crate::{
    index::SharedIndex,
    leader::Peers,
    stream::{Gateways, gateways::CONNECTED_WINDOW_SECS},
};
use portcullis_protocol::AppliedPolicy;
use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

/// What every gateway connected to any replica enforces, merged per gateway (a gateway that
/// streams from two replicas enforces the union of what it acknowledged to each).
///
/// Built every status pass, so it copies no session ids: a gateway connected here is known by
/// the version it acknowledged (it enforces every session ended at or before it), one relayed
/// by a follower by the relayed set, shared with the relay store.
#[derive(Clone, Debug, Default)]
pub struct Enforced {
    gateways: BTreeMap<String, Merged>,
    /// The relay store's change count when the relayed part was read.
    pub relayed_changes: u64,
}

/// What [`Enforced`] says, cheap to keep and compare: relayed session sets are stood for by
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
    policies: BTreeMap<String, AppliedPolicy>,
    relayed: usize,
}

#[derive(Clone, Debug, Default)]
struct Merged {
    policies: BTreeMap<String, AppliedPolicy>,
    /// The version of this replica's state the gateway acknowledged here.
    acked_here: Option<u64>,
    /// Sessions whose end it enforces, as relayed by other replicas.
    relayed_ended: Vec<Arc<HashSet<String>>>,
}

impl Enforced {
    /// A gateway connected to this replica that acknowledged version `acked`, with the policy
    /// facts that version holds.
    pub fn add_local(
        &mut self,
        gateway: &str,
        acked: u64,
        policies: &BTreeMap<String, AppliedPolicy>,
    ) {
        let merged = self.merge_policies(gateway, policies);
        merged.acked_here = Some(merged.acked_here.map_or(acked, |a| a.max(acked)));
    }

    /// A gateway as a follower relayed it.
    pub fn add_relayed(
        &mut self,
        gateway: &str,
        policies: &BTreeMap<String, AppliedPolicy>,
        ended: &Arc<HashSet<String>>,
    ) {
        self.merge_policies(gateway, policies)
            .relayed_ended
            .push(ended.clone());
    }

    fn merge_policies(
        &mut self,
        gateway: &str,
        policies: &BTreeMap<String, AppliedPolicy>,
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
        let mut enforced = Self::default();
        for f in facts {
            let ended = Arc::new(f.ended_sessions.iter().cloned().collect());
            enforced.add_relayed(&f.gateway, &f.policies, &ended);
        }
        enforced
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
    pub(super) fn applied(&self, uid: &str, generation: i64, epoch: i64) -> usize {
        self.gateways
            .values()
            .filter(|g| {
                g.policies.get(uid).is_some_and(|applied| {
                    applied.generation >= generation && applied.epoch >= epoch
                })
            })
            .count()
    }

    /// The epoch every connected gateway enforces, if there is one and each knows the policy.
    pub(super) fn enforced_epoch(&self, uid: &str) -> Option<i64> {
        let mut epochs = self
            .gateways
            .values()
            .map(|g| g.policies.get(uid).map(|applied| applied.epoch));
        let first = epochs.next()??;
        epochs.try_fold(first, |min, e| Some(min.min(e?)))
    }

    /// Gateways enforcing the end of session `sid`, which this replica's state ended at version
    /// `ended_at`.
    pub(super) fn ended(&self, sid: &str, ended_at: Option<u64>) -> usize {
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

/// What every gateway of the fleet enforces: those connected here and those relayed by
/// followers (both only while they acked within the connected window).
pub fn gather(index: &SharedIndex, gateways: &Gateways, peers: &Peers, now: u64) -> Enforced {
    let mut enforced = Enforced::default();
    {
        let index = index.lock();
        for gateway in gateways.connected(now) {
            let policies = index.policy_facts(None, gateway.acked);
            enforced.add_local(&gateway.id, gateway.acked, &policies);
        }
    }
    let relayed = peers.relayed();
    for (id, gateway) in relayed.fresh(now, CONNECTED_WINDOW_SECS) {
        enforced.add_relayed(id, &gateway.policies, &gateway.ended);
    }
    enforced.relayed_changes = relayed.changes();
    enforced
}
