//! Prometheus metrics, with bounded labels.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// What a status write was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusObject {
    Policy,
    Session,
}

impl StatusObject {
    fn label(self) -> &'static str {
        match self {
            StatusObject::Policy => "AccessPolicy",
            StatusObject::Session => "AccessSession",
        }
    }
}

/// How a relay of gateway facts went, on either side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayOutcome {
    /// A follower's delta relay was accepted.
    Sent,
    /// A follower's full relay was accepted.
    SentFull,
    /// The leader took a relay in.
    Received,
    /// The leader asked for (or a follower was asked for) a full relay.
    Resync,
    /// The Lease names no leader URL yet.
    NoLeader,
    Failed,
}

impl RelayOutcome {
    fn label(self) -> &'static str {
        match self {
            RelayOutcome::Sent => "sent",
            RelayOutcome::SentFull => "sent_full",
            RelayOutcome::Received => "received",
            RelayOutcome::Resync => "resync",
            RelayOutcome::NoLeader => "no_leader",
            RelayOutcome::Failed => "failed",
        }
    }
}

/// The operator's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    version: Gauge,
    streams: Gauge,
    connected: Gauge,
    frames: Family<KindLabel, Counter>,
    refused: Family<KindLabel, Counter>,
    skipped: Family<KindLabel, Counter>,
    leader: Gauge,
    status_writes: Family<KindLabel, Counter>,
    status_failures: Family<KindLabel, Counter>,
    sessions_collected: Counter,
    relays: Family<KindLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis_operator");
        let version = Gauge::default();
        registry.register(
            "state_version",
            "Version of the streamed access state",
            version.clone(),
        );
        let streams = Gauge::default();
        registry.register(
            "streams",
            "Open gateway streams on this replica",
            streams.clone(),
        );
        let connected = Gauge::default();
        registry.register(
            "gateways_connected",
            "Gateways connected to this replica",
            connected.clone(),
        );
        let frames = Family::<KindLabel, Counter>::default();
        registry.register(
            "frames_sent",
            "Frames sent to gateways, by kind",
            frames.clone(),
        );
        let refused = Family::<KindLabel, Counter>::default();
        registry.register(
            "requests_refused",
            "Stream API requests refused, by reason",
            refused.clone(),
        );
        let skipped = Family::<KindLabel, Counter>::default();
        registry.register(
            "objects_skipped",
            "Malformed objects skipped by the watches, by kind",
            skipped.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the Lease",
            leader.clone(),
        );
        let status_writes = Family::<KindLabel, Counter>::default();
        registry.register(
            "status_writes",
            "Status writes by the leader, by kind",
            status_writes.clone(),
        );
        let status_failures = Family::<KindLabel, Counter>::default();
        registry.register(
            "status_write_failures",
            "Status writes that failed, by kind",
            status_failures.clone(),
        );
        let sessions_collected = Counter::default();
        registry.register(
            "sessions_collected",
            "AccessSessions deleted after their expiry plus the grace",
            sessions_collected.clone(),
        );
        let relays = Family::<KindLabel, Counter>::default();
        registry.register(
            "peer_relays",
            "Relays of gateway facts to the leader, by outcome",
            relays.clone(),
        );
        Self {
            registry: Arc::new(Mutex::new(registry)),
            status_writes,
            status_failures,
            sessions_collected,
            relays,
            version,
            streams,
            connected,
            frames,
            refused,
            skipped,
            leader,
        }
    }

    pub fn index_version(&self, version: u64) {
        self.version.set(i64::try_from(version).unwrap_or(i64::MAX));
    }
    pub fn stream_opened(&self) {
        self.streams.inc();
    }
    pub fn stream_closed(&self) {
        self.streams.dec();
    }
    pub fn gateways_connected(&self, n: usize) {
        self.connected.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    pub fn frame_sent(&self, kind: &'static str) {
        self.frames.get_or_create(&KindLabel { kind }).inc();
    }
    pub fn refused(&self, kind: &'static str) {
        self.refused.get_or_create(&KindLabel { kind }).inc();
    }
    pub fn skipped(&self, kind: &'static str) {
        self.skipped.get_or_create(&KindLabel { kind }).inc();
    }
    pub fn leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn status_written(&self, object: StatusObject) {
        let kind = object.label();
        self.status_writes.get_or_create(&KindLabel { kind }).inc();
    }
    pub fn status_failed(&self, object: StatusObject) {
        let kind = object.label();
        self.status_failures
            .get_or_create(&KindLabel { kind })
            .inc();
    }
    pub fn sessions_collected(&self, n: usize) {
        self.sessions_collected
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }
    pub fn relay(&self, outcome: RelayOutcome) {
        let kind = outcome.label();
        self.relays.get_or_create(&KindLabel { kind }).inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }
}
