//! The state stream API gateways connect to: `GET /v1/state` (a snapshot or the deltas after
//! the gateway's version, then deltas and heartbeats as NDJSON) and `POST /v1/ack`.

use crate::{
    auth::AuthError,
    shared::{Shared, now},
};
use axum::{
    Json, Router,
    body::Body,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use portcullis_protocol::{
    Ack, ErrorBody, Frame,
    frame::{
        ACK_PATH, GATEWAY_ID_HEADER, HEARTBEAT_SECS, NDJSON, PEER_ACKS_PATH, STATE_PATH,
        render_line,
    },
};
use serde::Deserialize;
use std::{collections::VecDeque, sync::Arc, time::Duration};
use tokio::sync::watch;
use tracing::{info, warn};

/// The stream API router.
pub fn router(shared: Arc<Shared>, shutdown: crate::shutdown::Signal) -> Router {
    Router::new()
        .route(STATE_PATH, get(state))
        .route(ACK_PATH, post(ack))
        .route(PEER_ACKS_PATH, post(crate::peer::receive))
        .with_state((shared, shutdown))
}

type AppState = (Arc<Shared>, crate::shutdown::Signal);

#[derive(Debug, Deserialize)]
struct Resume {
    instance: Option<String>,
    version: Option<u64>,
}

fn error(status: StatusCode, error: &str, message: String) -> Response {
    (
        status,
        Json(ErrorBody {
            error: error.to_owned(),
            message,
        }),
    )
        .into_response()
}

/// Authenticates the request; the gateway id or the refusal.
async fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<String, Response> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match shared.auth.check(authorization).await {
        Ok(_) => {}
        Err(AuthError::Forbidden(user)) => {
            shared.metrics.refused("forbidden");
            warn!(
                user,
                "refused a stream client that is not an allowed gateway"
            );
            return Err(error(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{user} may not read the access state"),
            ));
        }
        Err(AuthError::Review(e)) => {
            shared.metrics.refused("review_failed");
            warn!(error = %e, "token review failed");
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "review_failed",
                "the token could not be reviewed; retry".into(),
            ));
        }
        Err(e) => {
            shared.metrics.refused("unauthenticated");
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                e.to_string(),
            ));
        }
    }
    let id = headers
        .get(GATEWAY_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 253)
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "missing_gateway_id",
                format!("the {GATEWAY_ID_HEADER} header is required"),
            )
        })?;
    Ok(id.to_owned())
}

async fn state(
    State((shared, shutdown)): State<AppState>,
    headers: HeaderMap,
    Query(resume): Query<Resume>,
) -> Response {
    let id = match authenticate(&shared, &headers).await {
        Ok(id) => id,
        Err(response) => return response,
    };
    if !shared.synced() {
        shared.metrics.refused("not_synced");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_synced",
            "this replica has not listed every resource yet; try another".into(),
        );
    }
    let mut changed = shared.subscribe();
    changed.mark_unchanged();
    let (queue, sent) = {
        let index = shared.lock_index();
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
    };
    shared.lock_fleet().opened(&id, now());
    shared.metrics.stream_opened();
    let mut ticker = tokio::time::interval(Duration::from_secs(HEARTBEAT_SECS));
    ticker.reset();
    let stream = Stream {
        shared,
        id,
        changed,
        shutdown,
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

/// One gateway's stream: what is queued, what was sent.
struct Stream {
    shared: Arc<Shared>,
    id: String,
    changed: watch::Receiver<u64>,
    shutdown: crate::shutdown::Signal,
    queue: VecDeque<Frame>,
    sent: u64,
    ticker: tokio::time::Interval,
}

impl Stream {
    async fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(frame) = self.queue.pop_front() {
                self.shared.metrics.frame_sent(frame.kind());
                return Some(render_line(&frame));
            }
            tokio::select! {
                changed = self.changed.changed() => {
                    changed.ok()?;
                    let index = self.shared.lock_index();
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
                () = self.shutdown.wait() => return None,
            }
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.shared.lock_fleet().closed(&self.id, now());
        self.shared.metrics.stream_closed();
        info!(gateway = %self.id, "gateway stream closed");
    }
}

async fn ack(
    State((shared, _)): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let id = match authenticate(&shared, &headers).await {
        Ok(id) => id,
        Err(response) => return response,
    };
    let Ok(ack) = serde_json::from_slice::<Ack>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "malformed_ack",
            "expected {\"instance\":..,\"version\":..}".into(),
        );
    };
    let ours = shared.lock_index().instance() == ack.instance;
    if !ours {
        return error(
            StatusCode::CONFLICT,
            "other_instance",
            "acknowledge versions to the replica that sent them".into(),
        );
    }
    shared.lock_fleet().acked(&id, ack.version, now());
    StatusCode::NO_CONTENT.into_response()
}
