//! The gateways connected to this replica and the versions they acknowledged.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

/// Relayed facts older than this are stale (a follower relays every second).
pub const CONNECTED_WINDOW_SECS: u64 = 30;
/// A gateway with no stream open here and nothing heard from it (stream, ack) for this long is
/// gone. Until then it stays in the denominator of `GATEWAYS n/n` and of a revocation's
/// enforcement, as behind for whatever it did not acknowledge: a gateway that stopped
/// acknowledging (partitioned, stuck) must not make the count look complete.
pub const GONE_AFTER_SECS: u64 = 120;

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

    /// Gateways that hold a stream here or were heard from within [`GONE_AFTER_SECS`]: a
    /// gateway acks every frame it applies, heartbeats included, so a live one acks every few
    /// seconds; one that holds its stream but stopped acking is counted, as behind.
    pub fn connected(&self, now: u64) -> Vec<Connected> {
        self.lock()
            .iter()
            .filter(|(_, g)| g.counted(now))
            .map(|(id, g)| Connected {
                id: id.clone(),
                acked: g.acked.unwrap_or(0),
                last_seen: g.last_seen,
            })
            .collect()
    }

    pub fn connected_count(&self, now: u64) -> usize {
        self.lock().values().filter(|g| g.counted(now)).count()
    }

    /// Drops gateways gone for long.
    pub fn collect(&self, now: u64) {
        self.lock()
            .retain(|_, g| g.streams > 0 || g.last_seen + 10 * GONE_AFTER_SECS > now);
    }
}

impl Gateway {
    /// Whether the gateway still counts: a stream open, or heard from recently.
    fn counted(&self, now: u64) -> bool {
        self.streams > 0 || self.last_seen + GONE_AFTER_SECS > now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_that_stops_acking_stays_counted_until_it_is_gone() {
        let gateways = Gateways::default();
        gateways.opened("streaming", 0);
        gateways.acked("streaming", 5, 1);
        gateways.opened("closed", 0);
        gateways.acked("closed", 5, 1);
        gateways.closed("closed", 2);
        // Long past any ack: the one still holding its stream counts, with its old version.
        let at = |now| {
            let mut c: Vec<(String, u64)> = gateways
                .connected(now)
                .into_iter()
                .map(|g| (g.id, g.acked))
                .collect();
            c.sort();
            c
        };
        assert_eq!(at(60), vec![("closed".into(), 5), ("streaming".into(), 5)]);
        assert_eq!(at(2 + GONE_AFTER_SECS), vec![("streaming".to_owned(), 5)]);
        assert_eq!(gateways.connected_count(10_000), 1);
    }
}
