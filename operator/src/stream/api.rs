//! The stream API handlers: `GET /v1/state` and `POST /v1/ack`, both for allowed gateways only.

use super::{Gateways, Refusal};
use crate::{
    auth::{AuthError, Authenticator},
    clock::now,
    index::SharedIndex,
    metrics::Metrics,
};
use axum::{
    Router,
    body::Body,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use portcullis_protocol::{
    Ack, Frame,
    frame::{ACK_PATH, GATEWAY_ID_HEADER, HEARTBEAT_SECS, NDJSON, STATE_PATH, render_line},
};
use portcullis_runtime::shutdown::Signal;
use serde::Deserialize;
use std::{collections::VecDeque, sync::Arc, time::Duration};
use tokio::sync::watch;
use tracing::{info, warn};

/// What the stream API serves from.
#[derive(Clone)]
pub struct StreamState {
    pub index: Arc<SharedIndex>,
    pub gateways: Arc<Gateways>,
    pub auth: Arc<Authenticator>,
    pub metrics: Metrics,
    /// Ends every stream.
    pub shutdown: Signal,
}

/// The stream API router.
pub fn router(state: StreamState) -> Router {
    Router::new()
        .route(STATE_PATH, get(stream))
        .route(ACK_PATH, post(ack))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct Resume {
    instance: Option<String>,
    version: Option<u64>,
}

/// Authenticates the request; the gateway id or the refusal.
async fn authenticate(state: &StreamState, headers: &HeaderMap) -> Result<String, Response> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let refuse = |refusal: Refusal, message: String| refusal.respond(&state.metrics, message);
    match state.auth.check(authorization).await {
        Ok(_) => {}
        Err(AuthError::Forbidden(user)) => {
            warn!(
                user,
                "refused a stream client that is not an allowed gateway"
            );
            let message = format!("{user} may not read the access state");
            return Err(refuse(Refusal::Forbidden, message));
        }
        Err(AuthError::Review(e)) => {
            warn!(error = %e, "token review failed");
            let message = "the token could not be reviewed; retry".into();
            return Err(refuse(Refusal::ReviewFailed, message));
        }
        Err(e) => return Err(refuse(Refusal::Unauthenticated, e.to_string())),
    }
    let id = headers
        .get(GATEWAY_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 253)
        .ok_or_else(|| {
            let message = format!("the {GATEWAY_ID_HEADER} header is required");
            refuse(Refusal::MissingGatewayId, message)
        })?;
    Ok(id.to_owned())
}

async fn stream(
    State(state): State<StreamState>,
    headers: HeaderMap,
    Query(resume): Query<Resume>,
) -> Response {
    let id = match authenticate(&state, &headers).await {
        Ok(id) => id,
        Err(response) => return response,
    };
    if !state.index.synced() {
        let message = "this replica has not listed every resource yet; try another".into();
        return Refusal::NotSynced.respond(&state.metrics, message);
    }
    let mut changed = state.index.subscribe();
    changed.mark_unchanged();
    let (queue, sent) = first_frames(&state.index, &id, &resume);
    state.gateways.opened(&id, now());
    state.metrics.stream_opened();
    let mut ticker = tokio::time::interval(Duration::from_secs(HEARTBEAT_SECS));
    ticker.reset();
    let stream = Stream {
        state,
        id,
        changed,
        queue,
        sent,
        ticker,
    };
    let body = futures::stream::unfold(stream, |mut s| async move {
        let line = s.next().await?;
        Some((Ok::<_, std::convert::Infallible>(line), s))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, NDJSON)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// What a new stream starts with: the deltas after the version the gateway resumes from, if
/// it resumes this replica's state and the log still holds them, else a snapshot; and the
/// version that brings it to.
fn first_frames(index: &SharedIndex, id: &str, resume: &Resume) -> (VecDeque<Frame>, u64) {
    let index = index.lock();
    let deltas = match (&resume.instance, resume.version) {
        (Some(instance), Some(version)) if instance == index.instance() => {
            index.deltas_since(version)
        }
        _ => None,
    };
    match deltas {
        Some(deltas) => {
            info!(gateway = %id, from = ?resume.version, deltas = deltas.len(), "gateway resumed");
            (VecDeque::from(deltas), index.version())
        }
        None => {
            info!(gateway = %id, version = index.version(), "gateway connected; sending a snapshot");
            (VecDeque::from([index.snapshot()]), index.version())
        }
    }
}

/// One gateway's stream: what is queued, what was sent.
struct Stream {
    state: StreamState,
    id: String,
    changed: watch::Receiver<u64>,
    queue: VecDeque<Frame>,
    sent: u64,
    ticker: tokio::time::Interval,
}

impl Stream {
    async fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(frame) = self.queue.pop_front() {
                self.state.metrics.frame_sent(frame.kind());
                return Some(render_line(&frame));
            }
            tokio::select! {
                changed = self.changed.changed() => {
                    changed.ok()?;
                    let index = self.state.index.lock();
                    match index.deltas_since(self.sent) {
                        Some(deltas) => self.queue.extend(deltas),
                        // Fell behind the retained log: start over with a snapshot.
                        None => self.queue.push_back(index.snapshot()),
                    }
                    self.sent = index.version();
                }
                _ = self.ticker.tick() => {
                    return Some(render_line(&Frame::Heartbeat { version: self.sent, sent_at: now() }));
                }
                () = self.state.shutdown.wait() => return None,
            }
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.state.gateways.closed(&self.id, now());
        self.state.metrics.stream_closed();
        info!(gateway = %self.id, "gateway stream closed");
    }
}

async fn ack(
    State(state): State<StreamState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let id = match authenticate(&state, &headers).await {
        Ok(id) => id,
        Err(response) => return response,
    };
    let Ok(ack) = serde_json::from_slice::<Ack>(&body) else {
        let message = "expected {\"instance\":..,\"version\":..}".into();
        return Refusal::MalformedAck.respond(&state.metrics, message);
    };
    let ours = state.index.lock().instance() == ack.instance;
    if !ours {
        let message = "acknowledge versions to the replica that sent them".into();
        return Refusal::OtherInstance.respond(&state.metrics, message);
    }
    state.gateways.acked(&id, ack.version, now());
    StatusCode::NO_CONTENT.into_response()
}
