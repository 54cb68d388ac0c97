//! The leader's side of relaying: `POST /v1/peer/acks` from followers, accepted only from
//! another replica of this operator (a TokenReview naming the same user as this operator's own
//! token), and only while this replica leads.

use super::relay::{Accepted, RelayBody, Relayed, Resync};
use crate::{
    auth::{AuthError, Authenticator, bearer},
    clock::now,
    metrics::{Metrics, RelayOutcome},
    stream::{Refusal, gateways::CONNECTED_WINDOW_SECS},
};
use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use portcullis_protocol::frame::PEER_ACKS_PATH;
use portcullis_runtime::shutdown::Signal;
use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tracing::{debug, info, warn};

/// What the leader knows of the other replicas of this operator.
pub struct Peers {
    auth: Arc<Authenticator>,
    /// The user this operator's own token reviews as: relays are accepted from it only.
    own_user: OnceLock<String>,
    leading: AtomicBool,
    /// Facts relayed by followers.
    relayed: Mutex<Relayed>,
    metrics: Metrics,
}

impl Peers {
    pub fn new(auth: Arc<Authenticator>, metrics: Metrics) -> Self {
        Self {
            auth,
            own_user: OnceLock::new(),
            leading: AtomicBool::new(false),
            relayed: Mutex::new(Relayed::default()),
            metrics,
        }
    }

    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::SeqCst);
    }

    fn is_leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// What followers relayed.
    pub fn relayed(&self) -> MutexGuard<'_, Relayed> {
        self.relayed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accepts a relay from another replica of this operator only.
    async fn check(&self, authorization: Option<&str>) -> Result<(), AuthError> {
        let user = self.auth.user_of(bearer(authorization)?).await?;
        match self.own_user.get() {
            Some(own) if *own == user => Ok(()),
            _ => Err(AuthError::Forbidden(user)),
        }
    }

    /// Records what a follower's gateways enforce; the relay number to confirm.
    fn apply(&self, body: RelayBody, now: u64) -> Result<Option<u64>, Resync> {
        let mut relayed = self.relayed();
        relayed.collect(now, CONNECTED_WINDOW_SECS);
        relayed.apply(body, now)
    }
}

/// Learns which user this operator's peer token belongs to (a TokenReview of its own token),
/// and from then on accepts relays from that user only. Retries until it succeeds, backing off
/// from 5 s to a minute: a replica without its token file (a single-replica install, a demo)
/// says so once, not every few seconds for its whole life.
pub async fn learn_own_user(peers: Arc<Peers>, token_file: PathBuf, mut shutdown: Signal) {
    let mut delay = RETRY_FIRST;
    let mut last_failure: Option<String> = None;
    loop {
        let failure = match std::fs::read_to_string(&token_file) {
            Ok(token) => match peers.auth.user_of(token.trim()).await {
                Ok(user) => {
                    info!(%user, "accepting relays from replicas of this operator");
                    let _ = peers.own_user.set(user);
                    return;
                }
                Err(error) => format!("cannot review this operator's own token: {error}"),
            },
            Err(error) => format!(
                "cannot read the peer token {}: {error}; relays from other replicas are refused \
                 until it can be read",
                token_file.display()
            ),
        };
        // The same failure again is news only at debug level.
        if last_failure.as_deref() == Some(failure.as_str()) {
            debug!(retry_in = ?delay, "{failure}");
        } else {
            warn!(retry_in = ?delay, "{failure}");
        }
        last_failure = Some(failure);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.wait() => return,
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// First and longest wait between attempts to learn this operator's own user.
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The peer API router (served with the stream API).
pub fn router(peers: Arc<Peers>) -> Router {
    Router::new()
        .route(PEER_ACKS_PATH, post(receive))
        .with_state(peers)
}

/// `POST /v1/peer/acks` on the leader.
async fn receive(
    State(peers): State<Arc<Peers>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let refuse = |refusal: Refusal, message: String| refusal.respond(&peers.metrics, message);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match peers.check(authorization).await {
        Ok(()) => {}
        Err(AuthError::Review(e)) => {
            let message = format!("the token could not be reviewed: {e}");
            return refuse(Refusal::PeerReviewFailed, message);
        }
        Err(AuthError::Forbidden(user)) => {
            let message = format!("{user} is not a replica of this operator");
            return refuse(Refusal::PeerForbidden, message);
        }
        Err(e) => return refuse(Refusal::PeerUnauthenticated, e.to_string()),
    }
    if !peers.is_leading() {
        let message = "this replica does not hold the Lease; read the Lease again".into();
        return refuse(Refusal::NotLeader, message);
    }
    let Ok(relay) = serde_json::from_slice::<RelayBody>(&body) else {
        let message = "expected {\"replica\":..,\"gateways\":[..]}".into();
        return refuse(Refusal::MalformedRelay, message);
    };
    match peers.apply(relay, now()) {
        Ok(Some(accepted)) => {
            peers.metrics.relay(RelayOutcome::Received);
            (StatusCode::OK, Json(Accepted { accepted })).into_response()
        }
        Ok(None) => {
            peers.metrics.relay(RelayOutcome::Received);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(resync) => {
            peers.metrics.relay(RelayOutcome::Resync);
            debug!(%resync, "asked a follower for a full relay");
            refuse(Refusal::Resync, resync.to_string())
        }
    }
}
