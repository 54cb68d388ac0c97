//! The app host's side of a login: where a browser without a valid app token is sent, the
//! hand-off ticket from the auth host redeemed into this app's token cookie, and `begin` for
//! logins that did not start from a redirect of ours.

use crate::{
    clock::now,
    cookies,
    gateway::{Gateway, SingleUse},
    http::{Problem, query_param, redirect},
    sessions::Redemption,
    tokens::HandoffClaims,
};
use axum::{
    extract::Request,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, request::Parts};
use portcullis_core::{
    CanonicalPath, Host, Policy, Route,
    token::{AppClaims, TokenKind},
};
use std::sync::Arc;

/// Redeems a hand-off ticket from the auth host: sets this app's token cookie and sends the
/// browser on to where it was going. A ticket is used once: remembered on this replica, and
/// (with session records) redeemed at the source of truth, so no other replica takes it again
/// ([`crate::sessions::redeemed`]).
pub async fn handoff(gateway: &Gateway, host: &Host, req: &Parts) -> Result<Response, Problem> {
    let now = now();
    let ticket = query_param(&req.uri, "ticket")
        .ok_or_else(|| Problem::bad_request("missing_ticket", "Missing ticket."))?;
    let claims: Arc<HandoffClaims> = gateway
        .signing()
        .handoffs()
        .verify(&ticket, None, now)
        .map_err(|error| {
            gateway
                .metrics()
                .token_rejected(crate::metrics::Rejection::Token(&error));
            Problem::bad_request(
                "invalid_ticket",
                "This sign-in link is invalid or has expired.",
            )
        })?;
    if !crate::login::bind::holds(&req.headers, &claims.bind) {
        return Err(Problem::bad_request(
            "wrong_browser",
            "This sign-in link was started in another browser. Please open the application again.",
        ));
    }
    if claims.host != host.as_str() {
        return Err(Problem::bad_request(
            "wrong_host",
            "This sign-in link is for another site.",
        ));
    }
    let snapshot = gateway.snapshot();
    let rd_path = claims.rd.split('?').next().unwrap_or("/");
    let policy = match CanonicalPath::parse(rd_path)
        .ok()
        .and_then(|p| snapshot.routes.route(host, &p).cloned())
    {
        Some(Route::Policy(policy)) if policy.id.to_string() == claims.aud => policy,
        _ => return Err(Problem::forbidden("policy_changed")),
    };
    if !gateway.spend(SingleUse::HandoffTicket, &claims.jti, claims.exp, now) {
        return Err(ticket_used());
    }
    redeem_everywhere(gateway, &claims, &policy, now).await?;
    let cookie = app_token_cookie(gateway, &policy, &claims, now)?;
    // A browser sent round again and again ends on a page with a retry link, never a loop.
    let counted = match crate::login::bounce::count(&req.headers) {
        crate::login::bounce::Counted::Next(counted) => counted,
        crate::login::bounce::Counted::Loop => {
            return Ok(crate::login::bounce::loop_page(&claims.rd));
        }
    };
    Ok(redirect(
        &claims.rd,
        std::iter::once(cookie).chain(counted).collect(),
    ))
}

/// Redeems the ticket at the session store, so that no replica accepts it again; without
/// session records (one standalone replica) this replica's memory is all there is.
async fn redeem_everywhere(
    gateway: &Gateway,
    claims: &HandoffClaims,
    policy: &Policy,
    now: u64,
) -> Result<(), Problem> {
    let Some(recorder) = gateway.sessions() else {
        return Ok(());
    };
    match recorder
        .redeem_handoff(
            (&claims.sid, &claims.jti),
            policy.uid.as_deref().map(|uid| (uid, claims.aud.as_str())),
            claims.exp,
            now,
        )
        .await
    {
        Redemption::Redeemed => Ok(()),
        Redemption::Replayed => Err(ticket_used()),
        Redemption::SessionEnded => Err(Problem::bad_request(
            "session_ended",
            "This sign-in has ended. Please open the application again.",
        )),
        Redemption::Unavailable => Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "handoff_unavailable",
            "Your sign-in could not be completed right now. Please open the application again in a moment.",
        )),
    }
}

fn ticket_used() -> Problem {
    Problem::bad_request("ticket_used", "This sign-in link was already used.")
}

/// The app token cookie for `policy` minted from a redeemed hand-off ticket.
fn app_token_cookie(
    gateway: &Gateway,
    policy: &Policy,
    ticket: &HandoffClaims,
    now: u64,
) -> Result<HeaderValue, Problem> {
    let lifetime = policy.session.token_lifetime.as_secs();
    let app = AppClaims {
        iss: gateway.issuer().clone(),
        aud: policy.id.to_string(),
        sub: ticket.sub.clone(),
        email: ticket.email.clone(),
        groups: ticket.groups.clone(),
        ext: ticket.ext.clone(),
        sid: ticket.sid.clone(),
        idp: ticket.idp.clone(),
        epoch: policy.epoch,
        iat: now,
        exp: now + lifetime,
        auth_time: ticket.auth_time,
        sexp: Some(ticket.sexp),
        puid: policy.uid.clone(),
    };
    let token = gateway
        .signing()
        .keys()
        .sign(TokenKind::App, &app)
        .map_err(|_| Problem::internal("signing_failed"))?;
    cookies::set(
        &cookies::app_names(&policy.id).cookie,
        &token,
        policy.session.absolute_lifetime,
    )
    .ok_or_else(|| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cookie_too_large",
            "Your identity does not fit in a cookie.",
        )
    })
}

/// `/.portcullis/begin?rd=…`: a login that did not start from a redirect of ours (an API
/// client's `login_url`, an ingress sign-in hint, a direct link) starts here, on the app host,
/// so the browser gets its binding nonce. `rd` must be on this very host.
pub fn begin(gateway: &Gateway, host: &Host, req: &Request) -> Response {
    let Some(rd) = query_param(req.uri(), "rd") else {
        return Problem::bad_request("missing_redirect", "Missing return address.").into_response();
    };
    if let Err(problem) = crate::login::bind::check_return_address(&rd) {
        return problem.into_response();
    }
    let origin = format!("{}/", gateway.settings().origin(host.as_str()));
    let same_host = rd.starts_with(&origin)
        && CanonicalPath::parse(rd[origin.len() - 1..].split('?').next().unwrap_or("/")).is_ok()
        && !rd.contains('#');
    if !same_host {
        return Problem::bad_request(
            "invalid_redirect",
            "The return address is not on this site.",
        )
        .into_response();
    }
    let reauth = query_param(req.uri(), "reauth");
    crate::login::bind::start(gateway, req.headers(), &rd, reauth.as_deref())
}
