//! The stream API handlers: `GET /v1/state` and `POST /v1/ack`, both for allowed gateways only.

use super::{Gateways, Refusal};
use crate::{
    auth::{AuthError, Authenticator},
    clock::now,
    index::{SharedIndex, log::Line},
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
use bytes::{Bytes, BytesMut};
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
fn first_frames(index: &SharedIndex, id: &str, resume: &Resume) -> (VecDeque<Line>, u64) {
    let after = match (&resume.instance, resume.version) {
        (Some(instance), Some(version)) if *instance == index.instance() => Some(version),
        _ => None,
    };
    let catch_up = index.catch_up(after);
    if catch_up.snapshot {
        info!(gateway = %id, version = catch_up.version, "gateway connected; sending a snapshot");
    } else {
        info!(gateway = %id, from = ?resume.version, deltas = catch_up.lines.len(), "gateway resumed");
    }
    (VecDeque::from(catch_up.lines), catch_up.version)
}

/// One gateway's stream: what is queued, what was sent.
struct Stream {
    state: StreamState,
    id: String,
    changed: watch::Receiver<u64>,
    queue: VecDeque<Line>,
    sent: u64,
    ticker: tokio::time::Interval,
}

impl Stream {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if !self.queue.is_empty() {
                return Some(self.take_batch());
            }
            tokio::select! {
                changed = self.changed.changed() => {
                    changed.ok()?;
                    // Fell behind the retained log: the catch-up is a snapshot.
                    let catch_up = self.state.index.catch_up(Some(self.sent));
                    self.queue.extend(catch_up.lines);
                    self.sent = catch_up.version;
                }
                _ = self.ticker.tick() => {
                    let heartbeat = Frame::Heartbeat { version: self.sent, sent_at: now() };
                    return Some(Bytes::from(render_line(&heartbeat)));
                }
                () = self.state.shutdown.wait() => return None,
            }
        }
    }
}

/// At most this many bytes of queued lines go out as one write. A snapshot line is sent as it
/// is, however long.
const MAX_BATCH: usize = 256 * 1024;

impl Stream {
    /// The queued lines as one write (see [`take_batch`]).
    fn take_batch(&mut self) -> Bytes {
        let metrics = &self.state.metrics;
        take_batch(&mut self.queue, MAX_BATCH, |kind| metrics.frame_sent(kind))
    }
}

/// Takes the queued lines from the front of `queue` as one buffer of at most `max` bytes (a
/// first line longer than that, a snapshot, goes alone), calling `sent` with each one's kind.
/// A burst of revocations thus reaches a gateway in one chunk (one TLS record, one write, one
/// wake-up and one acknowledgement) instead of one per line, which is what made the fan-out's
/// cost grow with the burst times the fleet.
fn take_batch(queue: &mut VecDeque<Line>, max: usize, mut sent: impl FnMut(&'static str)) -> Bytes {
    let Some(first) = queue.pop_front() else {
        return Bytes::new();
    };
    sent(first.kind);
    let fits = |batch: usize, line: &Line| batch + line.bytes.len() <= max;
    if queue
        .front()
        .is_none_or(|next| !fits(first.bytes.len(), next))
    {
        return first.bytes;
    }
    let mut batch = BytesMut::from(&first.bytes[..]);
    while let Some(next) = queue.front() {
        if !fits(batch.len(), next) {
            break;
        }
        sent(next.kind);
        batch.extend_from_slice(&next.bytes);
        queue.pop_front();
    }
    batch.freeze()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line(version: u64, text: &str) -> Line {
        Line {
            version,
            kind: "delta",
            bytes: Bytes::from(format!("{text}\n")),
        }
    }

    #[test]
    fn queued_lines_go_out_as_one_write_in_order_up_to_the_cap() {
        let mut queue: VecDeque<Line> = (1..=4).map(|v| line(v, &"x".repeat(9))).collect();
        let mut kinds = 0;
        // Each line is 10 bytes: three fit in 30, the fourth waits for the next write.
        let first = take_batch(&mut queue, 30, |_| kinds += 1);
        assert_eq!(first, Bytes::from("xxxxxxxxx\n".repeat(3)));
        assert_eq!((kinds, queue.len()), (3, 1));
        let second = take_batch(&mut queue, 30, |_| kinds += 1);
        assert_eq!(second, Bytes::from("xxxxxxxxx\n"));
        assert_eq!((kinds, queue.len()), (4, 0));
        assert!(take_batch(&mut queue, 30, |_| kinds += 1).is_empty());
    }

    #[test]
    fn a_line_longer_than_the_cap_goes_alone_and_whole() {
        let mut queue = VecDeque::from([line(1, &"s".repeat(99)), line(2, "d")]);
        let snapshot = take_batch(&mut queue, 30, |_| {});
        assert_eq!(snapshot.len(), 100);
        assert_eq!(take_batch(&mut queue, 30, |_| {}), Bytes::from("d\n"));
    }
}
