//! The central auth host: starts logins, receives the identity provider's callback, keeps the
//! single-sign-on session, hands sessions to app hosts, publishes the JWKS.
//!
//! Login (first app):
//! `app → /.portcullis/start?rd=… → IdP → /.portcullis/callback → app/.portcullis/handoff → app`.
//! Single sign-on (any further app of any policy allowing the same provider): the same, minus
//! the identity provider: `/.portcullis/start` finds a valid SSO cookie and hands off at once.

mod callback;
mod start;

use crate::{
    gateway::Gateway,
    http::{Problem, page, query_param, redirect},
    idp::OidcError,
    tokens::{HandoffClaims, SsoClaims},
};
use axum::{
    Json,
    extract::Request,
    response::{Html, IntoResponse, Response},
};
use http::{HeaderValue, Method, StatusCode};
use portcullis_core::{CanonicalPath, Host, Policy, Route, token::TokenKind};
use std::sync::Arc;
use tracing::warn;

/// What a login that cannot go on while the session store is away suggests (`Retry-After`).
const RETRY_AFTER_SECS: u64 = 10;

/// How long a login may take at the identity provider.
const LOGIN_TIMEOUT_SECS: u64 = 10 * 60;
/// How long a hand-off ticket is good for.
const HANDOFF_TIMEOUT_SECS: u64 = 60;

pub async fn handle(gateway: &Gateway, req: Request) -> Response {
    if req
        .uri()
        .path()
        .starts_with(crate::login::backchannel::PREFIX)
    {
        return crate::login::backchannel::handle(gateway, req).await;
    }
    // Only the head is needed; holding the body across awaits would make the future !Send.
    let (req, _body) = req.into_parts();
    let logout_post = req.method == Method::POST && req.uri.path() == "/.portcullis/logout";
    if req.method != Method::GET && req.method != Method::HEAD && !logout_post {
        return Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Only GET is served here.",
        )
        .into_response();
    }
    match req.uri.path() {
        "/.well-known/jwks.json" => {
            let mut response = Json(gateway.signing().keys().jwks()).into_response();
            response.headers_mut().insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            response
        }
        "/.portcullis/start" => start::start(gateway, &req)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        "/.portcullis/logout" => {
            crate::login::logout::auth_host(
                gateway,
                &req.method,
                &req.headers,
                query_param(&req.uri, "rd"),
            )
            .await
        }
        "/.portcullis/logged-out" => {
            crate::login::logout::logged_out(gateway, query_param(&req.uri, "state"))
        }
        "/.portcullis/callback" => callback::callback(gateway, &req).await,
        "/" => Html(page(
            "Portcullis",
            "<p>This is the sign-in service for your organisation's applications.</p>",
        ))
        .into_response(),
        _ => Problem::new(StatusCode::NOT_FOUND, "not_found", "Nothing here.").into_response(),
    }
}

/// A validated post-login destination.
struct Target {
    host: Host,
    /// Path and query on `host`.
    path_and_query: String,
    policy: Arc<Policy>,
}

/// Accepts only `https://<host of a configured policy>[:public port]/<canonical path>[?query]`,
/// parsed, never pattern-matched: no other scheme, no userinfo, no other port, no fragment,
/// the host exactly one of ours, and a path some valid policy covers.
fn target(gateway: &Gateway, rd: &str) -> Result<Target, Problem> {
    let refuse = || {
        Problem::bad_request(
            "invalid_redirect",
            "The return address is not one of this organisation's applications.",
        )
    };
    crate::login::bind::check_return_address(rd)?;
    let url = url::Url::parse(rd).map_err(|_| refuse())?;
    if url.scheme() != "https"
        || !url.username().is_empty()
        || url.password().is_some()
        || url.fragment().is_some()
    {
        return Err(refuse());
    }
    let port = url.port().unwrap_or(443);
    if port != gateway.settings().public_port {
        return Err(refuse());
    }
    let host = Host::parse(url.host_str().ok_or_else(refuse)?).map_err(|_| refuse())?;
    if host == gateway.settings().auth_host {
        return Err(refuse());
    }
    let path = CanonicalPath::parse(url.path()).map_err(|_| refuse())?;
    let snapshot = gateway.snapshot();
    let policy = match snapshot.routes.route(&host, &path) {
        Some(Route::Policy(policy)) => policy.clone(),
        _ => return Err(refuse()),
    };
    let path_and_query = match url.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    Ok(Target {
        host,
        path_and_query,
        policy,
    })
}

/// Sends the browser to the target app host with a one-time ticket for its policy.
fn handoff(
    gateway: &Gateway,
    target: &Target,
    session: &SsoClaims,
    bind: &str,
    now: u64,
) -> Result<Response, Problem> {
    let ticket = HandoffClaims {
        iss: gateway.issuer().clone(),
        aud: target.policy.id.to_string(),
        host: target.host.to_string(),
        rd: target.path_and_query.clone(),
        sub: session.sub.clone(),
        email: session.email.clone(),
        groups: session.groups.clone(),
        ext: session.ext.clone(),
        sid: session.sid.clone(),
        idp: session.idp.clone(),
        auth_time: session.auth_time,
        sexp: session.exp,
        jti: crate::hex::random::<16>(),
        bind: bind.to_owned(),
        iat: now,
        exp: now + HANDOFF_TIMEOUT_SECS,
    };
    let token = gateway
        .signing()
        .keys()
        .sign(TokenKind::Handoff, &ticket)
        .map_err(|_| Problem::internal("signing_failed"))?;
    let mut location = format!(
        "{}/.portcullis/handoff?ticket=",
        gateway.settings().origin(target.host.as_str())
    );
    location.extend(url::form_urlencoded::byte_serialize(token.as_bytes()));
    Ok(redirect(&location, vec![]))
}

/// The answer to a failed interaction with the identity provider, counted and logged.
fn idp_failure(gateway: &Gateway, error: &OidcError) -> Problem {
    gateway.metrics().idp_error(error.category());
    warn!(error = %error, "login failed");
    let (status, message) = match error {
        OidcError::Discovery { .. }
        | OidcError::Exchange(_)
        | OidcError::Userinfo(_)
        | OidcError::UserinfoSubject(_) => (
            StatusCode::BAD_GATEWAY,
            "The identity provider could not be reached. Please try again.",
        ),
        OidcError::CodeRejected(_) => (
            StatusCode::BAD_REQUEST,
            "This sign-in has expired or was already used. Please go back to the application and try again.",
        ),
        OidcError::InvalidIdToken(_) | OidcError::NoIdToken => (
            StatusCode::FORBIDDEN,
            "The identity provider's answer could not be verified.",
        ),
        OidcError::NotReauthenticated(_) => (
            StatusCode::FORBIDDEN,
            "You must enter your credentials again, and the identity provider signed you in \
             without asking for them. Please go back to the application and sign in again.",
        ),
        OidcError::UnacceptableClaims(claims) => {
            // The reason names the claim and the limit, never its value.
            return Problem::new(
                StatusCode::FORBIDDEN,
                error.category(),
                format!(
                    "Your account, as the identity provider describes it, cannot be used to \
                     sign in here: {claims}. Please contact your administrator."
                ),
            );
        }
        OidcError::GroupsUnavailable(_) => (
            StatusCode::FORBIDDEN,
            "The identity provider did not list your groups in its answer (you may be in more \
             groups than it puts in a sign-in token), so access cannot be decided. Please \
             contact your administrator.",
        ),
        OidcError::UnknownProvider(_) | OidcError::Config(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Sign-in is misconfigured.",
        ),
    };
    Problem::new(status, error.category(), message)
}
