//! How every serving surface answers a request the access check did not allow, written once:
//! the proxy, forward-auth and the session endpoint refuse alike and differ only where their
//! contracts do, named in [`Surface`].

use crate::{
    access::{DenyReason, LoginReason, Outcome},
    gateway::Gateway,
    http::Problem,
    idp::bearer::BearerError,
    login::bind,
};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use portcullis_core::Host;

/// The refused request, as far as the answer depends on it.
pub struct Asked<'a> {
    /// The app host the request was for.
    pub host: &'a Host,
    /// The full URL to come back to after logging in.
    pub target: String,
    pub headers: &'a HeaderMap,
    /// An API call (JSON answers, 401 instead of a redirect) rather than a browser navigation.
    pub api: bool,
}

impl<'a> Asked<'a> {
    /// A request for `uri` on `host`, to come back to as it was asked.
    pub fn new(
        gateway: &Gateway,
        host: &'a Host,
        uri: &Uri,
        headers: &'a HeaderMap,
        api: bool,
    ) -> Self {
        let target = format!(
            "{}{}",
            gateway.settings().origin(host.as_str()),
            uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
        );
        Self {
            host,
            target,
            headers,
            api,
        }
    }
}

/// Where a refusal is answered, and what that surface's contract asks for.
pub struct Surface {
    login: LoginAnswer,
    /// The status of a request no policy claims.
    unclaimed: StatusCode,
    /// Every answer is JSON, whoever asked.
    json_only: bool,
}

/// How a surface asks for a login.
enum LoginAnswer {
    /// A browser is redirected to log in (getting its binding nonce on the way); an API client
    /// gets 401 JSON naming where to log in.
    Navigate,
    /// Always 401 JSON naming where to log in; `signin_header` also names it in
    /// `Portcullis-Signin-Url`, for ingresses that cannot read a body (nginx `auth_request`).
    Unauthorized {
        message: &'static str,
        signin_header: bool,
    },
}

impl Surface {
    /// Proxy mode: a request no policy claims is not found (no app is served there).
    pub const PROXY: Self = Self {
        login: LoginAnswer::Navigate,
        unclaimed: StatusCode::NOT_FOUND,
        json_only: false,
    };
    /// Forward-auth that can pass a redirect on (Traefik, Envoy). An ingress asks only about
    /// hosts it routes through the gateway: with no policy there, the answer is no.
    pub const FORWARD_AUTH: Self = Self {
        login: LoginAnswer::Navigate,
        unclaimed: StatusCode::FORBIDDEN,
        json_only: false,
    };
    /// nginx `auth_request`, which turns anything but 2xx, 401 and 403 into 500.
    pub const FORWARD_AUTH_NGINX: Self = Self {
        login: LoginAnswer::Unauthorized {
            message: "Log in to continue.",
            signin_header: true,
        },
        unclaimed: StatusCode::FORBIDDEN,
        json_only: false,
    };
    /// The session endpoint apps call from JavaScript.
    pub const SESSION_ENDPOINT: Self = Self {
        login: LoginAnswer::Unauthorized {
            message: "No session.",
            signin_header: false,
        },
        unclaimed: StatusCode::NOT_FOUND,
        json_only: true,
    };
}

/// The answer to `outcome`, a request that may not go on: a login, a denial, nobody claims it,
/// or the gateway is not ready. An `Allow` without a signed-in user (a bypass) reaching here
/// means the surface needs a user: it answers as a login.
pub fn refuse(
    gateway: &Gateway,
    outcome: Outcome,
    asked: &Asked<'_>,
    surface: &Surface,
) -> Response {
    let json = surface.json_only || asked.api;
    match outcome {
        Outcome::NotReady => Problem::not_ready().json(json).into_response(),
        Outcome::NoPolicy => Problem::new(
            surface.unclaimed,
            "no_policy",
            if surface.unclaimed == StatusCode::NOT_FOUND {
                "No application is configured here."
            } else {
                "You do not have access to this page."
            },
        )
        .json(json)
        .into_response(),
        Outcome::Deny {
            reason: DenyReason::InvalidBearer(error),
            ..
        } => bearer_refused(error, json),
        Outcome::Deny { reason, .. } => {
            Problem::forbidden(reason.code()).json(json).into_response()
        }
        Outcome::Login {
            reason, ended_sid, ..
        } => login(gateway, reason, ended_sid.as_deref(), asked, surface),
        Outcome::Allow { .. } => login(gateway, LoginReason::LoginRequired, None, asked, surface),
    }
}

fn login(
    gateway: &Gateway,
    reason: LoginReason,
    reauth: Option<&str>,
    asked: &Asked<'_>,
    surface: &Surface,
) -> Response {
    if let Err(mut problem) = bind::check_return_address(&asked.target) {
        if let LoginAnswer::Unauthorized {
            signin_header: true,
            ..
        } = surface.login
        {
            // nginx `auth_request` turns anything but 2xx, 401 and 403 into 500.
            problem.status = StatusCode::FORBIDDEN;
        }
        return problem.json(surface.json_only || asked.api).into_response();
    }
    let (message, signin_header) = match surface.login {
        LoginAnswer::Navigate if !asked.api => {
            return bind::start(gateway, asked.headers, &asked.target, reauth);
        }
        LoginAnswer::Navigate => ("Log in to continue.", false),
        LoginAnswer::Unauthorized {
            message,
            signin_header,
        } => (message, signin_header),
    };
    let url = bind::begin_url(gateway, asked.host.as_str(), &asked.target, reauth);
    let mut problem = Problem::new(StatusCode::UNAUTHORIZED, reason.code(), message).json(true);
    problem.login_url = Some(url.clone());
    let mut response = problem.into_response();
    if signin_header && let Ok(value) = HeaderValue::from_str(&url) {
        response
            .headers_mut()
            .insert("portcullis-signin-url", value);
    }
    response
}

/// A refused bearer token: 401 with the RFC 6750 challenge naming the reason, so a client can
/// tell an expired token (get a new one) from one it may never use here. Keys the gateway
/// cannot fetch are its provider's outage, not the client's fault: 503, to try again.
fn bearer_refused(error: BearerError, json: bool) -> Response {
    if error == BearerError::Keys {
        let mut problem = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "idp_unavailable",
            error.to_string(),
        );
        problem.retry_after = Some(5);
        return problem.json(json).into_response();
    }
    let description = error.to_string();
    let mut response = Problem::new(StatusCode::UNAUTHORIZED, "invalid_token", &*description)
        .json(json)
        .into_response();
    // Descriptions are fixed texts without `"` or `\`; should one ever not fit in a header,
    // the challenge goes without it rather than not at all.
    let challenge = HeaderValue::from_str(&format!(
        "Bearer error=\"invalid_token\", error_description=\"{description}\""
    ))
    .unwrap_or(HeaderValue::from_static("Bearer error=\"invalid_token\""));
    response
        .headers_mut()
        .insert(http::header::WWW_AUTHENTICATE, challenge);
    response
}
