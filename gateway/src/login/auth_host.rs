//! The central auth host: starts logins, receives the identity provider's callback, keeps the
//! single-sign-on session, hands sessions to app hosts, publishes the JWKS.
//!
//! Login (first app):
//! `app → /.portcullis/start?rd=… → IdP → /.portcullis/callback → app/.portcullis/handoff → app`.
//! Single sign-on (any further app of any policy allowing the same provider): the same, minus
//! the identity provider: `/.portcullis/start` finds a valid SSO cookie and hands off at once.

use crate::{
    clock::now,
    cookies,
    gateway::Gateway,
    http::{Problem, html_escape, no_store, page, query_param, redirect},
    idp::OidcError,
    login::handoff::login_url,
    metrics::{Rejection, SessionWrite},
    tokens::{HandoffClaims, LoginClaims, SsoClaims},
};
use axum::{
    Json,
    extract::Request,
    response::{Html, IntoResponse, Response},
};
use http::{HeaderValue, Method, StatusCode, request::Parts};
use portcullis_core::{CanonicalPath, Host, Policy, Route, token::TokenKind};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tracing::{info, warn};

/// How long a login may take at the identity provider.
const LOGIN_TIMEOUT_SECS: u64 = 10 * 60;
/// How long a hand-off ticket is good for.
const HANDOFF_TIMEOUT_SECS: u64 = 60;

pub async fn handle(gateway: &Gateway, req: Request) -> Response {
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
            let mut response = Json(gateway.keys.jwks()).into_response();
            response.headers_mut().insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            response
        }
        "/.portcullis/start" => start(gateway, &req).await,
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
        "/.portcullis/callback" => callback(gateway, &req).await,
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
    let url = url::Url::parse(rd).map_err(|_| refuse())?;
    if url.scheme() != "https"
        || !url.username().is_empty()
        || url.password().is_some()
        || url.fragment().is_some()
    {
        return Err(refuse());
    }
    let port = url.port().unwrap_or(443);
    if port != gateway.settings.public_port {
        return Err(refuse());
    }
    let host = Host::parse(url.host_str().ok_or_else(refuse)?).map_err(|_| refuse())?;
    if host == gateway.settings.auth_host {
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

async fn start(gateway: &Gateway, req: &Parts) -> Response {
    let now = now();
    let Some(rd) = query_param(&req.uri, "rd") else {
        return Problem::bad_request("missing_redirect", "Missing return address.").into_response();
    };
    let target = match target(gateway, &rd) {
        Ok(target) => target,
        Err(problem) => return problem.into_response(),
    };
    // Every login is bound to the browser that started it on the app host; one that did not
    // (a direct link) starts again there first.
    let bind = match query_param(&req.uri, "bind") {
        Some(bind) if crate::login::bind::is_digest(&bind) => bind,
        _ => {
            let reauth = query_param(&req.uri, "reauth");
            return redirect(
                &crate::login::bind::begin_url(
                    gateway,
                    target.host.as_str(),
                    &rd,
                    reauth.as_deref(),
                ),
                vec![],
            );
        }
    };

    // Single sign-on: a valid SSO session for a provider this policy accepts skips the IdP —
    // unless the user authenticated before the policy's revocation epoch was raised. Then the
    // provider must authenticate the user again (prompt=login, max_age=0, and `auth_time` is
    // checked on return), so neither a deleted app cookie nor the provider's own session
    // brings a revoked login back.
    let jar = cookies::parse(&req.headers);
    let revoked_since = gateway
        .snapshot()
        .epoch_since
        .get(&target.policy.id)
        .copied()
        .unwrap_or(0);
    let mut not_before = None;
    // Set by an app host whose session ended idle, at its absolute limit or unconfirmed: that
    // session must not be handed back (it can only make this stricter). A newer SSO session —
    // the user logged in again meanwhile — is handed over as usual.
    let reauth = query_param(&req.uri, "reauth");
    if let Some(sso) = cookies::get(&jar, cookies::SSO)
        && let Ok(session) = gateway.sso_tokens.verify(sso, Some(&gateway.issuer), now)
        && target.policy.identity_providers.contains(&session.idp)
    {
        // `iat` is this gateway's clock at login, the same clock `epoch_since` comes from.
        let live = match &gateway.sessions {
            Some(recorder) => recorder.liveness(&session.sid, &session.sub).await,
            None => crate::sessions::Liveness::Live,
        };
        if live != crate::sessions::Liveness::Live {
            info!(sid = %session.sid, ?live, "the SSO session is revoked or unknown: forcing a new login");
            gateway.metrics.token_rejected(Rejection::SsoSessionEnded);
            not_before = Some(now);
        } else if reauth.as_deref() == Some(session.sid.as_str())
            || session.auth_time + target.policy.session.absolute_lifetime.as_secs() <= now
        {
            // The app's own session ended idle or at its absolute lifetime: handing the SSO
            // session over again would undo that (or loop), so the user authenticates again.
            info!(sid = %session.sid, policy = %target.policy.id, "the app session ended: forcing a new login");
            gateway
                .metrics
                .token_rejected(Rejection::SsoAppSessionEnded);
            not_before = Some(now);
        } else if session.iat >= revoked_since {
            return handoff(gateway, &target, &session, &bind, now);
        } else {
            info!(sid = %session.sid, policy = %target.policy.id, "session predates the policy's revocation epoch: forcing a new login");
            gateway.metrics.token_rejected(Rejection::SsoBeforeEpoch);
            not_before = Some(revoked_since);
        }
    }

    let providers = &target.policy.identity_providers;
    let chosen = match query_param(&req.uri, "idp") {
        Some(idp) if providers.contains(&idp) => idp,
        Some(_) => {
            return Problem::bad_request(
                "unknown_provider",
                "That sign-in option is not offered for this application.",
            )
            .into_response();
        }
        None if providers.len() == 1 => providers[0].clone(),
        None => {
            let reauth = query_param(&req.uri, "reauth");
            return chooser(gateway, &rd, &bind, reauth.as_deref(), providers);
        }
    };
    let provider = match gateway.providers.get(&chosen) {
        Ok(provider) => provider,
        Err(error) => return idp_failure(gateway, &error),
    };
    let request = match provider.authorize(not_before.is_some()).await {
        Ok(request) => request,
        Err(error) => return idp_failure(gateway, &error),
    };
    let claims = LoginClaims {
        iss: gateway.issuer.clone(),
        aud: gateway.issuer.clone(),
        state: request.state.clone(),
        nonce: request.nonce,
        pkce: request.pkce_verifier,
        idp: chosen,
        rd,
        not_before,
        bind,
        iat: now,
        exp: now + LOGIN_TIMEOUT_SECS,
    };
    let Ok(token) = gateway.keys.sign(TokenKind::Login, &claims) else {
        return Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "signing_failed",
            "Internal error.",
        )
        .into_response();
    };
    let mut set_cookies = Vec::new();
    // Cap logins in flight: when a browser has too many, drop them all rather than grow.
    let pending: Vec<&str> = jar
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| n.starts_with(cookies::LOGIN_PREFIX))
        .collect();
    if pending.len() >= cookies::MAX_PENDING_LOGINS {
        set_cookies.extend(pending.iter().filter_map(|n| cookies::clear(n)));
    }
    let Some(cookie) = cookies::set(
        &login_cookie(&request.state),
        &token,
        std::time::Duration::from_secs(LOGIN_TIMEOUT_SECS),
    ) else {
        return Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cookie_too_large",
            "Internal error.",
        )
        .into_response();
    };
    set_cookies.push(cookie);
    redirect(request.url.as_str(), set_cookies)
}

fn login_cookie(state: &str) -> String {
    let suffix: String = state
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(16)
        .collect();
    format!("{}{suffix}", cookies::LOGIN_PREFIX)
}

fn chooser(
    gateway: &Gateway,
    rd: &str,
    bind: &str,
    reauth: Option<&str>,
    providers: &[String],
) -> Response {
    let mut links = String::new();
    for name in providers {
        let label = gateway
            .providers
            .get(name)
            .ok()
            .and_then(|p| p.config().display_name.clone())
            .unwrap_or_else(|| name.clone());
        let mut href = login_url(gateway, rd);
        href.push_str("&bind=");
        href.push_str(bind);
        crate::login::bind::push_reauth(&mut href, reauth);
        href.push_str("&idp=");
        href.extend(url::form_urlencoded::byte_serialize(name.as_bytes()));
        links.push_str(&format!(
            r#"<a class="button" href="{}">Continue with {}</a>"#,
            html_escape(&href),
            html_escape(&label)
        ));
    }
    let mut response = Html(page("Sign in", &links)).into_response();
    no_store(response.headers_mut());
    response
}

async fn callback(gateway: &Gateway, req: &Parts) -> Response {
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
                .logins
                .verify(token, Some(&gateway.issuer), now)
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
    // The login state is spent by this callback, whatever its outcome (rule 11: cleared on the
    // response, success or error).
    let mut response = finish_login(gateway, uri, &login, now).await;
    if let Some(clear) = cookies::clear(&name) {
        response
            .headers_mut()
            .append(http::header::SET_COOKIE, clear);
    }
    response
}

/// The rest of the callback, once the login state is verified.
async fn finish_login(
    gateway: &Gateway,
    uri: &http::Uri,
    login: &LoginClaims,
    now: u64,
) -> Response {
    if let Some(error) = query_param(uri, "error") {
        let code: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        info!(idp = %login.idp, error = %code, "identity provider refused the login");
        return Problem::new(
            StatusCode::FORBIDDEN,
            "idp_refused",
            format!("The identity provider did not sign you in ({code})."),
        )
        .into_response();
    }
    let Some(code) = query_param(uri, "code") else {
        return Problem::bad_request("missing_code", "The sign-in response is incomplete.")
            .into_response();
    };
    let target = match target(gateway, &login.rd) {
        Ok(target) => target,
        Err(problem) => return problem.into_response(),
    };
    let provider = match gateway.providers.get(&login.idp) {
        Ok(provider) => provider,
        Err(error) => return idp_failure(gateway, &error),
    };
    let verified = match provider
        .complete(&code, &login.pkce, &login.nonce, login.not_before, now)
        .await
    {
        Ok(verified) => verified,
        Err(error) => return idp_failure(gateway, &error),
    };
    gateway.metrics.login(&login.idp);
    // A new session id at every login: a session fixed before login is never promoted.
    let sid = crate::hex::random::<16>();
    let session = SsoClaims {
        iss: gateway.issuer.clone(),
        aud: gateway.issuer.clone(),
        sub: verified.subject,
        email: verified.email,
        groups: verified.groups,
        ext: verified.ext,
        sid,
        idp: login.idp.clone(),
        auth_time: verified.auth_time,
        iat: now,
        exp: now + gateway.settings.sso_lifetime.as_secs(),
    };
    // The login exists once it is recorded; until then the browser gets no session at all.
    if let Some(recorder) = &gateway.sessions {
        // Kept only sealed, and only when this gateway can confirm sessions with it.
        let sealed_refresh_token = match (&gateway.refresher, &verified.refresh_token) {
            (Some(refresher), Some(token)) => match refresher.key().seal(&session.sid, token) {
                Ok(sealed) => Some(sealed),
                Err(error) => {
                    warn!(%error, "could not seal the refresh token");
                    return Problem::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "seal_failed",
                        "Internal error.",
                    )
                    .into_response();
                }
            },
            (Some(_), None) => {
                if gateway.metrics.login_without_refresh_token(&login.idp) {
                    warn!(
                        idp = %login.idp,
                        "the identity provider issued no refresh token: its sessions cannot be \
                         confirmed (counted in logins_without_refresh_token; ask for offline access)"
                    );
                }
                None
            }
            (None, _) => None,
        };
        let record = crate::sessions::NewSession {
            sid: &session.sid,
            subject: &session.sub,
            email: session.email.as_deref(),
            groups: &session.groups,
            identity_provider: &session.idp,
            issued_at: session.auth_time,
            expires_at: session.exp,
            sealed_refresh_token,
        };
        if let Err(error) = recorder.record(&record).await {
            warn!(%error, "could not record the session");
            gateway.metrics.session_write_failed(SessionWrite::Record);
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "session_not_recorded",
                "Your sign-in could not be completed right now. Please try again in a moment.",
            )
            .into_response();
        }
        // Let this replica's index catch up with the new session before its first request
        // (another replica may take a moment longer: its first request then bounces once).
        if let Some(index) = &gateway.session_index {
            let mut index = index.clone();
            let sid = session.sid.clone();
            let caught_up = index.wait_for(|i| i.entries.contains_key(&sid));
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), caught_up).await;
        }
    }
    info!(idp = %session.idp, sid = %session.sid, "login");
    let Ok(token) = gateway.keys.sign(TokenKind::Sso, &session) else {
        return Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "signing_failed",
            "Internal error.",
        )
        .into_response();
    };
    let Some(sso) = cookies::set(cookies::SSO, &token, gateway.settings.sso_lifetime) else {
        return Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cookie_too_large",
            "Your identity does not fit in a cookie.",
        )
        .into_response();
    };
    let mut response = handoff(gateway, &target, &session, &login.bind, now);
    response.headers_mut().append(http::header::SET_COOKIE, sso);
    response
}

/// Sends the browser to the target app host with a one-time ticket for its policy.
fn handoff(
    gateway: &Gateway,
    target: &Target,
    session: &SsoClaims,
    bind: &str,
    now: u64,
) -> Response {
    let ticket = HandoffClaims {
        iss: gateway.issuer.clone(),
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
    let Ok(token) = gateway.keys.sign(TokenKind::Handoff, &ticket) else {
        return Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "signing_failed",
            "Internal error.",
        )
        .into_response();
    };
    let mut location = format!(
        "{}/.portcullis/handoff?ticket=",
        gateway.settings.origin(target.host.as_str())
    );
    location.extend(url::form_urlencoded::byte_serialize(token.as_bytes()));
    redirect(&location, vec![])
}

fn idp_failure(gateway: &Gateway, error: &OidcError) -> Response {
    gateway.metrics.idp_error(error.category());
    warn!(error = %error, "login failed");
    let (status, message) = match error {
        OidcError::Discovery { .. } | OidcError::Exchange(_) => (
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
        OidcError::UnknownProvider(_) | OidcError::Config(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Sign-in is misconfigured.",
        ),
    };
    Problem::new(status, error.category(), message).into_response()
}
