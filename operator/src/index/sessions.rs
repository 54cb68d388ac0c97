//! Sessions in the index, merged by the one session rule ([`portcullis_protocol::session`]):
//! a deleted (or vanished) session that has not expired stays in the index as ended until its
//! expiry plus clock skew, so snapshots carry it; what gateways must learn is streamed as a
//! delta, and the version that ended each session is kept for the status of its revocation.

use super::Index;
use portcullis_core::token::CLOCK_SKEW_SECS;
use portcullis_crds::AccessSession;
use portcullis_protocol::{Frame, MergedSession, SessionEntry};

/// A session as merged, and what the index keeps beside it.
#[derive(Clone, Debug)]
pub(super) struct Session {
    merged: MergedSession,
    /// When the identity provider last confirmed it, as last observed: streamed with it, so
    /// gateways tell a recovery from an older observation.
    refreshed_at: Option<u64>,
    /// The version that ended it.
    pub(super) ended_at: Option<u64>,
    /// The AccessSession object still exists (not deleted, not being deleted).
    exists: bool,
}

impl Session {
    /// The session as streamed.
    pub(super) fn to_entry(&self, sid: &str) -> SessionEntry {
        self.merged.to_entry(sid, self.refreshed_at)
    }
}

/// Whether gateways would be told something different (the retention time is not streamed).
fn streamed_differently(known: &MergedSession, merged: &MergedSession) -> bool {
    let mut merged = merged.clone();
    merged.retain_until = known.retain_until;
    merged != *known
}

impl Index {
    pub fn apply_session(&mut self, session: &AccessSession, now: u64) {
        let Ok(seen) = SessionEntry::try_from(session) else {
            return;
        };
        let exists = session.metadata.deletion_timestamp.is_none();
        let known = self.sessions.contains_key(&seen.sid) || self.lingering.contains_key(&seen.sid);
        let live = exists && seen.expires_at + CLOCK_SKEW_SECS > now;
        self.notices.observe(session, &seen.sid, known, live);
        if session.spec.revoked && exists {
            let mut status = session.status.clone().unwrap_or_default();
            status.refresh = None;
            self.revoked_status.insert(seen.sid.clone(), status);
            self.revoked_by
                .insert(seen.sid.clone(), super::RevokedBy::of(session));
        } else {
            self.revoked_status.remove(&seen.sid);
            self.revoked_by.remove(&seen.sid);
        }
        if exists && seen.expires_at + CLOCK_SKEW_SECS <= now {
            self.lingering.insert(seen.sid.clone(), seen.expires_at);
        } else {
            self.lingering.remove(&seen.sid);
        }
        self.observe_session(&seen, exists, now);
    }

    fn observe_session(&mut self, seen: &SessionEntry, exists: bool, now: u64) {
        if seen.expires_at + CLOCK_SKEW_SECS <= now {
            return self.expire_session(seen);
        }
        let sid = &seen.sid;
        let merged = match self.sessions.get_mut(sid) {
            Some(known) => {
                let mut merged = known.merged.clone();
                merged.observe(seen);
                known.refreshed_at = seen.refreshed_at;
                if !streamed_differently(&known.merged, &merged) {
                    known.merged = merged;
                    known.exists = exists;
                    return;
                }
                merged
            }
            None => MergedSession::new(seen),
        };
        let was_ended = self.sessions.get(sid).and_then(|s| s.ended_at);
        let session = merged.to_entry(sid, seen.refreshed_at);
        let version = self.push(|version| Frame::Session { version, session });
        if was_ended.is_none() && merged.ended {
            self.ended_log.insert(version, sid.clone());
        }
        let ended_at = was_ended.or(merged.ended.then_some(version));
        self.sessions.insert(
            sid.clone(),
            Session {
                merged,
                refreshed_at: seen.refreshed_at,
                ended_at,
                exists,
            },
        );
    }

    /// An observation past its expiry plus skew: the index forgets the session.
    fn expire_session(&mut self, seen: &SessionEntry) {
        let Some(gone) = self.sessions.remove(&seen.sid) else {
            return;
        };
        if let Some(v) = gone.ended_at {
            self.ended_log.remove(&v);
        }
        // Its expiry was moved into the past while gateways still hold it as live (an
        // administrator ending it that way): tell them, or they would accept it until its
        // original expiry.
        if seen.expires_at < gone.merged.expires_at && !gone.merged.ended {
            let mut merged = gone.merged;
            merged.expire(seen.expires_at);
            let session = merged.to_entry(&seen.sid, seen.refreshed_at);
            self.push(|version| Frame::Session { version, session });
        }
    }

    /// A deleted session: ended until its expiry.
    pub fn delete_session(&mut self, sid: &str, now: u64) {
        self.revoked_status.remove(sid);
        self.revoked_by.remove(sid);
        self.notices.forget(sid);
        self.lingering.remove(sid);
        if let Some(known) = self.sessions.get(sid) {
            let mut ended = known.to_entry(sid);
            ended.ended = true;
            self.observe_session(&ended, false, now);
        }
    }

    /// Up to `limit` existing AccessSessions that expired before `cutoff` (unix seconds).
    pub fn expired_before(&self, cutoff: u64, limit: usize) -> Vec<String> {
        let lingering = self
            .lingering
            .iter()
            .filter(|(_, expires_at)| **expires_at < cutoff)
            .map(|(sid, _)| sid.clone());
        let known = self
            .sessions
            .iter()
            .filter(|(_, s)| s.exists && s.merged.expires_at < cutoff)
            .map(|(sid, _)| sid.clone());
        lingering.chain(known).take(limit).collect()
    }

    /// Session garbage collection found `sid` gone.
    pub fn forget_lingering(&mut self, sid: &str) {
        self.lingering.remove(sid);
    }

    /// After a relist: `sessions` is every AccessSession that exists; the known ones it lacks
    /// (`vanished`: of [`Index::session_ids`], what [`portcullis_runtime::Relist`] did not
    /// list) are ended, or no longer lingering.
    pub fn reset_sessions(&mut self, sessions: &[AccessSession], vanished: &[String], now: u64) {
        for sid in vanished {
            self.delete_session(sid, now);
        }
        for session in sessions {
            self.apply_session(session, now);
        }
        self.notices.arm();
    }

    /// Every sid the index knows an AccessSession of: its sessions, and those it forgot that
    /// still exist (what a relist compares against).
    pub fn session_ids(&self) -> impl Iterator<Item = &String> {
        self.sessions.keys().chain(self.lingering.keys())
    }

    /// Drops sessions past expiry plus skew (gateways forget them on their own).
    pub fn collect(&mut self, now: u64) {
        let ended_log = &mut self.ended_log;
        let lingering = &mut self.lingering;
        self.sessions.retain(|sid, s| {
            let keep = s.merged.expires_at + CLOCK_SKEW_SECS > now;
            if !keep {
                if let Some(v) = s.ended_at {
                    ended_log.remove(&v);
                }
                if s.exists {
                    lingering.insert(sid.clone(), s.merged.expires_at);
                }
            }
            keep
        });
        let sessions = &self.sessions;
        self.revoked_status
            .retain(|sid, _| sessions.contains_key(sid));
        self.revoked_by.retain(|sid, _| sessions.contains_key(sid));
    }
}
