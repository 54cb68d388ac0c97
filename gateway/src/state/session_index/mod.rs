//! The sessions this gateway accepts, held in memory and checked on every request: a revoked
//! session is refused at once, and a session the gateway does not know is not valid.
//!
//! The index follows the `AccessSession` objects of the session namespace with a watch. It is
//! monotonic, so no relist, replayed old object or watch reset can un-revoke anything:
//! `revoked` only ever goes from false to true, and a session that disappears before it expired
//! (deleted, or missing from a relist) counts as ended. Entries are dropped only once their
//! absolute expiry plus clock skew has passed.
//!
//! The gateway's own watch of the API server (`--policy-dir` with `--session-namespace`) is in
//! `api_server`; in cluster mode the operator's push stream (`operator_stream`) feeds the same
//! index.

mod api_server;

pub use api_server::{SessionSink, follow_sessions, watch_sessions};

use crate::state::feed::Feed;
use portcullis_core::token::CLOCK_SKEW_SECS;
use portcullis_crds::AccessSession;
use portcullis_protocol::{SessionEntry, session};
use std::{borrow::Cow, sync::Arc};

/// One session as the gateway needs it: the same record the operator stream merges into, so
/// cluster mode publishes the merged map itself.
pub use portcullis_protocol::MergedSession as Entry;
pub use portcullis_protocol::{SessionIdentity, Sessions};

/// Why a session id may not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotLive {
    /// Revoked, deleted, past its expiry, or not the token's subject's.
    Ended,
    /// The index does not have it (yet).
    Unknown,
}

/// The index, as published to the request path.
#[derive(Clone, Debug, Default)]
pub struct SessionIndex {
    /// False until the first complete list: until then the gateway is not ready.
    pub synced: bool,
    /// A persistent map: publishing a copy after every change is O(1), not O(sessions).
    pub entries: Sessions,
    /// Freshness of the operator stream feeding the index (cluster mode).
    pub feed: Option<Arc<Feed>>,
    /// Learns a session the index does not know after the request path confirmed it against
    /// the API server (cluster mode).
    pub learner: Option<Arc<dyn Learn>>,
}

/// Learns a session the index does not know, once it was read from the API server: merged like
/// any other observation (ended stays ended), then published.
pub trait Learn: Send + Sync + std::fmt::Debug {
    /// Merges `session`, read from the API server at `now`, and publishes the index.
    fn learn(&self, session: &SessionEntry, now: u64);
    /// Whether `sid` may be asked about at `now` (the API server did not recently lack it).
    fn may_ask(&self, sid: &str, now: u64) -> bool;
    /// The API server did not have `sid` at `now`.
    fn missed(&self, sid: &str, now: u64);
    /// Ends session `sid` in this gateway's memory at once (a logout), and publishes.
    fn end(&self, sid: &str);
}

impl SessionIndex {
    /// Why the gateway should take itself out of rotation, if it should.
    pub fn not_ready(&self) -> Option<String> {
        if !self.synced {
            return Some("session index not synced yet".into());
        }
        self.feed.as_ref().and_then(|feed| feed.not_ready())
    }

    /// Session `sid` of `subject` if it may be used at `now` (unix seconds), or why not. A
    /// session past its expiry is over even if its tokens say otherwise: an administrator may
    /// move `expiresAt` earlier to end it. The entry is all the request path reads of the
    /// session (when it was confirmed, whether its provider is failing, its identity), so a
    /// request hashes its id once.
    pub fn live(&self, sid: &str, subject: &str, now: u64) -> Result<&Entry, NotLive> {
        match self.entries.get(sid) {
            Some(entry) if entry.ended || entry.subject != subject || now >= entry.expires_at => {
                Err(NotLive::Ended)
            }
            Some(entry) => Ok(entry),
            None => Err(NotLive::Unknown),
        }
    }

    /// The index of a complete set of session objects (standalone mode's own records).
    pub fn from_objects<'a>(
        objects: impl IntoIterator<Item = &'a AccessSession>,
        now: u64,
    ) -> Self {
        let mut index = Self::default();
        for object in objects {
            index.apply(object, now);
        }
        index.collect(now);
        index
    }

    /// Folds one observation of a session object into the index, by the one merge rule
    /// (`portcullis_protocol::session`): ended stays ended, expiry only moves earlier.
    fn apply(&mut self, session: &AccessSession, now: u64) {
        if let Ok(seen) = SessionEntry::try_from(session) {
            self.observe(&seen, now);
        }
    }

    /// Folds one observation into the index; whether it changed.
    fn observe(&mut self, seen: &SessionEntry, now: u64) -> bool {
        session::observe(&mut self.entries, Cow::Borrowed(seen), now, CLOCK_SKEW_SECS)
    }

    /// Session `sid` was deleted, or a complete list no longer has it: it has ended.
    fn end(&mut self, sid: &str) -> bool {
        session::end(&mut self.entries, sid)
    }

    /// Drops what can no longer matter: sessions past their latest expiry plus clock skew.
    fn collect(&mut self, now: u64) {
        session::forget_expired(&mut self.entries, now, CLOCK_SKEW_SECS);
    }
}
