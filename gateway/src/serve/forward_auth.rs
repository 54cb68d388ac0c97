//! Forward-auth: ingress controllers ask the gateway about a request and enforce the answer.
//! One endpoint per contract, because they disagree on what a "no" looks like:
//!
//! | endpoint | sent by | original request from | allowed | login needed | denied |
//! | --- | --- | --- | --- | --- | --- |
//! | `/.portcullis/auth/nginx` | ingress-nginx / nginx `auth_request` | `X-Original-URL`, `X-Original-Method` | 200 + identity headers | 401 + `Portcullis-Signin-Url` | 403 |
//! | `/.portcullis/auth/traefik` | Traefik / Caddy ForwardAuth | `X-Forwarded-Proto/-Host/-Uri/-Method` | 200 + identity headers | 302 (navigation) / 401 JSON (API) | 403 |
//! | `/.portcullis/auth/envoy/…` | Envoy `ext_authz` (HTTP) | path after the prefix, `Host`, method | 200 + identity headers | 302 / 401 JSON | 403 |
//!
//! The original request is described by headers, so these endpoints answer only peers in
//! `--trusted-proxies`; anyone else gets 403 without a decision.

use crate::{
    access::{Outcome, Subject},
    clock::now,
    gateway::Gateway,
    http::{Problem, client_ip, is_api_request, no_store, original_target, split_original_url},
    serve::proxy_mode::{identity_headers, machine_headers},
    serve::refusal::{Asked, Surface, refuse},
};
use axum::{
    body::Body,
    extract::Request,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, Method, StatusCode, Uri};
use portcullis_core::{CanonicalPath, Host};
use std::net::SocketAddr;

/// The three contracts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contract {
    Nginx,
    Traefik,
    Envoy,
}

/// The original request, reconstructed from a forward-auth sub-request.
struct Original {
    method: Method,
    host: Host,
    uri: Uri,
    path: CanonicalPath,
}

/// Answers a forward-auth sub-request: 200 with the identity headers, or the contract's
/// refusal.
pub async fn handle(gateway: &Gateway, peer: SocketAddr, req: Request) -> Response {
    answer(gateway, peer, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Owns the request: a `&Request` held across the session lookup would make the handler's
/// future not `Send` (the body is not `Sync`).
async fn answer(gateway: &Gateway, peer: SocketAddr, req: Request) -> Result<Response, Problem> {
    let contract = Contract::of(req.uri().path())?;
    if !gateway.settings().is_trusted_proxy(peer.ip()) {
        return Err(Problem::forbidden("untrusted_proxy"));
    }
    let original = original(contract, &req)?;
    let now = now();
    let snapshot = gateway.snapshot();
    let subject = Subject {
        host: &original.host,
        path: &original.path,
        headers: req.headers(),
        client_ip: client_ip(gateway.settings(), peer.ip(), req.headers()),
    };
    let (user, bearer) = match super::check(gateway, &snapshot, &subject, now).await {
        Outcome::Allow { user, bearer, .. } => (user, bearer),
        refused => {
            let api = is_api_request(&original.method, req.headers());
            let asked = Asked::new(gateway, &original.host, &original.uri, req.headers(), api);
            return Ok(refuse(gateway, refused, &asked, contract.surface()));
        }
    };
    let mut response = Response::new(Body::empty());
    no_store(response.headers_mut());
    if let Some(user) = user {
        let identity = identity_headers(
            gateway,
            &user.token,
            &user.claims,
            original.host.as_str(),
            now,
        )?;
        for (name, value) in identity.iter() {
            response.headers_mut().insert(name, value.clone());
        }
        // The ingress copies it to the client's response (nginx: `auth_request_set`,
        // Traefik: `addAuthCookiesToResponse`, Envoy: `allowed_client_headers_on_success`).
        if let Some(cookie) = user.renewal {
            response
                .headers_mut()
                .append(http::header::SET_COOKIE, cookie);
        }
    } else if let Some(machine) = bearer {
        for (name, value) in machine_headers(&machine)?.iter() {
            response.headers_mut().insert(name, value.clone());
        }
    }
    Ok(response)
}

impl Contract {
    /// The contract served at `path`.
    fn of(path: &str) -> Result<Self, Problem> {
        match path {
            "/.portcullis/auth/nginx" => Ok(Self::Nginx),
            "/.portcullis/auth/traefik" => Ok(Self::Traefik),
            "/.portcullis/auth/envoy" => Ok(Self::Envoy),
            _ if path.starts_with("/.portcullis/auth/envoy/") => Ok(Self::Envoy),
            _ => Err(Problem::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "No such forward-auth endpoint.",
            )),
        }
    }

    /// How the contract's ingress wants refusals.
    fn surface(self) -> &'static Surface {
        match self {
            Self::Nginx => &Surface::FORWARD_AUTH_NGINX,
            Self::Traefik | Self::Envoy => &Surface::FORWARD_AUTH,
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Problem> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Problem::bad_request(
            "ambiguous_forwarded_headers",
            format!("Several {name} headers."),
        ));
    }
    value.to_str().map(Some).map_err(|_| {
        Problem::bad_request("bad_forwarded_headers", format!("Invalid {name} header."))
    })
}

/// The original request as a contract describes it, before any of it is believed.
struct Described {
    method: String,
    host: String,
    uri: String,
}

fn missing(what: &str) -> Problem {
    Problem::bad_request("missing_forwarded_headers", format!("Missing {what}."))
}

fn bad(what: &str) -> Problem {
    Problem::bad_request("bad_forwarded_headers", format!("Invalid {what}."))
}

fn original(contract: Contract, req: &Request) -> Result<Original, Problem> {
    let described = match contract {
        Contract::Nginx => nginx(req.headers())?,
        Contract::Traefik => traefik(req.headers())?,
        Contract::Envoy => envoy(req)?,
    };
    let method = Method::from_bytes(described.method.as_bytes()).map_err(|_| bad("method"))?;
    let host = Host::parse(&described.host)
        .map_err(|e| Problem::bad_request("bad_host", e.to_string()))?;
    let (path, uri) = original_target(&described.uri)?;
    Ok(Original {
        method,
        host,
        uri,
        path,
    })
}

/// nginx `auth_request`: `X-Original-URL` (and `X-Original-Method`).
fn nginx(headers: &HeaderMap) -> Result<Described, Problem> {
    let url = header(headers, "x-original-url")?.ok_or_else(|| missing("X-Original-URL"))?;
    let (authority, path_and_query) = split_original_url(url).map_err(|_| bad("X-Original-URL"))?;
    let method = header(headers, "x-original-method")?.unwrap_or("GET");
    Ok(Described {
        method: method.to_owned(),
        host: authority.to_owned(),
        uri: path_and_query.to_owned(),
    })
}

/// Traefik / Caddy ForwardAuth: `X-Forwarded-Proto/-Host/-Uri/-Method`.
fn traefik(headers: &HeaderMap) -> Result<Described, Problem> {
    let proto =
        header(headers, "x-forwarded-proto")?.ok_or_else(|| missing("X-Forwarded-Proto"))?;
    if proto != "https" {
        return Err(bad("X-Forwarded-Proto"));
    }
    let host = header(headers, "x-forwarded-host")?.ok_or_else(|| missing("X-Forwarded-Host"))?;
    let uri = header(headers, "x-forwarded-uri")?.ok_or_else(|| missing("X-Forwarded-Uri"))?;
    let method = header(headers, "x-forwarded-method")?.unwrap_or("GET");
    Ok(Described {
        method: method.to_owned(),
        host: host.to_owned(),
        uri: uri.to_owned(),
    })
}

/// Envoy `ext_authz` (HTTP): the original path after the prefix, its `Host` and method.
fn envoy(req: &Request) -> Result<Described, Problem> {
    let host = crate::http::request_host(req)?;
    let rest = req
        .uri()
        .path()
        .strip_prefix("/.portcullis/auth/envoy")
        .unwrap_or("/");
    let rest = if rest.is_empty() { "/" } else { rest };
    let uri = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    Ok(Described {
        method: req.method().as_str().to_owned(),
        host: host.to_string(),
        uri,
    })
}
