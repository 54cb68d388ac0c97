//! How the gateway's own watches of the API server retry: quickly, capped low, and not at all
//! after a 410 Gone.
//!
//! kube-runtime's default (client-go's) grows to 30 s and resets only after two minutes
//! without an error, so after an API-server outage of two minutes a watch may wait 30 s
//! before it reconnects, and a revocation accepted at once would wait with it. These watches
//! carry revocations: they retry from 100 ms up to 1 s, with jitter so a fleet does not
//! reconnect in step. A gateway's failed attempt costs the API server one refused connection
//! or one cheap request, and a resumed watch is served from its watch cache.
//!
//! A 410 Gone (the watch cannot resume: a restarted API server, a compaction) is not a failure
//! to wait out: the watcher lists again on its next poll, and every event it missed is in that
//! list. Waiting there would only delay the revocations it carries.

use crate::shutdown::Signal;
use futures::{StreamExt as _, stream::BoxStream};
use kube::{
    Api, Resource,
    runtime::{
        utils::Backoff as _,
        watcher::{self, ExponentialBackoff, watcher},
    },
};
use serde::de::DeserializeOwned;
use std::{fmt::Debug, time::Duration};
use tracing::warn;

/// First retry delay.
const MIN: Duration = Duration::from_millis(100);
/// Longest delay between retries (before jitter, which adds up to as much again).
const MAX: Duration = Duration::from_secs(1);

/// One watch of the API server, paced by [`Retry`].
pub struct Watch<K> {
    stream: BoxStream<'static, watcher::Result<watcher::Event<K>>>,
    retry: Retry,
    /// What it watches, for the log: "policy watch", …
    what: &'static str,
}

impl<K> Watch<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    pub fn new(api: Api<K>, config: watcher::Config, what: &'static str) -> Self {
        Self {
            stream: watcher(api, config).boxed(),
            retry: Retry::new(),
            what,
        }
    }

    /// The next event; failures are logged and retried. None when the watch ends or the
    /// gateway shuts down.
    pub async fn next(&mut self, shutdown: &mut Signal) -> Option<watcher::Event<K>> {
        loop {
            let event = tokio::select! {
                event = self.stream.next() => event,
                () = shutdown.wait() => return None,
            };
            match event? {
                Ok(event) => {
                    self.retry.succeeded();
                    return Some(event);
                }
                Err(error) => {
                    warn!(%error, watch = self.what, "watch failed; retrying");
                    if !self.retry.failed(&error, shutdown).await {
                        return None;
                    }
                }
            }
        }
    }
}

/// Paces the retries of one watch.
pub struct Retry {
    backoff: ExponentialBackoff,
}

impl Retry {
    pub fn new() -> Self {
        Self {
            backoff: backon::ExponentialBuilder::default()
                .with_min_delay(MIN)
                .with_max_delay(MAX)
                .with_factor(2.0)
                .with_jitter()
                .without_max_times()
                .into(),
        }
    }

    /// The watch delivered an event: the next failure starts from the shortest delay.
    pub fn succeeded(&mut self) {
        self.backoff.reset();
    }

    /// The watch failed with `error`: waits before it is polled again (not after a 410 Gone).
    /// False if the gateway shuts down meanwhile.
    pub async fn failed(&mut self, error: &watcher::Error, shutdown: &mut Signal) -> bool {
        if gone(error) {
            return true;
        }
        let delay = self.backoff.next().unwrap_or(MAX);
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = shutdown.wait() => false,
        }
    }
}

/// Whether the API server answered 410 Gone: the watch lists again instead of resuming.
fn gone(error: &watcher::Error) -> bool {
    matches!(error, watcher::Error::WatchError(status) if status.code == 410)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_never_wait_longer_than_twice_the_cap_and_never_stop() {
        let mut retry = Retry::new();
        let delays: Vec<Duration> = (&mut retry.backoff).take(50).collect();
        assert_eq!(delays.len(), 50, "a watch must retry forever");
        assert!(delays.iter().all(|d| *d <= MAX * 2), "{delays:?}");
        retry.succeeded();
        let first = retry.backoff.next().expect("a delay");
        assert!(first < MIN * 2 + Duration::from_millis(1), "{first:?}");
    }

    #[test]
    fn a_410_is_not_waited_out() {
        let status = |code| {
            watcher::Error::WatchError(Box::new(kube::core::Status {
                code,
                ..Default::default()
            }))
        };
        assert!(gone(&status(410)));
        assert!(!gone(&status(500)));
        assert!(!gone(&watcher::Error::NoResourceVersion));
    }
}
