//! Cluster mode's source of access state: the operator's push stream.
//!
//! The gateway connects to one operator replica at a time (`GET /v1/state`, TLS verified against
//! the operator CA, a projected ServiceAccount token re-read on every connect, no redirects),
//! merges every frame monotonically ([`portcullis_protocol::FleetState`]), publishes the same
//! [`Snapshot`] and [`SessionIndex`] the request path reads in the other modes, and acknowledges
//! each version it applied. On any failure it moves to the next endpoint with backoff and
//! resumes from its version.
//!
//! Until the first snapshot the gateway is not ready and admits nobody; when no frame
//! (heartbeats included) arrived for `--state-stale-after` it reports NotReady again, while
//! still enforcing the last state it has.

mod ack;
mod connection;
mod follower;
mod publish;

pub use super::feed::Feed;

use crate::{
    shutdown::Signal,
    state::{Snapshot, session_index::SessionIndex},
};
use portcullis_core::token::CLOCK_SKEW_SECS;
use portcullis_protocol::FleetState;
use std::{path::PathBuf, sync::Arc, time::Duration};
use tokio::sync::watch;
use url::Url;

/// No frame for this long (three heartbeats) means the connection is dead.
const SILENCE: Duration = Duration::from_secs(15);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How to reach the operator.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    pub urls: Vec<Url>,
    pub ca_pem: Vec<u8>,
    pub token_file: PathBuf,
    pub gateway_id: String,
    pub stale_after: Duration,
}

/// Why the stream could not be set up at all.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("--operator-ca-file holds no usable certificate: {0}")]
    Ca(String),
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// What the request path reads: the snapshot and the session index.
pub type Receivers = (
    watch::Receiver<Arc<Snapshot>>,
    watch::Receiver<Arc<SessionIndex>>,
);

/// Starts following the operator. Returns at once; both receivers hold "not ready" values until
/// the first snapshot is applied.
pub fn spawn(
    config: StreamConfig,
    known_idps: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    shutdown: Signal,
) -> Result<Receivers, StreamError> {
    let tls = tls_config(&config.ca_pem)?;
    let feed = Arc::new(Feed::new(config.stale_after));
    let (state_tx, state_rx) = watch::channel(Arc::new(Snapshot::default()));
    let (index_tx, index_rx) = watch::channel(Arc::new(SessionIndex {
        synced: false,
        entries: Default::default(),
        feed: Some(feed.clone()),
    }));
    let follower = Follower {
        config,
        tls,
        known_idps,
        feed,
        state_tx,
        index_tx,
        fleet: FleetState::new(CLOCK_SKEW_SECS),
        published: 0,
        previous: None,
    };
    tokio::spawn(follower.run(shutdown));
    Ok((state_rx, index_rx))
}

/// The state of following the operator, across connections. Defined here because `follower`
/// (the reconnect loop), `connection` (one stream) and `publish` each add its methods, and
/// none of them should import another for it.
struct Follower {
    config: StreamConfig,
    tls: rustls::ClientConfig,
    known_idps: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    feed: Arc<Feed>,
    state_tx: watch::Sender<Arc<Snapshot>>,
    index_tx: watch::Sender<Arc<SessionIndex>>,
    fleet: FleetState,
    /// Snapshots published so far: the gateway's own state version.
    published: u64,
    previous: Option<Arc<Snapshot>>,
}

fn tls_config(ca_pem: &[u8]) -> Result<rustls::ClientConfig, StreamError> {
    use portcullis_runtime::client_tls::{ClientTlsError, trusting};
    trusting(ca_pem).map_err(|e| match e {
        ClientTlsError::Ca(reason) => StreamError::Ca(reason),
        ClientTlsError::Tls(e) => StreamError::Tls(e),
    })
}
