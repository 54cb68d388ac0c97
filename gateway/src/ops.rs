//! The operations listener: liveness, readiness and metrics, on a port of its own so that no
//! request to an app can reach them.

use crate::gateway::Gateway;
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};

/// `/livez`, `/readyz`, `/metrics`.
pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(gateway)
}

/// Ready once a snapshot of the access state is loaded: until then the gateway would deny
/// everyone, and should receive no traffic.
async fn readyz(State(gateway): State<Gateway>) -> impl IntoResponse {
    let snapshot = gateway.snapshot();
    // Not synced yet, or (cluster mode) the operator stream's last frame is too old.
    if let Some(index) = gateway.session_index()
        && let Some(reason) = index.borrow().not_ready()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, reason);
    }
    if snapshot.version == 0 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no access state yet".to_owned(),
        )
    } else {
        (
            StatusCode::OK,
            format!("ok: state version {}", snapshot.version),
        )
    }
}

async fn metrics(State(gateway): State<Gateway>) -> impl IntoResponse {
    let snapshot = gateway.snapshot();
    gateway.metrics().state_applied(snapshot.version);
    if let Some(index) = gateway.session_index()
        && let Some(feed) = index.borrow().feed.clone()
    {
        gateway
            .metrics()
            .operator_stream(feed.stream_version(), feed.age());
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        gateway.metrics().encode(),
    )
}
