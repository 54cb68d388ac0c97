//! Revocations a logout could not write yet. Logout always signs the user out at once (cookies
//! cleared, the session ended in this gateway's memory); when the API server cannot take the
//! revocation right then, it waits here and is written as soon as the API server is back,
//! retried with a doubling backoff.
//!
//! The queue is bounded ([`CAPACITY`]); `portcullis_gateway_pending_revocations` counts what
//! waits. It lives in this process's memory only: a gateway that dies before the write loses
//! it, and the session then still ends at its absolute lifetime (`expiresAt`), or earlier by an
//! administrator's revocation; the browser that logged out holds no cookie for it any more.

use super::SessionRecorder;
use crate::metrics::Metrics;
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, atomic::AtomicBool, atomic::Ordering},
    time::Duration,
};
use tokio::sync::Notify;
use tracing::{info, warn};

/// Most revocations waiting at once; a logout beyond it is still signed out locally.
pub const CAPACITY: usize = 10_000;
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The revocations waiting for the API server, and the task that writes them.
pub struct PendingRevocations {
    recorder: SessionRecorder,
    metrics: Metrics,
    queue: Mutex<VecDeque<(String, String)>>,
    wake: Notify,
    started: AtomicBool,
}

impl PendingRevocations {
    pub fn new(recorder: SessionRecorder, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            recorder,
            metrics,
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            started: AtomicBool::new(false),
        })
    }

    /// Queues the revocation of `sid` with `reason`; false when the queue is full.
    pub fn push(self: &Arc<Self>, sid: &str, reason: &str) -> bool {
        let len = {
            let mut queue = self.lock();
            if queue.len() >= CAPACITY {
                return false;
            }
            if !queue.iter().any(|(s, _)| s == sid) {
                queue.push_back((sid.to_owned(), reason.to_owned()));
            }
            queue.len()
        };
        self.metrics.pending_revocations(len);
        // The writer starts with the first revocation that has to wait.
        if !self.started.swap(true, Ordering::SeqCst) {
            tokio::spawn(self.clone().write_all());
        }
        self.wake.notify_one();
        true
    }

    /// How many revocations wait.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(String, String)>> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the queue in order, forever: the front one until it lands, then the next.
    async fn write_all(self: Arc<Self>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let front = self.lock().front().cloned();
            let Some((sid, reason)) = front else {
                self.wake.notified().await;
                continue;
            };
            match self.recorder.revoke(&sid, &reason).await {
                Ok(()) => {
                    info!(sid, "a revocation that had to wait is written");
                    let len = {
                        let mut queue = self.lock();
                        queue.pop_front();
                        queue.len()
                    };
                    self.metrics.pending_revocations(len);
                    backoff = BACKOFF_MIN;
                }
                Err(error) => {
                    warn!(%error, sid, pending = self.len(), "the revocation still cannot be written; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}
