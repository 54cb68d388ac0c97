//! The leader's Events on a session's life that no status write marks: `LoggedIn` for a new
//! session and `RefreshFailing` when its identity provider stops confirming it. The index
//! raises them as notices ([`crate::index::Notice`], which explains why each is raised at most
//! once); this task publishes them while this replica leads. Revocations have their Events in
//! the status writer ([`super::events::Events::session_revoked`]), deduplicated by
//! `status.revokedAt`.

use super::events::{Events, reference};
use crate::index::{Notice, SharedIndex};
use portcullis_runtime::shutdown::Signal;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::info;

/// Publishes the index's notices while this replica leads, until shutdown.
pub async fn run(
    events: Events,
    namespace: String,
    index: Arc<SharedIndex>,
    mut leading: watch::Receiver<bool>,
    mut shutdown: Signal,
) {
    let mut changed = index.subscribe();
    loop {
        if !*leading.borrow_and_update() {
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { return },
                () = shutdown.wait() => return,
            }
            // Raised while this replica followed: the leader of that time published them.
            index.lock().take_notices();
            continue;
        }
        let notices = index.lock().take_notices();
        for notice in notices {
            publish(&events, &namespace, notice).await;
        }
        tokio::select! {
            changed = changed.changed() => if changed.is_err() { return },
            _ = leading.changed() => {}
            () = shutdown.wait() => return,
        }
    }
}

async fn publish(events: &Events, namespace: &str, notice: Notice) {
    match notice {
        Notice::LoggedIn {
            sid,
            uid,
            user,
            identity_provider,
            expires_at,
        } => {
            info!(session = %sid, %user, %identity_provider, "logged in");
            let note = format!(
                "{user} logged in with identity provider {identity_provider}; the session \
                 expires at {expires_at}"
            );
            let regarding = reference("AccessSession", namespace, &sid, &uid);
            events
                .publish(&regarding, true, "LoggedIn", &note, "Login")
                .await;
        }
        Notice::RefreshFailing {
            sid,
            uid,
            since,
            error,
        } => {
            info!(session = %sid, %since, "refresh failing");
            let error = error.map_or_else(String::new, |e| format!(": {e}"));
            let note = format!(
                "the identity provider has not confirmed the session since {since}{error}; the \
                 policy's refreshFailure decides what happens meanwhile"
            );
            let regarding = reference("AccessSession", namespace, &sid, &uid);
            events
                .publish(&regarding, false, "RefreshFailing", &note, "Refresh")
                .await;
        }
    }
}
