//! What the leader turns into Events about a session's life: a login (`LoggedIn`) and the
//! start of a failing refresh period (`RefreshFailing`).
//!
//! Why at most once per session and fact without writing anything to the object: a notice is
//! raised only for a transition this replica's watch shows after its first list of sessions.
//! The first list (an operator start or restart) raises nothing, so a restart replays no
//! login; a later relist raises only what it shows changed against the index (a session the
//! index did not know, a `failingSince` it had not seen). Every replica raises notices; only
//! the leader publishes them, and a replica that becomes leader drops those raised while it
//! followed (the leader of that time published them). The cost: a login or failing period
//! that begins while no replica leads, or during a restart, has no Event (the gateway's audit
//! log still has it).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use portcullis_crds::AccessSession;
use std::collections::{HashMap, VecDeque};

/// Notices kept for the leader at most (followers never drain theirs): the oldest are dropped.
const CAPACITY: usize = 4096;

/// One fact about a session, for one Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    LoggedIn {
        sid: String,
        uid: String,
        /// The email, or the subject when there is none.
        user: String,
        identity_provider: String,
        expires_at: String,
    },
    RefreshFailing {
        sid: String,
        uid: String,
        since: String,
        error: Option<String>,
    },
}

/// The notices raised and not yet taken, and what they are raised against.
#[derive(Debug, Default)]
pub(super) struct Notices {
    queue: VecDeque<Notice>,
    /// The first list of sessions is in: from now on a change is a transition.
    armed: bool,
    /// `status.refresh.failingSince` of each session whose refresh is failing.
    failing: HashMap<String, Time>,
}

impl Notices {
    /// A session as the watch shows it; `known`: the index knew it before.
    pub(super) fn observe(&mut self, session: &AccessSession, sid: &str, known: bool, live: bool) {
        let uid = session.metadata.uid.clone().unwrap_or_default();
        if self.armed && !known && live && !session.spec.revoked {
            let spec = &session.spec;
            self.raise(Notice::LoggedIn {
                sid: sid.to_owned(),
                uid: uid.clone(),
                user: spec.email.clone().unwrap_or_else(|| spec.subject.clone()),
                identity_provider: spec.identity_provider.clone(),
                expires_at: spec.expires_at.0.to_string(),
            });
        }
        let refresh = session.status.as_ref().and_then(|s| s.refresh.as_ref());
        let Some(since) = refresh.and_then(|r| r.failing_since.clone()) else {
            self.failing.remove(sid);
            return;
        };
        if self.failing.get(sid) == Some(&since) {
            return;
        }
        if self.armed && live && !session.spec.revoked {
            self.raise(Notice::RefreshFailing {
                sid: sid.to_owned(),
                uid,
                since: since.0.to_string(),
                error: refresh.and_then(|r| r.last_error.clone()),
            });
        }
        self.failing.insert(sid.to_owned(), since);
    }

    pub(super) fn forget(&mut self, sid: &str) {
        self.failing.remove(sid);
    }

    /// The first list of sessions was applied.
    pub(super) fn arm(&mut self) {
        self.armed = true;
    }

    pub(super) fn take(&mut self) -> Vec<Notice> {
        self.queue.drain(..).collect()
    }

    fn raise(&mut self, notice: Notice) {
        if self.queue.len() >= CAPACITY {
            self.queue.pop_front();
        }
        self.queue.push_back(notice);
    }
}
