//! `/.portcullis/start?rd=…`: a login begins. Single sign-on hands a valid SSO session over at
//! once; otherwise the browser picks a provider (when the policy offers several) and goes to it
//! with PKCE, `state` and `nonce`, remembered in a login cookie until the callback.

use super::{LOGIN_TIMEOUT_SECS, Target, handoff, idp_failure, target};
use crate::{
    clock::now,
    cookies,
    gateway::Gateway,
    http::{Problem, html_escape, no_store, page, query_param, redirect},
    login::bind::{self, login_url},
    metrics::Rejection,
    sessions::Liveness,
    tokens::{LoginClaims, SsoClaims},
};
use axum::response::{Html, IntoResponse, Response};
use http::request::Parts;
use portcullis_core::token::TokenKind;
use tracing::info;

pub(super) async fn start(gateway: &Gateway, req: &Parts) -> Result<Response, Problem> {
    let now = now();
    let rd = query_param(&req.uri, "rd")
        .ok_or_else(|| Problem::bad_request("missing_redirect", "Missing return address."))?;
    let target = target(gateway, &rd)?;
    // Set by an app host whose session ended idle, at its absolute limit or unconfirmed: that
    // session must not be handed back (it can only make this stricter). A newer SSO session —
    // the user logged in again meanwhile — is handed over as usual.
    let reauth = query_param(&req.uri, "reauth");
    // Every login is bound to the browser that started it on the app host; one that did not
    // (a direct link) starts again there first.
    let bind = match query_param(&req.uri, "bind") {
        Some(bind) if bind::is_digest(&bind) => bind,
        _ => {
            let begin = bind::begin_url(gateway, target.host.as_str(), &rd, reauth.as_deref());
            return Ok(redirect(&begin, vec![]));
        }
    };
    let jar = cookies::parse(&req.headers);
    let not_before = match single_sign_on(gateway, &jar, &target, reauth.as_deref(), now).await {
        SingleSignOn::HandOver(session) => return handoff(gateway, &target, &session, &bind, now),
        SingleSignOn::Authenticate { not_before } => not_before,
        // The session store cannot answer: a new login could not be recorded either, so the
        // user is not sent through the identity provider for nothing.
        SingleSignOn::Unavailable => {
            return Err(Problem::new(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "session_store_unavailable",
                "Signing in is not possible right now. Please try again in a moment.",
            )
            .retry_after(super::RETRY_AFTER_SECS));
        }
    };
    let providers = &target.policy.identity_providers;
    let chosen = match query_param(&req.uri, "idp") {
        Some(idp) if providers.contains(&idp) => idp,
        Some(_) => {
            return Err(Problem::bad_request(
                "unknown_provider",
                "That sign-in option is not offered for this application.",
            ));
        }
        None if providers.len() == 1 => providers[0].clone(),
        None => return Ok(chooser(gateway, &rd, &bind, reauth.as_deref(), providers)),
    };
    let login = Login {
        idp: chosen,
        rd,
        bind,
        not_before,
    };
    to_provider(gateway, &jar, login, now).await
}

/// What the SSO cookie, if any, allows.
enum SingleSignOn {
    /// A valid SSO session this policy accepts: hand it over without the identity provider.
    HandOver(SsoClaims),
    /// The provider must authenticate the user; when `not_before` is set, freshly (the
    /// provider is asked for a new authentication and `auth_time` is checked on return).
    Authenticate { not_before: Option<u64> },
    /// The session store cannot say whether the SSO session is live (the API server is
    /// unreachable).
    Unavailable,
}

/// Single sign-on: a valid SSO session for a provider this policy accepts skips the IdP —
/// unless the user authenticated before the policy's revocation epoch was raised. Then the
/// provider must authenticate the user again (prompt=login, max_age=0, and `auth_time` is
/// checked on return), so neither a deleted app cookie nor the provider's own session brings a
/// revoked login back.
async fn single_sign_on(
    gateway: &Gateway,
    jar: &[(&str, &str)],
    target: &Target,
    reauth: Option<&str>,
    now: u64,
) -> SingleSignOn {
    let Some(session) = cookies::get(jar, cookies::SSO)
        .and_then(|sso| {
            gateway
                .signing()
                .sso_tokens()
                .verify(sso, Some(gateway.issuer()), now)
                .ok()
        })
        .filter(|session| target.policy.identity_providers.contains(&session.idp))
    else {
        return SingleSignOn::Authenticate { not_before: None };
    };
    let revoked_since = gateway
        .snapshot()
        .epoch_since
        .get(&target.policy.id)
        .copied()
        .unwrap_or(0);
    let live = match gateway.sessions() {
        Some(recorder) => recorder.liveness(&session.sid, &session.sub).await,
        None => Liveness::Live,
    };
    let not_before = if live == Liveness::Unknown {
        return SingleSignOn::Unavailable;
    } else if live != Liveness::Live {
        info!(sid = %session.sid, ?live, "the SSO session is revoked or unknown: forcing a new login");
        gateway.metrics().token_rejected(Rejection::SsoSessionEnded);
        now
    } else if reauth == Some(session.sid.as_str())
        || session.auth_time + target.policy.session.absolute_lifetime.as_secs() <= now
    {
        // The app's own session ended idle or at its absolute lifetime: handing the SSO
        // session over again would undo that (or loop), so the user authenticates again.
        info!(sid = %session.sid, policy = %target.policy.id, "the app session ended: forcing a new login");
        gateway
            .metrics()
            .token_rejected(Rejection::SsoAppSessionEnded);
        now
    } else if session.iat >= revoked_since {
        // `iat` is this gateway's clock at login, the same clock `epoch_since` comes from.
        return SingleSignOn::HandOver((*session).clone());
    } else {
        info!(sid = %session.sid, policy = %target.policy.id, "session predates the policy's revocation epoch: forcing a new login");
        gateway.metrics().token_rejected(Rejection::SsoBeforeEpoch);
        revoked_since
    };
    SingleSignOn::Authenticate {
        not_before: Some(not_before),
    }
}

/// A login about to go to the identity provider.
struct Login {
    idp: String,
    rd: String,
    bind: String,
    not_before: Option<u64>,
}

/// Sends the browser to the identity provider, remembering the login in a cookie.
async fn to_provider(
    gateway: &Gateway,
    jar: &[(&str, &str)],
    login: Login,
    now: u64,
) -> Result<Response, Problem> {
    let provider = gateway
        .providers()
        .get(&login.idp)
        .map_err(|error| idp_failure(gateway, &error))?;
    let request = provider
        .authorize(login.not_before.is_some())
        .await
        .map_err(|error| idp_failure(gateway, &error))?;
    let claims = LoginClaims {
        iss: gateway.issuer().clone(),
        aud: gateway.issuer().clone(),
        state: request.state.clone(),
        nonce: request.nonce,
        pkce: request.pkce_verifier,
        idp: login.idp,
        rd: login.rd,
        not_before: login.not_before,
        bind: login.bind,
        // A new session id at every login: a session fixed before login is never promoted.
        sid: Some(crate::hex::random::<16>()),
        iat: now,
        exp: now + LOGIN_TIMEOUT_SECS,
    };
    let token = gateway
        .signing()
        .keys()
        .sign(TokenKind::Login, &claims)
        .map_err(|_| Problem::internal("signing_failed"))?;
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
    let cookie = cookies::set(
        &login_cookie(&request.state),
        &token,
        std::time::Duration::from_secs(LOGIN_TIMEOUT_SECS),
    )
    .ok_or_else(|| Problem::internal("cookie_too_large"))?;
    set_cookies.push(cookie);
    Ok(redirect(request.url.as_str(), set_cookies))
}

/// The name of the cookie remembering the login with `state`.
pub(super) fn login_cookie(state: &str) -> String {
    let suffix: String = state
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(16)
        .collect();
    format!("{}{suffix}", cookies::LOGIN_PREFIX)
}

/// A page to pick one of the policy's identity providers.
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
            .providers()
            .get(name)
            .ok()
            .and_then(|p| p.config().display_name.clone())
            .unwrap_or_else(|| name.clone());
        let mut href = login_url(gateway, rd);
        href.push_str("&bind=");
        href.push_str(bind);
        bind::push_reauth(&mut href, reauth);
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
