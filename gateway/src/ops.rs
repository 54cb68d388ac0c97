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
/// everyone, and should receive no traffic. Once synced it stays ready through any outage of
/// the control plane (it can still serve correctly, from its last state), unless it opted in
/// to refuse stale state (`--refuse-stale-state`). The answer names the path the state
/// follows (`operator_stream` or `api_server`) and its age.
async fn readyz(State(gateway): State<Gateway>) -> impl IntoResponse {
    let snapshot = gateway.snapshot();
    let feed = gateway
        .session_index()
        .as_ref()
        .and_then(|index| index.borrow().feed.clone());
    if let Some(index) = gateway.session_index()
        && let Some(reason) = index.borrow().not_ready()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, reason);
    }
    if snapshot.version == 0 {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no access state yet".to_owned(),
        );
    }
    let mut answer = format!("ok: state version {}", snapshot.version);
    if let Some(feed) = feed {
        let age = feed.age().map_or(0, |a| a.as_secs());
        let behind = if feed.behind() { ", behind" } else { "" };
        let revocations = if feed.revocations_watched() {
            "watched"
        } else {
            "not watched yet"
        };
        answer.push_str(&format!(
            "; source {}; age {age}s{behind}; revocations {revocations}",
            feed.path().label()
        ));
    }
    (StatusCode::OK, answer)
}

async fn metrics(State(gateway): State<Gateway>) -> impl IntoResponse {
    let snapshot = gateway.snapshot();
    gateway.metrics().state().state_applied(snapshot.version);
    if let Some(index) = gateway.session_index()
        && let Some(feed) = index.borrow().feed.clone()
    {
        gateway
            .metrics()
            .state()
            .operator_stream(crate::metrics::StreamFacts {
                version: feed.stream_version(),
                advanced_at: feed.advanced_at(),
                age: feed.age(),
                behind: feed.behind(),
                source: feed.path().label(),
            });
        gateway
            .metrics()
            .state()
            .revocation_watch(feed.revocations_watched());
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        gateway.metrics().encode(),
    )
}
