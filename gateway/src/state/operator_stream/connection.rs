//! One connection to one operator endpoint: connect with a fresh token, then read frames line
//! by line, merge them, publish what changed and acknowledge, until it fails, falls silent or
//! the gateway shuts down.

use super::{Follower, SILENCE, ack::Acker};
use crate::shutdown::Signal;
use portcullis_protocol::{
    Applied, Frame, MergeError,
    frame::{ACK_PATH, GATEWAY_ID_HEADER, STATE_PATH, parse_line},
    lines::Lines,
};
use std::{future::Future, net::SocketAddr, time::Duration};
use tracing::{info, warn};
use url::Url;

/// A peer that never sends a newline must not grow the buffer without bound.
const MAX_BUFFERED: usize = 64 * 1024 * 1024;

/// How a connection ended.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectionError {
    #[error("cannot read the token file: {0}")]
    Token(std::io::Error),
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("operator answered {0}")]
    Status(reqwest::StatusCode),
    #[error("no frame for {0:?}")]
    Silent(Duration),
    #[error("{0}")]
    Merge(#[from] MergeError),
    #[error("stream ended")]
    Ended,
    #[error("shutting down")]
    Shutdown,
}

/// An open stream: the response to read frames from, and what acknowledging needs.
struct Stream {
    response: reqwest::Response,
    client: reqwest::Client,
    token: String,
}

impl Follower {
    /// One connection: until it fails, ends or shutdown.
    pub(super) async fn follow(
        &mut self,
        url: &Url,
        addr: SocketAddr,
        shutdown: &mut Signal,
    ) -> Result<(), ConnectionError> {
        let Stream {
            mut response,
            client,
            token,
        } = self.connect(url, addr, shutdown).await?;
        info!(operator = %url, %addr, "following the operator");
        let acker = Acker::spawn(
            client,
            at_path(url, ACK_PATH),
            token,
            self.config.gateway_id.clone(),
        );
        let mut lines = Lines::default();
        loop {
            let Some(chunk) = unless_silent(response.chunk(), shutdown).await? else {
                return Err(ConnectionError::Ended);
            };
            lines.extend(&chunk);
            self.apply_lines(&mut lines)?;
            let (position, synced) = {
                let merger = self.shared.lock();
                let fleet = merger.fleet();
                let position = fleet.position().map(|(i, v)| (i.to_owned(), v));
                (position, fleet.has_snapshot())
            };
            if let Some((instance, version)) = position {
                if synced {
                    self.feed.touch(version);
                }
                acker.ack(&instance, version);
            }
            if lines.pending() > MAX_BUFFERED {
                return Err(ConnectionError::Ended);
            }
        }
    }

    /// Opens the stream at `addr`, resuming from the merged state's position when it has one.
    async fn connect(
        &self,
        url: &Url,
        addr: SocketAddr,
        shutdown: &mut Signal,
    ) -> Result<Stream, ConnectionError> {
        // Re-read on every connect: the kubelet rotates the projected token.
        let token = std::fs::read_to_string(&self.config.token_file)
            .map_err(ConnectionError::Token)?
            .trim()
            .to_owned();
        let client = self.client(url, addr)?;
        let mut request = client
            .get(at_path(url, STATE_PATH))
            .bearer_auth(&token)
            .header(GATEWAY_ID_HEADER, &self.config.gateway_id);
        let position = {
            let merger = self.shared.lock();
            merger.fleet().position().map(|(i, v)| (i.to_owned(), v))
        };
        if let Some((instance, version)) = position {
            request = request.query(&[("instance", instance), ("version", version.to_string())]);
        }
        let response = unless_silent(request.send(), shutdown).await?;
        if !response.status().is_success() {
            return Err(ConnectionError::Status(response.status()));
        }
        Ok(Stream {
            response,
            client,
            token,
        })
    }

    /// A client for `url` that connects to `addr`: TLS against the operator CA, no redirects.
    fn client(&self, url: &Url, addr: SocketAddr) -> Result<reqwest::Client, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(self.tls.clone())
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5));
        if let Some(host) = url.host_str() {
            builder = builder.resolve(host, addr);
        }
        builder.build()
    }

    /// Merges every complete line of `lines` and publishes what they changed, also when a
    /// line fails: what the earlier frames of this read merged (a revocation, perhaps) is
    /// enforced now, not after the reconnect.
    ///
    /// The lines are parsed first and merged after: a snapshot's line (megabytes) is let go
    /// before its sessions go into the map, so the two are never held at once, and the merge
    /// lock is not held while parsing.
    fn apply_lines(&mut self, lines: &mut Lines) -> Result<(), ConnectionError> {
        let mut frames = Vec::new();
        let parsed = lines.take_complete(|line| {
            frames.extend(parse(line)?);
            Ok(())
        });
        let mut changed = Applied::Unchanged;
        let mut merger = self.shared.lock();
        let fleet = merger.fleet_mut();
        let now = crate::clock::now();
        let merged = frames.into_iter().try_for_each(|frame| {
            changed = changed.and(fleet.apply(frame, now)?);
            Ok::<_, MergeError>(())
        });
        if parsed.is_err() {
            // An unreadable frame may be a revocation: never skip it, start over.
            fleet.forget_position();
        }
        merger.publish(changed);
        merged?;
        parsed
    }
}

/// The frame on one line; `None` for a blank line.
fn parse(line: &[u8]) -> Result<Option<Frame>, ConnectionError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    parse_line(line).map(Some).map_err(|error| {
        warn!(%error, "unreadable frame; reconnecting for a snapshot");
        ConnectionError::Ended
    })
}

/// Awaits `step`, unless the operator stays silent for [`SILENCE`] or the gateway shuts down
/// first.
async fn unless_silent<T>(
    step: impl Future<Output = Result<T, reqwest::Error>>,
    shutdown: &mut Signal,
) -> Result<T, ConnectionError> {
    tokio::select! {
        r = tokio::time::timeout(SILENCE, step) => match r {
            Ok(r) => Ok(r?),
            Err(_) => Err(ConnectionError::Silent(SILENCE)),
        },
        () = shutdown.wait() => Err(ConnectionError::Shutdown),
    }
}

/// `path` on the operator at `url` (`url` itself if that does not make a URL).
fn at_path(url: &Url, path: &str) -> Url {
    url.join(path).unwrap_or_else(|_| url.clone())
}
