//! The HTTP surface: one router, dispatching by host and path.
//!
//! - the auth host serves login, callback and JWKS ([`crate::auth_host`]);
//! - `/.portcullis/auth/*` on any host answers ingress controllers' forward-auth sub-requests
//!   ([`crate::forward_auth`]), for trusted proxies only;
//! - `/.portcullis/*` on an app host is the gateway's own (hand-off); it never reaches an
//!   upstream;
//! - everything else is a protected request: check, then proxy.

use crate::{
    auth_host,
    check::{self, Outcome, Subject},
    cookies, forward_auth,
    gateway::{Gateway, now},
    proxy::{ForwardContext, GatewayCookies, Upstream, UpstreamScheme},
    respond::{Problem, redirect},
    tokens::HandoffClaims,
};
use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use http::{HeaderName, HeaderValue, StatusCode, Uri, header, uri::Authority};
use portcullis_core::{
    CanonicalPath, Host, Route,
    token::{AppClaims, TokenKind},
};
use std::{net::SocketAddr, sync::Arc};

/// The peer address of the connection a request came on; the server inserts it.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// The gateway's router.
pub fn app(gateway: Gateway) -> Router {
    Router::new().fallback(dispatch).with_state(gateway)
}

async fn dispatch(State(gateway): State<Gateway>, req: Request) -> Response {
    let Some(ClientAddr(peer)) = req.extensions().get::<ClientAddr>().copied() else {
        return Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no_peer",
            "Internal error.",
        )
        .into_response();
    };
    if req.uri().path().starts_with("/.portcullis/auth/") {
        return forward_auth::handle(&gateway, peer, req).await;
    }
    let host = match request_host(&req) {
        Ok(host) => host,
        Err(problem) => return problem.into_response(),
    };
    if host == gateway.settings.auth_host {
        return auth_host::handle(&gateway, req).await;
    }
    let path = match CanonicalPath::parse(req.uri().path()) {
        Ok(path) => path,
        Err(error) => return Problem::bad_request("bad_path", error.to_string()).into_response(),
    };
    if path.as_str() == "/.portcullis" || path.as_str().starts_with("/.portcullis/") {
        return match path.as_str() {
            "/.portcullis/handoff" => handoff(&gateway, &host, &req),
            "/.portcullis/begin" => begin(&gateway, &host, &req),
            "/.portcullis/logout" => crate::logout::app_host(&gateway, &host, &req),
            "/.portcullis/session" | "/.portcullis/session/extend" => {
                crate::session_api::handle(&gateway, peer, &host, &req)
            }
            _ => Problem::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "No such gateway endpoint.",
            )
            .into_response(),
        };
    }
    protected(&gateway, peer, host, path, req).await
}

/// The host a request is for: `:authority` (HTTP/2, absolute-form) or `Host`. When both are
/// present they must agree.
pub fn request_host(req: &Request) -> Result<Host, Problem> {
    let from_uri = req.uri().authority().map(Authority::as_str);
    let from_header = match req
        .headers()
        .get_all(header::HOST)
        .iter()
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => None,
        [one] => Some(
            one.to_str()
                .map_err(|_| Problem::bad_request("bad_host", "Invalid Host header."))?,
        ),
        _ => return Err(Problem::bad_request("bad_host", "Several Host headers.")),
    };
    let authority = match (from_uri, from_header) {
        (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b) => {
            return Err(Problem::bad_request(
                "bad_host",
                "Host header and request target disagree.",
            ));
        }
        (Some(a), _) => a,
        (None, Some(b)) => b,
        (None, None) => return Err(Problem::bad_request("bad_host", "Missing Host header.")),
    };
    Host::parse(authority).map_err(|e| Problem::bad_request("bad_host", e.to_string()))
}

async fn protected(
    gateway: &Gateway,
    peer: SocketAddr,
    host: Host,
    path: CanonicalPath,
    req: Request,
) -> Response {
    let started = std::time::Instant::now();
    let client_ip = check::client_ip(gateway, peer.ip(), req.headers());
    let now = now();
    let outcome = check::check(
        gateway,
        &Subject {
            host: &host,
            path: &path,
            headers: req.headers(),
            client_ip,
        },
        now,
    );
    gateway.metrics.observe_check(&outcome, started.elapsed());
    let api = check::is_api_request(req.method(), req.headers());
    match outcome {
        Outcome::NotReady => Problem::not_ready().json(api).into_response(),
        Outcome::NoPolicy => Problem::new(
            StatusCode::NOT_FOUND,
            "no_policy",
            "No application is configured here.",
        )
        .json(api)
        .into_response(),
        Outcome::Deny { reason } => Problem::forbidden(reason).json(api).into_response(),
        Outcome::Login {
            reason, ended_sid, ..
        } => login_needed(
            gateway,
            &host,
            req.uri(),
            req.headers(),
            api,
            reason,
            ended_sid.as_deref(),
        ),
        Outcome::Allow {
            policy, session, ..
        } => {
            let snapshot = gateway.snapshot();
            let Some(upstream) = snapshot.upstream(&policy.id) else {
                return Problem::new(
                    StatusCode::NOT_FOUND,
                    "no_upstream",
                    "This application is served by the ingress, not the gateway.",
                )
                .json(api)
                .into_response();
            };
            let identity = session
                .as_ref()
                .map(|s| identity_headers(gateway, &s.token, &s.claims, host.as_str(), now))
                .unwrap_or_default();
            let mut response = forward(gateway, req, &upstream, peer, &host, &path, identity).await;
            // Background refresh: the renewed token rides on whatever the upstream answered,
            // navigation or API call alike.
            if let Some(cookie) = session.and_then(|s| s.renewal) {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            response
        }
    }
}

/// Redirects a browser to log in, or tells an API client with 401 where to.
pub fn login_needed(
    gateway: &Gateway,
    host: &Host,
    uri: &Uri,
    headers: &http::HeaderMap,
    api: bool,
    reason: &'static str,
    reauth: Option<&str>,
) -> Response {
    let target = format!(
        "{}{}",
        gateway.settings.origin(host.as_str()),
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    if api {
        let mut problem =
            Problem::new(StatusCode::UNAUTHORIZED, reason, "Log in to continue.").json(true);
        problem.login_url = Some(crate::bind::begin_url(
            gateway,
            host.as_str(),
            &target,
            reauth,
        ));
        return problem.into_response();
    }
    crate::bind::start(gateway, headers, &target, reauth)
}

/// The auth host's login URL that returns to `target`.
pub fn login_url(gateway: &Gateway, target: &str) -> String {
    let mut url = format!("{}/.portcullis/start?rd=", gateway.issuer);
    url.extend(url::form_urlencoded::byte_serialize(target.as_bytes()));
    url
}

/// The headers that tell the upstream who is asking: oauth2-proxy's `X-Auth-Request-*` names and
/// a signed assertion the upstream can verify with the JWKS.
pub fn identity_headers(
    gateway: &Gateway,
    token: &Arc<str>,
    claims: &AppClaims,
    host: &str,
    now: u64,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = Vec::new();
    let mut add = |name: &'static str, value: &str| {
        // Values from the IdP may hold characters a header cannot: leave such a header out
        // rather than send something else.
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.push((HeaderName::from_static(name), value));
        }
    };
    add("x-auth-request-user", &claims.sub);
    if let Some(email) = &claims.email {
        add("x-auth-request-email", email);
    }
    if !claims.groups.is_empty() {
        add("x-auth-request-groups", &claims.groups.join(","));
    }
    if let Some(assertion) = gateway.assertion(token, claims, host, now) {
        add("portcullis-jwt-assertion", &assertion);
    }
    headers
}

async fn forward(
    gateway: &Gateway,
    req: Request,
    upstream: &Upstream,
    peer: SocketAddr,
    host: &Host,
    path: &CanonicalPath,
    identity: Vec<(HeaderName, HeaderValue)>,
) -> Response {
    let (mut parts, body) = req.into_parts();
    // Forward exactly the path that was judged.
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    parts.uri = match Uri::builder().path_and_query(path_and_query).build() {
        Ok(uri) => uri,
        Err(_) => {
            return Problem::bad_request("bad_target", "Invalid request target.").into_response();
        }
    };
    let authority = match gateway.settings.public_port {
        443 => Authority::try_from(host.as_str()),
        port => Authority::try_from(format!("{host}:{port}").as_str()),
    };
    let Ok(authority) = authority else {
        return Problem::bad_request("bad_host", "Invalid host.").into_response();
    };
    let ctx = ForwardContext {
        client_addr: peer,
        trusted_forwarded_for: gateway.settings.is_trusted_proxy(peer.ip()),
        scheme: http::uri::Scheme::HTTPS,
        host: authority,
        identity_headers: identity,
        gateway_cookies: GatewayCookies::new(
            std::iter::empty::<&str>(),
            // Every cookie of ours shares this prefix: SSO, app tokens, logins, binding nonces.
            ["__Host-portcullis-"],
        ),
    };
    match gateway
        .proxy
        .forward(http::Request::from_parts(parts, body), upstream, &ctx)
        .await
    {
        Ok(response) => response.map(Body::new),
        Err(error) => {
            gateway.metrics.upstream_error(error.category());
            Problem::new(error.status(), error.category(), error.public_message()).into_response()
        }
    }
}

/// Redeems a hand-off ticket from the auth host: sets this app's token cookie and sends the
/// browser on to where it was going.
fn handoff(gateway: &Gateway, host: &Host, req: &Request) -> Response {
    let now = now();
    let Some(ticket) = query_param(req.uri(), "ticket") else {
        return Problem::bad_request("missing_ticket", "Missing ticket.").into_response();
    };
    let claims: Arc<HandoffClaims> = match gateway.handoffs.verify(&ticket, None, now) {
        Ok(claims) => claims,
        Err(error) => {
            gateway.metrics.token_rejected(error.category());
            return Problem::bad_request(
                "invalid_ticket",
                "This sign-in link is invalid or has expired.",
            )
            .into_response();
        }
    };
    if !crate::bind::holds(req.headers(), &claims.bind) {
        return Problem::bad_request(
            "wrong_browser",
            "This sign-in link was started in another browser. Please open the application again.",
        )
        .into_response();
    }
    if claims.host != host.as_str() {
        return Problem::bad_request("wrong_host", "This sign-in link is for another site.")
            .into_response();
    }
    let snapshot = gateway.snapshot();
    let rd_path = claims.rd.split('?').next().unwrap_or("/");
    let policy = match CanonicalPath::parse(rd_path)
        .ok()
        .and_then(|p| snapshot.routes.route(host, &p).cloned())
    {
        Some(Route::Policy(policy)) if policy.id.to_string() == claims.aud => policy,
        _ => return Problem::forbidden("policy_changed").into_response(),
    };
    if !gateway.redeem(&claims.jti, claims.exp, now) {
        return Problem::bad_request("ticket_used", "This sign-in link was already used.")
            .into_response();
    }
    let lifetime = policy.session.token_lifetime.as_secs();
    let app = AppClaims {
        iss: gateway.issuer.clone(),
        aud: policy.id.to_string(),
        sub: claims.sub.clone(),
        email: claims.email.clone(),
        groups: claims.groups.clone(),
        ext: claims.ext.clone(),
        sid: claims.sid.clone(),
        idp: claims.idp.clone(),
        epoch: policy.epoch,
        iat: now,
        exp: now + lifetime,
        auth_time: claims.auth_time,
        sexp: Some(claims.sexp),
        puid: policy.uid.clone(),
    };
    let Ok(token) = gateway.keys.sign(TokenKind::App, &app) else {
        return Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "signing_failed",
            "Internal error.",
        )
        .into_response();
    };
    let Some(cookie) = cookies::set(
        &cookies::app_cookie(&policy.id),
        &token,
        policy.session.absolute_lifetime,
    ) else {
        return Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cookie_too_large",
            "Your identity does not fit in a cookie.",
        )
        .into_response();
    };
    redirect(&claims.rd, vec![cookie])
}

/// `/.portcullis/begin?rd=…`: a login that did not start from a redirect of ours (an API
/// client's `login_url`, an ingress sign-in hint, a direct link) starts here, on the app host,
/// so the browser gets its binding nonce. `rd` must be on this very host.
fn begin(gateway: &Gateway, host: &Host, req: &Request) -> Response {
    let Some(rd) = query_param(req.uri(), "rd") else {
        return Problem::bad_request("missing_redirect", "Missing return address.").into_response();
    };
    let origin = format!("{}/", gateway.settings.origin(host.as_str()));
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
    crate::bind::start(gateway, req.headers(), &rd, reauth.as_deref())
}

/// The first value of query parameter `name`.
pub fn query_param(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

impl crate::state::Snapshot {
    /// The upstream of a policy in proxy mode.
    pub fn upstream(&self, id: &portcullis_core::PolicyId) -> Option<Upstream> {
        let policy = self.policies.get(id)?;
        let upstream = policy.upstream.as_ref()?;
        match &upstream.target {
            portcullis_core::policy::UpstreamTarget::Url { https, authority } => Upstream::new(
                if *https {
                    UpstreamScheme::Https
                } else {
                    UpstreamScheme::Http
                },
                authority,
                upstream.timeout,
            )
            .ok(),
            portcullis_core::policy::UpstreamTarget::Service {
                namespace,
                name,
                port,
                https,
            } => Upstream::service(
                if *https {
                    UpstreamScheme::Https
                } else {
                    UpstreamScheme::Http
                },
                name,
                namespace,
                *port,
                upstream.timeout,
            )
            .ok(),
        }
    }
}
