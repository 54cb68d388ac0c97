//! The API server is the source of truth: while the operator's stream is unavailable, the
//! gateway watches the objects its state is made of directly and merges them into the same
//! state ([`super::merger`]), so a revocation the API server accepted is enforced whether or
//! not the operator is up.
//!
//! - **When**: once the stream has been down for `--api-fallback-after` (a connection that
//!   fails, or falls silent for three heartbeats, is down), after a random delay of up to
//!   `--api-fallback-jitter`, so a fleet that lost its operator at the same moment does not
//!   list from the API server all at once. Only a gateway that applied a snapshot from the
//!   operator falls back: Secrets (service-token credentials) come only from the operator.
//! - **What**: the `AccessSession`s of the session namespace (through the same watch as
//!   standalone mode, [`super::session_index::follow_sessions`]) and the `AccessPolicy`s of
//!   every namespace, or of `--watch-namespaces` ([`policies`]). Secrets are not watched (the gateway reads no Secret): a
//!   service-token Secret changed during an outage is applied when the stream returns.
//! - **How it merges**: by the one merge rule: ended stays ended, epochs only go up per object,
//!   a relist ends what it lacks and revives nothing (relists may come from a lagging API
//!   server).
//! - **Always, for revocations**: the revoked sessions and the policies' epochs are watched
//!   whatever the stream does ([`revocations`]), so a revocation does not wait for the stream
//!   to be found down.
//! - **Until when**: the first frame of a new stream connection stops the watches; the stream
//!   resumes from its position, or sends a snapshot, merged the same way.
//! - **Freshness**: a silently dead watch is found only after the client's read timeout, so
//!   the watches are cut by the server every [`WATCH_TIMEOUT_SECS`] and read with a timeout;
//!   the state counts as current (its age reset) only while both watches have listed and a
//!   cheap request to the API server answered within the last [`PROBE_EVERY`].

mod policies;
mod revocations;
mod sessions;

pub use policies::Namespaces;

use super::{
    feed::{Feed, Path},
    merger::Shared,
    session_index::follow_sessions,
};
use crate::shutdown::Signal;
use kube::{Api, Client, api::ListParams, runtime::watcher};
use portcullis_crds::{AccessPolicy, AccessSession};
use std::{
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};
use tracing::info;

/// The server ends each watch after this long; the client resumes it from its position.
const WATCH_TIMEOUT_SECS: u32 = 20;
/// How often the API server is asked a cheap question while falling back.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How often the stream's state is looked at.
const POLL: Duration = Duration::from_millis(250);

/// When and where to fall back.
#[derive(Clone, Debug)]
pub struct FallbackConfig {
    /// The namespace of the session objects.
    pub namespace: String,
    /// How long the stream must be down first.
    pub after: Duration,
    /// Up to how much longer each gateway waits, at random.
    pub jitter: Duration,
    /// Whose policies it takes.
    pub policy_namespaces: Namespaces,
}

/// Which watches have completed their first list. A failed watch resumes from its position
/// (its events say nothing of it), so a failure does not clear this: whether the API server
/// answers now is the probe's to say.
#[derive(Debug, Default)]
pub(super) struct Listed(AtomicU8);

impl Listed {
    const SESSIONS: u8 = 1;
    const POLICIES: u8 = 2;

    fn set(&self, kind: u8) {
        self.0.fetch_or(kind, Ordering::SeqCst);
    }

    fn both(&self) -> bool {
        self.0.load(Ordering::SeqCst) == Self::SESSIONS | Self::POLICIES
    }
}

/// Starts the always-on revocation watches ([`revocations`]) and the watch for the stream to
/// become unavailable; returns at once.
pub fn spawn(
    client: Client,
    config: FallbackConfig,
    shared: Shared,
    feed: Arc<Feed>,
    shutdown: Signal,
) {
    revocations::spawn(
        client.clone(),
        &config.namespace,
        config.jitter,
        (shared.clone(), config.policy_namespaces.clone()),
        feed.clone(),
        shutdown.clone(),
    );
    tokio::spawn(run(client, config, shared, feed, shutdown));
}

async fn run(
    client: Client,
    config: FallbackConfig,
    shared: Shared,
    feed: Arc<Feed>,
    mut shutdown: Signal,
) {
    loop {
        let unavailable = || feed.age().is_some() && feed.stream_down_for() >= config.after;
        if !wait_until(unavailable, &mut shutdown).await {
            return;
        }
        let jitter = config.jitter.mul_f64(rand::random::<f64>());
        tokio::select! {
            () = tokio::time::sleep(jitter) => {}
            () = shutdown.wait() => return,
        }
        if !unavailable() {
            continue;
        }
        info!(down_for = ?feed.stream_down_for(), "the operator's stream is unavailable: following the API server");
        feed.set_path(Path::ApiServer);
        let listed = Arc::new(Listed::default());
        let watch = watcher::Config::default().timeout(WATCH_TIMEOUT_SECS);
        let sessions = follow_sessions(
            Api::<AccessSession>::namespaced(client.clone(), &config.namespace),
            watch.clone(),
            sessions::MergedSessions::new(shared.clone(), listed.clone()),
            shutdown.clone(),
        );
        let policies = policies::follow(
            Api::<AccessPolicy>::all(client.clone()),
            watch,
            (shared.clone(), config.policy_namespaces.clone()),
            policies::Relists::RemoveMissing(listed.clone()),
            shutdown.clone(),
        );
        let probe = probe(
            Api::<AccessSession>::namespaced(client.clone(), &config.namespace),
            &feed,
            &listed,
        );
        let stream_back = wait_until(|| feed.stream_down_for().is_zero(), &mut shutdown);
        tokio::select! {
            () = sessions => {}
            () = policies => {}
            () = probe => {}
            back = stream_back => if !back { return },
        }
        feed.set_path(Path::OperatorStream);
        info!("the operator's stream is back: no longer following the API server");
    }
}

/// Polls `condition` until it holds (true) or shutdown (false).
async fn wait_until(condition: impl Fn() -> bool, shutdown: &mut Signal) -> bool {
    loop {
        if condition() {
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = shutdown.wait() => return false,
        }
    }
}

/// Marks the state current each time the API server answers while both watches are listed.
async fn probe(api: Api<AccessSession>, feed: &Feed, listed: &Listed) {
    let params = ListParams::default().limit(1);
    loop {
        let answered = tokio::time::timeout(PROBE_EVERY, api.list_metadata(&params)).await;
        if matches!(answered, Ok(Ok(_))) && listed.both() {
            feed.api_current();
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}
