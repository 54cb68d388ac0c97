//! `/livez`, `/readyz` (ready once every watch has listed), `/metrics`, on a plain-HTTP port of
//! their own.

use crate::{clock::now, index::SharedIndex, metrics::Metrics, stream::Gateways};
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use std::sync::Arc;

/// What the ops endpoint reports on.
#[derive(Clone)]
pub struct OpsState {
    pub index: Arc<SharedIndex>,
    pub gateways: Arc<Gateways>,
    pub metrics: Metrics,
}

pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    if state.index.synced() {
        let version = state.index.lock().version();
        (StatusCode::OK, format!("ok: state version {version}"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not every watch has listed yet".to_owned(),
        )
    }
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    let connected = state.gateways.connected_count(now());
    state.metrics.gateways_connected(connected);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
