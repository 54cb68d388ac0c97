//! The revocations, straight from the API server, always: every gateway watches the revoked
//! `AccessSession`s of its session namespace (a field selector on `spec.revoked`, a selectable
//! field of the CRD) and the epochs of every `AccessPolicy` of its installation's namespaces,
//! whatever the operator's stream is doing.
//!
//! Why not only while the stream is down: a gateway cannot tell a partitioned stream from a
//! quiet one before it falls silent for three heartbeats, and the fallback then waits
//! `--api-fallback-after` plus its jitter. A revocation the API server accepted in that window
//! would wait for all of it. With this watch it is enforced as soon as the API server delivers
//! it, at every gateway that can reach the API server, whether the operator is up, down or
//! unreachable from this gateway only.
//!
//! What it costs: two watches per gateway that carry only revocations and policy changes (the
//! revoked sessions are few; live sessions' status updates do not match the selector), served
//! by the API server's watch cache, like the kube-proxy of every node watching the same
//! objects. Each gateway starts them once it holds the operator's first snapshot (they only
//! narrow a state), after a random delay of up to `--api-fallback-jitter`, so a fleet starting
//! together does not list at once.
//!
//! What it takes: only what narrows access, by the one merge rule (a session ends for good, an
//! epoch only goes up per object, a deleted policy never comes back). A relist removes nothing:
//! what a list lacks is the stream's (or the fallback's) to judge.

use super::policies::{self, Namespaces, Relists};
use crate::{shutdown::Signal, state::feed::Feed, state::merger::Shared};
use kube::{Api, Client, runtime::watcher};
use portcullis_crds::{AccessPolicy, AccessSession};
use portcullis_protocol::{Applied, SessionEntry};
use std::{sync::Arc, time::Duration};
use tracing::info;

/// The selector of revoked sessions.
const REVOKED: &str = "spec.revoked=true";

/// Starts both watches after a random delay of up to `jitter`; returns at once.
pub(super) fn spawn(
    client: Client,
    namespace: &str,
    jitter: Duration,
    (shared, namespaces): (Shared, Namespaces),
    feed: Arc<Feed>,
    shutdown: Signal,
) {
    let sessions = Api::<AccessSession>::namespaced(client.clone(), namespace);
    let policies = Api::<AccessPolicy>::all(client);
    tokio::spawn(async move {
        // What it merges into is the operator's state: nothing before the first snapshot.
        let mut waiting = shutdown.clone();
        if !super::wait_until(|| feed.age().is_some(), &mut waiting).await {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(jitter.mul_f64(rand::random::<f64>())) => {}
            () = waiting.wait() => return,
        }
        let config = watcher::Config::default().timeout(super::WATCH_TIMEOUT_SECS);
        let revoked = follow_revoked(
            sessions,
            config.clone().fields(REVOKED),
            shared.clone(),
            feed,
            shutdown.clone(),
        );
        let epochs = policies::follow(
            policies,
            config,
            (shared, namespaces),
            Relists::Keep,
            shutdown,
        );
        tokio::join!(revoked, epochs);
    });
}

/// Ends every revoked session the API server lists or reports, until shutdown.
async fn follow_revoked(
    api: Api<AccessSession>,
    config: watcher::Config,
    shared: Shared,
    feed: Arc<Feed>,
    mut shutdown: Signal,
) {
    let mut watch = crate::state::Watch::new(api, config, "revoked sessions");
    // Objects of a list under way are merged as they come and published with the whole list.
    let mut listing = false;
    while let Some(event) = watch.next(&mut shutdown).await {
        let session = match event {
            watcher::Event::Init => {
                listing = true;
                continue;
            }
            watcher::Event::InitDone => {
                listing = false;
                if !feed.revocations_watched() {
                    info!("following revocations at the API server");
                }
                feed.revocations_listed();
                shared.lock().publish(Applied::Sessions);
                continue;
            }
            watcher::Event::InitApply(session) | watcher::Event::Apply(session) => session,
            // A deleted session ends through the stream or the fallback: its deletion is not a
            // revocation this selector could tell from leaving it.
            watcher::Event::Delete(_) => continue,
        };
        let Some(entry) = revoked_entry(&session) else {
            continue;
        };
        let now = crate::clock::now();
        let mut merger = shared.lock();
        let applied = merger.fleet_mut().observe_session(&entry, now);
        if !listing {
            merger.publish(applied);
        }
    }
}

/// The observation a revoked session object makes; None for an object that is not revoked (a
/// server that ignored the selector must not make this path admit anything) or has no name.
fn revoked_entry(session: &AccessSession) -> Option<SessionEntry> {
    SessionEntry::try_from(session)
        .ok()
        .filter(|entry| entry.ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(revoked: bool) -> AccessSession {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "access.portcullis.dev/v1alpha1", "kind": "AccessSession",
            "metadata": {"name": "s1", "namespace": "team"},
            "spec": {
                "subject": "u1", "email": "a@example.com", "identityProvider": "dex",
                "issuedAt": "2026-01-01T00:00:00Z", "expiresAt": "2099-01-01T00:00:00Z",
                "revoked": revoked,
            }
        }))
        .expect("a session object")
    }

    #[test]
    fn only_a_revoked_object_is_taken() {
        assert!(revoked_entry(&session(false)).is_none());
        let entry = revoked_entry(&session(true)).expect("revoked");
        assert_eq!(entry.sid, "s1");
        assert!(entry.ended);
    }
}
