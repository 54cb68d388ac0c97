//! Freshness of the operator stream, in its own module because both sides read it: the stream
//! touches it on every frame, and the session index carries it so that readiness can say when
//! the state went stale.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Freshness of the state, shared with readiness and metrics.
#[derive(Debug)]
pub struct Feed {
    /// Milliseconds since the Unix epoch of the last frame; 0 before the first.
    last_frame_ms: AtomicU64,
    stream_version: AtomicU64,
    pub stale_after: Duration,
}

impl Feed {
    /// A feed that has seen no frame yet.
    pub(super) fn new(stale_after: Duration) -> Self {
        Self {
            last_frame_ms: AtomicU64::new(0),
            stream_version: AtomicU64::new(0),
            stale_after,
        }
    }

    /// Records a frame that brought the stream to `version`.
    pub(super) fn touch(&self, version: u64) {
        self.last_frame_ms.store(now_ms(), Ordering::SeqCst);
        self.stream_version.store(version, Ordering::SeqCst);
    }

    /// Age of the state: time since the last frame (None before the first).
    pub fn age(&self) -> Option<Duration> {
        match self.last_frame_ms.load(Ordering::SeqCst) {
            0 => None,
            at => Some(Duration::from_millis(now_ms().saturating_sub(at))),
        }
    }

    /// The version of the operator stream last applied.
    pub fn stream_version(&self) -> u64 {
        self.stream_version.load(Ordering::SeqCst)
    }

    /// Why the gateway should not receive traffic, if it should not.
    pub fn not_ready(&self) -> Option<String> {
        match self.age() {
            None => Some("no state from the operator yet".into()),
            Some(age) if age > self.stale_after => Some(format!(
                "state is {}s old (stale after {}s)",
                age.as_secs(),
                self.stale_after.as_secs()
            )),
            Some(_) => None,
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
