//! Security headers on every response the gateway makes itself — login, confirmation, error
//! and refusal pages, problems, redirects, forward-auth answers, JWKS — added in one place,
//! the router's one handler, to every response it returns, so no handler can forget them.
//! Responses relayed from an upstream carry [`Relayed`] and are left as the upstream made
//! them: the app owns its policy.

use axum::response::Response;
use http::{HeaderName, HeaderValue, header};

/// Marks a response relayed from an upstream (set by the proxy), which keeps its own headers.
#[derive(Clone, Copy, Debug)]
pub struct Relayed;

/// The gateway's pages need no script, no frame, no plugin and no resource from elsewhere;
/// their only style is inline. `frame-ancestors 'none'` (and `X-Frame-Options` for older
/// browsers) keeps every page — the logout confirmation first — out of other sites' frames.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     frame-ancestors 'none'; base-uri 'none'";

/// The headers [`secure`] sets.
pub const SECURITY_HEADERS: [(HeaderName, &str); 4] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_FRAME_OPTIONS, "DENY"),
    // Login URLs carry `state` and tickets: never leak them to the next site.
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
];

/// Adds [`SECURITY_HEADERS`] to a response of the gateway's own; a [`Relayed`] one is left
/// untouched.
pub fn secure(response: &mut Response) {
    if response.extensions().get::<Relayed>().is_some() {
        return;
    }
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
}
