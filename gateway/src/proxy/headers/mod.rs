//! Header rewriting, as pure functions over `HeaderMap`s so each rule is unit-testable.
//!
//! Order matters and is fixed by `rewrite_request`:
//! 1. hop-by-hop removal, including every header *named* in `Connection:`;
//! 2. removal of every inbound identity / forwarding-metadata header in every spelling;
//! 3. removal of gateway-owned cookies;
//! 4. only then the headers the gateway vouches for are added.
//!
//! Because nothing is removed after step 4, a client can neither get an added header removed
//! (`Connection: x-auth-request-user`) nor smuggle its own copy past the strip (`X_Auth_Request_User`
//! for upstreams that fold `_` into `-`).

mod cookies;
mod hop_by_hop;
mod identity;
mod reserved;
#[cfg(test)]
mod tests;

use std::{net::SocketAddr, sync::Arc};

use http::{
    HeaderMap, HeaderName, HeaderValue, header,
    uri::{Authority, Scheme},
};

use super::error::ProxyError;

pub use cookies::GatewayCookies;
pub(crate) use hop_by_hop::{connection_has, upgrade_protocols};
pub use identity::{
    IdentityHeaderError, decode_groups, encode_group, identity_values, machine_values,
};
pub use reserved::{is_reserved_inbound, normalize_name};

use cookies::{strip_cookies, strip_set_cookies};
use hop_by_hop::{HOP_BY_HOP, strip_hop_by_hop};
use reserved::strip_inbound_identity;

/// The forwarding metadata the gateway sets itself (step 4) and a caller may not supply.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// Everything the gateway knows about a request that the upstream should learn from it.
#[derive(Clone, Debug)]
pub struct ForwardContext {
    /// Address of the peer that connected to the gateway.
    pub client_addr: SocketAddr,
    /// Whether that peer is a configured trusted proxy, so its `X-Forwarded-For` is kept and
    /// the peer appended. Otherwise the inbound `X-Forwarded-For` is replaced by the peer alone.
    pub trusted_forwarded_for: bool,
    /// Scheme the client used to reach the gateway (`X-Forwarded-Proto`).
    pub scheme: Scheme,
    /// Host the client asked for (`Host` of HTTP/1, `:authority` of HTTP/2), as the gateway
    /// matched it. Becomes `Host` and `X-Forwarded-Host`; its port (or the scheme's default)
    /// becomes `X-Forwarded-Port`.
    pub host: Authority,
    /// Headers the gateway vouches for (`X-Auth-Request-User`, `Portcullis-Jwt-Assertion`, ...).
    /// Inbound headers with the same normalized names are stripped as well.
    pub identity_headers: Vouched,
    /// Gateway-owned cookies to keep from the upstream.
    pub gateway_cookies: GatewayCookies,
}

/// Headers the gateway vouches for, checked when they are made: no framing, routing or
/// hop-by-hop name, no control character in a value. A signed-in user's are made once per
/// token and host and then added to every request of it, so the check is not paid per request;
/// cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct Vouched(Arc<[(HeaderName, HeaderValue)]>);

impl Vouched {
    /// `headers`, refused when one of them could not be vouched for.
    pub fn new(headers: Vec<(HeaderName, HeaderValue)>) -> Result<Self, ProxyError> {
        for (name, value) in &headers {
            if is_forbidden_identity_name(name) {
                return Err(ProxyError::InvalidAddedHeader {
                    name: name.to_string(),
                    reason: "reserved header name",
                });
            }
            checked(name, value)?;
        }
        Ok(Self(headers.into()))
    }

    /// The headers, in the order they are added.
    pub fn iter(&self) -> impl Iterator<Item = &(HeaderName, HeaderValue)> + Clone {
        self.0.iter()
    }

    /// The names of the headers.
    fn names(&self) -> impl Iterator<Item = &HeaderName> + Clone {
        self.0.iter().map(|(name, _)| name)
    }
}

/// The result of the Connection/Upgrade analysis of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UpgradeRequest {
    /// The `Upgrade` value to forward.
    pub protocols: HeaderValue,
}

/// Rewrites the request headers for the upstream, in the order the module docs fix: each
/// step below is one of the four, and nothing is removed after the first `add_`.
///
/// `upgrade` is the upgrade the proxy decided to carry through (already checked against the
/// allow-list); every other `Upgrade` is dropped, turning the request into a plain one.
pub(crate) fn rewrite_request(
    headers: &mut HeaderMap,
    ctx: &ForwardContext,
    upgrade: Option<&UpgradeRequest>,
) -> Result<(), ProxyError> {
    // 1. `Expect` goes too: the server layer answers it (hyper sends `100 Continue` when the
    //    body is first read).
    let te_trailers = strip_hop_by_hop(headers);
    headers.remove(header::EXPECT);
    // 2.
    strip_inbound_identity(headers, ctx.identity_headers.names());
    // 3.
    if !ctx.gateway_cookies.is_empty() {
        strip_cookies(headers, &ctx.gateway_cookies);
    }
    // 4.
    add_forwarding(headers, ctx)?;
    add_identity(headers, &ctx.identity_headers);
    restore_end_to_end(headers, te_trailers, upgrade)
}

/// Step 4, forwarding metadata: `Host` and `X-Forwarded-Host` name the host the gateway
/// matched, `X-Forwarded-Port` its port (or the scheme's default), `X-Forwarded-Proto` the
/// scheme, `X-Forwarded-For` the client as far as the gateway can vouch for it.
fn add_forwarding(headers: &mut HeaderMap, ctx: &ForwardContext) -> Result<(), ProxyError> {
    let host = header_value(&header::HOST, ctx.host.as_str())?;
    headers.insert(header::HOST, host.clone());
    let forwarded_for = forwarded_for(headers, ctx);
    insert_str(headers, X_FORWARDED_FOR, &forwarded_for)?;
    insert_str(headers, X_FORWARDED_PROTO, ctx.scheme.as_str())?;
    headers.insert(X_FORWARDED_HOST, host);
    let port = ctx
        .host
        .port_u16()
        .unwrap_or(if ctx.scheme == Scheme::HTTPS { 443 } else { 80 });
    insert_str(headers, X_FORWARDED_PORT, &port.to_string())
}

/// The `X-Forwarded-For` to send: the peer alone, or, behind a trusted proxy, the chain it
/// sent (every value, comma-split) with the peer appended.
fn forwarded_for(headers: &HeaderMap, ctx: &ForwardContext) -> String {
    let peer = ctx.client_addr.ip().to_canonical().to_string();
    if !ctx.trusted_forwarded_for {
        return peer;
    }
    let mut chain: Vec<String> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    chain.push(peer);
    chain.join(", ")
}

/// Step 4, identity: the headers the gateway vouches for, checked when they were made.
fn add_identity(headers: &mut HeaderMap, identity: &Vouched) {
    for (name, value) in identity.iter() {
        // `append`: a caller may send a multi-valued header on purpose.
        headers.append(name.clone(), value.clone());
    }
}

/// Step 4, what step 1 removed but does go end to end: `TE: trailers` (gRPC needs it) and the
/// upgrade the proxy allowed, with the `Connection: upgrade` that carries it.
fn restore_end_to_end(
    headers: &mut HeaderMap,
    te_trailers: bool,
    upgrade: Option<&UpgradeRequest>,
) -> Result<(), ProxyError> {
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(up) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        checked(&header::UPGRADE, &up.protocols)?;
        headers.insert(header::UPGRADE, up.protocols.clone());
    }
    Ok(())
}

/// Headers a caller may never supply as identity headers: framing, routing and hop-by-hop.
fn is_forbidden_identity_name(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
        || [
            header::HOST,
            header::CONTENT_LENGTH,
            header::TE,
            header::UPGRADE,
            header::COOKIE,
            header::EXPECT,
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
            X_FORWARDED_PORT,
        ]
        .contains(name)
}

/// Rejects control characters (CR, LF, NUL, other C0 except HTAB, DEL) in a value the gateway is
/// about to add. `HeaderValue`'s checked constructors already refuse them; this guards against
/// the unchecked ones and makes the rule explicit where headers are added.
fn checked(name: &HeaderName, value: &HeaderValue) -> Result<(), ProxyError> {
    if value
        .as_bytes()
        .iter()
        .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(ProxyError::InvalidAddedHeader {
            name: name.to_string(),
            reason: "control character in value",
        });
    }
    Ok(())
}

fn insert_str(headers: &mut HeaderMap, name: HeaderName, value: &str) -> Result<(), ProxyError> {
    let value = header_value(&name, value)?;
    headers.insert(name, value);
    Ok(())
}

/// `value` as the value of header `name`, refused like any added value that is not one.
fn header_value(name: &HeaderName, value: &str) -> Result<HeaderValue, ProxyError> {
    let value = HeaderValue::from_str(value).map_err(|_| ProxyError::InvalidAddedHeader {
        name: name.to_string(),
        reason: "not a header value",
    })?;
    checked(name, &value)?;
    Ok(value)
}

/// Rewrites response headers for the client: hop-by-hop removal (keeping `Connection: upgrade`
/// and `Upgrade` on a `101` the proxy accepted) and removal of `Set-Cookie` for gateway-owned
/// cookie names.
pub(crate) fn rewrite_response(headers: &mut HeaderMap, switching: bool, owned: &GatewayCookies) {
    let upgrade = headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(headers);
    if switching {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(up) = upgrade {
            headers.insert(header::UPGRADE, up);
        }
    }
    if !owned.is_empty() {
        strip_set_cookies(headers, owned);
    }
}
