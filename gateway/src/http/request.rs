//! What the gateway reads from a request before any decision: which host it is for, who sent
//! it, whether it is an API call, and its query parameters. Pure functions of the request.

use super::Problem;
use crate::settings::Settings;
use axum::extract::Request;
use http::{HeaderMap, Uri, header, uri::Authority};
use portcullis_core::Host;
use std::net::{IpAddr, SocketAddr};

/// The peer address of the connection a request came on; the server inserts it.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

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

/// The first value of query parameter `name`.
pub fn query_param(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The client's address: the peer, or — when the peer is a trusted proxy — the right-most
/// address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(settings: &Settings, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !settings.is_trusted_proxy(peer) {
        return peer;
    }
    let mut hops: Vec<&str> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else {
            return peer;
        };
        hops.extend(value.split(','));
    }
    // From the right: each trusted proxy appended the address it saw. The first hop that is
    // not a trusted proxy is the client; anything left of it was written by the client. A hop
    // that does not parse ends the walk at the peer: nothing beyond it can be believed.
    for hop in hops.into_iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if settings.is_trusted_proxy(ip) => continue,
            Ok(ip) => return ip,
            Err(_) => return peer,
        }
    }
    peer
}

/// True when the request is an API call (fetch/XHR/non-GET) that must get a 401 rather than a
/// redirect to an HTML login page.
pub fn is_api_request(method: &http::Method, headers: &HeaderMap) -> bool {
    if method != http::Method::GET && method != http::Method::HEAD {
        return true;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    if header("x-requested-with").eq_ignore_ascii_case("xmlhttprequest") {
        return true;
    }
    match header("sec-fetch-mode") {
        "" => {}
        "navigate" => return false,
        _ => return true,
    }
    let accept = header("accept");
    !(accept.is_empty()
        || accept.contains("text/html")
        || accept.contains("*/*") && !accept.contains("application/json"))
}
