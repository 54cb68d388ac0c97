//! A watch on the `AccessSession` objects of the session namespace, folded by the one session
//! merge rule into a [`SessionSink`]: standalone mode's own index, or (cluster mode, while the
//! operator's stream is unavailable) the merged fleet state. A relist can only end sessions it
//! no longer lists, never revive one.

use super::SessionIndex;
use crate::shutdown::Signal;
use kube::{Api, Client, runtime::watcher};
use portcullis_crds::AccessSession;
use portcullis_protocol::SessionEntry;
use portcullis_runtime::Relist;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::info;

/// What a watch of session objects feeds.
pub trait SessionSink: Send + 'static {
    /// Merges one observation; whether anything changed.
    fn observe(&mut self, session: &SessionEntry, now: u64) -> bool;
    /// Session `sid` was deleted, or a complete list lacks it: it has ended. Whether it was
    /// live.
    fn end(&mut self, sid: &str) -> bool;
    /// Every session id held (what a relist compares against).
    fn sids(&self) -> Vec<String>;
    /// A complete list was applied: from now on the sink is synced.
    fn listed(&mut self);
    /// Publishes what changed (called after changes, and after every complete list).
    fn publish(&mut self, now: u64);
}

/// Watches the `AccessSession`s of `namespace` and publishes the index after every change
/// (standalone mode with `--session-namespace`).
pub fn watch_sessions(
    client: Client,
    namespace: &str,
    shutdown: Signal,
) -> watch::Receiver<Arc<SessionIndex>> {
    let api: Api<AccessSession> = Api::namespaced(client, namespace);
    let (tx, rx) = watch::channel(Arc::new(SessionIndex::default()));
    let sink = IndexSink {
        index: SessionIndex::default(),
        tx,
        collected_at: 0,
        namespace: namespace.to_owned(),
    };
    tokio::spawn(follow_sessions(
        api,
        watcher::Config::default(),
        sink,
        shutdown,
    ));
    rx
}

/// Follows the session objects of `api` into `sink` until shutdown (or the watch ends).
pub async fn follow_sessions<S: SessionSink>(
    api: Api<AccessSession>,
    config: watcher::Config,
    mut sink: S,
    mut shutdown: Signal,
) {
    let mut watch = crate::state::Watch::new(api, config, "sessions");
    let mut relist = Relist::<String>::default();
    while let Some(event) = watch.next(&mut shutdown).await {
        let now = crate::clock::now();
        if apply(&mut sink, &mut relist, event, now) {
            sink.publish(now);
        }
    }
}

/// Applies one watch event. False for an object of a relist under way: nothing is published
/// until the relist is complete.
fn apply<S: SessionSink>(
    sink: &mut S,
    relist: &mut Relist<String>,
    event: watcher::Event<AccessSession>,
    now: u64,
) -> bool {
    let observe = |sink: &mut S, session: &AccessSession| {
        SessionEntry::try_from(session).is_ok_and(|seen| sink.observe(&seen, now))
    };
    match event {
        watcher::Event::Init => relist.start(),
        watcher::Event::InitApply(session) => {
            if let Some(name) = session.metadata.name.clone() {
                relist.listed(name);
            }
            observe(sink, &session);
            return false;
        }
        watcher::Event::InitDone => {
            let held = sink.sids();
            for sid in relist.finish(held.iter()) {
                sink.end(&sid);
            }
            sink.listed();
        }
        watcher::Event::Apply(session) => {
            observe(sink, &session);
        }
        watcher::Event::Delete(session) => {
            if let Some(name) = &session.metadata.name {
                sink.end(name);
            }
        }
    }
    true
}

/// Standalone mode's sink: the index itself, published on a watch channel.
struct IndexSink {
    index: SessionIndex,
    tx: watch::Sender<Arc<SessionIndex>>,
    /// Sweeping expired entries is O(sessions): at most once a second, not per event.
    collected_at: u64,
    namespace: String,
}

impl SessionSink for IndexSink {
    fn observe(&mut self, session: &SessionEntry, now: u64) -> bool {
        self.index.observe(session, now)
    }

    fn end(&mut self, sid: &str) -> bool {
        self.index.end(sid)
    }

    fn sids(&self) -> Vec<String> {
        self.index.entries.keys().cloned().collect()
    }

    fn listed(&mut self) {
        if !self.index.synced {
            let namespace = &self.namespace;
            info!(
                sessions = self.index.entries.len(),
                namespace, "session index synced"
            );
        }
        self.index.synced = true;
    }

    /// Sweeps expired entries (at most once a second) and, once synced, publishes the index.
    fn publish(&mut self, now: u64) {
        if now > self.collected_at {
            self.index.collect(now);
            self.collected_at = now;
        }
        if self.index.synced {
            self.tx.send_replace(Arc::new(self.index.clone()));
        }
    }
}
