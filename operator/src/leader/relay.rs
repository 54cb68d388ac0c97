//! What a follower relays to the leader, as deltas, and what the leader keeps of it.
//!
//! A gateway's facts only grow while it stays connected to a replica (its acknowledged version
//! only goes up), so a follower need not repeat them: after a relay the leader accepted, the
//! next one carries, per connected gateway, only the policy facts and session ends it gained
//! since (an index range, not a scan of every session) and when it last acked. A full relay is
//! sent first, whenever the leader changes, after any failed or refused relay, and every
//! [`FULL_EVERY`] as a backstop (it also lets the leader forget sessions long expired).
//!
//! Wire format, `POST /v1/peer/acks`: [`RelayBody`], a superset of
//! [`portcullis_protocol::PeerAcks`]. A body without `relay` is a full relay from a follower
//! that predates deltas. The leader answers a numbered relay with `200 {"accepted": n}`, and a
//! delta it cannot build on (it restarted, or never saw the base) with `409 resync`. A follower
//! sends deltas only after such an answer, so a leader that predates deltas (it answers 204)
//! keeps getting full relays.

use crate::{index::Index, stream::gateways::Connected};
use portcullis_protocol::AppliedPolicy;
use portcullis_protocol::GatewayFacts;
use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

/// A full relay at least this often (seconds), whatever else happens.
pub const FULL_EVERY: u64 = 60;

/// `POST /v1/peer/acks` body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayBody {
    /// The relaying replica.
    pub replica: String,
    /// The relaying process (its state instance): a delta only builds on relays of the same
    /// process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// This relay's number, increasing within the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<u64>,
    /// Set on a delta: the relay it builds on, which the leader accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<u64>,
    /// Every gateway connected to the relaying replica: all its facts in a full relay; in a
    /// delta only those gained since `base` (a gateway new since then has all of them).
    pub gateways: Vec<GatewayFacts>,
}

/// The leader's answer to a numbered relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub accepted: u64,
}

/// A relay sent and not answered yet.
#[derive(Clone, Debug)]
pub struct Pending {
    relay: u64,
    leader: String,
    full: bool,
    covered: HashMap<String, u64>,
    at: u64,
}

impl Pending {
    pub fn is_full(&self) -> bool {
        self.full
    }
}

/// What the leader holds of this follower's relays.
#[derive(Clone, Debug)]
struct Held {
    relay: u64,
    leader: String,
    /// Per gateway, the acknowledged version the leader's facts cover.
    covered: HashMap<String, u64>,
}

/// The follower's side: which relay to send next.
#[derive(Debug)]
pub struct Relayer {
    replica: String,
    instance: String,
    next: u64,
    held: Option<Held>,
    last_full: Option<u64>,
}

impl Relayer {
    pub fn new(replica: String, instance: String) -> Self {
        Self {
            replica,
            instance,
            next: 1,
            held: None,
            last_full: None,
        }
    }

    /// The next relay to `leader` (its advertised URL and identity, whatever names it): a
    /// delta when the leader accepted an earlier relay of this process and nothing calls for a
    /// full one.
    pub fn next(
        &mut self,
        leader: &str,
        gateways: &[Connected],
        index: &Index,
        now: u64,
    ) -> (RelayBody, Pending) {
        let base = self.held.as_ref().filter(|held| {
            held.leader == leader && self.last_full.is_some_and(|at| now < at + FULL_EVERY)
        });
        let relay = self.next;
        self.next += 1;
        let mut covered = HashMap::new();
        let facts = gateways
            .iter()
            .map(|g| {
                let after = base.and_then(|b| b.covered.get(&g.id)).copied();
                // Never below what the leader already has (acks only go up; this is a guard).
                let upto = after.map_or(g.acked, |a| a.max(g.acked));
                covered.insert(g.id.clone(), upto);
                GatewayFacts {
                    gateway: g.id.clone(),
                    acked_at: g.last_seen,
                    policies: index.policy_facts(after, upto),
                    ended_sessions: index
                        .ended_between(after, upto)
                        .map(str::to_owned)
                        .collect(),
                }
            })
            .collect();
        let body = RelayBody {
            replica: self.replica.clone(),
            instance: Some(self.instance.clone()),
            relay: Some(relay),
            base: base.map(|b| b.relay),
            gateways: facts,
        };
        let pending = Pending {
            relay,
            leader: leader.to_owned(),
            full: base.is_none(),
            covered,
            at: now,
        };
        (body, pending)
    }

    /// The leader accepted the relay; `confirmed` is the relay number it echoed (`None` from a
    /// leader that predates deltas: keep sending full relays).
    pub fn accepted(&mut self, pending: Pending, confirmed: Option<u64>) {
        if confirmed != Some(pending.relay) {
            self.held = None;
            return;
        }
        if pending.full {
            self.last_full = Some(pending.at);
        }
        self.held = Some(Held {
            relay: pending.relay,
            leader: pending.leader,
            covered: pending.covered,
        });
    }

    /// Whether the leader holds gateways of this replica (so an empty relay still says
    /// something: they left).
    pub fn leader_has_gateways(&self) -> bool {
        self.held.as_ref().is_some_and(|h| !h.covered.is_empty())
    }

    /// The relay failed or was refused: the next one is full.
    pub fn failed(&mut self) {
        self.held = None;
    }
}

/// Why the leader cannot apply a delta: the follower must send a full relay.
#[derive(Debug, thiserror::Error)]
#[error("this leader does not hold relay {base} of {replica}; send a full relay")]
pub struct Resync {
    pub replica: String,
    pub base: u64,
}

/// What one gateway enforces, as relayed by one replica.
#[derive(Clone, Debug, Default)]
pub struct RelayedGateway {
    pub acked_at: u64,
    pub policies: BTreeMap<String, AppliedPolicy>,
    /// Shared with status passes instead of copied into each.
    pub ended: Arc<HashSet<String>>,
}

#[derive(Clone, Debug, Default)]
struct FromReplica {
    instance: Option<String>,
    relay: Option<u64>,
    received: u64,
    gateways: HashMap<String, RelayedGateway>,
}

/// The leader's side: what each follower's gateways enforce.
#[derive(Debug, Default)]
pub struct Relayed {
    replicas: HashMap<String, FromReplica>,
    /// Relays that changed a fact or the gateways listed (not those that only say "still
    /// acking"): the status writer recomputes only when it moved.
    changes: u64,
}

impl Relayed {
    /// Applies a relay received at `now`; the relay number to confirm, if it had one.
    pub fn apply(&mut self, body: RelayBody, now: u64) -> Result<Option<u64>, Resync> {
        let RelayBody {
            replica,
            instance,
            relay,
            base,
            gateways,
        } = body;
        let mut previous = match base {
            None => HashMap::new(),
            Some(base) => match self.replicas.remove(&replica) {
                Some(held)
                    if instance.is_some()
                        && held.instance == instance
                        && held.relay == Some(base) =>
                {
                    held.gateways
                }
                other => {
                    if let Some(other) = other {
                        self.replicas.insert(replica.clone(), other);
                    }
                    return Err(Resync { replica, base });
                }
            },
        };
        let changed = base.is_none()
            || gateways.len() != previous.len()
            || gateways.iter().any(|g| {
                !previous.contains_key(&g.gateway)
                    || !g.policies.is_empty()
                    || !g.ended_sessions.is_empty()
            });
        if changed {
            self.changes += 1;
        }
        // Exactly the gateways listed: one no longer listed left the follower.
        let gateways = gateways
            .into_iter()
            .map(|facts| {
                let mut held = previous.remove(&facts.gateway).unwrap_or_default();
                held.acked_at = facts.acked_at;
                held.policies.extend(facts.policies);
                if !facts.ended_sessions.is_empty() {
                    Arc::make_mut(&mut held.ended).extend(facts.ended_sessions);
                }
                (facts.gateway, held)
            })
            .collect();
        self.replicas.insert(
            replica,
            FromReplica {
                instance,
                relay,
                received: now,
                gateways,
            },
        );
        Ok(relay)
    }

    /// How many relays changed something.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Gateways relayed recently whose last ack is recent too (`window` seconds).
    pub fn fresh(&self, now: u64, window: u64) -> impl Iterator<Item = (&str, &RelayedGateway)> {
        self.replicas
            .values()
            .filter(move |r| r.received + window > now)
            .flat_map(|r| r.gateways.iter())
            .filter(move |(_, g)| g.acked_at + window > now)
            .map(|(id, g)| (id.as_str(), g))
    }

    /// Forgets replicas not heard from for `window` seconds.
    pub fn collect(&mut self, now: u64, window: u64) {
        self.replicas.retain(|_, r| r.received + window > now);
    }
}

#[cfg(test)]
mod tests;
