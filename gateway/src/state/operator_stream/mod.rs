//! Cluster mode's source of access state: the operator's push stream.
//!
//! The gateway connects to one operator replica at a time (`GET /v1/state`, TLS verified against
//! the operator CA, a projected ServiceAccount token re-read on every connect, no redirects),
//! merges every frame monotonically ([`portcullis_protocol::FleetState`]), publishes the same
//! [`Snapshot`] and [`SessionIndex`] the request path reads in the other modes, and acknowledges
//! each version it applied. On any failure it moves to the next endpoint with backoff and
//! resumes from its version.
//!
//! Until the first snapshot the gateway is not ready and admits nobody. After that no outage
//! of the control plane makes it NotReady: it keeps enforcing the last state it has, and the
//! age of that state is a metric ([`Feed`]).

mod ack;
mod connection;
mod follower;

pub use super::feed::Feed;

use crate::{
    shutdown::Signal,
    state::{
        Snapshot,
        merger::{KnownIdps, Shared},
        session_index::SessionIndex,
    },
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
    /// Opt-in: NotReady while the state is older than `stale_after`.
    pub refuse_stale: bool,
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

/// What the request path reads (the snapshot and the session index), and the merged state the
/// API-server fallback writes into.
pub struct Receivers {
    pub state: watch::Receiver<Arc<Snapshot>>,
    pub index: watch::Receiver<Arc<SessionIndex>>,
    pub shared: Shared,
    pub feed: Arc<Feed>,
}

/// Starts following the operator. Returns at once; both receivers hold "not ready" values until
/// the first snapshot is applied.
pub fn spawn(
    config: StreamConfig,
    known_idps: KnownIdps,
    shutdown: Signal,
) -> Result<Receivers, StreamError> {
    let tls = tls_config(&config.ca_pem)?;
    let feed = Arc::new(Feed::new(config.stale_after, config.refuse_stale));
    let (state_tx, state_rx) = watch::channel(Arc::new(Snapshot::default()));
    let (index_tx, index_rx) = watch::channel(Arc::new(SessionIndex {
        synced: false,
        entries: Default::default(),
        feed: Some(feed.clone()),
        learner: None,
    }));
    let shared = Shared::new(
        FleetState::new(CLOCK_SKEW_SECS),
        known_idps,
        feed.clone(),
        state_tx,
        index_tx,
    );
    let follower = Follower {
        config,
        tls,
        feed: feed.clone(),
        shared: shared.clone(),
    };
    tokio::spawn(follower.run(shutdown));
    Ok(Receivers {
        state: state_rx,
        index: index_rx,
        shared,
        feed,
    })
}

/// The state of following the operator, across connections. Defined here because `follower`
/// (the reconnect loop) and `connection` (one stream) each add its methods, and neither should
/// import the other for it.
struct Follower {
    config: StreamConfig,
    tls: rustls::ClientConfig,
    feed: Arc<Feed>,
    /// The merged state, shared with the API-server fallback and the request path.
    shared: Shared,
}

fn tls_config(ca_pem: &[u8]) -> Result<rustls::ClientConfig, StreamError> {
    use portcullis_runtime::client_tls::{ClientTlsError, trusting};
    trusting(ca_pem).map_err(|e| match e {
        ClientTlsError::Ca(reason) => StreamError::Ca(reason),
        ClientTlsError::Tls(e) => StreamError::Tls(e),
    })
}
