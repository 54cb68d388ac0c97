//! The HTTP surface: one router, dispatching by host and path.
//!
//! - the auth host serves login, callback and JWKS ([`crate::login::auth_host`]);
//! - `/.portcullis/auth/*` on any host answers ingress controllers' forward-auth sub-requests
//!   ([`crate::serve::forward_auth`]), for trusted proxies only;
//! - `/.portcullis/*` on an app host is the gateway's own (hand-off); it never reaches an
//!   upstream;
//! - everything else is a protected request: check, then proxy.

use crate::{
    gateway::Gateway,
    http::{ClientAddr, Problem, request_host, secure},
    login::{auth_host, handoff, logout},
    serve::{forward_auth, proxy_mode, session_endpoint},
};
use axum::{
    Router,
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use http::StatusCode;
use portcullis_core::CanonicalPath;

/// The gateway's router. Every response it makes itself gets the security headers
/// ([`crate::http::secure`]); an upstream's is relayed as it is.
pub fn app(gateway: Gateway) -> Router {
    Router::new()
        .fallback(dispatch)
        .layer(axum::middleware::map_response(secure))
        .with_state(gateway)
}

async fn dispatch(State(gateway): State<Gateway>, req: Request) -> Response {
    let Some(ClientAddr(peer)) = req.extensions().get::<ClientAddr>().copied() else {
        return Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no_peer",
            "Internal error.",
        )
        .into_response();
    };
    if req.uri().path().starts_with("/.portcullis/auth/") {
        return forward_auth::handle(&gateway, peer, req).await;
    }
    let host = match request_host(&req) {
        Ok(host) => host,
        Err(problem) => return problem.into_response(),
    };
    if host == gateway.settings().auth_host {
        return auth_host::handle(&gateway, req).await;
    }
    let path = match CanonicalPath::parse(req.uri().path()) {
        Ok(path) => path,
        Err(error) => return Problem::bad_request("bad_path", error.to_string()).into_response(),
    };
    if path.as_str() == "/.portcullis" || path.as_str().starts_with("/.portcullis/") {
        return match path.as_str() {
            "/.portcullis/handoff" => handoff::handoff(&gateway, &host, &req).into_response(),
            "/.portcullis/begin" => handoff::begin(&gateway, &host, &req),
            "/.portcullis/logout" => logout::app_host(&gateway, &host, &req),
            "/.portcullis/session" | "/.portcullis/session/extend" => {
                session_endpoint::handle(&gateway, peer, &host, &req)
            }
            _ => Problem::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "No such gateway endpoint.",
            )
            .into_response(),
        };
    }
    proxy_mode::protected(&gateway, peer, host, path, req).await
}
