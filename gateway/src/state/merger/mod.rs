//! The merged state every cluster-mode source writes into: the operator's stream (the fast
//! path), the gateway's own watch of the API server while the stream is unavailable
//! ([`super::api_fallback`]), and sessions the request path confirmed against the API server.
//!
//! All of them merge into one [`FleetState`] by the one merge rule
//! (`portcullis_protocol::merge`: ended stays ended, epochs only go up), so whichever source
//! speaks last, and however old its view, nothing revoked comes back. Each writer holds the lock
//! only to merge and publish (no await inside): the request path never waits on it, it reads
//! the published snapshot and index.

mod publish;

use super::{
    Snapshot,
    feed::Feed,
    session_index::{Learn, SessionIndex},
};
use portcullis_protocol::{Applied, FleetState, SessionEntry};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};
use tokio::sync::watch;

/// The names of the configured identity providers, for validating policies.
pub type KnownIdps = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The merged state and where it is published.
pub struct Merger {
    pub(super) fleet: FleetState,
    known_idps: KnownIdps,
    feed: Arc<Feed>,
    state_tx: watch::Sender<Arc<Snapshot>>,
    index_tx: watch::Sender<Arc<SessionIndex>>,
    /// Snapshots published so far: the gateway's own state version.
    published: u64,
    previous: Option<Arc<Snapshot>>,
    learner: Option<Arc<dyn Learn>>,
}

/// The merged state, shared by its writers.
#[derive(Clone)]
pub struct Shared(Arc<Mutex<Merger>>);

impl Shared {
    /// An empty state publishing to `state_tx` and `index_tx`.
    pub fn new(
        fleet: FleetState,
        known_idps: KnownIdps,
        feed: Arc<Feed>,
        state_tx: watch::Sender<Arc<Snapshot>>,
        index_tx: watch::Sender<Arc<SessionIndex>>,
    ) -> Self {
        let shared = Self(Arc::new(Mutex::new(Merger {
            fleet,
            known_idps,
            feed,
            state_tx,
            index_tx,
            published: 0,
            previous: None,
            learner: None,
        })));
        let learner = Learner {
            shared: shared.clone(),
            misses: Arc::new(Mutex::new(HashMap::new())),
        };
        shared.lock().learner = Some(Arc::new(learner));
        shared
    }

    /// The merged state, for one merge and publication. A writer that panicked while holding
    /// it left a state that is still monotonic (every step of a merge only ends or raises), so
    /// a poisoned lock is used as it is.
    pub fn lock(&self) -> MutexGuard<'_, Merger> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Merger {
    /// Publishes what `changed` says changed.
    pub fn publish(&mut self, changed: Applied) {
        match changed {
            Applied::Policies => self.publish_policies(),
            Applied::Sessions => self.publish_sessions(),
            Applied::Unchanged => {}
        }
    }

    pub fn fleet(&self) -> &FleetState {
        &self.fleet
    }

    pub fn fleet_mut(&mut self) -> &mut FleetState {
        &mut self.fleet
    }
}

/// How long an id the API server did not know is not asked about again.
const MISS_SECS: u64 = 2;
/// At most this many remembered misses (ids come only from tokens this fleet signed).
const MAX_MISSES: usize = 10_000;

/// What the request path uses to learn a session the index does not know yet, after confirming
/// it against the API server (absence = ask the truth): merged like any other observation, so
/// a revoked or deleted session learned this way is ended, never revived.
struct Learner {
    shared: Shared,
    /// Session ids the API server recently did not have, and until when (unix seconds): a
    /// burst of requests with such a token asks once.
    misses: Arc<Mutex<HashMap<String, u64>>>,
}

impl std::fmt::Debug for Learner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Learner")
    }
}

impl Learn for Learner {
    fn learn(&self, session: &SessionEntry, now: u64) {
        let mut merger = self.shared.lock();
        let changed = merger.fleet.observe_session(session, now);
        merger.publish(changed);
    }

    fn end(&self, sid: &str) {
        let mut merger = self.shared.lock();
        let changed = merger.fleet.end_session(sid);
        merger.publish(changed);
    }

    fn may_ask(&self, sid: &str, now: u64) -> bool {
        let misses = self
            .misses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        misses.get(sid).is_none_or(|until| *until <= now)
    }

    fn missed(&self, sid: &str, now: u64) {
        let mut misses = self
            .misses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if misses.len() >= MAX_MISSES {
            misses.retain(|_, until| *until > now);
        }
        if misses.len() < MAX_MISSES {
            misses.insert(sid.to_owned(), now + MISS_SECS);
        }
    }
}
