//! `/livez`, `/readyz` (ready once every watch has listed), `/metrics`, on a plain-HTTP port of
//! their own.

use crate::shared::{Shared, now};
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use std::sync::Arc;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if shared.synced() {
        let version = shared.lock_index().version();
        (StatusCode::OK, format!("ok: state version {version}"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not every watch has listed yet".to_owned(),
        )
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let connected = shared.lock_fleet().connected_count(now());
    shared.metrics.gateways_connected(connected);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
}
