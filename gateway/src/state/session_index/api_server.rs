//! Standalone mode's session source: a watch on the `AccessSession` objects of the session
//! namespace, folded into the monotonic [`SessionIndex`]. A relist can only end sessions it no
//! longer lists, never revive one.

use super::SessionIndex;
use crate::shutdown::Signal;
use futures::StreamExt as _;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt as _, watcher},
};
use portcullis_crds::AccessSession;
use portcullis_runtime::Relist;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::{info, warn};

/// Watches the `AccessSession`s of `namespace` and publishes the index after every change.
pub fn watch_sessions(
    client: Client,
    namespace: &str,
    mut shutdown: Signal,
) -> watch::Receiver<Arc<SessionIndex>> {
    let api: Api<AccessSession> = Api::namespaced(client, namespace);
    let (tx, rx) = watch::channel(Arc::new(SessionIndex::default()));
    let mut watch = SessionWatch {
        index: SessionIndex::default(),
        relist: Relist::default(),
        collected_at: 0,
        namespace: namespace.to_owned(),
    };
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                () = shutdown.wait() => return,
            };
            let now = crate::clock::now();
            match event {
                None => return,
                Some(Err(error)) => {
                    let namespace = &watch.namespace;
                    warn!(%error, namespace, "session watch failed; retrying");
                }
                Some(Ok(event)) => {
                    if watch.apply(event, now) {
                        watch.publish(now, &tx);
                    }
                }
            }
        }
    });
    rx
}

/// The index as the watch builds it, between events.
struct SessionWatch {
    index: SessionIndex,
    /// Objects seen during a relist; whatever the index holds that a relist does not is gone.
    relist: Relist<String>,
    /// Sweeping expired entries is O(sessions): at most once a second, not per event.
    collected_at: u64,
    namespace: String,
}

impl SessionWatch {
    /// Applies one watch event. False for an object of a relist under way: nothing is
    /// published until the relist is complete.
    fn apply(&mut self, event: watcher::Event<AccessSession>, now: u64) -> bool {
        match event {
            watcher::Event::Init => self.relist.start(),
            watcher::Event::InitApply(session) => {
                if let Some(name) = session.metadata.name.clone() {
                    self.relist.listed(name);
                }
                self.index.apply(&session, now);
                return false;
            }
            watcher::Event::InitDone => self.relisted(),
            watcher::Event::Apply(session) => self.index.apply(&session, now),
            watcher::Event::Delete(session) => {
                if let Some(name) = &session.metadata.name {
                    self.index.end(name);
                }
            }
        }
        true
    }

    /// A relist is complete: sessions it did not list have ended, and the index is synced.
    fn relisted(&mut self) {
        for sid in self.relist.finish(self.index.entries.keys()) {
            self.index.end(&sid);
        }
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
    fn publish(&mut self, now: u64, tx: &watch::Sender<Arc<SessionIndex>>) {
        if now > self.collected_at {
            self.index.collect(now);
            self.collected_at = now;
        }
        if self.index.synced {
            tx.send_replace(Arc::new(self.index.clone()));
        }
    }
}
