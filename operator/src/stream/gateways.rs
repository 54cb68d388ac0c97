//! The gateways connected to this replica and the versions they acknowledged.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

/// A gateway that has not acked or held a stream for this long no longer counts as connected.
pub const CONNECTED_WINDOW_SECS: u64 = 30;

#[derive(Clone, Debug, Default)]
struct Gateway {
    streams: usize,
    last_seen: u64,
    acked: Option<u64>,
}

/// A gateway connected to this replica: id, acknowledged version (0 before its first ack),
/// last ack (unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connected {
    pub id: String,
    pub acked: u64,
    pub last_seen: u64,
}

/// Gateways of this replica, by id; shared by the streams, the relay and the status writer.
#[derive(Debug, Default)]
pub struct Gateways {
    gateways: Mutex<HashMap<String, Gateway>>,
}

impl Gateways {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Gateway>> {
        self.gateways.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn opened(&self, id: &str, now: u64) {
        let mut gateways = self.lock();
        let g = gateways.entry(id.to_owned()).or_default();
        g.streams += 1;
        g.last_seen = now;
    }

    pub fn closed(&self, id: &str, now: u64) {
        if let Some(g) = self.lock().get_mut(id) {
            g.streams = g.streams.saturating_sub(1);
            g.last_seen = now;
        }
    }

    /// The gateway enforces `version` of this replica's index.
    pub fn acked(&self, id: &str, version: u64, now: u64) {
        let mut gateways = self.lock();
        let g = gateways.entry(id.to_owned()).or_default();
        g.acked = Some(g.acked.map_or(version, |v| v.max(version)));
        g.last_seen = now;
    }

    /// Gateways that acked (or opened a stream) within the window: a gateway acks every frame
    /// it applies, heartbeats included, so a live one is never out of it.
    pub fn connected(&self, now: u64) -> Vec<Connected> {
        self.lock()
            .iter()
            .filter(|(_, g)| g.last_seen + CONNECTED_WINDOW_SECS > now)
            .map(|(id, g)| Connected {
                id: id.clone(),
                acked: g.acked.unwrap_or(0),
                last_seen: g.last_seen,
            })
            .collect()
    }

    pub fn connected_count(&self, now: u64) -> usize {
        self.lock()
            .values()
            .filter(|g| g.last_seen + CONNECTED_WINDOW_SECS > now)
            .count()
    }

    /// Drops gateways gone for long.
    pub fn collect(&self, now: u64) {
        self.lock()
            .retain(|_, g| g.streams > 0 || g.last_seen + 10 * CONNECTED_WINDOW_SECS > now);
    }
}
