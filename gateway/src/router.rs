//! The HTTP surface: one router, dispatching by host and path.
//!
//! - the auth host serves login, callback and JWKS ([`crate::login::auth_host`]);
//! - `/.portcullis/auth/*` on any host answers ingress controllers' forward-auth sub-requests
//!   ([`crate::serve::forward_auth`]), for trusted proxies only;
//! - `/.portcullis/*` on an app host is the gateway's own (hand-off); it never reaches an
//!   upstream;
//! - everything else is a protected request: check, then proxy.
//!
//! Every login endpoint, on the auth host and on app hosts, is rate-limited per client before
//! anything else is done for it ([`login_limited`]).

use crate::{
    access_log,
    gateway::Gateway,
    http::{ClientAddr, Problem, client_ip, request_host, request_id, secure},
    login::{auth_host, handoff, logout},
    serve::{forward_auth, proxy_mode, session_endpoint},
};
use axum::{
    Router,
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use portcullis_core::CanonicalPath;
use std::{net::SocketAddr, time::Instant};
use tracing::Instrument as _;

/// The gateway's router: one handler for every request ([`logged`]). Every response the
/// gateway makes itself gets the security headers ([`crate::http::secure`]); an upstream's is
/// relayed as it is.
///
/// No middleware layers: each layer moves the request's future (which holds the whole request
/// path, several kilobytes) again, and those copies were a measurable share of a request.
pub fn app(gateway: Gateway) -> Router {
    Router::new().fallback(logged).with_state(gateway)
}

/// Every request: given a request id, served, and written to the access log.
async fn logged(State(gateway): State<Gateway>, mut req: Request) -> Response {
    let Some(ClientAddr(peer)) = req.extensions().get::<ClientAddr>().copied() else {
        let mut response = Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no_peer",
            "Internal error.",
        )
        .into_response();
        secure(&mut response);
        return response;
    };
    let started = Instant::now();
    let settings = gateway.settings();
    let request_id = request_id::assign(settings, peer.ip(), req.headers_mut());
    // Cheap clones (shared buffers), taken before the request is consumed.
    let method = req.method().clone();
    let uri = req.uri().clone();
    let host = req.headers().get(header::HOST).cloned();
    let client_ip = client_ip(settings, peer.ip(), req.headers());
    let span = tracing::info_span!(
        target: portcullis_runtime::telemetry::TARGET,
        "request",
        otel.name = %method,
        otel.kind = "server",
        http.request.method = %method,
        url.path = uri.path(),
        server.address = host.as_ref().and_then(|h| h.to_str().ok()).or(uri.host()),
        http.response.status_code = tracing::field::Empty,
    );
    portcullis_runtime::telemetry::continue_from(&span, req.headers());
    // Boxed: the layers around it (and axum's, above this handler) then move a pointer rather
    // than the whole request path's future, several kilobytes, each.
    let (mut response, note) = access_log::scope(Box::pin(dispatch(&gateway, peer, req)))
        .instrument(span.clone())
        .await;
    span.record("http.response.status_code", response.status().as_u16());
    access_log::write(
        &settings.access_log,
        &access_log::Line {
            request_id: &request_id,
            client_ip,
            method: &method,
            // HTTP/1.1 names the host in `Host`, HTTP/2 in the URI's authority.
            host: host.as_ref().and_then(|h| h.to_str().ok()).or(uri.host()),
            uri: &uri,
            status: response.status(),
            elapsed: started.elapsed(),
            note: note.as_ref(),
        },
    );
    response
        .headers_mut()
        .insert(request_id::X_REQUEST_ID, request_id);
    secure(&mut response);
    response
}

async fn dispatch(gateway: &Gateway, peer: SocketAddr, req: Request) -> Response {
    if req.uri().path().starts_with("/.portcullis/auth/") {
        return forward_auth::handle(gateway, peer, req).await;
    }
    let host = match request_host(&req) {
        Ok(host) => host,
        Err(problem) => return problem.into_response(),
    };
    if host == gateway.settings().auth_host {
        if let Some(refused) = login_limited(gateway, peer, &req, AUTH_HOST_LOGIN) {
            return refused;
        }
        return auth_host::handle(gateway, req).await;
    }
    let path = match CanonicalPath::parse(req.uri().path()) {
        Ok(path) => path,
        Err(error) => return Problem::bad_request("bad_path", error.to_string()).into_response(),
    };
    if path.as_str() == "/.portcullis" || path.as_str().starts_with("/.portcullis/") {
        if let Some(refused) = login_limited(gateway, peer, &req, APP_HOST_LOGIN) {
            return refused;
        }
        return match path.as_str() {
            "/.portcullis/handoff" => {
                // Only the head: holding the body across the redemption would make this !Send.
                let (head, _body) = req.into_parts();
                handoff::handoff(gateway, &host, &head)
                    .await
                    .into_response()
            }
            "/.portcullis/begin" => handoff::begin(gateway, &host, &req),
            "/.portcullis/logout" => logout::app_host(gateway, &host, &req),
            "/.portcullis/session" | "/.portcullis/session/extend" => {
                session_endpoint::handle(gateway, peer, &host, req).await
            }
            _ => Problem::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "No such gateway endpoint.",
            )
            .into_response(),
        };
    }
    proxy_mode::protected(gateway, peer, host, path, req).await
}

/// The auth host's login endpoints, by path, with their metric label.
const AUTH_HOST_LOGIN: &[(&str, &str)] = &[
    ("/.portcullis/start", "start"),
    ("/.portcullis/callback", "callback"),
    ("/.portcullis/logout", "logout"),
    ("/.portcullis/logged-out", "logged_out"),
];

/// An app host's login endpoints, by path, with their metric label.
const APP_HOST_LOGIN: &[(&str, &str)] = &[
    ("/.portcullis/handoff", "handoff"),
    ("/.portcullis/begin", "begin"),
    ("/.portcullis/logout", "app_logout"),
];

/// A 429 with `Retry-After` when `req` is for one of `endpoints` and its client has used up its
/// login rate; the client is who [`client_ip`] says (a trusted proxy's `X-Forwarded-For`,
/// otherwise the peer).
fn login_limited(
    gateway: &Gateway,
    peer: SocketAddr,
    req: &Request,
    endpoints: &[(&str, &'static str)],
) -> Option<Response> {
    let path = req.uri().path();
    let (_, endpoint) = endpoints.iter().find(|(p, _)| *p == path)?;
    let client = client_ip(gateway.settings(), peer.ip(), req.headers());
    let wait = gateway
        .login_limit()
        .take(client, std::time::Instant::now())
        .err()?;
    gateway.metrics().rate_limited(endpoint);
    let mut response = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "Too many sign-in requests from your address. Please wait a moment and try again.",
    )
    .into_response();
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    Some(response)
}
