//! The index as the watches, the streams and the leader's tasks share it: one mutex, a version
//! channel the streams wake on, and whether every watch has listed once.

use super::{Index, log::Line};
use crate::metrics::Metrics;
use std::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
};
use tokio::sync::watch;

/// One per process.
pub struct SharedIndex {
    index: Mutex<Index>,
    /// The index version after every change: streams wake on it.
    changed: watch::Sender<u64>,
    /// Calls of [`SharedIndex::update`] (every watch event, whether or not it moved the
    /// version): the status writer skips a pass when neither this nor the gateways' facts moved.
    updates: AtomicU64,
    metrics: Metrics,
    /// AccessPolicy watches (one per watched namespace, or one for all) yet to list once.
    policies_pending: AtomicUsize,
    /// Secret watches (one per secret namespace, or one for all) yet to list once.
    secrets_pending: AtomicUsize,
    sessions_synced: AtomicBool,
    hosts_synced: AtomicBool,
    namespaces_synced: AtomicBool,
    /// The last snapshot rendered, reused while the version has not moved: after an operator
    /// restart every gateway reconnects at once, and a snapshot of many sessions is worth
    /// building and serializing once, not once per gateway.
    snapshot: Mutex<Option<Line>>,
}

/// What to send a gateway to bring it up to date.
pub struct CatchUp {
    /// The frames, rendered.
    pub lines: Vec<Line>,
    /// The version they bring the gateway to.
    pub version: u64,
    /// Whether they are a snapshot (the gateway's version was unknown or too old).
    pub snapshot: bool,
}

/// What a watch follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watched {
    Policies,
    Secrets,
    Sessions,
    Hosts,
    Namespaces,
}

impl Watched {
    /// The object kind, for logs and metric labels.
    pub fn kind(self) -> &'static str {
        match self {
            Watched::Policies => "AccessPolicy",
            Watched::Secrets => "Secret",
            Watched::Sessions => "AccessSession",
            Watched::Hosts => "AccessHost",
            Watched::Namespaces => "Namespace",
        }
    }
}

impl SharedIndex {
    pub fn new(index: Index, metrics: Metrics) -> Self {
        let (changed, _) = watch::channel(index.version());
        Self {
            index: Mutex::new(index),
            changed,
            updates: AtomicU64::new(0),
            metrics,
            policies_pending: AtomicUsize::new(1),
            secrets_pending: AtomicUsize::new(1),
            sessions_synced: AtomicBool::new(false),
            hosts_synced: AtomicBool::new(false),
            namespaces_synced: AtomicBool::new(false),
            snapshot: Mutex::new(None),
        }
    }

    /// The whole state now, rendered. The frame is built under the index lock (a consistent
    /// state) but serialized outside it, so the watches are not held up by the rendering.
    pub fn snapshot(&self) -> Line {
        let cached = |version: u64| {
            let cache = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
            cache.as_ref().filter(|l| l.version == version).cloned()
        };
        let frame = {
            let index = self.lock();
            if let Some(line) = cached(index.version()) {
                return line;
            }
            index.snapshot()
        };
        let line = Line::render(&frame);
        let mut cache = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        if cache.as_ref().is_none_or(|l| l.version <= line.version) {
            *cache = Some(line.clone());
        }
        line
    }

    /// What brings a gateway that holds this replica's state at version `after` (`None`:
    /// nothing of this replica's) up to date: the deltas since then if the log still holds
    /// them, else a snapshot.
    pub fn catch_up(&self, after: Option<u64>) -> CatchUp {
        {
            let index = self.lock();
            if let Some(lines) = after.and_then(|v| index.lines_since(v)) {
                return CatchUp {
                    lines,
                    version: index.version(),
                    snapshot: false,
                };
            }
        }
        let snapshot = self.snapshot();
        CatchUp {
            version: snapshot.version,
            lines: vec![snapshot],
            snapshot: true,
        }
    }

    /// This replica's instance id (a gateway resumes only the versions of the same one).
    pub fn instance(&self) -> String {
        self.lock().instance().to_owned()
    }

    /// Runs `f` on the index and wakes the streams if the version moved.
    pub fn update<T>(&self, f: impl FnOnce(&mut Index) -> T) -> T {
        let mut index = self.lock();
        let result = f(&mut index);
        let version = index.version();
        self.updates.fetch_add(1, Ordering::SeqCst);
        drop(index);
        self.changed.send_if_modified(|v| {
            let moved = *v != version;
            *v = version;
            moved
        });
        self.metrics.index_version(version);
        result
    }

    /// How many updates the index has had.
    pub fn updates(&self) -> u64 {
        self.updates.load(Ordering::SeqCst)
    }

    /// The index, read-only use (a poisoned lock still holds a consistent index: every
    /// mutation is a whole call).
    pub fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// How many Secret watches must list before the index is synced (default one).
    pub fn expect_secret_watches(&self, watches: usize) {
        self.secrets_pending.store(watches, Ordering::SeqCst);
    }

    /// How many AccessPolicy watches must list before the index is synced (default one).
    pub fn expect_policy_watches(&self, watches: usize) {
        self.policies_pending.store(watches, Ordering::SeqCst);
    }

    /// A watch listed for the first time (each watch calls this once).
    pub fn mark_synced(&self, what: Watched) {
        // Saturating: never below zero.
        let count_down = |pending: &AtomicUsize| {
            let _ = pending.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        };
        let flag = match what {
            Watched::Secrets => return count_down(&self.secrets_pending),
            Watched::Policies => return count_down(&self.policies_pending),
            Watched::Sessions => &self.sessions_synced,
            Watched::Hosts => &self.hosts_synced,
            Watched::Namespaces => &self.namespaces_synced,
        };
        flag.store(true, Ordering::SeqCst);
    }

    /// Every watch has listed once: before that a snapshot would be incomplete (a gateway
    /// would end the sessions it lacks, and a claim an AccessHost refuses could be streamed).
    pub fn synced(&self) -> bool {
        self.secrets_pending.load(Ordering::SeqCst) == 0
            && self.policies_pending.load(Ordering::SeqCst) == 0
            && [
                &self.sessions_synced,
                &self.hosts_synced,
                &self.namespaces_synced,
            ]
            .iter()
            .all(|flag| flag.load(Ordering::SeqCst))
    }
}
