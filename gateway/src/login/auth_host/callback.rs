//! `/.portcullis/callback`: the identity provider sends the browser back. The login state is
//! checked before anything is sent to the provider; the code is redeemed and the ID token
//! verified; the login is recorded as a session before the browser gets any cookie; then the
//! SSO cookie is set and the browser handed to its app.

use super::{handoff, idp_failure, start::login_cookie, target};
use crate::{
    audit,
    clock::now,
    cookies,
    gateway::{Gateway, SingleUse},
    http::{Problem, query_param},
    idp::VerifiedLogin,
    metrics::SessionWrite,
    sessions::{NewSession, RecordError},
    tokens::{LoginClaims, SsoClaims},
};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, request::Parts};
use portcullis_core::token::TokenKind;
use subtle::ConstantTimeEq;
use tracing::warn;

pub(super) async fn callback(gateway: &Gateway, req: &Parts) -> Response {
    let now = now();
    let uri = &req.uri;
    let Some(state) = query_param(uri, "state") else {
        return Problem::bad_request("missing_state", "The sign-in response is incomplete.")
            .into_response();
    };
    // The state is checked before anything is sent to the identity provider.
    let jar = cookies::parse(&req.headers);
    let name = login_cookie(&state);
    let login = cookies::get(&jar, &name)
        .and_then(|token| {
            gateway
                .signing()
                .logins()
                .verify(token, Some(gateway.issuer()), now)
                .ok()
        })
        .filter(|login| bool::from(login.state.as_bytes().ct_eq(state.as_bytes())));
    let Some(login) = login else {
        return Problem::bad_request(
            "login_not_found",
            "This sign-in was not started in this browser, or took too long. Please go back to the application and try again.",
        )
        .into_response();
    };
    // The login state is spent by this callback, whatever its outcome: cleared on the
    // response, success or error, and remembered as spent, so the same state with a kept copy
    // of its cookie is refused (see `finish_login` for other replicas).
    let mut response = if gateway.spend(SingleUse::LoginState, &login.state, login.exp, now) {
        finish_login(gateway, uri, &login, now)
            .await
            .unwrap_or_else(IntoResponse::into_response)
    } else {
        login_used().into_response()
    };
    if let Some(clear) = cookies::clear(&name) {
        response
            .headers_mut()
            .append(http::header::SET_COOKIE, clear);
    }
    response
}

/// The answer to a login state used a second time.
fn login_used() -> Problem {
    Problem::bad_request(
        "login_used",
        "This sign-in was already completed. Please go back to the application.",
    )
}

/// The rest of the callback, once the login state is verified.
async fn finish_login(
    gateway: &Gateway,
    uri: &http::Uri,
    login: &LoginClaims,
    now: u64,
) -> Result<Response, Problem> {
    if let Some(error) = query_param(uri, "error") {
        let code: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        audit::login_refused(&login.idp, &code);
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "idp_refused",
            format!("The identity provider did not sign you in ({code})."),
        ));
    }
    let code = query_param(uri, "code").ok_or_else(|| {
        Problem::bad_request("missing_code", "The sign-in response is incomplete.")
    })?;
    let target = target(gateway, &login.rd)?;
    let provider = gateway
        .providers()
        .get(&login.idp)
        .map_err(|error| idp_failure(gateway, &error))?;
    let verified = provider
        .complete(&code, &login.pkce, &login.nonce, login.not_before, now)
        .await
        .map_err(|error| idp_failure(gateway, &error))?;
    gateway.metrics().login(&login.idp);
    // A new session id at every login (chosen when it started, so a second callback with the
    // same state, on any replica, finds its session name taken): a session fixed before login
    // is never promoted.
    let sid = login.sid.clone().unwrap_or_else(crate::hex::random::<16>);
    let session = SsoClaims {
        iss: gateway.issuer().clone(),
        aud: gateway.issuer().clone(),
        sub: verified.subject.clone(),
        email: verified.email.clone(),
        groups: verified.groups.clone(),
        ext: verified.ext.clone(),
        sid,
        idp: login.idp.clone(),
        auth_time: verified.auth_time,
        iat: now,
        exp: now + gateway.settings().sso_lifetime.as_secs(),
    };
    // The login exists once it is recorded; until then the browser gets no session at all.
    record(gateway, &session, &verified).await?;
    let user = audit::User::new(&session.sub, session.email.as_deref());
    audit::login(&session.sid, &session.idp, user, session.groups.len());
    let sso = sso_cookie(gateway, &session)?;
    let mut response = handoff(gateway, &target, &session, &login.bind, now)?;
    response.headers_mut().append(http::header::SET_COOKIE, sso);
    Ok(response)
}

/// Records the login as a session (cluster mode), and lets this replica's index catch up with
/// it before its first request.
async fn record(
    gateway: &Gateway,
    session: &SsoClaims,
    verified: &VerifiedLogin,
) -> Result<(), Problem> {
    let Some(recorder) = gateway.sessions() else {
        return Ok(());
    };
    let record = NewSession {
        sid: &session.sid,
        subject: &session.sub,
        email: session.email.as_deref(),
        groups: &session.groups,
        identity_provider: &session.idp,
        issued_at: session.auth_time,
        expires_at: session.exp,
        sealed_refresh_token: sealed_refresh_token(gateway, session, verified)?,
        sealed_id_token: sealed_id_token(gateway, session, verified),
        attempt: &crate::hex::random::<16>(),
        provider_session_id: verified.provider_session_id.as_deref(),
    };
    if let Err(error) = recorder.record(&record).await {
        if let RecordError::Collision(_) = error {
            // Another callback of this very login (the same state) already made the session.
            warn!(sid = %session.sid, "a login state was used twice; refused");
            return Err(login_used());
        }
        warn!(%error, "could not record the session");
        gateway.metrics().session_write_failed(SessionWrite::Record);
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "session_not_recorded",
            "Your sign-in could not be completed right now. Please try again in a moment.",
        )
        .retry_after(super::RETRY_AFTER_SECS));
    }
    // A session this gateway created is known to it at once, whether or not the operator's
    // stream is up; another replica asks the API server when it first sees the token.
    if let Some(learner) = gateway
        .session_index()
        .as_ref()
        .and_then(|index| index.borrow().learner.clone())
    {
        learner.learn(&record.observed(), crate::clock::now());
    } else if let Some(index) = gateway.session_index() {
        let mut index = index.clone();
        let sid = session.sid.clone();
        let caught_up = index.wait_for(|i| i.entries.contains_key(&sid));
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), caught_up).await;
    }
    Ok(())
}

/// The provider's refresh token, sealed: kept only when this gateway can confirm sessions with
/// it.
fn sealed_refresh_token(
    gateway: &Gateway,
    session: &SsoClaims,
    verified: &VerifiedLogin,
) -> Result<Option<String>, Problem> {
    match (gateway.refresher(), &verified.refresh_token) {
        (Some(refresher), Some(token)) => match refresher.key().seal(&session.sid, token) {
            Ok(sealed) => Ok(Some(sealed)),
            Err(error) => {
                warn!(%error, "could not seal the refresh token");
                Err(Problem::internal("seal_failed"))
            }
        },
        (Some(_), None) => {
            if gateway.metrics().login_without_refresh_token(&session.idp) {
                warn!(
                    idp = %session.idp,
                    "the identity provider issued no refresh token: its sessions cannot be \
                     confirmed (counted in logins_without_refresh_token; ask for offline access)"
                );
            }
            Ok(None)
        }
        (None, _) => Ok(None),
    }
}

/// The provider's ID token, sealed, for `id_token_hint` at logout: kept only when the
/// gateway has a session key (it is never stored in the clear, and never in a cookie). One
/// that cannot be sealed is left out with a warning: logout then sends only `client_id`,
/// and the provider may ask the user to confirm; the login itself does not depend on it.
fn sealed_id_token(
    gateway: &Gateway,
    session: &SsoClaims,
    verified: &VerifiedLogin,
) -> Option<String> {
    let refresher = gateway.refresher().as_ref()?;
    let sealed = refresher
        .key()
        .seal_id_token(&session.sid, &verified.id_token);
    sealed
        .inspect_err(|error| warn!(%error, idp = %session.idp, "the ID token is not kept"))
        .ok()
}

/// The SSO cookie of `session`.
fn sso_cookie(gateway: &Gateway, session: &SsoClaims) -> Result<HeaderValue, Problem> {
    let token = gateway
        .signing()
        .keys()
        .sign(TokenKind::Sso, session)
        .map_err(|_| Problem::internal("signing_failed"))?;
    cookies::set(cookies::SSO, &token, gateway.settings().sso_lifetime).ok_or_else(|| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cookie_too_large",
            "Your identity does not fit in a cookie.",
        )
    })
}
