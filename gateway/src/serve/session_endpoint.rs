//! `/.portcullis/session` on every app host: what the session of this browser looks like, so an
//! app can warn "your session ends in 5 minutes" before the absolute limit, and
//! `/.portcullis/session/extend` to push out the idle deadline from JavaScript.
//!
//! Reading the status never extends the session (a widget polling it must not keep an idle
//! user logged in forever); extending it is an explicit POST, which `SameSite=Lax` cookies
//! already keep same-site.

use crate::{
    access::{self, Outcome, Subject},
    clock::now,
    gateway::Gateway,
    http::{Problem, client_ip, no_store, query_param},
    serve::refusal::{Asked, Surface, refuse},
};
use axum::{
    Json,
    extract::Request,
    response::{IntoResponse, Response},
};
use http::{Method, StatusCode, header};
use portcullis_core::{CanonicalPath, Host, Policy, session, token::AppClaims};
use serde::Serialize;
use std::net::SocketAddr;

/// The session as an app sees it. Times are unix seconds; `now` is the gateway's clock, so the
/// app can correct for its own.
#[derive(Debug, Serialize)]
pub struct SessionStatus {
    pub user: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub identity_provider: String,
    pub policy: String,
    pub session: String,
    pub authenticated_at: u64,
    pub token_expires_at: u64,
    pub idle_deadline: u64,
    pub absolute_deadline: u64,
    pub now: u64,
}

/// `GET /.portcullis/session` reports; `POST /.portcullis/session/extend` also extends.
pub async fn handle(gateway: &Gateway, peer: SocketAddr, host: &Host, req: Request) -> Response {
    answer(gateway, peer, host, req)
        .await
        .unwrap_or_else(|problem| problem.json(true).into_response())
}

/// Owns the request: a `&Request` held across the session lookup would make the handler's
/// future not `Send` (the body is not `Sync`).
async fn answer(
    gateway: &Gateway,
    peer: SocketAddr,
    host: &Host,
    req: Request,
) -> Result<Response, Problem> {
    let extend = extends(&req)?;
    // The app path whose policy (and cookie) to report on; an app under /express asks with
    // `?path=/express`.
    let raw = query_param(req.uri(), "path").unwrap_or_else(|| "/".to_owned());
    let path = CanonicalPath::parse(&raw)
        .map_err(|error| Problem::bad_request("bad_path", error.to_string()))?;
    let now = now();
    let snapshot = gateway.snapshot();
    let subject = Subject {
        host,
        path: &path,
        headers: req.headers(),
        client_ip: client_ip(gateway.settings(), peer.ip(), req.headers()),
    };
    let (policy, user) = match super::check(gateway, &snapshot, &subject, now).await {
        Outcome::Allow {
            policy,
            user: Some(user),
            ..
        } => (policy, user),
        refused => {
            let asked = Asked {
                host,
                target: format!("{}{}", gateway.settings().origin(host.as_str()), path),
                headers: req.headers(),
                api: true,
            };
            return Ok(refuse(gateway, refused, &asked, &Surface::SESSION_ENDPOINT));
        }
    };
    let (claims, cookie) = if extend {
        let renewed = session::renewed(&user.claims, &policy.session, policy.epoch, now);
        (renewed, access::renew(gateway, &policy, &user.claims, now))
    } else {
        (user.claims.as_ref().clone(), None)
    };
    let mut response = Json(SessionStatus::of(&claims, &policy, now)).into_response();
    no_store(response.headers_mut());
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// Whether the request extends the session (a POST to `extend`) or only reads it.
fn extends(req: &Request) -> Result<bool, Problem> {
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/.portcullis/session") => Ok(false),
        (&Method::POST, "/.portcullis/session/extend") => Ok(true),
        (_, "/.portcullis/session" | "/.portcullis/session/extend") => Err(Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Wrong method.",
        )),
        _ => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "No such gateway endpoint.",
        )),
    }
}

impl SessionStatus {
    fn of(claims: &AppClaims, policy: &Policy, now: u64) -> Self {
        let deadlines = session::deadlines(claims, &policy.session);
        Self {
            user: claims.sub.clone(),
            email: claims.email.clone(),
            groups: claims.groups.clone(),
            identity_provider: claims.idp.clone(),
            policy: policy.id.to_string(),
            session: claims.sid.clone(),
            authenticated_at: claims.auth_time,
            token_expires_at: deadlines.token,
            idle_deadline: deadlines.idle,
            absolute_deadline: deadlines.absolute,
            now,
        }
    }
}
