//! Logging out.
//!
//! - `/.portcullis/logout?scope=app` on an app host drops that host's app tokens only (per-app
//!   logout); the single-sign-on session stays.
//! - `/.portcullis/logout` on an app host drops its app tokens and continues at the auth host.
//! - `/.portcullis/logout` on the auth host revokes the session (its `AccessSession`, in
//!   cluster mode) and clears the SSO cookie, so no app can be reached from it again without a
//!   new login. It always signs the user out at once: when the API server is down the session
//!   ends in this gateway's memory and its revocation is written once the API server is back.
//!
//! Cookies are cleared on the response itself, before anything else can happen.

use crate::{
    audit,
    clock::now,
    cookies,
    gateway::Gateway,
    http::{html_escape, no_store, page, redirect},
};
use axum::{
    extract::Request,
    response::{Html, IntoResponse, Response},
};
use http::{HeaderValue, header};
use portcullis_core::Host;
use std::time::Duration;
use tracing::warn;

/// How long a logout waits for the API server to take the revocation before queueing it.
const REVOKE_WAIT: Duration = Duration::from_secs(2);

/// Every app cookie of the policies on `host`.
fn app_cookies(gateway: &Gateway, host: &Host) -> Vec<HeaderValue> {
    let snapshot = gateway.snapshot();
    let mut names: Vec<String> = snapshot
        .policies
        .values()
        .filter(|p| p.hosts.contains(host))
        .map(|p| cookies::app_names(&p.id).cookie.clone())
        .collect();
    names.sort();
    names.dedup();
    names.iter().filter_map(|n| cookies::clear(n)).collect()
}

/// `/.portcullis/logout` on an app host.
pub fn app_host(gateway: &Gateway, host: &Host, req: &Request) -> Response {
    let cleared = app_cookies(gateway, host);
    let app_only = crate::http::query_param(req.uri(), "scope").as_deref() == Some("app");
    if app_only {
        let mut response = Html(page(
            "Signed out of this application",
            &format!(
                r#"<p>You are signed out of {}. Other applications keep your session.</p>"#,
                html_escape(host.as_str())
            ),
        ))
        .into_response();
        for cookie in cleared {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        no_store(response.headers_mut());
        return response;
    }
    let back = format!("{}/", gateway.settings().origin(host.as_str()));
    let mut location = format!("{}/.portcullis/logout?rd=", gateway.issuer());
    location.extend(url::form_urlencoded::byte_serialize(back.as_bytes()));
    redirect(&location, cleared)
}

/// `/.portcullis/logout` on the auth host.
///
/// Unless the request provably comes from the auth host's own pages (see
/// `logout_confirmed`), it only shows a button that confirms it: otherwise any page on the web,
/// or any app host, could end the user's sessions here and, with RP-initiated logout, at the
/// identity provider.
pub async fn auth_host(
    gateway: &Gateway,
    method: &http::Method,
    headers: &http::HeaderMap,
    rd: Option<String>,
) -> Response {
    let now = now();
    let jar = cookies::parse(headers);
    // Only back to one of our own apps; anything else is simply not offered.
    let back = rd.filter(|rd| back_link_allowed(gateway, rd));
    if !logout_confirmed(gateway, method, headers) {
        let mut response = confirm_page(back.as_deref());
        no_store(response.headers_mut());
        return response;
    }
    let mut at_provider = None;
    if let Some(sso) = cookies::get(&jar, cookies::SSO)
        && let Ok(session) = gateway
            .signing()
            .sso_tokens()
            .verify(sso, Some(gateway.issuer()), now)
    {
        audit::logout(
            &session.sid,
            audit::User::new(&session.sub, session.email.as_deref()),
        );
        end_session(gateway, &session.sid, "logout").await;
        at_provider =
            super::rp_logout::provider_logout_url(gateway, &session, back.as_deref()).await;
    }
    let mut response = match at_provider {
        // RP-initiated logout: the provider ends its own session and sends the browser back to
        // `/.portcullis/logged-out`.
        Some(url) => redirect(url.as_str(), Vec::new()),
        None => signed_out_page(back.as_deref()),
    };
    if let Some(cookie) = cookies::clear(cookies::SSO) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    no_store(response.headers_mut());
    response
}

/// Ends session `sid` with `reason`: at once in this gateway's memory, and as a revocation at the API server
/// (every gateway then refuses it). When the API server cannot take the write within
/// [`REVOKE_WAIT`], the revocation waits in a queue and is written once it is back: the user is
/// signed out now either way (`sessions::pending`).
pub(crate) async fn end_session(gateway: &Gateway, sid: &str, reason: &str) {
    if let Some(learner) = gateway
        .session_index()
        .as_ref()
        .and_then(|index| index.borrow().learner.clone())
    {
        learner.end(sid);
    }
    let Some(recorder) = gateway.sessions() else {
        return;
    };
    let written = tokio::time::timeout(REVOKE_WAIT, recorder.revoke(sid, reason)).await;
    if let Ok(Ok(())) = written {
        return;
    }
    warn!(
        sid,
        reason, "could not revoke the session yet; it is written once the API server answers"
    );
    gateway
        .metrics()
        .session_write_failed(crate::metrics::SessionWrite::Revoke);
    let queued = gateway
        .pending_revocations()
        .as_ref()
        .is_some_and(|pending| pending.push(sid, reason));
    if !queued {
        warn!(
            sid,
            "the queue of revocations waiting for the API server is full"
        );
    }
}

/// `/.portcullis/logged-out`: where the identity provider returns the browser after its own
/// logout. `state` is the back link, judged again like any other.
pub fn logged_out(gateway: &Gateway, state: Option<String>) -> Response {
    let back = state.filter(|rd| back_link_allowed(gateway, rd));
    let mut response = signed_out_page(back.as_deref());
    no_store(response.headers_mut());
    response
}

/// Whether this request may end the session at once: only one the browser says comes from
/// the auth host itself (`Sec-Fetch-Site: same-origin`: its own pages), or a `POST` from the
/// confirmation page (same origin by Fetch Metadata, or by `Origin` for browsers that send no
/// Fetch Metadata). Anything else — no Fetch Metadata on a `GET` (an old browser, a script),
/// `same-site` (a sibling app host, which any of them could trigger), `cross-site`, `none` (a
/// typed or bookmarked URL, or a prefetch) — gets the confirmation page. The page cannot be
/// framed (see `crate::http::secure`), so its button cannot be clicked by another site.
fn logout_confirmed(gateway: &Gateway, method: &http::Method, headers: &http::HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let fetch_site = header("sec-fetch-site");
    match *method {
        http::Method::POST => match fetch_site {
            Some(site) => site == "same-origin",
            None => header("origin") == Some(gateway.issuer().as_str()),
        },
        http::Method::GET => fetch_site == Some("same-origin"),
        _ => false,
    }
}

fn confirm_page(back: Option<&str>) -> Response {
    let action = match back {
        Some(rd) => {
            let mut action = String::from("/.portcullis/logout?rd=");
            action.extend(url::form_urlencoded::byte_serialize(rd.as_bytes()));
            action
        }
        None => "/.portcullis/logout".to_owned(),
    };
    Html(page(
        "Sign out?",
        &format!(
            r#"<p>Sign out of every application?</p><form method="post" action="{}"><button type="submit">Sign out</button></form>"#,
            html_escape(&action)
        ),
    ))
    .into_response()
}

fn signed_out_page(back: Option<&str>) -> Response {
    let link = back
        .map(|rd| {
            format!(
                r#"<p><a href="{}">Back to the application</a></p>"#,
                html_escape(rd)
            )
        })
        .unwrap_or_default();
    Html(page(
        "Signed out",
        &format!("<p>You are signed out.</p>{link}"),
    ))
    .into_response()
}

fn back_link_allowed(gateway: &Gateway, rd: &str) -> bool {
    let Ok(url) = url::Url::parse(rd) else {
        return false;
    };
    let Some(host) = url.host_str().and_then(|h| Host::parse(h).ok()) else {
        return false;
    };
    url.scheme() == "https"
        && url.username().is_empty()
        && url.password().is_none()
        && url.port().unwrap_or(443) == gateway.settings().public_port
        && url.path() == "/"
        && url.query().is_none()
        && host != gateway.settings().auth_host
        && gateway.snapshot().routes.knows_host(&host)
}
