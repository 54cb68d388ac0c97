//! Proxy mode: a protected request is checked, then forwarded to the policy's upstream with
//! the identity headers, exactly as judged.

use crate::{
    access::{Lease, Outcome, SignedIn, Subject},
    audit,
    clock::now,
    gateway::Gateway,
    http::{Problem, Relayed, client_ip, is_api_request},
    identity_cache::AppToken,
    proxy::{
        ForwardContext, GatewayCookies, Lapse, Upstream, UpstreamScheme,
        headers::{Vouched, identity_values, machine_values},
    },
    serve::refusal::{Asked, Surface, refuse},
};
use axum::{
    body::Body,
    extract::Request,
    response::{IntoResponse, Response},
};
use http::{HeaderName, HeaderValue, StatusCode, Uri, header, uri::Authority};
use portcullis_core::{BearerToken, CanonicalPath, Host, Policy, token::AppClaims};
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};
use tracing::warn;

/// A protected request: checked, then forwarded to its policy's upstream with the identity
/// headers, or refused.
pub async fn protected(
    gateway: &Gateway,
    peer: SocketAddr,
    host: Host,
    path: CanonicalPath,
    req: Request,
) -> Response {
    let client_ip = client_ip(gateway.settings(), peer.ip(), req.headers());
    let now = now();
    let snapshot = gateway.snapshot();
    let subject = Subject {
        host: &host,
        path: &path,
        headers: req.headers(),
        client_ip,
    };
    let api = is_api_request(req.method(), req.headers());
    let (policy, user, bearer) = match super::check(gateway, &snapshot, &subject, now).await {
        Outcome::Allow {
            policy,
            user,
            bearer,
            ..
        } => (policy, user, bearer),
        refused => {
            let asked = Asked::new(gateway, &host, req.uri(), req.headers(), api);
            return refuse(gateway, refused, &asked, &Surface::PROXY);
        }
    };
    let Some(upstream) = snapshot.upstream(&policy.id) else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "no_upstream",
            "This application is served by the ingress, not the gateway.",
        )
        .json(api)
        .into_response();
    };
    let identity = match upstream_identity(gateway, user.as_ref(), bearer.as_deref(), &host, now) {
        Ok(identity) => identity,
        Err(problem) => return problem.json(api).into_response(),
    };
    // A signed-in exchange that outlives its request (WebSocket, streaming response) is cut
    // when its admission lapses; bypass and service-token requests carry no session to end.
    let lapse = lapse(gateway, &policy, user.as_ref(), client_ip);
    let target = Target {
        upstream: &upstream,
        host: &host,
        path: &path,
    };
    let mut response = forward(gateway, req, target, peer, identity, lapse).await;
    // Background refresh: the renewed token rides on whatever the upstream answered,
    // navigation or API call alike.
    if let Some(cookie) = user.and_then(|u| u.renewal) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The headers that tell the upstream who is asking: oauth2-proxy's `X-Auth-Request-*` names
/// (encoded as `proxy::headers::identity` documents) and a signed assertion the upstream can
/// verify with the JWKS. A user that cannot be described exactly is refused, never sent
/// with a header missing. Made once per token and host, and kept with the token
/// ([`crate::identity_cache`]).
pub fn identity_headers(
    gateway: &Gateway,
    token: &AppToken,
    claims: &AppClaims,
    host: &str,
    now: u64,
) -> Result<Vouched, Problem> {
    let memo = token.memo();
    if let Some(made) = memo.get(claims, host, now) {
        return Ok(made);
    }
    let mut headers = identity_values(&claims.sub, claims.email.as_deref(), &claims.groups)
        .map_err(|error| {
            warn!(sid = %claims.sid, %error, "refusing a request: its user cannot be described to the upstream");
            Problem::new(
                StatusCode::FORBIDDEN,
                "unrepresentable_identity",
                "Your account cannot be passed on to this application. Please sign in again.",
            )
        })?;
    let (assertion, exp) = gateway
        .sign_assertion(claims, host, now)
        .and_then(|(a, exp)| Some((HeaderValue::try_from(a).ok()?, exp)))
        .ok_or_else(|| {
            warn!(sid = %claims.sid, "refusing a request: no identity assertion could be signed");
            Problem::internal("signing_failed")
        })?;
    headers.push((
        HeaderName::from_static("portcullis-jwt-assertion"),
        assertion,
    ));
    let made = vouched(headers)?;
    memo.insert(claims, host, made.clone(), exp);
    Ok(made)
}

/// Headers of ours for the upstream, checked; one that fails the check is a bug of ours, so
/// the request fails as a server error (and nothing is sent without it).
fn vouched(headers: Vec<(HeaderName, HeaderValue)>) -> Result<Vouched, Problem> {
    Vouched::new(headers).map_err(|error| {
        warn!(%error, "refusing a request: an identity header could not be vouched for");
        Problem::internal("bad_identity_header")
    })
}

/// The identity headers for the upstream: the signed-in user's, or the machine's that a bearer
/// token let in, or none (a bypass, a service token). `Authorization` is not among them: it is
/// forwarded as the client sent it (see `docs/gateway.md`, machine clients).
fn upstream_identity(
    gateway: &Gateway,
    user: Option<&SignedIn>,
    bearer: Option<&BearerToken>,
    host: &Host,
    now: u64,
) -> Result<Vouched, Problem> {
    match (user, bearer) {
        (Some(u), _) => identity_headers(gateway, &u.token, &u.claims, host.as_str(), now),
        (None, Some(machine)) => machine_headers(machine),
        (None, None) => Ok(Vouched::default()),
    }
}

/// The headers that tell the upstream which machine is asking (a bearer token's `sub` and
/// client id, `proxy::headers::identity`); one that cannot be described exactly is refused.
pub fn machine_headers(machine: &BearerToken) -> Result<Vouched, Problem> {
    let headers = machine_values(&machine.subject, &machine.client_id).map_err(|error| {
        warn!(client_id = %machine.client_id.escape_debug(), %error, "refusing a request: its machine cannot be described to the upstream");
        Problem::new(
            StatusCode::FORBIDDEN,
            "unrepresentable_identity",
            "This client cannot be passed on to this application.",
        )
    })?;
    vouched(headers)
}

/// The lapse of a signed-in user's admission as the proxy holds it, counted and audited when it
/// cuts an exchange; none for a request without a user.
fn lapse(
    gateway: &Gateway,
    policy: &Arc<Policy>,
    user: Option<&SignedIn>,
    client_ip: IpAddr,
) -> Option<Lapse> {
    let lease = Lease::new(gateway, policy.clone(), user?.claims.clone(), client_ip);
    Some(Box::pin(async move {
        let lapsed = lease.lapsed().await;
        lease.gateway().metrics().exchange_cut(lapsed);
        audit::exchange_cut(lease.sid(), lease.user(), &lease.policy(), lapsed.label());
        lapsed.label()
    }))
}

/// Where a checked request goes, and the host and path it was judged on.
struct Target<'a> {
    upstream: &'a Upstream,
    host: &'a Host,
    path: &'a CanonicalPath,
}

async fn forward(
    gateway: &Gateway,
    req: Request,
    Target {
        upstream,
        host,
        path,
    }: Target<'_>,
    peer: SocketAddr,
    identity: Vouched,
    lapse: Option<Lapse>,
) -> Response {
    let (mut parts, body) = req.into_parts();
    // Forward exactly the path that was judged: the request's own when it was canonical
    // already (the usual case, nothing to rebuild), else the canonical form.
    if parts.uri.path() != path.as_str() {
        let path_and_query = match parts.uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path.to_string(),
        };
        parts.uri = match Uri::builder().path_and_query(path_and_query).build() {
            Ok(uri) => uri,
            Err(_) => {
                return Problem::bad_request("bad_target", "Invalid request target.")
                    .into_response();
            }
        };
    }
    let ctx = match context(gateway, peer, host, identity) {
        Ok(ctx) => ctx,
        Err(problem) => return problem.into_response(),
    };
    match gateway
        .proxy()
        .forward_leased(
            http::Request::from_parts(parts, body),
            upstream,
            &ctx,
            lapse,
        )
        .await
    {
        Ok(response) => {
            let mut response = response.map(Body::new);
            response.extensions_mut().insert(Relayed);
            response
        }
        Err(error) => {
            gateway.metrics().upstream_error(error.category());
            Problem::new(error.status(), error.category(), error.public_message()).into_response()
        }
    }
}

/// The cookies an upstream never sees nor sets: every cookie of ours shares this prefix (SSO,
/// app tokens, logins, binding nonces). Made once; a clone shares it.
static OURS: std::sync::LazyLock<GatewayCookies> = std::sync::LazyLock::new(|| {
    GatewayCookies::new(std::iter::empty::<&str>(), ["__Host-portcullis-"])
});

/// What the proxy adds for the upstream: who connected, the host asked for, the identity.
fn context(
    gateway: &Gateway,
    peer: SocketAddr,
    host: &Host,
    identity: Vouched,
) -> Result<ForwardContext, Problem> {
    let authority = match gateway.settings().public_port {
        443 => Authority::try_from(host.as_str()),
        port => Authority::try_from(format!("{host}:{port}").as_str()),
    };
    let authority = authority.map_err(|_| Problem::bad_request("bad_host", "Invalid host."))?;
    Ok(ForwardContext {
        client_addr: peer,
        trusted_forwarded_for: gateway.settings().is_trusted_proxy(peer.ip()),
        scheme: http::uri::Scheme::HTTPS,
        host: authority,
        identity_headers: identity,
        gateway_cookies: OURS.clone(),
    })
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
