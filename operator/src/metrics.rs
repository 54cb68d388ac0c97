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

/// A new metric, registered under `name`.
fn registered<M>(registry: &mut Registry, name: &str, help: &str) -> M
where
    M: prometheus_client::registry::Metric + Clone + Default,
{
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
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
    certificate_expiry: Gauge,
    status_writes: Family<KindLabel, Counter>,
    status_failures: Family<KindLabel, Counter>,
    sessions_collected: Counter,
    relays: Family<KindLabel, Counter>,
    connections_closed: Family<KindLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis_operator");
        let r = &mut registry;
        let metrics = Self {
            version: registered(r, "state_version", "Version of the streamed access state"),
            streams: registered(r, "streams", "Open gateway streams on this replica"),
            connected: registered(
                r,
                "gateways_connected",
                "Gateways connected to this replica",
            ),
            frames: registered(r, "frames_sent", "Frames sent to gateways, by kind"),
            refused: registered(
                r,
                "requests_refused",
                "Stream API requests refused, by reason",
            ),
            skipped: registered(
                r,
                "objects_skipped",
                "Malformed objects skipped by the watches, by kind",
            ),
            leader: registered(r, "leader", "1 while this replica holds the Lease"),
            status_writes: registered(r, "status_writes", "Status writes by the leader, by kind"),
            status_failures: registered(
                r,
                "status_write_failures",
                "Status writes that failed, by kind",
            ),
            sessions_collected: registered(
                r,
                "sessions_collected",
                "AccessSessions deleted after their expiry plus the grace",
            ),
            relays: registered(
                r,
                "peer_relays",
                "Relays of gateway facts to the leader, by outcome",
            ),
            certificate_expiry: registered(
                r,
                "tls_certificate_expiry_timestamp_seconds",
                "When the serving certificate presented now expires (unix seconds)",
            ),
            connections_closed: registered(
                r,
                "connections_closed",
                "Connections the operator closed itself (client_limit, handshake_timeout, \
                 header_timeout, idle)",
            ),
            // Replaced below, once the metrics no longer borrow the registry.
            registry: Arc::new(Mutex::new(Registry::default())),
        };
        metrics.zero_status_writes();
        Self {
            registry: Arc::new(Mutex::new(registry)),
            ..metrics
        }
    }

    /// Status writes of each kind exist at zero from the start, so an alert on their rate sees
    /// the first failure.
    fn zero_status_writes(&self) {
        for object in [StatusObject::Policy, StatusObject::Session] {
            let kind = object.label();
            let _ = self.status_writes.get_or_create(&KindLabel { kind });
            let _ = self.status_failures.get_or_create(&KindLabel { kind });
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
    pub fn certificate_expires(&self, at: i64) {
        self.certificate_expiry.set(at);
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

    /// Counts a connection the server closed itself.
    pub fn connection_closed(&self, reason: portcullis_runtime::server::Closed) {
        let kind = reason.label();
        self.connections_closed
            .get_or_create(&KindLabel { kind })
            .inc();
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
