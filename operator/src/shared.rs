//! State shared by the watches, the stream API and the status writer.

use crate::{
    auth::{AuthError, Authenticator, bearer},
    fleet::{CONNECTED_WINDOW_SECS, Fleet},
    index::Index,
    metrics::Metrics,
    relay::{RelayBody, Relayed, Resync},
    status::FleetFacts,
};
use std::sync::{
    Mutex, MutexGuard, OnceLock,
    atomic::{AtomicBool, AtomicU64, Ordering},
};
use tokio::sync::watch;

/// One per process.
pub struct Shared {
    index: Mutex<Index>,
    /// The index version after every change: streams wake on it.
    changed: watch::Sender<u64>,
    /// Calls of [`Shared::update`] (every watch event, whether or not it moved the version):
    /// the status writer skips a pass when neither this nor the fleet's facts moved.
    updates: AtomicU64,
    pub fleet: Mutex<Fleet>,
    /// Facts relayed by followers.
    relayed: Mutex<Relayed>,
    pub auth: Authenticator,
    /// The user this operator's own token reviews as: relays are accepted from it only.
    peer_user: OnceLock<String>,
    leading: AtomicBool,
    pub metrics: Metrics,
    policies_synced: AtomicBool,
    secrets_synced: AtomicBool,
    sessions_synced: AtomicBool,
}

/// Which watch finished its first list.
#[derive(Clone, Copy, Debug)]
pub enum Watched {
    Policies,
    Secrets,
    Sessions,
}

impl Shared {
    pub fn new(index: Index, auth: Authenticator, metrics: Metrics) -> Self {
        let (changed, _) = watch::channel(index.version());
        Self {
            index: Mutex::new(index),
            changed,
            updates: AtomicU64::new(0),
            fleet: Mutex::new(Fleet::default()),
            relayed: Mutex::new(Relayed::default()),
            auth,
            peer_user: OnceLock::new(),
            leading: AtomicBool::new(false),
            metrics,
            policies_synced: AtomicBool::new(false),
            secrets_synced: AtomicBool::new(false),
            sessions_synced: AtomicBool::new(false),
        }
    }

    /// Runs `f` on the index and wakes the streams if the version moved.
    pub fn update<T>(&self, f: impl FnOnce(&mut Index) -> T) -> T {
        let mut index = self.lock_index();
        let result = f(&mut index);
        let version = index.version();
        self.updates.fetch_add(1, Ordering::SeqCst);
        drop(index);
        self.changed.send_if_modified(|v| {
            let moved = *v != version;
            *v = version;
            moved
        });
        self.metrics.index_version(version);
        result
    }

    /// How many updates the index has had.
    pub fn updates(&self) -> u64 {
        self.updates.load(Ordering::SeqCst)
    }

    /// The index, read-only use (a poisoned lock still holds a consistent index: every
    /// mutation is a whole call).
    pub fn lock_index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn lock_fleet(&self) -> MutexGuard<'_, Fleet> {
        self.fleet.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_peer_user(&self, user: String) {
        let _ = self.peer_user.set(user);
    }

    /// Accepts a relay from another replica of this operator only.
    pub async fn check_peer(&self, authorization: Option<&str>) -> Result<(), AuthError> {
        let user = self.auth.user_of(bearer(authorization)?).await?;
        match self.peer_user.get() {
            Some(own) if *own == user => Ok(()),
            _ => Err(AuthError::Forbidden(user)),
        }
    }

    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::SeqCst);
    }

    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// Records what a follower's gateways enforce; the relay number to confirm.
    pub fn relayed(&self, body: RelayBody, now: u64) -> Result<Option<u64>, Resync> {
        let mut relayed = self.relayed.lock().unwrap_or_else(|e| e.into_inner());
        relayed.collect(now, CONNECTED_WINDOW_SECS);
        relayed.apply(body, now)
    }

    /// What every gateway of the fleet enforces: those connected here and those relayed by
    /// followers (both only while they acked within the connected window).
    pub fn fleet_facts(&self, now: u64) -> FleetFacts {
        let mut fleet = FleetFacts::default();
        {
            let index = self.lock_index();
            for (id, acked, _) in self.lock_fleet().connected(now) {
                let acked = acked.unwrap_or(0);
                fleet.add_local(id, acked, &index.policy_facts(None, acked));
            }
        }
        let relayed = self.relayed.lock().unwrap_or_else(|e| e.into_inner());
        for (id, gateway) in relayed.fresh(now, CONNECTED_WINDOW_SECS) {
            fleet.add_relayed(id, &gateway.policies, &gateway.ended);
        }
        fleet.relayed_changes = relayed.changes();
        fleet
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn mark_synced(&self, what: Watched) {
        let flag = match what {
            Watched::Policies => &self.policies_synced,
            Watched::Secrets => &self.secrets_synced,
            Watched::Sessions => &self.sessions_synced,
        };
        flag.store(true, Ordering::SeqCst);
    }

    /// Every watch has listed once: before that a snapshot would be incomplete (and a gateway
    /// would end the sessions it lacks).
    pub fn synced(&self) -> bool {
        self.policies_synced.load(Ordering::SeqCst)
            && self.secrets_synced.load(Ordering::SeqCst)
            && self.sessions_synced.load(Ordering::SeqCst)
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
