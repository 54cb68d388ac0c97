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
    http::{Problem, client_ip, no_store},
};
use axum::{
    Json,
    extract::Request,
    response::{IntoResponse, Response},
};
use http::{Method, StatusCode, header};
use portcullis_core::{CanonicalPath, Host, session};
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

pub fn handle(gateway: &Gateway, peer: SocketAddr, host: &Host, req: &Request) -> Response {
    let extend = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/.portcullis/session") => false,
        (&Method::POST, "/.portcullis/session/extend") => true,
        (_, "/.portcullis/session" | "/.portcullis/session/extend") => {
            return Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Wrong method.",
            )
            .json(true)
            .into_response();
        }
        _ => {
            return Problem::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "No such gateway endpoint.",
            )
            .json(true)
            .into_response();
        }
    };
    // The app path whose policy (and cookie) to report on; an app under /express asks with
    // `?path=/express`.
    let raw = crate::http::query_param(req.uri(), "path").unwrap_or_else(|| "/".to_owned());
    let path = match CanonicalPath::parse(&raw) {
        Ok(path) => path,
        Err(error) => {
            return Problem::bad_request("bad_path", error.to_string())
                .json(true)
                .into_response();
        }
    };
    let now = now();
    let client_ip = client_ip(&gateway.settings, peer.ip(), req.headers());
    let outcome = access::check(
        gateway,
        &Subject {
            host,
            path: &path,
            headers: req.headers(),
            client_ip,
        },
        now,
    );
    let (policy, session) = match outcome {
        Outcome::Allow {
            policy,
            session: Some(session),
            ..
        } => (policy, session),
        Outcome::Allow { .. } | Outcome::Login { .. } => {
            let (reason, ended_sid) = match &outcome {
                Outcome::Login {
                    reason, ended_sid, ..
                } => (*reason, ended_sid.clone()),
                _ => ("login_required", None),
            };
            let target = format!("{}{}", gateway.settings.origin(host.as_str()), path);
            let mut problem =
                Problem::new(StatusCode::UNAUTHORIZED, reason, "No session.").json(true);
            problem.login_url = Some(crate::login::bind::begin_url(
                gateway,
                host.as_str(),
                &target,
                ended_sid.as_deref(),
            ));
            return problem.into_response();
        }
        Outcome::Deny { reason } => return Problem::forbidden(reason).json(true).into_response(),
        Outcome::NotReady => {
            return Problem::not_ready().json(true).into_response();
        }
        Outcome::NoPolicy => {
            return Problem::new(
                StatusCode::NOT_FOUND,
                "no_policy",
                "No application is configured here.",
            )
            .json(true)
            .into_response();
        }
    };
    let (claims, cookie) = if extend {
        let renewed = session::renewed(&session.claims, &policy.session, policy.epoch, now);
        (
            renewed,
            access::renew(gateway, &policy, &session.claims, now),
        )
    } else {
        (session.claims.as_ref().clone(), None)
    };
    let deadlines = session::deadlines(&claims, &policy.session);
    let status = SessionStatus {
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
    };
    let mut response = Json(status).into_response();
    no_store(response.headers_mut());
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}
