//! The series of the access state a gateway enforces: its version, where it comes from, how
//! fresh it is, and when the operator's stream last moved it. Read off the state at each
//! scrape (`crate::ops`), never updated on the request path.

use super::{Registrar, labels::SourceLabel};
use prometheus_client::metrics::{family::Family, gauge::Gauge};
use std::{sync::atomic::AtomicU64, time::Duration};

const STATE_VERSION: &str = "Version of the access state being enforced";
const OPERATOR_STREAM_VERSION: &str =
    "Version of the operator's state stream last applied (cluster mode)";
const STREAM_ADVANCED: &str = "\
    When the operator stream's version last moved (Unix seconds): the moment this gateway began \
    enforcing the newest change; compare across the fleet to see how far apart gateways apply it";
const STATE_AGE_SECONDS: &str = "\
    Time since the state was last proved current: by a frame from the operator (heartbeats \
    included) or by the API-server fallback (cluster mode; -1 before the first)";
const STATE_BEHIND: &str = "\
    1 while the state is older than --state-stale-after (alert on it; readiness does not \
    change unless --refuse-stale-state)";
const STATE_SOURCE: &str = "\
    1 for the path the state follows now: operator_stream, or api_server (the gateway's own \
    watch while the operator's stream is unavailable)";
const REVOCATION_WATCH: &str = "\
    1 once the gateway's own watch of revoked sessions and policy epochs at the API server has \
    listed (cluster mode): revocations reach it whatever the operator's stream does";

/// What the operator-stream metrics show, read off the feed at a scrape.
pub struct StreamFacts {
    pub version: u64,
    /// When the version last moved (Unix seconds).
    pub advanced_at: Option<f64>,
    pub age: Option<Duration>,
    pub behind: bool,
    pub source: &'static str,
}

/// The state series.
#[derive(Clone)]
pub struct StateMetrics {
    state_version: Gauge,
    stream_version: Gauge,
    stream_advanced: Gauge<f64, AtomicU64>,
    state_age: Gauge<f64, AtomicU64>,
    state_behind: Gauge,
    state_source: Family<SourceLabel, Gauge>,
    revocation_watch: Gauge,
}

impl StateMetrics {
    pub(super) fn register(add: &mut Registrar<'_>) -> Self {
        Self {
            state_version: add.metric("state_version", STATE_VERSION, Gauge::default()),
            stream_version: add.metric(
                "operator_stream_version",
                OPERATOR_STREAM_VERSION,
                Gauge::default(),
            ),
            stream_advanced: add.metric(
                "operator_stream_advanced_timestamp_seconds",
                STREAM_ADVANCED,
                Gauge::default(),
            ),
            state_age: add.metric("state_age_seconds", STATE_AGE_SECONDS, Gauge::default()),
            state_behind: add.metric("state_behind", STATE_BEHIND, Gauge::default()),
            state_source: add.metric("state_source", STATE_SOURCE, Family::default()),
            revocation_watch: add.metric("revocation_watch", REVOCATION_WATCH, Gauge::default()),
        }
    }

    pub fn state_applied(&self, version: u64) {
        self.state_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
    }

    /// The operator stream's version, the age of the state, whether it is behind and the
    /// path (`source`) it follows.
    pub fn operator_stream(&self, stream: StreamFacts) {
        let StreamFacts {
            version,
            advanced_at,
            age,
            behind,
            source,
        } = stream;
        self.stream_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
        if let Some(at) = advanced_at {
            self.stream_advanced.set(at);
        }
        self.state_age.set(age.map_or(-1.0, |a| a.as_secs_f64()));
        self.state_behind.set(i64::from(behind));
        for path in ["operator_stream", "api_server"] {
            self.state_source
                .get_or_create(&SourceLabel { source: path })
                .set(i64::from(path == source));
        }
    }

    /// Whether the always-on revocation watch has listed.
    pub fn revocation_watch(&self, listed: bool) {
        self.revocation_watch.set(i64::from(listed));
    }
}
