//! The follower's outer loop: one operator endpoint at a time, the next one with backoff after
//! any failure, resuming from the position the merged state remembers.

use super::{BACKOFF_MAX, BACKOFF_MIN, StreamConfig, connection::ConnectionError};
use crate::{
    shutdown::Signal,
    state::{Snapshot, feed::Feed, session_index::SessionIndex},
};
use portcullis_protocol::FleetState;
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::watch;
use tracing::warn;
use url::Url;

/// The state of following the operator, across connections.
pub(super) struct Follower {
    pub(super) config: StreamConfig,
    pub(super) tls: rustls::ClientConfig,
    pub(super) known_idps: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    pub(super) feed: Arc<Feed>,
    pub(super) state_tx: watch::Sender<Arc<Snapshot>>,
    pub(super) index_tx: watch::Sender<Arc<SessionIndex>>,
    pub(super) fleet: FleetState,
    /// Snapshots published so far: the gateway's own state version.
    pub(super) published: u64,
    pub(super) previous: Option<Arc<Snapshot>>,
}

impl Follower {
    /// Follows the operator until shutdown: each resolved endpoint in turn, with a jittered,
    /// doubling backoff between connections (reset by one that lasted).
    pub(super) async fn run(mut self, mut shutdown: Signal) {
        let mut backoff = BACKOFF_MIN;
        let mut next = 0usize;
        loop {
            let endpoints = self.endpoints().await;
            if endpoints.is_empty() {
                warn!("no operator endpoint resolves; retrying");
            }
            for _ in 0..endpoints.len() {
                let (url, addr) = &endpoints[next % endpoints.len()];
                next = next.wrapping_add(1);
                let started = Instant::now();
                match self.follow(url, *addr, &mut shutdown).await {
                    Err(ConnectionError::Shutdown) => return,
                    Err(error) => {
                        warn!(operator = %url, %addr, %error, "operator stream interrupted; trying the next endpoint");
                        if let ConnectionError::Merge(_) = error {
                            self.fleet.forget_position();
                        }
                    }
                    Ok(()) => {}
                }
                // A connection that lasted a while resets the backoff.
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = BACKOFF_MIN;
                }
                let jitter = Duration::from_millis(u64::from(rand::random::<u8>()));
                if !back_off(&mut backoff, jitter, &mut shutdown).await {
                    return;
                }
            }
            if endpoints.is_empty() && !back_off(&mut backoff, Duration::ZERO, &mut shutdown).await
            {
                return;
            }
        }
    }

    /// Every address of every configured URL.
    async fn endpoints(&self) -> Vec<(Url, SocketAddr)> {
        let mut endpoints = Vec::new();
        for url in &self.config.urls {
            let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
                continue;
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            match tokio::net::lookup_host((host, port)).await {
                Ok(addrs) => endpoints.extend(addrs.map(|a| (url.clone(), a))),
                Err(error) => warn!(operator = %url, %error, "cannot resolve the operator"),
            }
        }
        endpoints
    }
}

/// Sleeps `backoff` plus `jitter`, then doubles `backoff` up to [`BACKOFF_MAX`]. False when
/// shutdown came first.
async fn back_off(backoff: &mut Duration, jitter: Duration, shutdown: &mut Signal) -> bool {
    tokio::select! {
        () = tokio::time::sleep(*backoff + jitter) => {}
        () = shutdown.wait() => return false,
    }
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    true
}
