//! The fallback's session sink: observations of `AccessSession` objects merged into the fleet
//! state and published, by the same watch standalone mode uses.

use super::Listed;
use crate::state::{merger::Shared, session_index::SessionSink};
use portcullis_protocol::{Applied, SessionEntry};
use std::sync::Arc;

/// Merges session observations into the shared state; publishes once per event or list.
pub(super) struct MergedSessions {
    shared: Shared,
    listed: Arc<Listed>,
    pending: Applied,
}

impl MergedSessions {
    pub(super) fn new(shared: Shared, listed: Arc<Listed>) -> Self {
        Self {
            shared,
            listed,
            pending: Applied::Unchanged,
        }
    }

    fn note(&mut self, applied: Applied) -> bool {
        self.pending = self.pending.and(applied);
        applied != Applied::Unchanged
    }
}

impl SessionSink for MergedSessions {
    fn observe(&mut self, session: &SessionEntry, now: u64) -> bool {
        let applied = self.shared.lock().fleet_mut().observe_session(session, now);
        self.note(applied)
    }

    fn end(&mut self, sid: &str) -> bool {
        let applied = self.shared.lock().fleet_mut().end_session(sid);
        self.note(applied)
    }

    fn sids(&self) -> Vec<String> {
        self.shared.lock().fleet().session_ids()
    }

    fn listed(&mut self) {
        self.listed.set(Listed::SESSIONS);
    }

    fn publish(&mut self, now: u64) {
        let mut merger = self.shared.lock();
        let applied = self.pending.and(merger.fleet_mut().collect_expired(now));
        merger.publish(applied);
        self.pending = Applied::Unchanged;
    }
}
