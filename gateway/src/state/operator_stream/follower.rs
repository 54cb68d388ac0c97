//! The follower's outer loop: one operator endpoint at a time, the next one with backoff after
//! any failure, resuming from the position the merged state remembers.

use super::{BACKOFF_MAX, BACKOFF_MIN, Follower, connection::ConnectionError};
use crate::shutdown::Signal;
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};
use tracing::warn;
use url::Url;

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
                let followed = self.follow(url, *addr, &mut shutdown).await;
                self.feed.stream_lost();
                match followed {
                    Err(ConnectionError::Shutdown) => return,
                    Err(error) => {
                        warn!(operator = %url, %addr, %error, "operator stream interrupted; trying the next endpoint");
                        if let ConnectionError::Merge(_) = error {
                            self.shared.lock().fleet_mut().forget_position();
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
