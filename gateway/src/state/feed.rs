//! Freshness of the state and where it comes from, in its own module because every side reads
//! it: the operator stream and the API-server fallback touch it, the session index carries it,
//! readiness and metrics report it.
//!
//! Readiness means "can serve correctly": the gateway has applied a complete state once. A
//! control-plane outage does not make a synced gateway NotReady (static stability): it keeps
//! enforcing its last state, and the age of that state is a metric to alert on
//! (`portcullis_gateway_state_age_seconds`, `portcullis_gateway_state_behind`). Refusing
//! traffic past `--state-stale-after` is an explicit opt-in (`--refuse-stale-state`) that
//! trades availability for freshness.

use std::{
    sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering},
    time::Duration,
};

/// Which source currently feeds the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// The operator's push stream (the fast path).
    OperatorStream,
    /// The gateway's own watch of the API server, while the stream is unavailable.
    ApiServer,
}

impl Path {
    /// The `source` label and the word `/readyz` uses.
    pub fn label(self) -> &'static str {
        match self {
            Path::OperatorStream => "operator_stream",
            Path::ApiServer => "api_server",
        }
    }
}

/// Freshness of the state, shared with readiness and metrics.
#[derive(Debug)]
pub struct Feed {
    /// Milliseconds since the Unix epoch of the last stream frame; 0 before the first.
    last_frame_ms: AtomicU64,
    /// Milliseconds since the Unix epoch when the API-server fallback last proved its watches
    /// current; 0 when it never did.
    last_api_ms: AtomicU64,
    stream_version: AtomicU64,
    /// Microseconds since the Unix epoch when the stream's version last moved: the moment this
    /// gateway began enforcing the newest change (a revocation, a policy edit). Comparing it
    /// across the fleet shows how far apart gateways apply the same change.
    advanced_us: AtomicU64,
    /// Whether a stream connection is open and has applied a frame.
    stream_up: AtomicBool,
    /// Since when (ms) the stream is down; set at start (never connected).
    stream_down_since_ms: AtomicU64,
    path: AtomicU8,
    /// Whether the always-on revocation watch has listed the revoked sessions once.
    revocations_listed: AtomicBool,
    /// The state counts as behind past this age.
    pub stale_after: Duration,
    /// Opt-in: `/readyz` fails while the state is behind.
    pub refuse_stale: bool,
}

impl Feed {
    /// A feed that has seen no frame yet.
    pub fn new(stale_after: Duration, refuse_stale: bool) -> Self {
        Self {
            last_frame_ms: AtomicU64::new(0),
            last_api_ms: AtomicU64::new(0),
            stream_version: AtomicU64::new(0),
            advanced_us: AtomicU64::new(0),
            stream_up: AtomicBool::new(false),
            stream_down_since_ms: AtomicU64::new(now_ms()),
            path: AtomicU8::new(0),
            revocations_listed: AtomicBool::new(false),
            stale_after,
            refuse_stale,
        }
    }

    /// Records a stream frame that brought the stream to `version`.
    pub(super) fn touch(&self, version: u64) {
        self.last_frame_ms.store(now_ms(), Ordering::SeqCst);
        // The time first, then the version (one writer: the follower): whoever reads the new
        // version reads the time it was applied with it.
        if self.stream_version.load(Ordering::SeqCst) != version {
            self.advanced_us.store(now_us(), Ordering::SeqCst);
        }
        self.stream_version.store(version, Ordering::SeqCst);
        self.stream_up.store(true, Ordering::SeqCst);
    }

    /// The stream connection ended.
    pub(super) fn stream_lost(&self) {
        if self.stream_up.swap(false, Ordering::SeqCst) {
            self.stream_down_since_ms.store(now_ms(), Ordering::SeqCst);
        }
    }

    /// How long the stream has been down (zero while it is up).
    pub fn stream_down_for(&self) -> Duration {
        if self.stream_up.load(Ordering::SeqCst) {
            return Duration::ZERO;
        }
        let since = self.stream_down_since_ms.load(Ordering::SeqCst);
        Duration::from_millis(now_ms().saturating_sub(since))
    }

    /// Whether the stream is up and delivered a frame within `within`.
    pub fn stream_fresh(&self, within: Duration) -> bool {
        self.stream_up.load(Ordering::SeqCst)
            && now_ms().saturating_sub(self.last_frame_ms.load(Ordering::SeqCst))
                <= u64::try_from(within.as_millis()).unwrap_or(u64::MAX)
    }

    /// The API-server fallback proved its watches current now.
    pub(super) fn api_current(&self) {
        self.last_api_ms.store(now_ms(), Ordering::SeqCst);
    }

    /// The always-on revocation watch listed the revoked sessions.
    pub(super) fn revocations_listed(&self) {
        self.revocations_listed.store(true, Ordering::SeqCst);
    }

    /// Whether revocations reach this gateway from the API server directly (besides the
    /// stream): the always-on watch has listed once (it resumes by itself after failures).
    pub fn revocations_watched(&self) -> bool {
        self.revocations_listed.load(Ordering::SeqCst)
    }

    /// The path the state follows now.
    pub(super) fn set_path(&self, path: Path) {
        let code = match path {
            Path::OperatorStream => 0,
            Path::ApiServer => 1,
        };
        self.path.store(code, Ordering::SeqCst);
    }

    /// The path the state follows now.
    pub fn path(&self) -> Path {
        match self.path.load(Ordering::SeqCst) {
            1 => Path::ApiServer,
            _ => Path::OperatorStream,
        }
    }

    /// Age of the state: time since the freshest source last proved it current (None before
    /// the first frame).
    pub fn age(&self) -> Option<Duration> {
        let frame = self.last_frame_ms.load(Ordering::SeqCst);
        if frame == 0 {
            return None;
        }
        let at = frame.max(self.last_api_ms.load(Ordering::SeqCst));
        Some(Duration::from_millis(now_ms().saturating_sub(at)))
    }

    /// Whether the state is older than `--state-stale-after` (or there is none yet).
    pub fn behind(&self) -> bool {
        self.age().is_none_or(|age| age > self.stale_after)
    }

    /// The version of the operator stream last applied.
    pub fn stream_version(&self) -> u64 {
        self.stream_version.load(Ordering::SeqCst)
    }

    /// When the stream's version last moved, in seconds since the Unix epoch (microsecond
    /// precision); `None` before the first frame.
    pub fn advanced_at(&self) -> Option<f64> {
        match self.advanced_us.load(Ordering::SeqCst) {
            0 => None,
            us => Some(us as f64 / 1e6),
        }
    }

    /// Why the gateway should not receive traffic, if it should not: before its first state;
    /// past `--state-stale-after` only with `--refuse-stale-state`.
    pub fn not_ready(&self) -> Option<String> {
        match self.age() {
            None => Some("no state from the operator yet".into()),
            Some(age) if self.refuse_stale && age > self.stale_after => Some(format!(
                "state is {}s old (stale after {}s, --refuse-stale-state)",
                age.as_secs(),
                self.stale_after.as_secs()
            )),
            Some(_) => None,
        }
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synced_gateway_stays_ready_however_old_its_state_unless_it_opted_in() {
        for refuse in [false, true] {
            let feed = Feed::new(Duration::ZERO, refuse);
            assert!(feed.not_ready().is_some(), "ready before any state");
            feed.touch(1);
            feed.last_frame_ms
                .store(now_ms() - 60_000, Ordering::SeqCst);
            assert!(feed.behind());
            assert_eq!(feed.not_ready().is_some(), refuse, "refuse_stale={refuse}");
            // The fallback proving the state current makes it fresh again.
            let feed = Feed::new(Duration::from_secs(30), refuse);
            feed.touch(1);
            feed.last_frame_ms
                .store(now_ms() - 60_000, Ordering::SeqCst);
            assert!(feed.behind());
            feed.api_current();
            assert!(!feed.behind());
            assert!(feed.not_ready().is_none());
        }
    }

    #[test]
    fn the_advance_time_moves_with_the_version_not_with_heartbeats() {
        let feed = Feed::new(Duration::from_secs(30), false);
        assert_eq!(feed.advanced_at(), None);
        feed.touch(4);
        let first = feed.advanced_at().expect("advanced");
        let now = now_us() as f64 / 1e6;
        assert!(first <= now && now - first < 5.0, "{first} vs {now}");
        // A heartbeat at the same version is not a change.
        feed.advanced_us.store(1_000_000, Ordering::SeqCst);
        feed.touch(4);
        assert_eq!(feed.advanced_at(), Some(1.0));
        feed.touch(5);
        assert!(feed.advanced_at() > Some(first - 1.0));
    }

    #[test]
    fn the_stream_is_down_from_start_until_a_frame_and_after_a_loss() {
        let feed = Feed::new(Duration::from_secs(30), false);
        assert!(!feed.stream_fresh(Duration::from_secs(60)));
        feed.touch(3);
        assert_eq!(feed.stream_down_for(), Duration::ZERO);
        assert!(feed.stream_fresh(Duration::from_secs(1)));
        feed.stream_lost();
        assert!(!feed.stream_fresh(Duration::from_secs(60)));
        assert_eq!(feed.path(), Path::OperatorStream);
        feed.set_path(Path::ApiServer);
        assert_eq!(feed.path(), Path::ApiServer);
    }
}
