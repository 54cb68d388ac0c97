//! One session's monotonic merge: the rule every holder of sessions (the operator's index, the
//! gateway's merge of the operator stream, the gateway's own watch) applies to each observation
//! of an `AccessSession`, whatever its order, replay or age.
//!
//! - An ended session stays ended; a changed subject is another session under a reused name and
//!   ends it (the subject first seen is kept); expiry only moves earlier; the entry is retained
//!   until the latest expiry ever seen (plus clock skew), so an observation still carrying the
//!   original expiry cannot bring a shortened session back as an unknown-then-new live one.
//! - An observation already past its expiry plus clock skew only ends a known session and lowers
//!   its expiry (an administrator moved `expiresAt` into the past); an unknown one is ignored.
//! - Refresh failure ([`MergedSession::refresh_failing_since`]): a known failure ends only with
//!   a confirmation *after* it began, i.e. an observation whose `refreshed_at`
//!   (`status.refresh.lastRefreshedAt`) is later than the failure's start. So an observation
//!   older than the failure (a relist served from a lagging cache, a lagging replica's
//!   snapshot, a replayed frame) cannot clear it, and a
//!   recovered session, whose object always carries the time of the confirmation that cleared
//!   `failingSince`, does. Of two failures the later start stands: failures of one session
//!   follow one another, each ended by a confirmation, so the later one is the object's current
//!   one (keeping the earlier would let a replayed confirmation of it clear the current one).
//!   A failure observed while none is known is taken as it is (the safe side); were it stale,
//!   the next observation of the current object clears it. Gateways write both times under the
//!   single-flight refresh claim, a failure starts a refresh interval after the confirmation
//!   before it and a retry comes at least 15 s after a failure, so clock skew between gateways
//!   does not reorder them.
//! - Email and groups: the latest observation wins (not a revocation: nothing to keep monotonic).

use crate::frame::{SessionEntry, SessionIdentity};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use portcullis_crds::AccessSession;
use std::{borrow::Cow, sync::Arc};

/// One session as merged: what a gateway needs to judge a request that carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergedSession {
    /// The identity provider's subject; a token naming another subject is not this session's.
    pub subject: String,
    /// Absolute expiry (unix seconds): the session is over from then on, however its tokens
    /// read. It only moves earlier (an administrator may shorten a session).
    pub expires_at: u64,
    /// The latest expiry ever seen for the session: the entry is kept until then plus clock
    /// skew, so a lagging replica's frame still carrying the original expiry cannot bring a
    /// shortened session back as an unknown-then-new live one.
    pub retain_until: u64,
    /// Revoked, deleted, or gone from a snapshot before its expiry. Never goes back.
    pub ended: bool,
    /// Since when (unix seconds) the identity provider has failed to confirm the session, if it
    /// is failing now; each policy's `refreshFailure` decides what that means.
    pub refresh_failing_since: Option<u64>,
    /// Email and groups as last confirmed by the identity provider. Latest wins (not a
    /// revocation: nothing to keep monotonic); shared with the request path.
    pub identity: Arc<SessionIdentity>,
    /// When (unix seconds) the identity provider last confirmed the session: the latest ever
    /// seen. Gateways confirm only sessions that had requests since the last confirmation, so
    /// this is when the session was last known in use on any gateway, which the idle deadline
    /// counts from when it is later than the app token's own `iat`.
    pub confirmed_at: Option<u64>,
}

/// Sessions by id, in a persistent map: cloning is O(1), so publishing the index after each
/// change does not copy 100k entries.
pub type Sessions = imbl::HashMap<String, MergedSession>;

impl MergedSession {
    /// A session as first observed.
    pub fn new(seen: &SessionEntry) -> Self {
        Self::first(seen.clone()).1
    }

    /// A session as first observed, with its sid: the observation's strings move into the
    /// entry (a snapshot of 100 000 sessions is not copied once more on its way into the map).
    pub fn first(seen: SessionEntry) -> (String, Self) {
        let session = Self {
            subject: seen.subject,
            expires_at: seen.expires_at,
            retain_until: seen.expires_at,
            ended: seen.ended,
            refresh_failing_since: seen.refresh_failing_since,
            identity: Arc::new(SessionIdentity {
                email: seen.email,
                groups: seen.groups,
            }),
            confirmed_at: seen.refreshed_at,
        };
        (seen.sid, session)
    }

    /// Merges a later, replayed or older observation of the same session; whether anything
    /// changed.
    pub fn observe(&mut self, seen: &SessionEntry) -> bool {
        let ended = self.ended || seen.ended || self.subject != seen.subject;
        let expires_at = self.expires_at.min(seen.expires_at);
        let retain_until = self.retain_until.max(seen.expires_at);
        let failing_since = merge_failure(self.refresh_failing_since, seen);
        let confirmed_at = self.confirmed_at.max(seen.refreshed_at);
        let mut changed = (ended, expires_at, retain_until, failing_since, confirmed_at)
            != (
                self.ended,
                self.expires_at,
                self.retain_until,
                self.refresh_failing_since,
                self.confirmed_at,
            );
        self.ended = ended;
        self.expires_at = expires_at;
        self.retain_until = retain_until;
        self.refresh_failing_since = failing_since;
        self.confirmed_at = confirmed_at;
        if self.identity.email != seen.email || self.identity.groups != seen.groups {
            self.identity = Arc::new(identity_of(seen));
            changed = true;
        }
        changed
    }

    /// An observation past its expiry (plus skew): the session ends, its expiry lowered to
    /// `expires_at` if that is earlier; nothing else of the observation counts. Whether anything
    /// changed.
    pub fn expire(&mut self, expires_at: u64) -> bool {
        if self.ended && self.expires_at <= expires_at {
            return false;
        }
        self.ended = true;
        self.expires_at = self.expires_at.min(expires_at);
        true
    }

    /// The session vanished (deleted, or missing from a complete list) before its expiry: it
    /// is over. Whether it was live.
    pub fn end(&mut self) -> bool {
        !std::mem::replace(&mut self.ended, true)
    }

    /// Whether the entry is still kept at `now`: until its latest expiry plus `skew_secs`.
    pub fn retained(&self, now: u64, skew_secs: u64) -> bool {
        self.retain_until.saturating_add(skew_secs) > now
    }

    /// The session as an observation again (what the operator streams), with `refreshed_at`
    /// of the latest observation.
    pub fn to_entry(&self, sid: &str, refreshed_at: Option<u64>) -> SessionEntry {
        SessionEntry {
            sid: sid.to_owned(),
            subject: self.subject.clone(),
            expires_at: self.expires_at,
            ended: self.ended,
            refresh_failing_since: self.refresh_failing_since,
            refreshed_at,
            email: self.identity.email.clone(),
            groups: self.identity.groups.clone(),
        }
    }
}

/// The refresh failure after observing `seen`, knowing `known` (rule at the top).
fn merge_failure(known: Option<u64>, seen: &SessionEntry) -> Option<u64> {
    let confirmed_after = |since: u64| seen.refreshed_at.is_some_and(|at| at > since);
    match (
        known.filter(|since| !confirmed_after(*since)),
        seen.refresh_failing_since,
    ) {
        (Some(known), Some(seen)) => Some(known.max(seen)),
        (known, seen) => known.or(seen),
    }
}

fn identity_of(seen: &SessionEntry) -> SessionIdentity {
    SessionIdentity {
        email: seen.email.clone(),
        groups: seen.groups.clone(),
    }
}

/// Merges one observation into a map of sessions keyed by sid, at `now` (unix seconds); whether
/// the map changed. The one entry point for any holder of a [`Sessions`] map. An owned
/// observation of a new session moves into the map; a borrowed one is copied.
pub fn observe(
    sessions: &mut Sessions,
    seen: Cow<'_, SessionEntry>,
    now: u64,
    skew_secs: u64,
) -> bool {
    if seen.expires_at.saturating_add(skew_secs) <= now {
        return sessions
            .get_mut(&seen.sid)
            .is_some_and(|known| known.expire(seen.expires_at));
    }
    match sessions.get_mut(&seen.sid) {
        Some(known) => known.observe(&seen),
        None => {
            let (sid, session) = MergedSession::first(seen.into_owned());
            sessions.insert(sid, session);
            true
        }
    }
}

/// Ends session `sid` of the map (deleted, or missing from a complete list); whether it was
/// live. An unknown sid is nothing to end.
pub fn end(sessions: &mut Sessions, sid: &str) -> bool {
    sessions.get_mut(sid).is_some_and(MergedSession::end)
}

/// Forgets the sessions past their latest expiry plus `skew_secs`; whether any was.
pub fn forget_expired(sessions: &mut Sessions, now: u64, skew_secs: u64) -> bool {
    let before = sessions.len();
    sessions.retain(|_, s| s.retained(now, skew_secs));
    sessions.len() != before
}

fn unix(time: &Time) -> Option<u64> {
    u64::try_from(time.0.as_second()).ok()
}

/// An `AccessSession` without a name: it has no sid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an AccessSession without a name")]
pub struct Unnamed;

/// One observation of an `AccessSession` object: its name is the sid; deleting (or being
/// deleted) ends it like a revocation.
impl TryFrom<&AccessSession> for SessionEntry {
    type Error = Unnamed;

    fn try_from(object: &AccessSession) -> Result<Self, Unnamed> {
        let sid = object.metadata.name.clone().ok_or(Unnamed)?;
        let refresh = object.status.as_ref().and_then(|s| s.refresh.as_ref());
        Ok(SessionEntry {
            sid,
            subject: object.spec.subject.clone(),
            expires_at: u64::try_from(object.spec.expires_at.0.as_second()).unwrap_or(0),
            ended: object.spec.revoked || object.metadata.deletion_timestamp.is_some(),
            refresh_failing_since: refresh
                .and_then(|r| r.failing_since.as_ref())
                .and_then(unix),
            refreshed_at: refresh
                .and_then(|r| r.last_refreshed_at.as_ref())
                .and_then(unix),
            email: object.spec.email.clone(),
            groups: object.spec.groups.clone(),
        })
    }
}

#[cfg(test)]
mod tests;
