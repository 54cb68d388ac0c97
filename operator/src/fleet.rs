//! The gateways connected to this replica and the versions they acknowledged.

use std::collections::HashMap;

/// A gateway that has not acked or held a stream for this long no longer counts as connected.
pub const CONNECTED_WINDOW_SECS: u64 = 30;

#[derive(Clone, Debug, Default)]
struct Gateway {
    streams: usize,
    last_seen: u64,
    acked: Option<u64>,
}

/// Gateways of this replica, by id.
#[derive(Debug, Default)]
pub struct Fleet {
    gateways: HashMap<String, Gateway>,
}

impl Fleet {
    pub fn opened(&mut self, id: &str, now: u64) {
        let g = self.gateways.entry(id.to_owned()).or_default();
        g.streams += 1;
        g.last_seen = now;
    }

    pub fn closed(&mut self, id: &str, now: u64) {
        if let Some(g) = self.gateways.get_mut(id) {
            g.streams = g.streams.saturating_sub(1);
            g.last_seen = now;
        }
    }

    /// The gateway enforces `version` of this replica's index.
    pub fn acked(&mut self, id: &str, version: u64, now: u64) {
        let g = self.gateways.entry(id.to_owned()).or_default();
        g.acked = Some(g.acked.map_or(version, |v| v.max(version)));
        g.last_seen = now;
    }

    /// Gateways that acked (or opened a stream) within the window: a gateway acks every frame
    /// it applies, heartbeats included, so a live one is never out of it.
    pub fn connected(&self, now: u64) -> impl Iterator<Item = (&str, Option<u64>, u64)> {
        self.gateways
            .iter()
            .filter(move |(_, g)| g.last_seen + CONNECTED_WINDOW_SECS > now)
            .map(|(id, g)| (id.as_str(), g.acked, g.last_seen))
    }

    pub fn connected_count(&self, now: u64) -> usize {
        self.connected(now).count()
    }

    /// Drops gateways gone for long.
    pub fn collect(&mut self, now: u64) {
        self.gateways
            .retain(|_, g| g.streams > 0 || g.last_seen + 10 * CONNECTED_WINDOW_SECS > now);
    }
}
